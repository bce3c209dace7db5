"""asyncio helpers that stay correct on Python 3.11.

``asyncio.wait_for`` on 3.11 swallows a cancellation that arrives in the same
loop step as the awaited future completes (fixed in 3.12, gh-86296). In a
long-running loop that waits on an Event, that race turns a shutdown's
``task.cancel()`` into a no-op and the shutdown hangs. ``asyncio.timeout``
counts cancellations properly, so the helpers here are built on it.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for ``event`` up to ``timeout`` seconds; True if it was set.
    Unlike ``wait_for(event.wait(), t)``, a cancellation is never lost."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]] | Iterable[asyncio.Future[object]], *, grace: float = 5.0) -> list[asyncio.Future[object]]:
    """Cancel ``tasks`` and wait for them to end, cancelling again if a task
    swallowed the first cancellation. Returns the tasks still running after
    ``grace`` seconds (the caller logs them) instead of hanging forever."""
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while pending:
        for t in pending:
            t.cancel()
        left = deadline - loop.time()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(0.2, left))
    return list(pending)
