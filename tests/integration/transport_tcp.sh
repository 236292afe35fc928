#!/usr/bin/env bash
# TCP transport between real keel processes on 127.0.0.1:
#   1. a verified stream of COUNT messages of random sizes (order, checksums)
#      from both shards of node 2 to both shards of node 1;
#   2. node 3, with the wrong secret, is refused (client and server side);
#   3. garbage, an oversized frame and a silent peer each lose their
#      connection with a logged reason, and node 1 keeps serving;
#   4. node 1 killed mid-stream: the sender reports the broken connection;
#   5. reconnect: a sender started before node 1 redials with backoff and
#      completes once node 1 is up.
# usage: transport_tcp.sh KEEL_BINARY [COUNT]
set -uo pipefail
KEEL=$1
COUNT=${2:-1000000}
dir=$(mktemp -d /tmp/keel-tcp-test.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$dir"/*.log; do echo "--- $f"; tail -n 30 "$f"; done; exit 1; }
ok() { echo "ok: $*"; }

# Ports from the PID so parallel runs do not collide, below the ephemeral
# range (32768+) as node_tcp.sh: others' outgoing connections could hold a
# port a node is about to bind (seen here: EADDRINUSE on 42964).
base=$((20000 + ($$ % 600) * 20))
head -c 32 /dev/urandom | base64 > "$dir/secret"
head -c 32 /dev/urandom | base64 > "$dir/wrong-secret"
chmod 600 "$dir/secret" "$dir/wrong-secret"
for n in 1 2 3; do
  s=secret; [ $n = 3 ] && s=wrong-secret
  cat > "$dir/n$n.ini" <<EOF
[node]
id = $n
cluster = 7
listen = 127.0.0.1:$((base + n * 4))
shards = 2
secret_file = $s
handshake_timeout_ms = 1000
[peers]
1 = 127.0.0.1:$((base + 4))
2 = 127.0.0.1:$((base + 8))
3 = 127.0.0.1:$((base + 12))
EOF
done
port1=$((base + 4))

start_node1() {
  "$KEEL" node --config "$dir/n1.ini" >>"$dir/n1.log" 2>&1 &
  node1=$!
  pids+=("$node1")
  for _ in $(seq 100); do
    [ "$(grep -c 'node 1 listening on' "$dir/n1.log")" -ge "$1" ] && return 0
    kill -0 "$node1" 2>/dev/null || fail "node 1 exited at start"
    sleep 0.1
  done
  fail "node 1 did not listen"
}
# wait_log FILE PATTERN: up to 10 s
wait_log() {
  for _ in $(seq 100); do grep -q -- "$2" "$1" && return 0; sleep 0.1; done
  fail "no '$2' in $1"
}

start_node1 1

# 1. order and integrity
t0=$(date +%s.%N)
out=$("$KEEL" send --config "$dir/n2.ini" --to 1 --count "$COUNT" --max-size 1024 2>"$dir/send.log") \
  || fail "stream of $COUNT messages (exit $?)"
echo "$out"
grep -q "verified order and checksums" <<<"$out" || fail "no verification line"
[ "$(grep -c 'verified: in order, checksums match' "$dir/n1.log")" -eq 2 ] || fail "node 1 did not verify both streams"
ok "$COUNT messages of random sizes, in order, checksums match ($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}') s)"

# 1b. large messages: frames that straddle many receives, backpressure
# (40 of them: hashing 4 MiB messages byte by byte is slow under ASan)
out=$("$KEEL" send --config "$dir/n2.ini" --to 1 --count 40 --max-size 4194304 2>>"$dir/send.log") \
  || fail "stream of large messages (exit $?)"
ok "40 messages of up to 4 MiB: $out"

# 2. wrong secret
"$KEEL" send --config "$dir/n3.ini" --to 1 --count 10 >"$dir/n3.log" 2>&1
rc=$?
[ $rc -eq 3 ] || fail "node 3 with the wrong secret: exit $rc, expected 3 (refused)"
grep -q "proof of the cluster secret is wrong" "$dir/n3.log" || fail "node 3 did not say why"
wait_log "$dir/n1.log" "refused peer unauthenticated"
grep -q "connection n3/" "$dir/n1.log" && fail "node 3 got a connection up on node 1"
ok "node 3 with the wrong secret refused"

# 3. bad peers lose their connection; node 1 keeps serving
exec 3<>/dev/tcp/127.0.0.1/$port1
printf 'GET / HTTP/1.0\r\n\r\n' >&3
wait_log "$dir/n1.log" "malformed frame"
exec 3>&-
exec 3<>/dev/tcp/127.0.0.1/$port1
# a HELLO header announcing 1 GiB of payload
printf '\x4b\x4c\x01\x01\x00\x00\x00\x40\x00\x00\x00\x00\x00\x00\x00\x00' >&3
wait_log "$dir/n1.log" "oversized frame"
exec 3>&-
exec 3<>/dev/tcp/127.0.0.1/$port1
wait_log "$dir/n1.log" "handshake did not finish in time"
exec 3>&-
kill -0 "$node1" || fail "node 1 died"
"$KEEL" send --config "$dir/n2.ini" --to 1 --count 1000 >/dev/null 2>>"$dir/send.log" \
  || fail "node 1 stopped serving after bad peers"
ok "garbage, oversized frame, silent peer: dropped with a reason; node 1 still serves"

# 4. peer killed mid-stream
"$KEEL" send --config "$dir/n2.ini" --to 1 --count 100000000 --max-size 256 \
  >"$dir/killed.log" 2>&1 &
sender=$!
pids+=("$sender")
wait_log "$dir/n1.log" "connection n2/s0 .* up" >/dev/null
sleep 1
kill -9 "$node1"
wait "$node1" 2>/dev/null
for _ in $(seq 100); do kill -0 "$sender" 2>/dev/null || break; sleep 0.1; done
kill -0 "$sender" 2>/dev/null && fail "sender did not notice that node 1 died"
wait "$sender"
rc=$?
[ $rc -ne 0 ] || fail "sender claimed success after node 1 was killed"
grep -q "broke mid-stream" "$dir/killed.log" || fail "sender did not report the broken connection"
ok "node 1 killed mid-stream: sender reports the broken connection (exit $rc)"

# 5. reconnect with backoff
"$KEEL" send --config "$dir/n2.ini" --to 1 --count 20000 --retry-ms 15000 \
  >"$dir/retry.out" 2>"$dir/retry.log" &
sender=$!
pids+=("$sender")
sleep 1
start_node1 2
wait "$sender" || fail "sender did not complete after node 1 came back (exit $?)"
grep -q "redialling with backoff" "$dir/retry.log" || fail "no redial logged"
grep -q "verified order and checksums" "$dir/retry.out" || fail "no verification after reconnect"
ok "reconnect with backoff: $(grep -c "redialling with backoff" "$dir/retry.log") redials, then the stream completed"

# 6. clean shutdown with connections open, and no sanitizer report anywhere
ups=$(grep -c 'connection n2/s. .* up' "$dir/n1.log")
"$KEEL" send --config "$dir/n2.ini" --to 1 --count 100000000 --max-size 64 \
  >"$dir/term.log" 2>&1 &
sender=$!
pids+=("$sender")
for _ in $(seq 100); do
  [ "$(grep -c 'connection n2/s. .* up' "$dir/n1.log")" -ge $((ups + 2)) ] && break; sleep 0.1
done
sleep 0.3
kill -TERM "$node1"
wait "$node1"
rc=$?
[ $rc -eq 0 ] || fail "node 1 exit status $rc after SIGTERM"
wait "$sender"
if grep -l "Sanitizer\|runtime error:" "$dir"/*.log "$dir"/*.out 2>/dev/null; then
  fail "sanitizer report"
fi
ok "node 1 stops cleanly on SIGTERM mid-stream; no sanitizer reports"
echo "PASS"
