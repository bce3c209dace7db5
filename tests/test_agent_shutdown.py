"""SIGTERM must end the agent even when a shutdown step ignores cancellation."""
from __future__ import annotations

import asyncio

from edgectl.agent.main import Agent


async def _stubborn() -> None:
    while True:  # swallows every cancel, as a buggy close might
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            continue


def test_a_stubborn_shutdown_step_is_left_behind_not_awaited() -> None:
    async def main() -> None:
        agent = Agent.__new__(Agent)  # only the shutdown helper is under test
        agent._tasks = []
        agent._stop_deadline = asyncio.get_running_loop().time() + 6
        async with asyncio.timeout(10):  # 3.11's wait_for waited for the cancelled step forever
            await agent._bounded("stubborn", _stubborn(), timeout=0.2)
            await agent._bounded("fine", asyncio.sleep(0), timeout=0.2)

    # Not asyncio.run: its teardown would wait for the stubborn task without bound,
    # which is why the CLI exits hard once stop() is done (agent/cli.py).
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        for task in asyncio.all_tasks(loop):
            task.get_coro().close()  # the stubborn step: never resumed again
        loop.close()
