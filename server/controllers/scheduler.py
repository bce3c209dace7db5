"""A minimal scheduler: unbound pods go to the least loaded Ready node that fits.

Fit means: the node is Ready and schedulable, its labels match the pod's
``nodeSelector``, and every NoSchedule/NoExecute taint is tolerated. Among the
nodes that fit, the one with the fewest non-terminated pods wins (ties by
name, so the outcome is deterministic). Binding sets ``spec.nodeName`` only if
it is still empty (the binding subresource's semantics) and then records the
``PodScheduled`` condition; a pod that fits nowhere gets PodScheduled=False,
reason Unschedulable, with upstream's "0/N nodes are available: ..." message.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from edgectl.log import fields

from ..registry import Registry
from ..status import ApiError
from .loop import run_loop

log = logging.getLogger(__name__)
Obj = dict[str, Any]

SCHEDULER_NAME = "default-scheduler"
BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")


def tolerates(tolerations: list[Obj], taint: Obj) -> bool:
    """Upstream's ToleratesTaint over a pod's tolerations."""
    for tol in tolerations or []:
        if not isinstance(tol, dict):
            continue
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        op = tol.get("operator") or "Equal"
        if not tol.get("key"):
            if op == "Exists":
                return True
            continue
        if tol["key"] != taint.get("key"):
            continue
        if op == "Exists" or (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def node_ready(node: Obj) -> bool:
    return any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def selector_matches(pod: Obj, node: Obj) -> bool:
    want = (pod.get("spec") or {}).get("nodeSelector") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in want.items())


def untolerated_taint(pod: Obj, node: Obj) -> Obj | None:
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if isinstance(taint, dict) and taint.get("effect") in BLOCKING_EFFECTS and not tolerates(tolerations, taint):
            return taint
    return None


def pod_counts(pods: list[Obj]) -> Counter[str]:
    """Pods occupying each node: bound and not finished."""
    counts: Counter[str] = Counter()
    for p in pods:
        node = (p.get("spec") or {}).get("nodeName")
        if node and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            counts[node] += 1
    return counts


@dataclass(frozen=True, slots=True)
class Decision:
    node: str | None
    message: str = ""  # why nothing fits


def pick_node(pod: Obj, nodes: list[Obj], counts: Counter[str]) -> Decision:
    reasons: Counter[str] = Counter()
    fits: list[Obj] = []
    for node in nodes:
        if (node.get("metadata") or {}).get("deletionTimestamp"):
            reasons["node(s) were being deleted"] += 1
        elif (node.get("spec") or {}).get("unschedulable"):
            reasons["node(s) were unschedulable"] += 1
        elif not selector_matches(pod, node):
            reasons["node(s) didn't match Pod's node affinity/selector"] += 1
        elif (taint := untolerated_taint(pod, node)) is not None:
            reasons[f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"] += 1
        elif not node_ready(node):
            reasons["node(s) were not ready"] += 1
        else:
            fits.append(node)
    if fits:
        best = min(fits, key=lambda n: (counts[n["metadata"]["name"]], n["metadata"]["name"]))
        return Decision(best["metadata"]["name"])
    if not nodes:
        return Decision(None, "0/0 nodes are available: no nodes available to schedule pods.")
    detail = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: kv[0]))
    return Decision(None, f"0/{len(nodes)} nodes are available: {detail}.")


def needs_scheduling(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    return (not spec.get("nodeName")
            and (spec.get("schedulerName") or SCHEDULER_NAME) == SCHEDULER_NAME
            and not (pod.get("metadata") or {}).get("deletionTimestamp")
            and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))


def scheduled_condition(status: str, reason: str = "", message: str = "", *, now: str) -> Obj:
    cond: Obj = {"type": "PodScheduled", "status": status, "lastProbeTime": None, "lastTransitionTime": now}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def with_condition(pod: Obj, cond: Obj) -> Obj | None:
    """The pod with ``cond`` set, or None when an equal condition is already there
    (keeps the loop from rewriting the pod on every pass)."""
    status = pod.setdefault("status", {})
    conds = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    for c in conds:
        if c.get("type") == cond["type"]:
            if all(c.get(k) == cond.get(k) for k in ("status", "reason", "message")):
                return None
            if c.get("status") == cond["status"]:
                cond = {**cond, "lastTransitionTime": c.get("lastTransitionTime", cond["lastTransitionTime"])}
    status["conditions"] = [c for c in conds if c.get("type") != cond["type"]] + [cond]
    status.setdefault("phase", "Pending")
    return pod


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Scheduler:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.pods = registry.resource("pods")
        self.nodes = registry.resource("nodes")

    async def reconcile(self) -> float | None:
        nodes = (await self.registry.list(self.nodes)).items
        pods = (await self.registry.list(self.pods)).items
        counts = pod_counts(pods)
        queue = sorted((p for p in pods if needs_scheduling(p)),
                       key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["namespace"], p["metadata"]["name"]))
        for pod in queue:
            decision = pick_node(pod, nodes, counts)
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            try:
                if decision.node is None:
                    cond = scheduled_condition("False", "Unschedulable", decision.message, now=_now())
                    await self.registry.guaranteed_update(self.pods, ns, name, lambda p, c=cond: with_condition(p, c), subresource="status")
                    continue
                if await self._bind(ns, name, decision.node):
                    counts[decision.node] += 1
                    log.info("pod scheduled", extra=fields(pod=f"{ns}/{name}", node=decision.node))
            except ApiError as exc:
                if exc.code == 404:
                    continue  # deleted meanwhile
                raise
        return None

    async def _bind(self, ns: str, name: str, node: str) -> bool:
        bound = False

        def bind(pod: Obj) -> Obj | None:
            nonlocal bound
            bound = False  # mutate may run again after a conflict
            if (pod.get("spec") or {}).get("nodeName"):
                return None  # someone bound it first: binding never rebinds
            pod["spec"]["nodeName"] = node
            bound = True
            return pod

        await self.registry.guaranteed_update(self.pods, ns, name, bind)
        if bound:
            cond = scheduled_condition("True", now=_now())
            await self.registry.guaranteed_update(self.pods, ns, name, lambda p: with_condition(p, cond), subresource="status")
        return bound

    async def run(self, *, resync: float = 30.0) -> None:
        await run_loop("scheduler", self.registry, [(self.pods, None), (self.nodes, None)], self.reconcile, resync=resync)
