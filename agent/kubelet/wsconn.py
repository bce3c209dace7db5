"""A thin asyncio layer over websockets' sans-I/O protocol, on a taken-over stream.

The kubelet endpoints get their connection from ``Request.take_over()`` after
h11 parsed the request head, so websockets' own servers cannot be used; its
``ServerProtocol``/``ClientProtocol`` cores are driven here instead. Messages
are assembled from fragments; pings are answered by the core.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Request as WSRequest
from websockets.http11 import Response as WSResponse
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from edgectl.httpd import RawStream, Request, Response, json_response

MAX_MESSAGE = 16 * 1024 * 1024
CLOSE_TIMEOUT = 2.0


class WebSocketConnection:
    def __init__(self, raw: RawStream, protocol: ServerProtocol | ClientProtocol, *, subprotocol: str | None) -> None:
        self._raw = raw
        self._protocol = protocol
        self.subprotocol = subprotocol
        self._messages: deque[bytes] = deque()
        self._partial: bytearray | None = None
        self._write_lock = asyncio.Lock()
        self._eof = False
        self._pending = raw.pending

    async def _flush(self) -> None:
        async with self._write_lock:
            for data in self._protocol.data_to_send():
                if data:
                    self._raw.writer.write(data)
                elif self._raw.writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        self._raw.writer.write_eof()
                else:
                    # TLS has no half-close: the closing handshake is over, so close
                    # the connection now rather than wait for a peer who waits for us.
                    self._eof = True
                    self._raw.writer.close()
            with contextlib.suppress(ConnectionError):
                await self._raw.writer.drain()

    async def recv(self) -> bytes | None:
        """The next message (binary, or text as UTF-8 bytes); None when closed."""
        while not self._messages:
            if self._eof:
                return None
            if self._pending:
                data, self._pending = self._pending, b""
            else:
                try:
                    data = await self._raw.reader.read(64 * 1024)
                except (ConnectionError, OSError):
                    data = b""
            if data:
                self._protocol.receive_data(data)
            else:
                self._protocol.receive_eof()
                self._eof = True
            for frame in self._protocol.events_received():
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    self._partial = bytearray(frame.data)
                elif frame.opcode is Opcode.CONT and self._partial is not None:
                    self._partial += frame.data
                else:
                    continue  # ping/pong/close are handled by the core
                if frame.fin and self._partial is not None:
                    self._messages.append(bytes(self._partial))
                    self._partial = None
            await self._flush()
            if self._protocol.state is State.CLOSED:
                self._eof = True
        return self._messages.popleft()

    async def send(self, data: bytes) -> bool:
        if self._protocol.state is not State.OPEN:
            return False
        self._protocol.send_binary(data)
        await self._flush()
        return True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame, give the peer a moment to answer, drop the socket."""
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(code, reason)
            await self._flush()
        if not self._eof:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(self._drain_until_closed(), CLOSE_TIMEOUT)
        self._raw.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._raw.writer.wait_closed(), CLOSE_TIMEOUT)

    async def _drain_until_closed(self) -> None:
        while await self.recv() is not None:
            pass


def offered_subprotocols(headers: Sequence[str]) -> list[str]:
    return [p.strip() for value in headers for p in value.split(",") if p.strip()]


def accept_websocket(
    request: Request, *, subprotocols: Sequence[str], error: Callable[[int, str], Response] | None = None,
) -> tuple[WebSocketConnection | None, Response | None]:
    """Complete the server handshake for ``request``. Returns the connection
    (the request is then taken over) or an error response to send instead."""
    make_error = error or (lambda code, msg: json_response(code, {"message": msg}))
    offered = offered_subprotocols(request.headers.get_all("sec-websocket-protocol"))
    chosen = next((p for p in subprotocols if p in offered), None)  # our preference order
    if chosen is None:
        return None, make_error(400, f"no supported websocket subprotocol; offered {offered or 'none'}, "
                                     f"supported {', '.join(subprotocols)}")

    protocol = ServerProtocol(max_size=MAX_MESSAGE)
    # h11 already parsed the head; replay it so the core's parser moves on to frames.
    # Sec-WebSocket-Protocol is negotiated here instead: websockets rejects "/" in
    # subprotocol names, and kubectl's port-forward one is "SPDY/3.1+portforward.k8s.io".
    head = f"GET {request.target} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in request.headers.items() if k != "sec-websocket-protocol")
    protocol.receive_data((head + "\r\n").encode("latin-1"))
    parsed = protocol.events_received()
    if len(parsed) != 1 or not isinstance(parsed[0], WSRequest):
        return None, make_error(400, "websocket handshake failed: unreadable request head")
    response = protocol.accept(parsed[0])
    if response.status_code != 101:
        return None, make_error(400, f"websocket handshake failed: {response.body.decode(errors='replace').strip()}")
    response.headers["Sec-WebSocket-Protocol"] = chosen
    protocol.send_response(response)
    raw = request.take_over()
    for data in protocol.data_to_send():
        raw.writer.write(data)
    return WebSocketConnection(raw, protocol, subprotocol=chosen), None


async def connect_websocket(
    raw: RawStream, *, url: str, subprotocols: Sequence[str], extra_headers: Sequence[tuple[str, str]] = (),
) -> WebSocketConnection:
    """Client handshake on an already connected stream (tests, proxies)."""
    # Subprotocols are handled outside the core (see accept_websocket).
    protocol = ClientProtocol(parse_uri(url), max_size=MAX_MESSAGE)
    request = protocol.connect()
    if subprotocols:
        request.headers["Sec-WebSocket-Protocol"] = ", ".join(subprotocols)
    for name, value in extra_headers:
        request.headers[name] = value
    protocol.send_request(request)
    for data in protocol.data_to_send():
        raw.writer.write(data)
    await raw.writer.drain()
    try:
        head = await raw.reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        raise ConnectionError("connection closed during websocket handshake") from None
    chosen = None
    kept = []
    for line in head.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"sec-websocket-protocol":
            chosen = value.strip().decode("latin-1")
        else:
            kept.append(line)
    data = b"\r\n".join(kept)
    while True:
        if not data:
            protocol.receive_eof()
        else:
            protocol.receive_data(data)
        events = protocol.events_received()
        if events:
            response, early = events[0], events[1:]
            assert isinstance(response, WSResponse)
            if protocol.handshake_exc is not None:
                raise ConnectionError(f"websocket handshake failed: {response.status_code} {response.body!r}")
            break
        if not data:
            raise ConnectionError("connection closed during websocket handshake")
        data = await raw.reader.read(64 * 1024)
    if chosen is not None and chosen not in subprotocols:
        raise ConnectionError(f"server chose subprotocol {chosen!r}, not one of {list(subprotocols)}")
    conn = WebSocketConnection(raw, protocol, subprotocol=chosen)
    for frame in early:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY) and frame.fin:
            conn._messages.append(bytes(frame.data))
    return conn
