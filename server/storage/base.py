"""The storage contract the API server sees.

Keys look like ``/registry/<resource>/<namespace>/<name>`` (cluster-scoped
objects drop the namespace). Values are the object's JSON bytes. Every write
gets a new cluster-wide revision; an object's resourceVersion is its
``mod_revision``. The SQLite driver implements this over an append-only log
(kine's idea); an etcd driver (HA issue) implements it directly, so nothing
here may assume SQL.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol


class StorageError(Exception):
    """Base class; the API maps each subclass to one Status in one place."""


class KeyExists(StorageError):
    """create() of a key that is live (409 AlreadyExists)."""


class NotFound(StorageError):
    """update()/delete() of a key that is not live (404 NotFound)."""


class Conflict(StorageError):
    """The expected revision is stale (409 Conflict)."""


class Compacted(StorageError):
    """The asked-for revision was compacted away (410 Gone)."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(f"revision {requested} is compacted (oldest kept is {compact_revision + 1})")
        self.requested = requested
        self.compact_revision = compact_revision


class FutureRevision(StorageError):
    """A read at a revision newer than the current one (504/Timeout upstream)."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """One change. For DELETE, ``kv`` is the last value with ``mod_revision`` set
    to the delete's revision, so a watcher can send it as the DELETED object."""

    type: Literal["CREATE", "UPDATE", "DELETE"]
    kv: KeyValue
    prev: KeyValue | None


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[KeyValue]
    revision: int  # the revision the list is consistent at
    more: bool  # True when ``limit`` cut the list; continue after items[-1].key


@dataclass(frozen=True, slots=True)
class StorageStats:
    revision: int
    compact_revision: int
    db_size_bytes: int
    keys: int


class Watcher(Protocol):
    """Yields batches of events in revision order, with no gaps or duplicates.
    ``Backend.watch`` raises Compacted at once if ``start_revision`` is too old.
    A slow watcher is ended (the iterator stops) rather than buffering without
    bound, and so is one whose replay is overtaken by compaction; the client
    re-watches from the last revision it saw (getting Compacted if that is
    gone, and then re-lists). The SQLite watcher says why in ``.ended``."""

    def __aiter__(self) -> AsyncIterator[list[Event]]: ...

    async def close(self) -> None: ...


class Backend(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def current_revision(self) -> int: ...

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        """The live value at ``revision`` (0 = latest), or None."""

    async def create(self, key: str, value: bytes) -> KeyValue:
        """Raises KeyExists. The returned kv carries the new revision."""

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        """Compare-and-swap on mod_revision. Raises NotFound or Conflict."""

    async def delete(self, key: str, *, expected_revision: int | None = None) -> KeyValue:
        """Returns the deleted kv with mod_revision = the delete's revision."""

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0) -> ListResult:
        """Live keys under ``prefix`` in key order, consistent at one revision
        (0 = latest). Raises Compacted if ``revision`` is compacted."""

    async def count(self, prefix: str) -> int: ...

    def watch(self, prefix: str, *, start_revision: int) -> Watcher:
        """Events with revision > start_revision under ``prefix``: history first,
        then live, pushed in-process. 0 means "from revision 0", not "from now":
        pass the revision of the list the client holds. A future revision is
        allowed (events arrive once it is reached). Prefixes are plain string
        prefixes, so end them with "/"."""

    async def compact(self, revision: int) -> int:
        """Drop history at or below ``revision``; returns the new compact revision."""

    async def stats(self) -> StorageStats: ...
