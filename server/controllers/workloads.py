"""What the workload controllers (ReplicaSet, Deployment, DaemonSet) share:
owner references, pod readiness and availability, template hashing, and
adopting or releasing pods by selector (upstream's ControllerRefManager).

Pure functions, except ``claim`` which writes the ownerReference changes.
"""
from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from edgectl.log import fields

from ..registry import Registry
from .rfc3339 import parse_time
from ..resources import Resource
from ..selectors import LabelSelector, SelectorError, from_structured
from ..status import ApiError

log = logging.getLogger(__name__)
Obj = dict[str, Any]

# Upstream's SafeEncodeString alphabet: no vowels (no words), no lookalikes.
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
NOTHING = LabelSelector(nothing=True)


def meta(obj: Obj) -> Obj:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def controller_ref(obj: Obj) -> Obj | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def owner_ref(owner: Obj, res: Resource) -> Obj:
    return {"apiVersion": res.api_version, "kind": res.kind, "name": meta(owner)["name"], "uid": meta(owner)["uid"],
            "controller": True, "blockOwnerDeletion": True}


def selector_of(obj: Obj) -> LabelSelector:
    sel = (obj.get("spec") or {}).get("selector")
    if not isinstance(sel, dict) or not (sel.get("matchLabels") or sel.get("matchExpressions")):
        return NOTHING  # validation refuses these; a stored one must not select every pod
    try:
        return from_structured(sel)
    except SelectorError:
        return NOTHING


def is_active(pod: Obj) -> bool:
    """Counts toward replicas: not terminating and not finished."""
    return not meta(pod).get("deletionTimestamp") and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _ready_condition(pod: Obj) -> Obj | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            return cond
    return None


def is_ready(pod: Obj) -> bool:
    cond = _ready_condition(pod)
    return cond is not None and cond.get("status") == "True"


def available_in(pod: Obj, min_ready: int, now: float) -> float | None:
    """0 when the pod is available (Ready for ``min_ready`` seconds), the seconds
    until it will be when it is Ready but not yet long enough, None if not Ready."""
    cond = _ready_condition(pod)
    if cond is None or cond.get("status") != "True":
        return None
    if min_ready <= 0:
        return 0.0
    since = parse_time(cond.get("lastTransitionTime"))
    if since is None:
        return 0.0
    return max(0.0, since + min_ready - now)


def is_available(pod: Obj, min_ready: int, now: float) -> bool:
    return available_in(pod, min_ready, now) == 0.0


class ReadyTally:
    """Counts Ready and available pods for a status, and the soonest moment a
    Ready pod becomes available (minReadySeconds), when to look again."""

    def __init__(self, min_ready: int, now: float) -> None:
        self.min_ready, self.now = min_ready, now
        self.ready = self.available = 0
        self.wait: float | None = None

    def add(self, pod: Obj) -> None:
        left = available_in(pod, self.min_ready, self.now)
        if left is None:
            return
        self.ready += 1
        if left == 0.0:
            self.available += 1
        else:
            self.wait = left if self.wait is None else min(self.wait, left)


def template_hash(template: Any, collisions: int = 0) -> str:
    """A short stable hash of a pod template (the ``pod-template-hash`` and
    ``controller-revision-hash`` label values)."""
    raw = json.dumps(template, sort_keys=True, separators=(",", ":")) + (f"#{collisions}" if collisions else "")
    number = int.from_bytes(hashlib.sha256(raw.encode()).digest()[:8], "big")
    out = []
    for _ in range(10):
        number, digit = divmod(number, len(_ALPHABET))
        out.append(_ALPHABET[digit])
    return "".join(out)


