#!/usr/bin/env bash
# Three `keel node` processes on 127.0.0.1 where io_uring is refused, as
# under a container's seccomp profile: each runs under no_io_uring, a
# libseccomp filter installed in the process before keel starts that fails
# io_uring_setup with ENOSYS (podman; ERRNO=EPERM: Docker >= 25). Nothing
# forces the backend: AUTO must pick epoll, say why once in the log, and the
# WAL must take its helper-thread path. Then, as node_tcp.sh: one leader
# elected and its N proposals applied on all three; the leader SIGKILLed, a
# new one elected in a higher term and committing; the killed node restarted
# from its WAL and caught up; a clean stop.
# usage: node_seccomp.sh KEEL_BINARY NO_IO_URING_BINARY|none [N] [TICK_MS] [ERRNO]
set -uo pipefail
KEEL=$1
WRAP=$2
N=${3:-10}
TICK=${4:-50}
export KEEL_NO_IO_URING_ERRNO=${5:-ENOSYS}
G=1
if [ "$WRAP" = none ]; then
  echo "SKIP: needs libseccomp to refuse io_uring (Debian: libseccomp-dev, then reconfigure)"
  exit 77
fi
# Nothing may force the backend here.
unset KEEL_REACTOR KEEL_WAL_ENGINE
EXPECT_REACTOR=epoll
"$WRAP" true || exit $? # 77 where no seccomp filter can be installed
dir=$(mktemp -d /tmp/keel-node-seccomp.XXXXXX)
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
. "$(dirname "${BASH_SOURCE[0]}")/node_lib.sh"

# Below the ephemeral range (32768+), as node_tcp.sh; another PID stride so
# the two do not collide when run side by side.
base=$((21000 + ($$ % 500) * 20))
head -c 32 /dev/urandom | base64 > "$dir/secret"
chmod 600 "$dir/secret"
for n in 1 2 3; do
  cat > "$dir/n$n.ini" <<EOF2
[node]
id = $n
cluster = 11
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
EOF2
done

start() {  # start NODE
  "$WRAP" "$KEEL" node --config "$dir/n$1.ini" --status-file "$dir/s$1" --status-ms 50 \
    --propose "$N" >>"$dir/n$1.log" 2>&1 &
  pid[$1]=$!
}

for n in 1 2 3; do start $n; done

elect_and_commit 30 " with io_uring refused ($KEEL_NO_IO_URING_ERRNO)"
for n in 1 2 3; do
  grep -q "reactor: io_uring refused: io_uring_setup: " "$dir/n$n.log" ||
    fail "node $n did not log why it runs on epoll: $(head -5 "$dir/n$n.log")"
  grep -q "I/O path pwrite+fdatasync on a helper thread" "$dir/n$n.log" ||
    fail "node $n: the WAL did not take its helper-thread path"
done
ok "each node logged why it runs on epoll, and its WAL runs on the helper thread"

kill_leader 30
start "$L1"
restart_checks "$L1" 0
stop_all
echo "PASS: keel node with io_uring refused by seccomp ($KEEL_NO_IO_URING_ERRNO): epoll reactor, election, commits, leader killed and re-elected, restart and catch-up ($(elapsed) s)"
