"""A small HTTP/1.1 (usually HTTPS) server on asyncio streams, parsed with h11.

One port must serve three kinds of traffic, as k3s does on 6443:
- plain request/response (the API, join endpoints, /metrics);
- long streamed bodies (watch, ``logs -f``), which end when the client goes away;
- raw upgrades (the websocket tunnel, exec channels, SPDY), where a handler takes
  the connection over and speaks its own protocol on the raw stream.

h11 is sans-I/O, so this module owns every socket decision: body caps, timeouts,
keep-alive and the hand-over after an upgrade. Routing is left to the caller,
apart from a tiny prefix :class:`Router` for composing components.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from .aio import cancel_and_wait
from .log import fields

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 3 * 1024 * 1024  # the upstream apiserver's request cap
MAX_HEAD = 64 * 1024  # request line + headers
HEADER_TIMEOUT = 10.0  # slowloris guard: a request head must arrive in this time
IDLE_TIMEOUT = 120.0  # keep-alive connections idle longer than this are closed
READ_SIZE = 64 * 1024


class Headers:
    """Case-insensitive, multi-valued request headers."""

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._items = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self._items:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._items if k == name]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


@dataclass(slots=True)
class RawStream:
    """A connection handed over after an upgrade. ``pending`` holds bytes the
    client sent after the request head that were already read off the socket."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pending: bytes


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    # bytes, or an async iterable streamed with chunked encoding and flushed per chunk.
    body: bytes | AsyncIterable[bytes] = b""


# Returned by a handler that took the connection over with Request.take_over().
TAKEN_OVER = Response(status=101)


