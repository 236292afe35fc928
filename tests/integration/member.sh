#!/usr/bin/env bash
# keel member on a local cluster (issue 12 "Membership from the CLI",
# issue 14 "keel member on a Paxos cluster fails with a clear error"):
#   1. `keel cluster up` 3 nodes, 4 groups: `keel member list` shows voters
#      1,2,3 in every group; bad arguments exit 2;
#   2. `keel member remove 3`: every group done, list shows voters 1,2 and
#      node 3 in none; writes still commit; running it again is a no-op
#      ("already done" in every group: a re-run resumes);
#   3. `keel member add 3` while node 3 is stopped: every group fails
#      (exit 3, "run it again to resume"); node 3 continued, the same
#      command resumes: back to 3 voters in every group, and node 3 catches
#      up: its own serializable reads show the keys written while it was out;
#   4. on a Paxos cluster (`--protocol paxos`): list works, `remove 3`
#      exits 3 and says the engine has no reconfiguration.
# usage: member.sh KEEL_BINARY
set -uo pipefail
KEEL=$1
dir=$(mktemp -d /tmp/keel-member.XXXXXX)
cdir=$dir/c
failed=0
cleanup() {
  "$KEEL" cluster down --dir "$cdir" >/dev/null 2>&1
  [ $failed = 1 ] && echo "kept for inspection: $dir" || rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  failed=1
  echo "FAIL: $*"
  for f in "$cdir"/n*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
  exit 1
}
ok() { echo "ok: $*"; }
member() { "$KEEL" member --dir "$cdir" "$@"; }
kv() { "$KEEL" kv --dir "$cdir" "$@"; }
# voters of every group from `member list --json`: "g:1,2,3 g:..." sorted
voters() {
  member list --json | python3 -c 'import json,sys
rows=[json.loads(l) for l in sys.stdin if l.strip()]
assert all(r["ok"] for r in rows), rows
print(" ".join("%d:%s" % (r["group"], ",".join(map(str, sorted(r["voters"])))) for r in sorted(rows, key=lambda r: r["group"])))'
}
every() { # VOTERS: the expected voters string for groups 0..3
  echo "0:$1 1:$1 2:$1 3:$1"
}

"$KEEL" cluster up --nodes 3 --shards 2 --groups 4 --dir "$cdir" >"$dir/up.out" 2>&1 ||
  fail "cluster up: $(cat "$dir/up.out")"
ok "cluster up: $(cat "$cdir/endpoints")"

# ---- 1. list, usage ------------------------------------------------------------
v=$(voters) || fail "member list --json"
[ "$v" = "$(every 1,2,3)" ] || fail "member list: want 3 voters in every group, got '$v'"
out=$(member list) || fail "member list"
[ "$(echo "$out" | grep -c 'voters 1,2,3$')" = 4 ] || fail "member list text: $out"
ok "member list: voters 1,2,3 in every group"
member >/dev/null 2>&1; [ $? = 2 ] || fail "member without an operation must exit 2"
member frob >/dev/null 2>&1; [ $? = 2 ] || fail "an unknown operation must exit 2"
member remove >/dev/null 2>&1; [ $? = 2 ] || fail "remove without NODE must exit 2"
member remove 0 >/dev/null 2>&1; [ $? = 2 ] || fail "remove 0 must exit 2"
member add x >/dev/null 2>&1; [ $? = 2 ] || fail "add x must exit 2"
member list 3 >/dev/null 2>&1; [ $? = 2 ] || fail "list 3 must exit 2"
ok "usage errors exit 2"

for i in $(seq 1 10); do kv put "a$i" "v$i" >/dev/null || fail "put a$i"; done

# ---- 2. remove 3 ---------------------------------------------------------------
t0=$(date +%s.%N)
out=$(member remove 3 2>&1) || fail "member remove 3: $out"
[ "$(echo "$out" | grep -c ': remove node 3: done')" = 4 ] || fail "member remove 3 output: $out"
ok "member remove 3 in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b - a}') s"
v=$(voters) || fail "member list --json after remove"
[ "$v" = "$(every 1,2)" ] || fail "after remove 3: want voters 1,2 everywhere, got '$v'"
member list --json | python3 -c 'import json,sys
rows=[json.loads(l) for l in sys.stdin if l.strip()]
assert not any(3 in r["voters"] + r["learners"] for r in rows), rows' ||
  fail "node 3 still in some group"
