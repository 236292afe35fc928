#!/usr/bin/env bash
# The replicated KV under a network partition (issue 12): three keel nodes,
# each on a host of its own (a network namespace with one address on a
# bridge in a fourth, "switch" namespace, where the clients run), 1 shard,
# 2 groups. While kv-linear's clients (tests/integration/kv_linear.c, in
# --endpoints mode) run puts, CASes and linearizable gets on all three
# nodes, an nftables rule on the host of group 0's leader drops every
# packet between it and the other two hosts (no FIN, no RST: the peers
# just go silent); the clients can still reach it.
#   - the majority (the other two) elects a leader for every group within
#     3 election timeouts (check-quorum makes the old leader step down) and
#     serves writes and linearizable reads;
#   - the isolated node cannot commit: a write sent only to it fails (exit
#     3) and is not in the store after the heal; a linearizable read on it
#     fails instead of answering from its stale copy;
#   - the partition heals: the isolated node catches up (its serializable
#     read shows the majority's write);
#   - the whole client history is linearizable (kv-linear's checker).
# Needs root, ip (iproute2) and nft (nftables); skips (exit 77) otherwise.
# usage: kv_partition.sh KEEL_BINARY KV_LINEAR_BINARY
set -uo pipefail
KEEL=$1
KVLIN=$2
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root for network namespaces and nftables"
command -v ip >/dev/null || skip "needs ip (iproute2)"
command -v nft >/dev/null || skip "needs nft (nftables)"
command -v python3 >/dev/null || skip "needs python3 (to read keel status --json)"

