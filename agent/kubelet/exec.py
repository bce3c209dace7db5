"""``/exec``: remotecommand over websocket channels (v5/v4) and over SPDY (v1-v5).

Both transports share one shape: start the process, copy its output to the
client, feed the client's stdin and resizes to it, then report the exit as a
Status on the error channel. The client going away kills the process.

Query parameters use the kubelet names (``input``, ``output``, ``error``, as
the apiserver rewrites them) and also the pod-subresource names (``stdin``,
``stdout``, ``stderr``), so the endpoint works both behind the proxy and when
called directly.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgectl.agent.runtime.interface import ContainerProcess
from edgectl.agent.streams import channels as ch
from edgectl.agent.streams.spdy_session import Role
from edgectl.httpd import TAKEN_OVER, Request, Response
from edgectl.log import fields

from .execproc import STDERR, STDOUT, ExecProcess, ExecRequest
from .spdy_conn import RawTransport, SpdyConnection, SpdyStream
from .status import status_response
from .wsconn import accept_websocket

log = logging.getLogger(__name__)

STREAM_WAIT_TIMEOUT = 30.0  # upstream's streamCreationTimeout
PEER_CLOSE_WAIT = 2.0
INITIAL_SIZE_WAIT = 1.0


class ExecOptionError(ValueError):
    pass


@dataclass(frozen=True, kw_only=True)
class ExecOptions:
    command: tuple[str, ...]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]]) -> "ExecOptions":
        def flag(*names: str) -> bool:
            for name in names:
                for value in query.get(name, ()):
                    if value.lower() in ("1", "true", "yes", ""):
                        return True
            return False

        command = tuple(query.get("command", ()))
        if not command or not command[0]:
            raise ExecOptionError("command is required")
        tty = flag("tty")
        opts = cls(
            command=command,
            stdin=flag("input", "stdin"),
            stdout=flag("output", "stdout"),
            stderr=flag("error", "stderr") and not tty,  # a terminal merges stderr into stdout
            tty=tty,
        )
        if not (opts.stdin or opts.stdout or flag("error", "stderr")):
            raise ExecOptionError("you must specify at least one of stdin, stdout, stderr")
        return opts


def _exec_request(target: ContainerProcess, opts: ExecOptions) -> ExecRequest:
    return ExecRequest(argv=tuple(target.enter_argv(opts.command)), env=dict(target.env),
                       stdin=opts.stdin, stdout=opts.stdout, stderr=opts.stderr, tty=opts.tty)


async def _start(proc: ExecProcess, opts: ExecOptions) -> None:
    """Start the command; with a tty, first give the client's initial resize a
    moment to arrive (kubectl sends it right after the streams are set up), so
    the command's first look at its terminal sees the real size."""
    if opts.tty:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.sized.wait(), INITIAL_SIZE_WAIT)
    await proc.start()


def _final_status(code: int) -> dict[str, Any]:
    return ch.status_success() if code == 0 else ch.status_exit_code(code)


# --- websocket ---------------------------------------------------------------

async def serve_exec_websocket(request: Request, opts: ExecOptions, target: ContainerProcess) -> Response:
    ws, error = accept_websocket(request, subprotocols=ch.WS_EXEC_PROTOCOLS, error=status_response)
    if ws is None:
        assert error is not None
        return error
    protocol = ws.subprotocol or ch.V4
    proc = ExecProcess(_exec_request(target, opts))
    reader: asyncio.Task[None] | None = None
    try:
        # Upstream announces the open streams with an empty message on the lowest writable channel.
        await ws.send(ch.encode_channel(ch.STDOUT if opts.stdout else ch.STDERR if opts.stderr else ch.ERROR))
        reader = asyncio.create_task(_ws_input(ws, proc, protocol))
        try:
            await _start(proc, opts)
        except OSError as exc:
            await ws.send(ch.encode_channel(ch.ERROR, ch.encode_status(protocol, ch.status_error(f"exec failed: {exc}"))))
            return TAKEN_OVER
        while (item := await proc.read()) is not None:
            channel, data = item
            if not await ws.send(ch.encode_channel(ch.STDOUT if channel == STDOUT else ch.STDERR, data)):
                proc.kill()
        code = await proc.wait()
        await ws.send(ch.encode_channel(ch.ERROR, ch.encode_status(protocol, _final_status(code))))
        log.info("exec finished", extra=fields(transport="websocket", protocol=protocol, exit_code=code))
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await proc.close()
        await ws.close(1000)
    return TAKEN_OVER


