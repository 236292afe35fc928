#!/usr/bin/env bash
# rte_flow steering on net_tap: two keel nodes with two shards each, each on
# a net_tap device (2 queue pairs), both taps joined by a bridge inside one
# network namespace the test creates. The backend asks the PMD for rte_flow
# rules (UDP destination port base+s -> queue s). net_tap implements them
# with tc (a multiq root qdisc, flower filters, skbedit queue_mapping). The
# messages are verified on both shards either way; the test then passes
# only if the rules were created on both nodes ("steering rte_flow") and
# no frame had to be handed over in software; if the PMD refused them, it
# skips (77) with the PMD's rte_flow error, as the backend logged it.
# Needs root and /dev/net/tun.
# usage: tap_flow.sh DPDK_NODE COUNT
set -u
node=$1 count=${2:-2000}
tag=kt$$
ns=${tag}ns
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespace, tap devices)"
[ -c /dev/net/tun ] || skip "needs /dev/net/tun"
command -v ip >/dev/null || skip "needs iproute2 (ip)"
dir=$(mktemp -d /tmp/keel-tap.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$ns" || skip "cannot create a network namespace"
ip -n "$ns" link add br0 type bridge || skip "no bridge support"
ip -n "$ns" link set br0 address 02:00:00:73:00:00
ip -n "$ns" link set br0 up
ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null
ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1 2>/dev/null
eal="--no-huge -m 512 --no-pci --no-telemetry --log-level=*:warning"
t0=$SECONDS
for n in 1 2; do
  peer=$((3 - n))
  ip netns exec "$ns" "$node" --node $n --ip 10.75.0.$n --mac 02:00:00:75:00:0$n \
    --eal "$eal --file-prefix=$tag-$n --vdev=net_tap0,iface=${tag}t$n,mac=02:00:00:75:00:0$n" \
    --peer "$peer 02:00:00:75:00:0$peer 10.75.0.$peer" --shards 2 --count "$count" \
    --max-size 65536 --seed 9 --timeout 120 --rto-us 2000 --handshake-ms 30000 >"$dir/n$n.log" 2>&1 &
  pids+=($!)
done
# The PMD creates each tap when its process starts: join them to the bridge.
# The PMD gives the kernel side of a tap the node's own MAC, so the bridge
# would take frames for the node as its own (a permanent local entry, and
# br0 borrowing a port's address) instead of forwarding them to the tap:
# br0 gets an address of its own and the local entries are deleted.
for n in 1 2; do
  for _ in $(seq 600); do ip -n "$ns" link show "${tag}t$n" >/dev/null 2>&1 && break; sleep 0.05; done
  ip -n "$ns" link set "${tag}t$n" master br0 || { echo "FAIL: cannot bridge the tap"; exit 1; }
  ip -n "$ns" link set "${tag}t$n" up
  ip netns exec "$ns" bridge fdb del 02:00:00:75:00:0$n dev "${tag}t$n" master 2>/dev/null
done
wait "${pids[0]}"; r1=$?
wait "${pids[1]}"; r2=$?
pids=()
cat "$dir/n1.log" "$dir/n2.log"
if [ $r1 -eq 77 ] || [ $r2 -eq 77 ]; then skip "DPDK net_tap could not start here (see above)"; fi
[ $r1 -eq 0 ] && [ $r2 -eq 0 ] || { echo "FAIL: node exits $r1 $r2"; exit 1; }
echo "ok: net_tap, 2 shards, $count messages per shard each way, verified ($((SECONDS - t0)) s)"
if grep -q "steering software" "$dir/n1.log" "$dir/n2.log"; then
  why=$(grep -ho "no flow rules: .*" "$dir/n1.log" | head -n 1)
  # What the PMD itself said when it set up tc (its rules need a multiq
  # root qdisc, the flower classifier and the skbedit action).
  pmd=$(grep -hE "multiq qdisc|Disabling rte flow|Kernel refused" "$dir/n1.log" | sort -u | tr '\n' ' ')
  kcfg=
  if [ -r /proc/config.gz ]; then
    kcfg=$(zcat /proc/config.gz | grep -E "CONFIG_NET_SCH_MULTIQ[= ]|CONFIG_NET_CLS_FLOWER[= ]|CONFIG_NET_ACT_SKBEDIT[= ]" | tr '\n' ' ')
  fi
  skip "net_tap refused the rte_flow rules here, so only software steering ran: ${why:-no reason logged}; PMD: ${pmd:-nothing logged}; kernel: ${kcfg:-config not readable}"
fi
steered=$(grep -ho "steered out [0-9]*" "$dir/n1.log" "$dir/n2.log" | awk '{s += $3} END {print s + 0}')
[ "$steered" -eq 0 ] || { echo "FAIL: rte_flow steering on, yet $steered frames were handed over in software"; exit 1; }
echo "PASS: net_tap with rte_flow steering (UDP port -> queue) on both nodes; no frame handed over in software"
