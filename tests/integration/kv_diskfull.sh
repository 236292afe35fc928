#!/usr/bin/env bash
# The replicated KV when one node's disk fills (issue 12). A local cluster
# (`keel cluster up`: 3 nodes, 1 shard, 2 groups, 8 MiB WAL segments) whose
# node 3 keeps its data on a 36 MiB tmpfs: its two groups' first segments
# and the next one each WAL prepares ahead take 32 MiB, so the first roll
# takes the prepared segment, the next one cannot be prepared (logged), and
# the roll after it finds no space.
#   1. writes of 120 kB values through all three endpoints: every one is
#      acknowledged (the client retries a write its node could not make
#      durable elsewhere, with the same sequence) while node 3 runs out of
#      space; node 3 stops with the reason in its log ("No space left on
#      device") and exit status 1, not a crash;
#   2. the cluster goes on with nodes 1 and 2: both groups have a leader,
#      more writes are acknowledged;
#   3. space returns (the tmpfs grows to 96 MiB) and node 3 is restarted
#      (`keel cluster restart`: keel does not retry a failed disk by itself):
#      its WAL recovers (no corruption reported), it catches up, and its own
#      serializable reads show every acknowledged write.
# Needs root (to mount a tmpfs); skips (exit 77) otherwise.
# usage: kv_diskfull.sh KEEL_BINARY
set -uo pipefail
KEEL=$1
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root to mount a small tmpfs"
dir=$(mktemp -d /tmp/keel-kv-diskfull.XXXXXX)
cdir=$dir/c
data3=$cdir/data-n3
failed=0
cleanup() {
  "$KEEL" cluster down --dir "$cdir" >/dev/null 2>&1
  umount "$data3" 2>/dev/null
  [ $failed = 1 ] && echo "kept for inspection: $dir" || rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  failed=1
  echo "FAIL: $*"
  for f in "$cdir"/n*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
  df -h "$data3" 2>/dev/null
  exit 1
}
ok() { echo "ok: $*"; }
kv() { "$KEEL" kv --dir "$cdir" "$@"; }
# alive PID: running, not a zombie
alive() { [ -r /proc/$1/stat ] && ! awk '{exit $3 != "Z"}' /proc/$1/stat; }

mkdir -p "$data3"
mount -t tmpfs -o size=36m,mode=0700 keel-diskfull "$data3" 2>/dev/null || skip "cannot mount a tmpfs here"
"$KEEL" cluster up --nodes 3 --shards 1 --groups 2 --dir "$cdir" >"$dir/up.out" 2>&1 ||
  fail "cluster up: $(cat "$dir/up.out")"
pid3=$(cat "$cdir/n3.pid")
ok "cluster up; node 3's data on a 36 MiB tmpfs ($(df -h --output=avail "$data3" | tail -1 | tr -d ' ') free)"

# ---- 1. fill node 3's disk under acknowledged writes -----------------------------
value=$(head -c 90000 /dev/urandom | base64 -w0) # 120,000 bytes (one argument may have 128 KiB)
n=0
for i in $(seq 1 700); do
  kv --timeout 15000 put "big-$i" "$value" >/dev/null 2>"$dir/err" || fail "put big-$i: $(cat "$dir/err")"
  n=$i
  alive "$pid3" || break
done
alive "$pid3" && fail "node 3 still runs after $n writes of 120 kB on a 36 MiB disk"
grep -q "stops: .*No space left on device" "$cdir/n3.log" || fail "node 3 stopped without saying why"
grep -m1 "stops: .*No space left on device" "$cdir/n3.log" | sed 's/^/  node 3: /'
grep -qiE "AddressSanitizer|runtime error|Segmentation|Aborted|assert" "$cdir/n3.log" && fail "node 3 crashed"
ok "node 3 ran out of space after $n acknowledged writes and stopped with the reason"

# ---- 2. the cluster goes on --------------------------------------------------------
for i in $(seq $((n + 1)) $((n + 20))); do
  kv --timeout 15000 put "big-$i" "$value" >/dev/null 2>"$dir/err" || fail "put big-$i after node 3 stopped: $(cat "$dir/err")"
done
n=$((n + 20))
"$KEEL" status --dir "$cdir" >"$dir/status" 2>&1
for g in 0 1; do
  awk -v g=$g '$1 == g && ($3 == 1 || $3 == 2) {f=1} END {exit !f}' "$dir/status" ||
    fail "group $g has no leader on nodes 1-2: $(cat "$dir/status")"
done
ok "nodes 1 and 2 go on: both groups lead there, 20 more writes acknowledged"

# ---- 3. space returns, node 3 restarts and catches up ------------------------------
mount -o remount,size=96m "$data3" || fail "cannot grow the tmpfs"
"$KEEL" cluster restart --node 3 --dir "$cdir" >"$dir/restart.out" 2>&1 || fail "restart of node 3: $(cat "$dir/restart.out")"
ep3=$(cut -d, -f3 "$cdir/endpoints")
t0=$(date +%s.%N)
caught=
for _ in $(seq 300); do
  v=$("$KEEL" kv --endpoints "$ep3" --token-file "$cdir/client-token" --timeout 1000 --serializable get "big-$n" 2>/dev/null)
  [ "$v" = "$value" ] && { caught=1; break; }
  sleep 0.1
done
[ -n "$caught" ] || fail "node 3 did not catch up within 30 s of its restart"
grep -iE "corrupt|refus" "$cdir/n3.log" && fail "node 3's WAL recovery reported corruption"
ok "node 3 restarted with space, recovered its WAL and caught up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}') s"
have=$("$KEEL" kv --endpoints "$ep3" --token-file "$cdir/client-token" --serializable range big- | awk -F'\t' -v v="$value" '$2 == v' | wc -l)
[ "$have" = "$n" ] || fail "node 3 holds $have of the $n acknowledged writes"
have=$(kv range big- | awk -F'\t' -v v="$value" '$2 == v' | wc -l)
[ "$have" = "$n" ] || fail "the cluster holds $have of the $n acknowledged writes"
ok "all $n acknowledged writes are on node 3 and in the cluster"
