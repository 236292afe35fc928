#!/usr/bin/python3
"""Offline structural check of deploy/ (issue 16): the Kubernetes manifests,
the compose file, the Containerfile and the systemd unit, against each other
and against what the keel binary reads. Schema-light: Debian's kubectl 1.20
has no API server here and predates policy/v1, so this checks what a wrong
edit would break: kinds and apiVersions, selectors against the pod labels,
probe ports against container ports, the Services' target ports, the peers'
DNS names against the StatefulSet and its headless Service, and that every
KEEL_* variable set is one the image reads (cli/node_env.c).

Then it proves it can fail: each of a list of broken copies (an OrderedReady
StatefulSet, a probe on an undeclared port, a selector that matches no pod,
a misspelt variable, ...) must be refused.

usage: deploy_check.py SOURCE_ROOT     (exit 0 ok, 1 failed, 77 no PyYAML)
"""
import copy
import re
import sys

try:
    import yaml
except ImportError:
    print("SKIP: needs PyYAML (Debian: python3-yaml)")
    sys.exit(77)

ROOT = sys.argv[1] if len(sys.argv) > 1 else "."


def read(path):
    with open(f"{ROOT}/{path}") as f:
        return f.read()


def env_the_image_reads():
    """The KEEL_* names cli/node_env.c reads, plus the runtime's KEEL_REACTOR."""
    src = read("cli/node_env.c")
    m = re.search(r"names\[\] = \{(.*?)\};", src, re.S)
    names = set(re.findall(r'"(KEEL_[A-Z_]+)"', m.group(1))) if m else set()
    return names | {"KEEL_REACTOR"}


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def check_k8s(docs, reads, errs):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    want = {"Service": "v1", "StatefulSet": "apps/v1", "PodDisruptionBudget": "policy/v1"}
    for d in docs:
        k = d.get("kind")
        if k not in want:
            errs.append(f"k8s: unexpected kind {k}")
        elif d.get("apiVersion") != want[k]:
            errs.append(f"k8s: {k} {d['metadata']['name']}: apiVersion {d.get('apiVersion')}, want {want[k]}")
    sts = by_kind.get("StatefulSet", [])
    if len(sts) != 1:
        errs.append(f"k8s: {len(sts)} StatefulSets, want 1")
        return
    s = sts[0]["spec"]
    name = sts[0]["metadata"]["name"]
    if s.get("podManagementPolicy") != "Parallel":
        errs.append("k8s: StatefulSet podManagementPolicy must be Parallel (readiness needs a quorum)")
    labels = s["template"]["metadata"].get("labels", {})
    if not matches(s.get("selector", {}).get("matchLabels"), labels):
        errs.append("k8s: StatefulSet selector does not match its pod labels")
    pod = s["template"]["spec"]
    cs = pod.get("containers", [])
    if len(cs) != 1:
        errs.append(f"k8s: {len(cs)} containers, want 1")
        return
    c = cs[0]
    cports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for n in env:
        if n.startswith("KEEL_") and n not in reads:
            errs.append(f"k8s: env {n} is not read by keel (cli/node_env.c)")
    for n in ("KEEL_NODE_ID", "KEEL_PEERS"):
        if n not in env:
            errs.append(f"k8s: env {n} missing")
    # probes
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        p = c.get(probe, {}).get("httpGet")
        if not p:
            errs.append(f"k8s: no {probe} httpGet")
            continue
        if p.get("path") != path:
            errs.append(f"k8s: {probe} path {p.get('path')}, want {path}")
        port = p.get("port")
        num = cports.get(port) if isinstance(port, str) else port
        if num not in cports.values():
            errs.append(f"k8s: {probe} port {port} is not a container port")
        elif "KEEL_HTTP_LISTEN" in env and num != port_of(env["KEEL_HTTP_LISTEN"]):
            errs.append(f"k8s: {probe} port {num} is not KEEL_HTTP_LISTEN's")
    if "KEEL_CLIENT_LISTEN" in env and port_of(env["KEEL_CLIENT_LISTEN"]) not in cports.values():
        errs.append("k8s: KEEL_CLIENT_LISTEN's port is not a container port")
    # headless service and the peers' DNS names
    svcs = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}
    hs = svcs.get(s.get("serviceName"))
    if not hs:
        errs.append(f"k8s: serviceName {s.get('serviceName')} is no Service here")
    else:
        if hs["spec"].get("clusterIP") != "None":
            errs.append("k8s: the StatefulSet's Service must be headless (clusterIP: None)")
        if hs["spec"].get("publishNotReadyAddresses") is not True:
            errs.append("k8s: the headless Service needs publishNotReadyAddresses: true")
    for sn, svc in svcs.items():
        if not matches(svc["spec"].get("selector"), labels):
            errs.append(f"k8s: Service {sn} selector matches no pod of the StatefulSet")
        for p in svc["spec"].get("ports", []):
            t = p.get("targetPort", p.get("port"))
            if (t not in cports) if isinstance(t, str) else (t not in cports.values()):
                errs.append(f"k8s: Service {sn} targetPort {t} is not a container port")
    replicas = s.get("replicas", 1)
    peers = dict(x.split("=", 1) for x in env.get("KEEL_PEERS", "").split(",") if "=" in x)
    want_ids = {str(i + 1) for i in range(replicas)}
    if set(peers) != want_ids:
        errs.append(f"k8s: KEEL_PEERS ids {sorted(peers)}, want 1..{replicas} (one per replica)")
    for i, hp in peers.items():
        host, port = hp.rsplit(":", 1)
        want_host = f"{name}-{int(i) - 1}.{s.get('serviceName')}"
        if host != want_host:
            errs.append(f"k8s: KEEL_PEERS {i}={hp}: host should be {want_host}")
        if int(port) != cports.get("peer"):
            errs.append(f"k8s: KEEL_PEERS {i}={hp}: port is not the peer container port")
    if env.get("KEEL_NODE_ID") != "ordinal":
        errs.append("k8s: KEEL_NODE_ID should be 'ordinal' (every pod has the same template)")
    # anti-affinity and storage
    aa = pod.get("affinity", {}).get("podAntiAffinity", {})
    terms = aa.get("requiredDuringSchedulingIgnoredDuringExecution", []) + [
        t.get("podAffinityTerm", {}) for t in aa.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    if not any(matches(t.get("labelSelector", {}).get("matchLabels"), labels) for t in terms):
        errs.append("k8s: no pod anti-affinity term selecting keel's own pods")
    vct = [v["metadata"]["name"] for v in s.get("volumeClaimTemplates", [])]
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    if not vct:
        errs.append("k8s: no volumeClaimTemplates")
    for v in vct:
        if v not in mounts:
            errs.append(f"k8s: claim {v} is mounted nowhere")
        elif "KEEL_DATA_DIR" in env and mounts[v] != env["KEEL_DATA_DIR"]:
            errs.append(f"k8s: claim {v} mounted at {mounts[v]}, not KEEL_DATA_DIR")
    sc = pod.get("securityContext", {})
    if not sc.get("runAsNonRoot"):
        errs.append("k8s: pod securityContext runAsNonRoot missing")
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if len(pdbs) != 1:
        errs.append(f"k8s: {len(pdbs)} PodDisruptionBudgets, want 1")
    else:
        ps = pdbs[0]["spec"]
        if ps.get("maxUnavailable") != 1:
            errs.append("k8s: PodDisruptionBudget maxUnavailable must be 1")
        if not matches(ps.get("selector", {}).get("matchLabels"), labels):
            errs.append("k8s: PodDisruptionBudget selector matches no keel pod")


def check_containerfile(text, reads, errs):
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    images = [args.get(f[0].strip("${}"), f[0]) for f in froms]
    if len(froms) < 2:
        errs.append("Containerfile: not multi-stage")
    elif not (images[0].endswith("debian:12") and images[-1].endswith("debian:12-slim")):
        errs.append(f"Containerfile: stages {images}: build on debian:12, run on debian:12-slim")
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not user or user[-1].split(":")[0] in ("root", "0"):
        errs.append("Containerfile: the run stage must end with a non-root USER")
    vol = re.findall(r"^VOLUME\s+(\S+)", text, re.M)
    envs = dict(re.findall(r"(KEEL_[A-Z_]+)=(\S+)", text))
    for n in envs:
        if n not in reads:
            errs.append(f"Containerfile: ENV {n} is not read by keel")
    if not vol or vol[-1] != envs.get("KEEL_DATA_DIR"):
        errs.append("Containerfile: VOLUME must be KEEL_DATA_DIR")
    if not re.search(r'^ENTRYPOINT \["/usr/bin/keel", "node"\]', text, re.M):
        errs.append("Containerfile: ENTRYPOINT must run keel node")
    return envs, re.findall(r"^EXPOSE\s+(.*)$", text, re.M)


def check_compose(doc, reads, errs):
    svcs = doc.get("services", {})
    if len(svcs) != 3:
        errs.append(f"compose: {len(svcs)} services, want 3")
    ids = set()
    for name, s in svcs.items():
        env = s.get("environment", {})
        for n in env:
            if n.startswith("KEEL_") and n not in reads:
                errs.append(f"compose: {name}: env {n} is not read by keel")
        ids.add(str(env.get("KEEL_NODE_ID")))
        peers = dict(x.split("=", 1) for x in str(env.get("KEEL_PEERS", "")).split(",") if "=" in x)
        for i, hp in peers.items():
            if hp.rsplit(":", 1)[0] not in svcs:
                errs.append(f"compose: {name}: KEEL_PEERS {i}={hp} names no service")
        me = peers.get(str(env.get("KEEL_NODE_ID")), "")
        if me.rsplit(":", 1)[0] != s.get("hostname", name):
            errs.append(f"compose: {name}: its own KEEL_PEERS entry {me} is not its host name")
        if not any(str(v).endswith(":/var/lib/keel") for v in s.get("volumes", [])):
            errs.append(f"compose: {name}: no volume on /var/lib/keel")
    if ids != {"1", "2", "3"}:
        errs.append(f"compose: node ids {sorted(ids)}, want 1, 2, 3")


def check_unit(text, errs):
    keys = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    if not keys.get("ExecStart", "").startswith("/usr/bin/keel node"):
        errs.append("keel.service: ExecStart must run keel node")
    for k, v in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("KillSignal", "SIGTERM"),
                 ("PrivateTmp", "yes"), ("ProtectHome", "yes")):
        if keys.get(k) != v:
            errs.append(f"keel.service: {k}={v} missing")
    if "DynamicUser" not in keys and "User" not in keys:
        errs.append("keel.service: runs as root (no User= or DynamicUser=)")
    if "io_uring_setup" not in keys.get("SystemCallFilter", ""):
        errs.append("keel.service: SystemCallFilter without io_uring: keel would fall back to epoll")


