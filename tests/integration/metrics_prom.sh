#!/usr/bin/env bash
# The HTTP port of keel node (issue 16): /livez, /readyz and /metrics on a
# 3-node `keel cluster up` cluster (1 shard, 2 groups), read by the real
# tools: Debian's `promtool check metrics` on each node's page, and Debian's
# `prometheus` server scraping all three, queried through its HTTP API for
# the series (per group has_leader and indices, the WAL fdatasync
# histogram, client requests by type and result, connections, the reactor).
# Then two nodes are SIGKILLed: the third's /readyz turns 503 naming a
# group without a leader, while its /livez stays 200.
# Skips (77) without prometheus, promtool or curl (scripts/deps bench).
# usage: metrics_prom.sh KEEL_BINARY
set -uo pipefail
KEEL=$1
for t in prometheus promtool curl; do
  command -v $t >/dev/null || { echo "SKIP: needs $t (scripts/deps bench installs prometheus)"; exit 77; }
done
dir=$(mktemp -d /tmp/keel-metrics.XXXXXX)
cdir=$dir/c
failed=0
prom=
cleanup() {
  [ -n "$prom" ] && kill "$prom" 2>/dev/null && wait "$prom" 2>/dev/null
  "$KEEL" cluster down --dir "$cdir" >/dev/null 2>&1
  [ $failed = 1 ] && echo "kept for inspection: $dir" || rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  failed=1
  echo "FAIL: $*"
  for f in "$cdir"/n*.log "$dir"/prom.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
  exit 1
}
ok() { echo "ok: $*"; }
t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}'; }
code() { curl -s -o "$dir/body" -w '%{http_code}' --max-time 5 "http://$1$2"; }

"$KEEL" cluster up --nodes 3 --shards 1 --groups 2 --dir "$cdir" >"$dir/up.out" 2>&1 ||
  fail "cluster up: $(cat "$dir/up.out")"
