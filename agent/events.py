"""Kubelet-style Events, so ``kubectl describe`` and ``kubectl get events`` show
what the agent did (Started, Killing, Failed, BackOff, NodeReady).

``status_events`` is pure: it compares two pod statuses and names the events.
``EventRecorder`` posts them; a repeat of the same (object, reason, container)
bumps ``count`` on the existing Event instead of creating another, as the
kubelet's correlator does, so a crash loop cannot flood the datastore.
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from edgectl.log import fields

from .client import ApiClient, ApiError, ApiUnavailable

log = logging.getLogger(__name__)
Obj = dict[str, Any]

MAX_TRACKED = 1024  # remembered Events for count bumps; older ones just get a new Event


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str
    container: str = ""


def _statuses(status: Obj | None) -> dict[str, Obj]:
    status = status or {}
    return {c.get("name", ""): c for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])}


def status_events(old: Obj | None, new: Obj | None) -> list[EventSpec]:
    """Events implied by the change from ``old`` to ``new`` pod status."""
    out: list[EventSpec] = []
    before = _statuses(old)
    for name, cs in _statuses(new).items():
        prev = before.get(name) or {}
        state, prev_state = cs.get("state") or {}, prev.get("state") or {}
        mount = (state.get("waiting") or {}).get("message") or ""
        if (mount.startswith("MountVolume.") and mount != ((prev_state.get("waiting") or {}).get("message"))
                and all(e.message != mount for e in out)):
            out.append(EventSpec("Warning", "FailedMount", mount))  # the pod's, not one container's
        if "running" in state and (cs.get("containerID") != prev.get("containerID") or "running" not in prev_state):
            out.append(EventSpec("Normal", "Started", f"Started container {name}", name))
        waiting, prev_waiting = state.get("waiting") or {}, prev_state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason and reason != prev_waiting.get("reason") and reason not in ("ContainerCreating", "PodInitializing"):
            kind = "BackOff" if reason == "CrashLoopBackOff" else "Failed"
            message = waiting.get("message") or reason
            if kind == "BackOff":
                message = f"Back-off restarting failed container {name}"
            out.append(EventSpec("Warning", kind, message, name))
    return out


def micro_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_object(*, involved: Obj, spec: EventSpec, node: str, now: str) -> Obj:
    meta = involved.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    ref: Obj = {"kind": involved.get("kind", "Pod"), "apiVersion": involved.get("apiVersion", "v1"),
                "name": meta.get("name"), "uid": meta.get("uid")}
    if meta.get("namespace"):
        ref["namespace"] = namespace
    if spec.container:
        ref["fieldPath"] = f"spec.containers{{{spec.container}}}"
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta.get('name')}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": ref, "reason": spec.reason, "message": spec.message, "type": spec.type,
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet", "reportingInstance": node,
        "firstTimestamp": now[:19] + "Z", "lastTimestamp": now[:19] + "Z", "count": 1,
    }


class EventRecorder:
    def __init__(self, *, client: ApiClient, node: str) -> None:
        self.client = client
        self.node = node
        self._seen: dict[tuple[str, str, str, str], tuple[str, str, int]] = {}  # key -> (ns, name, count)

    async def record(self, involved: Obj, spec: EventSpec) -> None:
        """Post (or count up) one Event; failures are logged, never raised."""
        meta = involved.get("metadata") or {}
        key = (str(meta.get("uid")), spec.reason, spec.container, spec.message)
        now = micro_now()
        try:
            seen = self._seen.get(key)
            if seen is not None:
                ns, name, count = seen
                await self.client.patch(f"/api/v1/namespaces/{ns}/events/{name}",
                                        {"count": count + 1, "lastTimestamp": now[:19] + "Z"})
                self._seen[key] = (ns, name, count + 1)
                return
            obj = event_object(involved=involved, spec=spec, node=self.node, now=now)
            ns = obj["metadata"]["namespace"]
            await self.client.create(f"/api/v1/namespaces/{ns}/events", obj)
            if len(self._seen) >= MAX_TRACKED:
                self._seen.pop(next(iter(self._seen)))
            self._seen[key] = (ns, obj["metadata"]["name"], 1)
        except (ApiError, ApiUnavailable) as exc:
            self._seen.pop(key, None)
            log.info("event not recorded", extra=fields(reason=spec.reason, error=str(exc)))
