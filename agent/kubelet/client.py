"""Client side of the kubelet stream protocols (what kubectl does, in Python).

Used by tests and benchmarks to drive the kubelet (or the API server proxy)
over real sockets: an HTTP/1.1 upgrade on a fresh (TLS) connection, then
remotecommand or port-forward over SPDY or websocket channels.
"""
from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from edgectl.agent.streams import channels as ch
from edgectl.agent.streams.spdy_frames import make_headers
from edgectl.agent.streams.spdy_session import Role
from edgectl.httpd import RawStream

from .spdy_conn import RawTransport, SpdyConnection, SpdyStream, WebSocketTransport
from .wsconn import WebSocketConnection, connect_websocket


@dataclass(frozen=True)
class UpgradeResponse:
    status: int
    headers: dict[str, str]  # lowercase names, last value wins
    raw: RawStream
    body: bytes = b""


async def open_connection(host: str, port: int, *, ssl_context: ssl.SSLContext | None,
                          server_hostname: str | None = None) -> RawStream:
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl_context, server_hostname=(server_hostname or host) if ssl_context else None)
    return RawStream(reader, writer, b"")


async def send_upgrade(raw: RawStream, *, method: str, target: str, host: str,
                       headers: Sequence[tuple[str, str]]) -> UpgradeResponse:
    """Send an upgrade request and read the response head. On a non-101
    answer, the (content-length) body is read too, for the error message."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers)]
    raw.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await raw.writer.drain()
    head = await raw.reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    parsed: dict[str, str] = {}
    for line in header_lines:
        if ":" in line:
            k, v = line.split(":", 1)
            parsed[k.strip().lower()] = v.strip()
    body = b""
    if status != 101 and parsed.get("content-length", "").isdigit():
        body = await raw.reader.readexactly(int(parsed["content-length"]))
    return UpgradeResponse(status, parsed, raw, body)


async def spdy_upgrade(raw: RawStream, *, target: str, host: str, protocols: Sequence[str],
                       method: str = "POST", extra_headers: Sequence[tuple[str, str]] = ()) -> tuple[UpgradeResponse, SpdyConnection | None]:
    headers = [("Connection", "Upgrade"), ("Upgrade", ch.SPDY_UPGRADE),
               *((ch.STREAM_PROTOCOL_HEADER, p) for p in protocols), *extra_headers]
    resp = await send_upgrade(raw, method=method, target=target, host=host, headers=headers)
    if resp.status != 101:
        return resp, None
    conn = SpdyConnection(RawTransport(raw), Role.CLIENT, strict_flow_control=False)
    return resp, conn


@dataclass
class ExecResult:
    stdout: bytes = b""
    stderr: bytes = b""
    status_raw: bytes = b""
    outcome: ch.ExecOutcome | None = None
    protocol: str = ""
    extra: dict[str, object] = field(default_factory=dict)


async def spdy_exec(conn: SpdyConnection, *, protocol: str, stdin: bytes | None, tty: bool = False,
                    stderr: bool = True, resize: Sequence[tuple[int, int]] = (),
                    stdin_chunks: Sequence[bytes] = (), pause: float = 0.0) -> ExecResult:
    """Open the streams like client-go's v2+ protocols and run to completion."""
    runner = asyncio.create_task(conn.run())
    try:
        def hdr(kind: str) -> tuple[tuple[str, str], ...]:
            return make_headers({ch.STREAM_TYPE: kind})

        error = await conn.open_stream(hdr(ch.STREAM_ERROR))
        streams: dict[str, SpdyStream] = {}
        if stdin is not None:
            streams["stdin"] = await conn.open_stream(hdr(ch.STREAM_STDIN))
        streams["stdout"] = await conn.open_stream(hdr(ch.STREAM_STDOUT))
        if stderr and not tty:
            streams["stderr"] = await conn.open_stream(hdr(ch.STREAM_STDERR))
        if tty and ch.supports_resize(protocol):
            streams["resize"] = await conn.open_stream(hdr(ch.STREAM_RESIZE))
        for width, height in resize[:1]:
            await streams["resize"].write(json.dumps({"Width": width, "Height": height}).encode())
        result = ExecResult(protocol=protocol)

        async def collect(name: str) -> bytes:
            return await streams[name].read_all(64 << 20) if name in streams else b""

        outs = asyncio.gather(collect("stdout"), collect("stderr"))
        if stdin is not None:
            for i, chunk in enumerate([*stdin_chunks, stdin]):
                if chunk:
                    await streams["stdin"].write(chunk)
                if pause:
                    await asyncio.sleep(pause)
                if i == 0:
                    for width, height in resize[1:]:
                        await streams["resize"].write(json.dumps({"Width": width, "Height": height}).encode())
                        if pause:
                            await asyncio.sleep(pause)
            await streams["stdin"].close()
        result.stdout, result.stderr = await outs
        result.status_raw = await error.read_all()
        result.outcome = ch.decode_status(protocol, result.status_raw)
        return result
    finally:
        await conn.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def ws_exec(ws: WebSocketConnection, *, stdin: bytes | None, resize: Sequence[tuple[int, int]] = (),
                  stdin_chunks: Sequence[bytes] = (), pause: float = 0.0) -> ExecResult:
    """kubectl 1.30+ style: channel-prefixed binary messages until the server closes."""
    protocol = ws.subprotocol or ""
    result = ExecResult(protocol=protocol)
    out = {ch.STDOUT: bytearray(), ch.STDERR: bytearray(), ch.ERROR: bytearray()}

    async def reader() -> None:
        while (message := await ws.recv()) is not None:
            if message and message[0] in out:
                out[message[0]] += message[1:]

    task = asyncio.create_task(reader())
    try:
        if resize:
            await ws.send(ch.encode_channel(ch.RESIZE, json.dumps({"Width": resize[0][0], "Height": resize[0][1]}).encode()))
        if stdin is not None:
            for i, chunk in enumerate([*stdin_chunks, stdin]):
                if chunk:
                    await ws.send(ch.encode_channel(ch.STDIN, chunk))
                if pause:
                    await asyncio.sleep(pause)
                if i == 0:
                    for width, height in resize[1:]:
                        await ws.send(ch.encode_channel(ch.RESIZE, json.dumps({"Width": width, "Height": height}).encode()))
                        if pause:
                            await asyncio.sleep(pause)
            if protocol == ch.V5:
                await ws.send(ch.encode_close(ch.STDIN))
        await task
    finally:
        task.cancel()
        await ws.close()
    result.stdout, result.stderr, result.status_raw = bytes(out[ch.STDOUT]), bytes(out[ch.STDERR]), bytes(out[ch.ERROR])
    result.outcome = ch.decode_status(protocol, result.status_raw)
    return result


async def ws_connect(raw: RawStream, *, url: str, subprotocols: Sequence[str]) -> WebSocketConnection:
    return await connect_websocket(raw, url=url, subprotocols=subprotocols)


def ws_spdy_connection(ws: WebSocketConnection) -> SpdyConnection:
    """kubectl 1.31+ port-forward: SPDY framing inside websocket messages."""
    return SpdyConnection(WebSocketTransport(ws), Role.CLIENT, strict_flow_control=False)


async def portforward_streams(conn: SpdyConnection, *, port: int, request_id: int) -> tuple[SpdyStream, SpdyStream]:
    """One forwarded connection: (error, data) streams, as kubectl opens them."""
    base = {ch.PORT_HEADER: str(port), ch.REQUEST_ID_HEADER: str(request_id)}
    error = await conn.open_stream(make_headers({ch.STREAM_TYPE: ch.STREAM_ERROR, **base}))
    await error.close()  # kubectl never writes on it
    data = await conn.open_stream(make_headers({ch.STREAM_TYPE: ch.STREAM_DATA, **base}))
    return error, data
