#!/usr/bin/env bash
# Application data from a peer that has not authenticated never reaches the
# application. Two processes over net_memif: node 1 (dpdk_node --victim)
# and node 2 (dpdk_node --rogue). Before node 2 opens its transport, its
# rogue part (rogue.c) speaks the reliability layer to node 1 from node ids
# 3..9, one scenario each: data right after HELLO (3), data instead of AUTH
# (4), a bad AUTH then data (5), data without HELLO (6), a 64 KiB message
# after HELLO (7), an internal message type after HELLO (8), HELLO and data
# coalesced into one packet (9). Then node 2
# runs the normal verified exchange with node 1 (COUNT messages each way):
# the victim keeps serving a legitimate peer. At the end node 2 claims a
# restart of its finished session (a new epoch, as a spoofer knowing only
# the node ids could) and sends data on it: the victim must drop the
# connection and deliver nothing. The victim fails the run on any
# connection up or message from a node that is not its peer, or any
# message that is not the peer's expected next one (dpdk_node checks).
# usage: rogue.sh DPDK_NODE COUNT
set -u
node=$1 count=${2:-2000}
dir=$(mktemp -d /tmp/keel-rogue.XXXXXX)
tag=kr$$
p1= p2=
trap 'kill $p1 $p2 2>/dev/null; rm -rf "$dir"' EXIT
eal="--no-huge -m 512 --no-pci --no-telemetry --log-level=*:warning"
sock=$dir/memif.sock
t0=$SECONDS
"$node" --node 1 --ip 10.76.0.1 --mac 02:00:00:76:00:01 --victim \
  --eal "$eal --file-prefix=$tag-1 --vdev=net_memif0,role=server,socket=$sock,socket-abstract=no,mac=02:00:00:76:00:01" \
  --peer "2 02:00:00:76:00:02 10.76.0.2" --count "$count" --max-size 65536 --seed 3 --timeout 120 --handshake-ms 20000 \
  >"$dir/victim.log" 2>&1 & p1=$!
for _ in $(seq 600); do [ -S "$sock" ] && break; sleep 0.05; done
"$node" --node 2 --ip 10.76.0.2 --mac 02:00:00:76:00:02 --rogue \
  --eal "$eal --file-prefix=$tag-2 --vdev=net_memif0,role=client,socket=$sock,socket-abstract=no,mac=02:00:00:76:00:02" \
  --peer "1 02:00:00:76:00:01 10.76.0.1" --count "$count" --max-size 65536 --seed 3 --timeout 120 --handshake-ms 20000 \
  >"$dir/rogue.log" 2>&1 & p2=$!
wait $p1; r1=$?
wait $p2; r2=$?
p1= p2=
echo "--- victim (node 1)"; cat "$dir/victim.log"
echo "--- rogue (node 2)"; cat "$dir/rogue.log"
if [ $r1 -eq 77 ] || [ $r2 -eq 77 ]; then
  echo "SKIP: DPDK could not start here (EAL or net_memif unavailable; see above)"; exit 77
fi
[ $r1 -eq 0 ] || { echo "FAIL: the victim failed (exit $r1): see its log"; exit 1; }
[ $r2 -eq 0 ] || { echo "FAIL: the rogue/legitimate node failed (exit $r2)"; exit 1; }
v=$dir/victim.log
want() {  # want PATTERN WHAT
  grep -q -- "$1" "$v" || { echo "FAIL: the victim did not log: $2 (pattern: $1)"; exit 1; }
}
want "from 3/0: handshake failed, disconnecting: application message before the handshake ended" "data after HELLO dropped"
want "from 4/0: handshake failed, disconnecting: application message before the handshake ended" "data instead of AUTH dropped"
want "from 5/0: handshake failed" "bad AUTH refused"
want "from 7/0: handshake failed, disconnecting: 65536-byte message before the handshake ended" "64 KiB before AUTH dropped"
want "from 8/0: handshake failed, disconnecting: handshake: unexpected message type" "internal type after HELLO dropped"
want "from 9/0: handshake failed, disconnecting: application message before the handshake ended" "HELLO and data coalesced: data dropped"
grep -q "node 9 .*([1-9][0-9]* coalesced)" "$dir/rogue.log" || { echo "FAIL: node 9's HELLO and data did not go out coalesced"; exit 1; }
want "connection from 2/0 down: .*restarted" "the claimed restart dropped the connection"
if grep -E "(from|to) [3-9]/0 up|6/0" "$v"; then
  echo "FAIL: a rogue session came up or node 6's HELLO-less data opened a session"; exit 1
fi
grep -q "victim: 2 connections up, $count messages delivered, 1 inbound connections dropped after the run" "$v" ||
  { echo "FAIL: the victim's summary is not what it should be"; exit 1; }
echo "PASS: 7 pre-authentication attacks and a claimed restart: nothing delivered, each drop logged; $count verified messages each way with the legitimate peer afterwards ($((SECONDS - t0)) s)"
