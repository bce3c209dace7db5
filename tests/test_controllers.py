"""Controllers: pure decisions without I/O, then each reconcile against a real
Registry over the real SQLite store, then the watch-driven loops end to end."""
from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edgectl.errors import ConfigError
from edgectl.server.controllers import start_all
from edgectl.server.controllers.apiservice import KubernetesService, desired_endpoints, desired_service, endpoints_drift
from edgectl.server.controllers.ipam import NodeIPAM, allocate_cidr, plan_ipam
from edgectl.server.controllers.lifecycle import NodeLifecycle, next_check, node_condition, plan_node
from edgectl.server.controllers.scheduler import (
    Scheduler,
    needs_scheduling,
    pick_node,
    pod_counts,
    scheduled_condition,
    tolerates,
    with_condition,
)
from edgectl.server.registry import Registry
from edgectl.server.testing import sqlite_registry

Obj = dict[str, Any]
N = ipaddress.IPv4Network


def node(name: str, *, ready: str | None = "True", labels: Obj | None = None, taints: list[Obj] | None = None,
         cidr: str | None = None, created: str = "2026-01-01T00:00:00Z", reason: str = "KubeletReady") -> Obj:
    obj: Obj = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels or {}, "creationTimestamp": created},
                "spec": {}, "status": {"conditions": []}}
    if ready is not None:
        obj["status"]["conditions"].append({"type": "Ready", "status": ready, "reason": reason})
    if taints:
        obj["spec"]["taints"] = taints
    if cidr:
        obj["spec"]["podCIDR"] = cidr
        obj["spec"]["podCIDRs"] = [cidr]
    return obj


def pod(name: str, *, node_name: str = "", selector: Obj | None = None, tolerations: list[Obj] | None = None,
        ns: str = "default", phase: str | None = None) -> Obj:
    spec: Obj = {"containers": [{"name": "c", "image": "busybox"}]}
    if node_name:
        spec["nodeName"] = node_name
    if selector:
        spec["nodeSelector"] = selector
    if tolerations:
        spec["tolerations"] = tolerations
    obj: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec}
    if phase:
        obj["status"] = {"phase": phase}
    return obj


# ------------------------------------------------------------------ IPAM, pure
def test_allocate_cidr_lowest_free() -> None:
    assert allocate_cidr([]) == N("10.42.0.0/24")
    assert allocate_cidr([N("10.42.0.0/24"), N("10.42.1.0/24")]) == N("10.42.2.0/24")
    assert allocate_cidr([N("10.42.0.0/24"), N("10.42.2.0/24")]) == N("10.42.1.0/24")  # a released hole is reused
    assert allocate_cidr([N("10.42.0.0/23")]) == N("10.42.2.0/24")  # overlap, not equality, counts
    assert allocate_cidr([N("10.42.0.0/24"), N("10.42.1.0/24")], "10.42.0.0/23") is None  # full
    assert allocate_cidr([N("192.168.0.0/24")], "10.42.0.0/16") == N("10.42.0.0/24")  # outside ranges ignored


def test_plan_ipam_keeps_existing_and_serves_oldest_first() -> None:
    nodes = [node("b", created="2026-01-01T00:00:02Z"), node("a", cidr="10.42.0.0/24"),
             node("c", created="2026-01-01T00:00:01Z")]
    plan, full = plan_ipam(nodes)
    assert plan == {"c": N("10.42.1.0/24"), "b": N("10.42.2.0/24")} and full == []
    plan, full = plan_ipam([node("x"), node("y")], "10.42.0.0/24")
    assert plan == {"x": N("10.42.0.0/24")} and full == ["y"]


# ------------------------------------------------------------ lifecycle, pure
def test_node_condition_after_40_seconds() -> None:
    assert node_condition(100.0, 139.9) == "True"
    assert node_condition(100.0, 140.0) == "True"
    assert node_condition(100.0, 140.1) == "Unknown"
    assert node_condition(None, 0.0) == "Unknown"


def test_plan_node_marks_unknown_taints_and_recovers() -> None:
    n = node("a")
    plan = plan_node(n, last_renew=0.0, now=41.0)
    assert plan is not None and plan.add_taint and not plan.remove_taint
    assert plan.ready is not None and plan.ready["status"] == "Unknown" and plan.ready["reason"] == "NodeStatusUnknown"
    assert plan_node(n, last_renew=0.0, now=39.0) is None  # fresh and fine: nothing to do
    stale = node("a", ready="Unknown", reason="NodeStatusUnknown",
                 taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}])
    assert plan_node(stale, last_renew=0.0, now=100.0) is None  # already marked: idempotent
    back = plan_node(stale, last_renew=95.0, now=100.0)
    assert back is not None and back.remove_taint and not back.add_taint
    assert back.ready is not None and back.ready["status"] == "True"
    # a NotReady the kubelet itself posted is not ours to undo
    kubelet_false = node("a", ready="False", reason="KubeletNotReady")
    assert plan_node(kubelet_false, last_renew=95.0, now=100.0) is None


