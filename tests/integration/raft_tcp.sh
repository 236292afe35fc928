#!/usr/bin/env bash
# Three `keel raft` processes (the group host) on 127.0.0.1 over TCP:
#   1. one leader is elected; its N proposals commit on all three;
#   2. the leader is SIGKILLed (by its PID); a new leader with a higher term
#      is elected and its N proposals commit on the two survivors;
#   3. the killed node restarts from its data dir (WAL): it recovers its
#      term, rejoins, and catches up: the same count and checksum as the
#      others at the same log position.
# With SNAP > 0 every node snapshots every SNAP applied entries keeping 2
# behind: the new leader has compacted past the restarted node's log, so it
# catches up through InstallSnapshot (checked), and restarts start from the
# node's own snapshot file.
# usage: raft_tcp.sh KEEL_BINARY [N] [TICK_MS] [SNAP]
set -uo pipefail
KEEL=$1
N=${2:-10}
TICK=${3:-50}
SNAP=${4:-0}
dir=$(mktemp -d /tmp/keel-raft-tcp.XXXXXX)
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
. "$(dirname "${BASH_SOURCE[0]}")/raft_lib.sh"

# Below the ephemeral range (32768+), where outgoing connections could take
# a port a restarting node needs. Ports from the PID so parallel runs do not collide.
base=$((20000 + ($$ % 600) * 20))
head -c 32 /dev/urandom | base64 > "$dir/secret"
chmod 600 "$dir/secret"
for n in 1 2 3; do
  cat > "$dir/n$n.ini" <<EOF
[node]
id = $n
cluster = 9
listen = 127.0.0.1:$((base + n * 4))
shards = 1
secret_file = secret
handshake_timeout_ms = 1000
[peers]
1 = 127.0.0.1:$((base + 4))
2 = 127.0.0.1:$((base + 8))
3 = 127.0.0.1:$((base + 12))
EOF
done

start() {  # start NODE
  "$KEEL" raft --config "$dir/n$1.ini" --data "$dir/data$1" --propose "$N" --tick-ms "$TICK" \
    --segment-kib 256 --snapshot-every "$SNAP" --snapshot-keep 2 >>"$dir/n$1.out" 2>>"$dir/n$1.err" &
  pid[$1]=$!
}

for n in 1 2 3; do start $n; done

# 1. election and commits on all three
elect_and_commit 30 ""

# 2. SIGKILL the leader; the other two elect a new one in a higher term
kill_leader 30

# 3. restart the killed node from its WAL: it rejoins and catches up
start "$L1"
recovered_twice() { [ "$(grep -c "recovered from" "$dir/n$L1.err")" -ge 2 ]; }
wait_until 30 recovered_twice || fail "node $L1 did not recover from its WAL"
rec=$(grep -o "recovered from [^:]*: term [0-9]*, vote [0-9]*, log \[[0-9]*, [0-9]*\], snapshot [0-9]*" "$dir/n$L1.err" | tail -n 1)
rterm=$(sed -E 's/.*term ([0-9]+),.*/\1/' <<<"$rec")
[ "$rterm" -ge "$T1" ] || fail "node $L1 recovered term $rterm below its term $T1"
wait_until 30 counts_at_least "$c" "$L1" || fail "node $L1 did not catch up to count $c"
sr=$(sum_at "$L1" "$c")
[ "$sr" = "$sa" ] || fail "node $L1 checksum at count $c is $sr, others $sa"
ok "node $L1 restarted ($rec), caught up to count $c with the same checksum ($(elapsed) s)"
if [ "$SNAP" -gt 0 ]; then
  grep -q "snapshot [1-9][0-9]*$" <<<"$rec" || fail "node $L1 did not restart from its own snapshot"
  grep -q "installed a snapshot at index" "$dir/n$L1.err" || fail "node $L1 caught up without InstallSnapshot"
  ok "node $L1 restarted from its snapshot file and caught up through InstallSnapshot: $(grep -o 'installed a snapshot at index [0-9]*' "$dir/n$L1.err" | tail -n 1)"
fi

# clean stop: every node prints its final state
for n in 1 2 3; do kill "${pid[$n]}"; done
for n in 1 2 3; do wait "${pid[$n]}" || fail "node $n exited with $? on SIGTERM"; done
pid=()
for n in 1 2 3; do grep -q "node $n: stopped: " "$dir/n$n.out" || fail "node $n did not stop cleanly"; done
grep -h "ERROR\|runtime error\|AddressSanitizer" "$dir"/*.err && fail "errors in the logs"
echo "PASS: raft over TCP: election, commits, leader killed and re-elected, restart and catch-up ($(elapsed) s)"
