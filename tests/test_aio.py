"""The 3.11-safe asyncio helpers: a cancellation racing an Event is never lost."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from edgectl.aio import cancel_and_wait, wait_event


async def _race(wait: Callable[[asyncio.Event], Awaitable[object]]) -> bool:
    """Set the event and cancel the waiting loop in the same step; True if the loop ended."""
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await wait(event)
            event.clear()

    task = asyncio.create_task(loop())
    for _ in range(3):
        await asyncio.sleep(0)
    event.set()
    task.cancel()
    await asyncio.sleep(0.05)
    ended = task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return ended


def test_wait_event_never_loses_a_cancellation() -> None:
    assert asyncio.run(_race(lambda ev: wait_event(ev, 10))) is True


def test_the_race_is_real_with_wait_for() -> None:
    # Documents why wait_event exists: on 3.11 wait_for swallows this cancellation.
    import sys

    lost = not asyncio.run(_race(lambda ev: asyncio.wait_for(ev.wait(), 10)))
    assert lost == (sys.version_info < (3, 12))


def test_wait_event_times_out_and_sees_a_set_event() -> None:
    async def main() -> None:
        ev = asyncio.Event()
        assert await wait_event(ev, 0.01) is False
        ev.set()
        assert await wait_event(ev, 0.01) is True

    asyncio.run(main())


def test_cancel_and_wait_recancels_a_task_that_swallowed_the_first_cancel() -> None:
    async def main() -> None:
        async def stubborn() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass  # swallowed once, as the 3.11 wait_for race does
            await asyncio.sleep(10)

        give_up = asyncio.Event()

        async def hopeless() -> None:
            while not give_up.is_set():
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    pass

        a = asyncio.create_task(stubborn())
        b = asyncio.create_task(hopeless())
        await asyncio.sleep(0)
        stuck = await cancel_and_wait([a, b], grace=0.5)
        assert a.done() and stuck == [b]
        give_up.set()
        b.cancel()
        await asyncio.gather(b, return_exceptions=True)

    asyncio.run(main())
