"""Run a coroutine on uvloop when it is installed (the tunnel's entry points and benchmarks).

Measured with bench/tunnel.py (one stream, 1 GiB, TLS on, 2-core box; details in
docs/tunnel-protocol.md, section 11): uvloop used to move the tunnel at only
0.35–0.9x the stdlib loop's rate. That was not uvloop's speed: with uvloop's
bigger reads a forwarder's read-ahead paused the TCP side and ``pipe_tcp``
resumed it at once, so the whole transfer queued in memory, fresh buffers and
~200,000 page faults per GiB. With that fixed and the receive buffers reused
(wsread.py, bufpool.py, pipe.py) the loops are even: medians of 4 A/B pairs,
uvloop vs stdlib, 694 vs 742 MB/s (within this box's noise) and 2.32 vs 2.36
CPU-s/GiB for server + agent; full bench runs 2.10–2.22 vs 2.28–2.58. So the
issue's choice stands. Tuning glibc malloc (mmap/trim
thresholds) was tried too and no longer helps; it only added ~12 MiB of RSS at
1,000 sessions.
"""
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
