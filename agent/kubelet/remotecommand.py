"""remotecommand serving shared by ``/exec`` and ``/attach``: websocket
channels (v5/v4) and SPDY (v1-v5) around a :class:`StreamSession`.

Both transports have one shape: start the session, copy its output to the
client, feed the client's stdin and resizes to it, then report the outcome as
a Status on the error channel. What a session is (a new process for exec, a
container's console for attach), what its outcome is, and what the client
leaving means (kill the process; detach) is the session's business.

Query parameters use the kubelet names (``input``, ``output``, ``error``, as
the apiserver rewrites them) and also the pod-subresource names (``stdin``,
``stdout``, ``stderr``), so the endpoints work both behind the proxy and when
called directly.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from edgectl.agent.streams import channels as ch
from edgectl.agent.streams.spdy_session import Role
from edgectl.httpd import TAKEN_OVER, Request, Response
from edgectl.log import fields

from .spdy_conn import RawTransport, SpdyConnection, SpdyStream
from .status import status_response
from .wsconn import accept_websocket

log = logging.getLogger(__name__)

STREAM_WAIT_TIMEOUT = 30.0  # upstream's streamCreationTimeout
PEER_CLOSE_WAIT = 2.0
STDOUT, STDERR = 1, 2  # what StreamSession.read() tags output with (the channel numbers)


class StreamOptionError(ValueError):
    pass


def query_flag(query: Mapping[str, Sequence[str]], *names: str) -> bool:
    for name in names:
        for value in query.get(name, ()):
            if value.lower() in ("1", "true", "yes", ""):
                return True
    return False


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    """Which streams the client asked for (and whether it wants a terminal)."""

    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def streams_from_query(cls, query: Mapping[str, Sequence[str]]) -> dict[str, bool]:
        tty = query_flag(query, "tty")
        streams = {
            "stdin": query_flag(query, "input", "stdin"),
            "stdout": query_flag(query, "output", "stdout"),
            "stderr": query_flag(query, "error", "stderr") and not tty,  # a terminal merges stderr into stdout
            "tty": tty,
        }
        if not (streams["stdin"] or streams["stdout"] or query_flag(query, "error", "stderr")):
            raise StreamOptionError("you must specify at least one of stdin, stdout, stderr")
        return streams

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]]) -> "StreamOptions":
        return cls(**cls.streams_from_query(query))


class StreamSession(Protocol):
    """What runs behind one exec or attach connection."""

    async def start(self) -> None:
        """Begin; OSError becomes a failure Status (``<label> failed: ...``)."""

    async def read(self) -> tuple[int, bytes] | None:
        """Next ``(STDOUT|STDERR, data)``; None once the output has ended."""

    async def write_stdin(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def resize(self, width: int, height: int) -> None: ...

    async def outcome(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """After the output ended: the final Status and fields for the log."""

    def abort(self) -> None:
        """The client went away."""

    async def close(self) -> None: ...


# --- websocket ---------------------------------------------------------------

async def serve_websocket(request: Request, opts: StreamOptions, session: StreamSession, *, label: str) -> Response:
    ws, error = accept_websocket(request, subprotocols=ch.WS_EXEC_PROTOCOLS, error=status_response)
    if ws is None:
        assert error is not None
        return error
    protocol = ws.subprotocol or ch.V4
    reader: asyncio.Task[None] | None = None
    try:
        # Upstream announces the open streams with an empty message on the lowest writable channel.
        await ws.send(ch.encode_channel(ch.STDOUT if opts.stdout else ch.STDERR if opts.stderr else ch.ERROR))
        reader = asyncio.create_task(_ws_input(ws, session, protocol))
        try:
            await session.start()
        except OSError as exc:
            await ws.send(ch.encode_channel(ch.ERROR, ch.encode_status(protocol, ch.status_error(f"{label} failed: {exc}"))))
            return TAKEN_OVER
        while (item := await session.read()) is not None:
            channel, data = item
            if not await ws.send(ch.encode_channel(ch.STDOUT if channel == STDOUT else ch.STDERR, data)):
                session.abort()
        status, outcome = await session.outcome()
        await ws.send(ch.encode_channel(ch.ERROR, ch.encode_status(protocol, status)))
        log.info(f"{label} finished", extra=fields(transport="websocket", protocol=protocol, **outcome))
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await session.close()
        await ws.close(1000)
    return TAKEN_OVER


async def _ws_input(ws: Any, session: StreamSession, protocol: str) -> None:
    try:
        while (message := await ws.recv()) is not None:
            try:
                decoded = ch.decode_channel_message(protocol, message)
            except ch.ChannelProtocolError as exc:
                log.info("bad remotecommand message", extra=fields(error=str(exc)))
                continue
            if decoded is None:
                continue
            if isinstance(decoded, ch.ChannelClose):
                if decoded.channel == ch.STDIN:
                    session.close_stdin()
            elif decoded.channel == ch.STDIN:
                await session.write_stdin(decoded.data)
            elif decoded.channel == ch.RESIZE:
                _apply_resize(session, decoded.data)
    finally:
        # The client closed the websocket: nobody will read the output any more.
        session.abort()


def _apply_resize(session: StreamSession, data: bytes) -> None:
    try:
        for size in ch.ResizeDecoder().feed(data):
            session.resize(size.width, size.height)
    except (ch.ChannelProtocolError, OSError) as exc:
        log.info("bad resize message", extra=fields(error=str(exc)))


# --- SPDY --------------------------------------------------------------------

def negotiate_spdy(request: Request, supported: Sequence[str]) -> tuple[str | None, Response | None]:
    """The X-Stream-Protocol-Version handshake. No header means the legacy v1
    protocol (``channel.k8s.io``); an offer we cannot meet is a 403, as upstream."""
    offered = request.headers.get_all(ch.STREAM_PROTOCOL_HEADER)
    if not offered:
        if ch.V1 in supported:
            return ch.V1, None
        return None, status_response(400, f"{ch.STREAM_PROTOCOL_HEADER} is required; supported: {', '.join(supported)}")
    chosen = ch.negotiate(offered, supported)
    if chosen is None:
        return None, status_response(403, f"unable to upgrade: unable to negotiate protocol: client supports "
                                          f"{offered}, server supports {list(supported)}")
    return chosen, None


def take_over_spdy(request: Request, protocol: str | None) -> SpdyConnection:
    raw = request.take_over()
    head = ["HTTP/1.1 101 Switching Protocols", "Connection: Upgrade", f"Upgrade: {ch.SPDY_UPGRADE}"]
    if protocol:
        head.append(f"{ch.STREAM_PROTOCOL_HEADER}: {protocol}")
    raw.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    # Kubernetes' SPDY peers implement no flow control (see spdy_session).
    return SpdyConnection(RawTransport(raw), Role.SERVER, strict_flow_control=False)


def is_spdy_upgrade(request: Request) -> bool:
    return request.is_upgrade and (request.headers.get("upgrade") or "").lower().startswith("spdy/")


def is_websocket_upgrade(request: Request) -> bool:
    return request.is_upgrade and (request.headers.get("upgrade") or "").lower() == "websocket"


async def finish_spdy(conn: SpdyConnection, runner: asyncio.Task[None]) -> None:
    """GOAWAY, give the client a moment to close first (closing a socket with
    unread input sends RST, which can destroy output the client has not read),
    then drop the connection."""
    with contextlib.suppress(Exception):
        conn.session.go_away()
        await conn.flush()
        await asyncio.wait_for(conn.closed.wait(), PEER_CLOSE_WAIT)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await conn.transport.close()


async def serve_spdy(request: Request, opts: StreamOptions, session: StreamSession, *, label: str) -> Response:
    protocol, error = negotiate_spdy(request, ch.SPDY_EXEC_PROTOCOLS)
    if error is not None:
        return error
    assert protocol is not None
    conn = take_over_spdy(request, protocol if request.headers.get(ch.STREAM_PROTOCOL_HEADER) else None)
    runner = asyncio.create_task(conn.run())
    streams: dict[str, SpdyStream] = {}
    arrived = asyncio.Event()
    acceptor = asyncio.create_task(_accept_streams(conn, streams, arrived))
    tasks: list[asyncio.Task[None]] = []
    try:
        needed = {ch.STREAM_ERROR}
        needed |= {ch.STREAM_STDIN} if opts.stdin else set()
        needed |= {ch.STREAM_STDOUT} if opts.stdout else set()
        needed |= {ch.STREAM_STDERR} if opts.stderr else set()
        needed |= {ch.STREAM_RESIZE} if opts.tty and ch.supports_resize(protocol) else set()
        try:
            await asyncio.wait_for(_until(arrived, lambda: needed <= streams.keys() or conn.closed.is_set()),
                                   STREAM_WAIT_TIMEOUT)
        except asyncio.TimeoutError:
            log.info(f"{label} streams missing", extra=fields(missing=",".join(sorted(needed - streams.keys()))))
            return TAKEN_OVER
        if conn.closed.is_set():
            return TAKEN_OVER
        error_stream = streams[ch.STREAM_ERROR]
        if ch.STREAM_STDIN in streams:
            tasks.append(asyncio.create_task(_spdy_stdin(streams[ch.STREAM_STDIN], session)))
        if ch.STREAM_RESIZE in streams:
            tasks.append(asyncio.create_task(_spdy_resize(streams[ch.STREAM_RESIZE], session)))
        try:
            await session.start()
        except OSError as exc:
            await error_stream.write(ch.encode_status(protocol, ch.status_error(f"{label} failed: {exc}")))
            await error_stream.close()
            return TAKEN_OVER
        tasks.append(asyncio.create_task(_abort_on_disconnect(conn, session)))
        out = {STDOUT: streams.get(ch.STREAM_STDOUT), STDERR: streams.get(ch.STREAM_STDERR)}
        while (item := await session.read()) is not None:
            stream = out.get(item[0]) or out[STDOUT]
            if stream is not None:
                await stream.write(item[1])
        for kind, stream in list(streams.items()):
            if kind != ch.STREAM_ERROR:  # FIN every stream we hold, even one that came late
                await stream.close()
        status, outcome = await session.outcome()
        await error_stream.write(ch.encode_status(protocol, status))
        await error_stream.close()
        log.info(f"{label} finished", extra=fields(transport="spdy", protocol=protocol, **outcome))
    finally:
        for task in (*tasks, acceptor):
            task.cancel()
        await asyncio.gather(*tasks, acceptor, return_exceptions=True)
        await session.close()
        await finish_spdy(conn, runner)
    return TAKEN_OVER


async def _until(event: asyncio.Event, done: Any) -> None:
    while not done():
        event.clear()
        await event.wait()


async def _accept_streams(conn: SpdyConnection, streams: dict[str, SpdyStream], arrived: asyncio.Event) -> None:
    while True:
        stream = await conn.accept()
        if stream is None:
            arrived.set()
            return
        await conn.reply(stream)
        kind = (stream.header(ch.STREAM_TYPE) or "").lower()
        if kind in streams or kind not in (ch.STREAM_ERROR, ch.STREAM_STDIN, ch.STREAM_STDOUT, ch.STREAM_STDERR, ch.STREAM_RESIZE):
            log.info("unexpected remotecommand stream", extra=fields(stream_type=kind))
            await stream.reset()
            continue
        streams[kind] = stream
        arrived.set()


async def _spdy_stdin(stream: SpdyStream, session: StreamSession) -> None:
    while data := await stream.read():
        await session.write_stdin(data)
    session.close_stdin()


async def _spdy_resize(stream: SpdyStream, session: StreamSession) -> None:
    decoder = ch.ResizeDecoder()
    while data := await stream.read():
        try:
            for size in decoder.feed(data):
                session.resize(size.width, size.height)
        except (ch.ChannelProtocolError, OSError) as exc:
            log.info("bad resize stream", extra=fields(error=str(exc)))
            return


async def _abort_on_disconnect(conn: SpdyConnection, session: StreamSession) -> None:
    await conn.closed.wait()
    session.abort()
