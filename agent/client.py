"""The agent's one API client: JSON over HTTPS with the node certificate.

Small on purpose (the agent's RSS budget is 60 MB): h11 over asyncio streams,
a few kept-alive connections for ordinary calls and one connection per watch.
Where requests go is decided by one seam, :class:`Endpoint` (``address()``):
today a fixed ``--server`` URL, later the client-side load balancer of the HA
work, without anything else here changing.

Errors are :class:`ApiError` with the Status ``code``/``reason``/``message``;
transport failures are :class:`ApiUnavailable` (retry later).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import h11

from edgectl import __version__
from edgectl.errors import EdgectlError

USER_AGENT = f"edgectl-agent/{__version__}"
READ_SIZE = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
IDLE_CONNECTIONS = 4

Obj = dict[str, Any]


class ApiError(EdgectlError):
    """The API answered with a failure Status."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message


class ApiUnavailable(EdgectlError):
    """The server could not be reached or the connection broke mid-request."""


class Endpoint(Protocol):
    """Where the next request goes; the HA load balancer implements this too."""

    def address(self) -> tuple[str, int, str]:
        """(host, port, TLS server name)."""
        ...


@dataclass(frozen=True)
class StaticEndpoint:
    url: str

    def address(self) -> tuple[str, int, str]:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        return host, parts.port or 443, host


