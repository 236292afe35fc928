#!/usr/bin/env bash
# A 3-node keel cluster in podman containers (issue 16), configured the way
# deploy/ configures it: no config file, only KEEL_* environment variables
# (KEEL_PEERS by host name), on a podman network, under podman's default
# seccomp profile (io_uring refused: the nodes run on epoll).
#   1. every node's /readyz turns 200 (from the host, through the network);
#      /metrics says reactor="epoll"; writes through the client ports work;
#   2. `podman kill` the container leading group 0: a new leader serves
#      writes, the survivors' /metrics name it;
#   3. `podman start` the killed container: it becomes ready again and its
#      own serializable reads show every key written while it was down.
# The image is made from the binaries already built (as podman_seccomp.sh
# does: keel, libkeel and what ldd names, `podman import`ed). The host
# names resolve through --add-host: this VM's podman uses CNI without the
# dnsname plugin, so the network has no DNS of its own. podman runs with
# runc and a containers.conf of `default_ulimits = []` (CAP_SYS_RESOURCE
# is withheld here; crun rejects the hybrid cgroups).
# Exit 77 where podman, runc or curl is missing or podman cannot run a
# container on a network here. The compose file is not what runs: no
# podman-compose in Debian 12's podman 4.3 set here (python3-podman-compose
# is not installed by scripts/deps), and the test needs fixed addresses.
# usage: container_cluster.sh KEEL_BINARY
set -uo pipefail
KEEL=$(readlink -f "$1")
LIB=$(dirname "$(dirname "$KEEL")")/libkeel.so
for t in podman runc curl; do
  command -v $t >/dev/null || { echo "SKIP: needs $t (scripts/deps containers installs podman and runc)"; exit 77; }
done
dir=$(mktemp -d /tmp/keel-ccluster.XXXXXX)
img=keel-cc-$$
net=keel-cc-$$
failed=0
cleanup() {
  for n in 1 2 3; do podman rm -f -t 0 "$net-n$n" >/dev/null 2>&1; done
  podman network rm -f "$net" >/dev/null 2>&1
  podman rmi -f "$img" >/dev/null 2>&1
  [ $failed = 1 ] && echo "kept for inspection: $dir" || rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  failed=1
  echo "FAIL: $*"
  for n in 1 2 3; do echo "--- node $n"; podman logs "$net-n$n" 2>&1 | tail -n 15; done
  exit 1
}
ok() { echo "ok: $*"; }
t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}'; }
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' >"$dir/containers.conf"
export CONTAINERS_CONF=$dir/containers.conf

# ---- the image and the network -------------------------------------------------
mkdir -p "$dir/root/tmp" "$dir/root/etc" "$dir/w"
for f in "$KEEL" "$LIB" $(ldd "$KEEL" "$LIB" | grep -o '/[^ :]*\.so[^ ]*\|/lib[^ :]*/ld-linux[^ ]*' | sort -u); do
  [ -e "$f" ] || continue
  mkdir -p "$dir/root$(dirname "$f")"
  cp -L "$f" "$dir/root$f" || fail "copying $f into the image"
done
if ! tar -C "$dir/root" -c . | podman import - "$img" >"$dir/import.log" 2>&1; then
  echo "SKIP: podman cannot import an image here: $(tail -n 2 "$dir/import.log")"
  exit 77
fi
if ! podman network create "$net" >"$dir/net.log" 2>&1; then
  echo "SKIP: podman cannot create a network here: $(tail -n 2 "$dir/net.log")"
  exit 77
fi
sub=$(podman network inspect "$net" --format '{{range .Subnets}}{{.Subnet}}{{end}}')
case $sub in
  *.0/24) pre=${sub%.0/24} ;;
  *) fail "network $net: subnet '$sub' is not a /24" ;;
esac
ip() { echo "$pre.$((10 + $1))"; }
hosts=()
for n in 1 2 3; do hosts+=(--add-host "$net-n$n:$(ip $n)"); done
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/w/secret"
chmod 600 "$dir/w/secret"
peers="1=$net-n1:7000,2=$net-n2:7000,3=$net-n3:7000"
run_node() {
  podman run -d --name "$net-n$1" --hostname "$net-n$1" --network "$net" --ip "$(ip "$1")" \
    "${hosts[@]}" -v "$dir/w:/w" -e ASAN_OPTIONS=detect_leaks=0 \
    -e KEEL_NODE_ID="$1" -e KEEL_PEERS="$peers" -e KEEL_CLUSTER_ID=16 \
    -e KEEL_SECRET_FILE=/w/secret -e KEEL_DATA_DIR="/w/data-n$1" -e KEEL_SHARDS=1 \
    -e KEEL_GROUPS=2 -e KEEL_CLIENT_LISTEN=0.0.0.0:7100 -e KEEL_HTTP_LISTEN=0.0.0.0:7200 \
    "$img" "$KEEL" node >"$dir/run$1.log" 2>&1
}
if ! run_node 1; then
  echo "SKIP: podman cannot run a container on a network here: $(tail -n 3 "$dir/run1.log")"
  exit 77
