"""pods/log, exec, attach, portforward and nodes/proxy: carried to the node's
kubelet through the agent's tunnel (the server never dials nodes directly).

The kubelet speaks upstream's paths (``/containerLogs``, ``/exec``,
``/attach``, ``/portForward``) over TLS, and trusts only the API server's
kubelet-client certificate. Logs are relayed as a streamed body; upgrades
(websocket or SPDY, chosen by kubectl) are passed through byte for byte after
the client's connection is taken over, so kubectl's protocol negotiation and
fallbacks happen directly with the kubelet. ``nodes/{name}/proxy/{path}``
relays any method, path, query, body and end-to-end header to the kubelet
(never the client's credentials) and streams the answer back.

TLS runs over the tunnel stream through a socketpair: asyncio's TLS needs a
transport, and a tunnel stream is a reader/writer pair.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import h11

from edgectl.httpd import TAKEN_OVER, Request, Response
from edgectl.log import fields
from edgectl.paths import KUBELET_PORT

from . import status
from .status import ApiError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
# Request headers passed to the kubelet on an upgrade; everything else (notably
# Authorization) stays here.
_UPGRADE_HEADERS = ("connection", "upgrade", "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol",
                    "sec-websocket-extensions", "x-stream-protocol-version", "content-length", "user-agent")
_KUBELET_PATHS = {"log": "containerLogs", "exec": "exec", "attach": "attach", "portforward": "portForward"}
PROXY_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection, and the
# credentials are for this server: none of them crosses the proxy. The kubelet
# trusts the server's own client certificate instead.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                         "upgrade", "proxy-authenticate", "proxy-authorization"})
_NOT_FORWARDED = _HOP_BY_HOP | {"host", "authorization", "content-length", "cookie"}


def end_to_end_headers(headers: list[tuple[str, str]], *, drop: frozenset[str] = _NOT_FORWARDED) -> list[tuple[str, str]]:
    """Headers a proxy passes on: not hop-by-hop, not named in Connection, not
    credentials (Authorization, impersonation)."""
    named = {t.strip().lower() for k, v in headers if k.lower() == "connection" for t in v.split(",")}
    return [(k, v) for k, v in headers
            if (lk := k.lower()) not in drop and lk not in named and not lk.startswith("impersonate-")]


def split_node_name(name: str) -> tuple[str, int | None]:
    """``[scheme:]name[:port]`` as upstream accepts in nodes/{name}/proxy; the
    kubelet is reached over TLS only, so the scheme may only be https."""
    parts = name.split(":")
    scheme, port = "", ""
    if len(parts) == 1:
        node = parts[0]
    elif len(parts) == 2:
        node, port = parts
    elif len(parts) == 3:
        scheme, node, port = parts
    else:
        raise status.bad_request(f"invalid node request {name!r}")
    if scheme not in ("", "https"):
        raise status.bad_request(f"the kubelet on node {node!r} is reached over https only, not {scheme}")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise status.bad_request(f"invalid port {port!r} in node request {name!r}")
    if not node:
        raise status.bad_request(f"invalid node request {name!r}")
    return node, int(port) if port else None


def node_proxy_target(raw_target: str) -> str:
    """The kubelet target for ``.../nodes/{name}/proxy[/{path}][?query]``, from
    the raw (still escaped) request target: the rest of the path, trailing
    slash kept, and the query unchanged."""
    path, sep, query = raw_target.partition("?")
    segments = path.split("/")
    for i, seg in enumerate(segments[:-2]):
        if seg == "nodes" and segments[i + 2] == "proxy":
            rest = "/" + "/".join(segments[i + 3:])
            return rest + sep + query
    raise status.bad_request(f"not a nodes/proxy path: {path!r}")


class Dialer(Protocol):
    async def dial(self, node: str, target: str, *, timeout: float | None = None) -> tuple[Any, Any]: ...


def choose_container(pod: Obj, requested: str | None) -> str:
    """Upstream's rules: the named one, the default-container annotation, or the only one."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    names = [c.get("name") for key in ("containers", "initContainers", "ephemeralContainers")
             for c in spec.get(key) or [] if isinstance(c, dict)]
    name = requested or (meta.get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
    if not name:
        regular = [c.get("name") for c in spec.get("containers") or []]
        if len(regular) != 1:
            raise status.bad_request(f"a container name must be specified for pod {meta.get('name')}, "
                                     f"choose one of: [{' '.join(str(n) for n in regular)}]")
        name = regular[0]
    if name not in names:
        raise status.bad_request(f"container {name} is not valid for pod {meta.get('name')}")
    return str(name)


def kubelet_target(req: Request, pod: Obj, subresource: str) -> str:
    """The kubelet path and query for a pod subresource request."""
    meta = pod["metadata"]
    ns, name = quote(meta["namespace"], safe=""), quote(meta["name"], safe="")
    query = [(k, v) for k, v in parse_qsl(urlsplit(req.target).query, keep_blank_values=True) if k != "container"]
    if subresource == "portforward":
        path = f"/portForward/{ns}/{name}"
    else:
        container = quote(choose_container(pod, req.arg("container")), safe="")
        path = f"/{_KUBELET_PATHS[subresource]}/{ns}/{name}/{container}"
    return path + (f"?{urlencode(query)}" if query else "")


class TunnelNodeProxy:
    def __init__(self, dialer: Dialer, *, ssl_context: ssl.SSLContext, kubelet_port: Any = None,
                 dial_timeout: float = 10.0) -> None:
        self.dialer = dialer
        self.ssl_context = ssl_context
        # node name -> kubelet port (from Node.status.daemonEndpoints), looked up per request.
        self.kubelet_port = kubelet_port
        self.dial_timeout = dial_timeout

    async def _port(self, node: str) -> int:
        return KUBELET_PORT if self.kubelet_port is None else int(await self.kubelet_port(node))

    async def __call__(self, req: Request, *, pod: Obj, subresource: str) -> Response:
        if subresource not in _KUBELET_PATHS:
            raise ApiError(503, f"pods/{subresource} is not supported", "ServiceUnavailable")
        node = pod["spec"]["nodeName"]
        target = kubelet_target(req, pod, subresource)
        port = await self._port(node)
        if subresource == "log" and req.method != "GET":
            raise status.method_not_allowed()
        reader, writer, pump = await self._connect(node, port)
        try:
            if subresource == "log":
                return await self._logs(reader, writer, pump, node, target)
            if not req.is_upgrade:
                raise status.bad_request(f"pods/{subresource} needs a connection upgrade (websocket or SPDY)")
            headers = [(k, v) for k, v in req.headers.items() if k in _UPGRADE_HEADERS]
            return await self._upgrade(req, reader, writer, pump, node, target, headers)
        except BaseException:
            await _close(writer, pump)
            raise

    async def node(self, req: Request, *, node: str, target: str, port: int | None = None) -> Response:
        """nodes/{node}/proxy: ``target`` (kubelet path + query) with the client's
        method, body and end-to-end headers; upgrades become a byte pipe."""
        if req.method not in PROXY_METHODS:
            raise status.method_not_allowed()
        kubelet_port = await self._port(node)
        if port is not None and port != kubelet_port:
            raise ApiError(503, f'only the kubelet port ({kubelet_port}) of node "{node}" is reachable through its tunnel, '
                                f"not {port}", "ServiceUnavailable")
        reader, writer, pump = await self._connect(node, kubelet_port)
        try:
            if req.is_upgrade:
                headers = [*end_to_end_headers(req.headers.items()), ("Connection", "Upgrade"),
                           ("Upgrade", req.headers.get("upgrade") or "")]
                if req.body:
                    headers.append(("Content-Length", str(len(req.body))))
                return await self._upgrade(req, reader, writer, pump, node, target, headers)
            log.debug("proxying to the kubelet", extra=fields(node=node, method=req.method, target=target.split("?")[0]))
            return await self._relay(reader, writer, pump, node, method=req.method, target=target,
                                     headers=end_to_end_headers(req.headers.items()), body=req.body,
                                     response_headers=None)
        except BaseException:
            await _close(writer, pump)
            raise

    async def _connect(self, node: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Task[None]]:
        from edgectl.tunnel.errors import DialError
        from edgectl.tunnel.pipe import pipe

        try:
            t_reader, t_writer = await self.dialer.dial(node, f"tcp/127.0.0.1:{port}", timeout=self.dial_timeout)
        except DialError as exc:
            reason = getattr(exc, "reason", "")
            if reason == "no_session":
                raise ApiError(503, f'node tunnel not connected: cannot reach node "{node}"', "ServiceUnavailable") from None
            raise ApiError(503, f'cannot reach the kubelet on node "{node}": {exc}', "ServiceUnavailable") from None
        plain, tls_side = socket.socketpair()
        p_reader, p_writer = await asyncio.open_connection(sock=plain)
        pump = asyncio.ensure_future(pipe(t_reader, t_writer, p_reader, p_writer))
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(sock=tls_side, ssl=self.ssl_context, server_hostname=node, limit=1 << 20),
                self.dial_timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            pump.cancel()
            tls_side.close()
            raise ApiError(503, f'TLS to the kubelet on node "{node}" failed: {exc}', "ServiceUnavailable") from None
        return reader, writer, pump

    async def _logs(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pump: asyncio.Task[None],
                    node: str, target: str) -> Response:
        return await self._relay(reader, writer, pump, node, method="GET", target=target, headers=[], body=b"",
                                 response_headers=("content-type",))

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pump: asyncio.Task[None],
                     node: str, *, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
                     response_headers: tuple[str, ...] | None) -> Response:
        """One HTTP exchange with the kubelet; the response body is streamed.
        ``response_headers``: the only ones to pass back (None: every end-to-end one)."""
        conn = h11.Connection(h11.CLIENT)
        head = [("Host", node), *headers, ("Connection", "close")]
        if body or method not in ("GET", "HEAD", "DELETE"):
            head.append(("Content-Length", str(len(body))))
        try:
            writer.write(conn.send(h11.Request(method=method, target=target, headers=head)))
            if body:
                writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as exc:
            raise status.bad_request(f"cannot relay this request to the kubelet: {exc}") from None
        await writer.drain()
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                    continue
                if isinstance(event, h11.Response):
                    break
                if isinstance(event, h11.InformationalResponse):
                    continue
                raise ApiError(502, f'the kubelet on node "{node}" closed the connection without answering', "InternalError")
        except (h11.RemoteProtocolError, OSError, ssl.SSLError) as exc:
            raise ApiError(502, f'bad answer from the kubelet on node "{node}": {exc}', "InternalError") from None
        if response_headers is None:
            out = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
            out = end_to_end_headers(out, drop=_HOP_BY_HOP | {"content-length"})
        else:
            out = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers
                   if k.decode("latin-1").lower() in response_headers]

        async def stream() -> AsyncIterator[bytes]:
            try:
                while True:
                    ev = conn.next_event()
                    if ev is h11.NEED_DATA:
                        data = await reader.read(65536)
                        conn.receive_data(data)
                        continue
                    if isinstance(ev, h11.Data):
                        yield bytes(ev.data)
                    else:
                        return
            except (h11.RemoteProtocolError, OSError, ssl.SSLError) as exc:
                # Too late for a Status: the head is out. Ending early tells the client.
                log.info("kubelet response ended early", extra=fields(node=node, error=str(exc)))
            finally:
                await _close(writer, pump)

        if response_headers is not None and not out:
            out = [("Content-Type", "text/plain")]
        return Response(event.status_code, out, stream())

    async def _upgrade(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       pump: asyncio.Task[None], node: str, target: str, headers: list[tuple[str, str]]) -> Response:
        from edgectl.tunnel.pipe import pipe

        head = [f"{req.method} {target} HTTP/1.1", f"Host: {node}"]
        for name, value in headers:
            if "\r" in value or "\n" in value:
                raise status.bad_request(f"invalid value for header {name}")
            head.append(f"{name}: {value}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if req.body:
            writer.write(req.body)
        await writer.drain()
        raw = req.take_over()
        if raw.pending:
            writer.write(raw.pending)
        log.info("proxying pod stream", extra=fields(node=node, target=target.split("?")[0]))

        async def relay() -> None:
            try:
                await pipe(raw.reader, raw.writer, reader, writer)
            except Exception:
                log.debug("pod stream ended with an error", exc_info=True)
            finally:
                await _close(writer, pump)
                raw.writer.close()

        task = asyncio.ensure_future(relay())
        _RELAYS.add(task)
        task.add_done_callback(_RELAYS.discard)
        return TAKEN_OVER


_RELAYS: set[asyncio.Task[None]] = set()


async def _close(writer: asyncio.StreamWriter, pump: asyncio.Task[None]) -> None:
    with contextlib.suppress(Exception):
        writer.close()
    await asyncio.sleep(0)
    if not pump.done():
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(pump), 1.0)
        pump.cancel()
