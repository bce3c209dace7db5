"""How the tunnel's processes run their event loop (demo, standalone, benchmarks).

uvloop when installed (the issue's choice). Measured with bench/tunnel.py (one
stream, 1 GiB, TLS on, 2-core box; docs/tunnel-protocol.md): uvloop used to move
the tunnel at only 0.35–0.6x the stdlib loop's rate, because every read and
write allocated a fresh 0.25–1 MiB buffer that glibc served from new pages
(~200,000 page faults per GiB in the server). With the receive buffers pooled
(bufpool.py) and malloc tuned (``tune_malloc``) both loops are even (medians of
5 A/B pairs: 514 vs 505 MB/s, 2.34 vs 2.50 CPU-s/GiB for server + agent).
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import platform
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# glibc mallopt() parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def tune_malloc(*, mmap_threshold: int = 4 << 20, trim_threshold: int = 32 << 20) -> bool:
    """Keep glibc from handing 0.25–2 MiB I/O buffers back to the kernel after each use.

    By default glibc serves blocks of this size with mmap, or trims its heap top
    when they are freed, so the next buffer is fresh memory and the kernel takes a
    page fault per 4 KiB while copying data into it: measured 0.1–0.3 million
    faults per GiB relayed and ~0.3–0.5 CPU-s/GiB (asyncio's SSL layer and socket
    transport allocate such buffers per write; we cannot pool those). Process-wide,
    so only entry points call it. Cost: up to ``trim_threshold`` bytes of freed
    heap stay mapped. Returns False where it does not apply (not glibc).
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False


def run(coro: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """Run ``coro`` with malloc tuned, on uvloop when installed.

    ``EDGECTL_TUNNEL_NO_UVLOOP=1`` forces the stdlib loop (benchmarks, debugging);
    ``EDGECTL_TUNNEL_NO_MALLOC_TUNING=1`` skips :func:`tune_malloc` (A/B runs).
    """
    if os.environ.get("EDGECTL_TUNNEL_NO_UVLOOP") == "1":
        use_uvloop = False
    if os.environ.get("EDGECTL_TUNNEL_NO_MALLOC_TUNING") != "1":
        tune_malloc()
    factory = loop_factory() if use_uvloop else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