fi
run_node 2 || fail "podman run node 2: $(cat "$dir/run2.log")"
run_node 3 || fail "podman run node 3: $(cat "$dir/run3.log")"

code() { curl -s -o "$dir/body" -w '%{http_code}' --max-time 3 "http://$(ip "$1"):7200$2"; }
ready() { local n; for n in "$@"; do [ "$(code "$n" /readyz)" = 200 ] || return 1; done; }
wait_ready() {
  for _ in $(seq 300); do ready "$@" && return 0; sleep 0.1; done
  return 1
}
eps() { local n e=; for n in "$@"; do e+="${e:+,}$(ip "$n"):7100"; done; echo "$e"; }
kv() { "$KEEL" kv --endpoints "$(eps 1 2 3)" "$@"; }

# ---- 1. up, on epoll, writes -------------------------------------------------------
wait_ready 1 2 3 || fail "not every node ready in 30 s: $(cat "$dir/body")"
for n in 1 2 3; do
  [ "$(code "$n" /metrics)" = 200 ] || fail "node $n /metrics"
  grep -q 'keel_info{.*reactor="epoll"' "$dir/body" ||
    fail "node $n does not run on epoll under the default seccomp profile: $(grep keel_info "$dir/body")"
done
for k in 1 2 3 4 5; do kv put "a$k" "v$k" >/dev/null 2>&1 || fail "put a$k"; done
ok "3 containers ready, on epoll, 5 writes ($(elapsed) s)"

# ---- 2. kill group 0's leader ------------------------------------------------------
code 1 /metrics >/dev/null
leader=$(awk '/^keel_group_leader\{group="0"\}/ {print $2}' "$dir/body")
case $leader in 1|2|3) ;; *) fail "no leader of group 0 in node 1's metrics: '$leader'" ;; esac
podman kill "$net-n$leader" >/dev/null 2>&1 || fail "podman kill node $leader"
others=()
for n in 1 2 3; do [ "$n" != "$leader" ] && others+=("$n"); done
t1=$(date +%s.%N)
done_put=0
for _ in $(seq 40); do
  "$KEEL" kv --endpoints "$(eps "${others[@]}")" put b1 after >/dev/null 2>&1 && { done_put=1; break; }
  sleep 0.25
done
[ $done_put = 1 ] || fail "no write succeeded in 10 s after killing node $leader"
took=$(awk -v a="$t1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
for k in 2 3 4 5; do
  "$KEEL" kv --endpoints "$(eps "${others[@]}")" put "b$k" after >/dev/null 2>&1 || fail "put b$k"
done
code "${others[0]}" /metrics >/dev/null
nl=$(awk '/^keel_group_leader\{group="0"\}/ {print $2}' "$dir/body")
[ -n "$nl" ] && [ "$nl" != 0 ] && [ "$nl" != "$leader" ] ||
  fail "node ${others[0]} names leader '$nl' of group 0 after node $leader was killed"
ok "killed node $leader (group 0's leader): writes again after $took s, node $nl leads group 0"

# ---- 3. the killed container restarts and catches up -------------------------------
podman start "$net-n$leader" >/dev/null 2>&1 || fail "podman start node $leader"
wait_ready "$leader" || fail "node $leader not ready 30 s after its restart: $(cat "$dir/body")"
for k in 1 2 3 4 5; do
  got=
  for _ in $(seq 50); do
    got=$("$KEEL" kv --endpoints "$(eps "$leader")" get --serializable "b$k" 2>/dev/null) && [ "$got" = after ] && break
    sleep 0.1
  done
  [ "$got" = after ] || fail "node $leader's own copy of b$k: '$got' after its restart"
  [ "$("$KEEL" kv --endpoints "$(eps "$leader")" get --serializable "a$k" 2>/dev/null)" = "v$k" ] ||
    fail "node $leader lost a$k"
done
ok "node $leader restarted, ready, and its own copy has every key ($(elapsed) s)"
