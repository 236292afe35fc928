#!/usr/bin/env bash
# Two shards per node: shard s of each node has its own queue pair and its
# own connections; dpdk_node checks every message (order, size, bytes,
# checksum) on both shards and that it came from the peer shard it should.
#   memif, straight: shard s dials peer shard s. memif maps queue q of one
#     end to queue q of the other, so every frame lands on the queue of the
#     shard it is for: nothing may be handed over in software (steered 0).
#   memif, crossed: shard s dials peer shard 1-s, so every frame arrives on
#     the other shard's queue and must be handed over through the steering
#     ring (steered out and in > 0 on every shard) and still arrive whole,
#     in order, at the right shard.
#   memif on the keel runtime (--runtime): the same as straight, but the
#     shards are the runtime's (hwloc placement, overcommitted on this
#     2-core machine), each transport a poller of its shard's reactor.
#   af_packet (qpairs=2) on a veth pair between two network namespaces,
#     straight: the kernel's PACKET_FANOUT hash spreads flows over the two
#     queues, so frames may land on either; software steering fixes it up.
#     Needs root; without it this phase alone is skipped, loudly.
# usage: shards.sh DPDK_NODE COUNT
set -u
node=$1 count=${2:-3000}
maxsize=${MAXSIZE:-65536}
dir=$(mktemp -d /tmp/keel-shards.XXXXXX)
tag=ks$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  ip netns del "${tag}a" 2>/dev/null; ip netns del "${tag}b" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
eal="--no-huge -m 512 --no-pci --no-telemetry --log-level=*:warning"
common=(--shards 2 --count "$count" --max-size "$maxsize" --seed 5 --timeout 200)

# check_exit NAME R1 R2
check_exit() {
  if [ "$2" -eq 77 ] || [ "$3" -eq 77 ]; then
    cat "$dir/$1"-*.log
    echo "SKIP: DPDK could not start here (see above)"; exit 77
  fi
  if [ "$2" -ne 0 ] || [ "$3" -ne 0 ]; then
    cat "$dir/$1"-*.log; echo "FAIL: $1: node exits $2 $3"; exit 1
  fi
  grep -h "^node .* shard" "$dir/$1"-*.log
}
# field NAME NODE SHARD WORD: the number after "steered WORD" in that line
steered() { grep -h "^node $2 shard $3:" "$dir/$1-$2.log" | sed -n "s/.*steered out \([0-9]*\) in \([0-9]*\).*/\1 \2/p"; }

run_memif() {  # run_memif NAME EXTRA...
  local name=$1; shift
  local sock=$dir/$name.sock
  "$node" --node 1 --ip 10.78.0.1 --mac 02:00:00:78:00:01 \
    --eal "$eal --file-prefix=$tag-$name-1 --vdev=net_memif0,role=server,socket=$sock,socket-abstract=no,mac=02:00:00:78:00:01" \
    --peer "2 02:00:00:78:00:02 10.78.0.2" "${common[@]}" "$@" >"$dir/$name-1.log" 2>&1 & pids=($!)
  for _ in $(seq 600); do [ -S "$sock" ] && break; sleep 0.05; done
  "$node" --node 2 --ip 10.78.0.2 --mac 02:00:00:78:00:02 \
    --eal "$eal --file-prefix=$tag-$name-2 --vdev=net_memif0,role=client,socket=$sock,socket-abstract=no,mac=02:00:00:78:00:02" \
    --peer "1 02:00:00:78:00:01 10.78.0.1" "${common[@]}" "$@" >"$dir/$name-2.log" 2>&1 & pids+=($!)
  wait "${pids[0]}"; local r1=$?
  wait "${pids[1]}"; local r2=$?
  pids=()
  check_exit "$name" $r1 $r2
}

t0=$SECONDS
run_memif straight
for n in 1 2; do for s in 0 1; do
  read -r out in < <(steered straight $n $s)
  [ "${out:-x}" = 0 ] && [ "${in:-x}" = 0 ] ||
    { echo "FAIL: memif straight: node $n shard $s handed frames over (out ${out:-?} in ${in:-?}); queue q should reach queue q"; exit 1; }
done; done
echo "PASS: memif, 2 shards, shard s <-> shard s: $count messages per shard each way, verified; no frame handed over ($((SECONDS - t0)) s)"

t0=$SECONDS
run_memif crossed --cross
for n in 1 2; do for s in 0 1; do
  read -r out in < <(steered crossed $n $s)
  [ "${out:-0}" -gt 0 ] && [ "${in:-0}" -gt 0 ] ||
    { echo "FAIL: memif crossed: node $n shard $s: steered out ${out:-?} in ${in:-?}, want both > 0"; exit 1; }
done; done
echo "PASS: memif, 2 shards, shard s <-> peer shard 1-s: every frame arrived on the other shard's queue and was handed over; $count messages per shard each way, verified ($((SECONDS - t0)) s)"

t0=$SECONDS
run_memif runtime --runtime
grep -q "on the keel runtime" "$dir/runtime-1.log" || { echo "FAIL: the runtime phase did not run on the keel runtime"; exit 1; }
for n in 1 2; do for s in 0 1; do
  read -r out in < <(steered runtime $n $s)
  [ "${out:-x}" = 0 ] && [ "${in:-x}" = 0 ] ||
    { echo "FAIL: memif on the runtime: node $n shard $s handed frames over (out ${out:-?} in ${in:-?})"; exit 1; }
done; done
echo "PASS: memif, 2 shards of the keel runtime per node (hwloc placement, overcommitted, each reactor busy-polling its queue): $count messages per shard each way, verified ($((SECONDS - t0)) s)"

if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null; then
  echo "SKIPPED PHASE: af_packet with qpairs=2 needs root and iproute2 (network namespaces)"
  exit 0
fi
t0=$SECONDS
ip netns add "${tag}a" && ip netns add "${tag}b" || { echo "SKIPPED PHASE: cannot create network namespaces"; exit 0; }
ip link add va netns "${tag}a" type veth peer name vb netns "${tag}b" || { echo "SKIPPED PHASE: no veth"; exit 0; }
ip -n "${tag}a" link set va address 02:00:00:79:00:01
ip -n "${tag}b" link set vb address 02:00:00:79:00:02
ip -n "${tag}a" link set va up; ip -n "${tag}b" link set vb up
for n in 1 2; do
  ns=${tag}a; ifc=va; peer=2
  [ $n = 2 ] && { ns=${tag}b; ifc=vb; peer=1; }
  ip netns exec "$ns" "$node" --node $n --ip 10.79.0.$n \
    --eal "$eal --file-prefix=$tag-afp-$n --vdev=net_af_packet0,iface=$ifc,qpairs=2,framecnt=2048" \
    --peer "$peer 02:00:00:79:00:0$peer 10.79.0.$peer" "${common[@]}" --rto-us 2000 >"$dir/afp-$n.log" 2>&1 &
  pids+=($!)
done
wait "${pids[0]}"; r1=$?
wait "${pids[1]}"; r2=$?
pids=()
check_exit afp $r1 $r2
total=0
for n in 1 2; do for s in 0 1; do
  read -r out in < <(steered afp $n $s); total=$((total + ${out:-0}))
done; done
echo "PASS: af_packet qpairs=2 between two namespaces, 2 shards: $count messages per shard each way, verified; $total frames landed on the other shard's queue (kernel fanout hash) and were handed over ($((SECONDS - t0)) s)"
