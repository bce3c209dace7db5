"""Reuse of the big receive buffers on the data path.

Why: a fresh 256 KiB–1 MiB buffer per read makes glibc's malloc hand out new
pages over and over (its heap top is trimmed and regrown, or big blocks are
mmap'ed), and the kernel then takes a page fault per 4 KiB while it copies data
into them. Measured at 1 GiB through the tunnel: up to ~200,000 minor faults
per GiB in each process and ~0.3–0.5 CPU-s/GiB; with buffers reused, almost none.

A buffer is handed out again only when nothing can still see it: payloads
travel as memoryviews of it (session queues, stream readers), and a bytearray
with a live view refuses to resize, which is the test used here.
"""
from __future__ import annotations


def unshared(buf: bytearray) -> bool:
    """True when no memoryview (or other buffer export) of ``buf`` is alive."""
    try:
        buf.append(0)
    except BufferError:
        return False
    del buf[-1]
    return True


class BufferPool:
    """Keeps up to ``keep`` buffers of at least ``size`` bytes for reuse."""

    def __init__(self, size: int, *, keep: int = 4) -> None:
        self.size = size
        self.keep = keep
        self._bufs: list[bytearray] = []

    def clear(self) -> None:
        """Forget the kept buffers (idle connections should not pin megabytes)."""
        self._bufs = []

    def get(self, n: int = 0) -> bytearray:
        """A buffer of at least ``max(n, size)`` bytes that nobody else sees."""
        want = max(n, self.size)
        for b in self._bufs:
            if len(b) >= want and unshared(b):
                return b
        buf = bytearray(want)
        buf.append(0)  # room for unshared()'s probe byte, so it never reallocates
        del buf[-1]
        if len(self._bufs) < self.keep:
            self._bufs.append(buf)
        else:  # replace a free one that is too small, if any; else use it once
            for i, b in enumerate(self._bufs):
                if len(b) < want and unshared(b):
                    self._bufs[i] = buf
                    break
        return buf
