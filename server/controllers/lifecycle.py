"""Node lifecycle: a node whose Lease stops renewing becomes NotReady.

40 s after the last renewal of ``kube-node-lease/<node>`` the Ready condition
turns Unknown (reason NodeStatusUnknown) and the node gets the taint
``node.kubernetes.io/unreachable:NoSchedule``, so the scheduler avoids it. When
the lease renews again the taint goes, and a Ready condition that this
controller set to Unknown is set back to True (the agent may post its own
status later; we only undo our own change).

The decision is pure (``node_condition``, ``plan_node``); time is an argument.
A node this controller has not seen renew since it started gets the grace
period from the controller's start, so a server restart does not mark every
node NotReady at once.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgectl.log import fields

from ..registry import Registry
from ..status import ApiError
from .loop import run_loop
from .rfc3339 import format_time, parse_time

log = logging.getLogger(__name__)
Obj = dict[str, Any]

GRACE_SECONDS = 40.0
LEASE_NAMESPACE = "kube-node-lease"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNKNOWN_REASON = "NodeStatusUnknown"
UNKNOWN_MESSAGE = "Kubelet stopped posting node status."


def node_condition(last_renew: float | None, now: float, *, grace: float = GRACE_SECONDS) -> str:
    """The Ready status the lease implies: "True" while fresh, else "Unknown"."""
    return "True" if last_renew is not None and now - last_renew <= grace else "Unknown"


def last_renewal(lease: Obj | None, observed_since: float) -> float:
    renew = parse_time(((lease or {}).get("spec") or {}).get("renewTime"))
    return max(renew or 0.0, observed_since)


def _ready(node: Obj) -> Obj | None:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            return cond
    return None


def _has_taint(node: Obj) -> bool:
    return any(isinstance(t, dict) and t.get("key") == UNREACHABLE and t.get("effect") == "NoSchedule"
               for t in (node.get("spec") or {}).get("taints") or [])


@dataclass(frozen=True, slots=True)
class NodePlan:
    """What to change on one node. None fields mean "leave as is"."""

    ready: Obj | None  # the new Ready condition
    add_taint: bool
    remove_taint: bool


def plan_node(node: Obj, *, last_renew: float, now: float, grace: float = GRACE_SECONDS) -> NodePlan | None:
    ready = _ready(node)
    if node_condition(last_renew, now, grace=grace) == "Unknown":
        new_ready = None
        if ready is None or ready.get("status") != "Unknown":
            new_ready = {"type": "Ready", "status": "Unknown", "reason": UNKNOWN_REASON, "message": UNKNOWN_MESSAGE,
                         "lastHeartbeatTime": (ready or {}).get("lastHeartbeatTime") or format_time(last_renew),
                         "lastTransitionTime": format_time(now)}
        plan = NodePlan(new_ready, add_taint=not _has_taint(node), remove_taint=False)
    else:
        new_ready = None
        if ready is not None and ready.get("status") == "Unknown" and ready.get("reason") == UNKNOWN_REASON:
            new_ready = {"type": "Ready", "status": "True", "reason": "KubeletReady",
                         "message": "node lease renewed", "lastHeartbeatTime": format_time(last_renew),
                         "lastTransitionTime": format_time(now)}
        plan = NodePlan(new_ready, add_taint=False, remove_taint=_has_taint(node))
    if plan.ready is None and not plan.add_taint and not plan.remove_taint:
        return None
    return plan


def next_check(nodes_renewals: list[float], now: float, *, grace: float = GRACE_SECONDS) -> float | None:
    """Seconds until the soonest fresh lease goes stale."""
    pending = [r + grace - now for r in nodes_renewals if r + grace > now]
    return max(min(pending), 0.0) + 0.05 if pending else None


class NodeLifecycle:
    def __init__(self, registry: Registry, *, grace: float = GRACE_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.grace = grace
        self.clock = clock
        self.started = clock()
        self.nodes = registry.resource("nodes")
        self.leases = registry.resource("leases", "coordination.k8s.io")

    async def reconcile(self) -> float | None:
        now = self.clock()
        nodes = (await self.registry.list(self.nodes)).items
        leases = {l["metadata"]["name"]: l for l in (await self.registry.list(self.leases, LEASE_NAMESPACE)).items}
        renewals = []
        for node in nodes:
            name = node["metadata"]["name"]
            renew = last_renewal(leases.get(name), self.started)
            renewals.append(renew)
            plan = plan_node(node, last_renew=renew, now=now, grace=self.grace)
            if plan is not None:
                await self._apply(name, plan)
        return next_check(renewals, now, grace=self.grace)

    async def _apply(self, name: str, plan: NodePlan) -> None:
        async def set_ready(node: Obj) -> Obj | None:
            conds = [c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") != "Ready"]
            node.setdefault("status", {})["conditions"] = [*conds, plan.ready]
            return node

        def taints(node: Obj) -> Obj | None:
            spec = node.setdefault("spec", {})
            current = [t for t in spec.get("taints") or [] if not (t.get("key") == UNREACHABLE and t.get("effect") == "NoSchedule")]
            if plan.add_taint:
                if _has_taint(node):
                    return None
                current.append({"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": format_time(self.clock())})
            elif not _has_taint(node):
                return None
            if current:
                spec["taints"] = current
            else:
                spec.pop("taints", None)
            return node

        try:
            if plan.ready is not None:
                await self.registry.guaranteed_update(self.nodes, None, name, set_ready, subresource="status")
            if plan.add_taint or plan.remove_taint:
                await self.registry.guaranteed_update(self.nodes, None, name, taints)
        except ApiError as exc:
            if exc.code == 404:
                return  # deleted meanwhile
            raise
        state = "NotReady" if plan.add_taint or (plan.ready or {}).get("status") == "Unknown" else "Ready"
        log.info("node lifecycle", extra=fields(node=name, now=state))

    async def run(self, *, resync: float = 30.0) -> None:
        await run_loop("node-lifecycle", self.registry,
                       [(self.nodes, None), (self.leases, LEASE_NAMESPACE)], self.reconcile, resync=resync)