ok "after remove: voters 1,2 in every group, node 3 in none"
for i in $(seq 1 20); do
  kv put "b$i" "w$i" >/dev/null 2>"$dir/err" || fail "put b$i after remove: $(cat "$dir/err")"
done
[ "$(kv get b7)" = w7 ] || fail "get b7 after remove"
ok "writes commit on 2 voters"
out=$(member remove 3 2>&1) || fail "member remove 3 again: $out"
[ "$(echo "$out" | grep -c 'already done')" = 4 ] || fail "a second remove 3 must be 'already done': $out"
ok "remove again: already done in every group (a re-run resumes)"

# ---- 3. add 3 back -------------------------------------------------------------
# First with node 3 stopped (SIGSTOP): it cannot catch up, so no group can
# promote it in time; every group is reported failed, exit 3. Then node 3
# runs again and the same command resumes: a group whose change is still
# catching up is waited for, one already done counts as done.
pid3=$(cat "$cdir/n3.pid") || fail "no pid file for node 3"
kill -STOP "$pid3" || fail "SIGSTOP node 3"
member add 3 --timeout 1s >"$dir/out" 2>&1
rc=$?
kill -CONT "$pid3"
[ $rc = 3 ] || fail "add 3 with node 3 stopped must exit 3, got $rc: $(cat "$dir/out")"
[ "$(grep -c '^group .*: FAILED' "$dir/out")" = 4 ] || fail "add 3, node 3 stopped: want 4 failed groups: $(cat "$dir/out")"
grep -q 'run it again to resume' "$dir/out" || fail "a failed add must say it resumes: $(cat "$dir/out")"
ok "add 3 with node 3 stopped: exit 3, $(tail -n 1 "$dir/out" | cut -c1-100)..."
out=$(member add 3 2>&1) || fail "member add 3: $out"
[ "$(echo "$out" | grep -Ec ': add node 3: (already )?done')" = 4 ] || fail "member add 3 output: $out"
v=$(voters) || fail "member list --json after add"
[ "$v" = "$(every 1,2,3)" ] || fail "after add 3: want voters 1,2,3 everywhere, got '$v'"
ok "member add 3: voters 1,2,3 in every group"
ep3=$(cut -d, -f3 "$cdir/endpoints")
for i in $(seq 1 20); do
  got=
  for t in $(seq 1 50); do
    got=$("$KEEL" kv get "b$i" --serializable --endpoints "$ep3" --token-file "$cdir/client-token" 2>/dev/null) && [ "$got" = "w$i" ] && break
    sleep 0.1
  done
  [ "$got" = "w$i" ] || fail "node 3 ($ep3) never served b$i after add (got '$got')"
done
ok "node 3 caught up: its serializable reads show the keys written while it was out"
out=$(member add 3 2>&1) || fail "member add 3 again: $out"
[ "$(echo "$out" | grep -c 'already done')" = 4 ] || fail "a second add 3 must be 'already done': $out"
kv put after-add yes >/dev/null || fail "put after add"
ok "add again: already done; writes commit"
"$KEEL" cluster down --dir "$cdir" >/dev/null 2>&1

# ---- 4. Paxos ------------------------------------------------------------------
cdir=$dir/p
"$KEEL" cluster up --nodes 3 --shards 2 --groups 4 --protocol paxos --dir "$cdir" >"$dir/up.out" 2>&1 ||
  fail "cluster up --protocol paxos: $(cat "$dir/up.out")"
v=$(voters) || fail "member list on paxos"
[ "$v" = "$(every 1,2,3)" ] || fail "paxos member list: want 3 voters in every group, got '$v'"
member remove 3 >"$dir/out" 2>&1
rc=$?
[ $rc = 3 ] || fail "member remove 3 on paxos must exit 3, got $rc: $(cat "$dir/out")"
grep -qi 'paxos.*no reconfiguration' "$dir/out" || fail "paxos remove: no clear reason: $(cat "$dir/out")"
v=$(voters) || fail "member list on paxos after the refused remove"
[ "$v" = "$(every 1,2,3)" ] || fail "paxos: members changed after a refused remove: '$v'"
ok "paxos: remove 3 exits 3: $(head -n 1 "$dir/out")"
echo "member: all passed"
