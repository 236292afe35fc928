#!/usr/bin/env bash
# A node killed and restarted under load, every group recovers: three `keel
# node` processes on 127.0.0.1 over TCP, 2 shards each hosting G Raft groups
# ([log] groups = G, group g on shard g mod 2), every leader proposing P
# entries of its own (--propose P), small ticks, 64 KiB WAL segments and
# snapshots every 32 entries. Read from the status files (node_lib.sh):
#   1. every group elects a leader all three agree on and commits under load;
#   2. the node leading the most groups is SIGKILLed (by PID) while the load
#      runs: every group has a leader the two survivors agree on (the groups
#      it led in a higher term) and keeps committing, until the survivors'
#      snapshots have passed what the killed node holds;
#   3. the node restarts: it recovered, per group, a term not below and a
#      log not shorter than what it had applied; every group then converges
#      with the load done: a leader all three agree on, the same applied
#      index, count and checksum on all three, the restarted node caught up
#      through InstallSnapshot, and nothing acknowledged lost (each group's
#      count is at least the proposals its nodes saw committed, the killed
#      process's included).
# Any two nodes that applied a group to the same index must hold the same
# count and checksum at every poll (node_lib.sh's safety).
# usage: node_restart.sh KEEL_BINARY [GROUPS] [P] [TICK_MS]
set -uo pipefail
KEEL=$1
G=${2:-8}
P=${3:-300}
TICK=${4:-20}
SNAP_EVERY=32
SNAP_KEEP=16
dir=$(mktemp -d /tmp/keel-node-restart.XXXXXX)
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
. "$(dirname "${BASH_SOURCE[0]}")/node_lib.sh"

base=$((20000 + ($$ % 600) * 20))
head -c 32 /dev/urandom | base64 > "$dir/secret"
chmod 600 "$dir/secret"
for n in 1 2 3; do
  cat > "$dir/n$n.ini" <<EOF
[node]
id = $n
cluster = 12
listen = 127.0.0.1:$((base + n * 4))
shards = 2
secret_file = secret
handshake_timeout_ms = 1000
[peers]
1 = 127.0.0.1:$((base + 4))
2 = 127.0.0.1:$((base + 8))
3 = 127.0.0.1:$((base + 12))
[log]
groups = $G
dir = data$n
tick_ms = $TICK
election_ticks = 10
segment_size = 64K
snapshot_every = $SNAP_EVERY
snapshot_keep = $SNAP_KEEP
EOF
done

start() {
  "$KEEL" node --config "$dir/n$1.ini" --status-file "$dir/s$1" --status-ms 50 --propose "$P" \
    >>"$dir/n$1.log" 2>&1 &
  pid[$1]=$!
}

# 1. every group elects and commits, the load still running
for n in 1 2 3; do start $n; done
wait_until 30 all_led 1 2 3 || fail "not every group has a leader all three agree on"
ok "all $G groups elected a leader all three agree on ($(elapsed) s)"
wait_until 30 progress 20 1 2 3 || fail "not every group committed 20 entries on all three"
ok "every group committed 20 entries or more on all three, the load still running ($(elapsed) s)"

# 2. kill -9 the node leading the most groups, under load
read_status 1 2 3 || fail "status files unreadable before the kill"
declare -A led=([1]=0 [2]=0 [3]=0) lead_of v_term v_applied v_last v_committed
busy=0
for ((g = 0; g < G; g++)); do
  read -r l t < <(leader_of $g 1 2 3) || fail "group $g has no agreed leader before the kill"
  lead_of[$g]=$l
  led[$l]=$((led[$l] + 1))
  [ "$(sv "$l" $g committed)" -lt "$P" ] && busy=$((busy + 1))
done
V=1
for n in 2 3; do [ "${led[$n]}" -gt "${led[$V]}" ] && V=$n; done
for ((g = 0; g < G; g++)); do
  v_term[$g]=$(sv $V $g term)
  v_applied[$g]=$(sv $V $g applied)
  v_last[$g]=$(sv $V $g last)
  v_committed[$g]=$(sv $V $g committed)
done
[ "$busy" -gt 0 ] || fail "the load was over before the kill (raise P)"
kp=${pid[$V]}
kill -9 "$kp"
wait "$kp" 2>/dev/null
unset "pid[$V]"
ok "kill -9 of node $V (pid $kp, leading ${led[$V]} of $G groups) with $busy groups still under load ($(elapsed) s)"
rest=()
for n in 1 2 3; do [ "$n" = "$V" ] || rest+=("$n"); done

