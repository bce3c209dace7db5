"""``/api/v1/nodes/{name}/proxy/{path}`` through the whole chain:
client -> edgectl server -> the node's tunnel (dialled out by the agent) -> kubelet.

Two nodes join through the real join endpoint and connect real tunnel agents:

- ``np-kubelet`` runs our real kubelet API (agent/kubelet) over a one-pod
  PodView; real kubectl reads ``/pods`` and ``/healthz`` from it;
- ``np-echo`` serves, on the kubelet port and with the kubelet's own TLS and
  client check, an HTTPS handler that echoes what it received, streams on
  request and upgrades to an echo pipe: it shows exactly what the server
  relays (method, path, query, body, headers; never the client's credentials).
"""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgectl.agent.kubelet.testing import TunnelledNode
from edgectl.httpd import TAKEN_OVER, HTTPServer, Request, Response, json_response
from edgectl.joinproto import NodeCerts
from edgectl.server.nodeproxy import end_to_end_headers, node_proxy_target, split_node_name
from edgectl.server.status import ApiError
from edgectl.server.testing import ServerProcess, join_node, kubectl_path, register_node, wait_for_tunnels

KUBELET_NODE = "np-kubelet"
ECHO_NODE = "np-echo"
OFFLINE_NODE = "np-offline"


# --- pure parts ------------------------------------------------------------------------------


def test_proxy_target_keeps_escaping_query_and_trailing_slash() -> None:
    assert node_proxy_target("/api/v1/nodes/n1/proxy/pods") == "/pods"
    assert node_proxy_target("/api/v1/nodes/n1/proxy") == "/"
    assert node_proxy_target("/api/v1/nodes/n1/proxy/") == "/"
    assert node_proxy_target("/api/v1/nodes/n1/proxy/a%2Fb/c/?x=1%20&y") == "/a%2Fb/c/?x=1%20&y"
    assert node_proxy_target("/api/v1/nodes/n1:10250/proxy/metrics?") == "/metrics?"


def test_node_name_forms() -> None:
    assert split_node_name("n1") == ("n1", None)
    assert split_node_name("n1:10250") == ("n1", 10250)
    assert split_node_name("https:n1:") == ("n1", None)
    for bad in ("http:n1:10250", "n1:notaport", "n1:0", ":10250", "a:b:c:d"):
        with pytest.raises(ApiError) as err:
            split_node_name(bad)
        assert err.value.code == 400


def test_end_to_end_headers_drop_credentials_and_hop_by_hop() -> None:
    got = end_to_end_headers([
        ("authorization", "Bearer secret"), ("proxy-authorization", "Basic x"), ("cookie", "session=1"),
        ("impersonate-user", "admin"), ("impersonate-group", "system:masters"), ("host", "api"),
        ("connection", "keep-alive, x-hop"), ("x-hop", "1"), ("keep-alive", "timeout=5"), ("te", "trailers"),
        ("transfer-encoding", "chunked"), ("upgrade", "websocket"), ("content-length", "3"),
        ("accept", "application/json"), ("x-custom", "a"), ("x-custom", "b"), ("user-agent", "kubectl"),
    ])
    assert got == [("accept", "application/json"), ("x-custom", "a"), ("x-custom", "b"), ("user-agent", "kubectl")]


# --- the chain --------------------------------------------------------------------------------


class EchoNode(TunnelledNode):
    """An HTTPS endpoint on the node's kubelet port, behind the real tunnel agent."""

    def __init__(self, srv: ServerProcess, certs: NodeCerts, workdir: Path) -> None:
        super().__init__(server_url=srv.url, node=ECHO_NODE, certs=certs, workdir=workdir)
        self.release: asyncio.Event | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def serve(self, certs_dir: Path) -> int:
        from edgectl.agent.kubelet import auth

        d = certs_dir
        self.release = asyncio.Event()
        ctx = auth.server_ssl_context(cert_file=d / "serving.crt", key_file=d / "serving.key", client_ca_file=d / "client-ca.crt")

        async def handler(req: Request) -> Response:
            denied = auth.check_client(req.peercert_der)  # the kubelet's own rule: only the API server
            if denied is not None:
                return json_response(denied.status, {"denied": denied.message})
            if req.is_upgrade:
                return self._upgrade(req)
            if req.path == "/stream":
                return Response(200, [("Content-Type", "text/plain"), ("X-Backend", "echo")], self._stream())
            return json_response(201 if req.method == "POST" else 200, {
                "method": req.method, "target": req.target, "headers": req.headers.items(),
                "body": req.body.decode()}, headers=[("X-Backend", "echo"), ("Connection", "close, X-Secret-Hop"),
                                                     ("X-Secret-Hop", "1")])

        self.http = HTTPServer(handler, ssl_context=ctx)
        _, port = await self.http.start("127.0.0.1", 0)
        return port

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await self.http.close()

    async def _stream(self) -> Any:
        assert self.release is not None
        yield b"first\n"
        await self.release.wait()  # the client must have "first" before this is set
        yield b"second\n"

    def _upgrade(self, req: Request) -> Response:
        raw = req.take_over()
        raw.writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n"
                         + f"X-Seen-Target: {req.target}\r\n\r\n".encode() + raw.pending)

        async def echo() -> None:
            try:
                while data := await raw.reader.read(65536):
                    raw.writer.write(data.upper())
                    await raw.writer.drain()
            finally:
                raw.writer.close()

        task = asyncio.ensure_future(echo())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return TAKEN_OVER

    def release_stream(self) -> None:
        assert self.release is not None
        self.loop.call_soon_threadsafe(self.release.set)


