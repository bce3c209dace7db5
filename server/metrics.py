"""API metrics on /metrics (Prometheus text format via prometheus-client).

Request counts and latency by verb and resource, and open watches. Storage
metrics (operation latency, database size, revisions, compaction) are
registered by ``edgectl.server.storage.metrics`` in the same default registry.
"""
from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from edgectl.httpd import Request, Response

from .storage import metrics as _storage_metrics  # noqa: F401 - registers the storage series

REQUESTS = Counter(
    "edgectl_apiserver_requests_total",
    "API requests by verb, resource, subresource and HTTP code.",
    ["verb", "resource", "subresource", "code"],
)
LATENCY = Histogram(
    "edgectl_apiserver_request_duration_seconds",
    "Time to the response head (a watch counts until its stream starts).",
    ["verb", "resource"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
WATCHERS = Gauge("edgectl_apiserver_watchers", "Open watch streams served to clients.")
WRITES = Counter("edgectl_apiserver_object_writes_total", "Objects written, by operation and resource.", ["operation", "resource"])


def observe(verb: str, resource: str, subresource: str, code: int, seconds: float) -> None:
    REQUESTS.labels(verb, resource, subresource, str(code)).inc()
    LATENCY.labels(verb, resource).observe(seconds)


def bind_watchers(read: Callable[[], float]) -> None:
    WATCHERS.set_function(read)


def count_write(operation: str, resource: str) -> None:
    WRITES.labels(operation, resource).inc()


async def metrics_handler(req: Request) -> Response:
    return Response(200, [("Content-Type", CONTENT_TYPE_LATEST)], generate_latest())
