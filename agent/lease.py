"""The node heartbeat: renew ``kube-node-lease/<node>`` every 10 s.

A Lease write is the cheapest proof of life (one small object), so that is
what the node lifecycle controller watches; full Node status is posted far
less often (see ``main.py``). ``lease_body`` is pure; ``LeaseKeeper`` does the
calls and survives API outages by retrying on the next tick.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from edgectl.log import fields

from .client import ApiClient, ApiError, ApiUnavailable

log = logging.getLogger(__name__)
Obj = dict[str, Any]

NAMESPACE = "kube-node-lease"
DURATION_SECONDS = 40  # what upstream kubelets announce; the lifecycle grace matches it


def micro_time(ts: dt.datetime | None = None) -> str:
    """Kubernetes MicroTime (RFC 3339 with microseconds)."""
    return (ts or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(node: str, *, now: str, node_uid: str | None = None, existing: Obj | None = None) -> Obj:
    """The Lease to write: a new one, or ``existing`` renewed (keeps its resourceVersion)."""
    if existing is not None:
        body = {**existing, "spec": {**(existing.get("spec") or {})}}
        body["spec"].update({"holderIdentity": node, "leaseDurationSeconds": DURATION_SECONDS, "renewTime": now})
        return body
    meta: Obj = {"name": node, "namespace": NAMESPACE}
    if node_uid:  # owned by the Node, so deleting the Node deletes its Lease
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": node, "leaseDurationSeconds": DURATION_SECONDS,
                     "acquireTime": now, "renewTime": now}}


class LeaseKeeper:
    def __init__(self, *, client: ApiClient, node: str, interval: float = 10.0, node_uid: str | None = None) -> None:
        self.client = client
        self.node = node
        self.interval = interval
        self.node_uid = node_uid
        self.renewals = 0
        self.last_error: str | None = None
        self._current: Obj | None = None
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"

    async def renew(self) -> Obj:
        """One renewal: update what we hold; on a conflict or first run, read first."""
        for _ in range(3):
            now = micro_time()
            if self._current is None:
                try:
                    self._current = await self.client.get(f"{self._path}/{self.node}")
                except ApiError as exc:
                    if exc.code != 404:
                        raise
                    try:
                        self._current = await self.client.create(self._path, lease_body(self.node, now=now, node_uid=self.node_uid))
                        self.renewals += 1
                        return self._current
                    except ApiError as exc2:
                        if exc2.code != 409:
                            raise
                        continue
            try:
                self._current = await self.client.update(f"{self._path}/{self.node}",
                                                         lease_body(self.node, now=now, existing=self._current))
                self.renewals += 1
                return self._current
            except ApiError as exc:
                if exc.code not in (404, 409):
                    raise
                self._current = None  # someone else wrote it (or it was deleted): read again
        raise ApiError(409, "Conflict", f"lease {NAMESPACE}/{self.node} kept changing under us")

    async def run(self) -> None:
        while True:
            try:
                await self.renew()
                if self.last_error:
                    log.info("lease renewals resumed", extra=fields(node=self.node))
                self.last_error = None
            except (ApiError, ApiUnavailable) as exc:
                if str(exc) != self.last_error:
                    log.warning("lease renewal failed", extra=fields(node=self.node, error=str(exc)))
                self.last_error = str(exc)
            await asyncio.sleep(self.interval)
