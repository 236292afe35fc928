#!/usr/bin/env bash
# Three keel "hosts" as network namespaces, each joined by a veth pair to a
# bridge (in a fourth namespace, so the host's own network is untouched);
# each node runs the dpdk transport on net_af_packet over its veth. Phase 1:
# every node sends COUNT messages (random sizes up to MAXSIZE, checksums) to
# each of the other two. Phase 2: the same with 5% of received packets
# dropped by the backend's seeded loss injection: order and integrity must
# hold, retransmission must show up. Needs root (ip netns); skips (77) else.
# usage: netns.sh DPDK_NODE COUNT
set -u
node=$1 count=${2:-2000}
maxsize=${MAXSIZE:-262144}
tag=kd$$
br=${tag}br

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces"
command -v ip >/dev/null || skip "needs iproute2 (ip)"

dir=$(mktemp -d /tmp/keel-netns.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  for i in 1 2 3; do ip netns del "${tag}h$i" 2>/dev/null; done
  ip netns del "$br" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

ip netns add "$br" 2>/dev/null || skip "cannot create network namespaces here"
ip -n "$br" link add br0 type bridge || skip "no bridge support"
ip -n "$br" link set br0 up
for i in 1 2 3; do
  ns=${tag}h$i
  ip netns add "$ns" || exit 1
  ip link add "v$i" netns "$ns" type veth peer name "p$i" netns "$br" || skip "no veth support"
  ip -n "$ns" link set "v$i" address "02:00:00:88:00:0$i"
  # No kernel IPv4 address on the veth: the kernel stays out of our UDP
  # traffic (no port-unreachable replies); only the DPDK node has the IP.
  ip -n "$ns" link set "v$i" up
  ip -n "$br" link set "p$i" master br0
  ip -n "$br" link set "p$i" up
done

eal_for() { echo "--no-huge -m 256 --no-pci --no-telemetry --file-prefix=$tag$1 --log-level=*:warning --vdev=net_af_packet0,iface=v$1,framecnt=2048"; }
peers_of() {
  for j in 1 2 3; do [ "$j" = "$1" ] || printf -- '--peer\n%s 02:00:00:88:00:0%s 10.88.0.%s\n' "$j" "$j" "$j"; done
}

run_phase() {  # run_phase NAME LOSS
  local name=$1 loss=$2 rc=0
  pids=()
  for i in 1 2 3; do
    mapfile -t pa < <(peers_of "$i")
    ip netns exec "${tag}h$i" "$node" --node "$i" --ip "10.88.0.$i" \
      --eal "$(eal_for "$i")" "${pa[@]}" --count "$count" --max-size "$maxsize" \
      --seed 11 --loss "$loss" --timeout 400 --rto-us 2000 >"$dir/$name-$i.log" 2>&1 &
    pids+=($!)
  done
  local skipped=0
  for i in 0 1 2; do
    wait "${pids[$i]}"; local r=$?
    [ $r -eq 77 ] && skipped=1
    [ $r -eq 0 ] || rc=1
  done
  pids=()
  grep -h "^node" "$dir/$name"-*.log
  if [ $skipped = 1 ]; then
    cat "$dir/$name"-*.log
    skip "DPDK net_af_packet could not start (see above)"
  fi
  if [ $rc -ne 0 ]; then
    cat "$dir/$name"-*.log
    echo "FAIL: phase $name"
    exit 1
  fi
}

run_phase clean 0
run_phase lossy 0.05
# Loss must have been injected and repaired by retransmission.
for i in 1 2 3; do
  grep -q "injected drops [1-9]" "$dir/lossy-$i.log" || { echo "FAIL: node $i injected no loss"; exit 1; }
  grep -q "retransmits [1-9]" "$dir/lossy-$i.log" || { echo "FAIL: node $i never retransmitted"; exit 1; }
done
echo "PASS: 3 hosts in namespaces over net_af_packet, all pairs, $count messages each; with 5% loss too"
