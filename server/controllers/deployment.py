"""Deployment controller: one ReplicaSet per pod template, rolled as the strategy says.

The ReplicaSet for the current template is named ``<deployment>-<hash>`` and
carries the ``pod-template-hash`` label (in its selector and pod template too,
so ReplicaSets of one Deployment never share pods). Each ReplicaSet gets the
``deployment.kubernetes.io/revision`` annotation; a template that returns to an
older ReplicaSet's gets that ReplicaSet back with the next revision number.

- RollingUpdate: scale the new ReplicaSet up while the total stays within
  replicas + maxSurge (``new_replicas``), and the old ones down while at
  least replicas - maxUnavailable pods stay available (``old_scale_down``);
  both are upstream's arithmetic, as pure functions.
- Recreate: old ReplicaSets to zero, and once none of their pods is left,
  the new one to ``replicas``.
- Scaled mid-rollout (ReplicaSets annotated ``desired-replicas`` for another
  count): every active ReplicaSet takes its share (``proportional``).

Status (replicas, updatedReplicas, readyReplicas, availableReplicas,
unavailableReplicas, observedGeneration) and the Available/Progressing
conditions are what ``kubectl rollout status`` reads. Old ReplicaSets at zero
beyond ``revisionHistoryLimit`` are deleted, oldest first.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from typing import Any

from edgectl.log import fields

from ..registry import Registry
from ..status import ApiError
from .loop import run_loop
from .rfc3339 import format_time
from .workloads import (
    by_namespace, claim, controller_ref, int_or_percent, meta, owner_ref, parse_time,
    record_event, selector_of, set_condition, sync_each, template_hash,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "deployment-controller"
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"


def template_without_hash(template: Obj) -> Obj:
    out = copy.deepcopy(template or {})
    labels = (out.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return out


def revision(rs: Obj) -> int:
    try:
        return int((meta(rs).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def surge_and_unavailable(deploy: Obj) -> tuple[int, int]:
    """maxSurge rounds up, maxUnavailable down; both zero means one unavailable."""
    spec = deploy.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, 0  # upstream: Available means every replica is
    rolling = strategy.get("rollingUpdate") or {}
    surge = int_or_percent(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def spec_replicas(rs: Obj) -> int:
    return int((rs.get("spec") or {}).get("replicas", 0))


def st(rs: Obj, key: str) -> int:
    return int((rs.get("status") or {}).get(key) or 0)


def new_replicas(desired: int, surge: int, new: int, all_spec: int) -> int:
    """The new ReplicaSet's size this pass (upstream NewRSNewReplicas, RollingUpdate)."""
    if new >= desired:
        return desired
    room = desired + surge - all_spec
    if room <= 0:
        return new
    return new + min(room, desired - new)


def old_scale_down(desired: int, unavailable: int, new_rs: Obj | None, old: list[Obj]) -> dict[str, int]:
    """New sizes for old ReplicaSets (name -> replicas): unhealthy replicas go
    first, then available ones while replicas - maxUnavailable stay available."""
    old = [r for r in old if spec_replicas(r) > 0]
    if not old:
        return {}
    all_rs = old + ([new_rs] if new_rs is not None else [])
    all_spec = sum(spec_replicas(r) for r in all_rs)
    min_available = desired - unavailable
    new_unavailable = (spec_replicas(new_rs) - st(new_rs, "availableReplicas")) if new_rs is not None else 0
    max_down = all_spec - min_available - new_unavailable
    if max_down <= 0:
        return {}
    sizes = {meta(r)["name"]: spec_replicas(r) for r in old}
    oldest_first = sorted(old, key=lambda r: (parse_time(meta(r).get("creationTimestamp")) or 0.0, meta(r)["name"]))
    # 1. Replicas that are not available anyway.
    cleaned = 0
    for r in oldest_first:
        if cleaned >= max_down:
            break
        unhealthy = sizes[meta(r)["name"]] - st(r, "availableReplicas")
        if unhealthy <= 0:
            continue
        down = min(unhealthy, max_down - cleaned)
        sizes[meta(r)["name"]] -= down
        cleaned += down
    # 2. Available replicas, keeping min_available.
    available = sum(st(r, "availableReplicas") for r in all_rs)
    budget = min(available - min_available, max_down - cleaned)
    for r in oldest_first:
        if budget <= 0:
            break
        name = meta(r)["name"]
        down = min(sizes[name], budget)
        sizes[name] -= down
        budget -= down
    return {name: size for name, size in sizes.items() if size != spec_replicas(next(r for r in old if meta(r)["name"] == name))}


