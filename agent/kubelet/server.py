"""The kubelet HTTPS server: TLS, the single allowed client, and routing.

Paths follow upstream so the API server proxies them unchanged:

- ``GET /healthz``
- ``GET /pods``: a PodList of the pods on this node
- ``GET /containerLogs/{ns}/{pod}/{container}?follow&tailLines&...``
- ``GET|POST /exec/{ns}/{pod}/{container}?command=...`` (websocket or SPDY upgrade)
- ``GET|POST /attach/{ns}/{pod}/{container}`` (the same upgrades, to the container's console)
- ``GET|POST /portForward/{ns}/{pod}`` (SPDY, or websocket-wrapped SPDY)
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edgectl.agent.runtime.interface import PodView
from edgectl.httpd import HTTPServer, Request, Response, json_response, text_response
from edgectl.log import fields
from edgectl.paths import KUBELET_PORT

from . import auth
from .attach import AttachSession
from .exec import ExecOptionError, ExecOptions, serve_exec_spdy, serve_exec_websocket
from .logs import LogOptionError, LogOptions, choose_file, stream_logs
from .portforward import serve_portforward_request
from .remotecommand import StreamOptionError, StreamOptions, is_spdy_upgrade, is_websocket_upgrade, serve_spdy, serve_websocket
from .status import status_response

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class KubeletConfig:
    cert_file: Path  # the node's kubelet serving certificate
    key_file: Path
    client_ca_file: Path  # the cluster client CA that signs the API server's kubelet-client cert
    host: str = "127.0.0.1"  # only the tunnel (which dials loopback) reaches it
    port: int = KUBELET_PORT
    allowed_client_cn: str = auth.KUBELET_CLIENT_CN


class KubeletAPI:
    """The request handler, separate from the socket so tests can drive it."""

    def __init__(self, *, pods: PodView, allowed_client_cn: str = auth.KUBELET_CLIENT_CN) -> None:
        self.pods = pods
        self.allowed_client_cn = allowed_client_cn

    async def __call__(self, request: Request) -> Response:
        denied = auth.check_client(request.peercert_der, common_name=self.allowed_client_cn)
        if denied is not None:
            log.info("kubelet API call refused", extra=fields(path=request.path, status=denied.status))
            return status_response(denied.status, denied.message)
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            return status_response(404, "not found")
        head, args = parts[0], parts[1:]
        if head == "healthz" and not args:
            return text_response(200, "ok")
        if head == "pods" and not args:
            return json_response(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": self.pods.pods()})
        if head == "containerLogs" and len(args) == 3:
            return await self.container_logs(request, *args)
        if head == "exec" and len(args) == 3:
            return await self.exec(request, *args)
        if head == "exec" and len(args) == 4:  # /exec/{ns}/{pod}/{uid}/{container}
            return await self.exec(request, args[0], args[1], args[3])
        if head == "attach" and len(args) == 3:
            return await self.attach(request, *args)
        if head == "attach" and len(args) == 4:  # /attach/{ns}/{pod}/{uid}/{container}
            return await self.attach(request, args[0], args[1], args[3])
        if head == "portForward" and len(args) in (2, 3):
            return await self.port_forward(request, args[0], args[1])
        return status_response(404, f"no kubelet endpoint {request.path}")

    async def container_logs(self, request: Request, namespace: str, pod: str, container: str) -> Response:
        if request.method != "GET":
            return status_response(405, "containerLogs only supports GET")
        try:
            options = LogOptions.from_query(request.query)
        except LogOptionError as exc:
            return status_response(400, str(exc))
        logs = self.pods.container_logs(namespace, pod, container)
        if logs is None:
            return status_response(404, f"container {container!r} in pod {namespace}/{pod} not found on this node")
        path = choose_file(logs, options)
        if path is None:
            which = "previous terminated" if options.previous else "current"
            return status_response(400, f"{which} container {container!r} in pod {pod!r} has no log")
        if not os.path.isfile(path):
            return status_response(404, f"log file of container {container!r} in pod {pod!r} is gone")
        body = stream_logs(path=path, options=options,
                           refresh=lambda: self.pods.container_logs(namespace, pod, container))
        return Response(200, [("Content-Type", "text/plain")], body)

    async def exec(self, request: Request, namespace: str, pod: str, container: str) -> Response:
        try:
            options = ExecOptions.from_query(request.query)
        except ExecOptionError as exc:
            return status_response(400, str(exc))
        if not (is_websocket_upgrade(request) or is_spdy_upgrade(request)):
            return status_response(400, "exec needs a websocket (v5/v4.channel.k8s.io) or SPDY/3.1 upgrade")
        target = self.pods.container_process(namespace, pod, container)
        if target is not None and not os.path.exists(f"/proc/{target.pid}"):
            target = None  # exited since the runtime last looked
        if target is None:
            known = self.pods.find_uid(namespace, pod) is not None
            what = f"container {container!r} is not running" if known else "pod not found on this node"
            return status_response(404 if not known else 400, f"unable to exec into {namespace}/{pod}: {what}")
        log.info("exec", extra=fields(pod=f"{namespace}/{pod}", container=container, tty=options.tty,
                                      transport="websocket" if is_websocket_upgrade(request) else "spdy"))
        if is_websocket_upgrade(request):
            return await serve_exec_websocket(request, options, target)
        return await serve_exec_spdy(request, options, target)

    async def attach(self, request: Request, namespace: str, pod: str, container: str) -> Response:
        try:
            options = StreamOptions.from_query(request.query)
        except StreamOptionError as exc:
            return status_response(400, str(exc))
        if not (is_websocket_upgrade(request) or is_spdy_upgrade(request)):
            return status_response(400, "attach needs a websocket (v5/v4.channel.k8s.io) or SPDY/3.1 upgrade")
        where = f"unable to attach to {namespace}/{pod}"
        target = self.pods.container_attach(namespace, pod, container)
        if target is None:
            if self.pods.find_uid(namespace, pod) is None:
                return status_response(404, f"{where}: pod not found on this node")
            return status_response(404, f"{where}: container {container!r} not found in the pod")
        if not target.running:
            return status_response(400, f"{where}: container {container!r} is not running")
        if not target.socket:
            return status_response(400, f"{where}: container {container!r} was started before attach was "
                                        "supported; it gets a console when it restarts")
        if options.stdin and not target.stdin:
            # As the CRI runtimes: only a container created with stdin: true has a stdin to share.
            return status_response(400, f"{where}: stdin requested but container {container!r} was not created "
                                        "with stdin: true")
        transport = "websocket" if is_websocket_upgrade(request) else "spdy"
        log.info("attach", extra=fields(pod=f"{namespace}/{pod}", container=container, tty=target.tty,
                                        stdin=options.stdin, transport=transport))
        session = AttachSession(target, options)
        if transport == "websocket":
            return await serve_websocket(request, options, session, label="attach")
        return await serve_spdy(request, options, session, label="attach")

    async def port_forward(self, request: Request, namespace: str, pod: str) -> Response:
        if not (is_websocket_upgrade(request) or is_spdy_upgrade(request)):
            return status_response(400, "portForward needs a SPDY/3.1 upgrade (plain or inside a websocket)")
        network = self.pods.pod_network(namespace, pod)
        if network is None:
            return status_response(404, f"pod {namespace}/{pod} not found on this node (or has no network yet)")
        log.info("port-forward", extra=fields(pod=f"{namespace}/{pod}",
                                              transport="websocket" if is_websocket_upgrade(request) else "spdy"))
        return await serve_portforward_request(request, network=network, pod=f"{namespace}/{pod}")


class KubeletServer:
    def __init__(self, config: KubeletConfig, *, pods: PodView) -> None:
        self.config = config
        self.api = KubeletAPI(pods=pods, allowed_client_cn=config.allowed_client_cn)
        ctx = auth.server_ssl_context(cert_file=config.cert_file, key_file=config.key_file,
                                      client_ca_file=config.client_ca_file)
        self.http = HTTPServer(self.api, ssl_context=ctx, error_body=status_response)
        self.address: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        self.address = await self.http.start(self.config.host, self.config.port)
        log.info("kubelet API listening", extra=fields(address=f"{self.address[0]}:{self.address[1]}"))
        return self.address

    async def close(self) -> None:
        await self.http.close()
