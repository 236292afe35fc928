#!/usr/bin/env bash
# Two keel nodes, two processes, on the dpdk transport over net_memif (no
# hugepages): each sends COUNT messages of random sizes up to 1 MiB with
# checksums to the other; both check order and integrity (dpdk_node).
# usage: memif.sh DPDK_NODE COUNT
set -u
node=$1 count=${2:-100000}
dir=$(mktemp -d /tmp/keel-memif.XXXXXX)
trap 'kill $p1 $p2 2>/dev/null; rm -rf "$dir"' EXIT
sock=$dir/memif.sock
eal="--no-huge -m 512 --no-pci --no-telemetry --log-level=*:warning"
common=(--count "$count" --max-size ${MAXSIZE:-1048576} --seed 7 --timeout 540)
"$node" --node 1 --ip 10.77.0.1 --mac 02:00:00:77:00:01 \
  --eal "$eal --file-prefix=keelm1-$$ --vdev=net_memif0,role=server,socket=$sock,socket-abstract=no,mac=02:00:00:77:00:01" \
  --peer "2 02:00:00:77:00:02 10.77.0.2" "${common[@]}" >"$dir/n1.log" 2>&1 & p1=$!
# The memif client does not retry a refused connect: wait for the socket.
for _ in $(seq 600); do [ -S "$sock" ] && break; sleep 0.05; done
"$node" --node 2 --ip 10.77.0.2 --mac 02:00:00:77:00:02 \
  --eal "$eal --file-prefix=keelm2-$$ --vdev=net_memif0,role=client,socket=$sock,socket-abstract=no,mac=02:00:00:77:00:02" \
  --peer "1 02:00:00:77:00:01 10.77.0.1" "${common[@]}" >"$dir/n2.log" 2>&1 & p2=$!
wait $p1; r1=$?
wait $p2; r2=$?
cat "$dir/n1.log" "$dir/n2.log"
if [ $r1 -eq 77 ] || [ $r2 -eq 77 ]; then
  echo "SKIP: DPDK could not start here (EAL or net_memif unavailable; see above)"
  exit 77
fi
[ $r1 -eq 0 ] && [ $r2 -eq 0 ] || { echo "FAIL: node exits $r1 $r2"; exit 1; }
echo "PASS: $count messages each way over net_memif, in order, checksums good"