def proportional(allowed: int, sizes: list[tuple[str, int]]) -> dict[str, int]:
    """A Deployment scaled mid-rollout: spread the change of the total (to
    ``allowed`` = replicas + maxSurge) over the active ReplicaSets in proportion
    to their sizes, rounding leftovers onto the largest (upstream's
    proportional scaling, sized by the current total). Name -> new size, for
    the ones that change."""
    total = sum(n for _, n in sizes)
    to_add = allowed - total
    if not sizes or to_add == 0 or total == 0:
        return {}
    ordered = sorted(sizes, key=lambda s: -s[1])  # stable: ties keep the caller's (newest first) order
    out: dict[str, int] = {}
    added = 0
    for name, n in ordered:
        share = round(n * allowed / total) - n
        share = min(share, to_add - added) if to_add > 0 else max(share, to_add - added)
        out[name] = n + share
        added += share
    out[ordered[0][0]] += to_add - added
    before = dict(sizes)
    return {name: max(0, size) for name, size in out.items() if max(0, size) != before[name]}


def same(a: Obj | None, b: Obj | None) -> bool:
    """The same ReplicaSet (objects are re-read after each write, so not ``is``)."""
    return a is not None and b is not None and meta(a).get("name") == meta(b).get("name")


def condition(kind: str, status: str, reason: str, message: str, now: str) -> Obj:
    return {"type": kind, "status": status, "lastUpdateTime": now, "lastTransitionTime": now, "reason": reason,
            "message": message}


def find(conditions: list[Obj], kind: str) -> Obj | None:
    return next((c for c in conditions if c.get("type") == kind), None)


