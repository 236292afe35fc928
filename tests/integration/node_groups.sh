#!/usr/bin/env bash
# Many groups per shard: three `keel node` processes on 127.0.0.1 over TCP,
# 2 shards each, [log] groups = G (group g on shard g mod 2 of every node,
# talking to the same shard of the peers through the group envelope), each
# leader proposing N. Read from the status files (node_lib.sh):
#   1. every group elects a leader all three agree on and applies N entries
#      on all three; every group has its own log (its own checksum);
#   2. the node leading group 0 is SIGKILLed: every group has a leader the
#      two others agree on, group 0's in a higher term than before, and
#      group 0's new leader commits N more on both survivors.
# usage: node_groups.sh KEEL_BINARY [GROUPS] [N] [TICK_MS]
set -uo pipefail
KEEL=$1
G=${2:-4}
N=${3:-5}
TICK=${4:-50}
dir=$(mktemp -d /tmp/keel-node-groups.XXXXXX)
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
. "$(dirname "${BASH_SOURCE[0]}")/node_lib.sh"

# Below the ephemeral range; each node listens on base + 8n and + 8n + 1.
base=$((20000 + ($$ % 600) * 20))
head -c 32 /dev/urandom | base64 > "$dir/secret"
chmod 600 "$dir/secret"
for n in 1 2 3; do
  cat > "$dir/n$n.ini" <<EOF
[node]
id = $n
cluster = 11
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
segment_size = 256K
EOF
done

start() {
  "$KEEL" node --config "$dir/n$1.ini" --status-file "$dir/s$1" --status-ms 50 --propose "$N" \
    >>"$dir/n$1.log" 2>&1 &
  pid[$1]=$!
}

for n in 1 2 3; do start $n; done
wait_until 30 all_led 1 2 3 || fail "not every group has a leader all three agree on"
wait_until 30 counts_at_least "$N" 1 2 3 || fail "$N proposals not applied in every group on all three"
declare -A T1 sums
leaders=()
for ((g = 0; g < G; g++)); do
  read -r l t < <(leader_of $g 1 2 3) || fail "group $g lost its leader"
  T1[$g]=$t
  leaders+=("$l")
  read -r a c s < <(same $g 1 2 3)
  [ -z "${sums[$s]-}" ] || fail "groups ${sums[$s]} and $g have the same log (checksum $s)"
  sums[$s]=$g
  ok "group $g (shard $(sv 1 $g shard)): node $l leads (term $t); $c entries on all three at index $a, checksum $s"
done
echo "groups are led by $(printf '%s\n' "${leaders[@]}" | sort -u | wc -l) distinct node(s)"

lead0=${leaders[0]}
rest=()
for n in 1 2 3; do [ "$n" = "$lead0" ] || rest+=("$n"); done
# What group 0 applied before the kill stays; its next leader adds N.
read_status 1 2 3 || fail "status files unreadable before the kill"
target=$(( $(sv "$lead0" 0 count) + N ))
kp=${pid[$lead0]}
kill -9 "$kp"
wait "$kp" 2>/dev/null
unset "pid[$lead0]"
wait_until 30 all_led "${rest[@]}" || fail "not every group has a leader after killing node $lead0"
regroup() { read_status "${rest[@]}" && local l && l=$(leader_of 0 "${rest[@]}") && [ "${l#* }" -gt "${T1[0]}" ]; }
wait_until 30 regroup || fail "group 0 did not elect a new leader above term ${T1[0]}"
read -r l t < <(leader_of 0 "${rest[@]}")
ok "kill -9 of node $lead0 (pid $kp, leader of group 0): group 0 re-elected node $l in term $t, every group has a leader ($(elapsed) s)"
c0_done() {
  local n
  read_status "${rest[@]}" && same 0 "${rest[@]}" >/dev/null || return 1
  for n in "${rest[@]}"; do [ "$(sv "$n" 0 count)" -ge "$target" ] || return 1; done
}
wait_until 30 c0_done || fail "group 0's new leader did not commit $N more on both survivors"
read -r a c s < <(same 0 "${rest[@]}")
ok "group 0: $N more entries committed on both survivors (index $a, count $c) ($(elapsed) s)"

stop_all
echo "PASS: $G groups on 2 shards of 3 nodes: elections, commits, a leader killed and re-elected ($(elapsed) s)"
