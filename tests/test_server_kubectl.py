"""Real kubectl (1.27, 1.30, 1.33) against a real ``edgectl server`` subprocess.

One server per module; each kubectl version works in its own namespace so the
parametrised runs do not see each other's objects.
"""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edgectl.server.testing import ServerProcess, kubectl_path

VERSIONS = ["1.27", "1.30", "1.33"]
pytestmark = pytest.mark.skipif(not kubectl_path("1.33").exists(), reason="kubectl binaries not installed")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("srv"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def ns_for(version: str, what: str) -> str:
    return f"{what}-{version.replace('.', '')}"


def make_ns(srv: ServerProcess, version: str, what: str) -> str:
    ns = ns_for(version, what)
    srv.kubectl(version, "create", "namespace", ns)
    return ns


POD = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web, tier: {tier}}}
spec:
  containers:
  - name: nginx
    image: {image}
    ports: [{{containerPort: 80}}, {{containerPort: 443, name: https}}]
    env: [{{name: A, value: "1"}}]
  - name: sidecar
    image: busybox:1.36
"""


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()]


@pytest.mark.parametrize("v", VERSIONS)
def test_get_apply_create_delete(srv: ServerProcess, v: str, tmp_path: Path) -> None:
    ns = make_ns(srv, v, "flow")
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD.format(tier="a", image="nginx:1.25"))
    assert "pod/web created" in srv.kubectl(v, "-n", ns, "apply", "-f", str(manifest)).stdout
    # Second apply: a three-way strategic merge patch (labels and an image change are allowed on pods).
    manifest.write_text(POD.format(tier="b", image="nginx:1.26"))
    assert "pod/web configured" in srv.kubectl(v, "-n", ns, "apply", "-f", str(manifest)).stdout
    assert "pod/web unchanged" in srv.kubectl(v, "-n", ns, "apply", "-f", str(manifest)).stdout

    table = rows(srv.kubectl(v, "-n", ns, "get", "pods").stdout)
    assert table[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert table[1][:4] == ["web", "0/2", "Pending", "0"]
    wide = rows(srv.kubectl(v, "-n", ns, "get", "pods", "-o", "wide").stdout)
    assert wide[0][5:] == ["IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]
    assert wide[1][5:] == ["<none>"] * 4

    obj = yaml.safe_load(srv.kubectl(v, "-n", ns, "get", "pod", "web", "-o", "yaml").stdout)
    assert obj["metadata"]["labels"] == {"app": "web", "tier": "b"}
    assert [c["image"] for c in obj["spec"]["containers"]] == ["nginx:1.26", "busybox:1.36"]
    assert obj["metadata"]["uid"] and obj["metadata"]["creationTimestamp"]
    last = json.loads(obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert last["metadata"]["labels"]["tier"] == "b"

    everywhere = srv.kubectl(v, "get", "pods", "-A").stdout
    assert any(r[:2] == [ns, "web"] for r in rows(everywhere))
    labels = rows(srv.kubectl(v, "-n", ns, "get", "pods", "--show-labels").stdout)
    assert labels[1][-1] == "app=web,tier=b"
    column = rows(srv.kubectl(v, "-n", ns, "get", "pods", "-L", "tier").stdout)
    assert column[0][-1] == "TIER" and column[1][-1] == "b"
    assert "web" in srv.kubectl(v, "-n", ns, "get", "pods", "-l", "app in (web,db),tier!=a").stdout
    assert "No resources found" in srv.kubectl(v, "-n", ns, "get", "pods", "-l", "app=nope").stderr
    json_list = json.loads(srv.kubectl(v, "-n", ns, "get", "pods", "-o", "json").stdout)
    assert json_list["kind"] == "List" and len(json_list["items"]) == 1

    srv.kubectl(v, "-n", ns, "create", "configmap", "cfg", "--from-literal=k=v")
    cm = rows(srv.kubectl(v, "-n", ns, "get", "cm").stdout)
    assert cm[1][:2] == ["cfg", "1"]
    assert "already exists" in srv.kubectl(v, "-n", ns, "create", "configmap", "cfg", check=False).stderr

    srv.kubectl(v, "-n", ns, "delete", "pod", "web")
    srv.kubectl(v, "-n", ns, "delete", "configmap", "cfg")
    gone = srv.kubectl(v, "-n", ns, "get", "pod", "web", check=False)
    assert gone.returncode != 0 and 'pods "web" not found' in gone.stderr


@pytest.mark.parametrize("v", VERSIONS)
def test_label_annotate_patch_describe(srv: ServerProcess, v: str) -> None:
    ns = make_ns(srv, v, "edit")
    srv.kubectl(v, "-n", ns, "apply", "-f", "-", input=POD.format(tier="a", image="nginx:1.25"))
    srv.kubectl(v, "-n", ns, "label", "pod", "web", "color=red")
    srv.kubectl(v, "-n", ns, "annotate", "pod", "web", "note=hello world")
    srv.kubectl(v, "-n", ns, "label", "pod", "web", "tier-")
    # Strategic merge: containers merge by name, ports by containerPort.
    srv.kubectl(v, "-n", ns, "patch", "pod", "web", "-p",
                '{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.37"}]}}')
    srv.kubectl(v, "-n", ns, "patch", "pod", "web", "--type", "merge", "-p", '{"metadata":{"labels":{"m":"1"}}}')
    srv.kubectl(v, "-n", ns, "patch", "pod", "web", "--type", "json",
                "-p", '[{"op":"replace","path":"/metadata/labels/color","value":"blue"}]')
    obj = json.loads(srv.kubectl(v, "-n", ns, "get", "pod", "web", "-o", "json").stdout)
    assert obj["metadata"]["labels"] == {"app": "web", "color": "blue", "m": "1"}
    assert obj["metadata"]["annotations"]["note"] == "hello world"
    assert [(c["name"], c["image"]) for c in obj["spec"]["containers"]] == [("nginx", "nginx:1.25"), ("sidecar", "busybox:1.37")]
    assert [p["containerPort"] for p in obj["spec"]["containers"][0]["ports"]] == [80, 443]
    bad = srv.kubectl(v, "-n", ns, "patch", "pod", "web", "--type", "json",
                      "-p", '[{"op":"test","path":"/metadata/name","value":"other"}]', check=False)
    assert bad.returncode != 0
    # Pod spec fields other than images are immutable, as upstream.
    frozen = srv.kubectl(v, "-n", ns, "patch", "pod", "web", "-p", '{"spec":{"restartPolicy":"Never"}}', check=False)
    assert frozen.returncode != 0 and "spec: Forbidden" in frozen.stderr

    # kubectl edit, with a non-interactive editor.
    editor = {"KUBE_EDITOR": "sed -i -e s/color:\\ blue/color:\\ green/"}
    srv.kubectl(v, "-n", ns, "edit", "pod", "web", env=editor)
    assert srv.kubectl(v, "-n", ns, "get", "pod", "web", "-o", "jsonpath={.metadata.labels.color}").stdout == "green"
    srv.kubectl(v, "-n", ns, "label", "pod", "web", "color=blue", "--overwrite")

    described = srv.kubectl(v, "-n", ns, "describe", "pod", "web").stdout
    assert "Name:" in described and "web" in described and "busybox:1.37" in described and "color=blue" in described

    node = f"node-{v.replace('.', '')}"
    srv.kubectl(v, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node, "labels": {"node-role.kubernetes.io/edge": ""}},
    }))
    code, _ = srv.json("PATCH", f"/api/v1/nodes/{node}/status", {"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok",
                        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "addresses": [{"type": "InternalIP", "address": "198.18.0.10"}],
        "nodeInfo": {"kubeletVersion": "v1.31.0-edgectl", "osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1.0",
                     "containerRuntimeVersion": "edgectl://0.1", "architecture": "amd64", "operatingSystem": "linux"}}},
        headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert code == 200
    nodes = rows(srv.kubectl(v, "get", "nodes", "-o", "wide").stdout)
    mine = next(r for r in nodes if r[0] == node)
    assert mine[1:3] == ["Ready", "edge"] and "198.18.0.10" in mine
    assert "Debian GNU/Linux 12" in srv.kubectl(v, "describe", "node", node).stdout
    srv.kubectl(v, "delete", "node", node)


@pytest.mark.parametrize("v", VERSIONS)
def test_get_watch_sees_changes_from_another_process(srv: ServerProcess, v: str) -> None:
    ns = make_ns(srv, v, "watch")
    srv.kubectl(v, "-n", ns, "create", "configmap", "before")
    cmd = [str(kubectl_path(v)), "--kubeconfig", str(srv.kubeconfig), "--cache-dir", str(srv.workdir / f"cache-{v}"),
           "-n", ns, "get", "configmaps", "-w", "--request-timeout=0"]
    watcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        srv.kubectl(v, "-n", ns, "create", "configmap", "during", "--from-literal=a=b")
        srv.kubectl(v, "-n", ns, "label", "configmap", "during", "x=y")
        srv.kubectl(v, "-n", ns, "delete", "configmap", "before")
        time.sleep(1.0)
    finally:
        watcher.terminate()
        out, err = watcher.communicate(timeout=10)
    names = [r[0] for r in rows(out)]
    assert names[0] == "NAME"
    assert "before" in names and names.count("during") >= 2, (out, err)


NETPOL = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: full
  labels: {team: net}
spec:
  podSelector:
    matchLabels: {app: db}
    matchExpressions:
    - {key: tier, operator: In, values: [backend, cache]}
    - {key: legacy, operator: DoesNotExist}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
      namespaceSelector: {matchLabels: {env: prod}}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.0.0/16]}
    ports:
    - {protocol: TCP, port: 5432}
    - {protocol: UDP, port: 53, endPort: 60}
    - {protocol: SCTP, port: metrics}
  egress:
  - to:
    - namespaceSelector: {matchExpressions: [{key: name, operator: NotIn, values: [kube-system]}]}
    - ipBlock: {cidr: "2001:db8::/32", except: ["2001:db8:1::/48"]}
    ports:
    - {port: 443}
"""

