"""ReplicaSet controller: keep ``spec.replicas`` pods of the template running.

Each pass lists every ReplicaSet and pod, claims the pods each ReplicaSet
selects (adopting orphans, releasing pods it no longer selects), creates the
missing pods from the template (owner reference with controller=true and
blockOwnerDeletion) or deletes the surplus, preferring pods that are
unscheduled, pending, not ready, or newest (``deletion_order``), and writes
status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
observedGeneration. A ReplicaSet being deleted is left alone; the garbage
collector handles its pods.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edgectl.log import fields

from ..registry import Registry
from ..status import ApiError
from .loop import run_loop
from .workloads import (
    ReadyTally, by_namespace, claim, is_active, is_ready, meta, parse_time, pod_from_template, record_event,
    selector_of, sync_each,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "replicaset-controller"
BURST = 100  # pods created or deleted per ReplicaSet per pass (upstream's slow start caps at 500)


def deletion_order(pod: Obj) -> tuple[int, int, int, float]:
    """Sort key: pods to delete first come first (upstream's ActivePods ranking,
    simplified): unscheduled, then Pending/Unknown, then not ready, then newest."""
    spec, st = pod.get("spec") or {}, pod.get("status") or {}
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(st.get("phase") or "Pending", 0)
    created = parse_time(meta(pod).get("creationTimestamp")) or 0.0
    return (1 if spec.get("nodeName") else 0, phase_rank, 1 if is_ready(pod) else 0, -created)


def replica_status(rs: Obj, pods: list[Obj], now: float) -> tuple[Obj, float | None]:
    """Status for ``pods`` (the active pods the ReplicaSet owns) and, when a
    Ready pod becomes available only after minReadySeconds, when to look again."""
    template_labels = ((rs.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    min_ready = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
    tally = ReadyTally(min_ready, now)
    for pod in pods:
        tally.add(pod)
    ready, available, wait = tally.ready, tally.available, tally.wait
    labels_ok = sum(1 for p in pods if all((meta(p).get("labels") or {}).get(k) == v for k, v in template_labels.items()))
    status: Obj = {"replicas": len(pods), "fullyLabeledReplicas": labels_ok, "readyReplicas": ready,
                   "availableReplicas": available, "observedGeneration": meta(rs).get("generation", 1)}
    # Upstream omits zero counts (omitempty); keep "replicas" always.
    return {k: v for k, v in status.items() if v or k == "replicas"}, wait


class ReplicaSetController:
    def __init__(self, registry: Registry, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.clock = clock
        self.rs = registry.resource("replicasets", "apps")
        self.pods = registry.resource("pods")

    async def reconcile(self) -> float | None:
        rss = (await self.registry.list(self.rs)).items
        if not rss:
            return None
        pods = by_namespace((await self.registry.list(self.pods)).items)
        return await sync_each("replicaset", rss, lambda rs: self.sync(rs, pods.get(meta(rs).get("namespace") or "", [])))

    async def sync(self, rs: Obj, ns_pods: list[Obj]) -> float | None:
        ns, name = meta(rs)["namespace"], meta(rs)["name"]
        owned = await claim(self.registry, self.pods, rs, self.rs, ns_pods, selector_of(rs))
        active = [p for p in owned if is_active(p)]
        if not meta(rs).get("deletionTimestamp"):
            want = int((rs.get("spec") or {}).get("replicas", 1))
            diff = want - len(active)
            if diff > 0:
                template = (rs.get("spec") or {}).get("template") or {}
                for _ in range(min(diff, BURST)):
                    pod = await self.registry.create(self.pods, pod_from_template(rs, self.rs, template), namespace=ns)
                    active.append(pod)
                    await record_event(self.registry, rs, self.rs, component=COMPONENT, reason="SuccessfulCreate",
                                       message=f"Created pod: {meta(pod)['name']}")
                log.info("replicaset created pods", extra=fields(replicaset=f"{ns}/{name}", count=min(diff, BURST)))
            elif diff < 0:
                doomed = sorted(active, key=deletion_order)[:min(-diff, BURST)]
                for pod in doomed:
                    try:
                        await self.registry.delete(self.pods, ns, meta(pod)["name"])
                    except ApiError as exc:
                        if exc.code != 404:
                            raise
                        continue
                    await record_event(self.registry, rs, self.rs, component=COMPONENT, reason="SuccessfulDelete",
                                       message=f"Deleted pod: {meta(pod)['name']}")
                gone = {meta(p)["name"] for p in doomed}
                active = [p for p in active if meta(p)["name"] not in gone]
                log.info("replicaset deleted pods", extra=fields(replicaset=f"{ns}/{name}", count=len(doomed)))
        status, wait = replica_status(rs, active, self.clock())
        if status != (rs.get("status") or {}):
            await self._write_status(ns, name, status)
        return wait

    async def _write_status(self, ns: str, name: str, status: Obj) -> None:
        def mutate(cur: Obj) -> Obj | None:
            keep = {k: v for k, v in (cur.get("status") or {}).items() if k == "conditions"}
            new = {**status, **keep}
            if new == cur.get("status"):
                return None
            cur["status"] = new
            return cur

        await self.registry.guaranteed_update(self.rs, ns, name, mutate, subresource="status")

    async def run(self, *, resync: float = 30.0) -> None:
        await run_loop("replicaset", self.registry, [(self.rs, None), (self.pods, None)], self.reconcile, resync=resync)
