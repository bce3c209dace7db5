"""The one loop every controller runs: watch + coalesced full reconcile + resync.

Any change to a watched resource sets one flag; the loop then runs a single
full ``reconcile()``, however many events arrived meanwhile (kube-router's
pattern). ``reconcile`` may return a delay after which it wants to run again
(a deadline such as "this node's lease expires in 12 s"); otherwise a periodic
resync repairs anything a dropped watch missed. Errors are logged and retried
with backoff; a controller never dies.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from edgectl.aio import cancel_and_wait, wait_event
from edgectl.log import fields

from ..registry import Registry, WatchStream
from ..resources import Resource
from ..status import ApiError

log = logging.getLogger(__name__)

Reconcile = Callable[[], Awaitable[float | None]]


async def _open(registry: Registry, res: Resource, namespace: str | None) -> WatchStream:
    rev = await registry.store.current_revision()
    return await registry.watch(res, namespace, resource_version=str(rev), send_initial=False)


async def run_loop(
    name: str,
    registry: Registry,
    watches: Sequence[tuple[Resource, str | None]],
    reconcile: Reconcile,
    *,
    resync: float = 30.0,
    max_backoff: float = 30.0,
) -> None:
    wake = asyncio.Event()

    async def pump(res: Resource, namespace: str | None, stream: WatchStream) -> None:
        while True:
            try:
                async for ev in stream:
                    wake.set()
                    if ev.type == "ERROR":
                        break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controller watch failed", extra=fields(controller=name, resource=res.plural))
            finally:
                await stream.close()
            wake.set()  # events may have been missed while the watch was down
            await asyncio.sleep(1.0)
            try:
                stream = await _open(registry, res, namespace)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controller re-watch failed", extra=fields(controller=name, resource=res.plural))

    # Open every watch before the first reconcile, so nothing falls between them.
    streams = [await _open(registry, res, ns) for res, ns in watches]
    pumps = [asyncio.create_task(pump(res, ns, s), name=f"{name}-watch-{res.plural}")
             for (res, ns), s in zip(watches, streams)]
    wake.set()
    backoff = 0.5
    delay: float | None = None
    last_error: str | None = None  # a failure repeating on every back-off is logged once
    try:
        while True:
            timeout = resync if delay is None else min(resync, max(delay, 0.0))
            await wait_event(wake, timeout)
            wake.clear()
            try:
                delay = await reconcile()
                backoff = 0.5
                last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if error == last_error:
                    log.debug("reconcile failed again; retrying", extra=fields(controller=name, retry_in_s=backoff, error=error))
                elif isinstance(exc, ApiError) and 400 <= exc.code < 500:  # the API refused: data, not a bug
                    log.warning("reconcile refused by the API; retrying", extra=fields(controller=name, retry_in_s=backoff, error=error))
                else:
                    log.exception("reconcile failed; retrying", extra=fields(controller=name, retry_in_s=backoff))
                last_error = error
                delay = backoff
                backoff = min(backoff * 2, max_backoff)
    finally:
        await cancel_and_wait(pumps)
