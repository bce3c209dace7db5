"""Copy bytes both ways between two asyncio stream pairs, with half-close.

Used by the agent (tunnel stream <-> local TCP), the demo forwarder and the
benchmarks. EOF on one side becomes write_eof on the other; an error on
either side aborts both, so nothing is left half-open forever.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ..log import fields

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024


async def _copy(reader: Any, writer: Any) -> None:
    read_chunk = getattr(reader, "read_chunk", None)  # tunnel streams: no copy
    while True:
        data = await read_chunk() if read_chunk is not None else await reader.read(CHUNK)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def pipe(a_reader: Any, a_writer: Any, b_reader: Any, b_writer: Any) -> None:
    """Run until both directions finished; closes both writers."""
    tasks = [asyncio.create_task(_copy(a_reader, b_writer)), asyncio.create_task(_copy(b_reader, a_writer))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
        if errors:
            log.debug("pipe aborted: %r", errors[0], extra=fields(error=repr(errors[0])))
            for t in pending:
                t.cancel()
            for w in (a_writer, b_writer):
                abort = getattr(w, "abort", None) or getattr(getattr(w, "transport", None), "abort", None)
                if abort is not None:
                    with contextlib.suppress(Exception):
                        abort()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for t in tasks:
            t.cancel()
        for w in (a_writer, b_writer):
            with contextlib.suppress(Exception):
                w.close()