# Addresses of the test's own hosts only: they exist inside the namespaces
# made here, and nothing of them leaves the machine.
net=10.77.12
sw=kvp$$-sw
hosts=(kvp$$-h1 kvp$$-h2 kvp$$-h3)
dir=$(mktemp -d /tmp/keel-kv-partition.XXXXXX)
pids=()
failed=0
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  for h in "${hosts[@]}" "$sw"; do ip netns del "$h" 2>/dev/null; done
  [ $failed = 1 ] && echo "kept for inspection: $dir" || rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  failed=1
  echo "FAIL: $*"
  for f in "$dir"/n*.log "$dir"/lin.out; do [ -f "$f" ] && { echo "--- $f"; tail -n 25 "$f"; }; done
  exit 1
}
ok() { echo "ok: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b - a}'; }

# ---- the hosts ----------------------------------------------------------------
ip netns add "$sw" 2>/dev/null || skip "cannot create a network namespace here"
ip -n "$sw" link set lo up
ip -n "$sw" link add br0 type bridge || skip "no bridge device here"
ip -n "$sw" addr add $net.100/24 dev br0
ip -n "$sw" link set br0 up
for i in 1 2 3; do
  h=${hosts[$((i - 1))]}
  ip netns add "$h" || fail "netns $h"
  ip -n "$sw" link add v$i type veth peer name eth0 netns "$h" || skip "no veth devices here"
  ip -n "$sw" link set v$i master br0 up
  ip -n "$h" link set lo up
  ip -n "$h" addr add $net.$i/24 dev eth0
  ip -n "$h" link set eth0 up
done
ip netns exec "${hosts[0]}" nft add table inet keelpart 2>/dev/null ||
  skip "nftables does not work in a network namespace here"
ip netns exec "${hosts[0]}" nft delete table inet keelpart
ok "three hosts ($net.1-3) and a switch ($net.100) in network namespaces"

# ---- the cluster -----------------------------------------------------------------
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/secret"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/client-token"
chmod 600 "$dir/secret" "$dir/client-token"
endpoints=$net.1:7510,$net.2:7510,$net.3:7510
for i in 1 2 3; do
  cat > "$dir/n$i.ini" <<EOF
[node]
id = $i
cluster = 1212
listen = $net.$i:7500
shards = 1
secret_file = secret
[peers]
1 = $net.1:7500
2 = $net.2:7500
3 = $net.3:7500
[log]
groups = 2
dir = data-n$i
request_timeout_ticks = 20
segment_size = 8M
[client]
listen = $net.$i:7510
token_file = client-token
EOF
done
for i in 1 2 3; do
  # not through a function: $! must be keel's PID
  ip netns exec "${hosts[$((i - 1))]}" "$KEEL" node --config "$dir/n$i.ini" >"$dir/n$i.log" 2>&1 &
  pids+=($!)
done
in_sw() { ip netns exec "$sw" "$@"; }
kvc() { in_sw "$KEEL" kv --token-file "$dir/client-token" "$@"; }
status_json() { in_sw "$KEEL" status --json --token-file "$dir/client-token" --timeout 1000 --endpoints "$1" 2>/dev/null; }
# leader_of GROUP ENDPOINTS: the leader all answering nodes agree on, or 0
leader_of() {
  status_json "$2" | python3 -c '
import json, sys
g = int(sys.argv[1]); seen = set()
for line in sys.stdin:
    try: d = json.loads(line)
    except ValueError: continue
    if d.get("group") == g: seen.add(d.get("leader", 0))
print(seen.pop() if len(seen) == 1 else 0)' "$1"
}
t=$(now)
for _ in $(seq 200); do
  in_sw "$KEEL" status --token-file "$dir/client-token" --timeout 1000 --endpoints "$endpoints" \
    >/dev/null 2>&1 && break
  sleep 0.1
done
in_sw "$KEEL" status --token-file "$dir/client-token" --endpoints "$endpoints" >"$dir/status0" 2>&1 ||
  fail "no leader for every group in 20 s: $(cat "$dir/status0")"
ok "every group has a leader after $(since "$t") s"
kvc --endpoints "$endpoints" put before-partition 1 >/dev/null || fail "a first write"

# ---- clients, then the partition -------------------------------------------------
SECONDS_RUN=30
in_sw "$KVLIN" --endpoints "$endpoints" --token-file "$dir/client-token" $SECONDS_RUN 6 \
  >"$dir/lin.out" 2>&1 &
lin=$!
pids+=("$lin")
sleep 3
L=$(leader_of 0 "$endpoints")
[ "$L" -ge 1 ] 2>/dev/null && [ "$L" -le 3 ] || fail "no agreed leader of group 0 under load"
others=()
for i in 1 2 3; do [ $i = "$L" ] || others+=($i); done
maj=$net.${others[0]}:7510,$net.${others[1]}:7510
min=$net.$L:7510
hl=${hosts[$((L - 1))]}
ip netns exec "$hl" nft -f - <<EOF || fail "nft rules on host $L"
table inet keelpart {
  chain in { type filter hook input priority 0; policy accept;
    ip saddr { $net.${others[0]}, $net.${others[1]} } drop; }
  chain out { type filter hook output priority 0; policy accept;
    ip daddr { $net.${others[0]}, $net.${others[1]} } drop; }
}
EOF
tp=$(now)
ok "node $L (group 0's leader) cut off from nodes ${others[*]}; clients still reach it"

# The majority: a leader for every group, none of them node L.
elected=
for _ in $(seq 120); do
  l0=$(leader_of 0 "$maj"); l1=$(leader_of 1 "$maj")
  if [ "$l0" != 0 ] && [ "$l1" != 0 ] && [ "$l0" != "$L" ] && [ "$l1" != "$L" ]; then
    elected=$(since "$tp"); break
  fi
  sleep 0.05
done
[ -n "$elected" ] || fail "the majority has no leader of its own for every group: $(status_json "$maj")"
# election timeouts are 1-2 s (10..20 ticks of 100 ms): the old leader's
# silence is noticed after one, the election takes another
awk -v e="$elected" 'BEGIN{exit !(e <= 6.0)}' || fail "the majority took $elected s to elect (3 election timeouts: 6 s)"
ok "the majority elected leaders ${l0} (group 0) and ${l1} (group 1) $elected s after the cut"
kvc --endpoints "$maj" --timeout 5000 put majority-write yes >/dev/null 2>"$dir/err" ||
  fail "the majority does not serve writes: $(cat "$dir/err")"
[ "$(kvc --endpoints "$maj" get majority-write 2>/dev/null)" = yes ] || fail "the majority does not serve reads"
ok "the majority serves writes and linearizable reads"

# The minority: no commit, no stale linearizable read.
for k in 1 2; do
  kvc --endpoints "$min" --timeout 2000 put minority-write-$k lost >/dev/null 2>"$dir/err"
  rc=$?
  [ $rc = 3 ] || fail "a write to the isolated node exited $rc (want 3): $(cat "$dir/err")"
done
kvc --endpoints "$min" --timeout 2000 get majority-write >/dev/null 2>"$dir/err"
rc=$?
[ $rc = 3 ] || fail "a linearizable read on the isolated node exited $rc (want 3: it cannot reach a quorum)"
ok "the isolated node commits nothing (2 writes exit 3: $(head -c 120 "$dir/err"))"
sleep 2

# ---- heal ---------------------------------------------------------------------
ip netns exec "$hl" nft delete table inet keelpart || fail "nft delete"
th=$(now)
ok "healed after $(since "$tp") s"
caught=
for _ in $(seq 200); do
  [ "$(kvc --endpoints "$min" --serializable get majority-write 2>/dev/null)" = yes ] && { caught=$(since "$th"); break; }
  sleep 0.05
done
[ -n "$caught" ] || fail "node $L did not catch up within 10 s of the heal"
ok "node $L caught up $caught s after the heal (its own copy has the majority's write)"
for k in 1 2; do
  kvc --endpoints "$endpoints" get minority-write-$k >/dev/null 2>&1
  rc=$?
  [ $rc = 1 ] || fail "minority-write-$k: get exited $rc (want 1, not found: the isolated node must not commit)"
done
ok "none of the isolated node's writes survived the heal"

wait "$lin"
rc=$?
cat "$dir/lin.out" | grep -v '^client'
[ $rc = 0 ] || fail "kv-linear exited $rc"
grep -q "checker: linearizable" "$dir/lin.out" || fail "the history is not linearizable"
for p in "${pids[@]:0:3}"; do kill -0 "$p" 2>/dev/null || fail "a node exited"; done
ok "the client history across the partition and the heal is linearizable"
