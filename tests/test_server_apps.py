"""apps/v1 Deployments, ReplicaSets, DaemonSets and ownerReference garbage
collection, driven by real kubectl against a real ``edgectl server --disable-agent``.

Three Node objects stand in for machines; ``FakeKubelet`` (a thread speaking
the node-facing API calls a kubelet makes) marks their pods Running and Ready
and completes graceful deletions. Pods whose first container image contains
``never-ready`` stay Pending, which is how a rollout is made to stall.
Everything is polled with generous timeouts; nothing asserts on timing.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgectl.server.testing import MERGE_PATCH, PaperKubelet, ServerProcess, kubectl_path, poll
from edgectl.server.testing import get_ok as get

V = "1.33"
OLD = "1.27"
NODES = ("apps-n1", "apps-n2", "apps-n3")
pytestmark = pytest.mark.skipif(not kubectl_path(V).exists() or not kubectl_path(OLD).exists(),
                                reason="kubectl binaries not installed")


class FakeKubelet(PaperKubelet):
    """Runs (on paper) the pods bound to NODES: Ready unless the image says
    never-ready; graceful deletions are confirmed with gracePeriodSeconds=0."""

    def __init__(self, srv: ServerProcess) -> None:
        super().__init__(srv, set(NODES), name="apps-fake-kubelet")

    def advance(self, pod: dict[str, Any], path: str) -> None:
        spec = pod["spec"]
        if "never-ready" in spec["containers"][0]["image"] or pod.get("status", {}).get("phase") == "Running":
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conds = [{"type": t, "status": "True", "lastTransitionTime": now}
                 for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
        statuses = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "restartCount": 0,
                     "started": True, "state": {"running": {"startedAt": now}}} for c in spec["containers"]]
        self.srv.request("PATCH", path + "/status", {"status": {
            "phase": "Running", "conditions": conds, "containerStatuses": statuses, "podIP": "10.42.0.9"}},
            headers=MERGE_PATCH, fresh=True)


def add_node(srv: ServerProcess, name: str, labels: dict[str, str], taints: list[dict[str, str]] | None = None) -> None:
    node: dict[str, Any] = {"metadata": {"name": name, "labels": labels}, "spec": {}}
    if taints:
        node["spec"]["taints"] = taints
    assert srv.json("POST", "/api/v1/nodes", node)[0] == 201
    code, body = srv.json("PATCH", f"/api/v1/nodes/{name}/status", {"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]}},
        headers=MERGE_PATCH)
    assert code == 200, body
    # A renewal far in the future keeps the node lifecycle controller from
    # declaring these kubelet-less nodes NotReady during the module.
    code, body = srv.json("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
        "metadata": {"name": name}, "spec": {"holderIdentity": name, "renewTime": "2099-01-01T00:00:00Z"}})
    assert code == 201, body


KUBELET: list[FakeKubelet] = []


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("apps"))
    kubelet: FakeKubelet | None = None
    try:
        server.start()
        add_node(server, "apps-n1", {"edge": "yes", "zone": "a"})
        add_node(server, "apps-n2", {"edge": "yes", "zone": "b"})
        add_node(server, "apps-n3", {"edge": "yes", "zone": "c"}, [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])
        kubelet = FakeKubelet(server)
        kubelet.start()
        KUBELET[:] = [kubelet]
        yield server
    finally:
        if kubelet is not None:
            kubelet.halt.set()
            kubelet.join(5)
        server.stop()


def items(srv: ServerProcess, path: str) -> list[dict[str, Any]]:
    return get(srv, path)["items"]


def kubectl_json(srv: ServerProcess, *args: str) -> Any:
    return json.loads(srv.kubectl(V, *args, "-o", "json").stdout)


def owned_by(objs: list[dict[str, Any]], owner: dict[str, Any]) -> list[dict[str, Any]]:
    uid = owner["metadata"]["uid"]
    return [o for o in objs if any(r["uid"] == uid and r.get("controller") for r in o["metadata"].get("ownerReferences") or [])]


def apps(ns: str, plural: str) -> str:
    return f"/apis/apps/v1/namespaces/{ns}/{plural}"


def pods(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}/pods"


# --- discovery and tables ------------------------------------------------------------


def test_discovery_lists_apps_with_short_names_and_scale(srv: ServerProcess) -> None:
    out = srv.kubectl(V, "api-resources", "--api-group=apps").stdout
    rows = {line.split()[0]: line.split() for line in out.strip().splitlines()[1:]}
    assert rows["deployments"][1:4] == ["deploy", "apps/v1", "true"]
    assert rows["replicasets"][1] == "rs" and rows["daemonsets"][1] == "ds"
    doc = get(srv, "/apis/apps/v1")
    scale = next(r for r in doc["resources"] if r["name"] == "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert "all" in next(r for r in doc["resources"] if r["name"] == "daemonsets")["categories"]


# --- Deployment: create, scale, rollout ---------------------------------------------


def test_create_deployment_scale_and_rollout_status(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "namespace", "app1")
    out = srv.kubectl(V, "-n", "app1", "create", "deployment", "web", "--image=busybox:1.36", "--", "sleep", "3600")
    assert "deployment.apps/web created" in out.stdout
    deploy = get(srv, apps("app1", "deployments") + "/web")
    spec = deploy["spec"]
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    assert spec["template"]["spec"]["restartPolicy"] == "Always"

    rs = poll("a ReplicaSet", lambda: owned_by(items(srv, apps("app1", "replicasets")), deploy))[0]
    ref = rs["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["controller"], ref["blockOwnerDeletion"]) == ("Deployment", "web", True, True)
    h = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{h}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h}
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    pod = poll("a pod", lambda: owned_by(items(srv, pods("app1")), rs))[0]
    assert pod["metadata"]["name"].startswith(f"web-{h}-") and len(pod["metadata"]["name"]) == len(f"web-{h}-") + 5
    assert pod["spec"]["containers"][0]["command"] == ["sleep", "3600"]
    assert pod["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True

    out = srv.kubectl(V, "-n", "app1", "scale", "deployment/web", "--replicas=3")
    assert "deployment.apps/web scaled" in out.stdout
    out = srv.kubectl(V, "-n", "app1", "rollout", "status", "deployment/web", "--timeout=90s", timeout=100)
    assert 'deployment "web" successfully rolled out' in out.stdout
    out = srv.kubectl(V, "-n", "app1", "wait", "--for=condition=Available", "deployment/web", "--timeout=60s", timeout=70)
    assert "condition met" in out.stdout
    scale = get(srv, apps("app1", "deployments") + "/web/scale")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert "app=web" in scale["status"]["selector"]
    running = [p for p in items(srv, pods("app1")) if not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 3 and all(p["spec"].get("nodeName") in NODES for p in running)
    d = get(srv, apps("app1", "deployments") + "/web")
    conds = {c["type"]: c for c in d["status"]["conditions"]}
    assert conds["Available"]["status"] == "True" and conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert d["status"]["readyReplicas"] == 3 and d["status"]["observedGeneration"] == d["metadata"]["generation"]

    table = srv.kubectl(V, "-n", "app1", "get", "deploy,rs", "-o", "wide").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert table[1].split()[:4] == ["deployment.apps/web", "3/3", "3", "3"]
    assert table[1].split()[5:7] == ["busybox", "busybox:1.36"]
    rs_header = next(i for i, line in enumerate(table) if line.startswith("NAME") and i > 0)
    assert table[rs_header].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert table[rs_header + 1].split()[:4] == [f"replicaset.apps/web-{h}", "3", "3", "3"]
    # What the controllers did shows up as Events in describe.
    described = srv.kubectl(V, "-n", "app1", "describe", "deployment", "web").stdout
    assert f"Scaled up replica set web-{h} from 1 to 3" in described and "ScalingReplicaSet" in described, described
    described = srv.kubectl(V, "-n", "app1", "describe", "rs", f"web-{h}").stdout
    assert "SuccessfulCreate" in described and f"Created pod: {pod['metadata']['name']}" in described, described
    # The oldest supported kubectl prints the same table.
    old = srv.kubectl(OLD, "-n", "app1", "get", "deployments").stdout.splitlines()
    assert old[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"] and old[1].split()[:2] == ["web", "3/3"]

    # Scaling down (kubectl 1.27 this time) removes pods and keeps the ReplicaSet.
    assert "scaled" in srv.kubectl(OLD, "-n", "app1", "scale", "deployment/web", "--replicas=1").stdout
    poll("one pod left", lambda: len([p for p in items(srv, pods("app1")) if not p["metadata"].get("deletionTimestamp")]) == 1)
    assert len(items(srv, apps("app1", "replicasets"))) == 1


DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: roll}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: roll}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}}}
  template:
    metadata: {{labels: {{app: roll}}}}
    spec:
      containers:
      - name: main
        image: {image}
        command: [sleep, "3600"]
"""