def test_next_check_is_the_soonest_expiry() -> None:
    assert next_check([100.0, 120.0, 10.0], now=110.0) == pytest.approx(30.05)
    assert next_check([10.0], now=110.0) is None


# ------------------------------------------------------------ scheduler, pure
@pytest.mark.parametrize("tols,taint,ok", [
    ([], {"key": "k", "effect": "NoSchedule"}, False),
    ([{"key": "k", "operator": "Exists"}], {"key": "k", "value": "v", "effect": "NoSchedule"}, True),
    ([{"key": "k", "value": "v"}], {"key": "k", "value": "v", "effect": "NoSchedule"}, True),
    ([{"key": "k", "value": "w"}], {"key": "k", "value": "v", "effect": "NoSchedule"}, False),
    ([{"key": "k", "operator": "Exists", "effect": "NoExecute"}], {"key": "k", "effect": "NoSchedule"}, False),
    ([{"operator": "Exists"}], {"key": "anything", "effect": "NoExecute"}, True),
    ([{"operator": "Equal"}], {"key": "anything", "effect": "NoExecute"}, False),
])
def test_tolerates(tols: list[Obj], taint: Obj, ok: bool) -> None:
    assert tolerates(tols, taint) is ok


def test_pick_node_fewest_pods_selector_taints_readiness() -> None:
    nodes = [node("n1", labels={"zone": "a"}), node("n2", labels={"zone": "a"}), node("n3", labels={"zone": "b"}),
             node("n4", ready="False", labels={"zone": "a"}),
             node("n5", labels={"zone": "a"}, taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}])]
    counts = pod_counts([pod("p1", node_name="n1"), pod("p2", node_name="n1"), pod("p3", node_name="n2"),
                         pod("done", node_name="n2", phase="Succeeded")])
    assert counts == Counter({"n1": 2, "n2": 1})
    assert pick_node(pod("x", selector={"zone": "a"}), nodes, counts).node == "n2"
    assert pick_node(pod("x"), nodes, counts).node == "n3"  # 0 pods
    # a tolerated taint makes n5 (0 pods) the best
    tol = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoSchedule"}]
    assert pick_node(pod("x", selector={"zone": "a"}, tolerations=tol), nodes, counts).node == "n5"
    # PreferNoSchedule does not block
    soft = [node("s", taints=[{"key": "k", "effect": "PreferNoSchedule"}])]
    assert pick_node(pod("x"), soft, Counter()).node == "s"
    d = pick_node(pod("x", selector={"zone": "c"}), nodes, counts)
    assert d.node is None
    assert d.message == "0/5 nodes are available: 5 node(s) didn't match Pod's node affinity/selector."
    d = pick_node(pod("x", selector={"zone": "a"}), [nodes[3], nodes[4]], counts)
    assert d.message == ("0/2 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, "
                         "1 node(s) were not ready.")
    assert pick_node(pod("x"), [], Counter()).node is None


def test_needs_scheduling_and_condition_idempotence() -> None:
    assert needs_scheduling(pod("a"))
    assert not needs_scheduling(pod("a", node_name="n1"))
    other = pod("a")
    other["spec"]["schedulerName"] = "my-scheduler"
    assert not needs_scheduling(other)
    p = pod("a")
    cond = scheduled_condition("False", "Unschedulable", "0/1 nodes", now="2026-01-01T00:00:00Z")
    p2 = with_condition(p, cond)
    assert p2 is not None and p2["status"]["conditions"] == [cond]
    later = scheduled_condition("False", "Unschedulable", "0/1 nodes", now="2026-01-01T00:05:00Z")
    assert with_condition(p2, later) is None  # same state: no write


