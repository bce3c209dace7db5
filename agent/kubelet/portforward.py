"""``/portForward``: SPDY (``portforward.k8s.io``), plain or inside a websocket
(``SPDY/3.1+portforward.k8s.io``, kubectl 1.31+).

Per forwarded connection the client opens an ``error`` and a ``data`` stream
sharing a ``requestid``; we connect to ``localhost:<port>`` inside the pod's
network namespace and relay until both sides are done. Failures are written
as text on the error stream, which kubectl prints.

The socket is created inside the pod netns by a short-lived thread that calls
setns(CLONE_NEWNET) and connects. A socket belongs to the namespace it was
created in, so the thread may die afterwards and the event loop uses the
socket normally. Compared to ``nsenter ... socat`` this costs no processes per
connection, keeps asyncio back-pressure end to end and needs no socat.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Awaitable, Callable

from edgectl.agent.runtime.interface import PodNetwork
from edgectl.agent.runtime.netns import connect_in_netns
from edgectl.agent.streams import channels as ch
from edgectl.agent.streams.spdy_session import Role
from edgectl.httpd import TAKEN_OVER, Request, Response
from edgectl.log import fields

from .remotecommand import finish_spdy, is_websocket_upgrade, negotiate_spdy, take_over_spdy
from .spdy_conn import SpdyConnection, SpdyStream, WebSocketTransport
from .status import status_response
from .wsconn import accept_websocket

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 10.0
PAIR_TIMEOUT = 30.0  # a data stream whose error stream never comes (or vice versa)


Dialer = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def netns_dialer(netns_path: str | None, *, timeout: float = DIAL_TIMEOUT) -> Dialer:
    async def dial(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # IPv4 then IPv6 loopback, as container runtimes do for ``localhost``.
        sock = await connect_in_netns(netns_path, ("127.0.0.1", "::1"), port, timeout=timeout)
        return await asyncio.open_connection(sock=sock)
    return dial


async def serve_portforward_request(request: Request, *, network: PodNetwork, pod: str) -> Response:
    if is_websocket_upgrade(request):
        ws, error = accept_websocket(request, subprotocols=(ch.WS_PORTFORWARD_PROTOCOL,), error=status_response)
        if ws is None:
            assert error is not None
            return error
        conn = SpdyConnection(WebSocketTransport(ws), Role.SERVER, strict_flow_control=False)
    else:
        protocol, error = negotiate_spdy(request, (ch.PORTFORWARD_PROTOCOL,))
        if error is not None:
            return error
        conn = take_over_spdy(request, protocol)
    await serve_portforward(conn, dialer=netns_dialer(network.netns_path), what=f"pod {pod}, uid {network.pod_uid}")
    return TAKEN_OVER


async def serve_portforward(conn: SpdyConnection, *, dialer: Dialer, what: str) -> None:
    """Pair streams by request id and forward each pair until the client leaves."""
    runner = asyncio.create_task(conn.run())
    pairs: dict[str, dict[str, SpdyStream]] = {}
    tasks: set[asyncio.Task[None]] = set()
    try:
        while (stream := await conn.accept()) is not None:
            await conn.reply(stream)
            kind = (stream.header(ch.STREAM_TYPE) or "").lower()
            if kind not in (ch.STREAM_ERROR, ch.STREAM_DATA):
                log.info("port-forward: unknown stream type", extra=fields(stream_type=kind))
                await stream.reset()
                continue
            request_id = stream.header(ch.REQUEST_ID_HEADER)
            if request_id is None:
                # Clients before requestID: streams come in (error, data) pairs with consecutive odd ids.
                request_id = str(stream.id if kind == ch.STREAM_ERROR else stream.id - 2)
            pair = pairs.setdefault(request_id, {})
            if kind in pair:
                await stream.reset()
                continue
            pair[kind] = stream
            if len(pair) == 1:
                _spawn(tasks, _expire_half_pair(pairs, request_id))
            else:
                del pairs[request_id]
                _spawn(tasks, _forward(pair[ch.STREAM_ERROR], pair[ch.STREAM_DATA], dialer, what))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await finish_spdy(conn, runner)


def _spawn(tasks: set[asyncio.Task[None]], coro: Awaitable[None]) -> None:
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _expire_half_pair(pairs: dict[str, dict[str, SpdyStream]], request_id: str) -> None:
    await asyncio.sleep(PAIR_TIMEOUT)
    pair = pairs.pop(request_id, None)
    if pair:
        log.info("port-forward: incomplete stream pair timed out", extra=fields(request_id=request_id))
        for stream in pair.values():
            await stream.reset()


async def _forward(error: SpdyStream, data: SpdyStream, dialer: Dialer, what: str) -> None:
    port_text = data.header(ch.PORT_HEADER) or ""
    try:
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError
    except ValueError:
        await _fail(error, data, f"invalid port {port_text!r}")
        return
    try:
        reader, writer = await dialer(port)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno == errno.ECONNREFUSED:
            reason = "connection refused"
        await _fail(error, data, f"error forwarding port {port} to {what}: failed to connect to localhost:{port} "
                                 f"inside namespace: {reason}")
        return
    log.debug("port-forward connected", extra=fields(port=port))
    try:
        up = asyncio.create_task(_client_to_pod(data, writer))
        down = asyncio.create_task(_pod_to_client(reader, data))
        await asyncio.gather(up, down, return_exceptions=True)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        await error.close()


async def _fail(error: SpdyStream, data: SpdyStream, message: str) -> None:
    log.info("port-forward failed", extra=fields(error=message))
    await error.write(message.encode())
    await error.close()
    await data.close()


async def _client_to_pod(data: SpdyStream, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await data.read():
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _pod_to_client(reader: asyncio.StreamReader, data: SpdyStream) -> None:
    try:
        while chunk := await reader.read(32 * 1024):
            if not await data.write(chunk):
                return
    except (ConnectionError, OSError):
        pass
    await data.close()
