#!/usr/bin/env bash
# A flood of unauthenticated connections on the peer ports (issue 18): three
# `keel node` processes on 127.0.0.1 (one shard, one Raft group, the leader
# proposing without pause) while flood_peer holds CONNS idle and half-open
# connections from 127.0.0.2 on all three peer ports, re-opening each one
# the nodes close. Under the flood:
#   1. the cluster commits throughout: the leader's commit index advances in
#      every one-second window of the flood;
#   2. a follower SIGKILLed and restarted rejoins within 2 election timeouts
#      of coming up (it follows the leader and has applied what the leader
#      had committed when it came up), although every connection it makes
#      has to pass a flooded peer port (it dials the lower ids; the higher
#      ones dial it, on its own flooded port);
#   3. the leader's log stays small (MAX_LOG_BYTES over the flood: the
#      transport's lines are rate-limited), and says what the flood cost
#      (the admission summary line);
#   4. the nodes stop cleanly, with no errors or sanitizer reports.
# On the main of 2026-12-03 (128 pending slots per shard, first come first
# served, no per-address limit) the restarted node is kept out for seconds
# and the leader writes thousands of lines.
# Read from the status files (node_lib.sh).
# usage: node_flood.sh KEEL_BINARY FLOOD_PEER_BINARY [CONNS] [FLOOD_SECONDS]
set -uo pipefail
KEEL=$1
FLOOD=$2
CONNS=${3:-600}
FLOOD_S=${4:-12}
TICK=50
ELECTION_TICKS=20 # an election timeout of 1 s
ET_MS=$((TICK * ELECTION_TICKS))
MAX_LOG_BYTES=$((FLOOD_S * 3000))
skip() { echo "SKIP: $*"; exit 77; }
[ -x "$FLOOD" ] || skip "no flood_peer binary ($FLOOD)"
dir=$(mktemp -d /tmp/keel-node-flood.XXXXXX)
declare -A pid
fpid=
cleanup() {
  [ -n "$fpid" ] && kill "$fpid" 2>/dev/null
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "$fpid" ] && wait "$fpid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
. "$(dirname "${BASH_SOURCE[0]}")/node_lib.sh"
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# 127.0.0.2 must be usable as a source address (it is on Linux loopback).
"$FLOOD" 127.0.0.2 1 0.01 0 9 >/dev/null 2>&1 || skip "cannot bind 127.0.0.2 here"

base=$((21000 + ($$ % 600) * 20))
head -c 32 /dev/urandom | base64 > "$dir/secret"
chmod 600 "$dir/secret"
for n in 1 2 3; do
  cat > "$dir/n$n.ini" <<EOF
[node]
id = $n
cluster = 18
listen = 127.0.0.1:$((base + n * 4))
shards = 1
secret_file = secret
[peers]
1 = 127.0.0.1:$((base + 4))
2 = 127.0.0.1:$((base + 8))
3 = 127.0.0.1:$((base + 12))
[log]
groups = 1
dir = data$n
tick_ms = $TICK
election_ticks = $ELECTION_TICKS
segment_size = 1M
snapshot_every = 20000
snapshot_keep = 1000
EOF
done
start() {
  "$KEEL" node --config "$dir/n$1.ini" --status-file "$dir/s$1" --status-ms 50 \
    --propose 100000000 >>"$dir/n$1.log" 2>&1 &
  pid[$1]=$!
}
for n in 1 2 3; do start $n; done
wait_until 30 all_led 1 2 3 || fail "no leader all three agree on"
read -r L T < <(leader_of 0 1 2 3)
wait_until 30 progress 1 1 2 3 || fail "nothing committed before the flood"
ok "node $L leads in term $T; the cluster commits ($(elapsed) s)"

# ---- the flood --------------------------------------------------------------
log0=$(stat -c %s "$dir/n$L.log")
"$FLOOD" 127.0.0.2 "$CONNS" "$FLOOD_S" 100 $((base + 4)) $((base + 8)) $((base + 12)) \
  >"$dir/flood.out" 2>&1 &
fpid=$!
flood_t0=$(now_ms)
ok "flood: $CONNS idle and half-open connections from 127.0.0.2 on the three peer ports for $FLOOD_S s"

