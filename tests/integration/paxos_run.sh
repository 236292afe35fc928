#!/usr/bin/env bash
# Runs an integration script or program that takes the keel binary as its
# first argument against a cluster on Multi-Paxos instead of Raft: it gets a
# wrapper in place of keel that turns every `keel cluster up ...` into
# `keel cluster up --protocol paxos ...` and passes everything else through.
# The script itself is unchanged: the same checks, the other engine.
# usage: paxos_run.sh KEEL_BINARY SCRIPT [ARGS...]
set -uo pipefail
KEEL=$1
shift
tmp=$(mktemp -d /tmp/keel-paxos-run.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/keel" <<WRAP
#!/bin/sh
if [ "\$1" = cluster ] && [ "\$2" = up ]; then
  shift 2
  exec '$KEEL' cluster up --protocol paxos "\$@"
fi
exec '$KEEL' "\$@"
WRAP
chmod +x "$tmp/keel"
script=$1
shift
"$script" "$tmp/keel" "$@"