BAD_POLICIES = [
    ("spec:\n  podSelector: {matchExpressions: [{key: a, operator: Foo}]}",
     "spec.podSelector.matchExpressions[0].operator"),
    ("spec:\n  podSelector: {}\n  ingress: [{ports: [{protocol: ICMP, port: 80}]}]", "spec.ingress[0].ports[0].protocol"),
    ("spec:\n  podSelector: {}\n  ingress: [{ports: [{port: 80, endPort: 70}]}]", "spec.ingress[0].ports[0].endPort"),
    ("spec:\n  podSelector: {}\n  ingress: [{ports: [{port: 70000}]}]", "spec.ingress[0].ports[0].port"),
    ("spec:\n  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}]}]",
     "spec.egress[0].to[0].ipBlock.except[0]"),
    ("spec:\n  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.300/8}}]}]", "spec.egress[0].to[0].ipBlock.cidr"),
    ("spec:\n  podSelector: {}\n  ingress: [{from: [{}]}]", "spec.ingress[0].from[0]"),
    ("spec:\n  podSelector: {}\n  policyTypes: [Sideways]", "spec.policyTypes[0]"),
    ("spec:\n  podSelector: {matchExpressions: [{key: a, operator: In}]}", "spec.podSelector.matchExpressions[0].values"),
]


