"""Run a coroutine on uvloop when it is installed (faster TLS and socket I/O)."""
from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """``EDGECTL_TUNNEL_NO_UVLOOP=1`` forces the stdlib loop (benchmarks, debugging)."""
    if os.environ.get("EDGECTL_TUNNEL_NO_UVLOOP") == "1":
        use_uvloop = False
    factory = loop_factory() if use_uvloop else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
