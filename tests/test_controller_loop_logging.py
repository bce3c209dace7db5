"""A controller whose reconcile keeps failing the same way logs it once, at
WARNING when the API refused (bad stored data), not at ERROR on every retry."""
from __future__ import annotations

import asyncio
import logging

import pytest

from edgectl.server.controllers.loop import run_loop
from edgectl.server.status import ApiError


def test_repeated_api_refusal_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def reconcile() -> float | None:
        nonlocal calls
        calls += 1
        raise ApiError(422, 'Pod "p" is invalid: spec.containers[0].resources.requests[cpu]: Invalid value: "lots"')

    async def main() -> None:
        task = asyncio.create_task(run_loop("test", None, [], reconcile, resync=30))  # type: ignore[arg-type]
        while calls < 3:
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with caplog.at_level(logging.DEBUG, logger="edgectl.server.controllers.loop"):
        asyncio.run(main())
    records = [r for r in caplog.records if "reconcile" in r.getMessage()]
    assert [r.levelno for r in records[:3]] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert not any(r.levelno >= logging.ERROR for r in records)