@pytest.mark.parametrize("v", VERSIONS)
def test_networkpolicy_every_field_and_invalid(srv: ServerProcess, v: str) -> None:
    ns = make_ns(srv, v, "netpol")
    assert "created" in srv.kubectl(v, "-n", ns, "apply", "-f", "-", input=NETPOL).stdout
    rv = srv.kubectl(v, "-n", ns, "get", "netpol", "full", "-o", "jsonpath={.metadata.resourceVersion}").stdout
    # Re-applying changes nothing (older kubectl sends a no-op patch and says "configured").
    second = srv.kubectl(v, "-n", ns, "apply", "-f", "-", input=NETPOL).stdout
    assert "unchanged" in second or "configured" in second
    assert srv.kubectl(v, "-n", ns, "get", "netpol", "full", "-o", "jsonpath={.metadata.resourceVersion}").stdout == rv
    table = rows(srv.kubectl(v, "-n", ns, "get", "netpol").stdout)
    assert table[0] == ["NAME", "POD-SELECTOR", "AGE"]
    assert table[1][:2] == ["full", "app=db,tier"]  # "app=db,tier in (backend,cache),!legacy"
    stored = json.loads(srv.kubectl(v, "-n", ns, "get", "networkpolicy", "full", "-o", "json").stdout)
    want = yaml.safe_load(NETPOL)["spec"]
    assert stored["spec"]["ingress"][0]["from"] == want["ingress"][0]["from"]
    assert stored["spec"]["egress"][0]["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert stored["spec"]["ingress"][0]["ports"][1] == {"protocol": "UDP", "port": 53, "endPort": 60}
    for spec, field in BAD_POLICIES:
        doc = f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bad}}\n{spec}\n"
        out = srv.kubectl(v, "-n", ns, "apply", "-f", "-", input=doc, check=False)
        assert out.returncode != 0, spec
        assert field in out.stderr and "is invalid" in out.stderr, (field, out.stderr)
    assert "NotFound" in srv.kubectl(v, "-n", ns, "get", "netpol", "bad", check=False).stderr