IFS=, read -r -a http <"$cdir/http-endpoints"
[ ${#http[@]} = 3 ] || fail "cluster up wrote no http-endpoints"
for k in a b c d; do "$KEEL" kv --dir "$cdir" put "k$k" "v$k" >/dev/null || fail "put k$k"; done
"$KEEL" kv --dir "$cdir" get ka >/dev/null || fail "get ka"

# ---- each node's pages --------------------------------------------------------
ready_all() {
  local h
  for h in "${http[@]}"; do [ "$(code "$h" /readyz)" = 200 ] || return 1; done
}
for _ in $(seq 50); do ready_all && break; sleep 0.1; done
for h in "${http[@]}"; do
  c=$(code "$h" /livez); [ "$c" = 200 ] || fail "$h/livez: $c $(cat "$dir/body")"
  c=$(code "$h" /readyz); [ "$c" = 200 ] || fail "$h/readyz: $c $(cat "$dir/body")"
  c=$(code "$h" /nope); [ "$c" = 404 ] || fail "$h/nope: $c, not 404"
  c=$(curl -s -o /dev/null -w '%{http_code}' -X POST --max-time 5 "http://$h/metrics")
  [ "$c" = 405 ] || fail "POST $h/metrics: $c, not 405"
  c=$(code "$h" /metrics); [ "$c" = 200 ] || fail "$h/metrics: $c"
  cp "$dir/body" "$dir/metrics-$h"
  # promtool prints lint findings (and exits 1) for any format error or
  # a bad name, unit or help text
  promtool check metrics <"$dir/metrics-$h" >"$dir/lint" 2>&1 ||
    fail "promtool check metrics $h: $(cat "$dir/lint")"
  for s in 'keel_group_has_leader{group="0"} 1' 'keel_group_has_leader{group="1"} 1' \
           'keel_wal_fdatasync_duration_seconds_bucket{le="+Inf"}' 'keel_ready 1' \
           'keel_client_connections ' 'keel_peer_connections{shard="0"} 2' 'keel_info{'; do
    grep -qF "$s" "$dir/metrics-$h" || fail "$h/metrics has no '$s'"
  done
done
ok "livez, readyz 200, 404, 405 and promtool check metrics on all 3 nodes ($(elapsed) s)"

# ---- prometheus scrapes the cluster -----------------------------------------
targets=$(printf "'%s'," "${http[@]}")
cat >"$dir/prom.yml" <<EOF
global: {scrape_interval: 1s, scrape_timeout: 1s}
scrape_configs:
  - job_name: keel
    static_configs: [{targets: [${targets%,}]}]
EOF
promtool check config "$dir/prom.yml" >"$dir/lint" 2>&1 || fail "promtool check config: $(cat "$dir/lint")"
# prometheus on a free port: the nodes' HTTP ports end each node's run
# (cluster up found them free), so try the ports past node 3's in turn
pport=$(( ${http[2]##*:} + 1 ))
for _ in $(seq 20); do
  prometheus --config.file="$dir/prom.yml" --storage.tsdb.path="$dir/tsdb" \
    --web.listen-address="127.0.0.1:$pport" >"$dir/prom.log" 2>&1 &
  prom=$!
  for _ in $(seq 100); do
    curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$pport/-/ready" && break
    kill -0 $prom 2>/dev/null || break
    sleep 0.1
  done
  kill -0 $prom 2>/dev/null && break
  wait $prom; prom=
  grep -q "address already in use" "$dir/prom.log" || fail "prometheus did not start"
  pport=$((pport + 1))
done
[ -n "$prom" ] || fail "prometheus found no free port"
# q EXPR: the number of series in the instant query's answer
q() {
  curl -s --max-time 5 "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$1" |
    awk '/"status":"success"/ { print gsub(/"metric":/, "") }'
}
got=
for _ in $(seq 150); do
  got=$(q 'up == 1'); [ "$got" = 3 ] && break
  kill -0 $prom 2>/dev/null || fail "prometheus exited"
  sleep 0.2
done
[ "$got" = 3 ] || fail "prometheus does not see 3 targets up (got '$got')"
check() { # EXPECTED EXPR
  local n; n=$(q "$2"); [ "$n" = "$1" ] || fail "prometheus: $2 has ${n:-no} series, expected $1"
}
check 6 'keel_group_has_leader == 1'
check 6 'keel_group_commit_index > 0'
check 2 'sum by (group) (keel_group_is_leader) == 1'
check 3 'keel_wal_fdatasync_duration_seconds_count > 0'
check 3 'keel_wal_fdatasync_duration_seconds_bucket{le="+Inf"}'
check 1 'sum(keel_client_requests_total{type="put",result="ok"}) >= 4'
check 3 'keel_info{reactor=~"io_uring|epoll"}'
check 3 'keel_peer_connections == 2'
check 3 'keel_ready == 1'
ok "prometheus scraped 3 nodes: has_leader, indices, WAL histogram, client requests, reactor ($(elapsed) s)"

# ---- readiness follows the cluster ------------------------------------------
h3=${http[2]}
for n in 1 2; do kill -9 "$(cat "$cdir/n$n.pid")"; done
c=
for _ in $(seq 100); do
  c=$(code "$h3" /readyz); [ "$c" = 503 ] && grep -q "no known leader" "$dir/body" && break
  sleep 0.1
done
[ "$c" = 503 ] || fail "node 3 alone: /readyz $c, expected 503"
grep -q "no known leader" "$dir/body" || fail "node 3 alone: /readyz says $(cat "$dir/body")"
why=$(head -n 1 "$dir/body")
c=$(code "$h3" /livez); [ "$c" = 200 ] || fail "node 3 alone: /livez $c, expected 200"
ok "node 3 alone: /readyz 503 ($why), /livez 200 ($(elapsed) s)"

# ---- bad [http] settings: a clear error, exit 1 -------------------------------
bad() { # WHAT EXPECTED-MESSAGE SED-EXPR
  sed "$3" "$cdir/n3.ini" >"$cdir/bad.ini"
  "$KEEL" node --config "$cdir/bad.ini" >"$dir/bad.out" 2>&1
  local rc=$?
  [ $rc = 1 ] || fail "$1: exit $rc, expected 1: $(cat "$dir/bad.out")"
  grep -qF "$2" "$dir/bad.out" || fail "$1: no '$2' in: $(cat "$dir/bad.out")"
}
bad "a taken HTTP port" "http: cannot listen on 127.0.0.1:${h3##*:}" 's/^x//'
bad "a port out of range" "[http] listen: expected HOST:PORT" "s/^listen = 127.0.0.1:${h3##*:}\$/listen = 127.0.0.1:70000/"
bad "a bad ready_lag" "[http] ready_lag: expected a number" 's/^\[http\]$/[http]\nready_lag = soon/'
bad "an unknown [http] key" "bogus" 's/^\[http\]$/[http]\nbogus = 1/'
ok "a taken HTTP port, a bad listen, a bad ready_lag and an unknown key: exit 1 with the reason ($(elapsed) s)"