class Chain:
    def __init__(self, srv: ServerProcess, echo: EchoNode, kubelet_port: int, node_certs: Path) -> None:
        self.srv, self.echo, self.kubelet_port, self.node_certs = srv, echo, kubelet_port, node_certs


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    if not kubectl_path("1.33").exists():
        pytest.skip("kubectl binaries not installed")
    from edgectl.agent.kubelet.testing import StaticPods, TunnelledKubelet

    work = tmp_path_factory.mktemp("nodeproxy")
    (work / "logs").mkdir()
    srv = ServerProcess(work / "srv")
    sleeper = subprocess.Popen(["sleep", "300"])  # the pod's "container" process
    kubelet: TunnelledKubelet | None = None
    echo: EchoNode | None = None
    try:
        srv.start()
        certs = join_node(srv, KUBELET_NODE, password=f"{KUBELET_NODE}-password-1")
        kubelet = TunnelledKubelet(server_url=srv.url, node=KUBELET_NODE, certs=certs,
                                   pods=StaticPods(pid=sleeper.pid, log_dir=work / "logs"), workdir=work)
        kubelet.start()
        echo_certs = join_node(srv, ECHO_NODE, password=f"{ECHO_NODE}-password-1")
        echo = EchoNode(srv, echo_certs, work / "echo")
        echo.start()
        register_node(srv, KUBELET_NODE, kubelet_port=kubelet.port)
        register_node(srv, ECHO_NODE, kubelet_port=echo.port)
        # A Node whose agent never connected, claiming the port a real kubelet
        # listens on here: a direct dial would reach it, the tunnel cannot.
        register_node(srv, OFFLINE_NODE, kubelet_port=kubelet.port)
        wait_for_tunnels(srv, {KUBELET_NODE, ECHO_NODE})
        yield Chain(srv, echo, kubelet.port, work / "echo")
    finally:
        if echo is not None:
            echo.stop()
        if kubelet is not None:
            kubelet.stop()
        sleeper.kill()
        sleeper.wait()
        srv.stop()


@pytest.mark.parametrize("v", ["1.27", "1.33"])
def test_kubectl_get_raw_pods_and_healthz(chain: Chain, v: str) -> None:
    srv = chain.srv
    pods = json.loads(srv.kubectl(v, "get", "--raw", f"/api/v1/nodes/{KUBELET_NODE}/proxy/pods").stdout)
    assert pods["kind"] == "PodList"
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods["items"]] == [("default", "web")]
    assert srv.kubectl(v, "get", "--raw", f"/api/v1/nodes/{KUBELET_NODE}/proxy/healthz").stdout == "ok"
    # The name:port form upstream accepts, with the port the kubelet reports.
    out = srv.kubectl(v, "get", "--raw", f"/api/v1/nodes/{KUBELET_NODE}:{chain.kubelet_port}/proxy/healthz")
    assert out.stdout == "ok"
    # The kubelet's own 404 Status comes back unchanged.
    missing = srv.kubectl(v, "get", "--raw", f"/api/v1/nodes/{KUBELET_NODE}/proxy/no-such-path", check=False)
    assert missing.returncode != 0 and "no kubelet endpoint /no-such-path" in missing.stderr, missing.stderr


def test_unknown_node_is_a_404_status(chain: Chain) -> None:
    out = chain.srv.kubectl("1.33", "get", "--raw", "/api/v1/nodes/np-ghost/proxy/pods", check=False)
    assert out.returncode != 0 and 'nodes "np-ghost" not found' in out.stderr, out.stderr
    code, body = chain.srv.json("GET", "/api/v1/nodes/np-ghost/proxy/healthz")
    assert code == 404 and body["kind"] == "Status" and body["reason"] == "NotFound"


def test_node_without_tunnel_is_a_503_not_a_direct_dial(chain: Chain) -> None:
    code, body = chain.srv.json("GET", f"/api/v1/nodes/{OFFLINE_NODE}/proxy/healthz")
    assert code == 503 and body["kind"] == "Status", body
    assert "node tunnel not connected" in body["message"] and OFFLINE_NODE in body["message"]
    out = chain.srv.kubectl("1.33", "get", "--raw", f"/api/v1/nodes/{OFFLINE_NODE}/proxy/pods", check=False)
    assert out.returncode != 0 and "node tunnel not connected" in out.stderr, out.stderr


