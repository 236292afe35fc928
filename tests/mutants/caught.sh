#!/bin/sh
# caught.sh EXE FILTER — runs the one Criterion test FILTER ("suite/test") of
# EXE, a unit test built with one mutant (tests/mutants/meson.build), and
# passes on its exit status: non-zero means the test caught the mutant,
# which meson's should_fail turns into a pass. Two cases are not a verdict:
#  - the test ran and skipped (this machine lacks what it needs, e.g.
#    io_uring): exit 77, meson's SKIP;
#  - the filter matched no test: exit 0, so that should_fail reports the
#    mutant as not caught instead of passing on a typo.
exe=$1
filter=$2
case $exe in */*) ;; *) exe=./$exe ;; esac # meson passes it relative to workdir
# The variant defines its layer's globals (keel_transport_tcp_ops...) a second
# time, next to libkeel's, on purpose: AddressSanitizer must not call that an
# ODR violation and abort before the test runs.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if [ ! -x "$exe" ]; then
	echo "caught.sh: $exe is not an executable" >&2
	exit 0
fi
"$exe" --filter "$filter" --verbose >"$out" 2>&1
rc=$?
cat "$out"
if ! grep -q '^\[RUN \]' "$out"; then
	echo "caught.sh: no test of $exe matches '$filter'" >&2
	exit 0
fi
if [ "$rc" -eq 0 ] && grep '^\[SKIP\]' "$out" | grep -qv ': Test is disabled$'; then
	echo "caught.sh: '$filter' skipped here; the mutant is not judged" >&2
	exit 77
fi
if [ "$rc" -eq 0 ]; then
	echo "caught.sh: MUTANT NOT CAUGHT: '$filter' passed" >&2
fi
exit "$rc"
