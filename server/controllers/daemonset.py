"""DaemonSet controller: one pod per eligible node.

A node is eligible when its labels match the template's ``nodeSelector`` and
required node affinity (``affinity_matches``) and the pod tolerates every NoSchedule/NoExecute taint, counting the tolerations
upstream adds to every daemon pod (``DAEMON_TOLERATIONS``: not-ready and
unreachable NoExecute, the pressure and unschedulable NoSchedule taints). A
pod already on a node keeps running while only NoSchedule taints are
untolerated (``placement``). Pods are created with ``spec.nodeName`` set, so
they bypass the scheduler, as daemon pods may.

Pods carry ``controller-revision-hash`` (a hash of the template). With the
RollingUpdate strategy, pods of an older hash are deleted, unavailable ones
first, while at most ``maxUnavailable`` nodes are without an available pod;
the node then gets a pod of the current template. With ``maxSurge`` the new
pod starts next to the old one (at most maxSurge nodes at a time) and the old
one goes once the new one is available. OnDelete replaces nothing.
Each template is also kept as a ControllerRevision (``_history``), which is
what ``kubectl rollout history|undo daemonset`` read.
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
from .scheduler import selector_matches, tolerates
from .workloads import (
    ReadyTally, available_in, by_namespace, claim, int_or_percent, is_active, meta, owner_ref, parse_time,
    pod_from_template, record_event, selector_of, sync_each, template_hash,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "daemonset-controller"
HASH_LABEL = "controller-revision-hash"
GENERATION_LABEL = "pod-template-generation"
DAEMON_TOLERATIONS: tuple[Obj, ...] = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
NETWORK_UNAVAILABLE = {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"}


def daemon_tolerations(pod_spec: Obj) -> list[Obj]:
    """The template's tolerations plus upstream's daemon ones (not duplicated)."""
    own = [t for t in pod_spec.get("tolerations") or [] if isinstance(t, dict)]
    extra = list(DAEMON_TOLERATIONS) + ([NETWORK_UNAVAILABLE] if pod_spec.get("hostNetwork") else [])
    keys = {(t.get("key"), t.get("effect")) for t in own}
    return own + [dict(t) for t in extra if (t["key"], t["effect"]) not in keys]


def _requirement(expr: Any, value: str | None) -> bool:
    if not isinstance(expr, dict):
        return False
    op, values = expr.get("operator"), [str(v) for v in expr.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            left, right = int(value), int(values[0])
        except ValueError:
            return False
        return left > right if op == "Gt" else left < right
    return False


def affinity_matches(pod_spec: Obj, node: Obj) -> bool:
    """requiredDuringSchedulingIgnoredDuringExecution: any term whose label
    expressions and ``metadata.name`` field expressions all hold."""
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if not isinstance(required, dict):
        return True
    labels = meta(node).get("labels") or {}
    for term in required.get("nodeSelectorTerms") or []:
        if not isinstance(term, dict):
            continue
        exprs, field_exprs = term.get("matchExpressions") or [], term.get("matchFields") or []
        if not exprs and not field_exprs:
            continue  # an empty term selects nothing
        if all(_requirement(e, labels.get(str(e.get("key")))) for e in exprs if isinstance(e, dict)) and \
                all(isinstance(e, dict) and e.get("key") == "metadata.name" and _requirement(e, meta(node).get("name"))
                    for e in field_exprs):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Placement:
    should_run: bool  # a new daemon pod may be placed here
    should_continue: bool  # an existing one may stay


def placement(pod_spec: Obj, node: Obj) -> Placement:
    if meta(node).get("deletionTimestamp") or not selector_matches({"spec": pod_spec}, node) \
            or not affinity_matches(pod_spec, node):
        return Placement(False, False)
    tolerations = daemon_tolerations(pod_spec)
    run = keep = True
    for taint in (node.get("spec") or {}).get("taints") or []:
        if not isinstance(taint, dict) or taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if tolerates(tolerations, taint):
            continue
        run = False
        if taint.get("effect") == "NoExecute":
            keep = False
    return Placement(run, keep)


def max_surge(ds: Obj, desired: int) -> int:
    rolling = (((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {})
    return int_or_percent(rolling.get("maxSurge", 0), desired, round_up=True)


def keep_on_node(pods: list[Obj], current: str, *, surge: bool) -> list[Obj]:
    """Which of a node's running daemon pods stay: one, preferring the current
    template and then the oldest; while surging, also the oldest old-template
    pod (it serves until the new one is available)."""
    pods = sorted(pods, key=lambda p: ((meta(p).get("labels") or {}).get(HASH_LABEL) != current,
                                       parse_time(meta(p).get("creationTimestamp")) or 0.0))
    keep = pods[:1]
    if surge and keep and (meta(keep[0]).get("labels") or {}).get(HASH_LABEL) == current:
        keep += [p for p in pods[1:] if (meta(p).get("labels") or {}).get(HASH_LABEL) != current][:1]
    return keep


def max_unavailable(ds: Obj, desired: int) -> int:
    rolling = (((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {})
    value = int_or_percent(rolling.get("maxUnavailable", 1), desired, round_up=True)
    return max(value, 1) if not int_or_percent(rolling.get("maxSurge", 0), desired, round_up=True) else value


class DaemonSetController:
    def __init__(self, registry: Registry, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.clock = clock
        self.ds = registry.resource("daemonsets", "apps")
        self.pods = registry.resource("pods")
        self.nodes = registry.resource("nodes")
        self.revisions = registry.resource("controllerrevisions", "apps")

    async def reconcile(self) -> float | None:
        dss = (await self.registry.list(self.ds)).items
        if not dss:
            return None
        nodes = (await self.registry.list(self.nodes)).items
        pods = by_namespace((await self.registry.list(self.pods)).items)
        revisions = by_namespace((await self.registry.list(self.revisions)).items)
        return await sync_each("daemonset", dss, lambda ds: self.sync(
            ds, nodes, pods.get(meta(ds)["namespace"], []), revisions.get(meta(ds)["namespace"], [])))

    async def sync(self, ds: Obj, nodes: list[Obj], ns_pods: list[Obj], ns_revisions: list[Obj] | None = None) -> float | None:
        ns, name = meta(ds)["namespace"], meta(ds)["name"]
        owned = await claim(self.registry, self.pods, ds, self.ds, ns_pods, selector_of(ds))
        if meta(ds).get("deletionTimestamp"):
            return None
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        pod_spec = template.get("spec") or {}
        current = template_hash(template)
        await self._history(ds, ns_revisions or [], current, {(meta(p).get("labels") or {}).get(HASH_LABEL) for p in owned})
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = self.clock()
        on_node: dict[str, list[Obj]] = {}
        for pod in owned:
            node = (pod.get("spec") or {}).get("nodeName") or ""
            on_node.setdefault(node, []).append(pod)
        to_create: list[str] = []
        to_delete: list[Obj] = []
        rolling = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
        surge = max_surge(ds, sum(1 for n in nodes if placement(pod_spec, n).should_run))
        desired_nodes: list[str] = []
        for node in nodes:
            nname = meta(node)["name"]
            place = placement(pod_spec, node)
            pods = on_node.pop(nname, [])
            failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed" and not meta(p).get("deletionTimestamp")]
            running = [p for p in pods if is_active(p)]
            to_delete += failed
            if place.should_run or (place.should_continue and running):
                desired_nodes.append(nname)
            if not place.should_continue:
                to_delete += running
            elif not running and place.should_run:
                to_create.append(nname)
            elif len(running) > 1:
                keep = keep_on_node(running, current, surge=rolling and surge > 0)
                to_delete += [p for p in running if p not in keep]
        for pods in on_node.values():  # pods on nodes that no longer exist (or none at all)
            to_delete += [p for p in pods if is_active(p)]
        if rolling:
            doomed, surged = self._rolling(ds, desired_nodes, owned, current, min_ready, now, to_delete)
            to_delete += doomed
            to_create += surged
        for node_name in to_create:
            pod = pod_from_template(ds, self.ds, template, extra_labels={
                HASH_LABEL: current, GENERATION_LABEL: str(meta(ds).get("generation", 1))})
            pod["spec"]["nodeName"] = node_name
            pod["spec"]["tolerations"] = daemon_tolerations(pod["spec"])
            created = await self.registry.create(self.pods, pod, namespace=ns)
            owned.append(created)
            await record_event(self.registry, ds, self.ds, component=COMPONENT, reason="SuccessfulCreate",
                               message=f"Created pod: {meta(created)['name']}")
            log.info("daemonset created pod", extra=fields(daemonset=f"{ns}/{name}", node=node_name, pod=meta(created)["name"]))
        gone: set[str] = set()
        for pod in to_delete:
            if meta(pod)["name"] in gone:
                continue
            gone.add(meta(pod)["name"])
            try:
                await self.registry.delete(self.pods, ns, meta(pod)["name"])
                log.info("daemonset deleted pod", extra=fields(daemonset=f"{ns}/{name}", pod=meta(pod)["name"]))
            except ApiError as exc:
                if exc.code != 404:
                    raise
                continue
            await record_event(self.registry, ds, self.ds, component=COMPONENT, reason="SuccessfulDelete",
                               message=f"Deleted pod: {meta(pod)['name']}")
        remaining = [p for p in owned if meta(p)["name"] not in gone and is_active(p)]
        return await self._sync_status(ds, desired_nodes, remaining, current, min_ready, now)

    async def _history(self, ds: Obj, ns_revisions: list[Obj], current: str, in_use: set[str | None]) -> None:
        """One ControllerRevision per template (``<ds>-<hash>``, data = the
        template as a strategic-merge patch that replaces it, as upstream), the
        current one holding the highest revision number; unused ones beyond
        revisionHistoryLimit are deleted, oldest first."""
        ns, name = meta(ds)["namespace"], meta(ds)["name"]
        owned = await claim(self.registry, self.revisions, ds, self.ds, ns_revisions, selector_of(ds))
        top = max((int(r.get("revision") or 0) for r in owned), default=0)
        mine = next((r for r in owned if (meta(r).get("labels") or {}).get(HASH_LABEL) == current), None)
        template = (ds.get("spec") or {}).get("template") or {}
        if mine is None:
            revision = {
                "apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": f"{name}-{current}", "namespace": ns,
                             "labels": {**((template.get("metadata") or {}).get("labels") or {}), HASH_LABEL: current},
                             "ownerReferences": [owner_ref(ds, self.ds)]},
                "data": {"spec": {"template": {**template, "$patch": "replace"}}},
                "revision": top + 1,
            }
            mine = await self.registry.create(self.revisions, revision, namespace=ns)
            owned.append(mine)
        elif int(mine.get("revision") or 0) < top:
            def bump(cur: Obj) -> Obj:
                cur["revision"] = top + 1  # a rollback makes the old template the newest revision
                return cur
            await self.registry.guaranteed_update(self.revisions, ns, meta(mine)["name"], bump)
        limit = int((ds.get("spec") or {}).get("revisionHistoryLimit", 10))
        idle = sorted((r for r in owned if r is not mine and (meta(r).get("labels") or {}).get(HASH_LABEL) not in in_use),
                      key=lambda r: int(r.get("revision") or 0))
        for r in idle[:max(0, len(idle) - limit)]:
            try:
                await self.registry.delete(self.revisions, ns, meta(r)["name"])
            except ApiError as exc:
                if exc.code != 404:
                    raise

    def _rolling(self, ds: Obj, desired_nodes: list[str], owned: list[Obj], current: str, min_ready: int,
                 now: float, already: list[Obj]) -> tuple[list[Obj], list[str]]:
        """Old-template pods to delete and nodes to give a new pod this pass
        (upstream's rollingUpdate: delete first with maxSurge 0, else surge)."""
        doomed = {meta(p)["name"] for p in already}
        by_node = {n: [p for p in owned if (p.get("spec") or {}).get("nodeName") == n and is_active(p)
                       and meta(p)["name"] not in doomed] for n in desired_nodes}
        surge = max_surge(ds, len(desired_nodes))
        if surge > 0:
            return self._surge(by_node, current, surge, min_ready, now)
        budget = max_unavailable(ds, len(desired_nodes))
        unavailable = sum(1 for pods in by_node.values() if not any(is_available_pod(p, min_ready, now) for p in pods))
        out: list[Obj] = []
        candidates = []
        for pods in by_node.values():
            for pod in pods:
                if (meta(pod).get("labels") or {}).get(HASH_LABEL) == current:
                    continue
                if not is_available_pod(pod, min_ready, now):
                    out.append(pod)  # not serving anyway: replace at once
                else:
                    candidates.append(pod)
        for pod in sorted(candidates, key=lambda p: (p.get("spec") or {}).get("nodeName") or ""):
            if unavailable >= budget:
                break
            out.append(pod)
            unavailable += 1
        return out, []

    @staticmethod
    def _surge(by_node: dict[str, list[Obj]], current: str, surge: int, min_ready: int,
               now: float) -> tuple[list[Obj], list[str]]:
        """maxSurge > 0: a node gets its new pod next to the old one (at most
        ``surge`` nodes at a time, unless the old pod is unavailable anyway);
        the old pod goes once the new one is available."""
        def is_new(p: Obj) -> bool:
            return (meta(p).get("labels") or {}).get(HASH_LABEL) == current

        delete: list[Obj] = []
        create: list[str] = []
        surging = sum(1 for pods in by_node.values() if any(map(is_new, pods)) and not all(map(is_new, pods)))
        for node, pods in sorted(by_node.items()):
            new = [p for p in pods if is_new(p)]
            old = [p for p in pods if not is_new(p)]
            if not old:
                continue
            if new:
                if any(is_available_pod(p, min_ready, now) for p in new):
                    delete += old
                continue
            if not any(is_available_pod(p, min_ready, now) for p in old):
                create.append(node)  # not serving anyway: no need to wait for a surge slot
            elif surging < surge:
                create.append(node)
                surging += 1
        return delete, create

    async def _sync_status(self, ds: Obj, desired_nodes: list[str], pods: list[Obj], current: str, min_ready: int,
                           now: float) -> float | None:
        ns, name = meta(ds)["namespace"], meta(ds)["name"]
        want = set(desired_nodes)
        scheduled = updated = misscheduled = 0
        tally = ReadyTally(min_ready, now)
        seen: set[str] = set()
        for pod in sorted(pods, key=lambda p: ((meta(p).get("labels") or {}).get(HASH_LABEL) != current,
                                               parse_time(meta(p).get("creationTimestamp")) or 0.0)):
            node = (pod.get("spec") or {}).get("nodeName") or ""
            if node not in want:
                misscheduled += node not in seen
                seen.add(node)
                continue
            if node in seen:
                continue
            seen.add(node)
            scheduled += 1
            if (meta(pod).get("labels") or {}).get(HASH_LABEL) == current:
                updated += 1
            tally.add(pod)
        ready, available, wait = tally.ready, tally.available, tally.wait
        status: Obj = {
            "currentNumberScheduled": scheduled, "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": len(want), "numberReady": ready,
            "observedGeneration": meta(ds).get("generation", 1), "updatedNumberScheduled": updated,
            "numberAvailable": available, "numberUnavailable": len(want) - available,
        }
        status = {k: v for k, v in status.items() if v or k in ("currentNumberScheduled", "numberMisscheduled",
                                                               "desiredNumberScheduled", "numberReady")}

        def mutate(cur: Obj) -> Obj | None:
            keep = {k: v for k, v in (cur.get("status") or {}).items() if k in ("conditions", "collisionCount")}
            new = {**status, **keep}
            if new == cur.get("status"):
                return None
            cur["status"] = new
            return cur

        await self.registry.guaranteed_update(self.ds, ns, name, mutate, subresource="status")
        return wait

    async def run(self, *, resync: float = 30.0) -> None:
        await run_loop("daemonset", self.registry, [(self.ds, None), (self.pods, None), (self.nodes, None)],
                       self.reconcile, resync=resync)


def is_available_pod(pod: Obj, min_ready: int, now: float) -> bool:
    return available_in(pod, min_ready, now) == 0.0
