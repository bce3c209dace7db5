"""The pure decisions behind the apps/v1 controllers and the garbage collector:
rollout arithmetic, pod deletion order, daemon placement, GC plans, template
hashing, validation and printing. No server, no I/O."""
from __future__ import annotations

from typing import Any

import pytest

from edgectl.server import tables, validation
from edgectl.server.controllers import daemonset, deployment, garbagecollector, replicaset, workloads
from edgectl.server.controllers.rfc3339 import format_time
from edgectl.server.resources import TABLE

NOW = 1_800_000_000.0


def rs(name: str, spec: int, available: int, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created}, "spec": {"replicas": spec},
            "status": {"replicas": spec, "availableReplicas": available}}


def dep(replicas: int, surge: Any = "25%", unavailable: Any = "25%", kind: str = "RollingUpdate") -> dict[str, Any]:
    strategy: dict[str, Any] = {"type": kind}
    if kind == "RollingUpdate":
        strategy["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {"spec": {"replicas": replicas, "strategy": strategy}}


def test_surge_rounds_up_and_unavailable_down() -> None:
    assert deployment.surge_and_unavailable(dep(10)) == (3, 2)
    assert deployment.surge_and_unavailable(dep(1)) == (1, 0)
    assert deployment.surge_and_unavailable(dep(4, 0, 0)) == (0, 1)  # both zero: one may be unavailable
    assert deployment.surge_and_unavailable(dep(3, kind="Recreate")) == (0, 0)


def test_new_replicaset_grows_within_surge() -> None:
    assert deployment.new_replicas(4, 1, 0, 4) == 1  # 4 old + 1 surge
    assert deployment.new_replicas(4, 1, 1, 5) == 1  # at the ceiling
    assert deployment.new_replicas(4, 1, 2, 4) == 3
    assert deployment.new_replicas(4, 1, 6, 6) == 4  # never above desired
    assert deployment.new_replicas(3, 1, 0, 0) == 3


def test_old_replicasets_shrink_keeping_min_available() -> None:
    new = rs("new", 1, 0)
    # 4 old available, 1 new unavailable, desired 4 / maxUnavailable 1: one old pod may go.
    assert deployment.old_scale_down(4, 1, new, [rs("old", 4, 4)]) == {"old": 3}
    # New pods unavailable eat the whole budget: nothing more goes.
    assert deployment.old_scale_down(4, 1, rs("new", 2, 0), [rs("old", 3, 3)]) == {}
    # Unhealthy old replicas go first (they do not count against availability),
    # then available ones down to replicas - maxUnavailable.
    sizes = deployment.old_scale_down(4, 1, rs("new", 0, 0), [rs("b", 2, 0, "2026-01-02T00:00:00Z"), rs("a", 4, 4)])
    assert sizes == {"b": 0, "a": 3}


def test_deletion_prefers_unscheduled_pending_unready_newest() -> None:
    def pod(name: str, node: str | None, phase: str, ready: bool, created: str) -> dict[str, Any]:
        conds = [{"type": "Ready", "status": "True" if ready else "False"}]
        return {"metadata": {"name": name, "creationTimestamp": created},
                "spec": {"nodeName": node} if node else {}, "status": {"phase": phase, "conditions": conds}}

    pods = [pod("old-ready", "n", "Running", True, "2026-01-01T00:00:00Z"),
            pod("new-ready", "n", "Running", True, "2026-01-02T00:00:00Z"),
            pod("unready", "n", "Running", False, "2026-01-01T00:00:00Z"),
            pod("pending", "n", "Pending", False, "2026-01-01T00:00:00Z"),
            pod("unscheduled", None, "Pending", False, "2026-01-01T00:00:00Z")]
    order = [p["metadata"]["name"] for p in sorted(pods, key=replicaset.deletion_order)]
    assert order == ["unscheduled", "pending", "unready", "new-ready", "old-ready"]


def test_available_needs_min_ready_seconds() -> None:
    ready_since = format_time(NOW - 5)
    pod = {"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready_since}]}}
    assert workloads.is_available(pod, 0, NOW) and workloads.is_available(pod, 5, NOW)
    assert workloads.available_in(pod, 10, NOW) == pytest.approx(5.0)
    assert workloads.available_in({"status": {}}, 0, NOW) is None


def test_template_hash_is_stable_and_sensitive() -> None:
    a = {"spec": {"containers": [{"name": "c", "image": "x"}]}}
    assert workloads.template_hash(a) == workloads.template_hash({"spec": {"containers": [{"image": "x", "name": "c"}]}})
    assert workloads.template_hash(a) != workloads.template_hash({"spec": {"containers": [{"name": "c", "image": "y"}]}})
    assert workloads.template_hash(a) != workloads.template_hash(a, 1)
    assert len(workloads.template_hash(a)) == 10 and not set(workloads.template_hash(a)) & set("aeiou")


def node(name: str, labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"taints": taints or []}}


def test_daemon_placement_selector_affinity_and_taints() -> None:
    P = daemonset.Placement
    assert daemonset.placement({}, node("a")) == P(True, True)
    assert daemonset.placement({"nodeSelector": {"zone": "x"}}, node("a")) == P(False, False)
    # Not-ready/unreachable NoExecute and unschedulable NoSchedule are tolerated by every daemon pod.
    for key, effect in (("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unschedulable", "NoSchedule")):
        assert daemonset.placement({}, node("a", taints=[{"key": key, "effect": effect}])) == P(True, True)
    # Another NoSchedule taint stops new pods, not running ones; NoExecute stops both.
    assert daemonset.placement({}, node("a", taints=[{"key": "dedicated", "effect": "NoSchedule"}])) == P(False, True)
    assert daemonset.placement({}, node("a", taints=[{"key": "dedicated", "effect": "NoExecute"}])) == P(False, False)
    tolerant = {"tolerations": [{"key": "dedicated", "operator": "Exists"}]}
    assert daemonset.placement(tolerant, node("a", taints=[{"key": "dedicated", "effect": "NoExecute"}])) == P(True, True)
    affinity = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["special"]}]}]}}}}
    assert daemonset.placement(affinity, node("x", {"zone": "b"})).should_run
    assert daemonset.placement(affinity, node("special")).should_run
    assert not daemonset.placement(affinity, node("x", {"zone": "c"})).should_run
    assert {t["key"] for t in daemonset.daemon_tolerations({"hostNetwork": True})} >= {"node.kubernetes.io/network-unavailable"}


