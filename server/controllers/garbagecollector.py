"""Garbage collector: ownerReferences and deletion propagation.

Each pass lists every stored kind and plans from that snapshot (``plan``, pure):

- an object being deleted with the ``orphan`` finalizer (propagationPolicy
  Orphan): its dependents lose their ownerReference to it, then the finalizer
  goes and the registry removes the object;
- with ``foregroundDeletion`` (Foreground): its dependents are deleted
  (foreground too, so a Deployment waits for its ReplicaSets' pods); once no
  dependent with ``blockOwnerDeletion`` is left, the finalizer goes. A
  dependent that has other, live owners only loses the reference;
- an object none of whose owners exists any more (Background, the default,
  removed the owner at once) is deleted in the background; references to
  missing owners next to live ones are removed.

An owner missing from the snapshot is looked up directly before anything is
deleted (it may have been created after its kind was listed).

Pods bound to a Node that no longer exists are force-deleted (upstream's pod
GC) once the node has been missing for ``ORPHAN_POD_GRACE`` seconds, so a
ReplicaSet replaces them and a removed node's Terminating pods do not stay
forever (no kubelet will ever confirm them).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from edgectl.log import fields

from ..registry import FOREGROUND_FINALIZER, ORPHAN_FINALIZER, Registry
from ..resources import VIRTUAL, Resource
from ..status import ApiError
from .loop import run_loop

log = logging.getLogger(__name__)
Obj = dict[str, Any]

# Kinds whose churn would wake the collector for nothing (node heartbeats,
# events); the periodic resync still covers them.
UNWATCHED = ("leases", "events")
ORPHAN_POD_GRACE = 40.0  # upstream's pod GC quarantine for pods of missing nodes

Ref = tuple[str, str | None, str]  # (plural.group, namespace, name)


def _meta(obj: Obj) -> Obj:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def owner_refs(obj: Obj) -> list[Obj]:
    return [r for r in _meta(obj).get("ownerReferences") or [] if isinstance(r, dict) and r.get("uid")]


@dataclass
class Plan:
    """Writes for one pass. Keys name objects as (Resource, namespace, name)."""

    strip_refs: dict[tuple[Resource, str | None, str], set[str]] = field(default_factory=dict)  # -> owner uids to drop
    delete_foreground: list[tuple[Resource, str | None, str]] = field(default_factory=list)
    delete_background: list[tuple[Resource, str | None, str]] = field(default_factory=list)
    drop_finalizer: list[tuple[Resource, str | None, str, str]] = field(default_factory=list)
    check_owners: dict[tuple[Resource, str | None, str], list[Obj]] = field(default_factory=dict)  # refs not in the snapshot


def plan(objects: Iterable[tuple[Resource, Obj]]) -> Plan:
    objects = list(objects)
    by_uid = {_meta(o).get("uid"): o for _, o in objects if _meta(o).get("uid")}
    dependents: dict[str, list[tuple[Resource, Obj]]] = {}
    for res, obj in objects:
        for ref in owner_refs(obj):
            dependents.setdefault(ref["uid"], []).append((res, obj))
    out = Plan()

    def key(res: Resource, obj: Obj) -> tuple[Resource, str | None, str]:
        return (res, _meta(obj).get("namespace"), _meta(obj)["name"])

    for res, obj in objects:
        meta = _meta(obj)
        uid = meta.get("uid")
        finalizers = meta.get("finalizers") or []
        if not meta.get("deletionTimestamp") or not uid:
            continue
        deps = dependents.get(uid, [])
        if ORPHAN_FINALIZER in finalizers:
            for dres, dep in deps:
                out.strip_refs.setdefault(key(dres, dep), set()).add(uid)
            out.drop_finalizer.append((*key(res, obj), ORPHAN_FINALIZER))
        elif FOREGROUND_FINALIZER in finalizers:
            blocking = False
            for dres, dep in deps:
                others = [r for r in owner_refs(dep) if r["uid"] != uid and r["uid"] in by_uid
                          and not _meta(by_uid[r["uid"]]).get("deletionTimestamp")]
                if others:
                    out.strip_refs.setdefault(key(dres, dep), set()).add(uid)
                    continue
                ref = next(r for r in owner_refs(dep) if r["uid"] == uid)
                blocking = blocking or bool(ref.get("blockOwnerDeletion"))
                if not _meta(dep).get("deletionTimestamp"):
                    out.delete_foreground.append(key(dres, dep))
            if not blocking:
                out.drop_finalizer.append((*key(res, obj), FOREGROUND_FINALIZER))
    for res, obj in objects:
        refs = owner_refs(obj)
        if not refs or _meta(obj).get("deletionTimestamp"):
            continue
        unknown = [r for r in refs if r["uid"] not in by_uid]
        if unknown:
            out.check_owners[key(res, obj)] = unknown
    return out


def pods_on_missing_nodes(objects: Iterable[tuple[Resource, Obj]]) -> list[Obj]:
    """Pods bound (spec.nodeName) to a node that is not in the snapshot."""
    objects = list(objects)
    nodes = {_meta(o).get("name") for r, o in objects if r.plural == "nodes"}
    return [o for r, o in objects if r.plural == "pods" and (o.get("spec") or {}).get("nodeName")
            and o["spec"]["nodeName"] not in nodes]


class GarbageCollector:
    def __init__(self, registry: Registry, *, clock: Callable[[], float] = time.monotonic,
                 orphan_pod_grace: float = ORPHAN_POD_GRACE) -> None:
        self.registry = registry
        self.clock = clock
        self.orphan_pod_grace = orphan_pod_grace
        self.kinds = [r for r in registry.table.resources if r.plural not in VIRTUAL]
        self._missing_since: dict[str, float] = {}  # pod uid -> when its node was first seen missing

    async def reconcile(self) -> float | None:
        objects: list[tuple[Resource, Obj]] = []
        for res in self.kinds:
            objects += [(res, o) for o in (await self.registry.list(res, shared=True)).items]
        p = plan(objects)
        for (res, ns, name), uids in p.strip_refs.items():
            await self._strip(res, ns, name, uids)
        for res, ns, name, finalizer in p.drop_finalizer:
            await self._drop_finalizer(res, ns, name, finalizer)
        for res, ns, name in p.delete_foreground:
            await self._delete(res, ns, name, "Foreground")
        for (res, ns, name), refs in p.check_owners.items():
            dangling = {r["uid"] for r in refs if not await self._owner_exists(r, ns)}
            if not dangling:
                continue
            obj = next(o for r, o in objects if r is res and _meta(o).get("namespace") == ns and _meta(o)["name"] == name)
            if dangling >= {r["uid"] for r in owner_refs(obj)}:
                await self._delete(res, ns, name, "Background")
            else:
                await self._strip(res, ns, name, dangling)
        return await self._collect_orphaned_pods(pods_on_missing_nodes(objects))

    async def _collect_orphaned_pods(self, pods: list[Obj]) -> float | None:
        now = self.clock()
        seen = {_meta(p).get("uid"): p for p in pods}
        self._missing_since = {uid: t for uid, t in self._missing_since.items() if uid in seen}
        wait: float | None = None
        pods_res = self.registry.resource("pods")
        for uid, pod in seen.items():
            since = self._missing_since.setdefault(str(uid), now)
            left = since + self.orphan_pod_grace - now
            if left > 0:
                wait = left if wait is None else min(wait, left)
                continue
            ns, name = _meta(pod).get("namespace"), _meta(pod)["name"]
            try:  # the node may have (re)appeared since the snapshot
                await self.registry.get(self.registry.resource("nodes"), None, pod["spec"]["nodeName"])
                continue
            except ApiError as exc:
                if exc.code != 404:
                    raise
            if await self._guard(self.registry.delete(pods_res, ns, name, grace_period_seconds=0)):
                log.info("garbage collector force-deleted a pod of a missing node",
                         extra=fields(pod=f"{ns}/{name}", node=pod["spec"]["nodeName"]))
            self._missing_since.pop(str(uid), None)
        return wait

    async def _owner_exists(self, ref: Obj, namespace: str | None) -> bool:
        res = self.registry.table.by_kind(str(ref.get("apiVersion", "")), str(ref.get("kind", "")))
        if res is None or res.plural in VIRTUAL:
            return True  # a kind we do not serve: never delete on a guess
        try:
            owner = await self.registry.get(res, namespace if res.namespaced else None, str(ref.get("name", "")))
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise
        return _meta(owner).get("uid") == ref["uid"]

    async def _strip(self, res: Resource, ns: str | None, name: str, uids: set[str]) -> None:
        def mutate(cur: Obj) -> Obj | None:
            refs = _meta(cur).get("ownerReferences") or []
            kept = [r for r in refs if not (isinstance(r, dict) and r.get("uid") in uids)]
            if len(kept) == len(refs):
                return None
            if kept:
                cur["metadata"]["ownerReferences"] = kept
            else:
                cur["metadata"].pop("ownerReferences", None)
            return cur

        await self._guard(self.registry.guaranteed_update(res, ns, name, mutate))
        log.info("garbage collector removed owner references", extra=fields(resource=res.plural, object=f"{ns or ''}/{name}"))

    async def _drop_finalizer(self, res: Resource, ns: str | None, name: str, finalizer: str) -> None:
        def mutate(cur: Obj) -> Obj | None:
            fins = _meta(cur).get("finalizers") or []
            if finalizer not in fins:
                return None
            cur["metadata"]["finalizers"] = [f for f in fins if f != finalizer]
            return cur

        await self._guard(self.registry.guaranteed_update(res, ns, name, mutate))

    async def _delete(self, res: Resource, ns: str | None, name: str, propagation: str) -> None:
        if await self._guard(self.registry.delete(res, ns, name, propagation=propagation)):
            log.info("garbage collector deleted dependent", extra=fields(resource=res.plural, object=f"{ns or ''}/{name}",
                                                                     propagation=propagation))

    @staticmethod
    async def _guard(call: Any) -> bool:
        try:
            await call
        except ApiError as exc:
            if exc.code in (404, 409):
                return False  # gone or changed meanwhile: the next pass sees the new state
            raise
        return True

    async def run(self, *, resync: float = 30.0) -> None:
        watches = [(r, None) for r in self.kinds if r.plural not in UNWATCHED]
        await run_loop("garbage-collector", self.registry, watches, self.reconcile, resync=resync)
