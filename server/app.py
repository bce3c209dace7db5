"""Assemble the control plane: storage, PKI, auth, API, join, tunnel, controllers.

One HTTPS port serves everything (as k3s does on 6443). Every request is
authenticated and authorised here, before any handler runs; anonymous callers
reach only /healthz, /livez, /readyz, /version, /cacerts and the join paths
(whose handlers check the join token themselves).
"""
from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgectl import httpd
from edgectl.aio import cancel_and_wait
from edgectl.errors import EdgectlError
from edgectl.joinproto import ClusterConfig
from edgectl.log import fields
from edgectl.paths import KUBELET_PORT

from . import discovery, metrics
from .api import ApiServer, current_attrs, status_response
from .auth import Authenticator, authorize, forbidden_message, node_name_of, request_attributes
from .nodeproxy import TunnelNodeProxy
from .join import JoinService, NodePasswordExists, hash_from_secret, node_password_secret, secret_name, SECRET_NAMESPACE
from .pki import ClusterPKI
from .registry import Registry
from .status import ApiError
from .storage.base import StorageError
from .storage.sqlite import SQLiteBackend
from .token import check_token_flag, load_or_create_token

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    data_dir: Path
    bind_address: str = "0.0.0.0"
    https_port: int = 6443
    write_kubeconfig: Path | None = None
    token: str | None = None
    tls_sans: tuple[str, ...] = ()
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    cluster_dns: str = "10.43.0.10"
    flannel_backend: str = "vxlan"
    egress_selector_mode: str = "agent"
    max_request_body: int = httpd.DEFAULT_MAX_BODY
    disable_agent: bool = False
    controllers: bool = True
    manifests: bool = True


