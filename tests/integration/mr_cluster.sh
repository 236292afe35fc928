#!/usr/bin/env bash
# Map-reduce across real keel processes on 127.0.0.1 (TCP transport):
#   1. wordcount on 3 nodes == wordcount on 1 node == a reference (sort|uniq -c);
#   2. a worker dies after its 2nd map task (crash hook), another on its first
#      reduce: the answer is still exact;
#   3. a worker killed with SIGKILL mid-job (a real kill, started by hand
#      from configuration files): the answer is still exact;
#   4. sort on 3 nodes: globally ordered, byte-identical to the 1-node sort;
#   5. bad input on a cluster fails with a clear message and no output.
# usage: mr_cluster.sh KEEL_BINARY
set -uo pipefail
KEEL=$1
dir=$(mktemp -d /tmp/keel-mr-cluster-test.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$dir"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done; exit 1; }
ok() { echo "ok: $*"; }
canon() { cat "$1"/part-* | LC_ALL=C sort; }

mkdir -p "$dir/in" "$dir/sin"
"$KEEL" mr gen words --out "$dir/in/a.txt" --size 12000000 --seed 5 --vocab 30000 || fail "gen"
"$KEEL" mr gen words --out "$dir/in/b.txt" --size 3000000 --seed 6 --vocab 300 || fail "gen"
printf 'tiny file\n' > "$dir/in/c.txt"
"$KEEL" mr gen sort --out "$dir/sin/a.dat" --records 200000 --seed 9 || fail "gen sort"

# Reference wordcount, single-threaded, outside keel.
tr -s ' \t\r\v\f' '\n\n\n\n\n' < <(cat "$dir"/in/*.txt) | grep -v '^$' | LC_ALL=C sort | uniq -c \
  | awk '{print $2 "\t" $1}' | LC_ALL=C sort > "$dir/ref.txt"

"$KEEL" mr run wordcount --input "$dir/in" --output "$dir/o1" --shards 2 --quiet >/dev/null \
  || fail "1-node wordcount"
canon "$dir/o1" > "$dir/o1.txt"
cmp -s "$dir/o1.txt" "$dir/ref.txt" || fail "1-node wordcount differs from the reference"
ok "1-node wordcount matches the reference"

"$KEEL" mr run wordcount --input "$dir/in" --output "$dir/o3" --local-cluster 3 --shards 2 \
  --split 2 --json --quiet > "$dir/o3.json" || fail "3-node wordcount"
canon "$dir/o3" > "$dir/o3.txt"
cmp -s "$dir/o3.txt" "$dir/ref.txt" || fail "3-node wordcount differs from the reference"
grep -q '"nodes":3' "$dir/o3.json" || fail "3-node run did not report 3 nodes: $(cat "$dir/o3.json")"
ok "3-node wordcount matches the reference"

KEEL_MR_TEST_CRASH=2:2 "$KEEL" mr run wordcount --input "$dir/in" --output "$dir/oc" \
  --local-cluster 3 --split 1 --json --quiet > "$dir/oc.json" 2>"$dir/oc.log" || fail "crash at map"
cmp -s <(canon "$dir/oc") "$dir/ref.txt" || fail "answer changed after a worker died in the map phase"
grep -q '"epochs":2' "$dir/oc.json" || fail "no recovery reported: $(cat "$dir/oc.json")"
ok "worker dead after 2 map tasks: exact answer, recovered"

KEEL_MR_TEST_CRASH=3:reduce "$KEEL" mr run wordcount --input "$dir/in" --output "$dir/or" \
  --local-cluster 3 --split 2 --json --quiet > "$dir/or.json" 2>"$dir/or.log" || fail "crash at reduce"
cmp -s <(canon "$dir/or") "$dir/ref.txt" || fail "answer changed after a worker died in the reduce phase"
grep -q '"epochs":2' "$dir/or.json" || fail "no recovery reported: $(cat "$dir/or.json")"
ok "worker dead at its first reduce: exact answer, recovered"

# A real SIGKILL: the cluster started by hand, node 3 killed 1 s in.
base=$((42000 + ($$ % 1000) * 8))
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/secret"; chmod 600 "$dir/secret"
for n in 1 2 3; do
  cat > "$dir/n$n.ini" <<EOC
[node]
id = $n
cluster = 5
listen = 127.0.0.1:$((base + n * 2))
shards = 1
secret_file = secret
[mr]
data = $dir/loc/n$n
[peers]
1 = 127.0.0.1:$((base + 2))
2 = 127.0.0.1:$((base + 4))
3 = 127.0.0.1:$((base + 6))
EOC
done
"$KEEL" mr worker --config "$dir/n2.ini" > "$dir/n2.log" 2>&1 & pids+=($!)
"$KEEL" mr worker --config "$dir/n3.ini" > "$dir/n3.log" 2>&1 & victim=$!; pids+=($victim)
# Slow the map down so the kill lands mid-job: many small tasks, tiny budget.
"$KEEL" mr run wordcount --config "$dir/n1.ini" --input "$dir/in" --output "$dir/ok9" \
  --split 1 --mem 1 --json --quiet > "$dir/ok9.json" 2>"$dir/n1.log" & coord=$!
# Kill once node 3 has taken the job (its spill directory exists).
for _ in $(seq 300); do
  ls -d "$dir"/ok9.keel-tmp.*/.spill-n3 >/dev/null 2>&1 && break
  sleep 0.1
done
sleep 0.3
kill -9 $victim 2>/dev/null
wait $coord || fail "coordinator failed after a SIGKILL of node 3"
cmp -s <(canon "$dir/ok9") "$dir/ref.txt" || fail "answer changed after SIGKILL of a worker"
ok "worker SIGKILLed mid-job: exact answer ($(grep -o '"epochs":[0-9]*' "$dir/ok9.json"))"

# Locality: node k holds $dir/loc/nk ([mr] data); its files' tasks run there.
mkdir -p "$dir/loc/n1" "$dir/loc/n2" "$dir/loc/n3"
for n in 1 2 3; do "$KEEL" mr gen words --out "$dir/loc/n$n/f.txt" --size 2000000 --seed $n || fail gen; done
"$KEEL" mr worker --config "$dir/n2.ini" > "$dir/n2b.log" 2>&1 & pids+=($!)
"$KEEL" mr worker --config "$dir/n3.ini" > "$dir/n3b.log" 2>&1 & pids+=($!)
"$KEEL" mr run wordcount --config "$dir/n1.ini" --input "$dir/loc/n1" --input "$dir/loc/n2" \
  --input "$dir/loc/n3" --output "$dir/oloc" --split 1 --json --quiet > "$dir/oloc.json" \
  2>"$dir/n1b.log" || fail "locality run"
tasks=$(grep -o '"map_tasks":[0-9]*' "$dir/oloc.json" | cut -d: -f2)
grep -q "\"local_tasks\":$tasks," "$dir/oloc.json" || fail "tasks not run where their files are: $(cat "$dir/oloc.json")"
"$KEEL" mr run wordcount --input "$dir/loc/n1" --input "$dir/loc/n2" --input "$dir/loc/n3" \
  --output "$dir/oloc1" --quiet >/dev/null || fail "1-node locality reference"
cmp -s <(canon "$dir/oloc") <(canon "$dir/oloc1") || fail "locality run differs from 1 node"
ok "map tasks ran on the nodes holding their files ($tasks of $tasks), same answer"

"$KEEL" mr run sort --input "$dir/sin" --output "$dir/s1" --shards 2 --quiet >/dev/null || fail "1-node sort"
"$KEEL" mr run sort --input "$dir/sin" --output "$dir/s3" --local-cluster 3 --partitions 5 --quiet \
  >/dev/null || fail "3-node sort"
cat "$dir"/s3/part-* > "$dir/s3.dat"
cmp -s <(cat "$dir"/s1/part-*) "$dir/s3.dat" || fail "3-node sort differs from 1-node sort"
LC_ALL=C sort -c "$dir/s3.dat" 2>/dev/null || fail "3-node sort output is not ordered"
cmp -s "$dir/s3.dat" <(LC_ALL=C sort "$dir/sin/a.dat") || fail "3-node sort differs from GNU sort"
ok "3-node sort globally ordered, same bytes as 1-node sort and GNU sort"

printf 'short' > "$dir/sin/bad.dat"
if "$KEEL" mr run sort --input "$dir/sin" --output "$dir/sbad" --local-cluster 3 --quiet \
   >/dev/null 2>"$dir/bad.log"; then fail "bad input accepted"; fi
grep -q 'bad.dat.*100-byte records' "$dir/bad.log" || fail "unclear error: $(cat "$dir/bad.log")"
[ ! -e "$dir/sbad" ] && ! ls -d "$dir"/sbad.keel-tmp* >/dev/null 2>&1 || fail "bad input left output behind"
ok "bad input on a cluster: clear error, no output"
echo "mr_cluster: all ok"
