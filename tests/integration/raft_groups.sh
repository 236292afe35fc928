#!/usr/bin/env bash
# Shard-aligned groups: three `keel raft --groups G` processes on 127.0.0.1
# over TCP; group s runs on shard s of every node and talks to shard s of
# the peers. Every group elects a leader and commits N entries on all three
# nodes (each group its own log: own sums); then the node leading group 0
# is SIGKILLed and every group has a leader among the two others in a
# higher term than before if it had lost its leader, and commits N more.
# usage: raft_groups.sh KEEL_BINARY [GROUPS] [N] [TICK_MS]
set -uo pipefail
KEEL=$1
G=${2:-2}
N=${3:-5}
TICK=${4:-50}
dir=$(mktemp -d /tmp/keel-raft-groups.XXXXXX)
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
. "$(dirname "${BASH_SOURCE[0]}")/raft_lib.sh"

# Below the ephemeral range; each node uses base + 8n .. + G - 1.
base=$((20000 + ($$ % 600) * 20))
head -c 32 /dev/urandom | base64 > "$dir/secret"
chmod 600 "$dir/secret"
for n in 1 2 3; do
  cat > "$dir/n$n.ini" <<EOF
[node]
id = $n
cluster = 11
listen = 127.0.0.1:$((base + n * 8))
secret_file = secret
handshake_timeout_ms = 1000
[peers]
1 = 127.0.0.1:$((base + 8))
2 = 127.0.0.1:$((base + 16))
3 = 127.0.0.1:$((base + 24))
EOF
done

start() {
  "$KEEL" raft --config "$dir/n$1.ini" --data "$dir/data$1" --groups "$G" --propose "$N" \
    --tick-ms "$TICK" --segment-kib 256 >>"$dir/n$1.out" 2>>"$dir/n$1.err" &
  pid[$1]=$!
}
# count NODE GROUP, sum_at NODE GROUP COUNT
# These readers (and counts_at_least below) take a group: sum_at and
# counts_at_least replace raft_lib.sh's one-group versions.
count() { awk -v w="node $1.$2:" '$1" "$2 == w && / (applied|snapshot) index /{c=$9} END{print c+0}' "$dir/n$1.out"; }
sum_at() { awk -v w="node $1.$2:" -v c="$3" '$1" "$2 == w && / (applied|snapshot) index /{if ($9 == c) s=$11} END{print s}' "$dir/n$1.out"; }
# leader GROUP NODE...: "node term" of the highest-term node whose last role line says leader
leader() {
  local g=$1 best= bt=0; shift
  for n in "$@"; do
    local line; line=$(grep -E "^node $n\\.$g: (leader|follower|candidate|pre-candidate) term " "$dir/n$n.out" | tail -n 1)
    case $line in
      *": leader term "*) local t=${line##* }; [ "$t" -gt "$bt" ] && { bt=$t; best=$n; } ;;
    esac
  done
  [ -n "$best" ] && echo "$best $bt"
}
all_leaders() { local nodes=("$@"); for ((g = 0; g < G; g++)); do leader $g "${nodes[@]}" >/dev/null || return 1; done; }
counts_at_least() {  # C NODE...
  local c=$1; shift
  for ((g = 0; g < G; g++)); do for n in "$@"; do [ "$(count "$n" $g)" -ge "$c" ] || return 1; done; done
}

for n in 1 2 3; do start $n; done
wait_until 30 all_leaders 1 2 3 || fail "not every group elected a leader"
wait_until 30 counts_at_least "$N" 1 2 3 || fail "$N proposals not applied in every group on all three"
declare -A T1
lead0=
for ((g = 0; g < G; g++)); do
  read -r l t < <(leader $g 1 2 3)
  T1[$g]=$t
  [ $g = 0 ] && lead0=$l
  s1=$(sum_at 1 $g "$N"); s2=$(sum_at 2 $g "$N"); s3=$(sum_at 3 $g "$N")
  [ -n "$s1" ] && [ "$s1" = "$s2" ] && [ "$s2" = "$s3" ] || fail "group $g: checksums differ at $N"
  ok "group $g: node $l leads (term $t); $N entries on all three, checksum $s1"
done
leaders=$(for ((g = 0; g < G; g++)); do leader $g 1 2 3 | cut -d' ' -f1; done | sort -u | wc -l)
echo "groups are led by $leaders distinct node(s)"

# Every group's sum differs from the others' (separate logs).
if [ "$G" -gt 1 ]; then
  [ "$(sum_at 1 0 "$N")" != "$(sum_at 1 1 "$N")" ] || fail "groups 0 and 1 have the same log"
fi

rest=()
for n in 1 2 3; do [ "$n" = "$lead0" ] || rest+=("$n"); done
# What group 0's survivors applied before the kill stays; its next leader adds N.
grp0_target=0
for n in "${rest[@]}"; do c=$(count "$n" 0); [ "$c" -gt "$grp0_target" ] && grp0_target=$c; done
kill -9 "${pid[$lead0]}"
wait "${pid[$lead0]}" 2>/dev/null
unset "pid[$lead0]"
wait_until 30 all_leaders "${rest[@]}" || fail "not every group has a leader after killing node $lead0"
read -r l t < <(leader 0 "${rest[@]}")
[ "$t" -gt "${T1[0]}" ] || fail "group 0: leader $l in term $t, not above ${T1[0]}"
ok "killed node $lead0 (leader of group 0): group 0 re-elected node $l in term $t ($(elapsed) s)"
c0_done() { local c; for n in "${rest[@]}"; do c=$(count "$n" 0); [ "$c" -ge $((grp0_target + N)) ] || return 1; done; }
wait_until 30 c0_done || fail "group 0's new leader did not commit $N more"
c=$(count "$l" 0)
[ "$(sum_at "${rest[0]}" 0 "$c")" = "$(sum_at "${rest[1]}" 0 "$c")" ] || fail "group 0: survivors differ at $c"
ok "group 0: $N more entries committed on both survivors (count $c) ($(elapsed) s)"

for n in "${rest[@]}"; do kill "${pid[$n]}"; done
for n in "${rest[@]}"; do wait "${pid[$n]}" || fail "node $n exited with $? on SIGTERM"; done
pid=()
grep -h "ERROR\|runtime error\|AddressSanitizer" "$dir"/*.err && fail "errors in the logs"
echo "PASS: $G groups on 3 nodes (group s on shard s): elections, commits, a leader killed and re-elected ($(elapsed) s)"
