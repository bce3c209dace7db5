"""In-process watch fan-out for a single-writer revision log.

The writer publishes each committed batch of events to a ``WatchHub`` on the
event loop. A ``LogWatcher`` first replays history from the log (through a
``replay`` callable the driver supplies), then switches to the live events the
hub pushed to it meanwhile. The hand-over is exact because subscribing and
reading ``hub.revision`` happen in one synchronous step on the loop: history is
replayed up to that revision and everything after it arrives live, so there is
neither a gap nor a duplicate.

A watcher whose pending live events exceed ``buffer_events`` is ended (its
iterator stops) instead of buffering without bound; the client re-watches from
the last revision it saw, or re-lists if that was compacted.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from edgectl.log import fields

from . import metrics
from .base import Event

log = logging.getLogger(__name__)

# replay(after, upto, prefix) -> (events, scanned_to), or None when history
# after ``after`` was compacted meanwhile. ``scanned_to`` is the revision the
# scan reached (== upto when the replay is complete).
Replay = Callable[[int, int, str], Awaitable["tuple[list[Event], int] | None"]]

# Why a watcher ended; exported for the API layer's logs and tests.
ENDED_CLOSED = "closed"
ENDED_SLOW = "slow"
ENDED_COMPACTED = "compacted"
ENDED_SHUTDOWN = "shutdown"


class WatchHub:
    """Fans committed events out to watchers by key prefix."""

    def __init__(self, *, revision: int, buffer_events: int) -> None:
        self.revision = revision  # last revision published (everything <= it is committed)
        self.buffer_events = buffer_events
        self._watchers: set[LogWatcher] = set()

    def __len__(self) -> int:
        return len(self._watchers)

    def publish(self, events: list[Event], revision: int) -> None:
        """Called on the loop, in commit order, after the batch is durable."""
        self.revision = revision
        if not events:
            return
        for w in tuple(self._watchers):
            w._push(events)

    def watcher(self, prefix: str, *, start_revision: int, replay: Replay) -> LogWatcher:
        return LogWatcher(self, prefix, start_revision=start_revision, replay=replay)

    def _add(self, w: LogWatcher) -> None:
        self._watchers.add(w)
        metrics.WATCHERS.inc()

    def _remove(self, w: LogWatcher) -> None:
        if w in self._watchers:
            self._watchers.discard(w)
            metrics.WATCHERS.dec()

    def shutdown(self) -> None:
        for w in tuple(self._watchers):
            w._end(ENDED_SHUTDOWN)


class LogWatcher:
    """One watch: replayed history, then live batches, in revision order."""

    def __init__(self, hub: WatchHub, prefix: str, *, start_revision: int, replay: Replay) -> None:
        self._hub = hub
        self.prefix = prefix
        self.start_revision = start_revision
        self._replay = replay
        # Subscribe first, in the same loop step as reading hub.revision: live
        # events are exactly those with revision > _replay_upto.
        self._replay_upto = hub.revision
        self._pos = start_revision  # last revision delivered (or skipped)
        self._pending: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self.ended: str | None = None
        hub._add(self)

    # -- hub side -------------------------------------------------------
    def _push(self, events: list[Event]) -> None:
        if self.ended is not None:
            return
        p = self.prefix
        start = self.start_revision
        for ev in events:
            if ev.kv.mod_revision > start and ev.kv.key.startswith(p):
                self._pending.append(ev)
        if len(self._pending) > self._hub.buffer_events:
            log.warning("watcher too slow, ending it",
                        extra=fields(prefix=self.prefix, pending=len(self._pending), at_revision=self._pos))
            self._end(ENDED_SLOW)
            return
        if self._pending:
            self._wakeup.set()

    def _end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            metrics.WATCHERS_ENDED.labels(reason=reason).inc()
        self._pending.clear()
        self._hub._remove(self)
        self._wakeup.set()

    # -- consumer side --------------------------------------------------
    def __aiter__(self) -> AsyncIterator[list[Event]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[list[Event]]:
        try:
            while self._pos < self._replay_upto and self.ended is None:
                got = await self._replay(self._pos, self._replay_upto, self.prefix)
                if got is None:
                    self._end(ENDED_COMPACTED)
                    break
                events, scanned_to = got
                self._pos = max(self._pos, scanned_to)
                if events and self.ended is None:
                    yield events
            while self.ended is None:
                if not self._pending:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                batch = list(self._pending)
                self._pending.clear()
                self._pos = batch[-1].kv.mod_revision
                yield batch
        finally:
            if self.ended is None:
                self._end(ENDED_CLOSED)

    async def close(self) -> None:
        self._end(ENDED_CLOSED)