def test_kubernetes_service_shapes() -> None:
    svc = desired_service()
    assert svc["spec"]["clusterIP"] == "10.43.0.1"
    assert svc["spec"]["ports"] == [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]
    ep = desired_endpoints(["10.0.0.2", "10.0.0.10", "10.0.0.2"])
    assert ep["subsets"] == [{"addresses": [{"ip": "10.0.0.2"}, {"ip": "10.0.0.10"}],
                              "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]
    assert endpoints_drift({"subsets": ep["subsets"]}, ep) is None
    with pytest.raises(ConfigError):
        KubernetesService(object(), server_addresses=["not-an-ip"])  # type: ignore[arg-type]


# --------------------------------------------- against a real registry + store
def with_registry(tmp_path: Path, body: Callable[[Registry], Awaitable[None]]) -> None:
    async def main() -> None:
        async with sqlite_registry(tmp_path / "db" / "state.db") as reg:
            await asyncio.wait_for(body(reg), 60)

    asyncio.run(main())


async def make_node(reg: Registry, name: str, *, ready: bool = True, labels: Obj | None = None) -> Obj:
    obj = await reg.create(reg.resource("nodes"), {"apiVersion": "v1", "kind": "Node",
                                                  "metadata": {"name": name, "labels": labels or {}}})
    if ready:
        cond = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}

        def st(n: Obj) -> Obj:
            n.setdefault("status", {})["conditions"] = [cond]
            return n

        obj = await reg.guaranteed_update(reg.resource("nodes"), None, name, st, subresource="status")
    return obj


def rfc3339_micro(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_ipam_assigns_releases_and_is_stable(tmp_path: Path) -> None:
    async def body(reg: Registry) -> None:
        ipam = NodeIPAM(reg)
        nodes = reg.resource("nodes")
        for name in ("n1", "n2", "n3"):
            await make_node(reg, name, ready=False)
        await ipam.reconcile()
        got = {n["metadata"]["name"]: n["spec"]["podCIDR"] for n in (await reg.list(nodes)).items}
        assert sorted(got.values()) == ["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"]
        for n, c in got.items():
            assert (await reg.get(nodes, None, n))["spec"]["podCIDRs"] == [c]
        freed = got["n2"]
        await reg.delete(nodes, None, "n2")
        await make_node(reg, "n4", ready=False)
        rv_before = {n["metadata"]["name"]: n["metadata"]["resourceVersion"] for n in (await reg.list(nodes)).items}
        await ipam.reconcile()
        assert (await reg.get(nodes, None, "n4"))["spec"]["podCIDR"] == freed
        # a fresh controller (restart) derives the same allocation and writes nothing
        await NodeIPAM(reg).reconcile()
        after = {n["metadata"]["name"]: n for n in (await reg.list(nodes)).items}
        for name in ("n1", "n3"):
            assert after[name]["metadata"]["resourceVersion"] == rv_before[name]
            assert after[name]["spec"]["podCIDR"] == got[name]

    with_registry(tmp_path, body)


def test_lifecycle_marks_stale_node_and_recovers(tmp_path: Path) -> None:
    async def body(reg: Registry) -> None:
        nodes, leases = reg.resource("nodes"), reg.resource("leases", "coordination.k8s.io")
        now = [time.time()]
        ctl = NodeLifecycle(reg, clock=lambda: now[0])
        await make_node(reg, "edge1")
        await reg.create(leases, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                  "metadata": {"name": "edge1", "namespace": "kube-node-lease"},
                                  "spec": {"holderIdentity": "edge1", "leaseDurationSeconds": 40,
                                           "renewTime": rfc3339_micro(now[0])}})
        assert await ctl.reconcile() == pytest.approx(40.05, abs=0.5)
        n = await reg.get(nodes, None, "edge1")
        assert not n["spec"].get("taints")
        now[0] += 41
        await ctl.reconcile()
        n = await reg.get(nodes, None, "edge1")
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"][0]
        assert ready["status"] == "Unknown" and ready["reason"] == "NodeStatusUnknown"
        assert {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}.items() <= n["spec"]["taints"][0].items()
        rv = n["metadata"]["resourceVersion"]
        await ctl.reconcile()  # idempotent
        assert (await reg.get(nodes, None, "edge1"))["metadata"]["resourceVersion"] == rv
        # the agent renews its lease: taint goes, Ready comes back
        def renew(lease: Obj) -> Obj:
            lease["spec"]["renewTime"] = rfc3339_micro(now[0])
            return lease
        await reg.guaranteed_update(leases, "kube-node-lease", "edge1", renew)
        await ctl.reconcile()
        n = await reg.get(nodes, None, "edge1")
        assert not n["spec"].get("taints")
        assert [c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"] == ["True"]

    with_registry(tmp_path, body)


def test_scheduler_binds_and_reports_unschedulable(tmp_path: Path) -> None:
    async def body(reg: Registry) -> None:
        pods = reg.resource("pods")
        sched = Scheduler(reg)
        await make_node(reg, "a", labels={"role": "edge"})
        await make_node(reg, "b", labels={"role": "edge"})
        await make_node(reg, "c", labels={"role": "core"}, ready=False)
        for i in range(4):
            await reg.create(pods, pod(f"p{i}", selector={"role": "edge"}))
        await reg.create(pods, pod("core", selector={"role": "core"}))
        await sched.reconcile()
        placed = Counter()
        for i in range(4):
            p = await reg.get(pods, "default", f"p{i}")
            placed[p["spec"]["nodeName"]] += 1
            assert [c["status"] for c in p["status"]["conditions"] if c["type"] == "PodScheduled"] == ["True"]
        assert placed == Counter({"a": 2, "b": 2})  # fewest pods wins, so they spread
        core = await reg.get(pods, "default", "core")
        assert not core["spec"].get("nodeName")
        cond = [c for c in core["status"]["conditions"] if c["type"] == "PodScheduled"][0]
        assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
        assert "0/3 nodes are available" in cond["message"]
        rv = core["metadata"]["resourceVersion"]
        await sched.reconcile()  # nothing changed: no rewrite
        assert (await reg.get(pods, "default", "core"))["metadata"]["resourceVersion"] == rv

    with_registry(tmp_path, body)


def test_kubernetes_service_reconcile(tmp_path: Path) -> None:
    async def body(reg: Registry) -> None:
        ctl = KubernetesService(reg, server_addresses=["127.0.0.1"], https_port=6443)
        await ctl.reconcile()
        svc = await reg.get(reg.resource("services"), "default", "kubernetes")
        assert svc["spec"]["clusterIP"] == "10.43.0.1"
        assert svc["spec"]["ports"][0]["port"] == 443 and svc["spec"]["ports"][0]["targetPort"] == 6443
        ep = await reg.get(reg.resource("endpoints"), "default", "kubernetes")
        assert ep["subsets"][0]["addresses"] == [{"ip": "127.0.0.1"}]
        rv = ep["metadata"]["resourceVersion"]
        await ctl.reconcile()
        assert (await reg.get(reg.resource("endpoints"), "default", "kubernetes"))["metadata"]["resourceVersion"] == rv

        def tamper(e: Obj) -> Obj:
            e["subsets"] = []
            return e
        await reg.guaranteed_update(reg.resource("endpoints"), "default", "kubernetes", tamper)
        await ctl.reconcile()
        ep = await reg.get(reg.resource("endpoints"), "default", "kubernetes")
        assert ep["subsets"][0]["addresses"] == [{"ip": "127.0.0.1"}]

    with_registry(tmp_path, body)


@pytest.mark.slow
def test_controllers_react_to_watch_events(tmp_path: Path) -> None:
    """The real loops: a new node gets a CIDR, a new pod gets bound, a stale
    lease turns the node NotReady, all driven by watches (resync is long)."""

    async def body(reg: Registry) -> None:
        nodes, pods = reg.resource("nodes"), reg.resource("pods")
        ctl = start_all(reg, server_addresses=["127.0.0.1"], node_grace=1.0, resync=300.0)

        async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
            deadline = time.monotonic() + timeout
            while not await check():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.05)

        try:
            await until(lambda: _exists(reg, "services", "default", "kubernetes"), "kubernetes service")
            await make_node(reg, "w1")
            # renew the lease continuously so w1 stays Ready under a 1 s grace
            leases = reg.resource("leases", "coordination.k8s.io")
            await reg.create(leases, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                      "metadata": {"name": "w1", "namespace": "kube-node-lease"},
                                      "spec": {"holderIdentity": "w1", "renewTime": rfc3339_micro(time.time())}})

            async def cidr() -> bool:
                return bool((await reg.get(nodes, None, "w1"))["spec"].get("podCIDR"))
            await until(cidr, "pod CIDR")
            await reg.create(pods, pod("web"))

            async def bound() -> bool:
                return (await reg.get(pods, "default", "web"))["spec"].get("nodeName") == "w1"
            await until(bound, "pod bound")
            # stop renewing: within grace + a little, the node is tainted
            async def tainted() -> bool:
                return bool((await reg.get(nodes, None, "w1"))["spec"].get("taints"))
            await until(tainted, "unreachable taint", timeout=5.0)
        finally:
            await ctl.close()

    with_registry(tmp_path, body)


async def _exists(reg: Registry, plural: str, ns: str | None, name: str) -> bool:
    try:
        await reg.get(reg.resource(plural), ns, name)
        return True
    except Exception:
        return False