class _Conn:
    """One HTTP/1.1 connection driven by h11."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: tuple[str, int]) -> None:
        self.reader = reader
        self.writer = writer
        self.key = key
        self.h11 = h11.Connection(h11.CLIENT)
        self.used = False  # served a request before: the server may have closed it meanwhile
        self.status = 0
        self.data = b""

    async def send(self, method: str, target: str, host: str, headers: list[tuple[str, str]], body: bytes) -> None:
        hdrs = [("Host", host), ("User-Agent", USER_AGENT), ("Accept", "application/json"), *headers]
        if body or method in ("POST", "PUT", "PATCH"):
            hdrs.append(("Content-Length", str(len(body))))
        data = self.h11.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            data += self.h11.send(h11.Data(data=body))
        data += self.h11.send(h11.EndOfMessage())
        self.writer.write(data)
        await self.writer.drain()

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                chunk = await self.reader.read(READ_SIZE)
                self.h11.receive_data(chunk)  # b"" is EOF; h11 reports it as an event or error
                continue
            return event

    async def response(self) -> h11.Response:
        event = await self.next_event()
        if not isinstance(event, h11.Response):
            raise ApiUnavailable(f"unexpected reply from the server: {type(event).__name__}")
        return event

    async def body(self, limit: int = MAX_BODY) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise ApiUnavailable(f"reply larger than {limit} bytes")
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            elif isinstance(event, h11.ConnectionClosed):
                raise ApiUnavailable("server closed the connection mid-reply")

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            try:
                self.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return False
            return not self.writer.is_closing()
        return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class ApiClient:
    def __init__(self, *, endpoint: Endpoint, ssl_context: ssl.SSLContext, timeout: float = 15.0) -> None:
        self.endpoint = endpoint
        self.ssl_context = ssl_context
        self.timeout = timeout
        self._idle: list[_Conn] = []
        self._open: set[_Conn] = set()
        self._closed = False

    # ---- connections -------------------------------------------------------------

    async def _connect(self) -> tuple[_Conn, str]:
        host, port, server_name = self.endpoint.address()
        key = (host, port)
        while self._idle:
            conn = self._idle.pop()
            if conn.key == key and not conn.writer.is_closing():
                return conn, _host_header(host, port)
            conn.close()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=self.ssl_context, server_hostname=server_name, limit=READ_SIZE * 4),
                self.timeout)
        except ssl.SSLCertVerificationError as exc:
            raise ApiUnavailable(f"TLS verification of https://{host}:{port} failed: {exc.verify_message}") from None
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            raise ApiUnavailable(f"cannot reach https://{host}:{port}: {exc or type(exc).__name__}") from None
        _keepalive(writer)
        conn = _Conn(reader, writer, key)
        self._open.add(conn)
        return conn, _host_header(host, port)

    def _release(self, conn: _Conn) -> None:
        if not self._closed and conn.reusable() and len(self._idle) < IDLE_CONNECTIONS:
            self._idle.append(conn)
        else:
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        self._open.discard(conn)
        conn.close()

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()

    # ---- requests --------------------------------------------------------------------

    async def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
                      content_type: str = "application/json") -> Obj:
        """One call; a 2xx JSON reply is returned, anything else raises."""
        target = _target(path, query)
        payload = b"" if body is None else json.dumps(body).encode()
        headers = [("Content-Type", content_type)] if body is not None else []
        for attempt in (0, 1):
            conn, host = await self._connect()
            reused = conn.used
            try:
                await asyncio.wait_for(self._exchange(conn, method, target, host, headers, payload), self.timeout)
                status, data = conn.status, conn.data
            except (OSError, h11.ProtocolError, asyncio.IncompleteReadError, ApiUnavailable, asyncio.TimeoutError) as exc:
                self._drop(conn)
                if attempt == 0 and reused and not isinstance(exc, asyncio.TimeoutError):
                    continue  # a kept-alive connection the server had closed: retry once on a fresh one
                raise ApiUnavailable(f"{method} {path}: {exc or type(exc).__name__}") from None
            except BaseException:
                self._drop(conn)
                raise
            conn.used = True
            self._release(conn)
            return _decode(status, data, method, path)
        raise AssertionError("unreachable")

    async def _exchange(self, conn: _Conn, method: str, target: str, host: str, headers: list[tuple[str, str]],
                        payload: bytes) -> None:
        await conn.send(method, target, host, headers, payload)
        resp = await conn.response()
        conn.status = resp.status_code
        conn.data = await conn.body()

    async def get(self, path: str, **query: Any) -> Obj:
        return await self.request("GET", path, query=query)

    async def list(self, path: str, **query: Any) -> Obj:
        return await self.request("GET", path, query=query)

    async def create(self, path: str, obj: Obj) -> Obj:
        return await self.request("POST", path, body=obj)

    async def update(self, path: str, obj: Obj) -> Obj:
        """PUT; ``obj`` carries metadata.resourceVersion, so a stale write is a 409."""
        return await self.request("PUT", path, body=obj)

    async def patch(self, path: str, patch: Obj, *, strategic: bool = False) -> Obj:
        ctype = "application/strategic-merge-patch+json" if strategic else "application/merge-patch+json"
        return await self.request("PATCH", path, body=patch, content_type=ctype)

    async def delete(self, path: str, *, options: Obj | None = None) -> Obj:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", **(options or {})}
        return await self.request("DELETE", path, body=body)

    async def watch(self, path: str, *, resource_version: str, timeout_seconds: int = 300,
                    **query: Any) -> AsyncIterator[tuple[str, Obj]]:
        """Yield (type, object) from a watch; ends when the server ends it.

        An ERROR event is raised as ApiError (410 means: list again).
        """
        q = {**query, "watch": "true", "resourceVersion": resource_version,
             "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
        conn, host = await self._connect()
        try:
            try:
                await asyncio.wait_for(conn.send("GET", _target(path, q), host, [], b""), self.timeout)
                resp = await asyncio.wait_for(conn.response(), self.timeout)
            except (OSError, h11.ProtocolError, asyncio.TimeoutError) as exc:
                raise ApiUnavailable(f"watch {path}: {exc or type(exc).__name__}") from None
            if resp.status_code != 200:
                _decode(resp.status_code, await conn.body(), "GET", path)
            buf = b""
            while True:
                try:
                    event = await conn.next_event()
                except (OSError, h11.ProtocolError) as exc:
                    raise ApiUnavailable(f"watch {path} broke: {exc or type(exc).__name__}") from None
                if isinstance(event, h11.EndOfMessage) or isinstance(event, h11.ConnectionClosed):
                    return
                if not isinstance(event, h11.Data):
                    continue
                buf += bytes(event.data)
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    try:
                        doc = json.loads(line)
                        kind, obj = doc.get("type"), doc.get("object") or {}
                    except (ValueError, AttributeError):
                        raise ApiUnavailable(f"watch {path}: garbled event {line[:80]!r}") from None
                    if kind == "ERROR":
                        raise ApiError(int(obj.get("code") or 500), str(obj.get("reason") or ""), str(obj.get("message") or ""))
                    yield str(kind), obj
        finally:
            self._drop(conn)


def _keepalive(writer: asyncio.StreamWriter) -> None:
    """A NAT that silently forgets the flow must not leave a watch hanging
    forever: TCP keepalive notices a dead path in about a minute."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


def _host_header(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _target(path: str, query: Mapping[str, Any] | None) -> str:
    q = {k: v for k, v in (query or {}).items() if v is not None}
    return f"{path}?{urlencode(q)}" if q else path


def _decode(status: int, data: bytes, method: str, path: str) -> Obj:
    try:
        doc = json.loads(data) if data else {}
    except (ValueError, UnicodeDecodeError):
        doc = None
    if 200 <= status < 300:
        if not isinstance(doc, dict):
            raise ApiUnavailable(f"{method} {path}: reply is not a JSON object")
        return doc
    if isinstance(doc, dict) and doc.get("kind") == "Status":
        raise ApiError(int(doc.get("code") or status), str(doc.get("reason") or ""), str(doc.get("message") or ""))
    text = data[:200].decode("utf-8", "replace").strip()
    raise ApiError(status, "", f"{method} {path}: {text or 'no body'}")