reelected() {
  local g l
  all_led "${rest[@]}" || return 1
  for ((g = 0; g < G; g++)); do
    [ "${lead_of[$g]}" = "$V" ] || continue
    l=$(leader_of $g "${rest[@]}")
    [ "${l#* }" -gt "${v_term[$g]}" ] || return 1
  done
}
wait_until 30 reelected || fail "not every group has a leader both survivors agree on after the kill"
ok "every group has a leader both survivors agree on; the ${led[$V]} groups node $V led re-elected in a higher term ($(elapsed) s)"
# Both survivors compact well past the killed node's log (as last seen: its
# status file may be 100 ms old, hence the margin of SNAP_EVERY) in every
# group whose load lasts that long.
compacted() {
  local g n l done_g
  read_status "${rest[@]}" || return 1
  for ((g = 0; g < G; g++)); do
    done_g=1
    for n in "${rest[@]}"; do
      [ "${ST[$n.$g.snapshot]}" -gt $((v_last[$g] + SNAP_KEEP + SNAP_EVERY)) ] || done_g=0
    done
    [ $done_g = 1 ] && continue
    # or the group is finished (its leader's load done, both survivors equal)
    l=$(leader_of $g "${rest[@]}") || return 1
    [ "${ST[${l% *}.$g.committed]}" -ge "$P" ] && same $g "${rest[@]}" >/dev/null || return 1
  done
}
wait_until 60 compacted || fail "the survivors did not keep committing and compacting without node $V"
read_status "${rest[@]}" || fail "status files unreadable before the restart"
declare -A pre_snap
for ((g = 0; g < G; g++)); do
  pre_snap[$g]=$(sv "${rest[0]}" $g snapshot)
  [ "$(sv "${rest[1]}" $g snapshot)" -lt "${pre_snap[$g]}" ] && pre_snap[$g]=$(sv "${rest[1]}" $g snapshot)
done
ok "the survivors kept committing and compacting without node $V ($(elapsed) s)"

# 3. restart it: every group recovers
start "$V"
wait_until 30 read_status "$V" || fail "node $V (restarted) wrote no status"
for ((g = 0; g < G; g++)); do
  rt=$(sv $V $g recovered_term); rl=$(sv $V $g recovered_last)
  [ "$rt" -ge "${v_term[$g]}" ] || fail "group $g: node $V recovered term $rt, below its ${v_term[$g]}"
  [ "$rl" -ge "${v_applied[$g]}" ] || fail "group $g: node $V recovered a log to $rl, short of the ${v_applied[$g]} it had applied"
done
# A group whose leader had compacted past the restarted node's log when it
# came back can only catch it up with InstallSnapshot (the leader keeps
# SNAP_KEEP entries behind its snapshot).
declare -A needs_snap
for ((g = 0; g < G; g++)); do
  [ $(( $(sv $V $g recovered_last) + 2 )) -lt $((pre_snap[$g] - SNAP_KEEP)) ] && needs_snap[$g]=1
done
[ "${#needs_snap[@]}" -gt 0 ] || fail "no group's leader compacted past node $V's log (raise P)"
ok "node $V restarted: every group recovered its term and a log reaching what it had applied; ${#needs_snap[@]} of $G groups need InstallSnapshot ($(elapsed) s)"
finished() {
  local g l
  all_led 1 2 3 || return 1
  for ((g = 0; g < G; g++)); do
    l=$(leader_of $g 1 2 3)
    [ "${ST[${l% *}.$g.committed]}" -ge "$P" ] && same $g 1 2 3 >/dev/null || return 1
  done
}
wait_until 90 finished || fail "not every group converged on all three after the restart"
for ((g = 0; g < G; g++)); do
  read -r l t < <(leader_of $g 1 2 3)
  read -r a c s < <(same $g 1 2 3)
  acked=${v_committed[$g]}
  for n in 1 2 3; do acked=$((acked + $(sv $n $g committed))); done
  [ "$c" -ge "$acked" ] || fail "group $g: count $c below the $acked proposals acknowledged as committed"
  inst=$(sv $V $g snapshots_installed)
  if [ -n "${needs_snap[$g]-}" ]; then
    [ "$inst" -ge 1 ] || fail "group $g: node $V caught up past the leader's snapshot without InstallSnapshot"
  fi
  ok "group $g: node $l leads (term $t); index $a, count $c (>= $acked acknowledged), checksum $s on all three; node $V: log recovered to $(sv $V $g recovered_last), $inst snapshot(s) installed"
done

stop_all
echo "PASS: $G groups on 2 shards of 3 nodes: node $V killed under load and restarted, every group recovered ($(elapsed) s)"