def test_template_change_rolls_within_max_unavailable(srv: ServerProcess, tmp_path: Path) -> None:
    srv.kubectl(V, "create", "namespace", "app2")
    manifest = tmp_path / "d.yaml"
    manifest.write_text(DEPLOY.format(image="busybox:1.36"))
    srv.kubectl(V, "-n", "app2", "apply", "-f", str(manifest))
    srv.kubectl(V, "-n", "app2", "rollout", "status", "deployment/roll", "--timeout=90s", timeout=100)
    first = items(srv, apps("app2", "replicasets"))[0]

    # A template whose pods never become ready: the rollout must stop at
    # maxSurge 1 / maxUnavailable 1, leaving 3 of 4 old pods available.
    manifest.write_text(DEPLOY.format(image="example/never-ready:1"))
    srv.kubectl(V, "-n", "app2", "apply", "-f", str(manifest))

    def stalled() -> Any:
        rss = {r["metadata"]["name"]: r for r in items(srv, apps("app2", "replicasets"))}
        new = [r for n, r in rss.items() if n != first["metadata"]["name"]]
        old = rss.get(first["metadata"]["name"])
        if len(new) == 1 and old and new[0]["spec"]["replicas"] == 2 and old["spec"]["replicas"] == 3:
            return new[0], old
        return None

    new, old = poll("the rollout to stall at surge/unavailable limits", stalled)
    assert new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    time.sleep(2)  # stays there: more passes must not scale the old set below 3
    assert stalled() is not None
    old = get(srv, apps("app2", "replicasets") + "/" + old["metadata"]["name"])
    assert old["status"]["availableReplicas"] == 3
    d = get(srv, apps("app2", "deployments") + "/roll")
    assert d["status"]["updatedReplicas"] == 2 and d["status"]["availableReplicas"] == 3
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"

    # Scaled while stalled: both ReplicaSets take their share (proportional
    # scaling), so the old, serving one grows too; and shrink again the same way.
    srv.kubectl(V, "-n", "app2", "scale", "deployment/roll", "--replicas=8")

    def sizes() -> tuple[int, int]:
        rss = {r["metadata"]["name"]: r["spec"]["replicas"] for r in items(srv, apps("app2", "replicasets"))}
        return rss[first["metadata"]["name"]], rss[new["metadata"]["name"]]

    poll("old 5 / new 4 after scaling to 8 (+1 surge)", lambda: sizes() == (5, 4))
    srv.kubectl(V, "-n", "app2", "scale", "deployment/roll", "--replicas=4")
    poll("old 3 / new 2 after scaling back to 4", lambda: sizes() == (3, 2))
    time.sleep(1.5)  # and the stalled shape holds
    assert sizes() == (3, 2)

    # Back to the first template: its ReplicaSet is reused as revision 3 and the rollout completes.
    manifest.write_text(DEPLOY.format(image="busybox:1.36"))
    srv.kubectl(V, "-n", "app2", "apply", "-f", str(manifest))
    out = srv.kubectl(V, "-n", "app2", "rollout", "status", "deployment/roll", "--timeout=90s", timeout=100)
    assert "successfully rolled out" in out.stdout
    rss = {r["metadata"]["name"]: r for r in items(srv, apps("app2", "replicasets"))}
    back = rss[first["metadata"]["name"]]
    assert back["spec"]["replicas"] == 4 and back["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert rss[new["metadata"]["name"]]["spec"]["replicas"] == 0
    history = srv.kubectl(V, "-n", "app2", "rollout", "history", "deployment/roll").stdout
    assert "2" in history and "3" in history


def test_recreate_strategy_replaces_all_pods(srv: ServerProcess, tmp_path: Path) -> None:
    srv.kubectl(V, "create", "namespace", "app3")
    srv.kubectl(V, "-n", "app3", "create", "deployment", "rec", "--image=busybox:1.36", "--replicas=2", "--", "sleep", "3600")
    srv.kubectl(V, "-n", "app3", "patch", "deployment", "rec", "-p",
                '{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}')
    srv.kubectl(V, "-n", "app3", "rollout", "status", "deployment/rec", "--timeout=90s", timeout=100)
    first = items(srv, apps("app3", "replicasets"))
    KUBELET[0].hold.add("app3")  # old pods stay Terminating until released
    try:
        srv.kubectl(V, "-n", "app3", "set", "image", "deployment/rec", "busybox=busybox:1.37")
        poll("the old pods to be terminating", lambda: (ps := items(srv, pods("app3")))
             and all(p["metadata"].get("deletionTimestamp") for p in ps))
        time.sleep(1)  # more passes: still no new ReplicaSet while old pods exist
        assert [r["metadata"]["name"] for r in items(srv, apps("app3", "replicasets"))] == [first[0]["metadata"]["name"]]
    finally:
        KUBELET[0].hold.discard("app3")
    srv.kubectl(V, "-n", "app3", "rollout", "status", "deployment/rec", "--timeout=90s", timeout=100)
    live = [p for p in items(srv, pods("app3")) if not p["metadata"].get("deletionTimestamp")]
    assert sorted(p["spec"]["containers"][0]["image"] for p in live) == ["busybox:1.37", "busybox:1.37"]
    # rollout undo (kubectl copies the previous ReplicaSet's template back) returns to 1.36 as revision 3.
    srv.kubectl(V, "-n", "app3", "rollout", "undo", "deployment/rec")
    srv.kubectl(V, "-n", "app3", "rollout", "status", "deployment/rec", "--timeout=90s", timeout=100)
    poll("the old image back", lambda: sorted(p["spec"]["containers"][0]["image"] for p in items(srv, pods("app3"))
                                               if not p["metadata"].get("deletionTimestamp")) == ["busybox:1.36"] * 2)
    d = get(srv, apps("app3", "deployments") + "/rec")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert get(srv, apps("app3", "replicasets") + "/" + first[0]["metadata"]["name"])["spec"]["replicas"] == 2


def test_replicaset_adopts_orphans_and_prefers_deleting_unready(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "namespace", "app4")
    for name, image in (("stray-ready", "busybox:1.36"), ("stray-pending", "example/never-ready:1")):
        code, body = srv.json("POST", pods("app4"), {"metadata": {"name": name, "labels": {"app": "rs1"}},
                                                      "spec": {"containers": [{"name": "c", "image": image, "command": ["sleep", "1"]}]}})
        assert code == 201, body
    poll("the ready stray to run", lambda: get(srv, pods("app4") + "/stray-ready").get("status", {}).get("phase") == "Running")
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs1"},
          "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "rs1"}},
                   "template": {"metadata": {"labels": {"app": "rs1"}},
                                "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "9"]}]}}}}
    code, body = srv.json("POST", apps("app4", "replicasets"), rs)
    assert code == 201, body
    # Both strays are adopted; the surplus one deleted is the one that is not ready.
    poll("the unready stray to be deleted", lambda: "stray-pending" not in {p["metadata"]["name"] for p in items(srv, pods("app4"))})
    left = items(srv, pods("app4"))
    assert [p["metadata"]["name"] for p in left] == ["stray-ready"]
    assert left[0]["metadata"]["ownerReferences"][0]["name"] == "rs1"
    rs1 = poll("rs status", lambda: (r := get(srv, apps("app4", "replicasets") + "/rs1"))["status"].get("readyReplicas") == 1 and r)
    assert rs1["status"]["replicas"] == 1 and rs1["status"]["fullyLabeledReplicas"] == 1
    assert rs1["status"]["observedGeneration"] == 1


# --- DaemonSet --------------------------------------------------------------------------

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      {extra}
      containers:
      - name: main
        image: {image}
        command: [sleep, "3600"]
"""


def ds_pods(srv: ServerProcess, ns: str, name: str) -> list[dict[str, Any]]:
    return [p for p in items(srv, pods(ns)) if p["metadata"]["labels"].get("app") == name
            and not p["metadata"].get("deletionTimestamp")]


def test_daemonset_one_pod_per_eligible_node(srv: ServerProcess, tmp_path: Path) -> None:
    srv.kubectl(V, "create", "namespace", "ds1")
    f = tmp_path / "ds.yaml"
    # Everywhere it is allowed: the tainted apps-n3 is skipped.
    f.write_text(DS.format(name="all", extra="", image="busybox:1.36"))
    srv.kubectl(V, "-n", "ds1", "apply", "-f", str(f))
    out = srv.kubectl(V, "-n", "ds1", "rollout", "status", "daemonset/all", "--timeout=90s", timeout=100)
    assert 'daemon set "all" successfully rolled out' in out.stdout
    placed = ds_pods(srv, "ds1", "all")
    assert sorted(p["spec"]["nodeName"] for p in placed) == ["apps-n1", "apps-n2"]
    tol = {(t["key"], t["effect"]) for t in placed[0]["spec"]["tolerations"]}
    assert {("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
            ("node.kubernetes.io/unschedulable", "NoSchedule")} <= tol
    assert placed[0]["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
    st = get(srv, apps("ds1", "daemonsets") + "/all")["status"]
    assert (st["desiredNumberScheduled"], st["currentNumberScheduled"], st["numberReady"], st["numberAvailable"]) == (2, 2, 2, 2)

    # nodeSelector narrows it; a toleration opens the tainted node.
    f.write_text(DS.format(name="zone-a", extra="nodeSelector: {zone: a}", image="busybox:1.36"))
    srv.kubectl(V, "-n", "ds1", "apply", "-f", str(f))
    f.write_text(DS.format(name="db", extra="tolerations: [{key: dedicated, operator: Exists}]", image="busybox:1.36"))
    srv.kubectl(V, "-n", "ds1", "apply", "-f", str(f))
    poll("zone-a on apps-n1", lambda: [p["spec"]["nodeName"] for p in ds_pods(srv, "ds1", "zone-a")] == ["apps-n1"])
    poll("db on all three nodes", lambda: sorted(p["spec"]["nodeName"] for p in ds_pods(srv, "ds1", "db")) == list(NODES))
    srv.kubectl(V, "-n", "ds1", "rollout", "status", "daemonset/db", "--timeout=90s", timeout=100)

    table = srv.kubectl(V, "-n", "ds1", "get", "ds").stdout.splitlines()
    assert table[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE", "SELECTOR", "AGE"]
    row = next(line.split() for line in table if line.startswith("zone-a"))
    assert row[1:7] == ["1", "1", "1", "1", "1", "zone=a"]

    # A template change rolls node by node to pods with the new revision hash.
    old_hash = ds_pods(srv, "ds1", "all")[0]["metadata"]["labels"]["controller-revision-hash"]
    f.write_text(DS.format(name="all", extra="", image="busybox:1.37"))
    srv.kubectl(V, "-n", "ds1", "apply", "-f", str(f))
    srv.kubectl(V, "-n", "ds1", "rollout", "status", "daemonset/all", "--timeout=90s", timeout=100)
    placed = ds_pods(srv, "ds1", "all")
    assert sorted(p["spec"]["nodeName"] for p in placed) == ["apps-n1", "apps-n2"]
    assert {p["metadata"]["labels"]["controller-revision-hash"] for p in placed} != {old_hash}
    assert {p["spec"]["containers"][0]["image"] for p in placed} == {"busybox:1.37"}

    # Each template is a ControllerRevision: history lists both, undo goes back.
    revs = sorted(items(srv, apps("ds1", "controllerrevisions")), key=lambda r: r["revision"])
    revs = [r for r in revs if r["metadata"]["ownerReferences"][0]["name"] == "all"]
    assert [r["revision"] for r in revs] == [1, 2] and revs[0]["metadata"]["name"] == f"all-{old_hash}"
    history = srv.kubectl(V, "-n", "ds1", "rollout", "history", "daemonset/all").stdout
    assert [line.split()[0] for line in history.strip().splitlines()[2:]] == ["1", "2"], history
    srv.kubectl(V, "-n", "ds1", "rollout", "undo", "daemonset/all")
    srv.kubectl(V, "-n", "ds1", "rollout", "status", "daemonset/all", "--timeout=90s", timeout=100)
    poll("the old template back on both nodes", lambda: sorted(
        (p["spec"]["nodeName"], p["spec"]["containers"][0]["image"]) for p in ds_pods(srv, "ds1", "all"))
        == [("apps-n1", "busybox:1.36"), ("apps-n2", "busybox:1.36")])
    revs = {r["metadata"]["name"]: r["revision"] for r in items(srv, apps("ds1", "controllerrevisions"))}
    assert revs[f"all-{old_hash}"] == 3
    table = srv.kubectl(V, "-n", "ds1", "get", "controllerrevisions").stdout.splitlines()
    assert table[0].split() == ["NAME", "CONTROLLER", "REVISION", "AGE"]
    assert [f"all-{old_hash}", "daemonset.apps/all", "3"] in [line.split()[:3] for line in table], table
    # Deleting the DaemonSet takes its pods and its history with it.
    srv.kubectl(V, "-n", "ds1", "delete", "daemonset", "all")
    poll("the daemon pods and revisions to go", lambda: not [p for p in items(srv, pods("ds1")) if p["metadata"]["labels"]["app"] == "all"]
         and not [r for r in items(srv, apps("ds1", "controllerrevisions")) if r["metadata"]["name"].startswith("all-")])


# --- garbage collection ------------------------------------------------------------------


def test_delete_background_orphan_foreground(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "namespace", "gc1")
    for name in ("bg", "orph", "fg"):
        srv.kubectl(V, "-n", "gc1", "create", "deployment", name, "--image=busybox:1.36", "--replicas=2", "--", "sleep", "3600")
    for name in ("bg", "orph", "fg"):
        srv.kubectl(V, "-n", "gc1", "rollout", "status", f"deployment/{name}", "--timeout=90s", timeout=100)

    def live(app: str) -> list[dict[str, Any]]:
        return [p for p in items(srv, pods("gc1")) if p["metadata"]["labels"].get("app") == app]

    def rs_of(app: str) -> list[dict[str, Any]]:
        return [r for r in items(srv, apps("gc1", "replicasets")) if r["metadata"]["labels"].get("app") == app]

    # Background (kubectl's default): the deployment goes at once, the collector takes the rest.
    srv.kubectl(V, "-n", "gc1", "delete", "deployment", "bg")
    poll("bg's replicaset and pods to go", lambda: not rs_of("bg") and not live("bg"))

    # Orphan: the ReplicaSet stays, without its owner reference; its pods stay.
    srv.kubectl(V, "-n", "gc1", "delete", "deployment", "orph", "--cascade=orphan")
    assert srv.json("GET", apps("gc1", "deployments") + "/orph")[0] == 404
    rs = rs_of("orph")
    assert len(rs) == 1 and not rs[0]["metadata"].get("ownerReferences")
    assert len(live("orph")) == 2
    # Then the orphaned ReplicaSet itself, orphaning its pods: no owner references left.
    srv.kubectl(V, "-n", "gc1", "delete", "rs", rs[0]["metadata"]["name"], "--cascade=orphan")
    left = live("orph")
    assert len(left) == 2 and all(not p["metadata"].get("ownerReferences") for p in left)
    time.sleep(1)  # nothing comes to delete them
    assert len(live("orph")) == 2

    # Foreground: kubectl waits until the deployment is gone, which is only after its pods are.
    srv.kubectl(V, "-n", "gc1", "delete", "deployment", "fg", "--cascade=foreground", "--timeout=90s", timeout=100)
    assert srv.json("GET", apps("gc1", "deployments") + "/fg")[0] == 404
    assert not rs_of("fg") and not live("fg")


def test_foreground_holds_the_owner_while_dependents_remain(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "namespace", "gc2")
    srv.kubectl(V, "-n", "gc2", "create", "deployment", "hold", "--image=busybox:1.36", "--", "sleep", "3600")
    rs = poll("rs", lambda: items(srv, apps("gc2", "replicasets")))[0]
    # A finalizer of someone else keeps the ReplicaSet, so the deployment must wait too.
    code, body = srv.json("PATCH", apps("gc2", "replicasets") + "/" + rs["metadata"]["name"],
                          {"metadata": {"finalizers": ["example.com/hold"]}}, headers=MERGE_PATCH)
    assert code == 200, body
    code, body = srv.json("DELETE", apps("gc2", "deployments") + "/hold",
                          {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"})
    assert code == 200 and body["metadata"]["finalizers"] == ["foregroundDeletion"], body
    poll("the replicaset to be deleting", lambda: get(srv, apps("gc2", "replicasets") + "/" + rs["metadata"]["name"])
         ["metadata"].get("deletionTimestamp"))
    poll("its pods to go", lambda: not items(srv, pods("gc2")))
    assert get(srv, apps("gc2", "deployments") + "/hold")["metadata"]["deletionTimestamp"]
    code, body = srv.json("PATCH", apps("gc2", "replicasets") + "/" + rs["metadata"]["name"],
                          {"metadata": {"finalizers": None}}, headers=MERGE_PATCH)
    assert code == 200, body
    poll("the deployment to go", lambda: srv.json("GET", apps("gc2", "deployments") + "/hold")[0] == 404)
    code, body = srv.json("DELETE", apps("gc2", "deployments") + "/x", {"propagationPolicy": "Sideways"})
    assert code == 422 and body["details"]["causes"][0]["field"] == "propagationPolicy", body


def test_dependents_of_a_missing_owner_are_collected(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "namespace", "gc3")
    code, body = srv.json("POST", pods("gc3"), {"metadata": {"name": "lost", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gone", "uid": "5e1f1b7a-0000-4000-8000-000000000001"}]},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}})
    assert code == 201, body
    poll("the pod of a missing owner to be collected", lambda: not items(srv, pods("gc3")))


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize("patch, field", [
    ({"spec": {"selector": None}}, "spec.selector"),
    ({"spec": {"selector": {"matchLabels": {"app": "other"}}}}, "spec.template.metadata.labels"),
    ({"spec": {"replicas": -1}}, "spec.replicas"),
    ({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}},
     "spec.strategy.rollingUpdate.maxUnavailable"),
    ({"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}, "spec.template.spec.containers[0].image"),
    ({"spec": {"template": {"spec": {"restartPolicy": "Never"}}}}, "spec.template.spec.restartPolicy"),
])
def test_invalid_deployments_name_the_field(srv: ServerProcess, tmp_path: Path, patch: dict[str, Any], field: str) -> None:
    from edgectl.server.patch import json_merge

    base = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "bad"}},
                     "template": {"metadata": {"labels": {"app": "bad"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"]}]}}}}
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(json_merge(base, patch)))
    out = srv.kubectl(V, "apply", "-f", str(f), check=False)
    assert out.returncode != 0 and field in out.stderr and "is invalid" in out.stderr, out.stderr


def test_selector_is_immutable_and_scale_is_validated(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "deployment", "imm", "--image=busybox", "--", "sleep", "1")
    out = srv.kubectl(V, "patch", "deployment", "imm", "--type=merge", "-p",
                      '{"spec":{"selector":{"matchLabels":{"app":"imm","x":"y"}},'
                      '"template":{"metadata":{"labels":{"app":"imm","x":"y"}}}}}', check=False)
    assert out.returncode != 0 and "spec.selector" in out.stderr and "field is immutable" in out.stderr, out.stderr
    code, body = srv.json("PATCH", "/apis/apps/v1/namespaces/default/deployments/imm/scale",
                          {"spec": {"replicas": -2}}, headers=MERGE_PATCH)
    assert code == 422 and body["details"]["causes"][0]["field"] == "spec.replicas", body
    srv.kubectl(V, "delete", "deployment", "imm")


def test_strict_field_validation_knows_workload_fields(srv: ServerProcess, tmp_path: Path) -> None:
    f = tmp_path / "typo.yaml"
    f.write_text(DEPLOY.format(image="busybox:1.36").replace("replicas: 4", "replica: 4").replace("name: roll", "name: typo"))
    out = srv.kubectl(V, "apply", "-f", str(f), check=False)
    assert out.returncode != 0 and 'unknown field "spec.replica"' in out.stderr, out.stderr
    f.write_text(DEPLOY.format(image="busybox:1.36").replace("replicas: 4", 'replicas: "4"').replace("name: roll", "name: typo"))
    out = srv.kubectl(V, "apply", "-f", str(f), check=False)
    assert out.returncode != 0 and "spec.replicas" in out.stderr, out.stderr


def test_paused_deployment_scales_but_does_not_roll(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "namespace", "app5")
    srv.kubectl(V, "-n", "app5", "create", "deployment", "p", "--image=busybox:1.36", "--", "sleep", "3600")
    srv.kubectl(V, "-n", "app5", "rollout", "status", "deployment/p", "--timeout=90s", timeout=100)
    srv.kubectl(V, "-n", "app5", "rollout", "pause", "deployment/p")
    srv.kubectl(V, "-n", "app5", "set", "image", "deployment/p", "busybox=busybox:1.37")
    srv.kubectl(V, "-n", "app5", "scale", "deployment/p", "--replicas=2")
    rs = poll("the paused deployment's replicaset to scale", lambda: (r := items(srv, apps("app5", "replicasets")))
              and r[0]["spec"]["replicas"] == 2 and r)
    assert len(rs) == 1 and rs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1.36"
    srv.kubectl(V, "-n", "app5", "rollout", "resume", "deployment/p")
    srv.kubectl(V, "-n", "app5", "rollout", "status", "deployment/p", "--timeout=90s", timeout=100)
    live = [p for p in items(srv, pods("app5")) if not p["metadata"].get("deletionTimestamp")]
    assert sorted(p["spec"]["containers"][0]["image"] for p in live) == ["busybox:1.37", "busybox:1.37"]


def test_create_deployment_protobuf_keeps_explicit_zero_and_ports(srv: ServerProcess) -> None:
    # kubectl >= 1.32 sends this create as protobuf; 1.27 as JSON: both must agree.
    for v, name in ((V, "zero-new"), (OLD, "zero-old")):
        srv.kubectl(v, "create", "deployment", name, "--image=busybox:1.36", "--replicas=0", "--port=8080", "--", "sleep", "1")
        d = get(srv, f"/apis/apps/v1/namespaces/default/deployments/{name}")
        assert d["spec"]["replicas"] == 0, v
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert (c["command"], c["ports"]) == (["sleep", "1"], [{"containerPort": 8080, "protocol": "TCP"}]), v
        assert "creationTimestamp" not in d["spec"]["template"]["metadata"], v
        srv.kubectl(v, "delete", "deployment", name)


def test_progress_deadline_fails_rollout_status(srv: ServerProcess, tmp_path: Path) -> None:
    srv.kubectl(V, "create", "namespace", "app6")
    f = tmp_path / "stuck.yaml"
    f.write_text(DEPLOY.format(image="example/never-ready:1").replace("name: roll", "name: stuck")
                 .replace("replicas: 4", "replicas: 1\n  progressDeadlineSeconds: 2"))
    srv.kubectl(V, "-n", "app6", "apply", "-f", str(f))
    out = srv.kubectl(V, "-n", "app6", "rollout", "status", "deployment/stuck", "--timeout=90s", timeout=100, check=False)
    assert out.returncode != 0 and 'deployment "stuck" exceeded its progress deadline' in out.stderr, out.stderr
    conds = {c["type"]: c for c in get(srv, apps("app6", "deployments") + "/stuck")["status"]["conditions"]}
    assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert conds["Progressing"]["message"].endswith("has timed out progressing.")


def test_daemonset_surge_keeps_old_pods_until_new_ones_serve(srv: ServerProcess, tmp_path: Path) -> None:
    srv.kubectl(V, "create", "namespace", "ds2")
    f = tmp_path / "ds.yaml"
    surge = "updateStrategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}"
    f.write_text(DS.format(name="srg", extra="", image="busybox:1.36").replace("  template:", f"  {surge}\n  template:"))
    srv.kubectl(V, "-n", "ds2", "apply", "-f", str(f))
    srv.kubectl(V, "-n", "ds2", "rollout", "status", "daemonset/srg", "--timeout=90s", timeout=100)
    first = {p["metadata"]["name"] for p in ds_pods(srv, "ds2", "srg")}
    assert len(first) == 2

    # A template whose pods never become ready: one node gets a surge pod, no old pod goes.
    f.write_text(DS.format(name="srg", extra="", image="example/never-ready:1").replace("  template:", f"  {surge}\n  template:"))
    srv.kubectl(V, "-n", "ds2", "apply", "-f", str(f))
    surged = poll("one surge pod", lambda: (ps := ds_pods(srv, "ds2", "srg")) and len(ps) == 3 and ps)
    time.sleep(1.5)  # more passes change nothing: the surge slot is taken, the old pods keep serving
    now = ds_pods(srv, "ds2", "srg")
    assert {p["metadata"]["name"] for p in now} == {p["metadata"]["name"] for p in surged}
    assert first <= {p["metadata"]["name"] for p in now}
    nodes = sorted(p["spec"]["nodeName"] for p in now)
    assert len(set(nodes)) == 2 and len(nodes) == 3

    # Back to the first template: its pods are current again and the stuck surge pod goes.
    f.write_text(DS.format(name="srg", extra="", image="busybox:1.36").replace("  template:", f"  {surge}\n  template:"))
    srv.kubectl(V, "-n", "ds2", "apply", "-f", str(f))
    srv.kubectl(V, "-n", "ds2", "rollout", "status", "daemonset/srg", "--timeout=90s", timeout=100)
    poll("only the first pods left", lambda: {p["metadata"]["name"] for p in ds_pods(srv, "ds2", "srg")} == first)
    # A good new template surges node by node to completion.
    f.write_text(DS.format(name="srg", extra="", image="busybox:1.37").replace("  template:", f"  {surge}\n  template:"))
    srv.kubectl(V, "-n", "ds2", "apply", "-f", str(f))
    srv.kubectl(V, "-n", "ds2", "rollout", "status", "daemonset/srg", "--timeout=90s", timeout=100)
    poll("one new pod per node", lambda: sorted((p["spec"]["nodeName"], p["spec"]["containers"][0]["image"])
                                                for p in ds_pods(srv, "ds2", "srg"))
         == [("apps-n1", "busybox:1.37"), ("apps-n2", "busybox:1.37")])
