#!/usr/bin/env bash
# Leader election over DPDK: three keel "hosts" as network namespaces, each
# joined by a veth pair to a bridge (in a fourth namespace, as netns.sh
# does), each running `keel raft` (the group host) with `transport = dpdk`
# on net_af_packet over its veth; nothing but the node configs differs from
# the TCP test (tests/integration/raft_tcp.sh):
#   1. one leader is elected; its N proposals commit on all three;
#   2. the leader is SIGKILLed; a new leader with a higher term is elected
#      and its N proposals commit on the two survivors;
#   3. the killed node restarts from its WAL, rejoins and catches up (same
#      count and checksum).
# Needs root (ip netns) and a DPDK build; skips (77) otherwise.
# With SNAP > 0 nodes snapshot every SNAP entries (keeping 2): the restarted
# node then catches up through InstallSnapshot over DPDK.
# With GROUPS > 1 a last phase runs `keel raft --groups GROUPS` (group s on
# shard s, af_packet with one queue pair per shard, software steering) on
# fresh data: every group elects a leader and commits N on all three.
# usage: raft_netns.sh KEEL_BINARY [N] [TICK_MS] [SNAP] [GROUPS]
set -u
KEEL=$1
N=${2:-10}
TICK=${3:-100}
SNAP=${4:-0}
GROUPS_=${5:-1}
tag=kr$$
br=${tag}br

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces"
command -v ip >/dev/null || skip "needs iproute2 (ip)"
"$KEEL" version 2>/dev/null | grep -q "dpdk=yes" || skip "keel was built without the dpdk backend"

dir=$(mktemp -d /tmp/keel-raft-netns.XXXXXX)
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null; done
  for i in 1 2 3; do ip netns del "${tag}h$i" 2>/dev/null; done
  ip netns del "$br" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
. "$(dirname "${BASH_SOURCE[0]}")/../raft_lib.sh"

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
for i in 1 2 3; do
  {
    echo "[node]"
    echo "id = $i"
    echo "cluster = 9"
    echo "listen = 10.89.0.$i:7400"
    echo "shards = 1"
    echo "transport = dpdk"
    echo "secret_file = secret"
    echo "handshake_timeout_ms = 2000"
    echo "[peers]"
    for j in 1 2 3; do echo "$j = 10.89.0.$j:7400"; done
    echo "[dpdk]"
    echo "eal = --no-huge -m 256 --no-pci --no-telemetry --file-prefix=$tag$i --log-level=*:warning --vdev=net_af_packet0,iface=v$i,framecnt=2048"
    echo "ip = 10.89.0.$i"
    echo "udp_port = 7400"
    echo "rto_us = 2000"
    for j in 1 2 3; do [ "$j" = "$i" ] || echo "peer = $j 02:00:00:89:00:0$j 10.89.0.$j"; done
  } > "$dir/n$i.ini"
done

start() {  # start NODE
  ip netns exec "${tag}h$1" "$KEEL" raft --config "$dir/n$1.ini" --data "$dir/data$1" \
    --propose "$N" --tick-ms "$TICK" --segment-kib 256 --snapshot-every "$SNAP" --snapshot-keep 2 >>"$dir/n$1.out" 2>>"$dir/n$1.err" &
  pid[$1]=$!
}
# A node that could not bring DPDK up exits at once: skip, not fail.
check_started() {
  for n in "$@"; do
    kill -0 "${pid[$n]}" 2>/dev/null && continue
    if grep -qi "rte_eal_init\|dpdk: \|EAL" "$dir/n$n.err"; then
      cat "$dir/n$n.err"
      skip "DPDK net_af_packet could not start here (see above)"
    fi
    fail "node $n exited at start"
  done
}
# Between polls, wait_until (raft_lib.sh) uses raft_lib.sh's check_nodes: once
# the nodes are up, a node that exits is a failure, never a skip.

for n in 1 2 3; do start $n; done
sleep 1
check_started 1 2 3

elect_and_commit 40 " over DPDK"
kill_leader 40

start "$L1"
wait_until 40 counts_at_least "$c" "$L1" || fail "node $L1 did not rejoin and catch up to count $c"
[ "$(sum_at "$L1" "$c")" = "$sa" ] || fail "node $L1 checksum at count $c differs"
rec=$(grep -o "recovered from [^:]*: term [0-9]*, vote [0-9]*" "$dir/n$L1.err" | tail -n 1)
ok "node $L1 restarted ($rec), rejoined over DPDK and caught up to count $c ($(elapsed) s)"
if [ "$SNAP" -gt 0 ]; then
  grep -q "installed a snapshot at index" "$dir/n$L1.err" || fail "node $L1 caught up without InstallSnapshot"
  ok "node $L1 caught up through InstallSnapshot over DPDK: $(grep -o 'installed a snapshot at index [0-9]*' "$dir/n$L1.err" | tail -n 1)"
fi

for n in 1 2 3; do kill "${pid[$n]}"; done
for n in 1 2 3; do wait "${pid[$n]}" || fail "node $n exited with $? on SIGTERM"; done
pid=()
grep -h "runtime error\|AddressSanitizer" "$dir"/*.err && fail "sanitizer errors in the logs"
ok "raft over DPDK in 3 network namespaces: election, commits, leader killed and re-elected, restart and catch-up ($(elapsed) s)"

if [ "$GROUPS_" -gt 1 ]; then
  for i in 1 2 3; do
    sed -i "s/framecnt=2048\$/framecnt=2048,qpairs=$GROUPS_/" "$dir/n$i.ini"
    grep -q "qpairs=$GROUPS_" "$dir/n$i.ini" || fail "could not set qpairs in n$i.ini"
  done
  for i in 1 2 3; do
    ip netns exec "${tag}h$i" "$KEEL" raft --config "$dir/n$i.ini" --data "$dir/gdata$i" \
      --groups "$GROUPS_" --propose "$N" --tick-ms "$TICK" --segment-kib 256 \
      >>"$dir/g$i.out" 2>>"$dir/g$i.err" &
    pid[$i]=$!
  done
  gcount() { awk -v w="node $1.$2:" '$1" "$2 == w && / applied index /{c=$9} END{print c+0}' "$dir/g$1.out"; }
  gsum() { awk -v w="node $1.$2:" -v c="$3" '$1" "$2 == w && / applied index /{if ($9 == c) s=$11} END{print s}' "$dir/g$1.out"; }
  groups_done() {
    for ((g = 0; g < GROUPS_; g++)); do
      for i in 1 2 3; do [ "$(gcount $i $g)" -ge "$N" ] || return 1; done
    done
  }
  wait_until 40 groups_done || fail "not every group committed $N entries on all three over DPDK"
  for ((g = 0; g < GROUPS_; g++)); do
    s1=$(gsum 1 $g "$N"); s2=$(gsum 2 $g "$N"); s3=$(gsum 3 $g "$N")
    [ -n "$s1" ] && [ "$s1" = "$s2" ] && [ "$s2" = "$s3" ] || fail "group $g: checksums differ"
    l=$(grep -h ": leader term " "$dir"/g*.out | grep "\.$g: " | tail -n 1)
    ok "group $g (shard $g of every node): ${l%%:*} leads; $N entries on all three, checksum $s1"
  done
  for i in 1 2 3; do kill "${pid[$i]}"; done
  for i in 1 2 3; do wait "${pid[$i]}" || fail "node $i (--groups) exited with $? on SIGTERM"; done
  pid=()
fi
grep -h "runtime error\|AddressSanitizer" "$dir"/*.err && fail "sanitizer errors in the logs"
echo "PASS: raft over DPDK in 3 network namespaces ($(elapsed) s)"