@pytest.mark.parametrize("v", VERSIONS)
def test_apply_validate_strict_rejects_unknown_fields(srv: ServerProcess, v: str) -> None:
    ns = make_ns(srv, v, "strict")
    good = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\ndata: {a: b}\n"
    srv.kubectl(v, "-n", ns, "apply", "--validate=strict", "-f", "-", input=good)
    bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo}\ndta: {a: b}\n"
    out = srv.kubectl(v, "-n", ns, "apply", "--validate=strict", "-f", "-", input=bad, check=False)
    assert out.returncode != 0 and 'unknown field "dta"' in out.stderr
    assert srv.kubectl(v, "-n", ns, "get", "cm", "typo", check=False).returncode != 0
    # --validate=false (Ignore) drops the unknown field, as upstream does.
    srv.kubectl(v, "-n", ns, "apply", "--validate=false", "-f", "-", input=bad)
    stored = json.loads(srv.kubectl(v, "-n", ns, "get", "cm", "typo", "-o", "json").stdout)
    assert "dta" not in stored


def test_events_leases_services_tables(srv: ServerProcess) -> None:
    v = "1.33"
    ns = make_ns(srv, v, "tables")
    srv.kubectl(v, "-n", ns, "create", "service", "clusterip", "api", "--tcp=80:8080")
    srv.kubectl(v, "-n", ns, "create", "service", "nodeport", "np", "--tcp=81:8081")
    svc = rows(srv.kubectl(v, "-n", ns, "get", "svc").stdout)
    assert svc[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    api = next(r for r in svc if r[0] == "api")
    assert api[1] == "ClusterIP" and api[2].startswith("10.43.") and api[4] == "80/TCP"
    np_ = next(r for r in svc if r[0] == "np")
    assert np_[4].startswith("81:3") and np_[4].endswith("/TCP")
    srv.json("POST", f"/api/v1/namespaces/{ns}/events", {
        "metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "web", "namespace": ns},
        "reason": "Testing", "message": "hello", "type": "Normal", "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z", "source": {"component": "t"}})
    ev = rows(srv.kubectl(v, "-n", ns, "get", "events").stdout)
    assert ev[0][:5] == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT"]
    assert ev[1][1:5] == ["Normal", "Testing", "pod/web", "hello"]
    srv.json("POST", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
             {"metadata": {"name": "l1"}, "spec": {"holderIdentity": "me", "leaseDurationSeconds": 40}})
    assert rows(srv.kubectl(v, "-n", ns, "get", "leases").stdout)[1][:2] == ["l1", "me"]
    assert srv.kubectl(v, "auth", "can-i", "create", "pods").stdout.strip() == "yes"
    assert "Kubernetes control plane is running" in srv.kubectl(v, "cluster-info").stdout
    short = srv.kubectl(v, "get", "po,no,ns,netpol,svc,ep,cm,ev", "-A").stdout
    assert "namespace/" in short and "service/" in short


def test_namespace_delete_cascades(srv: ServerProcess) -> None:
    v = "1.33"
    ns = make_ns(srv, v, "doomed")
    srv.kubectl(v, "-n", ns, "create", "configmap", "c")
    srv.kubectl(v, "-n", ns, "apply", "-f", "-", input=NETPOL)
    srv.kubectl(v, "delete", "namespace", ns, "--timeout=20s")
    assert srv.kubectl(v, "get", "ns", ns, check=False).returncode != 0
    code, body = srv.json("GET", f"/api/v1/namespaces/{ns}/configmaps")
    assert code == 200 and body["items"] == []
    # Recreating the namespace does not resurrect old content.
    srv.kubectl(v, "create", "namespace", ns)
    assert srv.json("GET", f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies")[1]["items"] == []
    protected = srv.kubectl(v, "delete", "namespace", "kube-system", check=False)
    assert protected.returncode != 0 and "may not be deleted" in protected.stderr


def test_pod_streams_without_tunnel_answer_503(srv: ServerProcess) -> None:
    v = "1.33"
    ns = make_ns(srv, v, "streams")
    srv.json("POST", f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "bound"}, "spec": {"nodeName": "faraway", "containers": [{"name": "c", "image": "busybox"}]}})
    logs = srv.kubectl(v, "-n", ns, "logs", "bound", check=False)
    assert logs.returncode != 0 and "node tunnel not connected" in logs.stderr
    # A bound pod is deleted gracefully (the kubelet confirms); grace 0 removes it.
    code, obj = srv.json("DELETE", f"/api/v1/namespaces/{ns}/pods/bound")
    assert code == 200 and obj["metadata"]["deletionTimestamp"]
    assert "Terminating" in srv.kubectl(v, "-n", ns, "get", "pods").stdout
    code, _ = srv.json("DELETE", f"/api/v1/namespaces/{ns}/pods/bound", {"gracePeriodSeconds": 0})
    assert code == 200
    assert srv.json("GET", f"/api/v1/namespaces/{ns}/pods/bound")[0] == 404


