# Shared by the `keel raft` integration tests (raft_tcp.sh, raft_groups.sh,
# dpdk/raft_netns.sh); sourced, not run. The test defines before use:
#   dir   its temporary directory: node N logs to $dir/nN.out and nN.err
#   pid   an associative array, node -> PID of its running keel raft
# and may redefine check_nodes (what wait_until checks between polls).

fail() {
  echo "FAIL: $*"
  for f in "$dir"/*.out "$dir"/*.err; do echo "--- $f"; tail -n 25 "$f"; done
  exit 1
}
ok() { echo "ok: $*"; }
t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}'; }

# check_nodes: fails the test when a node that should run has exited.
check_nodes() {
  for p in "${pid[@]}"; do kill -0 "$p" 2>/dev/null || fail "a node exited (pid $p)"; done
}
# wait_until SECONDS CMD...: polls CMD every 0.1 s
wait_until() {
  local t=$1; shift
  for _ in $(seq $((t * 10))); do
    "$@" && return 0
    check_nodes
    sleep 0.1
  done
  return 1
}

# The readers below parse the output of a node running one group.
# last_count NODE: the count of the last applied entry (0 if none)
last_count() { awk '/ (applied|snapshot) index /{c=$9} END{print c+0}' "$dir/n$1.out"; }
# sum_at NODE COUNT: the checksum after COUNT entries
sum_at() { awk -v c="$2" '/ (applied|snapshot) index /{if ($9 == c) s=$11} END{print s}' "$dir/n$1.out"; }
counts_at_least() {  # counts_at_least C NODE...
  local c=$1; shift
  for n in "$@"; do [ "$(last_count "$n")" -ge "$c" ] || return 1; done
}
current_leader() {  # prints "NODE TERM": the node whose last role line says leader, highest term
  local best= bt=0
  for n in "$@"; do
    local line; line=$(grep -E ": (leader|follower|candidate|pre-candidate) term " "$dir/n$n.out" | tail -n 1)
    case $line in
      *": leader term "*) local t=${line##* }; [ "$t" -gt "$bt" ] && { bt=$t; best=$n; } ;;
    esac
  done
  [ -n "$best" ] && echo "$best $bt"
}
have_leader() { current_leader "$@" >/dev/null; }

# The scenario phases shared by raft_tcp.sh and raft_netns.sh (nodes 1 2 3).
# elect_and_commit SECONDS WHERE: a leader is elected (L1, T1 set) and its
# N entries are applied on all three with one checksum. WHERE ends messages.
elect_and_commit() {
  local t=$1 where=$2 s1 s2 s3
  wait_until "$t" have_leader 1 2 3 || { check_nodes; fail "no leader elected$where"; }
  read -r L1 T1 < <(current_leader 1 2 3)
  ok "node $L1 elected leader in term $T1$where ($(elapsed) s)"
  wait_until "$t" counts_at_least "$N" 1 2 3 || fail "$N proposals not applied on all three"
  s1=$(sum_at 1 "$N"); s2=$(sum_at 2 "$N"); s3=$(sum_at 3 "$N")
  [ -n "$s1" ] && [ "$s1" = "$s2" ] && [ "$s2" = "$s3" ] || fail "checksums differ at count $N: $s1 $s2 $s3"
  ok "$N entries committed and applied on all three, same checksum $s1 ($(elapsed) s)"
}
# kill_leader SECONDS: SIGKILLs the leader (by PID); the two survivors
# (rest) elect L2 in a term T2 above the old leader's T1 and apply its N
# entries on top of what they had: both reach count c with checksum sa.
kill_leader() {
  local t=$1 have=0 n k sb
  read -r L1 T1 < <(current_leader 1 2 3)
  for n in 1 2 3; do [ "$n" = "$L1" ] || { k=$(last_count "$n"); [ "$k" -gt "$have" ] && have=$k; }; done
  kill -9 "${pid[$L1]}"
  wait "${pid[$L1]}" 2>/dev/null
  unset "pid[$L1]"
  rest=()
  for n in 1 2 3; do [ "$n" = "$L1" ] || rest+=("$n"); done
  wait_until "$t" new_leader || fail "no new leader after killing node $L1 (term $T1)"
  read -r L2 T2 < <(current_leader "${rest[@]}")
  ok "killed leader $L1 (term $T1); node $L2 elected in term $T2 ($(elapsed) s)"
  wait_until "$t" counts_at_least $((have + N)) "${rest[@]}" || fail "new leader's proposals did not commit"
  c=$(last_count "$L2")
  sa=$(sum_at "${rest[0]}" "$c"); sb=$(sum_at "${rest[1]}" "$c")
  [ -n "$sa" ] && [ "$sa" = "$sb" ] || fail "survivors' checksums differ at count $c: $sa $sb"
  ok "new leader's $N entries committed on both survivors (count $c) ($(elapsed) s)"
}
# new_leader: a survivor leads in a term above T1.
new_leader() {
  local l; l=$(current_leader "${rest[@]}") || return 1
  [ "${l#* }" -gt "$T1" ]
}
