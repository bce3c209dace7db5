"""Join: token format, node passwords, and real agent joins over real TLS.

The server side is the real common/httpd.py server with the JoinService
mounted; only the node-password store is in memory (the API implements it
over Secrets).
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import http.client
import json
import ssl
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgectl.agent.join import JoinError, join
from edgectl.errors import EdgectlError
from edgectl.httpd import HTTPServer, Request, Response, Router, text_response
from edgectl.joinproto import ClusterConfig, NodeCerts, TokenError, basic_auth, parse_token, split_pem_bundle
from edgectl.server.auth import Authenticator, authorize, request_attributes
from edgectl.server.join import (
    JoinService, NodePasswordExists, hash_from_secret, hash_password, node_password_secret, verify_password,
)
from edgectl.server.pki import ClusterPKI
from edgectl.server.token import load_or_create_token, make_token, presented_secret_ok

CA_HASH = "ab" * 32

# ---- token format ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "token is empty"),
        ("   ", "token is empty"),
        ("abc", "must start with 'K10'"),
        ("K10" + CA_HASH, "no '::'"),
        ("K10" + "ab" * 31 + "::server:x", "64 hex characters, got 62"),
        ("K10" + "ab" * 33 + "::server:x", "64 hex characters, got 66"),
        ("K10" + "zz" * 32 + "::server:x", "must be hexadecimal"),
        ("K10" + CA_HASH + "::server", "<user>:<secret>"),
        ("K10" + CA_HASH + "::server:", "secret is empty"),
        ("K10" + CA_HASH + "::server:has space", "token secret must be"),
    ],
)
def test_malformed_tokens(text: str, message: str) -> None:
    with pytest.raises(TokenError, match=message):
        parse_token(text)


def test_token_round_trip() -> None:
    tok = parse_token(f" K10{CA_HASH.upper()}::server:abc123\n")
    assert (tok.ca_hash, tok.user, tok.secret) == (CA_HASH, "server", "abc123")
    assert str(tok) == f"K10{CA_HASH}::server:abc123"
    assert "abc123" not in repr(tok)  # secrets stay out of logs


def test_token_file(tmp_path: Path) -> None:
    tok = load_or_create_token(tmp_path, b"CA-ONE")
    path = tmp_path / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert parse_token(path.read_text()) == tok
    assert len(tok.secret) == 32
    assert load_or_create_token(tmp_path, b"CA-ONE") == tok  # kept across restarts
    moved = load_or_create_token(tmp_path, b"CA-TWO")  # the CA changed: new hash, same secret
    assert moved.secret == tok.secret and moved.ca_hash != tok.ca_hash
    assert parse_token(path.read_text()) == moved
    chosen = load_or_create_token(tmp_path, b"CA-TWO", secret="my-own-secret")
    assert chosen.secret == "my-own-secret" and parse_token(path.read_text()) == chosen
    path.write_text("K10nonsense")
    with pytest.raises(TokenError, match="fix or delete the file"):
        load_or_create_token(tmp_path, b"CA-TWO")
    assert path.read_text() == "K10nonsense"  # never overwritten behind the user's back


def test_presented_secret() -> None:
    tok = make_token(b"CA", "s3cret")
    assert presented_secret_ok("s3cret", tok)
    assert presented_secret_ok(str(tok), tok)
    assert not presented_secret_ok("s3cre", tok)
    assert not presented_secret_ok(str(make_token(b"OTHER-CA", "s3cret")), tok)
    assert not presented_secret_ok("K10garbage", tok)


def test_password_hash() -> None:
    stored = hash_password("pw-1")
    assert stored.startswith("$scrypt$ln=14,r=8,p=1$")
    assert verify_password("pw-1", stored)
    assert not verify_password("pw-2", stored)
    assert hash_password("pw-1") != stored  # salted
    for garbage in ("", "$scrypt$", "$md5$x$y$z", "$scrypt$ln=40,r=8,p=1$AAAA$AAAA", "$scrypt$ln=x$a$b"):
        assert not verify_password("pw-1", garbage)
    secret = node_password_secret("edge-a", stored)
    assert secret["metadata"] == {"name": "edge-a.node-password.edgectl", "namespace": "kube-system"}
    assert secret["immutable"] is True
    assert hash_from_secret(secret) == stored
    assert hash_from_secret({"data": {"hash": "!!"}}) is None


# ---- a real HTTPS join server ----------------------------------------------------------


class MemoryPasswords:
    """Test-only NodePasswordStore; the API's real one keeps Secrets."""

    def __init__(self) -> None:
        self.hashes: dict[str, str] = {}
        self.fail = False

    async def get(self, node: str) -> str | None:
        if self.fail:
            raise OSError("datastore unavailable")
        return self.hashes.get(node)

    async def create(self, node: str, password_hash: str) -> None:
        await asyncio.sleep(0.01)  # widen the race window for the concurrency test
        if node in self.hashes:
            raise NodePasswordExists(node)
        self.hashes[node] = password_hash


