"""A standalone tunnel server on its own HTTPS port, for tests, benchmarks and
the lab demo, until the API server mounts the handlers on 6443.

Routes: CONNECT_PATH (bootstrap token), STATUS_PATH (admin token), /metrics.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import httpd
from .auth import BootstrapTokenAuth, require_token
from .server import CONNECT_PATH, STATUS_PATH, ServerConfig, TunnelServer


def server_ssl_context(cert_file: str, key_file: str, *, client_ca: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


@dataclass
class Standalone:
    tunnel: TunnelServer
    http: httpd.HTTPServer
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def close(self) -> None:
        await self.tunnel.close()
        await self.http.close()


async def start_standalone(
    *, token: str, admin_token: str, ssl_context: ssl.SSLContext | None, host: str = "127.0.0.1", port: int = 0,
    config: ServerConfig = ServerConfig(),
) -> Standalone:
    tunnel = TunnelServer(config=config)
    auth = BootstrapTokenAuth(token)

    async def connect(request: httpd.Request) -> httpd.Response:
        node = auth.authenticate(request)
        if node is None:
            return httpd.plain_error(401, "unauthorized: bad bootstrap token or node name")
        return await tunnel.accept(request, node=node)

    async def metrics(request: httpd.Request) -> httpd.Response:
        return httpd.Response(200, [("Content-Type", CONTENT_TYPE_LATEST)], generate_latest())

    router = httpd.Router()
    router.add(CONNECT_PATH, connect)
    router.add(STATUS_PATH, require_token(admin_token, tunnel.stats_handler))
    router.add("/metrics", require_token(admin_token, metrics))
    http = httpd.HTTPServer(router, ssl_context=ssl_context)
    bound_host, bound_port = await http.start(host, port)
    return Standalone(tunnel, http, bound_host, bound_port)