def test_wrong_port_is_refused(chain: Chain) -> None:
    code, body = chain.srv.json("GET", f"/api/v1/nodes/{KUBELET_NODE}:1/proxy/healthz")
    assert code == 503 and "only the kubelet port" in body["message"], body
    code, body = chain.srv.json("GET", f"/api/v1/nodes/http:{KUBELET_NODE}:/proxy/healthz")
    assert code == 400 and "https only" in body["message"], body


def _node_client(chain: Chain) -> http.client.HTTPSConnection:
    d = chain.node_certs
    ctx = ssl.create_default_context(cadata=_server_ca(chain.srv))
    ctx.load_cert_chain(d / "client.crt", d / "client.key")
    return http.client.HTTPSConnection(chain.srv.host, chain.srv.port, context=ctx, timeout=10)


def _server_ca(srv: ServerProcess) -> str:
    import yaml

    doc = yaml.safe_load(srv.kubeconfig.read_text())
    return base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]).decode()


def test_node_certificate_is_refused(chain: Chain) -> None:
    """nodes/proxy is admin-only: a node may not reach another node's (or its own) kubelet."""
    conn = _node_client(chain)
    try:
        for node in (KUBELET_NODE, ECHO_NODE):
            conn.request("GET", f"/api/v1/nodes/{node}/proxy/pods")
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert resp.status == 403 and body["reason"] == "Forbidden", body
            assert "nodes/proxy" in body["message"]
        conn.request("GET", f"/api/v1/nodes/{ECHO_NODE}")  # the same client may read its Node: the cert works
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_relays_method_path_query_body_and_end_to_end_headers(chain: Chain, method: str) -> None:
    body = b"" if method == "GET" else json.dumps({"method": method}).encode()
    headers = {"Authorization": "Bearer client-secret-token", "Impersonate-User": "someone",
               "Connection": "keep-alive, X-Hop", "X-Hop": "hop", "X-Custom": "kept", "Accept": "application/json"}
    if body:
        headers["Content-Type"] = "application/json"
    code, resp_headers, payload = chain.srv.request(
        method, f"/api/v1/nodes/{ECHO_NODE}/proxy/some/path%2Fx/?a=1&b=two%20words", body or None, headers=headers)
    assert code == (201 if method == "POST" else 200), payload
    seen = json.loads(payload)
    assert seen["method"] == method
    assert seen["target"] == "/some/path%2Fx/?a=1&b=two%20words"
    assert seen["body"] == body.decode()
    got = {k for k, _ in seen["headers"]}
    assert ("x-custom", "kept") in [tuple(h) for h in seen["headers"]]
    assert ("accept", "application/json") in [tuple(h) for h in seen["headers"]]
    if body:
        assert ("content-type", "application/json") in [tuple(h) for h in seen["headers"]]
    assert not got & {"authorization", "impersonate-user", "x-hop"}, seen["headers"]
    # The kubelet's end-to-end response headers come back; its hop-by-hop ones do not.
    assert resp_headers.get("x-backend") == "echo" and "x-secret-hop" not in resp_headers


def test_response_is_streamed(chain: Chain) -> None:
    """The first chunk reaches the client while the kubelet is still answering."""
    srv = chain.srv
    assert srv._ctx is not None  # noqa: SLF001 - the admin client context
    conn = http.client.HTTPSConnection(srv.host, srv.port, context=srv._ctx, timeout=10)  # noqa: SLF001
    try:
        conn.request("GET", f"/api/v1/nodes/{ECHO_NODE}/proxy/stream")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("X-Backend") == "echo"
        assert resp.read1(100) == b"first\n"
        # While the request is in flight: the server process holds no TCP
        # connection to the kubelet port (it rides the agent's tunnel).
        if shutil.which("ss") is not None and srv.proc is not None:
            out = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True).stdout
            peers = [line.split()[-2] for line in out.splitlines() if f"pid={srv.proc.pid}," in line]
            assert peers and f"127.0.0.1:{chain.echo.port}" not in peers, peers
        chain.echo.release_stream()
        assert resp.read() == b"second\n"
    finally:
        conn.close()


def test_upgrade_is_piped(chain: Chain) -> None:
    srv = chain.srv
    assert srv._ctx is not None  # noqa: SLF001
    raw = socket.create_connection((srv.host, srv.port), timeout=10)
    sock = srv._ctx.wrap_socket(raw, server_hostname=srv.host)  # noqa: SLF001
    try:
        sock.sendall(f"GET /api/v1/nodes/{ECHO_NODE}/proxy/pipe?x=1 HTTP/1.1\r\nHost: {srv.host}\r\n"
                     "Connection: Upgrade\r\nUpgrade: echo\r\nAuthorization: Bearer nope\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101") and b"X-Seen-Target: /pipe?x=1" in head, head
        sock.sendall(b"hello through the tunnel")
        got = rest
        while len(got) < len(b"hello through the tunnel"):
            got += sock.recv(4096)
        assert got == b"HELLO THROUGH THE TUNNEL"
    finally:
        sock.close()


def test_other_methods_are_405(chain: Chain) -> None:
    code, body = chain.srv.json("OPTIONS", f"/api/v1/nodes/{ECHO_NODE}/proxy/x")
    assert code == 405 and body["kind"] == "Status", body