async def _ws_input(ws: Any, proc: ExecProcess, protocol: str) -> None:
    try:
        while (message := await ws.recv()) is not None:
            try:
                decoded = ch.decode_channel_message(protocol, message)
            except ch.ChannelProtocolError as exc:
                log.info("bad exec message", extra=fields(error=str(exc)))
                continue
            if decoded is None:
                continue
            if isinstance(decoded, ch.ChannelClose):
                if decoded.channel == ch.STDIN:
                    proc.close_stdin()
            elif decoded.channel == ch.STDIN:
                await proc.write_stdin(decoded.data)
            elif decoded.channel == ch.RESIZE:
                _apply_resize(proc, decoded.data)
    finally:
        # The client closed the websocket: nobody will read the output any more.
        proc.kill()


def _apply_resize(proc: ExecProcess, data: bytes) -> None:
    try:
        for size in ch.ResizeDecoder().feed(data):
            proc.resize(size.width, size.height)
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


async def serve_exec_spdy(request: Request, opts: ExecOptions, target: ContainerProcess) -> Response:
    protocol, error = negotiate_spdy(request, ch.SPDY_EXEC_PROTOCOLS)
    if error is not None:
        return error
    assert protocol is not None
    conn = take_over_spdy(request, protocol if request.headers.get(ch.STREAM_PROTOCOL_HEADER) else None)
    runner = asyncio.create_task(conn.run())
    streams: dict[str, SpdyStream] = {}
    arrived = asyncio.Event()
    acceptor = asyncio.create_task(_accept_streams(conn, streams, arrived))
    proc: ExecProcess | None = None
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
            log.info("exec streams missing", extra=fields(missing=",".join(sorted(needed - streams.keys()))))
            return TAKEN_OVER
        if conn.closed.is_set():
            return TAKEN_OVER
        error_stream = streams[ch.STREAM_ERROR]
        proc = ExecProcess(_exec_request(target, opts))
        if ch.STREAM_STDIN in streams:
            tasks.append(asyncio.create_task(_spdy_stdin(streams[ch.STREAM_STDIN], proc)))
        if ch.STREAM_RESIZE in streams:
            tasks.append(asyncio.create_task(_spdy_resize(streams[ch.STREAM_RESIZE], proc)))
        try:
            await _start(proc, opts)
        except OSError as exc:
            await error_stream.write(ch.encode_status(protocol, ch.status_error(f"exec failed: {exc}")))
            await error_stream.close()
            return TAKEN_OVER
        tasks.append(asyncio.create_task(_kill_on_disconnect(conn, proc)))
        out = {STDOUT: streams.get(ch.STREAM_STDOUT), STDERR: streams.get(ch.STREAM_STDERR)}
        while (item := await proc.read()) is not None:
            stream = out.get(item[0]) or out[STDOUT]
            if stream is not None:
                await stream.write(item[1])
        for kind, stream in list(streams.items()):
            if kind != ch.STREAM_ERROR:  # FIN every stream we hold, even one that came late
                await stream.close()
        code = await proc.wait()
        await error_stream.write(ch.encode_status(protocol, _final_status(code)))
        await error_stream.close()
        log.info("exec finished", extra=fields(transport="spdy", protocol=protocol, exit_code=code))
    finally:
        for task in (*tasks, acceptor):
            task.cancel()
        await asyncio.gather(*tasks, acceptor, return_exceptions=True)
        if proc is not None:
            await proc.close()
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
            log.info("unexpected exec stream", extra=fields(stream_type=kind))
            await stream.reset()
            continue
        streams[kind] = stream
        arrived.set()


async def _spdy_stdin(stream: SpdyStream, proc: ExecProcess) -> None:
    while data := await stream.read():
        await proc.write_stdin(data)
    proc.close_stdin()


async def _spdy_resize(stream: SpdyStream, proc: ExecProcess) -> None:
    decoder = ch.ResizeDecoder()
    while data := await stream.read():
        try:
            for size in decoder.feed(data):
                proc.resize(size.width, size.height)
        except (ch.ChannelProtocolError, OSError) as exc:
            log.info("bad resize stream", extra=fields(error=str(exc)))
            return


async def _kill_on_disconnect(conn: SpdyConnection, proc: ExecProcess) -> None:
    await conn.closed.wait()
    proc.kill()
