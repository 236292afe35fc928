#!/usr/bin/env bash
# keel in a container under podman's default seccomp profile, which refuses
# io_uring (io_uring_setup: ENOSYS): the runtime must fall back to epoll by
# itself, `keel shards` must run, and a one-node replicated-log group must
# elect itself and commit.
#
# The image is made here, with no registry: the keel binary, libkeel and
# the shared libraries ldd names for them, copied into an empty root and
# `podman import`ed (a few MB, a second). podman runs with runc and a
# containers.conf holding `default_ulimits = []` (this VM withholds
# CAP_SYS_RESOURCE; crun rejects its hybrid cgroups).
# Exit 77 where podman or runc is missing (scripts/deps containers) or
# podman cannot run a container here. LeakSanitizer is off in the container
# (it needs ptrace, which the profile refuses).
# usage: podman_seccomp.sh KEEL_BINARY
set -uo pipefail
KEEL=$(readlink -f "$1")
LIB=$(dirname "$(dirname "$KEEL")")/libkeel.so
for t in podman runc; do
  command -v $t >/dev/null || { echo "SKIP: needs $t (scripts/deps containers installs podman and runc)"; exit 77; }
done
dir=$(mktemp -d /tmp/keel-podman.XXXXXX)
img=keel-test-$$
cname=keel-test-node-$$
cleanup() {
  podman rm -f "$cname" >/dev/null 2>&1
  podman rmi -f "$img" >/dev/null 2>&1
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  [ -f "$dir/w/n1.log" ] && { echo "--- node log"; tail -n 30 "$dir/w/n1.log"; }
  exit 1
}
ok() { echo "ok: $*"; }
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' >"$dir/containers.conf"
export CONTAINERS_CONF=$dir/containers.conf

# ---- the image: keel and its libraries at the paths they were built at ------
mkdir -p "$dir/root/tmp" "$dir/root/etc" "$dir/w"
for f in "$KEEL" "$LIB" $(ldd "$KEEL" "$LIB" | grep -o '/[^ :]*\.so[^ ]*\|/lib[^ :]*/ld-linux[^ ]*' | sort -u); do
  [ -e "$f" ] || continue
  mkdir -p "$dir/root$(dirname "$f")"
  cp -L "$f" "$dir/root$f" || fail "copying $f into the image"
done
if ! tar -C "$dir/root" -c . | podman import - "$img" >"$dir/import.log" 2>&1; then
  echo "SKIP: podman cannot import an image here: $(tail -n 2 "$dir/import.log")"
  exit 77
fi
if ! podman run --rm --network none -e ASAN_OPTIONS=detect_leaks=0 "$img" "$KEEL" version >"$dir/version.log" 2>&1; then
  echo "SKIP: podman cannot run a container here: $(tail -n 3 "$dir/version.log")"
  exit 77
fi
ok "image of $(du -sh "$dir/root" | cut -f1) imported; a container runs"

# ---- keel shards under the default seccomp profile -----------------------------
podman run --rm --network none -e ASAN_OPTIONS=detect_leaks=0 "$img" "$KEEL" shards --shards 2 --overcommit --duration 300 \
  >"$dir/shards.log" 2>&1 || fail "keel shards in the container: $(tail -n 5 "$dir/shards.log")"
grep -q "io_uring refused" "$dir/shards.log" ||
  fail "the default seccomp profile should refuse io_uring: $(head -n 3 "$dir/shards.log")"
grep -q "epoll reactor" "$dir/shards.log" || fail "keel shards did not run on epoll: $(cat "$dir/shards.log")"
grep -q "cross-shard calls" "$dir/shards.log" || fail "keel shards printed no summary"
ok "keel shards: io_uring refused by the profile ($(grep -o 'io_uring_setup: [^;]*' "$dir/shards.log")), ran on epoll"

# ---- a one-node group ------------------------------------------------------------
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/w/secret"
chmod 600 "$dir/w/secret"
port=$((20000 + $$ % 5000))
cat >"$dir/w/n1.ini" <<EOF
[node]
id = 1
cluster = 9
listen = 127.0.0.1:$port
shards = 1
secret_file = secret
[peers]
1 = 127.0.0.1:$port
[log]
groups = 1
dir = data
tick_ms = 20
EOF
podman run -d --name "$cname" --network none -e ASAN_OPTIONS=detect_leaks=0 -v "$dir/w:/w" "$img" \
  "$KEEL" node --config /w/n1.ini --status-file /w/s1 --status-ms 50 --propose 50 \
  >"$dir/run.log" 2>&1 || fail "podman run keel node: $(cat "$dir/run.log")"
done=0
for _ in $(seq 150); do
  if [ -f "$dir/w/s1" ] && grep -q "role=leader" "$dir/w/s1" && grep -q "committed=50" "$dir/w/s1"; then
    done=1
    break
  fi
  sleep 0.1
done
podman logs "$cname" >"$dir/w/n1.log" 2>&1
[ $done = 1 ] || fail "the group did not elect and commit 50 entries in 15 s: $(cat "$dir/w/s1" 2>/dev/null)"
grep -q "reactor=epoll" "$dir/w/s1" || fail "the node's status does not say reactor=epoll: $(head -n 1 "$dir/w/s1")"
podman stop -t 5 "$cname" >/dev/null 2>&1
ok "a one-node group in the container: leader, 50 entries committed, on epoll ($(head -n 1 "$dir/w/s1"))"
echo "podman_seccomp: all ok"