# commit_of NODE: the node's commit index from the last read_status
commit_of() { sv "$1" 0 commit; }
declare -a windows=()
last_commit=
last_t=
# sample: one commit reading of the leader per second of the flood
sample() {
  read_status "$L" || return 0
  local c t
  c=$(commit_of "$L"); t=$(now_ms)
  if [ -z "$last_t" ]; then last_commit=$c; last_t=$t; return 0; fi
  if [ $((t - last_t)) -ge 1000 ]; then
    windows+=("$((c - last_commit))")
    [ "$c" -gt "$last_commit" ] || fail "the leader committed nothing between $((last_t - flood_t0)) and $((t - flood_t0)) ms into the flood (commit $c)"
    last_commit=$c; last_t=$t
  fi
}
sleep_sampling() { # SECONDS
  local end=$(( $(now_ms) + $1 * 1000 ))
  while [ "$(now_ms)" -lt "$end" ]; do check_nodes; sample; sleep 0.1; done
}
sleep_sampling 2

# ---- a follower restarted under the flood -------------------------------------
F=
for n in 3 2 1; do [ "$n" != "$L" ] && { F=$n; break; }; done
kp=${pid[$F]}
kill -9 "$kp"
wait "$kp" 2>/dev/null
unset "pid[$F]"
ok "kill -9 of follower $F (pid $kp) $(( $(now_ms) - flood_t0 )) ms into the flood"
sleep_sampling 1
start "$F"
# up: its status file is its own (read_status checks the pid) and complete
for _ in $(seq 300); do read_status "$F" 2>/dev/null && break; check_nodes; sample; sleep 0.02; done
read_status "$F" || fail "restarted node $F wrote no status"
up_t=$(now_ms)
read_status "$L" || fail "leader's status unreadable"
want=$(commit_of "$L")
rejoined() {
  read_status "$F" "$L" || return 1
  [ "$(sv "$F" 0 leader)" = "$L" ] && [ "$(sv "$F" 0 applied)" -ge "$want" ]
}
rj=
while [ $(( $(now_ms) - up_t )) -lt $((4 * ET_MS + 2000)) ]; do
  if rejoined; then rj=$(( $(now_ms) - up_t )); break; fi
  check_nodes; sample; sleep 0.02
done
[ -n "$rj" ] || fail "restarted node $F did not rejoin leader $L within $((4 * ET_MS + 2000)) ms under the flood (leader $(sv "$F" 0 leader), applied $(sv "$F" 0 applied) of $want)"
[ "$rj" -le $((2 * ET_MS)) ] || fail "restarted node $F took $rj ms to rejoin leader $L under the flood, more than 2 election timeouts ($((2 * ET_MS)) ms)"
ok "restarted node $F rejoined leader $L in $rj ms of coming up (2 election timeouts: $((2 * ET_MS)) ms): follows it, applied ${want}+"

# ---- to the end of the flood ---------------------------------------------------
while kill -0 "$fpid" 2>/dev/null; do check_nodes; sample; sleep 0.1; done
wait "$fpid"
frc=$?
fpid=
[ $frc = 0 ] || fail "flood_peer exited with $frc: $(cat "$dir/flood.out")"
cat "$dir/flood.out"
grep -q " 0 connections opened" "$dir/flood.out" && fail "the flood opened no connection"
[ "${#windows[@]}" -ge $((FLOOD_S - 3)) ] || fail "only ${#windows[@]} one-second windows sampled in a $FLOOD_S s flood"
ok "the leader committed in each of ${#windows[@]} one-second windows of the flood (entries per window: ${windows[*]})"

log1=$(stat -c %s "$dir/n$L.log")
grown=$((log1 - log0))
lines=$(tail -c "$grown" "$dir/n$L.log" | wc -l)
[ "$grown" -le "$MAX_LOG_BYTES" ] || {
  tail -c "$grown" "$dir/n$L.log" | cut -c28- | sed 's/[0-9]\+/N/g' | sort | uniq -c | sort -rn | head -8
  fail "the leader's log grew by $grown bytes ($lines lines) in the $FLOOD_S s flood (bound $MAX_LOG_BYTES)"
}
grep -q "tcp: admission on shard 0" "$dir/n$L.log" || fail "the leader's log has no admission summary"
grep "tcp: admission on shard 0" "$dir/n$L.log" | tail -1
ok "the leader's log grew by $grown bytes ($lines lines) over the flood (bound $MAX_LOG_BYTES)"

stop_all
echo "PASS: $CONNS flooding connections on 3 peer ports: commits throughout, node $F rejoined in $rj ms, leader's log +$grown bytes ($(elapsed) s)"