def pod_from_template(owner: Obj, res: Resource, template: Obj, *, extra_labels: dict[str, str] | None = None) -> Obj:
    """A new pod for ``owner`` (generateName ``<owner>-``: upstream's ``<rs>-<5 random chars>``)."""
    tmeta = template.get("metadata") or {}
    pod_meta: Obj = {
        "generateName": f"{meta(owner)['name']}-",
        "namespace": meta(owner).get("namespace"),
        "labels": {**(tmeta.get("labels") or {}), **(extra_labels or {})},
        "ownerReferences": [owner_ref(owner, res)],
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": copy.deepcopy(template.get("spec") or {})}


def int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            pct = int(value[:-1])
        except ValueError:
            return 0
        scaled = pct * total
        return -(-scaled // 100) if round_up else scaled // 100
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return 0
    return int(value or 0)


def set_condition(conditions: list[Obj], cond: Obj) -> list[Obj]:
    """Replace the condition of the same type, keeping lastTransitionTime when
    the status did not change."""
    out = []
    for c in conditions:
        if c.get("type") != cond["type"]:
            out.append(c)
        elif c.get("status") == cond["status"] and "lastTransitionTime" in c:
            cond = {**cond, "lastTransitionTime": c["lastTransitionTime"]}
    out.append(cond)
    return out


async def claim(registry: Registry, res: Resource, owner: Obj, owner_res: Resource, candidates: list[Obj],
                selector: LabelSelector) -> list[Obj]:
    """The objects ``owner`` controls: those it already owns and still selects,
    plus orphans it selects (adopted by adding a controller ownerReference).
    Owned objects it no longer selects are released (reference removed)."""
    uid = meta(owner)["uid"]
    owner_deleting = bool(meta(owner).get("deletionTimestamp"))
    out: list[Obj] = []
    for obj in candidates:
        ref = controller_ref(obj)
        labels = meta(obj).get("labels") or {}
        matches = selector.matches(labels)
        if ref is not None:
            if ref.get("uid") != uid:
                continue
            if matches or owner_deleting:
                out.append(obj)
                continue
            await _set_owner(registry, res, obj, uid, None)
            continue
        if not matches or owner_deleting or meta(obj).get("deletionTimestamp"):
            continue
        adopted = await _set_owner(registry, res, obj, None, owner_ref(owner, owner_res))
        if adopted is not None:
            out.append(adopted)
    return out


async def _set_owner(registry: Registry, res: Resource, obj: Obj, release_uid: str | None, adopt: Obj | None) -> Obj | None:
    ns, name = meta(obj).get("namespace"), meta(obj)["name"]

    def mutate(cur: Obj) -> Obj | None:
        refs = [r for r in meta(cur).get("ownerReferences") or [] if isinstance(r, dict)]
        if adopt is not None:
            if controller_ref(cur) is not None:
                return None  # someone else adopted it first
            refs.append(adopt)
        else:
            refs = [r for r in refs if r.get("uid") != release_uid]
        cur["metadata"]["ownerReferences"] = refs
        if not refs:
            cur["metadata"].pop("ownerReferences")
        return cur

    try:
        out = await registry.guaranteed_update(res, ns, name, mutate)
    except ApiError as exc:
        if exc.code == 404:
            return None
        raise
    log.info("adopted" if adopt else "released", extra=fields(resource=res.plural, object=f"{ns}/{name}"))
    ref = controller_ref(out)
    return out if adopt is not None and ref is not None and ref.get("uid") == adopt["uid"] else None


def by_namespace(objs: list[Obj]) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = {}
    for obj in objs:
        out.setdefault(meta(obj).get("namespace") or "", []).append(obj)
    return out


async def sync_each(controller: str, objs: list[Obj], sync: Callable[[Obj], Awaitable[float | None]]) -> float | None:
    """Run ``sync`` for every object: one object the API refuses (a 422 on a pod
    it creates, say) must not stall the others. The first error is raised once
    all were tried, so the loop backs off and retries; an object deleted
    meanwhile (404) is simply skipped. Returns the soonest requested recheck."""
    wait: float | None = None
    first: Exception | None = None
    for obj in objs:
        try:
            again = await sync(obj)
        except ApiError as exc:
            if exc.code == 404:
                continue
            log.warning("sync failed", extra=fields(controller=controller, object=f"{meta(obj).get('namespace')}/{meta(obj).get('name')}",
                                                    error=str(exc)))
            first = first or exc
            continue
        if again is not None:
            wait = again if wait is None else min(wait, again)
    if first is not None:
        raise first
    return wait


async def record_event(registry: Registry, involved: Obj, res: Resource, *, component: str, reason: str,
                       message: str) -> None:
    """A Normal Event about ``involved`` (what ``kubectl describe`` lists, e.g.
    ScalingReplicaSet, SuccessfulCreate). Only successful actions are recorded,
    so a failure retried on every back-off cannot flood the datastore; an Event
    the API refuses (namespace terminating) is dropped."""
    m = meta(involved)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{m['name']}.{secrets.token_hex(8)}", "namespace": m.get("namespace") or "default"},
        "involvedObject": {"kind": res.kind, "apiVersion": res.api_version, "name": m["name"], "uid": m.get("uid"),
                           "namespace": m.get("namespace"), "resourceVersion": m.get("resourceVersion")},
        "reason": reason, "message": message, "type": "Normal", "source": {"component": component},
        "reportingComponent": component, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }
    try:
        await registry.create(registry.resource("events"), event)
    except ApiError as exc:
        log.debug("event not recorded", extra=fields(reason=reason, object=m.get("name"), error=str(exc)))