class SecretPasswordStore:
    """Node-password hashes as immutable Secrets in kube-system (join.py's store)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.res = registry.resource("secrets")

    async def get(self, node: str) -> str | None:
        try:
            secret = await self.registry.get(self.res, SECRET_NAMESPACE, secret_name(node))
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise
        return hash_from_secret(secret)

    async def create(self, node: str, password_hash: str) -> None:
        try:
            await self.registry.create(self.res, node_password_secret(node, password_hash), namespace=SECRET_NAMESPACE)
        except ApiError as exc:
            if exc.code == 409:
                raise NodePasswordExists(node) from None
            raise


def _status_error_body(code: int, message: str) -> httpd.Response:
    return status_response(ApiError(code, message))


def _check_writable_file(path: Path, *, flag: str) -> None:
    """Fail before any state is created if ``path`` can never be written: its
    nearest existing ancestor must be a directory we can write into."""
    if path.is_dir():
        raise EdgectlError(f"{flag} {path}: is a directory")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise EdgectlError(f"{flag} {path}: {parent} is not a directory")
    try:  # the directory is needed anyway; creating it now finds /proc-like places
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgectlError(f"{flag} {path}: cannot create {path.parent}: {exc.strerror or exc}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise EdgectlError(f"{flag} {path}: {path.parent} is not writable")


def _as_status(resp: httpd.Response) -> httpd.Response:
    """The tunnel package answers errors in plain text (it knows no Status);
    on the API port every error is a Status, Retry-After kept for 429s."""
    if resp is httpd.TAKEN_OVER or resp.status < 400 or not isinstance(resp.body, bytes):
        return resp
    out = status_response(ApiError(resp.status, resp.body.decode("utf-8", "replace").strip()))
    out.headers.extend((k, v) for k, v in resp.headers if k.lower() == "retry-after")
    return out


class ControlPlane:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        self.ready = False
        self.storage: SQLiteBackend | None = None
        self.registry: Registry | None = None
        self.http: httpd.HTTPServer | None = None
        self.address: tuple[str, int] | None = None
        self._background: list[Any] = []
        self.tunnel: Any = None
        self.pki: ClusterPKI | None = None

    # --- startup ---------------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        cfg = self.config
        if cfg.token is not None:
            check_token_flag(cfg.token)  # a bad --token must fail before a CA is made for nothing
        if cfg.write_kubeconfig is not None:
            _check_writable_file(cfg.write_kubeconfig, flag="--write-kubeconfig")
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pki = await asyncio.to_thread(ClusterPKI.load_or_create, cfg.data_dir / "tls", sans=self._sans())
        self.pki = pki
        token = await asyncio.to_thread(load_or_create_token, cfg.data_dir, pki.ca_pem, secret=cfg.token)
        self.storage = SQLiteBackend(cfg.data_dir / "db" / "state.db")
        await self.storage.start()
        self.registry = Registry(self.storage, service_cidr=cfg.service_cidr)
        self.registry.on_write.append(lambda verb, res: metrics.count_write(verb, res.plural))
        await self.registry.start()

        self.authn = Authenticator({}, client_ca=pki.client_ca)
        self.api = ApiServer(self.registry, server_address=f"{cfg.bind_address}:{cfg.https_port}")
        self.api.observe = metrics.observe
        metrics.bind_watchers(lambda: float(self.api.watchers))
        join = JoinService(
            pki=pki, token=token, passwords=SecretPasswordStore(self.registry),
            config=ClusterConfig(cluster_cidr=cfg.cluster_cidr, service_cidr=cfg.service_cidr, cluster_dns=cfg.cluster_dns,
                                 flannel_backend=cfg.flannel_backend, egress_selector_mode=cfg.egress_selector_mode),
        )
        self.router = httpd.Router(fallback=self._not_found)
        for path, handler in (("/healthz", self._healthz), ("/livez", self._healthz), ("/readyz", self._readyz),
                              ("/version", self._version), ("/metrics", metrics.metrics_handler),
                              ("/openapi/v2", self._openapi_v2)):
            self.router.add(path, handler)
        self.router.add("/openapi/v3", self._openapi_v3, prefix=True)
        self.router.add("/api", self.api.handle, prefix=True)
        self.router.add("/apis", self.api.handle, prefix=True)
        join.mount(self.router)
        self._mount_tunnel()

        self.http = httpd.HTTPServer(self.handle, ssl_context=pki.server_ssl_context(), max_body=cfg.max_request_body,
                                     error_body=_status_error_body)
        try:
            self.address = await self.http.start(cfg.bind_address, cfg.https_port)
        except OSError as exc:
            raise EdgectlError(f"cannot listen on {cfg.bind_address}:{cfg.https_port}: {exc.strerror or exc}") from None
        port = self.address[1]
        self.api.server_address = f"{self._client_host()}:{port}"
        if cfg.write_kubeconfig is not None:
            await asyncio.to_thread(pki.write_admin_kubeconfig, cfg.write_kubeconfig, f"https://{self._client_host()}:{port}")
        await self._start_controllers(port)
        # Start-up objects (modules, certificates, schemas) live forever: keep
        # them out of the cyclic GC's full scans, which otherwise add pauses.
        gc.freeze()
        self.ready = True
        log.info("edgectl server ready", extra=fields(
            address=f"{self.address[0]}:{port}", startup_seconds=round(time.monotonic() - self.started, 3),
            kubeconfig=str(cfg.write_kubeconfig or ""), token_file=str(cfg.data_dir / "token"),
            agent="disabled" if cfg.disable_agent else "not built yet"))
        return self.address

    def _sans(self) -> list[str]:
        sans = list(self.config.tls_sans)
        if self.config.bind_address not in ("0.0.0.0", "::", ""):
            sans.append(self.config.bind_address)
        return sans

    def _client_host(self) -> str:
        host = self.config.bind_address
        if host in ("0.0.0.0", ""):
            return "127.0.0.1"
        if host == "::":
            return "[::1]"
        return f"[{host}]" if ":" in host else host

    def _mount_tunnel(self) -> None:
        try:
            from edgectl.tunnel.server import CONNECT_PATH, STATUS_PATH, TunnelServer
        except ImportError:  # the tunnel package is optional while it is being built
            log.warning("tunnel server unavailable; /v1-edge/connect answers 503")
            return
        self.tunnel = TunnelServer()

        async def connect(req: httpd.Request) -> httpd.Response:
            attrs = current_attrs.get()
            node = node_name_of(attrs.user) if attrs is not None else None
            if node is None:
                return status_response(ApiError(403, "only node identities may open a tunnel", "Forbidden"))
            return _as_status(await self.tunnel.accept(req, node=node))

        async def stats(req: httpd.Request) -> httpd.Response:
            return _as_status(await self.tunnel.stats_handler(req))

        self.router.add(CONNECT_PATH, connect)
        self.router.add(STATUS_PATH, stats)
        assert self.pki is not None
        self.api.node_proxy = TunnelNodeProxy(self.tunnel, ssl_context=self.pki.kubelet_client_ssl_context(),
                                              kubelet_port=self._kubelet_port)

    async def _kubelet_port(self, node: str) -> int:
        """The port the node's kubelet reports (Node.status.daemonEndpoints), else 10250."""
        assert self.registry is not None
        try:
            obj = await self.registry.get(self.registry.resource("nodes"), None, node)
        except ApiError:
            return KUBELET_PORT
        endpoint = (((obj.get("status") or {}).get("daemonEndpoints") or {}).get("kubeletEndpoint") or {})
        port = endpoint.get("Port")
        return int(port) if isinstance(port, int) and 0 < port < 65536 else KUBELET_PORT

    async def _start_controllers(self, port: int) -> None:
        if not self.config.controllers:
            return
        from .controllers import start_all

        assert self.registry is not None
        self._background.append(start_all(
            self.registry, server_addresses=self._advertised_addresses(), https_port=port,
            cluster_cidr=self.config.cluster_cidr, service_cidr=self.config.service_cidr,
        ))
        from . import eventttl

        self._background.append(asyncio.ensure_future(eventttl.run(self.registry)))
        if self.config.manifests:
            from .manifests import ManifestDeployer

            deployer = ManifestDeployer(self.registry, self.config.data_dir / "manifests")
            self._background.append(asyncio.ensure_future(deployer.run()))

    def _advertised_addresses(self) -> list[str]:
        """Where nodes reach this server: the bind address, else an IP SAN, else
        the host name's address (the default/kubernetes Endpoints list these)."""
        host = self.config.bind_address
        if host not in ("0.0.0.0", "::", ""):
            return [host]
        for san in self.config.tls_sans:
            try:
                ipaddress.ip_address(san)
                return [san]
            except ValueError:
                continue
        try:
            return [socket.gethostbyname(socket.gethostname())]
        except OSError:
            return ["127.0.0.1"]

    # --- request entry ------------------------------------------------------------------

    async def handle(self, req: httpd.Request) -> httpd.Response:
        user = self.authn.authenticate(peercert_der=req.peercert_der, authorization=req.headers.get("authorization"))
        if user is None:
            metrics.observe(req.method.lower(), "", "", 401, 0.0)
            return status_response(ApiError(401, "Unauthorized"))
        query = {k: v[0] for k, v in req.query.items() if v}
        attrs = request_attributes(user, req.method, req.path, query)
        decision = authorize(attrs)
        if not decision.allowed:
            return status_response(ApiError(403, forbidden_message(attrs, decision), "Forbidden"))
        token = current_attrs.set(attrs)
        started = time.perf_counter()
        try:
            response = await self.router(req)
        finally:
            current_attrs.reset(token)
        if response.status >= 500 or log.isEnabledFor(logging.DEBUG):
            log.log(logging.ERROR if response.status >= 500 else logging.DEBUG, "request", extra=fields(
                method=req.method, path=req.path, code=response.status, user=user.name,
                ms=round((time.perf_counter() - started) * 1000, 1)))
        return response

    async def _not_found(self, req: httpd.Request) -> httpd.Response:
        return status_response(ApiError(404, "the server could not find the requested resource", "NotFound"))

    async def _healthz(self, req: httpd.Request) -> httpd.Response:
        return httpd.text_response(200, "ok")

    async def _readyz(self, req: httpd.Request) -> httpd.Response:
        if not self.ready:
            return httpd.text_response(503, "[-]startup not finished\nreadyz check failed\n")
        return httpd.text_response(200, "ok")

    async def _version(self, req: httpd.Request) -> httpd.Response:
        return httpd.json_response(200, discovery.version_info())

    async def _openapi_v3(self, req: httpd.Request) -> httpd.Response:
        assert self.registry is not None
        rest = req.path[len("/openapi/v3"):].strip("/")
        if not rest:
            return httpd.json_response(200, discovery.openapi_index(self.registry.table))
        gv = rest[len("api/"):] if rest.startswith("api/") else rest[len("apis/"):] if rest.startswith("apis/") else ""
        doc = discovery.openapi_document(self.registry.table, gv) if gv else None
        if doc is None:
            return status_response(ApiError(404, "the server could not find the requested resource", "NotFound"))
        return httpd.Response(200, [("Content-Type", "application/json"), ("Cache-Control", "public, immutable")],
                              json.dumps(doc).encode())

    async def _openapi_v2(self, req: httpd.Request) -> httpd.Response:
        # kubectl <= 1.28 loads v2 (protobuf only) before apply. An empty body is
        # a valid, empty protobuf Document: no schemas, so kubectl falls back to
        # its built-in types for strategic merge and leaves validation to us.
        return httpd.Response(200, [("Content-Type", "application/octet-stream")], b"")

    # --- shutdown -------------------------------------------------------------------------

    async def stop(self) -> None:
        self.ready = False
        for item in self._background:
            closer: Callable[[], Awaitable[None]] | None = getattr(item, "close", None) or getattr(item, "stop", None)
            try:
                if isinstance(item, asyncio.Future):
                    if await cancel_and_wait([item]):
                        log.error("background task did not stop", extra=fields(task=repr(item)))
                elif closer is not None:
                    await closer()
            except Exception:
                log.exception("controller shutdown failed")
        if self.tunnel is not None:
            try:
                await self.tunnel.close()
            except Exception:
                log.exception("tunnel shutdown failed")
        if self.http is not None:
            await self.http.close()
        if self.registry is not None:
            await self.registry.close()
        if self.storage is not None:
            await self.storage.close()
        log.info("edgectl server stopped")


async def run(config: ServerConfig, *, stop: asyncio.Event) -> None:
    plane = ControlPlane(config)
    try:
        await plane.start()
    except StorageError as exc:
        await plane.stop()
        raise EdgectlError(f"cannot open the datastore: {exc}") from None
    except OSError as exc:  # e.g. a data dir or kubeconfig path we may not write
        await plane.stop()
        where = f" ({exc.filename})" if exc.filename else ""
        raise EdgectlError(f"cannot start the server: {exc.strerror or exc}{where}") from None
    except BaseException:
        await plane.stop()
        raise
    try:
        await stop.wait()
    finally:
        log.info("shutting down", extra=fields(pid=os.getpid()))
        await plane.stop()


__all__ = ["ControlPlane", "ServerConfig", "SecretPasswordStore", "run"]
