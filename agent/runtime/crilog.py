"""CRI container log format: ``<RFC3339Nano> <stdout|stderr> <P|F> <text>\\n``.

Sans-I/O: :class:`LineSplitter` turns pipe chunks into log records (``F`` for
a full line, ``P`` for a piece of a line longer than ``max_line`` bytes, as
containerd does at 16 KiB) and :func:`parse_line` reads them back for
``kubectl logs``. Stdlib only: the container shim imports this module.
"""
from __future__ import annotations

import time

MAX_LINE = 16 * 1024
STREAMS = ("stdout", "stderr")


def timestamp(ns: int | None = None) -> str:
    """RFC 3339 with a fixed nine-digit fraction in UTC (containerd's layout)."""
    if ns is None:
        ns = time.time_ns()
    sec, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


def encode(stream: str, tag: str, text: bytes, ns: int | None = None) -> bytes:
    """One log record; ``text`` excludes its newline."""
    return f"{timestamp(ns)} {stream} {tag} ".encode() + text + b"\n"


class LineSplitter:
    """Buffers one stream's bytes and emits complete records."""

    def __init__(self, stream: str, *, max_line: int = MAX_LINE) -> None:
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}")
        self.stream = stream
        self.max_line = max_line
        self._buf = bytearray()

    def feed(self, data: bytes, ns: int | None = None) -> bytes:
        """Add pipe data; return the encoded records that are now complete."""
        self._buf += data
        out = bytearray()
        while True:
            # Only look as far as a line may be long; beyond that it is split.
            nl = self._buf.find(b"\n", 0, self.max_line + 1)
            if nl >= 0:
                out += encode(self.stream, "F", bytes(self._buf[:nl]), ns)
                del self._buf[: nl + 1]
            elif len(self._buf) >= self.max_line:
                out += encode(self.stream, "P", bytes(self._buf[: self.max_line]), ns)
                del self._buf[: self.max_line]
            else:
                break
        return bytes(out)

    def close(self, ns: int | None = None) -> bytes:
        """End of stream: a trailing unterminated line is written as a full record."""
        if not self._buf:
            return b""
        out = encode(self.stream, "F", bytes(self._buf), ns)
        self._buf.clear()
        return out


class LogRecord:
    """One parsed record. (A plain class: dataclasses would add ~3 MB to every shim.)"""

    __slots__ = ("timestamp", "stream", "partial", "text")

    def __init__(self, *, timestamp: str, stream: str, partial: bool, text: bytes) -> None:
        self.timestamp = timestamp
        self.stream = stream
        self.partial = partial
        self.text = text  # without the newline

    def _key(self) -> tuple[str, str, bool, bytes]:
        return (self.timestamp, self.stream, self.partial, self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogRecord) and self._key() == other._key()

    def __repr__(self) -> str:
        return f"LogRecord{self._key()!r}"


class LogFormatError(ValueError):
    """A line that is not in CRI log format."""


def parse_line(line: bytes) -> LogRecord:
    """Parse one record (with or without its trailing newline)."""
    if line.endswith(b"\n"):
        line = line[:-1]
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1].decode(errors="replace") not in STREAMS or parts[2] not in (b"P", b"F"):
        raise LogFormatError(f"not a CRI log line: {line[:80]!r}")
    return LogRecord(
        timestamp=parts[0].decode(),
        stream=parts[1].decode(),
        partial=parts[2] == b"P",
        text=parts[3] if len(parts) == 4 else b"",
    )
