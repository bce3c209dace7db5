"""Pods bound to this node: API watch -> PodManager, PodManager status -> API.

Down: list and watch ``pods?fieldSelector=spec.nodeName=<me>``; after every
event the complete set goes to :meth:`PodManager.sync` (idempotent), so a
missed event is harmless. A broken watch re-watches from the last
resourceVersion; a 410 lists again.

Up: the manager reports status through ``on_change``; the latest status per
pod is queued and posted with a strategic merge patch of ``pods/<n>/status``
(conditions merge by type, so the scheduler's PodScheduled stays). A pod that
is being deleted is confirmed with ``DELETE gracePeriodSeconds=0`` (uid
precondition) once none of its containers runs: that ends graceful deletion,
as the kubelet does.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from edgectl.log import fields

from .client import ApiClient, ApiError, ApiUnavailable
from .events import EventRecorder, EventSpec, status_events

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class Manager(Protocol):
    def sync(self, desired_pods: list[Obj]) -> None: ...


def finished_terminating(pod: Obj, status: Obj | None) -> bool:
    """A deleting pod whose containers all stopped may be removed from the API."""
    if not (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if status is None:
        return True
    for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        if "running" in (cs.get("state") or {}):
            return False
    return True


def status_patch(status: Obj) -> Obj:
    return {"status": status}


class PodSync:
    def __init__(self, *, client: ApiClient, node: str, manager: Manager | None = None,
                 retry_seconds: float = 1.0) -> None:
        self.client = client
        self.node = node
        self.manager = manager
        self.retry_seconds = retry_seconds
        self.pods: dict[str, Obj] = {}  # uid -> pod as last seen in the API
        self.synced = asyncio.Event()  # set after the first full list
        self._pending: dict[str, Obj | None] = {}
        self._wake = asyncio.Event()
        self._deleting: set[str] = set()
        self._pushed: dict[str, Obj] = {}  # uid -> last status we posted (for events)
        self._killing: set[str] = set()
        self.events = EventRecorder(client=client, node=node)

    # ---- down: the API's pods ----------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(self._watch_loop(), self._push_loop())

    async def _watch_loop(self) -> None:
        selector = f"spec.nodeName={self.node}"
        rv: str | None = None
        failing = False
        while True:
            try:
                if rv is None:
                    listed = await self.client.list("/api/v1/pods", fieldSelector=selector)
                    self.pods = {p["metadata"]["uid"]: p for p in listed.get("items") or []}
                    rv = str((listed.get("metadata") or {}).get("resourceVersion") or "0")
                    self._desired_changed()
                    self.synced.set()
                async for kind, obj in self.client.watch("/api/v1/pods", resource_version=rv, fieldSelector=selector):
                    meta = obj.get("metadata") or {}
                    if meta.get("resourceVersion"):
                        rv = str(meta["resourceVersion"])
                    if kind == "BOOKMARK":
                        continue
                    uid = meta.get("uid")
                    if not uid:
                        continue
                    if kind == "DELETED":
                        self.pods.pop(uid, None)
                        self._pushed.pop(uid, None)
                        self._killing.discard(uid)
                    else:
                        self.pods[uid] = obj
                        if meta.get("deletionTimestamp") and uid not in self._killing:
                            self._killing.add(uid)
                            self._spawn_killing(obj)
                    self._desired_changed()
                if failing:
                    log.info("pod watch resumed", extra=fields(node=self.node))
                failing = False
            except ApiError as exc:
                if exc.code == 410:
                    rv = None  # compacted past us: list again
                    continue
                if not failing:
                    log.warning("pod watch failed", extra=fields(error=str(exc)))
                failing = True
                await asyncio.sleep(self.retry_seconds)
            except ApiUnavailable as exc:
                if not failing:
                    log.warning("pod watch lost the server", extra=fields(error=str(exc)))
                failing = True
                await asyncio.sleep(self.retry_seconds)
            except Exception:  # noqa: BLE001 - a bug here must not cut the node off its pods
                log.exception("pod watch failed unexpectedly; listing again")
                rv = None
                failing = True
                await asyncio.sleep(self.retry_seconds)

    def _spawn_killing(self, pod: Obj) -> None:
        running = [c.get("name", "") for c in (pod.get("status") or {}).get("containerStatuses") or []
                   if "running" in (c.get("state") or {})]
        for name in running:
            task = asyncio.ensure_future(self.events.record(pod, EventSpec("Normal", "Killing", f"Stopping container {name}", name)))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def _desired_changed(self) -> None:
        if self.manager is not None:
            self.manager.sync(list(self.pods.values()))
        for uid, pod in self.pods.items():  # a deleting pod the runtime no longer knows
            if finished_terminating(pod, None) and uid not in self._deleting and self._status_gone(uid):
                self.on_change(uid, None)

    def _status_gone(self, uid: str) -> bool:
        status = getattr(self.manager, "status", None)
        # Not known to the runtime (never started here, or an unparsable spec):
        # nothing to stop, so the deletion can be confirmed right away.
        return callable(status) and status(uid) is None

    # ---- up: status to the API --------------------------------------------------------------

    def on_change(self, uid: str, status: Obj | None) -> None:
        """PodManager callback (synchronous): remember the newest status."""
        self._pending[uid] = status
        self._wake.set()

    async def _push_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, {}
            retry: dict[str, Obj | None] = {}
            for uid, status in batch.items():
                try:
                    await self._push(uid, status)
                except ApiUnavailable as exc:
                    log.warning("pod status push failed; will retry", extra=fields(uid=uid, error=str(exc)))
                    retry[uid] = status
                except ApiError as exc:
                    if exc.code not in (404, 422):  # a 409 is a lost race: push again
                        retry[uid] = status
                    log.warning("pod status rejected", extra=fields(uid=uid, error=str(exc)))
                except Exception:  # noqa: BLE001 - keep pushing the other pods' status
                    log.exception("pod status push failed unexpectedly", extra=fields(uid=uid))
            if retry:
                for uid, status in retry.items():
                    self._pending.setdefault(uid, status)
                await asyncio.sleep(self.retry_seconds)
                self._wake.set()

    async def _push(self, uid: str, status: Obj | None) -> None:
        pod = self.pods.get(uid)
        if pod is None:
            return  # gone from the API already
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        if status is not None:
            await self.client.patch(f"{path}/status", status_patch(status), strategic=True)
            for spec in status_events(self._pushed.get(uid), status):
                await self.events.record(pod, spec)
            self._pushed[uid] = status
        if finished_terminating(pod, status) and uid not in self._deleting:
            self._deleting.add(uid)
            try:
                await self.client.delete(path, options={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
                log.info("pod deletion confirmed", extra=fields(pod=f"{meta['namespace']}/{meta['name']}"))
            except ApiError as exc:
                if exc.code not in (404, 409):
                    self._deleting.discard(uid)
                    raise
            except ApiUnavailable:
                self._deleting.discard(uid)
                raise