def test_daemon_max_unavailable() -> None:
    ds = {"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}}}
    assert daemonset.max_unavailable(ds, 15) == 2  # rounds up
    assert daemonset.max_unavailable({"spec": {}}, 5) == 1


def _obj(plural: str, name: str, uid: str, *, owners: list[dict[str, Any]] | None = None, finalizers: list[str] | None = None,
         deleting: bool = False) -> tuple[Any, dict[str, Any]]:
    group = "apps" if plural in ("replicasets", "deployments") else ""
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": uid}
    if owners:
        meta["ownerReferences"] = owners
    if finalizers:
        meta["finalizers"] = finalizers
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return TABLE.get(plural, group), {"metadata": meta}


def ref(uid: str, block: bool = True) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": uid, "controller": True, "blockOwnerDeletion": block}


def test_gc_plan_orphan_foreground_and_missing_owners() -> None:
    rs_res, _ = _obj("replicasets", "r", "u-rs")
    # Orphan: references go, then the finalizer.
    plan = garbagecollector.plan([_obj("replicasets", "r", "u-rs", finalizers=["orphan"], deleting=True),
                                  _obj("pods", "p", "u-p", owners=[ref("u-rs")])])
    assert [(k[0].plural, k[2], v) for k, v in plan.strip_refs.items()] == [("pods", "p", {"u-rs"})]
    assert [(r.plural, n, f) for r, _, n, f in plan.drop_finalizer] == [("replicasets", "r", "orphan")]
    # Foreground: dependents deleted; the finalizer stays while a blocking one exists.
    plan = garbagecollector.plan([_obj("replicasets", "r", "u-rs", finalizers=["foregroundDeletion"], deleting=True),
                                  _obj("pods", "p", "u-p", owners=[ref("u-rs")])])
    assert [(r.plural, n) for r, _, n in plan.delete_foreground] == [("pods", "p")] and not plan.drop_finalizer
    plan = garbagecollector.plan([_obj("replicasets", "r", "u-rs", finalizers=["foregroundDeletion"], deleting=True),
                                  _obj("pods", "p", "u-p", owners=[ref("u-rs", block=False)])])
    assert plan.drop_finalizer and plan.delete_foreground
    # A dependent with another live owner only loses the reference.
    plan = garbagecollector.plan([_obj("replicasets", "r", "u-rs", finalizers=["foregroundDeletion"], deleting=True),
                                  _obj("replicasets", "r2", "u-rs2"),
                                  _obj("pods", "p", "u-p", owners=[ref("u-rs"), ref("u-rs2", block=False)])])
    assert not plan.delete_foreground and list(plan.strip_refs.values()) == [{"u-rs"}]
    # Owners absent from the snapshot are checked (then collected) by the controller.
    plan = garbagecollector.plan([_obj("pods", "p", "u-p", owners=[ref("gone")])])
    assert [(k[2], [r["uid"] for r in v]) for k, v in plan.check_owners.items()] == [("p", ["gone"])]
    assert rs_res.plural == "replicasets"


def _deploy(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"selector": {"matchLabels": {"app": "a"}}, "strategy": {"type": "RollingUpdate"},
                            "template": {"metadata": {"labels": {"app": "a"}},
                                         "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}
    base.update(spec)
    return {"metadata": {"name": "d"}, "spec": base}


@pytest.mark.parametrize("spec, field", [
    ({"selector": None}, "spec.selector"),
    ({"selector": {}}, "spec.selector"),
    ({"selector": {"matchLabels": {"app": "b"}}}, "spec.template.metadata.labels"),
    ({"replicas": -1}, "spec.replicas"),
    ({"strategy": {"type": "Sometimes"}}, "spec.strategy.type"),
    ({"strategy": {"type": "Recreate", "rollingUpdate": {}}}, "spec.strategy.rollingUpdate"),
    ({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "150%"}}}, "spec.strategy.rollingUpdate.maxSurge"),
    ({"template": {"metadata": {"labels": {"app": "a"}}, "spec": {"restartPolicy": "OnFailure",
                                                                   "containers": [{"name": "c", "image": "i"}]}}},
     "spec.template.spec.restartPolicy"),
])
def test_deployment_validation_names_the_field(spec: dict[str, Any], field: str) -> None:
    causes = validation.validate(TABLE.get("deployments", "apps"), _deploy(**spec), None)
    assert field in [c.field for c in causes], causes


def test_valid_deployment_and_immutable_selector() -> None:
    res = TABLE.get("deployments", "apps")
    assert validation.validate(res, _deploy(), None) == []
    changed = _deploy(selector={"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]})
    assert [c.field for c in validation.validate(res, changed, _deploy())] == ["spec.selector"]


def test_tables_print_upstream_cells() -> None:
    d = {"metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
         "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:2"}]}}},
         "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    row = tables.rows("deployments", [d])[0]["cells"]
    assert row[:4] == ["web", "2/3", 3, 2] and row[5:] == ["a,b", "x:1,y:2", "app=web"]
    ds = {"metadata": {"name": "agent"}, "spec": {"template": {"spec": {"nodeSelector": {"b": "2", "a": "1"}}}},
          "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 1}}
    assert tables.rows("daemonsets", [ds])[0]["cells"][:7] == ["agent", 3, 3, 1, 0, 0, "a=1,b=2"]


def test_daemon_surge_decisions() -> None:
    def p(name: str, h: str, ready: bool, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": {"controller-revision-hash": h}, "creationTimestamp": created},
                "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}

    # Duplicates: the current template wins; while surging the old one stays beside it.
    pods = [p("old", "h1", True), p("new", "h2", False, "2026-01-02T00:00:00Z"), p("new2", "h2", False, "2026-01-03T00:00:00Z")]
    assert [x["metadata"]["name"] for x in daemonset.keep_on_node(pods, "h2", surge=True)] == ["new", "old"]
    assert [x["metadata"]["name"] for x in daemonset.keep_on_node(pods, "h2", surge=False)] == ["new"]
    by_node = {"a": [p("a-old", "h1", True), p("a-new", "h2", True)],  # new serves: old goes
               "b": [p("b-old", "h1", True), p("b-new", "h2", False)],  # surging: wait
               "c": [p("c-old", "h1", True)],  # no slot left (surge 1 taken by b)
               "d": [p("d-old", "h1", False)]}  # not serving: replaced without a slot
    delete, create = daemonset.DaemonSetController._surge(by_node, "h2", 1, 0, NOW)
    assert [x["metadata"]["name"] for x in delete] == ["a-old"] and create == ["d"]


def test_proportional_scaling_shares_the_change() -> None:
    assert deployment.proportional(9, [("new", 2), ("old", 3)]) == {"new": 4, "old": 5}
    assert deployment.proportional(5, [("new", 4), ("old", 5)]) == {"new": 2, "old": 3}
    assert deployment.proportional(0, [("a", 3), ("b", 1)]) == {"a": 0, "b": 0}
    assert deployment.proportional(4, [("a", 3), ("b", 1)]) == {}
    out = deployment.proportional(10, [("a", 1), ("b", 1), ("c", 1)])  # leftovers land on the first largest
    assert sum(out.values()) == 10 and out["a"] >= out["b"] >= 3
