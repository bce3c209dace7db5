"""Server side of the tunnel: admits agent websockets and dials through them.

The API server mounts two handlers on its HTTPS port:
- ``CONNECT_PATH`` -> ``accept(request, node=<authenticated node name>)``
- ``STATUS_PATH``  -> ``stats_handler`` (admins only)

and calls ``dial(node, "tcp/127.0.0.1:10250")`` to reach a kubelet.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.datastructures import Headers as WSHeaders
from websockets.http11 import Request as WSRequest
from websockets.protocol import Protocol
from websockets.server import ServerProtocol
from websockets.protocol import Side as WSSide

from .. import httpd
from ..log import fields
from . import metrics
from .connection import WS_MAX_SIZE, TunnelConnection, code_name
from .errors import DialError, InvalidState, StreamReset
from .frames import ErrorCode
from .session import Session, SessionConfig, Side
from .streams import TunnelReader, TunnelWriter

log = logging.getLogger(__name__)

CONNECT_PATH = "/v1-edge/connect"
STATUS_PATH = "/v1-edge/tunnels"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    session: SessionConfig = field(default_factory=lambda: SessionConfig(identity="edgectl-server"))
    admissions_per_second: float = 50.0  # agents admitted per second (token bucket)
    admission_burst: int = 100
    dial_timeout: float = 10.0
    drain_timeout: float = 30.0  # how long a replaced session may finish its streams


class TokenBucket:
    """Admission rate limit: ``rate`` per second with ``burst`` capacity. Pure; time passed in."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        return max(0.0, (1.0 - self.tokens) / self.rate)


@dataclass(slots=True)
class _Entry:
    node: str
    conn: TunnelConnection
    task: asyncio.Task[None]
    reconnects: int


