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
wait_until 30 have_leader 1 2 3 || fail "no leader elected"
read -r L1 T1 < <(current_leader 1 2 3)
ok "node $L1 elected leader in term $T1 ($(elapsed) s)"
wait_until 30 counts_at_least "$N" 1 2 3 || fail "$N proposals not applied on all three"
c=$N
s1=$(sum_at 1 $c); s2=$(sum_at 2 $c); s3=$(sum_at 3 $c)
[ -n "$s1" ] && [ "$s1" = "$s2" ] && [ "$s2" = "$s3" ] || fail "checksums differ at count $c: $s1 $s2 $s3"
ok "$N entries committed and applied on all three, same checksum $s1 ($(elapsed) s)"

# 2. SIGKILL the leader; the other two elect a new one in a higher term
read -r L1 T1 < <(current_leader 1 2 3)
# Every entry a survivor applied before the kill stays; the new leader adds N.
have=0
for n in 1 2 3; do [ "$n" = "$L1" ] || { c=$(last_count "$n"); [ "$c" -gt "$have" ] && have=$c; }; done
kill -9 "${pid[$L1]}"
wait "${pid[$L1]}" 2>/dev/null
unset "pid[$L1]"
rest=()
for n in 1 2 3; do [ "$n" = "$L1" ] || rest+=("$n"); done
new_leader() {
  local l; l=$(current_leader "${rest[@]}") || return 1
  local t=${l#* }
  [ "$t" -gt "$T1" ]
}
wait_until 30 new_leader || fail "no new leader after killing node $L1 (term $T1)"
read -r L2 T2 < <(current_leader "${rest[@]}")
ok "killed leader $L1 (term $T1); node $L2 elected in term $T2 ($(elapsed) s)"
wait_until 30 counts_at_least $((have + N)) "${rest[@]}" || fail "new leader's proposals did not commit"
c=$(last_count "$L2")
sa=$(sum_at "${rest[0]}" "$c"); sb=$(sum_at "${rest[1]}" "$c")
[ -n "$sa" ] && [ "$sa" = "$sb" ] || fail "survivors' checksums differ at count $c: $sa $sb"
ok "new leader's $N entries committed on both survivors (count $c) ($(elapsed) s)"

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
