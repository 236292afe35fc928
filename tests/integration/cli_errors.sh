#!/usr/bin/env bash
# Table-driven test of bad options and bad configurations (issue 18): each
# row runs one keel command line and asserts its exit status and message.
#   - options: numbers range-checked with the range in the message; caps on
#     shards; unknown options, missing values, --help and `keel help CMD`
#     handled the same way by every command on cli/opt.h;
#   - configurations: every mistake named with file, line and reason, by
#     `keel config` and by `keel send` (the same loader and validate step).
# A usage error (exit 2) must also print "try 'keel CMD --help'"; --help
# must print to stdout with nothing on stderr. No network beyond DNS
# lookups of .invalid names (RFC 6761: never resolve); about 1 s.
# usage: cli_errors.sh KEEL_BINARY
set -uo pipefail
KEEL=$(realpath "$1")
dir=$(mktemp -d /tmp/keel-cli-test.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
n=0 failed=0

# check NAME STATUS STREAM WANT -- COMMAND...
#   COMMAND must exit STATUS and STREAM (out or err) contain the fixed
#   string WANT.
check() {
  local name=$1 want_st=$2 stream=$3 want=$4
  shift 5
  timeout 20 "$@" >out 2>err
  local st=$? why=""
  n=$((n + 1))
  [ "$st" -eq "$want_st" ] || why="exit $st, expected $want_st"
  grep -qF -- "$want" "$stream" || why="${why:+$why; }no '$want' on std$stream"
  if [ "$want_st" -eq 2 ] && ! grep -q "^try 'keel .*--help'$" err; then
    why="${why:+$why; }no \"try 'keel CMD --help'\" line"
  fi
  if [ "$want_st" -eq 0 ] && [ "$stream" = out ] && [ -s err ]; then
    why="${why:+$why; }stderr not empty"
  fi
  if [ -n "$why" ]; then
    failed=$((failed + 1))
    echo "FAIL: $name: $why"
    echo "      \$ ${*:1}"
    sed 's/^/      stdout: /' out | head -5
    sed 's/^/      stderr: /' err | head -5
  else
    echo "ok: $name"
  fi
}

# ---- fixtures -------------------------------------------------------------
echo "a-cluster-secret-of-some-length" > secret
chmod 600 secret
node="[node]
id = 1
cluster = 42
listen = 127.0.0.1:7100
secret_file = secret"                      # lines 1-5
printf '%s\n[peers]\n1 = 127.0.0.1:7100\n2 = 127.0.0.1:7200\n' "$node" > good.ini
# the example documented in include/keel/config.h, verbatim
cat > example.ini <<'INI'
[node]
id          = 1                 # this node's id (>= 1)
cluster     = 42                # cluster id; peers must match (>= 1)
listen      = 127.0.0.1:7100    # base address; shard s listens on port+s
shards      = 2                 # shards per node; 0 or absent: one per core
transport   = tcp               # a backend of keel_transport_registry()
max_frame   = 16M               # largest message payload (K/M/G suffixes)
secret_file = secret            # cluster secret; relative to this file's
                                # directory; mode 0600/0400, owned by us
handshake_timeout_ms = 5000     # a peer that takes longer is dropped
peer_timeout_ms = 30000         # a peer silent this long (our data not
                                # acknowledged, keepalive probes not
                                # answered) is dropped as broken
[peers]
1 = 127.0.0.1:7100              # node id = host:port ([v6addr]:port)
2 = 127.0.0.1:7200
INI
printf '[node]\nid = 1\t# tab\ncluster = 42 ; semi\nlisten = 127.0.0.1:7100\nsecret_file = secret # s\n' > comments.ini
long=$(printf 'x%.0s' $(seq 250))
printf '%s\n[mr]\ndata = /%s\n' "$node" "$long" > long.ini
printf '%s\n# %s\n[mr]\nbogus = 1\n' "$node" "$long" > longcomment.ini
printf '%s\n[peer]\n2 = 127.0.0.1:7200\n' "$node" > peer.ini
printf '%s\nlisten = 127.0.0.1:7101\n' "$node" > repeat.ini
printf '%s\n[peers]\n1 = 127.0.0.1:7100\n2 = 127.0.0.1:7100\n3 = 127.0.0.1:7100\n' "$node" > dup.ini
printf '%s\n[peers]\n1 = 127.0.0.1:7100\n2 = nosuch.invalid:7200\n' "$node" > host.ini
mkdir confdir
cp good.ini 'q"x.ini'

# ---- options: numbers, ranges, caps --------------------------------------
S=(send --config good.ini --to 2)
check "send --count abc" 2 err \
  "keel send: --count: 'abc' is not a number (expected 1..1000000000)" -- "$KEEL" "${S[@]}" --count abc
check "send --timeout-ms abc" 2 err \
  "keel send: --timeout-ms: 'abc' is not a duration (expected 1ms..24h" -- "$KEEL" "${S[@]}" --timeout-ms abc
check "send --count 0" 2 err \
  "keel send: --count: '0' is out of range (expected 1..1000000000)" -- "$KEEL" "${S[@]}" --count 0
check "send --count 1e3" 2 err "keel send: --count: '1e3' is not a number" -- "$KEEL" "${S[@]}" --count 1e3
check "send --to abc" 2 err \
  "keel send: --to: 'abc' is not a number (expected 1..4294967295)" -- "$KEEL" send --config good.ini --to abc
check "send --max-size 1Q" 2 err \
  "keel send: --max-size: '1Q' is not a size (expected 16..1G; suffixes K, M, G, T)" -- "$KEEL" "${S[@]}" --max-size 1Q
check "send --retry-ms -5" 2 err \
  "keel send: --retry-ms: '-5' is out of range (expected 0..24h" -- "$KEEL" "${S[@]}" --retry-ms -5
check "send --to a node not in [peers]" 2 err \
  "keel send: --to 9: not a node of the configuration's [peers]" -- "$KEEL" send --config good.ini --to 9
check "send --to this node" 2 err "keel send: --to 1: that is this node" -- "$KEEL" send --config good.ini --to 1
check "send --to a higher id" 2 err \
  "keel send: --to 2: a higher id than this node's (1): on the mesh node 2 dials us" -- "$KEEL" "${S[@]}"
check "send without --config" 2 err "keel send: --config FILE is required" -- "$KEEL" send --to 2
check "send --count without a value" 2 err "keel send: --count needs a value (N)" -- "$KEEL" "${S[@]}" --count
check "topo --shards 5000" 2 err \
  "keel topo: --shards: '5000' is out of range (expected 1..256)" -- "$KEEL" topo --shards 5000
check "topo --shards 257 --overcommit" 2 err \
  "keel topo: --shards: '257' is out of range (expected 1..256)" -- "$KEEL" topo --overcommit --shards 257
check "topo --shards -1" 2 err \
  "keel topo: --shards: '-1' is out of range (expected 1..256)" -- "$KEEL" topo --shards -1
check "topo: more shards than cores" 2 err \
  "3 shards but cpuset 0-1 has only 2 cores; use --shards 2 or fewer, or --overcommit" -- \
  "$KEEL" topo --synthetic "pack:1 core:2 pu:1" --shards 3
check "topo: overcommitted" 0 out "placement: 3 shards on all PUs" -- \
  "$KEEL" topo --synthetic "pack:1 core:2 pu:1" --shards 3 --overcommit
check "topo --cpuset bad" 2 err "keel topo: cpuset 'x': bad item 'x'" -- "$KEEL" topo --cpuset x
check "shards --shards abc" 2 err \
  "keel shards: --shards: 'abc' is not a number (expected 1..256)" -- "$KEEL" shards --shards abc
check "shards --shards 300 --overcommit" 2 err \
  "keel shards: --shards: '300' is out of range (expected 1..256)" -- "$KEEL" shards --shards 300 --overcommit
check "shards --duration 0" 2 err \
  "keel shards: --duration: '0' is out of range (expected 1ms..1h" -- "$KEEL" shards --duration 0
check "topo --overcommit=yes" 2 err "keel topo: --overcommit takes no value" -- "$KEEL" topo --overcommit=yes

# keel mr: every number range-checked before anything is allocated or forked
echo "alpha beta alpha" > words.txt
M=(mr run wordcount --input words.txt --output mrout --quiet)
check "mr run --shards abc" 2 err \
  "keel mr run: --shards: 'abc' is not a number (expected 1..256)" -- "$KEEL" "${M[@]}" --shards abc
check "mr run --shards -1" 2 err \
  "keel mr run: --shards: '-1' is out of range (expected 1..256)" -- "$KEEL" "${M[@]}" --shards -1
check "mr run --shards 5000" 2 err \
  "keel mr run: --shards: '5000' is out of range (expected 1..256)" -- "$KEEL" "${M[@]}" --shards 5000
cpus=$(nproc)
check "mr run: more shards than CPUs" 2 err \
  "keel mr run: --shards $((cpus + 1)): more than the $cpus CPU" -- "$KEEL" "${M[@]}" --shards $((cpus + 1))
check "mr run --split abc" 2 err \
  "keel mr run: --split: 'abc' is not a number (expected 1..4096)" -- "$KEEL" "${M[@]}" --split abc
check "mr run --mem 0" 2 err \
  "keel mr run: --mem: '0' is out of range (expected 1..1048576)" -- "$KEEL" "${M[@]}" --mem 0
check "mr run --mem past the machine" 2 err \
  "MB is more than this machine's" -- "$KEEL" "${M[@]}" --mem 1048576 --shards 1
check "mr run --partitions 100000000" 2 err \
  "keel mr run: --partitions: '100000000' is out of range (expected 1..65536)" -- \
  "$KEEL" "${M[@]}" --partitions 100000000
check "mr run --partitions abc" 2 err \
  "keel mr run: --partitions: 'abc' is not a number" -- "$KEEL" "${M[@]}" --partitions abc
check "mr run --local-cluster abc" 2 err \
  "keel mr run: --local-cluster: 'abc' is not a number (expected 1..32)" -- \
  "$KEEL" "${M[@]}" --local-cluster abc
check "mr run --local-cluster 33" 2 err \
  "keel mr run: --local-cluster: '33' is out of range (expected 1..32)" -- \
  "$KEEL" "${M[@]}" --local-cluster 33
check "mr run --retries 11" 2 err \
  "keel mr run: --retries: '11' is out of range (expected 0..10)" -- "$KEEL" "${M[@]}" --retries 11
check "mr run --progress-fd not open" 2 err \
  "keel mr run: --progress-fd 999: not an open file descriptor" -- "$KEEL" "${M[@]}" --progress-fd 999
check "mr run --config with --local-cluster" 2 err \
  "keel mr run: --config and --local-cluster: one or the other" -- \
  "$KEEL" "${M[@]}" --config good.ini --local-cluster 3
check "mr run without a job" 2 err "keel mr run: missing JOB" -- \
  "$KEEL" mr run --input words.txt --output mrout
check "mr run with two jobs" 2 err "keel mr run: give the job once" -- \
  "$KEEL" "${M[@]}" --job ./x.so
check "mr run without --input" 2 err "keel mr run: --input PATH is required" -- \
  "$KEEL" mr run wordcount --output mrout
check "mr run --json=1" 2 err "keel mr run: --json takes no value" -- "$KEEL" "${M[@]}" --json=1
check "mr gen --size abc" 2 err \
  "keel mr gen: --size: 'abc' is not a size" -- "$KEEL" mr gen words --out g.txt --size abc
check "mr gen --vocab 0" 2 err \
  "keel mr gen: --vocab: '0' is out of range (expected 1..10000000)" -- \
  "$KEEL" mr gen words --out g.txt --vocab 0
check "mr gen of an unknown kind" 2 err "keel mr gen: 'nosuch' is not words or sort" -- \
  "$KEEL" mr gen nosuch --out g.txt
check "mr gen without --out" 2 err "keel mr gen: --out FILE is required" -- "$KEEL" mr gen words
check "mr worker without --config" 2 err "keel mr worker: --config FILE is required" -- \
  "$KEEL" mr worker
check "mr jobs takes no argument" 2 err "keel mr jobs: unexpected argument 'x'" -- "$KEEL" mr jobs x
check "mr --help" 0 out "usage: keel mr <subcommand>" -- "$KEEL" mr --help
check "mr: unknown subcommand" 2 err "keel mr: unknown subcommand 'nosuch'" -- "$KEEL" mr nosuch
n=$((n + 1))
if [ ! -e mrout ] && ! compgen -G "mrout.keel-tmp.*" >/dev/null; then
  echo "ok: refused mr runs created nothing"
else
  failed=$((failed + 1))
  echo "FAIL: a refused mr run left $(ls -d mrout* | tr '\n' ' ')"
fi

# ---- the same handling in every command -----------------------------------
for cmd in version topo shards send config node "cluster up" "cluster status" kv status \
  "mr run" "mr gen" "mr worker" "mr jobs"; do
  # shellcheck disable=SC2086 # "mr run" is two words
  check "$cmd: unknown option" 2 err "keel $cmd: unknown option '--no-such-option'" -- \
    "$KEEL" $cmd --no-such-option
  check "$cmd --help" 0 out "usage: keel $cmd" -- "$KEEL" $cmd --help
  cp out help.want
  check "$cmd -h" 0 out "usage: keel $cmd" -- "$KEEL" $cmd -h
  check "help $cmd" 0 out "usage: keel $cmd" -- "$KEEL" help $cmd
  n=$((n + 1))
  if cmp -s out help.want; then
    echo "ok: 'keel help $cmd' prints what 'keel $cmd --help' does"
  else
    failed=$((failed + 1))
    echo "FAIL: 'keel help $cmd' differs from 'keel $cmd --help'"
  fi
done
check "version takes no argument" 2 err "keel version: unexpected argument 'extra'" -- "$KEEL" version extra
check "help of an unknown command" 2 err "keel: unknown command 'nosuch'" -- "$KEEL" help nosuch
check "unknown command" 2 err "keel: unknown command 'nosuch'" -- "$KEEL" nosuch
check "keel --help documents KEEL_LOG" 0 out "KEEL_LOG=LEVEL" -- "$KEEL" --help
check "keel help" 0 out "keel help <command>" -- "$KEEL" help
check "KEEL_LOG with a bad level" 0 err "keel: KEEL_LOG='loud' is not debug, info, warn, error or off" -- \
  env KEEL_LOG=loud "$KEEL" version

# ---- configurations: file, line and reason --------------------------------
check "documented example parses" 0 out "example.ini: ok: node 1 of cluster 42" -- "$KEEL" config example.ini
check "inline # and ; comments" 0 out "comments.ini: ok: node 1 of cluster 42" -- "$KEEL" config comments.ini
# each bad file: the same message from keel config and keel send
bad() { # NAME FILE MESSAGE
  check "config: $1" 1 err "keel config: $2$3" -- "$KEEL" config "$2"
  check "send: $1" 1 err "keel send: $2$3" -- "$KEEL" send --config "$2" --to 2 --count 1 --timeout-ms 5000
}
bad "a line over 200 characters" long.ini \
  ":7: line too long: 258 characters without comments and blanks, at most 199"
bad "the line after a long comment" longcomment.ini ":8: [mr] unknown key 'bogus' (known: data)"
bad "a [peer] typo" peer.ini ":6: unknown section [peer] (did you mean [peers]?)"
bad "a repeated key" repeat.ini ":6: [node] listen given twice (first on line 4)"
bad "three peers on one address" dup.ini ":8: [peers] 2 = 127.0.0.1:7100: the same address as node 1 (line 7)"
bad "a directory" confdir ": is a directory, not a configuration file"
bad "an unresolvable host" host.ini \
  ":8: [peers] 2 = nosuch.invalid:7200: host 'nosuch.invalid' does not resolve"
check "config --no-resolve skips DNS" 0 out "host.ini: ok (hosts not resolved)" -- \
  "$KEEL" config host.ini --no-resolve

# ---- JSON through the one escaper ----------------------------------------
check "config --json escapes the path" 0 out '{"path":"q\"x.ini","ok":true,"node":1' -- \
  "$KEEL" config 'q"x.ini' --json
check "config --json error" 1 out \
  '{"path":"confdir","ok":false,"error":"confdir: is a directory, not a configuration file"}' -- \
  "$KEEL" config confdir --json

check "mr run --json escapes the output" 0 out '"output":"q\"x"' -- \
  "$KEEL" mr run wordcount --input words.txt --output 'q"x' --json --quiet
n=$((n + 1))
if python3 -c 'import json,sys; json.load(sys.stdin)' < out 2>/dev/null; then
  echo "ok: mr run --json is valid JSON"
else
  failed=$((failed + 1))
  echo "FAIL: mr run --json is not valid JSON: $(head -c 200 out)"
fi
rm -rf 'q"x'
check "mr run --json error is valid JSON" 1 out '{"ok":false,"job":"wordcount","output":"q\"y"' -- \
  "$KEEL" mr run wordcount --input 'no"such' --output 'q"y' --json --quiet

# ---- a listen port already taken ------------------------------------------
# The reason once, and no "listening on" from a shard whose bind worked
# while shard 0's failed.
bport=$((30000 + ($$ % 2000) * 2))
printf '[node]\nid = 1\ncluster = 42\nlisten = 127.0.0.1:%s\nshards = 2\nsecret_file = secret\n[peers]\n1 = 127.0.0.1:%s\n2 = 127.0.0.1:%s\n[log]\ngroups = 1\ndir = busy-data\n' \
  "$bport" "$bport" "$((bport + 100))" > busy.ini
python3 -c 'import socket,sys,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); print("up", flush=True); time.sleep(30)' "$bport" > holder.out &
holder=$!
for _ in $(seq 100); do grep -q up holder.out && break; sleep 0.05; done
check "node: listen port taken" 1 err "tcp: listening on 127.0.0.1:$bport: Address already in use" -- \
  "$KEEL" node --config busy.ini
n=$((n + 1))
if [ "$(grep -o 'Address already in use' err | wc -l)" -eq 1 ] && ! grep -q 'listening on 127.0.0.1:'"$((bport + 1))" err; then
  echo "ok: node: the reason once, no shard says it listens"
else
  failed=$((failed + 1))
  echo "FAIL: node: port taken: $(cat err)"
fi
kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null

echo "$((n - failed)) of $n checks passed"
[ "$failed" -eq 0 ]
