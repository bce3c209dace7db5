"""Events expire, as upstream's ``--event-ttl`` (1 h) does with etcd leases.

Kubelets and controllers post events continually; without expiry the log
and the database would only grow. Every ``interval`` seconds, events whose
last activity is older than ``ttl`` are deleted.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging

from edgectl.log import fields

from .registry import Registry
from .status import ApiError
from .tables import parse_time

log = logging.getLogger(__name__)

EVENT_TTL = 3600.0


async def expire_once(registry: Registry, *, ttl: float = EVENT_TTL, now: dt.datetime | None = None) -> int:
    res = registry.resource("events")
    now = now or dt.datetime.now(dt.timezone.utc)
    removed = 0
    for ev in (await registry.list(res, None, shared=True)).items:
        meta = ev.get("metadata") or {}
        last = parse_time(ev.get("lastTimestamp")) or parse_time(ev.get("eventTime")) or parse_time(meta.get("creationTimestamp"))
        if last is None or (now - last).total_seconds() <= ttl:
            continue
        try:
            await registry.delete(res, meta.get("namespace"), meta.get("name", ""))
            removed += 1
        except ApiError as exc:
            if exc.code != 404:
                raise
    if removed:
        log.info("expired events", extra=fields(count=removed, ttl_s=ttl))
    return removed


async def run(registry: Registry, *, ttl: float = EVENT_TTL, interval: float = 60.0) -> None:
    while True:
        try:
            await expire_once(registry, ttl=ttl)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event expiry failed; retrying")
        await asyncio.sleep(interval)
