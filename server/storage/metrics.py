"""Storage metrics, registered in prometheus_client's default registry.

The API server exposes them on /metrics with ``prometheus_client.generate_latest()``.
Gauges that describe one open database (size, revisions) read the most recently
started backend at scrape time; a server process has exactly one.
"""
from __future__ import annotations

import weakref
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

OPERATION_SECONDS = Histogram(
    "edgectl_storage_operation_duration_seconds",
    "Latency of storage operations, from call to result (writes include the fsync).",
    ["operation"],
    buckets=(0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
WATCHERS = Gauge("edgectl_storage_watchers", "Open storage watchers.")
WATCHERS_ENDED = Counter("edgectl_storage_watchers_ended_total", "Watchers ended, by reason.", ["reason"])
COMPACTION_SECONDS = Histogram(
    "edgectl_storage_compaction_duration_seconds",
    "Wall time of one compaction run, including the WAL checkpoint.",
    buckets=(0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0),
)
COMPACTED_ROWS = Counter("edgectl_storage_compacted_rows_total", "Log rows removed by compaction.")
DB_SIZE = Gauge("edgectl_storage_db_size_bytes", "Database size on disk, main file plus WAL.")
REVISION = Gauge("edgectl_storage_revision", "Current revision of the store.")
COMPACT_REVISION = Gauge("edgectl_storage_compact_revision", "Revision up to which history was compacted.")


class _Observed(Protocol):
    def metric_db_size(self) -> float: ...
    def metric_revision(self) -> float: ...
    def metric_compact_revision(self) -> float: ...


def bind(backend: _Observed) -> None:
    """Make the per-database gauges read ``backend`` (held weakly) at scrape time."""
    ref = weakref.ref(backend)

    def reader(name: str):  # type: ignore[no-untyped-def]
        def read() -> float:
            b = ref()
            return float(getattr(b, name)()) if b is not None else 0.0
        return read

    DB_SIZE.set_function(reader("metric_db_size"))
    REVISION.set_function(reader("metric_revision"))
    COMPACT_REVISION.set_function(reader("metric_compact_revision"))