class DeploymentController:
    def __init__(self, registry: Registry, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.clock = clock
        self.deploy = registry.resource("deployments", "apps")
        self.rs = registry.resource("replicasets", "apps")
        self.pods = registry.resource("pods")

    async def reconcile(self) -> float | None:
        deploys = (await self.registry.list(self.deploy)).items
        if not deploys:
            return None
        rss = by_namespace((await self.registry.list(self.rs)).items)
        # Only Recreate looks at pods (no new pod while an old one exists).
        recreate = any(((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate" for d in deploys)
        pods = by_namespace((await self.registry.list(self.pods, shared=True)).items) if recreate else {}
        return await sync_each("deployment", deploys, lambda d: self.sync(d, rss.get(meta(d)["namespace"], []),
                                                                         pods.get(meta(d)["namespace"], [])))

    async def sync(self, d: Obj, ns_rss: list[Obj], ns_pods: list[Obj]) -> float | None:
        ns, name = meta(d)["namespace"], meta(d)["name"]
        owned = await claim(self.registry, self.rs, d, self.deploy, ns_rss, selector_of(d))
        if meta(d).get("deletionTimestamp"):
            return None
        spec = d.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        template = spec.get("template") or {}
        new_rs = next((r for r in owned if template_without_hash((r.get("spec") or {}).get("template") or {})
                       == template_without_hash(template)), None)
        old = [r for r in owned if r is not new_rs]
        max_old = max((revision(r) for r in old), default=0)
        created_now = False
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        surge, unavailable = surge_and_unavailable(d)
        paused = bool(spec.get("paused"))

        if new_rs is not None and revision(new_rs) <= max_old:
            new_rs = await self._annotate(ns, meta(new_rs)["name"], {REVISION: str(max_old + 1)})
        min_ready = int(spec.get("minReadySeconds") or 0)
        if new_rs is not None and int((new_rs.get("spec") or {}).get("minReadySeconds") or 0) != min_ready:
            new_rs = await self.registry.guaranteed_update(  # a template-less change the ReplicaSet must follow
                self.rs, ns, meta(new_rs)["name"], lambda cur: {**cur, "spec": {**cur["spec"], "minReadySeconds": min_ready}})
        if not recreate and self._is_scaling_event(owned, desired):
            # Scaled mid-rollout (paused or not): every active ReplicaSet grows or
            # shrinks by its share, so a stalled new ReplicaSet does not take them all.
            active = sorted((r for r in owned if spec_replicas(r) > 0),
                            key=lambda r: -(parse_time(meta(r).get("creationTimestamp")) or 0.0))
            allowed = desired + surge if desired > 0 else 0
            for rname, size in proportional(allowed, [(meta(r)["name"], spec_replicas(r)) for r in active]).items():
                r = next(x for x in active if meta(x)["name"] == rname)
                scaled = await self._scale(d, r, size)
                new_rs = scaled if same(r, new_rs) else new_rs
                old = [scaled if same(x, r) else x for x in old]
        elif paused:
            # No rollout while paused, but a lone active ReplicaSet still follows replicas.
            active = [r for r in owned if spec_replicas(r) > 0]
            if len(active) == 1 and spec_replicas(active[0]) != desired:
                scaled = await self._scale(d, active[0], desired)
                new_rs = scaled if same(active[0], new_rs) else new_rs
                old = [scaled if same(r, active[0]) else r for r in old]
        elif recreate:
            for r in old:
                if spec_replicas(r) > 0:
                    await self._scale(d, r, 0)
            # Terminating pods count as running: Recreate means no overlap at all.
            old_uids = {meta(r)["uid"] for r in old}
            old_running = any((p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                              and (controller_ref(p) or {}).get("uid") in old_uids for p in ns_pods)
            if not old_running:
                if new_rs is None:
                    new_rs, created_now = await self._create_rs(d, desired, max_old + 1), True
                elif spec_replicas(new_rs) != desired:
                    new_rs = await self._scale(d, new_rs, desired)
        else:
            all_spec = sum(spec_replicas(r) for r in old)
            if new_rs is None:
                size = new_replicas(desired, surge, 0, all_spec)
                new_rs, created_now = await self._create_rs(d, size, max_old + 1), True
            else:
                size = new_replicas(desired, surge, spec_replicas(new_rs), all_spec + spec_replicas(new_rs))
                if size != spec_replicas(new_rs):
                    new_rs = await self._scale(d, new_rs, size)
            for rname, size in old_scale_down(desired, unavailable, new_rs, old).items():
                r = next(x for x in old if meta(x)["name"] == rname)
                idx = old.index(r)
                old[idx] = await self._scale(d, r, size)
        if not paused and all(spec_replicas(r) == 0 and st(r, "replicas") == 0 for r in old):
            await self._cleanup(ns, old, int(spec.get("revisionHistoryLimit", 10)))
        for r in ([new_rs] if new_rs is not None else []) + old:  # remember the size they were scaled for
            if spec_replicas(r) > 0 and (meta(r).get("annotations") or {}).get(DESIRED) != str(desired):
                updated = await self._annotate(ns, meta(r)["name"], {DESIRED: str(desired), MAX_REPLICAS: str(desired + surge)})
                new_rs = updated if same(r, new_rs) else new_rs
        if new_rs is not None and (meta(d).get("annotations") or {}).get(REVISION) != str(revision(new_rs)):
            await self._annotate_deployment(ns, name, str(revision(new_rs)))
        return await self._sync_status(d, new_rs, old, created_now, unavailable)

    @staticmethod
    def _is_scaling_event(owned: list[Obj], desired: int) -> bool:
        """More than one active ReplicaSet, and one was sized for another replica count."""
        active = [r for r in owned if spec_replicas(r) > 0]
        return len(active) > 1 and any((meta(r).get("annotations") or {}).get(DESIRED) != str(desired) for r in active)

    async def _create_rs(self, d: Obj, replicas: int, rev: int) -> Obj:
        ns, name = meta(d)["namespace"], meta(d)["name"]
        spec = d.get("spec") or {}
        template = copy.deepcopy(spec.get("template") or {})
        collisions = int((d.get("status") or {}).get("collisionCount") or 0)
        h = template_hash(template_without_hash(template), collisions)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = h
        surge, _ = surge_and_unavailable(d)
        rs = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-{h}", "namespace": ns, "labels": dict(template["metadata"]["labels"]),
                "annotations": {REVISION: str(rev), DESIRED: str(spec.get("replicas", 1)),
                                MAX_REPLICAS: str(int(spec.get("replicas", 1)) + surge)},
                "ownerReferences": [owner_ref(d, self.deploy)],
            },
            "spec": {"replicas": replicas, "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                     "selector": selector, "template": template},
        }
        try:
            out = await self.registry.create(self.rs, rs, namespace=ns)
        except ApiError as exc:
            if exc.code != 409:
                raise
            # A ReplicaSet of that name that is not ours (or not this template): count a
            # collision so the next pass hashes differently, as upstream does.
            await self._bump_collisions(ns, name, collisions + 1)
            raise
        log.info("deployment created replicaset", extra=fields(deployment=f"{ns}/{name}", replicaset=meta(out)["name"],
                                                                replicas=replicas, revision=rev))
        if replicas:
            await self._scaling_event(d, meta(out)["name"], 0, replicas)
        return out

    async def _bump_collisions(self, ns: str, name: str, count: int) -> None:
        def mutate(cur: Obj) -> Obj:
            cur.setdefault("status", {})["collisionCount"] = count
            return cur

        await self.registry.guaranteed_update(self.deploy, ns, name, mutate, subresource="status")

    async def _scale(self, deploy: Obj, rs: Obj, replicas: int) -> Obj:
        ns = meta(deploy)["namespace"]

        def mutate(cur: Obj) -> Obj | None:
            if spec_replicas(cur) == replicas:
                return None
            cur.setdefault("spec", {})["replicas"] = replicas
            return cur

        out = await self.registry.guaranteed_update(self.rs, ns, meta(rs)["name"], mutate)
        before = spec_replicas(rs)
        if before != replicas:
            log.info("deployment scaled replicaset", extra=fields(replicaset=f"{ns}/{meta(rs)['name']}", replicas=replicas))
            await self._scaling_event(deploy, meta(rs)["name"], before, replicas)
        return out

    async def _scaling_event(self, deploy: Obj, rs_name: str, before: int, after: int) -> None:
        direction = "up" if after > before else "down"
        await record_event(self.registry, deploy, self.deploy, component=COMPONENT, reason="ScalingReplicaSet",
                           message=f"Scaled {direction} replica set {rs_name} from {before} to {after}")

    async def _annotate(self, ns: str, name: str, annotations: dict[str, str]) -> Obj:
        def mutate(cur: Obj) -> Obj:
            cur["metadata"].setdefault("annotations", {}).update(annotations)
            return cur

        return await self.registry.guaranteed_update(self.rs, ns, name, mutate)

    async def _annotate_deployment(self, ns: str, name: str, rev: str) -> None:
        def mutate(cur: Obj) -> Obj | None:
            annotations = cur["metadata"].setdefault("annotations", {})
            if annotations.get(REVISION) == rev:
                return None
            annotations[REVISION] = rev
            return cur

        await self.registry.guaranteed_update(self.deploy, ns, name, mutate)

    async def _cleanup(self, ns: str, old: list[Obj], limit: int) -> None:
        idle = sorted((r for r in old if not meta(r).get("deletionTimestamp")), key=revision)
        for r in idle[:max(0, len(idle) - limit)]:
            try:
                await self.registry.delete(self.rs, ns, meta(r)["name"])
                log.info("deployment history trimmed", extra=fields(replicaset=f"{ns}/{meta(r)['name']}"))
            except ApiError as exc:
                if exc.code != 404:
                    raise

    async def _sync_status(self, d: Obj, new_rs: Obj | None, old: list[Obj], created_now: bool,
                           unavailable: int) -> float | None:
        ns, name = meta(d)["namespace"], meta(d)["name"]
        spec, prev = d.get("spec") or {}, d.get("status") or {}
        desired = int(spec.get("replicas", 1))
        all_rs = old + ([new_rs] if new_rs is not None else [])
        available = sum(st(r, "availableReplicas") for r in all_rs)
        status: Obj = {
            "observedGeneration": meta(d).get("generation", 1),
            "replicas": sum(st(r, "replicas") for r in all_rs),
            "updatedReplicas": st(new_rs, "replicas") if new_rs is not None else 0,
            "readyReplicas": sum(st(r, "readyReplicas") for r in all_rs),
            "availableReplicas": available,
            "unavailableReplicas": max(0, desired - available),
        }
        if prev.get("collisionCount"):
            status["collisionCount"] = prev["collisionCount"]
        now_ts = self.clock()
        now = format_time(now_ts)
        conds = [c for c in prev.get("conditions") or [] if isinstance(c, dict)]
        if available >= desired - unavailable:
            avail = condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", now)
        else:
            avail = condition("Available", "False", "MinimumReplicasUnavailable",
                              "Deployment does not have minimum availability.", now)
        old_avail = find(conds, "Available")
        if old_avail is None or (old_avail.get("status"), old_avail.get("reason")) != (avail["status"], avail["reason"]):
            conds = set_condition(conds, avail)
        rs_name = meta(new_rs)["name"] if new_rs is not None else ""
        progressing = find(conds, "Progressing")
        complete = (new_rs is not None and status["updatedReplicas"] == desired and status["replicas"] == desired
                    and available == desired)
        deadline = spec.get("progressDeadlineSeconds")
        wait: float | None = None
        if spec.get("paused"):
            new_prog = None
        elif created_now:
            new_prog = condition("Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "{rs_name}"', now)
        elif complete:
            new_prog = condition("Progressing", "True", "NewReplicaSetAvailable",
                                 f'ReplicaSet "{rs_name}" has successfully progressed.', now)
        elif any((status.get(k) or 0) != (prev.get(k) or 0)
                 for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")) \
                or progressing is None or progressing.get("reason") == "NewReplicaSetAvailable":
            new_prog = condition("Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.', now)
        else:
            new_prog = None
            last = parse_time((progressing or {}).get("lastUpdateTime"))
            if isinstance(deadline, int) and last is not None and progressing.get("reason") != "ProgressDeadlineExceeded":
                if now_ts >= last + deadline:
                    new_prog = condition("Progressing", "False", "ProgressDeadlineExceeded",
                                         f'ReplicaSet "{rs_name}" has timed out progressing.', now)
                else:
                    wait = last + deadline - now_ts
        if new_prog is not None:
            same = progressing is not None and all(progressing.get(k) == new_prog.get(k) for k in ("status", "reason", "message"))
            if not same or new_prog["reason"] == "ReplicaSetUpdated":
                conds = set_condition(conds, new_prog)
            if new_prog["reason"] == "ReplicaSetUpdated" and isinstance(deadline, int):
                wait = float(deadline)
        status = {k: v for k, v in status.items() if v}  # upstream omits zero counts (omitempty)
        status["conditions"] = conds
        if status != prev:
            def mutate(cur: Obj) -> Obj | None:
                if cur.get("status") == status:
                    return None
                cur["status"] = status
                return cur

            await self.registry.guaranteed_update(self.deploy, ns, name, mutate, subresource="status")
        return wait

    async def run(self, *, resync: float = 30.0) -> None:
        await run_loop("deployment", self.registry, [(self.deploy, None), (self.rs, None), (self.pods, None)],
                       self.reconcile, resync=resync)
