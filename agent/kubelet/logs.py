"""``/containerLogs``: read CRI-format log files the way the kubelet does.

A CRI record is ``<RFC3339Nano> <stdout|stderr> <P|F> <text>\\n``; ``P``
records are pieces of one long line and the ``F`` record ends it. Without
``timestamps`` the prefix is stripped; with it, each record keeps its time.

``tailLines`` reads the file backwards in blocks, so the tail of a 100 MB log
costs a few reads. ``follow`` polls: the runtime's log writer is another
process and inotify would add little at a 0.2 s poll. It survives rotation
(the path is replaced: the old descriptor is drained, then the new file is read
from the start) and container restarts (the runtime points ``current`` at a new
file), and stops once the container is not running and everything is read.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from edgectl.agent.runtime.interface import ContainerLogs

POLL_INTERVAL = 0.2
READ_BLOCK = 256 * 1024


class LogOptionError(ValueError):
    """A bad query parameter; the message names it (answered with 400)."""


@dataclass(frozen=True, kw_only=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since_ns: int | None = None  # absolute, from sinceSeconds or sinceTime
    limit_bytes: int | None = None
    stream: bytes | None = None  # b"stdout" / b"stderr" (the PodLogsQuerySplitStreams ``stream`` option); None = all

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]], *, now_ns: int | None = None) -> "LogOptions":
        def arg(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        def flag(name: str) -> bool:
            value = arg(name)
            if value is None or value == "":
                return False
            if value.lower() in ("1", "true", "yes"):
                return True
            if value.lower() in ("0", "false", "no"):
                return False
            raise LogOptionError(f"{name} must be true or false, not {value!r}")

        def number(name: str, *, minimum: int) -> int | None:
            value = arg(name)
            if value is None or value == "":
                return None
            try:
                n = int(value)
            except ValueError:
                raise LogOptionError(f"{name} must be an integer, not {value!r}") from None
            if n < minimum:
                raise LogOptionError(f"{name} must be at least {minimum}")
            return n

        now_ns = time.time_ns() if now_ns is None else now_ns
        since_seconds = number("sinceSeconds", minimum=1)
        since_time = arg("sinceTime")
        if since_seconds is not None and since_time:
            raise LogOptionError("sinceSeconds and sinceTime cannot both be set")
        since_ns = None
        if since_seconds is not None:
            since_ns = now_ns - since_seconds * 1_000_000_000
        elif since_time:
            try:
                since_ns = parse_timestamp(since_time)
            except ValueError:
                raise LogOptionError(f"sinceTime must be RFC 3339, not {since_time!r}") from None
        stream = {"": None, "all": None, "stdout": b"stdout", "stderr": b"stderr"}.get((arg("stream") or "").lower(), b"?")
        if stream == b"?":
            raise LogOptionError(f"stream must be All, Stdout or Stderr, not {arg('stream')!r}")
        if stream is not None and arg("tailLines"):
            raise LogOptionError("tailLines cannot be combined with stream=Stdout or stream=Stderr")
        return cls(
            stream=stream,
            follow=flag("follow"),
            previous=flag("previous"),
            timestamps=flag("timestamps"),
            tail_lines=number("tailLines", minimum=0),
            since_ns=since_ns,
            limit_bytes=number("limitBytes", minimum=1),
        )


_TS = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def parse_timestamp(text: str) -> int:
    """RFC 3339 (nanosecond fraction allowed) to Unix nanoseconds."""
    m = _TS.match(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    base, frac, zone = m.groups()
    tz = dt.timezone.utc if zone == "Z" else dt.datetime.strptime(zone.replace(":", ""), "%z").tzinfo
    seconds = int(dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=tz).timestamp())
    return seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


class RecordFormatter:
    """Turns records into ``kubectl logs`` output, applying since and limit.

    This is the hot path of a 100 MB ``kubectl logs``: the prefix is split off
    with one ``bytes.split`` and timestamps are parsed only while a ``since``
    cut-off is pending. A CRI log is written in time order, so once one record
    passes the cut-off, all later ones do.
    """

    def __init__(self, options: LogOptions) -> None:
        self.options = options
        self.remaining = options.limit_bytes
        self._since = options.since_ns

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def format(self, lines: Sequence[bytes]) -> bytes:
        out: list[bytes] = []
        stamps = self.options.timestamps
        for line in lines:
            parts = line.split(b" ", 3)
            if len(parts) < 3 or parts[2] not in (b"F", b"P") or parts[1] not in (b"stdout", b"stderr"):
                out.append(line + b"\n")  # not CRI-formatted: kept as is, never dropped
                continue
            if self.options.stream is not None and parts[1] != self.options.stream:
                continue
            if self._since is not None:
                try:
                    if parse_timestamp(parts[0].decode("ascii")) < self._since:
                        continue
                except (ValueError, UnicodeDecodeError):
                    pass
                self._since = None
            if stamps:
                out.append(parts[0] + b" ")
            if len(parts) == 4:
                out.append(parts[3])
            if parts[2] == b"F":
                out.append(b"\n")
        data = b"".join(out)
        if self.remaining is not None:
            data = data[: self.remaining]
            self.remaining -= len(data)
        return data


def _is_partial(record: bytes) -> bool:
    parts = record.split(b" ", 3)
    return len(parts) >= 3 and parts[2] == b"P" and parts[1] in (b"stdout", b"stderr")


def tail_offset(fd: int, size: int, lines: int) -> int:
    """File offset where the last ``lines`` logical lines start. A logical line
    ends with an ``F`` record (or a non-CRI line), so ``P`` pieces stay with it."""
    if lines <= 0:
        return size
    seen = 0
    pos = size
    carry = b""  # the start of a record cut by the previous (later) block
    while pos > 0:
        start = max(0, pos - READ_BLOCK)
        block = os.pread(fd, pos - start, start) + carry
        pieces = block.split(b"\n")
        complete = pieces[1:] if start > 0 else pieces  # pieces[0] may begin before `start`
        piece_end = start + len(block)  # exclusive end of the piece being looked at
        for piece in reversed(complete):
            if piece and not _is_partial(piece):
                seen += 1
                if seen > lines:
                    return piece_end + 1  # just after this record's newline
            piece_end -= len(piece) + 1
        carry = pieces[0] if start > 0 else b""
        pos = start
    return 0


class _Reader:
    """Reads whole records from one file descriptor from an offset on."""

    def __init__(self, path: str, offset: int) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.inode = os.fstat(self.fd).st_ino
        self.offset = offset
        self.partial = b""

    def read_lines(self) -> list[bytes]:
        """Complete records read so far; [] only at the current end of file."""
        while True:
            data = os.pread(self.fd, READ_BLOCK, self.offset)
            if not data:
                return []
            self.offset += len(data)
            lines = (self.partial + data).split(b"\n")
            self.partial = lines.pop()  # incomplete record (or b"")
            if lines:
                return lines

    def flush_partial(self) -> list[bytes]:
        """At the very end: an unterminated last record is still output."""
        rest, self.partial = self.partial, b""
        return [rest] if rest else []

    def replaced(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return st.st_ino != self.inode or st.st_size < self.offset

    def close(self) -> None:
        os.close(self.fd)


def choose_file(logs: ContainerLogs, options: LogOptions) -> str | None:
    return logs.previous if options.previous else logs.current


async def stream_logs(
    *,
    path: str,
    options: LogOptions,
    refresh: Callable[[], ContainerLogs | None],
    poll_interval: float = POLL_INTERVAL,
) -> AsyncIterator[bytes]:
    """Yield ``kubectl logs`` output for ``path``. ``refresh`` re-reads the
    container's log state while following (restarts, running or not)."""
    fmt = RecordFormatter(options)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        start = 0 if options.tail_lines is None else tail_offset(fd, size, options.tail_lines)
    finally:
        os.close(fd)
    reader = _Reader(path, start)
    try:
        while True:
            lines = reader.read_lines()  # a 64 KiB pread from page cache: fine on the loop
            if lines:
                chunk = fmt.format(lines)
                if chunk:
                    yield chunk
                if fmt.exhausted:
                    return
                continue
            if not options.follow or options.previous:
                chunk = fmt.format(reader.flush_partial())
                if chunk:
                    yield chunk
                return
            # At EOF while following: decide whether to wait, switch files or stop.
            state = refresh()
            if reader.replaced() or (state is not None and state.current and state.current != reader.path):
                more = reader.read_lines() + reader.flush_partial()  # drain what the old file still holds
                if more:
                    chunk = fmt.format(more)
                    if chunk:
                        yield chunk
                    if fmt.exhausted:
                        return
                next_path = state.current if state is not None and state.current else reader.path
                try:
                    new_reader = _Reader(next_path, 0)
                except FileNotFoundError:
                    await asyncio.sleep(poll_interval)  # rotated away, new file not created yet
                    continue
                reader.close()
                reader = new_reader
                continue
            if state is None or not state.running:
                # One last read closes the race with the final write before exit.
                lines = reader.read_lines() + reader.flush_partial()
                chunk = fmt.format(lines)
                if chunk:
                    yield chunk
                return
            await asyncio.sleep(poll_interval)
    finally:
        reader.close()
