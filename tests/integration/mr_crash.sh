#!/usr/bin/env bash
# Map-reduce jobs whose code crashes, and jobs stopped by a signal (issue
# 18). `keel mr run` runs the job in a child process; after a crash it must
# remove the child's temporary output, run the job again (--retries, default
# 2), then fail naming the job, the task and the signal; SIGTERM and SIGINT
# mid-job must end with the same clean-up. With --local-cluster the cluster's
# directory (configurations, logs, the secret, mode 0600) lives under the
# data directory and is removed on every exit. Every case lists the
# directories afterwards: nothing but the inputs may remain. About 10 s.
# usage: mr_crash.sh KEEL_BINARY CRASH_JOB.so
set -uo pipefail
KEEL=$(realpath "$1")
JOB=$(realpath "$2")
dir=$(mktemp -d /tmp/keel-mr-crash.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
n=0 failed=0
fail() { failed=$((failed + 1)); echo "FAIL: $*"; sed 's/^/      stderr: /' err | head -12; }
ok() { echo "ok: $*"; }
export KEEL_LOG=warn

mkdir in work
for i in $(seq 1 2000); do echo "alpha beta gamma $i"; done > in/a.txt
echo "delta boom epsilon" >> in/a.txt

# the work directory must hold nothing but what the case expects ($@)
only() {
  local got want
  got=$(cd work && ls -A | sort | tr '\n' ' ')
  want=$(printf '%s\n' "$@" | sed '/^$/d' | sort | tr '\n' ' ')
  [ "$got" = "$want" ] || { echo "      work/ holds: '$got', expected '$want'"; return 1; }
}

run() { "$KEEL" mr run --job "$JOB" --input in --quiet "$@" >out 2>err; }

# 1. map crashes on every attempt
n=$((n + 1)); run --output work/o1 --shards 1 --arg map-always; st=$?
if [ $st -eq 1 ] && grep -q "keel mr: job crashy failed: map task 0 crashed with SIGSEGV" err &&
   grep -q "on each of 3 attempts; temporary output removed" err &&
   [ "$(grep -c 'running it again' err)" -eq 2 ] && only; then ok "map crash: 3 attempts, named, cleaned"
else fail "map crash (exit $st)"; fi

# 2. --retries 0: one attempt
n=$((n + 1)); run --output work/o2 --shards 1 --arg map-always --retries 0; st=$?
if [ $st -eq 1 ] && grep -q "map task 0 crashed with SIGSEGV (Segmentation fault), on 1 attempt;" err &&
   ! grep -q 'running it again' err && only; then ok "--retries 0"
else fail "--retries 0 (exit $st)"; fi

# 3. reduce crashes
n=$((n + 1)); run --output work/o3 --shards 2 --partitions 3 --arg reduce-always --retries 1; st=$?
if [ $st -eq 1 ] && grep -qE "job crashy failed: reduce of partition [0-2] crashed with SIGSEGV" err &&
   only; then ok "reduce crash named, cleaned"
else fail "reduce crash (exit $st)"; fi

# 4. a crash on the first attempt only: the second succeeds, exact answer
n=$((n + 1)); run --output work/o4 --shards 2 --arg "map-once:$dir/marker"; st=$?
if [ $st -eq 0 ] && grep -q "map task 0 crashed with SIGSEGV.*(attempt 2 of 3)" err &&
   [ "$(cat work/o4/part-* | grep -c .)" -eq 2006 ] && [ -f work/o4/_SUCCESS ] && only o4; then
  ok "crash once, then success"
else fail "crash once (exit $st)"; fi
rm -rf work/o4 "$dir/marker"

# 5. --json after a crash: one valid JSON object naming the signal and task
n=$((n + 1)); run --output 'work/o"5' --shards 1 --arg map-always --retries 0 --json; st=$?
if [ $st -eq 1 ] && python3 -c '
import json, sys
o = json.load(open("out"))
assert o["ok"] is False and o["signal"] == 11 and o["task_kind"] == "map" and o["task"] == 0, o
assert o["job"] == "crashy" and o["output"] == "work/o\"5", o' 2>>err && only; then
  ok "--json failure object"
else fail "--json failure (exit $st)"; fi

# 6. a local cluster whose every node crashes: no worker, no cluster dir left
n=$((n + 1)); run --output work/o6 --local-cluster 2 --arg map-always --retries 1 --data-dir work \
  --progress-fd 3 3>events; st=$?
pids=$(python3 -c '
import json
for l in open("events"):
    e = json.loads(l)
    if e["event"] == "node": print(e["pid"])' 2>/dev/null)
alive=""
for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
if [ $st -eq 1 ] && grep -q "job crashy failed: .*crashed with SIGSEGV" err && [ -n "$pids" ] &&
   [ -z "$alive" ] && only; then ok "local cluster crash: workers gone, secret gone"
else fail "local cluster crash (exit $st, pids '$pids', alive '$alive')"; fi

# 7. SIGTERM mid-job (local): exit 143, temporaries removed
for sig in TERM INT; do
  n=$((n + 1))
  "$KEEL" mr run --job "$JOB" --arg slow:20 --input in --output work/o7 --shards 1 --quiet \
    >out 2>err &
  pid=$!
  for _ in $(seq 100); do compgen -G "work/o7.keel-tmp.*" >/dev/null && break; sleep 0.05; done
  had_tmp=$(compgen -G "work/o7.keel-tmp.*" | wc -l)
  sleep 0.2
  kill -$sig $pid
  wait $pid; st=$?
  want=$((128 + $(kill -l $sig)))
  if [ $st -eq $want ] && [ "$had_tmp" -eq 1 ] && grep -q "job crashy interrupted by SIG$sig; temporary output removed" err &&
     only; then ok "SIG$sig mid-job: exit $want, nothing left"
  else fail "SIG$sig mid-job (exit $st, want $want, tmp seen $had_tmp)"; fi
done

# 8. SIGTERM mid-job on a local cluster: the secret was 0600 under the data
#    directory while it ran, and nothing is left after (nor a new
#    /tmp/keel-mr-cluster.* as older versions made: other programs on this
#    machine may have their own there, so only a new one counts)
n=$((n + 1))
tmp_before=$(compgen -G "/tmp/keel-mr-cluster.*" | sort)
"$KEEL" mr run --job "$JOB" --arg slow:20 --input in --output work/o8 --local-cluster 2 --quiet \
  >out 2>err &
pid=$!
for _ in $(seq 100); do compgen -G "work/o8.keel-tmp.*" >/dev/null && break; sleep 0.05; done
mode=$(stat -c %a work/.keel-mr-cluster.$pid/secret 2>/dev/null)
dmode=$(stat -c %a work/.keel-mr-cluster.$pid 2>/dev/null)
kill -TERM $pid
wait $pid; st=$?
if [ $st -eq 143 ] && [ "$mode" = 600 ] && [ "$dmode" = 700 ] && only &&
   [ "$(compgen -G "/tmp/keel-mr-cluster.*" | sort)" = "$tmp_before" ]; then ok "SIGTERM on a local cluster: secret 0600, nothing left"
else fail "SIGTERM local cluster (exit $st, secret mode '$mode', dir mode '$dmode')"; fi

echo "mr-crash: $((n - failed))/$n passed"
[ $failed -eq 0 ]