@dataclass
class Cluster:
    pki: ClusterPKI
    token: str
    port: int
    passwords: MemoryPasswords

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def _whoami(auth: Authenticator):  # type: ignore[no-untyped-def]
    async def handler(req: Request) -> Response:
        user = auth.authenticate(peercert_der=req.peercert_der, authorization=req.headers.get("authorization"))
        if user is None:
            return text_response(401, "unauthorized")
        attrs = request_attributes(user, req.method, req.path, {})
        return text_response(200, json.dumps({"user": user.name, "groups": list(user.groups),
                                              "allowed": authorize(attrs).allowed}))
    return handler


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    pki = ClusterPKI.load_or_create(tmp_path / "server" / "tls", sans=["edge-server"])
    token = load_or_create_token(tmp_path / "server", pki.ca_pem)
    passwords = MemoryPasswords()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    router = Router(fallback=_whoami(Authenticator({}, client_ca=pki.client_ca)))
    holder: dict[str, Any] = {}

    async def start() -> int:
        config = ClusterConfig(flannel_backend="wireguard", servers=("https://192.0.2.1:6443",))
        JoinService(pki=pki, token=token, passwords=passwords, config=config).mount(router)
        holder["server"] = server = HTTPServer(router, ssl_context=pki.server_ssl_context())
        return (await server.start("127.0.0.1", 0))[1]

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield Cluster(pki, str(token), port, passwords)
    finally:
        asyncio.run_coroutine_threadsafe(holder["server"].close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _raw(c: Cluster, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    ctx = ssl.create_default_context(cadata=c.pki.server_ca_pem.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", c.port, context=ctx, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _whoami_as(c: Cluster, ctx: ssl.SSLContext, path: str = "/v1-edge/connect") -> dict[str, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", c.port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())  # type: ignore[no-any-return]
    finally:
        conn.close()


def test_join_end_to_end(cluster: Cluster, tmp_path: Path) -> None:
    data = tmp_path / "agent-a"
    result = join(server_url=cluster.url, token=cluster.token, data_dir=data, node_name="edge-a",
                  node_ips=["192.0.2.21"])
    assert result.config.cluster_cidr == "10.42.0.0/16"
    assert result.config.service_cidr == "10.43.0.0/16"
    assert result.config.flannel_backend == "wireguard"
    assert result.config.servers == ("https://192.0.2.1:6443",)
    for key in (result.client_key, result.serving_key, data / "node-password"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert result.server_ca.read_bytes() == cluster.pki.server_ca_pem
    assert result.client_ca.read_bytes() == cluster.pki.client_ca_pem
    # The certificate works over real TLS and maps to the node identity.
    who = _whoami_as(cluster, result.api_ssl_context())
    assert who["user"] == "system:node:edge-a"
    assert "system:nodes" in who["groups"]
    assert who["allowed"] is True  # nodes may open the tunnel
    assert _whoami_as(cluster, result.api_ssl_context(), "/api/v1/nodes/other")["allowed"] is True  # get
    assert "edge-a" in cluster.passwords.hashes
    assert not result.renewal_due()
    assert result.renewal_due(now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=280))
    result.serving_cert.write_text("garbage")
    assert result.renewal_due()


def test_wrong_token_secret_fails_clearly(cluster: Cluster, tmp_path: Path) -> None:
    bad = str(parse_token(cluster.token)).rsplit(":", 1)[0] + ":not-the-secret"
    with pytest.raises(JoinError, match=r"rejected the join token \(401 Unauthorized"):
        join(server_url=cluster.url, token=bad, data_dir=tmp_path / "a", node_name="edge-a")
    assert not (tmp_path / "a" / "tls").exists()
    assert cluster.passwords.hashes == {}


def test_unpinned_ca_fails_clearly(cluster: Cluster, tmp_path: Path) -> None:
    other = ClusterPKI.load_or_create(tmp_path / "other-tls", sans=[])
    secret = parse_token(cluster.token).secret
    with pytest.raises(JoinError, match="CA hash mismatch: the token does not belong to the server"):
        join(server_url=cluster.url, token=str(make_token(other.ca_pem, secret)), data_dir=tmp_path / "a", node_name="edge-a")
    assert not (tmp_path / "a").exists()  # nothing sent, nothing written


def test_malformed_token_fails_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(EdgectlError, match="64 hex characters"):
        join(server_url="https://127.0.0.1:1", token="K10abc::server:x", data_dir=tmp_path, node_name="a")


def test_second_machine_cannot_take_the_name_and_first_can_rejoin(cluster: Cluster, tmp_path: Path) -> None:
    first = join(server_url=cluster.url, token=cluster.token, data_dir=tmp_path / "m1", node_name="edge-a")
    serial_before = first.client_cert.read_bytes()
    password = (tmp_path / "m1" / "node-password").read_text()
    with pytest.raises(JoinError, match=r'403: node password does not match for node "edge-a"'):
        join(server_url=cluster.url, token=cluster.token, data_dir=tmp_path / "m2", node_name="edge-a")
    assert not (tmp_path / "m2" / "tls").exists()
    # A restart of the first machine reuses its password and gets fresh certs for the same identity.
    again = join(server_url=cluster.url, token=cluster.token, data_dir=tmp_path / "m1", node_name="edge-a")
    assert (tmp_path / "m1" / "node-password").read_text() == password
    assert again.client_cert.read_bytes() != serial_before
    assert _whoami_as(cluster, again.api_ssl_context())["user"] == "system:node:edge-a"
    # The second machine may still join under its own name.
    other = join(server_url=cluster.url, token=cluster.token, data_dir=tmp_path / "m2", node_name="edge-b")
    assert _whoami_as(cluster, other.api_ssl_context())["user"] == "system:node:edge-b"


def test_concurrent_first_joins_have_one_winner(cluster: Cluster, tmp_path: Path) -> None:
    def attempt(i: int) -> str:
        try:
            join(server_url=cluster.url, token=cluster.token, data_dir=tmp_path / f"m{i}", node_name="edge-race")
            return "ok"
        except JoinError as exc:
            assert "403" in str(exc), exc
            return "403"

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(attempt, range(4)))
    assert outcomes == ["403", "403", "403", "ok"]


def test_server_name_must_be_in_the_serving_cert(cluster: Cluster, tmp_path: Path) -> None:
    # A name that resolves to our 127.0.0.1 listener but is not a SAN of the serving cert.
    with open("/etc/hosts") as hosts:
        aliases = {name for line in hosts if line.split()[:1] == ["127.0.0.1"] for name in line.split()[1:]}
    candidates = sorted(aliases - {"localhost"})
    if not candidates:
        pytest.skip("no non-SAN alias for 127.0.0.1 in /etc/hosts")
    with pytest.raises(JoinError, match="TLS verification .* failed against the pinned CA"):
        join(server_url=f"https://{candidates[0]}:{cluster.port}", token=cluster.token,
             data_dir=tmp_path / "a", node_name="edge-a")


def test_unreachable_and_bad_urls(tmp_path: Path) -> None:
    tok = str(make_token(b"CA", "s"))
    with pytest.raises(JoinError, match="cannot reach https://127.0.0.1:1/cacerts"):
        join(server_url="https://127.0.0.1:1", token=tok, data_dir=tmp_path, node_name="a", timeout=2)
    with pytest.raises(JoinError, match="must look like https://host:port"):
        join(server_url="http://127.0.0.1:6443", token=tok, data_dir=tmp_path, node_name="a")
    with pytest.raises(EdgectlError, match="invalid node name"):
        join(server_url="https://127.0.0.1:6443", token=tok, data_dir=tmp_path, node_name="Not_Valid")


# ---- the endpoints directly ----------------------------------------------------------------


def _join_headers(c: Cluster, **extra: str) -> dict[str, str]:
    return {"Authorization": basic_auth(parse_token(c.token).secret), **extra}


def test_cacerts_is_anonymous_and_hashes_to_token(cluster: Cluster) -> None:
    code, headers, body = _raw(cluster, "GET", "/cacerts")
    assert code == 200 and body == cluster.pki.ca_pem
    assert parse_token(cluster.token).matches_ca(body)
    assert len(split_pem_bundle(body)) == 2
    assert _raw(cluster, "POST", "/cacerts")[0] == 405


def status_of(body: bytes) -> dict[str, Any]:
    doc = json.loads(body)
    assert doc["kind"] == "Status" and doc["apiVersion"] == "v1" and doc["status"] == "Failure"
    return doc  # type: ignore[no-any-return]


def test_config_needs_the_token(cluster: Cluster) -> None:
    code, headers, body = _raw(cluster, "GET", "/v1-edge/config")
    assert code == 401 and status_of(body)["reason"] == "Unauthorized"
    assert headers["www-authenticate"].startswith("Basic")
    wrong = {"Authorization": "Basic " + base64.b64encode(b"node:nope").decode()}
    assert _raw(cluster, "GET", "/v1-edge/config", wrong)[0] == 401
    assert _raw(cluster, "GET", "/v1-edge/config", {"Authorization": "Basic !!!"})[0] == 401
    full = {"Authorization": "Basic " + base64.b64encode(f"node:{cluster.token}".encode()).decode()}
    code, _, body = _raw(cluster, "GET", "/v1-edge/config", full)
    assert code == 200 and ClusterConfig.from_json(body).egress_selector_mode == "agent"
    assert json.loads(body)["cluster-cidr"] == "10.42.0.0/16"


@pytest.mark.parametrize(
    "headers, code, message",
    [
        ({}, 400, "Edgectl-Node-Name: node name is empty"),
        ({"Edgectl-Node-Name": "Bad_Name", "Edgectl-Node-Password": "p"}, 400, "invalid node name"),
        ({"Edgectl-Node-Name": "ok"}, 400, "Edgectl-Node-Password must be"),
        ({"Edgectl-Node-Name": "ok", "Edgectl-Node-Password": "p", "Edgectl-Node-IP": "1.2.3"}, 400, "invalid node IP"),
    ],
)
def test_node_certs_bad_input(cluster: Cluster, headers: dict[str, str], code: int, message: str) -> None:
    got, _, body = _raw(cluster, "POST", "/v1-edge/node-certs", _join_headers(cluster, **headers))
    assert got == code
    status = status_of(body)
    assert status["code"] == code and status["reason"] == "BadRequest" and message in status["message"]


def test_node_certs_method_auth_and_store_failure(cluster: Cluster) -> None:
    hdrs = {"Edgectl-Node-Name": "edge-x", "Edgectl-Node-Password": "pw"}
    assert _raw(cluster, "GET", "/v1-edge/node-certs", _join_headers(cluster, **hdrs))[0] == 405
    assert _raw(cluster, "POST", "/v1-edge/node-certs", hdrs)[0] == 401
    cluster.passwords.fail = True
    code, _, body = _raw(cluster, "POST", "/v1-edge/node-certs", _join_headers(cluster, **hdrs))
    assert code == 503 and status_of(body)["reason"] == "ServiceUnavailable"
    cluster.passwords.fail = False
    code, _, body = _raw(cluster, "POST", "/v1-edge/node-certs",
                         _join_headers(cluster, **hdrs, **{"Edgectl-Node-IP": "192.0.2.5, 2001:db8::5"}))
    assert code == 200
    certs = NodeCerts.from_json(body)
    assert certs.server_ca == cluster.pki.server_ca_pem


@pytest.mark.parametrize("body, message", [
    (b"nope", "not JSON"), (b"[]", "not a JSON object"), (b'{"client-cert": 1}', "client-cert is missing or not PEM"),
])
def test_node_certs_reply_parsing(body: bytes, message: str) -> None:
    with pytest.raises(EdgectlError, match=message):
        NodeCerts.from_json(body)


@pytest.mark.parametrize("body, message", [
    (b"{", "not JSON"), (b"1", "not a JSON object"), (b'{"cluster-cidr": 5}', "cluster-cidr must be a string"),
    (b'{"servers": "x"}', "servers must be a list"),
])
def test_config_reply_parsing(body: bytes, message: str) -> None:
    with pytest.raises(EdgectlError, match=message):
        ClusterConfig.from_json(body)


@pytest.mark.slow
def test_fifty_concurrent_joins(cluster: Cluster, tmp_path: Path) -> None:
    """The issue's join target: 50 nodes joining at once, no errors."""
    def attempt(i: int) -> str:
        r = join(server_url=cluster.url, token=cluster.token, data_dir=tmp_path / f"n{i}", node_name=f"edge-{i}",
                 node_ips=[f"192.0.2.{i + 1}"], timeout=60)
        return r.node_name

    with ThreadPoolExecutor(50) as pool:
        names = list(pool.map(attempt, range(50)))
    assert names == [f"edge-{i}" for i in range(50)]
    assert len(cluster.passwords.hashes) == 50


def test_unusable_data_dir_is_a_clear_error(cluster: Cluster, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(JoinError, match="cannot use the node password file"):
        join(server_url=cluster.url, token=cluster.token, data_dir=blocker / "agent", node_name="edge-a")
    with pytest.raises(TokenError, match="cannot use"):
        load_or_create_token(blocker, b"CA")
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "node-password").write_text("  \n")
    with pytest.raises(JoinError, match="is empty"):
        join(server_url=cluster.url, token=cluster.token, data_dir=tmp_path / "agent", node_name="edge-a")


# ---- end to end against a real `edgectl server` -----------------------------------------


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from edgectl.server.testing import ServerProcess

    srv = ServerProcess(tmp_path_factory.mktemp("authjoin-srv"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _as_node(srv: Any, result: Any, method: str, path: str, body: Any = None,
             ctype: str = "application/json") -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=result.api_ssl_context(), timeout=30)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


@pytest.mark.slow
def test_real_server_join_and_node_confinement(real_server: Any, tmp_path: Path) -> None:
    srv = real_server
    token = (srv.data_dir / "token").read_text().strip()
    secret = parse_token(token).secret
    with pytest.raises(JoinError, match="rejected the join token"):
        join(server_url=srv.url, token=token.rsplit(":", 1)[0] + ":wrong", data_dir=tmp_path / "x", node_name="edge-a")
    foreign = ClusterPKI.load_or_create(tmp_path / "foreign", sans=[])
    with pytest.raises(JoinError, match="CA hash mismatch"):
        join(server_url=srv.url, token=str(make_token(foreign.ca_pem, secret)), data_dir=tmp_path / "x", node_name="edge-a")

    node = join(server_url=srv.url, token=token, data_dir=tmp_path / "a", node_name="edge-a", node_ips=["127.0.0.1"])
    code, secret_obj = srv.json("GET", "/api/v1/namespaces/kube-system/secrets/edge-a.node-password.edgectl")
    assert code == 200 and secret_obj["immutable"] is True
    with pytest.raises(JoinError, match='403: node password does not match for node "edge-a"'):
        join(server_url=srv.url, token=token, data_dir=tmp_path / "b", node_name="edge-a")
    join(server_url=srv.url, token=token, data_dir=tmp_path / "a", node_name="edge-a")  # restart: same identity

    def node_obj(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}

    assert _as_node(srv, node, "POST", "/api/v1/nodes", node_obj("edge-a"))[0] == 201
    code, st = _as_node(srv, node, "POST", "/api/v1/nodes", node_obj("edge-b"))
    assert code == 403 and 'node \\"edge-a\\" is not allowed to modify node \\"edge-b\\"' in json.dumps(st["message"])
    assert srv.json("POST", "/api/v1/nodes", node_obj("edge-b"))[0] == 201  # the admin may
    code, st = _as_node(srv, node, "PATCH", "/api/v1/nodes/edge-b", {"metadata": {"labels": {"x": "y"}}},
                        "application/merge-patch+json")
    assert code == 403 and st["reason"] == "Forbidden"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    code, st = _as_node(srv, node, "POST", "/api/v1/namespaces/default/pods", pod)
    assert code == 403 and "not allowed to create pods" in st["message"]
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "edge-a"},
             "spec": {"holderIdentity": "edge-a"}}
    assert _as_node(srv, node, "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)[0] == 201
    for name, bound in (("mine", "edge-a"), ("theirs", "edge-b")):
        body = {**pod, "metadata": {"name": name}, "spec": {**pod["spec"], "nodeName": bound}}
        assert srv.json("POST", "/api/v1/namespaces/default/pods", body)[0] == 201
    patch = {"status": {"phase": "Running"}}
    assert _as_node(srv, node, "PATCH", "/api/v1/namespaces/default/pods/mine/status", patch,
                    "application/merge-patch+json")[0] == 200
    code, st = _as_node(srv, node, "PATCH", "/api/v1/namespaces/default/pods/theirs/status", patch,
                        "application/merge-patch+json")
    assert code == 403 and "spec.nodeName set to itself" in st["message"]
    assert _as_node(srv, node, "GET", "/api/v1/pods")[0] == 200
    assert _as_node(srv, node, "GET", "/api/v1/namespaces/kube-system/secrets")[0] == 403
    assert _as_node(srv, node, "GET", "/api/v1/namespaces/default/pods/mine/log")[0] == 403


@pytest.mark.slow
def test_real_kubectl_as_node_is_confined(real_server: Any, tmp_path: Path) -> None:
    import shutil
    import subprocess

    from edgectl.server.kubeconfig import render_kubeconfig, write_kubeconfig

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    srv = real_server
    token = (srv.data_dir / "token").read_text().strip()
    node = join(server_url=srv.url, token=token, data_dir=tmp_path / "k", node_name="edge-k")
    kc = tmp_path / "node.kubeconfig"
    write_kubeconfig(kc, render_kubeconfig(server_url=srv.url, ca_pem=node.server_ca.read_bytes(),
                                           cert_pem=node.client_cert.read_bytes(), key_pem=node.client_key.read_bytes()))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl, "--kubeconfig", str(kc), "--cache-dir", str(tmp_path / "cache"), *args],
                              capture_output=True, text=True, timeout=60)

    assert run("get", "nodes").returncode == 0
    denied = run("create", "namespace", "from-a-node")
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