def json_response(status: int, obj: Any, *, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(status, [("Content-Type", "application/json"), *(headers or [])], body)


def text_response(status: int, text: str, *, content_type: str = "text/plain; charset=utf-8") -> Response:
    return Response(status, [("Content-Type", content_type)], text.encode())


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: Headers
    body: bytes
    peer: tuple[str, int] | None
    peercert_der: bytes | None
    _conn: "_Connection | None" = field(default=None, repr=False)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def is_upgrade(self) -> bool:
        conn = (self.headers.get("connection") or "").lower()
        return "upgrade" in [t.strip() for t in conn.split(",")] and "upgrade" in self.headers

    def take_over(self) -> RawStream:
        """Hand the raw connection to the caller, who then owns and closes it.
        Only valid for upgrade (or CONNECT) requests; the handler must return
        :data:`TAKEN_OVER` afterwards."""
        if self._conn is None:
            raise RuntimeError("request is not attached to a connection")
        return self._conn.take_over()


Handler = Callable[[Request], Awaitable[Response]]
ErrorBody = Callable[[int, str], Response]


def plain_error(status: int, message: str) -> Response:
    return text_response(status, message + "\n")


class _ClientGone(Exception):
    pass


class _Connection:
    def __init__(self, server: "HTTPServer", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.taken = False
        peer = writer.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        sslobj = writer.get_extra_info("ssl_object")
        self.peercert = sslobj.getpeercert(binary_form=True) if sslobj is not None else None

    def take_over(self) -> RawStream:
        if self.h11.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
            raise RuntimeError("take_over() needs an upgrade or CONNECT request")
        self.taken = True
        pending, _closed = self.h11.trailing_data
        return RawStream(self.reader, self.writer, bytes(pending))

    async def _next_event(self, timeout: float) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
            self.h11.receive_data(data)

    async def serve(self) -> None:
        try:
            while True:
                first = self.h11.their_state is h11.IDLE and not self.h11.trailing_data[0]
                try:
                    event = await self._next_event(IDLE_TIMEOUT if first else HEADER_TIMEOUT)
                except asyncio.TimeoutError:
                    return
                if isinstance(event, h11.ConnectionClosed):
                    return
                if not isinstance(event, h11.Request):
                    return
                request = await self._read_request(event)
                if request is None:
                    return
                await self._respond(request)
                if self.taken:
                    return
                if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is not h11.DONE:
                    return
                self.h11.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            message = f"bad request: {exc}"
            if exc.error_status_hint == 431:  # h11 says "Receive buffer too long"
                message = f"the request line and headers are larger than the {MAX_HEAD // 1024} KiB limit"
            await self._send_error_if_possible(exc.error_status_hint, message)
        except h11.LocalProtocolError as exc:  # our answer broke HTTP framing: one line, not a task crash
            log.warning("response violated HTTP framing; connection closed", extra=fields(error=str(exc)))
        except (ConnectionError, asyncio.IncompleteReadError, _ClientGone, ssl.SSLError, asyncio.TimeoutError):
            pass
        finally:
            if not self.taken:
                await close_writer(self.writer)

    async def _read_request(self, event: h11.Request) -> Request | None:
        # h11 caps only a head still arriving; one that came in a single read
        # is measured here so the limit does not depend on TCP segmentation.
        head_size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
        if head_size > MAX_HEAD:
            message = f"the request line and headers are larger than the {MAX_HEAD // 1024} KiB limit"
            await self._send_response(self.server.error_body(431, message), close=True)
            return None
        target = event.target.decode("latin-1")
        split = urlsplit(target)
        headers = Headers(event.headers)
        cap = self.server.max_body
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            await self._send_response(self.server.error_body(413, f"request body is larger than the {cap}-byte limit"), close=True)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            ev = await self._next_event(HEADER_TIMEOUT)
            if isinstance(ev, h11.Data):
                size += len(ev.data)
                if size > cap:
                    await self._send_response(self.server.error_body(413, f"request body is larger than the {cap}-byte limit"), close=True)
                    return None
                chunks.append(bytes(ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                break
            elif isinstance(ev, h11.ConnectionClosed):
                return None
        return Request(
            method=event.method.decode("ascii"),
            target=target,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            headers=headers,
            body=b"".join(chunks),
            peer=self.peer,
            peercert_der=self.peercert,
            _conn=self,
        )

    async def _respond(self, request: Request) -> None:
        try:
            response = await self.server.handler(request)
        except Exception:  # a handler bug must not kill the server; it is logged loudly
            log.exception("handler failed", extra=fields(method=request.method, path=request.path))
            if self.taken:
                return
            response = self.server.error_body(500, "internal error")
        if self.taken:
            return
        if response is TAKEN_OVER:
            raise RuntimeError("handler returned TAKEN_OVER without take_over()")
        await self._send_response(response, head=request.method == "HEAD")

    async def _send_response(self, response: Response, *, close: bool = False, head: bool = False) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        streaming = not isinstance(response.body, (bytes, bytearray))
        if not streaming:
            headers.append((b"content-length", str(len(response.body)).encode()))  # type: ignore[arg-type]
        if close:
            headers.append((b"connection", b"close"))
        self.writer.write(self.h11.send(h11.Response(status_code=response.status, headers=headers)))
        if head:
            # A HEAD answer has headers only; h11 refuses body bytes (it used to
            # raise LocalProtocolError out of the connection task and drop it).
            aclose = getattr(response.body, "aclose", None)
            if streaming and aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        elif streaming:
            await self._stream(response.body)  # type: ignore[arg-type]
        elif response.body:
            self.writer.write(self.h11.send(h11.Data(data=response.body)))
        self.writer.write(self.h11.send(h11.EndOfMessage()))
        await self.writer.drain()

    async def _stream(self, body: AsyncIterable[bytes]) -> None:
        """Send chunks as they come; stop the producer when the client hangs up.

        Watches can be idle for minutes, so a peer close is noticed by reading
        the socket concurrently rather than by a failed write.
        """
        iterator = body.__aiter__()
        eof = asyncio.ensure_future(self._wait_eof())
        nxt: asyncio.Future[bytes] | None = None
        try:
            while True:
                nxt = asyncio.ensure_future(iterator.__anext__())
                done, _ = await asyncio.wait({nxt, eof}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    with contextlib.suppress(BaseException):
                        await nxt
                    raise _ClientGone()
                try:
                    chunk = nxt.result()
                except StopAsyncIteration:
                    return
                if chunk:
                    self.writer.write(self.h11.send(h11.Data(data=chunk)))
                    await self.writer.drain()
        finally:
            eof.cancel()
            if nxt is not None and not nxt.done():  # cancelled mid-chunk (server shutdown)
                nxt.cancel()
                with contextlib.suppress(BaseException):
                    await nxt
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _wait_eof(self) -> None:
        while True:
            data = await self.reader.read(READ_SIZE)
            if not data:
                return
            self.h11.receive_data(data)  # kept for the next request cycle

    async def _send_error_if_possible(self, status: int, message: str) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        with contextlib.suppress(Exception):
            await self._send_response(self.server.error_body(status, message), close=True)


CLOSE_GRACE = 1.0  # a TLS peer that never answers close_notify must not hold up shutdown


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a connection, waiting briefly for a clean (TLS) close, then abort."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_GRACE):
            await writer.wait_closed()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise
    except Exception:  # timed out, or the peer reset: nothing left to be polite to
        writer.transport.abort()


PLAIN_HTTP_REPLY = (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
                    b"Client sent an HTTP request to an HTTPS server.\n")


async def _peek_byte(loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout: float) -> bytes:
    """The first byte the client sent, left in the socket for the TLS layer."""
    readable = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: readable.done() or readable.set_result(None))
    try:
        async with asyncio.timeout(timeout):
            await readable
    finally:
        loop.remove_reader(sock.fileno())
    return sock.recv(1, socket.MSG_PEEK)


async def _reply_and_linger(loop: asyncio.AbstractEventLoop, sock: socket.socket, reply: bytes) -> None:
    """Send ``reply`` and half-close, then read what the client still sends for a
    moment: closing with unread input makes the kernel send RST, which can
    destroy the reply before the client reads it."""
    try:
        await loop.sock_sendall(sock, reply)
        sock.shutdown(socket.SHUT_WR)
        async with asyncio.timeout(1.0):
            while await loop.sock_recv(sock, 65536):
                pass
    except (OSError, TimeoutError):
        pass


class HTTPServer:
    """Serve ``handler`` on one TCP port; TLS when ``ssl_context`` is given."""

    def __init__(
        self,
        handler: Handler,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        error_body: ErrorBody = plain_error,
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.max_body = max_body
        self.error_body = error_body
        self._server: asyncio.Server | None = None
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        if self.ssl_context is None:
            self._server = await asyncio.start_server(self._on_connection, host, port, limit=READ_SIZE)
            sockname = self._server.sockets[0].getsockname()
            return sockname[0], sockname[1]
        # TLS: accept plain sockets and peek at the first byte before the handshake,
        # so a plaintext HTTP request gets upstream's 400 rather than a silent close.
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(512)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._accepting = asyncio.ensure_future(self._accept_loop(listener))
        sockname = listener.getsockname()
        return sockname[0], sockname[1]

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. EMFILE: keep serving the connections we have
                log.warning("accept failed", extra=fields(error=str(exc)))
                await asyncio.sleep(0.1)
                continue
            asyncio.ensure_future(self._on_tls_socket(sock))

    async def _on_tls_socket(self, sock: socket.socket) -> None:
        task = asyncio.current_task()
        assert task is not None and self.ssl_context is not None
        self._tasks.add(task)
        loop = asyncio.get_running_loop()
        try:
            try:
                first = await _peek_byte(loop, sock, HEADER_TIMEOUT)
            except (OSError, TimeoutError):
                first = b""
            if first != b"\x16":  # not a TLS handshake record
                if first.isalpha():
                    await _reply_and_linger(loop, sock, PLAIN_HTTP_REPLY)
                sock.close()
                return
            reader = asyncio.StreamReader(limit=READ_SIZE)
            protocol = asyncio.StreamReaderProtocol(reader)
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol, sock, ssl=self.ssl_context, ssl_handshake_timeout=HEADER_TIMEOUT)
            except (OSError, ssl.SSLError, TimeoutError):
                sock.close()
                return
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await _Connection(self, reader, writer).serve()
        finally:
            self._tasks.discard(task)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await _Connection(self, reader, writer).serve()
        finally:
            self._tasks.discard(task)

    async def close(self) -> None:
        """Stop listening and end open connections (streams included)."""
        if self._server is not None:
            self._server.close()
        if self._accepting is not None:
            await cancel_and_wait([self._accepting])
        if self._listener is not None:
            self._listener.close()
        stuck = await cancel_and_wait(list(self._tasks), grace=CLOSE_GRACE + 1.0)
        if stuck:
            log.warning("connections did not end at shutdown", extra=fields(count=len(stuck)))
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)


class Router:
    """Dispatch by path: exact paths first, then the longest matching prefix."""

    def __init__(self, fallback: Handler | None = None) -> None:
        self._exact: dict[str, Handler] = {}
        self._prefixes: list[tuple[str, Handler]] = []
        self._fallback = fallback

    def add(self, path: str, handler: Handler, *, prefix: bool = False) -> None:
        if prefix:
            self._prefixes.append((path, handler))
            self._prefixes.sort(key=lambda item: len(item[0]), reverse=True)
        else:
            self._exact[path] = handler

    async def __call__(self, request: Request) -> Response:
        handler = self._exact.get(request.path)
        if handler is None:
            handler = next((h for p, h in self._prefixes if request.path.startswith(p)), self._fallback)
        if handler is None:
            return plain_error(404, f"no handler for {request.path}")
        return await handler(request)
