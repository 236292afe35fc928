#!/bin/sh
# keel df from the command line: both built-in jobs give the reference
# answer (--check runs the single-threaded reference in the command), the
# JSON says so, a user job .so runs, and bad jobs and bad input fail with a
# message naming what is wrong. Small sizes: a few seconds under ASan.
# usage: df_cli.sh KEEL DF_JOB_SO NOSYM_SO
set -u
KEEL=$1 JOB=$2 NOSYM=$3
T=$(mktemp -d /tmp/keel-df-cli.XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

out=$("$KEEL" df run pagerank --vertices 3000 --degree 5 --iterations 4 --shards 2 --check --json) \
	|| fail "pagerank --check: $out"
echo "$out" | grep -q '"job":"pagerank"' || fail "pagerank json: $out"
echo "$out" | grep -q '"mean_l1_vs_reference"' || fail "pagerank json has no check: $out"

out=$("$KEEL" df run joingroup --orders 3000 --shards 2 --split 4 --check --json --data-dir "$T") \
	|| fail "joingroup --check: $out"
echo "$out" | grep -q '"matches_reference":true' || fail "joingroup json: $out"
[ -z "$(ls "$T")" ] || fail "joingroup left its generated tables in $T: $(ls "$T")"

printf 'x y x\nz x\n' > "$T/w.txt"
"$KEEL" df run --job "$JOB" --arg "$T/w.txt" --shards 2 > "$T/out" || fail "user job"
grep -q "^x	3$" "$T/out" || fail "user job output: $(cat "$T/out")"

err=$("$KEEL" df run --job "$NOSYM" 2>&1) && fail "a .so without keel_df_job ran"
echo "$err" | grep -q "does not export the symbol keel_df_job" || fail "nosym message: $err"

mkdir "$T/bad"
printf '1,1,3\n2,2,9\n' > "$T/bad/orders.csv"
printf '1,1,5,100\n' > "$T/bad/lineitem.csv"
err=$("$KEEL" df run joingroup --input-dir "$T/bad" --shards 1 2>&1) && fail "priority 9 accepted"
echo "$err" | grep -q "orders.csv at byte 6): malformed orders row '2,2,9'" || fail "bad row message: $err"

err=$("$KEEL" df run nosuch 2>&1); st=$?
[ $st -eq 2 ] || fail "unknown job: exit $st"
echo "$err" | grep -q "unknown job 'nosuch'" || fail "unknown job message: $err"
echo ok