def check_all(k8s, cfile, compose, unit, reads):
    errs = []
    check_k8s(k8s, reads, errs)
    check_containerfile(cfile, reads, errs)
    check_compose(compose, reads, errs)
    check_unit(unit, errs)
    return errs


def main():
    reads = env_the_image_reads()
    if len(reads) < 10:
        print(f"FAIL: found only {sorted(reads)} in cli/node_env.c's names[]")
        return 1
    k8s = [d for d in yaml.safe_load_all(read("deploy/k8s/keel.yaml")) if d]
    cfile = read("deploy/Containerfile")
    compose = yaml.safe_load(read("deploy/compose.yaml"))
    unit = read("deploy/keel.service")
    errs = check_all(k8s, cfile, compose, unit, reads)
    for e in errs:
        print("FAIL:", e)
    if errs:
        return 1
    print(f"ok: {len(k8s)} manifests, the Containerfile, the compose file and the unit agree "
          f"({len(reads)} variables the image reads)")

    # each broken copy must be refused
    def sts(d):
        return next(x for x in d if x["kind"] == "StatefulSet")

    def ctr(d):
        return sts(d)["spec"]["template"]["spec"]["containers"][0]

    def svc(d, name):
        return next(x for x in d if x["kind"] == "Service" and x["metadata"]["name"] == name)

    def set_env(d, n, v):
        for e in ctr(d)["env"]:
            if e["name"] == n:
                e["value"] = v

    breaks = [
        ("OrderedReady", lambda d: sts(d)["spec"].update(podManagementPolicy="OrderedReady")),
        ("probe on an undeclared port", lambda d: ctr(d)["readinessProbe"]["httpGet"].update(port="metrics")),
        ("liveness on /readyz", lambda d: ctr(d)["livenessProbe"]["httpGet"].update(path="/readyz")),
        ("selector matching no pod", lambda d: svc(d, "keel-client")["spec"].update(selector={"app": "other"})),
        ("headless service publishing only ready pods",
         lambda d: svc(d, "keel")["spec"].update(publishNotReadyAddresses=False)),
        ("PDB policy/v1beta1", lambda d: next(x for x in d if x["kind"] == "PodDisruptionBudget").update(
            apiVersion="policy/v1beta1")),
        ("misspelt variable", lambda d: ctr(d)["env"].append({"name": "KEEL_PEER", "value": "x"})),
        ("peer by the wrong DNS name", lambda d: set_env(d, "KEEL_PEERS", "1=keel-0.keel:7000,2=keel-1:7000,3=keel-2.keel:7000")),
        ("two replicas in three peers", lambda d: sts(d)["spec"].update(replicas=2)),
        ("no anti-affinity", lambda d: sts(d)["spec"]["template"]["spec"].pop("affinity")),
        ("claim not mounted", lambda d: ctr(d)["volumeMounts"].pop(0)),
    ]
    bad = 0
    for what, f in breaks:
        d = copy.deepcopy(k8s)
        f(d)
        if not check_all(d, cfile, compose, unit, reads):
            print(f"FAIL: the check accepts a broken manifest: {what}")
            bad += 1
    for what, text in (("root user", cfile.replace("USER 10001:10001", "USER root")),
                       ("single stage", re.sub(r"^FROM \$\{DEBIAN\} AS build.*?(?=^FROM)", "", cfile,
                                                flags=re.S | re.M))):
        if not check_all(k8s, text, compose, unit, reads):
            print(f"FAIL: the check accepts a broken Containerfile: {what}")
            bad += 1
    c2 = copy.deepcopy(compose)
    c2["services"]["keel2"]["environment"]["KEEL_NODE_ID"] = "1"
    if not check_all(k8s, cfile, c2, unit, reads):
        print("FAIL: the check accepts a compose file with two node 1s")
        bad += 1
    if not check_all(k8s, cfile, compose, unit.replace("NoNewPrivileges=yes", ""), reads):
        print("FAIL: the check accepts a unit without NoNewPrivileges")
        bad += 1
    if bad:
        return 1
    print(f"ok: {len(breaks) + 4} broken copies refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
