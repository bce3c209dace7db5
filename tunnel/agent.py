"""Agent side: dial out to the server (HTTPS, optional HTTP CONNECT proxy), hold
the tunnel, serve the server's OPENs against the allow-list, reconnect with
exponential backoff and full jitter.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import WebSocketException
from websockets.frames import Frame
from websockets.http11 import Response as WSResponse
from websockets.uri import parse_uri

from ..log import fields
from .allowlist import AllowList
from .auth import NODE_HEADER
from .backoff import BASE, CAP, backoff_delay
from .connection import WS_MAX_SIZE, TunnelConnection
from .errors import TunnelError
from .frames import ErrorCode
from .pipe import pipe_tcp
from .server import CONNECT_PATH
from .session import Session, SessionConfig, Side
from .streams import TunnelStream

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0


class HandshakeError(TunnelError):
    """The server refused the websocket upgrade; ``status`` is the HTTP status (0 if none)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def client_ssl_context(*, ca_file: str | None = None, ca_data: str | None = None, cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext:
    """TLS client context that verifies the server against our CA; client cert optional."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file, cadata=ca_data)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    server: str  # https://host:port (path defaults to /v1-edge/connect)
    node: str
    token: str | None = None
    proxy: str | None = None  # http://[user:pass@]host:port
    allow: AllowList = field(default_factory=AllowList)
    session: SessionConfig | None = None  # identity defaults to the node name
    backoff_base: float = BASE
    backoff_cap: float = CAP
    dial_timeout: float = 10.0  # agent-side TCP connect to a target


class TunnelAgent:
    """``await agent.run()`` keeps a session up until ``stop()``."""

    def __init__(self, config: AgentConfig, *, ssl_context: ssl.SSLContext | None = None) -> None:
        url = urlsplit(config.server)
        if url.scheme not in ("https", "wss", "http", "ws") or not url.hostname:
            raise ValueError(f"--server {config.server!r}: expected https://host:port")
        self.config = config
        self.secure = url.scheme in ("https", "wss")
        self.host = url.hostname
        self.port = url.port or (443 if self.secure else 80)
        self.path = url.path if url.path not in ("", "/") else CONNECT_PATH
        self.ssl_context = ssl_context if ssl_context is not None else (client_ssl_context() if self.secure else None)
        self.conn: TunnelConnection | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.sessions = 0
        self.last_error: str | None = None
        self._stopping = False
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- run loop -------------------------------------------------------------

    async def run(self) -> None:
        attempt = 0
        while not self._stopping:
            retry_after = None
            try:
                await self.connect_once()
                attempt = 0  # a session that got going resets the backoff
                self.last_error = self._close_reason()
            except HandshakeError as exc:
                self.last_error = str(exc)
                retry_after = exc.retry_after
                log.warning("tunnel handshake refused", extra=fields(server=self.config.server, status=exc.status, error=str(exc)))
            except (OSError, asyncio.TimeoutError, ssl.SSLError, TunnelError, EOFError, WebSocketException) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("tunnel connect failed", extra=fields(server=self.config.server, error=self.last_error))
            except Exception as exc:  # the reconnect loop must outlive any one session's failure
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("tunnel session failed unexpectedly", exc_info=True, extra=fields(server=self.config.server))
            if self._stopping:
                break
            delay = backoff_delay(attempt, base=self.config.backoff_base, cap=self.config.backoff_cap)
            if retry_after is not None:
                delay = max(delay, retry_after)
            attempt += 1
            self.reconnects += 1
            log.info("tunnel reconnecting", extra=fields(delay=round(delay, 2), attempt=attempt))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    def _close_reason(self) -> str | None:
        info = self.conn.close_info if self.conn else None
        return info.message if info is not None else None

    async def stop(self) -> None:
        self._stopping = True
        self._stop.set()
        if self.conn is not None:
            self.conn.close(ErrorCode.OK, "agent stopping")
        for t in list(self._tasks):
            t.cancel()

    # ---- one session ----------------------------------------------------------------

    async def connect_once(self) -> None:
        """Connect, handshake, serve the session until it ends."""
        reader, writer = await asyncio.wait_for(self._open_transport(), HANDSHAKE_TIMEOUT)
        try:
            ws = await asyncio.wait_for(self._handshake(reader, writer), HANDSHAKE_TIMEOUT)
        except BaseException:
            writer.close()
            raise
        loop = asyncio.get_running_loop()
        config = self.config.session or SessionConfig(identity=self.config.node)
        session = Session(Side.AGENT, config=config, now=loop.time())
        conn = TunnelConnection(
            session=session, ws=ws, reader=reader, writer=writer,
            name=self.config.node, remote=f"{self.host}:{self.port}", on_stream_opened=self._on_open,
        )
        self.conn = conn
        self.sessions += 1
        run = asyncio.create_task(conn.run())
        try:
            await asyncio.wait({run, asyncio.ensure_future(conn.hello.wait())}, return_when=asyncio.FIRST_COMPLETED)
            if session.peer is not None:
                self.connected.set()
                log.info("tunnel connected", extra=fields(server=self.config.server, node=self.config.node))
            await run
        finally:
            self.connected.clear()
            if not run.done():
                run.cancel()
                with contextlib.suppress(BaseException):
                    await run

    async def _open_transport(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        limit = 4 * 1024 * 1024
        server_hostname = self.host if self.secure else None
        if not self.config.proxy:
            return await asyncio.open_connection(self.host, self.port, ssl=self.ssl_context, server_hostname=server_hostname, limit=limit)
        proxy = urlsplit(self.config.proxy)
        if proxy.scheme != "http" or not proxy.hostname:
            raise ValueError(f"--proxy {self.config.proxy!r}: expected http://host:port")
        reader, writer = await asyncio.open_connection(proxy.hostname, proxy.port or 3128, limit=limit)
        try:
            authority = f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"
            head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            if proxy.username:
                cred = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
                head += f"Proxy-Authorization: Basic {base64.b64encode(cred).decode()}\r\n"
            writer.write((head + "\r\n").encode())
            response = await reader.readuntil(b"\r\n\r\n")
            status_line = response.split(b"\r\n", 1)[0].decode("latin-1")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or parts[1] != "200":
                raise HandshakeError(int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0, f"proxy refused CONNECT: {status_line}")
            if self.secure:
                await writer.start_tls(self.ssl_context, server_hostname=server_hostname)  # type: ignore[arg-type]
            return reader, writer
        except BaseException:
            writer.close()
            raise

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> ClientProtocol:
        scheme = "wss" if self.secure else "ws"
        uri = parse_uri(f"{scheme}://{self.host}:{self.port}{self.path}")
        ws = ClientProtocol(uri, max_size=WS_MAX_SIZE)
        request = ws.connect()
        if self.config.token:
            request.headers["Authorization"] = f"Bearer {self.config.token}"
        request.headers[NODE_HEADER] = self.config.node
        ws.send_request(request)
        for chunk in ws.data_to_send():
            writer.write(chunk)
        while True:
            data = await reader.read(65536)
            if not data:
                ws.receive_eof()
            else:
                ws.receive_data(data)
            events = ws.events_received()
            for i, ev in enumerate(events):
                if isinstance(ev, WSResponse):
                    if ev.status_code != 101:
                        retry = ev.headers.get("Retry-After")
                        body = (ev.body or b"").decode("utf-8", "replace").strip()
                        raise HandshakeError(ev.status_code, f"server answered {ev.status_code}: {body or ev.reason_phrase}",
                                             float(retry) if retry and retry.isdigit() else None)
                    if ws.handshake_exc is not None:
                        raise HandshakeError(101, f"bad websocket handshake: {ws.handshake_exc}")
                    # Frames that arrived with the response go back for the connection.
                    ws.events[:0] = [e for e in events[i + 1 :] if isinstance(e, Frame)]
                    return ws
            if not data:
                raise EOFError("server closed the connection during the websocket handshake")

    # ---- serving OPENs -------------------------------------------------------------------

    def _on_open(self, stream: TunnelStream) -> None:
        task = asyncio.create_task(self._serve_stream(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_stream(self, stream: TunnelStream) -> None:
        conn = stream.conn
        target, refusal = self.config.allow.check(stream.target)
        if refusal is not None or target is None:
            code = ErrorCode.BAD_TARGET if target is None else ErrorCode.REFUSED
            log.info("tunnel dial refused", extra=fields(target=stream.target, reason=refusal))
            conn.reject(stream.id, code, refusal or "refused")
            return
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(str(target.host), target.port, limit=4 * 1024 * 1024), self.config.dial_timeout)
        except asyncio.TimeoutError:
            conn.reject(stream.id, ErrorCode.CONNECT_FAILED, f"connect {target} timed out")
            return
        except OSError as exc:
            conn.reject(stream.id, ErrorCode.CONNECT_FAILED, f"connect {target}: {exc.strerror or exc}")
            return
        try:
            conn.accept(stream.id)
        except TunnelError:
            w.close()
            return
        await pipe_tcp(r, w, stream.reader, stream.writer)

    def status(self) -> dict[str, Any]:
        conn = self.conn
        up = conn is not None and conn.session.closed is None and conn.session.peer is not None
        return {
            "server": self.config.server,
            "node": self.config.node,
            "connected": up,
            "connected_since": conn.connected_since if up and conn else None,
            "last_rtt_ms": round(conn.session.last_rtt * 1000, 3) if up and conn and conn.session.last_rtt is not None else None,
            "open_streams": conn.session.open_streams if up and conn else 0,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "time": time.time(),
        }