@pytest.mark.slow
def test_real_server_node_reads_only_the_secrets_its_pods_reference(real_server: Any, tmp_path: Path) -> None:
    import asyncio

    from edgectl.agent.client import ApiClient, StaticEndpoint
    from edgectl.agent.configmaps import ApiSecrets
    from edgectl.agent.runtime.envsources import ConfigMapLookupError

    srv = real_server
    token = (srv.data_dir / "token").read_text().strip()
    node = join(server_url=srv.url, token=token, data_dir=tmp_path / "s", node_name="edge-sec")
    join(server_url=srv.url, token=token, data_dir=tmp_path / "t", node_name="edge-sec2")
    base = "/api/v1/namespaces/default/secrets"
    for name in ("sec-db", "sec-other", "sec-theirs"):
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"pw": f"{name}-pw"}}
        assert srv.json("POST", base, body)[0] == 201

    def bound(name: str, node_name: str, ns: str, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "busybox"}], **spec}}

    env_ref = [{"name": "c", "image": "busybox",
                "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec-db", "key": "pw"}}}],
                "envFrom": [{"secretRef": {"name": "sec-missing"}}]}]
    for pod in (bound("sec-mine", "edge-sec", "default", containers=env_ref),
                bound("sec-yours", "edge-sec2", "default", imagePullSecrets=[{"name": "sec-theirs"}]),
                bound("sec-sneaky", "edge-sec", "kube-system", imagePullSecrets=[{"name": "edge-sec2.node-password.edgectl"},
                                                                                 {"name": "edge-sec.node-password.edgectl"}])):
        code, st = srv.json("POST", f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods", pod)
        assert code == 201, st

    code, got = _as_node(srv, node, "GET", f"{base}/sec-db")
    assert code == 200 and got["data"]["pw"] == base64.b64encode(b"sec-db-pw").decode()
    assert _as_node(srv, node, "GET", f"{base}/sec-missing")[0] == 404  # referenced but absent: a plain 404
    for path in (f"{base}/sec-other", f"{base}/sec-theirs", f"{base}/sec-nowhere", base, f"{base}?watch=true",
                 "/api/v1/secrets", "/api/v1/watch/namespaces/default/secrets/sec-other",
                 f"{base}?fieldSelector=metadata.name%3Dsec-theirs",
                 "/api/v1/namespaces/kube-system/secrets/edge-sec.node-password.edgectl",
                 "/api/v1/namespaces/kube-system/secrets/edge-sec2.node-password.edgectl"):
        code, st = _as_node(srv, node, "GET", path)
        assert code == 403 and st["reason"] == "Forbidden", (path, code, st)
    code, st = _as_node(srv, node, "GET", f"{base}/sec-other")
    assert "no relationship found between node 'edge-sec' and this object" in st["message"]
    # A list pinned to one referenced name is a get of it (upstream's kubelet watches this way).
    code, listed = _as_node(srv, node, "GET", f"{base}?fieldSelector=metadata.name%3Dsec-db")
    assert code == 200 and [i["metadata"]["name"] for i in listed["items"]] == ["sec-db"], listed

    async def via_agent() -> None:
        client = ApiClient(endpoint=StaticEndpoint(srv.url), ssl_context=node.api_ssl_context())
        try:
            secrets = ApiSecrets(client)
            assert await secrets.get("default", "sec-db") == {"pw": "sec-db-pw"}
            assert await secrets.get("default", "sec-missing") is None
            with pytest.raises(ConfigMapLookupError, match="reading secret default/sec-other: 403"):
                await secrets.get("default", "sec-other")
        finally:
            await client.close()

    asyncio.run(via_agent())
