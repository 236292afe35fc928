#!/usr/bin/env bash
# Replicated log over DPDK: three keel "hosts" as network namespaces, each
# joined by a veth pair to a bridge (in a fourth namespace, as netns.sh
# does), each running `keel node` with `transport = dpdk` on net_af_packet
# over its veth; nothing but the node configs differs from the TCP test
# (tests/integration/node_tcp.sh), and everything is read from the nodes'
# status files (node_lib.sh):
#   1. one leader is elected; its N proposals commit on all three;
#   2. the leader is SIGKILLed; a new leader with a higher term is elected
#      and its N proposals commit on the two survivors;
#   3. the killed node restarts from its WAL, rejoins and catches up (same
#      index, count and checksum); with SNAP > 0 (snapshots every SNAP
#      entries, 2 kept) it restarts from its own snapshot and catches up
#      through InstallSnapshot over DPDK.
# With GROUPS > 1 a last phase runs GROUPS groups on 2 shards per node
# (group g on shard g mod 2; af_packet with one queue pair per shard,
# software steering) on fresh data: every group elects a leader all three
# agree on and commits N on all three.
# Needs root (ip netns) and a DPDK build; skips (77) otherwise. DPDK runs
# without hugepages or PCI (--no-huge -m 256 --no-pci; --in-memory is refused
# with --no-huge: "--legacy-mem is not compatible with --in-memory").
# usage: node_netns.sh KEEL_BINARY [N] [TICK_MS] [SNAP] [GROUPS]
set -u
KEEL=$1
N=${2:-10}
TICK=${3:-100}
SNAP=${4:-0}
GROUPS_=${5:-1}
G=1
tag=kr$$
br=${tag}br

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces"
command -v ip >/dev/null || skip "needs iproute2 (ip)"
"$KEEL" version 2>/dev/null | grep -q "dpdk=yes" || skip "keel was built without the dpdk backend"

dir=$(mktemp -d /tmp/keel-node-netns.XXXXXX)
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null; done
  for i in 1 2 3; do ip netns del "${tag}h$i" 2>/dev/null; done
  ip netns del "$br" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
. "$(dirname "${BASH_SOURCE[0]}")/../node_lib.sh"

ip netns add "$br" 2>/dev/null || skip "cannot create network namespaces here"
ip -n "$br" link add br0 type bridge || skip "no bridge support"
ip -n "$br" link set br0 up
for i in 1 2 3; do
  ns=${tag}h$i
  ip netns add "$ns" || exit 1
  ip link add "v$i" netns "$ns" type veth peer name "p$i" netns "$br" || skip "no veth support"
  ip -n "$ns" link set "v$i" address "02:00:00:89:00:0$i"
  # No kernel IPv4 address on the veth: only the DPDK node has the IP.
  ip -n "$ns" link set "v$i" up
  ip -n "$br" link set "p$i" master br0
  ip -n "$br" link set "p$i" up
done

head -c 32 /dev/urandom | base64 > "$dir/secret"
chmod 600 "$dir/secret"
# config NODE SHARDS GROUPS DATA QPAIRS
config() {
  local i=$1
  echo "[node]"
  echo "id = $i"
  echo "cluster = 9"
  echo "listen = 10.89.0.$i:7400"
  echo "shards = $2"
  echo "transport = dpdk"
  echo "secret_file = secret"
  echo "handshake_timeout_ms = 2000"
  echo "[peers]"
  for j in 1 2 3; do echo "$j = 10.89.0.$j:7400"; done
  echo "[dpdk]"
  echo "eal = --no-huge -m 256 --no-pci --no-telemetry --file-prefix=$tag$i --log-level=*:warning --vdev=net_af_packet0,iface=v$i,framecnt=2048${5:+,qpairs=$5}"
  echo "ip = 10.89.0.$i"
  echo "udp_port = 7400"
  echo "rto_us = 2000"
  for j in 1 2 3; do [ "$j" = "$i" ] || echo "peer = $j 02:00:00:89:00:0$j 10.89.0.$j"; done
  echo "[log]"
  echo "groups = $3"
  echo "dir = $4"
  echo "tick_ms = $TICK"
  echo "segment_size = 256K"
  echo "snapshot_every = $SNAP"
  echo "snapshot_keep = 2"
}
for i in 1 2 3; do config "$i" 1 1 "data$i" "" > "$dir/n$i.ini"; done

start() {  # start NODE [INI]
  ip netns exec "${tag}h$1" "$KEEL" node --config "$dir/${2:-n$1.ini}" --status-file "$dir/s$1" \
    --status-ms 50 --propose "$N" >>"$dir/n$1.log" 2>&1 &
  pid[$1]=$!
}
# A node that could not bring DPDK up exits at once: skip, not fail.
check_started() {
  for n in "$@"; do
    kill -0 "${pid[$n]}" 2>/dev/null && continue
    if grep -qi "rte_eal_init\|dpdk: \|EAL" "$dir/n$n.log"; then
      cat "$dir/n$n.log"
      skip "DPDK net_af_packet could not start here (see above)"
    fi
    fail "node $n exited at start"
  done
}
# The status file appears once the node's shards run (after DPDK is up).
started() { for n in "$@"; do check_started "$n"; [ -s "$dir/s$n" ] || return 1; done; }
# Between polls, wait_until (node_lib.sh) uses node_lib.sh's check_nodes:
# once the nodes are up, a node that exits is a failure, never a skip.
wait_started() {
  for _ in $(seq 300); do started "$@" && return 0; sleep 0.1; done
  fail "nodes $* did not start in 30 s"
}

for n in 1 2 3; do start $n; done
wait_started 1 2 3

elect_and_commit 40 " over DPDK"
kill_leader 40

start "$L1"
wait_started "$L1"
restart_checks "$L1" "$SNAP"
stop_all
ok "one group over DPDK in 3 network namespaces: election, commits, leader killed and re-elected, restart and catch-up ($(elapsed) s)"

if [ "$GROUPS_" -gt 1 ]; then
  G=$GROUPS_
  for i in 1 2 3; do
    config "$i" 2 "$G" "gdata$i" 2 > "$dir/g$i.ini"
    rm -f "$dir/s$i"
    start "$i" "g$i.ini"
  done
  wait_started 1 2 3
  wait_until 40 all_led 1 2 3 || fail "not every group has a leader all three agree on over DPDK"
  wait_until 40 counts_at_least "$N" 1 2 3 || fail "not every group committed $N entries on all three over DPDK"
  for ((g = 0; g < G; g++)); do
    read -r l t < <(leader_of $g 1 2 3)
    read -r a c s < <(same $g 1 2 3)
    ok "group $g (shard $(sv 1 $g shard) of every node): node $l leads (term $t); $c entries on all three at index $a, checksum $s"
  done
  stop_all
fi
echo "PASS: keel node over DPDK in 3 network namespaces ($(elapsed) s)"