class TunnelServer:
    def __init__(self, *, config: ServerConfig = ServerConfig()) -> None:
        self.config = config
        self._sessions: dict[str, _Entry] = {}
        self._draining: set[asyncio.Task[None]] = set()
        self._accepted_count: dict[str, int] = {}
        self._bucket = TokenBucket(config.admissions_per_second, config.admission_burst, time.monotonic())
        self._bytes_in_closed = 0
        self._bytes_out_closed = 0
        self._closing = False
        metrics.track(self)

    # ---- admission -------------------------------------------------------------

    async def accept(self, request: httpd.Request, *, node: str) -> httpd.Response:
        """Upgrade an authenticated agent request to a tunnel session for ``node``.

        Returns ``httpd.TAKEN_OVER`` on success, else an error response (400 for
        a non-websocket request, 429 over the admission rate, 503 when closing).
        """
        if self._closing:
            metrics.ADMISSIONS.labels("closing").inc()
            return httpd.plain_error(503, "tunnel server is shutting down")
        if request.method != "GET" or not request.is_upgrade:
            metrics.ADMISSIONS.labels("bad_request").inc()
            return httpd.plain_error(400, "expected a websocket upgrade (GET with Upgrade: websocket)")
        if not self._bucket.take(time.monotonic()):
            metrics.ADMISSIONS.labels("rate_limited").inc()
            wait = max(1, round(self._bucket.retry_after() + 0.5))
            return httpd.Response(429, [("Retry-After", str(wait)), ("Content-Type", "text/plain")], b"too many agent connections, retry later\n")
        handshake = ServerProtocol(max_size=WS_MAX_SIZE)
        ws_request = WSRequest(request.target, WSHeaders(request.headers.items()))
        response = handshake.accept(ws_request)
        if response.status_code != 101:
            metrics.ADMISSIONS.labels("bad_request").inc()
            body = response.body.decode("utf-8", "replace") if response.body else "bad websocket handshake"
            return httpd.plain_error(400, body.strip())
        raw = request.take_over()
        raw.writer.write(response.serialize())
        metrics.ADMISSIONS.labels("accepted").inc()
        # The handshake is done; frames go through a plain server-side protocol.
        ws = Protocol(WSSide.SERVER, max_size=WS_MAX_SIZE)
        session = Session(Side.SERVER, config=self.config.session, now=asyncio.get_running_loop().time())
        peer = request.peer
        remote = f"{peer[0]}:{peer[1]}" if peer else ""
        conn = TunnelConnection(session=session, ws=ws, reader=raw.reader, writer=raw.writer, name=node, remote=remote)
        count = self._accepted_count.get(node, 0)
        self._accepted_count[node] = count + 1
        old = self._sessions.get(node)
        task = asyncio.create_task(self._serve(node, conn, raw.pending), name=f"tunnel-session-{node}")
        self._sessions[node] = _Entry(node, conn, task, count)
        if old is not None:
            log.info("tunnel node reconnected; draining its old session", extra=fields(node=node, remote=remote))
            drain = asyncio.create_task(old.conn.drain(self.config.drain_timeout, "replaced by a newer session"))
            self._draining.add(drain)
            drain.add_done_callback(self._draining.discard)
        log.info("tunnel session accepted", extra=fields(node=node, remote=remote, reconnects=count))
        return httpd.TAKEN_OVER

    async def _serve(self, node: str, conn: TunnelConnection, pending: bytes) -> None:
        try:
            await conn.run(pending)
        finally:
            self._bytes_in_closed += conn.session.bytes_in
            self._bytes_out_closed += conn.session.bytes_out
            info = conn.close_info
            if info is not None and info.code:
                metrics.SESSION_ERRORS.labels(code_name(info.code)).inc()
            entry = self._sessions.get(node)
            if entry is not None and entry.conn is conn:
                del self._sessions[node]

    # ---- dialing ----------------------------------------------------------------

    async def dial(self, node: str, target: str, *, timeout: float | None = None) -> tuple[TunnelReader, TunnelWriter]:
        """Open a stream to ``target`` (``tcp/127.0.0.1:10250``) on ``node``'s side.

        Raises DialError with ``reason`` no_session, refused, connect_failed,
        timeout or session_closed.
        """
        timeout = self.config.dial_timeout if timeout is None else timeout
        start = time.perf_counter()
        try:
            entry = self._sessions.get(node)
            if entry is None or entry.conn.session.closed is not None:
                raise DialError(DialError.NO_SESSION, f"no tunnel session for node {node!r}")
            conn = entry.conn
            try:
                stream = conn.open_stream(target)
            except InvalidState as exc:
                raise DialError(DialError.SESSION_CLOSED, f"node {node!r}: {exc}") from None
            try:
                await asyncio.wait_for(asyncio.shield(stream.accepted), timeout)
            except asyncio.CancelledError:
                conn.reset(stream.id, ErrorCode.CANCEL, "dial cancelled")  # never leave an orphan stream
                raise
            except asyncio.TimeoutError:
                conn.reset(stream.id, ErrorCode.TIMEOUT, "dial timed out")
                raise DialError(DialError.TIMEOUT, f"dial {target} on node {node!r} timed out after {timeout}s") from None
            except StreamReset as exc:
                raise DialError(DialError.SESSION_CLOSED, f"node {node!r}: {exc}") from None
            except DialError as exc:
                raise DialError(exc.reason, f"dial {target} on node {node!r}: {exc}") from None
        except DialError as exc:
            metrics.DIAL_FAILURES.labels(exc.reason).inc()
            raise
        metrics.DIAL_SECONDS.observe(time.perf_counter() - start)
        return stream.reader, stream.writer

    def has_session(self, node: str) -> bool:
        entry = self._sessions.get(node)
        return entry is not None and entry.conn.session.closed is None

    async def wait_for_session(self, node: str, timeout: float) -> None:
        """Wait until ``node`` has a session whose HELLO arrived (tests, demo)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self._sessions.get(node)
            if entry is not None and entry.conn.session.peer is not None and entry.conn.session.closed is None:
                return
            await asyncio.sleep(0.02)
        raise DialError(DialError.NO_SESSION, f"node {node!r} did not connect within {timeout}s")

    # ---- status ---------------------------------------------------------------------

    def stats(self, *, streams: bool = True) -> dict[str, Any]:
        """Live data of every session (and stream); JSON-serialisable."""
        out = []
        for entry in sorted(self._sessions.values(), key=lambda e: e.node):
            conn = entry.conn
            sess = conn.session
            now = conn.now
            item: dict[str, Any] = {
                "node": entry.node,
                "remote": conn.remote,
                "connected_since": dt.datetime.fromtimestamp(conn.connected_since, dt.timezone.utc).isoformat(timespec="seconds"),
                "uptime_seconds": round(time.time() - conn.connected_since, 1),
                "last_rtt_ms": round(sess.last_rtt * 1000, 3) if sess.last_rtt is not None else None,
                "open_streams": sess.open_streams,
                "bytes_in": sess.bytes_in,
                "bytes_out": sess.bytes_out,
                "buffered": sess.buffered_bytes,
                "blocked_streams": sess.blocked_streams(),
                "reconnects": entry.reconnects,
                "draining": sess.goaway_sent or sess.goaway_received,
                "agent": sess.peer.identity if sess.peer else None,
            }
            if streams:
                item["streams"] = [sess.stream_info(sid, now) for sid in sess.stream_ids]
            out.append(item)
        return {"kind": "TunnelStatus", "apiVersion": "edge.edgectl.io/v1", "sessions": out}

    async def stats_handler(self, request: httpd.Request) -> httpd.Response:
        """GET STATUS_PATH[?streams=false]: JSON of :meth:`stats`. Authorise before calling."""
        if request.method != "GET":
            return httpd.plain_error(405, "only GET is supported")
        want = (request.arg("streams", "true") or "true").lower() not in ("0", "false", "no")
        return httpd.json_response(200, self.stats(streams=want))

    # ---- shutdown ---------------------------------------------------------------------

    async def close(self, *, drain: float = 0.0) -> None:
        """Stop admitting; drain sessions for up to ``drain`` seconds, then close them."""
        self._closing = True
        entries = list(self._sessions.values())
        if drain > 0:
            await asyncio.gather(*(e.conn.drain(drain, "server shutting down") for e in entries), return_exceptions=True)
        for e in entries:
            e.conn.close(ErrorCode.OK, "server shutting down")
        tasks = [e.task for e in entries] + list(self._draining)
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=5.0)
            for t in pending:
                t.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*pending, return_exceptions=True)
