# Fault injection for map-reduce from outside the library: run `keel mr run`
# with --progress-fd, read its event lines as they come, and SIGKILL a node's
# process (by PID) when a line matches. Sourced by mr_cluster.sh and
# scripts/demo; not run.

# mr_run_killing EVENTS WHEN VICTIM CMD...
#   Runs CMD (a `keel mr run ...` command line) with --progress-fd 3 added,
#   appends every event line to the file EVENTS, and at the first line that
#   matches the extended regular expression WHEN kills VICTIM with SIGKILL:
#   VICTIM is a node id of a --local-cluster (its pid comes from the "node"
#   events) or pid:N for a process started by hand. Then appends
#   {"event":"killed","node":...,"pid":...} to EVENTS. Returns CMD's status;
#   CMD's stdout and stderr are the caller's.
mr_run_killing() {
  local events=$1 when=$2 victim=$3
  shift 3
  local fifo
  fifo=$(mktemp -u "${TMPDIR:-/tmp}/keel-mr-events.XXXXXX")
  mkfifo "$fifo" || return 1
  "$@" --progress-fd 3 3>"$fifo" &
  local job=$! pid="" killed=0 line
  case $victim in pid:*) pid=${victim#pid:} ;; esac
  while IFS= read -r line; do
    printf '%s\n' "$line" >>"$events"
    if [ -z "$pid" ] && [[ $line =~ \"event\":\"node\",\"node\":$victim,\"pid\":([0-9]+) ]]; then
      pid=${BASH_REMATCH[1]}
    fi
    if [ $killed = 0 ] && [ -n "$pid" ] && [[ $line =~ $when ]]; then
      # Only a keel process: never whatever reused the pid.
      if [[ $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null) == *keel* ]]; then
        kill -9 "$pid" 2>/dev/null
      fi
      killed=1
      printf '{"event":"killed","node":"%s","pid":%s}\n' "${victim#pid:}" "$pid" >>"$events"
    fi
  done <"$fifo"
  wait "$job"
  local rc=$?
  rm -f "$fifo"
  return $rc
}

# mr_event_field EVENTS EVENT FIELD: FIELD of the last EVENT line in EVENTS
# (a number, or true/false), empty when there is none.
mr_event_field() {
  grep "\"event\":\"$2\"" "$1" | tail -n1 | sed -n "s/.*\"$3\":\([0-9a-z]*\).*/\1/p"
}
