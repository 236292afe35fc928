#!/usr/bin/env bash
# Three `keel node` processes on 127.0.0.1 over TCP, one Raft group ([log]
# groups = 1, one shard), each leader proposing N entries (--propose N);
# everything is read from the nodes' status files (node_lib.sh):
#   1. one leader is elected, all three agree on it; its N proposals are
#      applied on all three (same index, count and checksum);
#   2. the leader is SIGKILLed (by its PID); the survivors agree on a new
#      leader in a higher term, and its N proposals commit on both;
#   3. the killed node restarts from its data dir: it recovered its term and
#      a log reaching what it had applied (recovered_* in its status), and
#      catches up: the same index, count and checksum as the others.
# With SNAP > 0 every node snapshots every SNAP applied entries keeping 2
# behind: the new leader has compacted past the restarted node's log, so it
# catches up through InstallSnapshot (snapshots_installed), and the restart
# starts from the node's own snapshot file (recovered_snapshot > 0).
# usage: node_tcp.sh KEEL_BINARY [N] [TICK_MS] [SNAP]
set -uo pipefail
KEEL=$1
N=${2:-10}
TICK=${3:-50}
SNAP=${4:-0}
G=1
dir=$(mktemp -d /tmp/keel-node-tcp.XXXXXX)
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
. "$(dirname "${BASH_SOURCE[0]}")/node_lib.sh"

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
[log]
groups = 1
dir = data$n
tick_ms = $TICK
segment_size = 256K
snapshot_every = $SNAP
snapshot_keep = 2
EOF
done

start() {  # start NODE
  "$KEEL" node --config "$dir/n$1.ini" --status-file "$dir/s$1" --status-ms 50 --propose "$N" \
    >>"$dir/n$1.log" 2>&1 &
  pid[$1]=$!
}

for n in 1 2 3; do start $n; done

# 1. election and commits on all three
elect_and_commit 30 ""

# 2. SIGKILL the leader; the other two elect a new one in a higher term
kill_leader 30

# 3. restart the killed node from its WAL (and snapshot): it rejoins and catches up
start "$L1"
restart_checks "$L1" "$SNAP"

# clean stop: every node exits 0 and writes its final status
stop_all
echo "PASS: keel node over TCP: election, commits, leader killed and re-elected, restart and catch-up ($(elapsed) s)"