@pytest.mark.parametrize("v", ["1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33"])
def test_smoke_every_kubectl_version(srv: ServerProcess, v: str) -> None:
    ns = make_ns(srv, v, "smoke")  # typed create: protobuf body from 1.32 on
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\ndata: {a: b}\n"
    assert "created" in srv.kubectl(v, "-n", ns, "apply", "-f", "-", input=cm).stdout
    assert "configured" in srv.kubectl(v, "-n", ns, "apply", "-f", "-", input=cm.replace("a: b", "a: c")).stdout
    srv.kubectl(v, "-n", ns, "create", "secret", "generic", "sec", "--from-literal=k=v")
    srv.kubectl(v, "-n", ns, "create", "service", "clusterip", "svc", "--tcp=80:8080")
    srv.kubectl(v, "-n", ns, "create", "serviceaccount", "sa")
    out = srv.kubectl(v, "-n", ns, "get", "cm,secret,svc,sa", "-o", "name").stdout.split()
    assert {"configmap/s", "secret/sec", "service/svc", "serviceaccount/sa"} <= set(out)
    assert srv.kubectl(v, "-n", ns, "get", "secret", "sec", "-o", "jsonpath={.data.k}").stdout == "dg=="
    assert srv.kubectl(v, "-n", ns, "get", "svc", "svc", "-o", "jsonpath={.spec.ports[0].targetPort}").stdout == "8080"
    srv.kubectl(v, "delete", "namespace", ns, "--timeout=20s")
    assert "Server Version" in srv.kubectl(v, "version").stdout
    assert srv.kubectl(v, "auth", "can-i", "delete", "nodes").stdout.strip() == "yes"
