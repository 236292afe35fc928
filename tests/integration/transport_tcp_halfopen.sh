#!/usr/bin/env bash
# Half-open TCP connections: a peer that vanishes without FIN or RST is
# detected within the configured peer_timeout_ms and reported as a broken
# connection, on both sides, and node 1 keeps serving.
#
# Inside a network namespace of its own (loopback only), node 2 streams
# messages to node 1; then an nftables rule drops every packet to and from
# node 1's port, as if node 2's host had lost power:
#   - node 1 now only waits: its keepalive probes go unanswered, and the
#     connection ends with "Connection timed out" (SO_KEEPALIVE + TCP_USER_TIMEOUT);
#   - node 2 has data in flight that is never acknowledged: its connection
#     ends with "Connection timed out" (TCP_USER_TIMEOUT) and `keel send`
#     fails with "broke mid-stream".
# Both must happen no sooner than the timeout and within timeout + SLACK.
# Then the rule goes and a new stream from node 2 is verified by node 1.
#
# Needs root, ip (iproute2) and nft (nftables); skips (exit 77) otherwise.
# usage: transport_tcp_halfopen.sh KEEL_BINARY [TIMEOUT_MS]
set -uo pipefail
KEEL=$1
TIMEOUT_MS=${2:-3000}
SLACK_MS=3000 # probe spacing (1 s at this timeout), retransmit backoff, load
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root for a network namespace and nftables"
command -v ip >/dev/null || skip "needs ip (iproute2)"
command -v nft >/dev/null || skip "needs nft (nftables)"

ns=keel-halfopen-$$
dir=$(mktemp -d /tmp/keel-halfopen.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$dir"/*.log; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }
ok() { echo "ok: $*"; }
in_ns() { ip netns exec "$ns" "$@"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

ip netns add "$ns" 2>/dev/null || skip "cannot create a network namespace here"
in_ns ip link set lo up || fail "lo up in $ns"
in_ns nft add table inet keelcut 2>/dev/null || skip "nftables does not work in a network namespace here"

port1=7104
head -c 32 /dev/urandom | base64 > "$dir/secret"
chmod 600 "$dir/secret"
for n in 1 2; do
  cat > "$dir/n$n.ini" <<EOF
[node]
id = $n
cluster = 11
listen = 127.0.0.1:$((7100 + n * 4))
shards = 1
secret_file = secret
peer_timeout_ms = $TIMEOUT_MS
[peers]
1 = 127.0.0.1:$port1
2 = 127.0.0.1:7108
EOF
done

# wait_log FILE PATTERN [SECONDS]: until the pattern is in the file
wait_log() {
  for _ in $(seq $((${3:-10} * 20))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  fail "no '$2' in $1"
}

# Not through in_ns: a function run with & is a subshell, and $! would be
# its PID, not keel's (cleanup's kill then left keel running).
ip netns exec "$ns" "$KEEL" node --config "$dir/n1.ini" >"$dir/n1.log" 2>&1 &
node1=$!
pids+=("$node1")
wait_log "$dir/n1.log" "listening on"

ip netns exec "$ns" "$KEEL" send --config "$dir/n2.ini" --to 1 --count 1000000000 --max-size 256 \
  >"$dir/send.out" 2>"$dir/send.log" &
sender=$!
pids+=("$sender")
wait_log "$dir/n1.log" "connection n2/s0 .* up"
sleep 0.3
grep -q "timed out" "$dir/n1.log" "$dir/send.log" && fail "a timeout before the cut"

# The cut: nothing reaches node 1's port, nothing leaves it.
in_ns nft add chain inet keelcut in '{ type filter hook input priority 0; policy accept; }' \
  || fail "nft chain"
t0=$(now_ms) # the silence starts with the first rule
in_ns nft add rule inet keelcut in tcp dport $port1 drop || fail "nft rule"
in_ns nft add rule inet keelcut in tcp sport $port1 drop || fail "nft rule"
limit_s=$(( (TIMEOUT_MS + SLACK_MS) / 1000 + 2 ))

# Node 1: the receiving side, idle once the packets stop.
wait_log "$dir/n1.log" "lost node 2: .*timed out" "$limit_s"
t1=$(( $(now_ms) - t0 ))
# Node 2: the sending side, with unacknowledged data.
for _ in $(seq $((limit_s * 20))); do kill -0 "$sender" 2>/dev/null || break; sleep 0.05; done
t2=$(( $(now_ms) - t0 ))
kill -0 "$sender" 2>/dev/null && fail "the sender did not notice in ${limit_s} s"
wait "$sender"
rc=$?
[ $rc -ne 0 ] || fail "the sender claimed success"
grep -q "broke mid-stream.*timed out" "$dir/send.log" || fail "the sender did not report a timed-out connection"
grep "closing connection n2/s0" "$dir/n1.log" | head -1
grep "broke mid-stream" "$dir/send.log" | head -1
echo "detected after: node 1 (receiver, keepalive) ${t1} ms, node 2 (sender, unacked data) ${t2} ms; peer_timeout_ms = $TIMEOUT_MS"
# The sender's check is polled after node 1's: only its upper bound is sharp.
[ "$t1" -ge $((TIMEOUT_MS - 500)) ] || fail "node 1 dropped the peer after ${t1} ms, before the timeout"
[ "$t1" -le $((TIMEOUT_MS + SLACK_MS)) ] || fail "node 1 took ${t1} ms (timeout $TIMEOUT_MS ms)"
[ "$t2" -le $((TIMEOUT_MS + SLACK_MS)) ] || fail "node 2 took ${t2} ms (timeout $TIMEOUT_MS ms)"
kill -0 "$node1" 2>/dev/null || fail "node 1 exited"
ok "a vanished peer is reported as a broken connection within the timeout, on both sides"

in_ns nft delete table inet keelcut || fail "nft delete"
out=$(in_ns "$KEEL" send --config "$dir/n2.ini" --to 1 --count 1000 2>>"$dir/send2.log") \
  || fail "a new stream after the cut failed"
wait_log "$dir/n1.log" "stream of 1000 messages from n2/s0 verified"
ok "node 1 keeps serving: a new stream from node 2 is verified"
