# Shared by the `keel node` integration tests (node_tcp.sh, node_groups.sh,
# node_cluster.sh, dpdk/node_netns.sh); sourced, not run. The test defines
# before use:
#   dir   its temporary directory: node N runs with --status-file $dir/sN
#         and logs to $dir/nN.log
#   pid   an associative array, node -> PID of its running keel node
#   G     the number of groups (default 1)
# and may redefine check_nodes (what wait_until checks between polls).
#
# Everything here reads the nodes' status files (cli/cmd_node.c: one
# key=value line for the node, one per group), by key, never by position,
# and never the log lines.

G=${G:-1}

fail() {
  echo "FAIL: $*"
  for f in "$dir"/*.log; do echo "--- $f"; tail -n 25 "$f"; done
  for f in "$dir"/s[0-9]*; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done
  exit 1
}
ok() { echo "ok: $*"; }
t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}'; }

# check_nodes: fails the test when a node that should run has exited.
check_nodes() {
  local n
  for n in "${!pid[@]}"; do
    kill -0 "${pid[$n]}" 2>/dev/null || fail "node $n exited (pid ${pid[$n]})"
  done
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

# ---- status files ---------------------------------------------------------
# ST[N.key] from node N's first line (pid, up, shards, groups) and
# ST[N.G.key] from its line for group G.
declare -A ST
# read_status NODE...: loads the status files of NODE...; false while one
# is missing, not yet written by the running process (its pid= is not
# ${pid[N]}: a killed node's last file, or a restart not yet up), or not
# yet complete (a shard that has not reported its groups yet).
read_status() {
  local n line w g lines
  for n in "$@"; do
    [ -r "$dir/s$n" ] || return 1
    lines=0
    {
      read -r line || return 1
      for w in $line; do ST[$n.${w%%=*}]=${w#*=}; done
      while read -r line; do
        g=${line%% *}
        g=${g#group=}
        for w in $line; do ST[$n.$g.${w%%=*}]=${w#*=}; done
        lines=$((lines + 1))
      done
    } <"$dir/s$n"
    [ "${ST[$n.pid]}" = "${pid[$n]:-none}" ] && [ "${ST[$n.up]}" = 1 ] || return 1
    [ "$lines" = "${ST[$n.groups]}" ] && [ "$lines" = "$G" ] || return 1
  done
  safety "$@"
}
# sv NODE GROUP KEY: a value from the last read_status
sv() { echo "${ST[$1.$2.$3]-}"; }

# safety NODE...: any two nodes that applied a group's log up to the same
# index hold the same state machine (count and sum). Fails the test at once
# otherwise: a divergence is never something to wait out.
safety() {
  local g a b
  for ((g = 0; g < G; g++)); do
    for a in "$@"; do
      for b in "$@"; do
        [ "$a" -lt "$b" ] || continue
        [ "${ST[$a.$g.applied]}" = "${ST[$b.$g.applied]}" ] || continue
        [ "${ST[$a.$g.count]}" = "${ST[$b.$g.count]}" ] && [ "${ST[$a.$g.sum]}" = "${ST[$b.$g.sum]}" ] ||
          fail "group $g: nodes $a and $b both applied index ${ST[$a.$g.applied]} but hold count ${ST[$a.$g.count]} sum ${ST[$a.$g.sum]} vs count ${ST[$b.$g.count]} sum ${ST[$b.$g.sum]}"
        [ "${ST[$a.$g.failed]}" = 0 ] && [ "${ST[$b.$g.failed]}" = 0 ] || fail "group $g failed on node $a or $b"
      done
    done
  done
  return 0
}

# leader_of GROUP NODE...: prints "LEADER TERM" when every NODE (as last
# read) agrees that LEADER, one of them, leads GROUP in TERM and it says so.
leader_of() {
  local g=$1 n l= t=; shift
  for n in "$@"; do
    local ll=${ST[$n.$g.leader]-0} tt=${ST[$n.$g.term]-}
    [ "$ll" != 0 ] || return 1
    if [ -z "$l" ]; then l=$ll t=$tt; else [ "$ll" = "$l" ] && [ "$tt" = "$t" ] || return 1; fi
  done
  [[ " $* " == *" $l "* ]] && [ "${ST[$l.$g.role]}" = leader ] || return 1
  echo "$l $t"
}
# all_led NODE...: every group has a leader all of NODE agree on.
all_led() {
  local g
  read_status "$@" || return 1
  for ((g = 0; g < G; g++)); do leader_of $g "$@" >/dev/null || return 1; done
}
# same GROUP NODE...: every NODE applied GROUP's log to the same index
# (hence, by safety, the same count and sum); prints "APPLIED COUNT SUM".
same() {
  local g=$1 n a=; shift
  for n in "$@"; do
    [ -z "$a" ] && a=${ST[$n.$g.applied]}
    [ "${ST[$n.$g.applied]}" = "$a" ] || return 1
  done
  echo "$a ${ST[$1.$g.count]} ${ST[$1.$g.sum]}"
}
# counts_at_least C NODE...: in every group, every NODE counts C applied
# commands or more and all of NODE agree (same applied index).
counts_at_least() {
  local c=$1 g n; shift
  read_status "$@" || return 1
  for ((g = 0; g < G; g++)); do
    same $g "$@" >/dev/null || return 1
    for n in "$@"; do [ "${ST[$n.$g.count]}" -ge "$c" ] || return 1; done
  done
}

# progress C NODE...: in every group, every NODE counts C applied commands
# or more (no agreement asked: for a cluster under load).
progress() {
  local c=$1 g n; shift
  read_status "$@" || return 1
  for ((g = 0; g < G; g++)); do
    for n in "$@"; do [ "${ST[$n.$g.count]}" -ge "$c" ] || return 1; done
  done
}

# The scenario phases shared by node_tcp.sh and node_netns.sh (nodes 1 2 3,
# one group, every leader proposes N). WHERE ends the messages.
# elect_and_commit SECONDS WHERE: a leader is elected (L1, T1 set) and its
# N entries are applied on all three with one checksum.
elect_and_commit() {
  local t=$1 where=$2
  wait_until "$t" all_led 1 2 3 || fail "no leader all three agree on$where"
  read -r L1 T1 < <(leader_of 0 1 2 3)
  ok "node $L1 elected leader in term $T1$where ($(elapsed) s)"
  # The reactor asked for must be what runs: EXPECT_REACTOR (the seccomp
  # test, where AUTO must pick epoll), else KEEL_REACTOR (suite 'epoll').
  local want=${EXPECT_REACTOR:-${KEEL_REACTOR:-}}
  if [ -n "$want" ]; then
    local n
    for n in 1 2 3; do
      [ "${ST[$n.reactor]-}" = "$want" ] ||
        fail "node $n runs the ${ST[$n.reactor]-?} reactor, expected $want"
    done
    ok "all three run the $want reactor"
  fi
  wait_until "$t" counts_at_least "$N" 1 2 3 || fail "$N proposals not applied on all three"
  read -r _ c s < <(same 0 1 2 3)
  ok "$c entries committed and applied on all three, same checksum $s ($(elapsed) s)"
}
# kill_leader SECONDS: SIGKILLs the leader L1 (by PID); the two survivors
# (rest) elect L2 in a term T2 above T1 and apply its N entries on top of
# what they had: both reach count c with checksum sa. Keeps what L1 had
# applied and its term (k_applied, k_term) for the restart checks.
kill_leader() {
  local t=$1 have=0 n k
  read_status 1 2 3 || fail "status files unreadable before the kill"
  read -r L1 T1 < <(leader_of 0 1 2 3) || fail "no agreed leader before the kill"
  for n in 1 2 3; do k=$(sv "$n" 0 count); [ "$k" -gt "$have" ] && have=$k; done
  k_applied=$(sv "$L1" 0 applied)
  k_term=$(sv "$L1" 0 term)
  local kp=${pid[$L1]}
  kill -9 "$kp"
  wait "$kp" 2>/dev/null
  unset "pid[$L1]"
  rest=()
  for n in 1 2 3; do [ "$n" = "$L1" ] || rest+=("$n"); done
  wait_until "$t" new_leader || fail "no new leader after killing node $L1 (term $T1)"
  read -r L2 T2 < <(leader_of 0 "${rest[@]}")
  ok "kill -9 of leader $L1 (pid $kp, term $T1); node $L2 elected in term $T2 ($(elapsed) s)"
  wait_until "$t" counts_at_least $((have + N)) "${rest[@]}" || fail "new leader's proposals did not commit on both survivors"
  read -r _ c sa < <(same 0 "${rest[@]}")
  ok "new leader's $N entries committed on both survivors (count $c, checksum $sa) ($(elapsed) s)"
}
# new_leader: the survivors agree on a leader in a term above T1.
new_leader() {
  local l
  read_status "${rest[@]}" || return 1
  l=$(leader_of 0 "${rest[@]}") || return 1
  [ "${l#* }" -gt "$T1" ]
}
# restart_checks NODE SNAP: NODE, restarted, recovered its WAL (a term not
# below k_term, a log reaching k_applied), caught up with the others to
# count c or more on the same index, and with SNAP > 0 restarted from its
# own snapshot and caught up through InstallSnapshot.
restart_checks() {
  local n=$1 snap=$2 rt rl rs
  wait_until 30 read_status "$n" || fail "node $n (restarted) wrote no status"
  rt=$(sv "$n" 0 recovered_term); rl=$(sv "$n" 0 recovered_last); rs=$(sv "$n" 0 recovered_snapshot)
  [ "$rt" -ge "$k_term" ] || fail "node $n recovered term $rt, below its term $k_term"
  [ "$rl" -ge "$k_applied" ] || fail "node $n recovered a log to $rl, short of the $k_applied it had applied"
  wait_until 30 counts_at_least "$c" 1 2 3 || fail "node $n did not catch up to count $c with the others"
  local a cc s; read -r a cc s < <(same 0 1 2 3)
  [ "$cc" != "$c" ] || [ "$s" = "$sa" ] || fail "node $n: checksum $s at count $c, the survivors had $sa"
  ok "node $n restarted from its WAL (term $rt, log to $rl, snapshot $rs), caught up: index $a, count $cc, checksum $s on all three ($(elapsed) s)"
  if [ "$snap" -gt 0 ]; then
    [ "$rs" -gt 0 ] || fail "node $n did not restart from its own snapshot (recovered_snapshot=0)"
    [ "$(sv "$n" 0 snapshots_installed)" -ge 1 ] || fail "node $n caught up without InstallSnapshot"
    ok "node $n restarted from its snapshot at $rs and caught up through InstallSnapshot (snapshot $(sv "$n" 0 snapshot) now)"
  fi
}
# stop_all: SIGTERM every running node; each exits 0 and says up=0; no
# errors or sanitizer reports in the logs.
stop_all() {
  local n
  for n in "${!pid[@]}"; do kill "${pid[$n]}"; done
  for n in "${!pid[@]}"; do
    wait "${pid[$n]}" || fail "node $n exited with $? on SIGTERM"
    grep -q '^node=.* up=0$' "$dir/s$n" || fail "node $n did not write its final status (up=0)"
  done
  pid=()
  grep -h "ERROR\|runtime error\|Sanitizer" "$dir"/*.log && fail "errors in the logs"
  return 0
}
