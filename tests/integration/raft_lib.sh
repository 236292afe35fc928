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
