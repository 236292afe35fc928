#!/usr/bin/env bash
# TLS on the peer port (issue 18), with certificates made here by openssl:
# a cluster CA and one certificate per node, plus a rogue CA and a
# certificate it signed.
#   1. three `keel node` processes with [tls] elect a leader and commit
#      (the keel handshake runs inside TLS 1.3); each log says TLS is up
#      with the peer's certificate and what the kernel offers (kTLS);
#   2. node 1 alone verifies `keel send` streams over TLS (small and large
#      messages, so the TLS send path meets backpressure);
#   3. refused, with a log line on node 1 that names the cause and a
#      non-zero exit of the sender: a certificate from another CA, a peer
#      without TLS (no certificate at all), a peer that trusts another CA;
#   4. a [tls] section with a missing key file stops `keel node` at start
#      with the file named.
# Needs openssl (the command); skips (77) without it.
# usage: transport_tls.sh KEEL_BINARY
set -uo pipefail
KEEL=$(realpath "$1") # the test runs in its directory
command -v openssl >/dev/null || { echo "SKIP: needs the openssl command"; exit 77; }
dir=$(mktemp -d /tmp/keel-tls.XXXXXX)
declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
. "$(dirname "${BASH_SOURCE[0]}")/node_lib.sh"
N=30

# ---- certificates ------------------------------------------------------------
cd "$dir" || exit 1
mkca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
    -out "$1.crt" -days 2 -subj "/CN=$1" >>openssl.log 2>&1 || fail "openssl: CA $1"
}
mkcert() { # NAME CA
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" \
    -subj "/CN=$1" >>openssl.log 2>&1 &&
    openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -out "$1.crt" \
      -days 2 >>openssl.log 2>&1 || fail "openssl: certificate $1"
}
mkca ca
mkca rogue
for n in 1 2 3; do mkcert "node$n" ca; done
mkcert intruder rogue
chmod 600 ./*.key
ok "a cluster CA, 3 node certificates, a rogue CA and an intruder certificate"

base=$((22000 + ($$ % 600) * 20))
head -c 32 /dev/urandom | base64 > secret
chmod 600 secret
# conf NODE CERT CA [TLS=1]: node NODE's config with that certificate and CA
conf() {
  cat <<EOF
[node]
id = $1
cluster = 19
listen = 127.0.0.1:$((base + $1 * 4))
shards = 1
secret_file = secret
[peers]
1 = 127.0.0.1:$((base + 4))
2 = 127.0.0.1:$((base + 8))
3 = 127.0.0.1:$((base + 12))
[log]
groups = 1
dir = data$1
tick_ms = 20
election_ticks = 10
EOF
  [ "${4:-1}" = 1 ] && printf '[tls]\ncert = %s.crt\nkey = %s.key\nca = %s.crt\n' "$2" "$2" "$3"
}
for n in 1 2 3; do conf $n "node$n" ca > "n$n.ini"; done

# ---- 1. a cluster over TLS ----------------------------------------------------
start() {
  "$KEEL" node --config "$dir/n$1.ini" --status-file "$dir/s$1" --status-ms 50 --propose "$N" \
    >>"$dir/n$1.log" 2>&1 &
  pid[$1]=$!
}
for n in 1 2 3; do start $n; done
elect_and_commit 30 " over TLS"
for n in 1 2 3; do
  grep -q "TLS up (TLSv1.3 .*, peer /CN=node" "n$n.log" || fail "node $n: no 'TLS up' line"
  grep -q "tcp: TLS 1.3, mutual certificate authentication.*kTLS: " "n$n.log" ||
    fail "node $n: no line saying TLS is on and what kTLS does"
done
grep -h "kTLS: " n1.log | head -1 | sed 's/^.*kTLS: /kTLS: /'
ok "every node logged TLS 1.3 up with its peers' certificates"
stop_all

# ---- 2. streams over TLS --------------------------------------------------------
# its own log file: the wait below must not find phase 1's line
"$KEEL" node --config "$dir/n1.ini" >"$dir/n1b.log" 2>&1 &
pid[1]=$!
for _ in $(seq 300); do grep -q "node 1 listening on" n1b.log && break; sleep 0.05; done
grep -q "node 1 listening on" n1b.log || fail "node 1 did not start listening in 15 s"
out=$("$KEEL" send --config n2.ini --to 1 --count 20000 --max-size 2048 2>send.log) ||
  fail "a stream over TLS failed: $(tail -3 send.log)"
ok "$out"
out=$("$KEEL" send --config n2.ini --to 1 --count 40 --max-size 4M 2>send.log) ||
  fail "a stream of large messages over TLS failed: $(tail -3 send.log)"
ok "$out"

# ---- 3. refused certificates ------------------------------------------------------
# refused CONFIG WHY_ON_NODE1 WHAT
refused() {
  local from=$(wc -l <n1b.log)
  # not *.log: stop_all fails on ERROR lines there, and these refusals
  # are meant to be ERRORs of the sender's
  "$KEEL" send --config "$1" --to 1 --count 10 >refused.out 2>refused.err
  local rc=$?
  [ $rc != 0 ] || fail "$3: the sender was not refused"
  for _ in $(seq 50); do tail -n +"$((from + 1))" n1b.log | grep -q "$2" && break; sleep 0.05; done
  tail -n +"$((from + 1))" n1b.log | grep -q "$2" || fail "$3: node 1 did not log '$2'"
  ok "$3: refused (sender exit $rc); node 1: $(tail -n +"$((from + 1))" n1b.log | grep "$2" | head -1 | sed 's/^.*tcp: //')"
}
conf 2 intruder ca > intruder.ini
refused intruder.ini "certificate verify failed" "a certificate from another CA"
conf 2 node2 ca 0 > plain.ini
refused plain.ini "it speaks plain TCP" "a peer without TLS (no certificate)"
conf 2 node2 rogue > rogueca.ini
refused rogueca.ini "unknown ca" "a peer that trusts another CA"
grep -q "unknown ca\|certificate verify failed" refused.err || fail "the sender that trusts another CA did not say why"
out=$("$KEEL" send --config n2.ini --to 1 --count 1000 2>send.log) || fail "a good peer after the refusals failed"
ok "node 1 still serves a good peer: $out"
stop_all

# ---- 4. a missing key file ----------------------------------------------------------
conf 1 node1 ca | sed 's/^key = .*/key = missing.key/' > missing.ini
"$KEEL" node --config missing.ini >missing.log 2>&1
rc=$?
[ $rc != 0 ] || fail "keel node started with a missing key file"
grep -q "missing.key" missing.log || fail "the error does not name the missing key file: $(cat missing.log)"
ok "a missing key file stops keel node (exit $rc): $(grep -m1 missing.key missing.log | sed 's/^.*keel node: //' | cut -c1-160)"
echo "PASS: TLS on the peer port: a cluster commits, streams verified, wrong or missing certificates refused ($(elapsed) s)"
