"""Agent side of the join: pin the CA, fetch settings, get node certificates.

1. ``GET /cacerts`` without trusting anything, then check the bytes against
   the sha256 in the token. Only after that is the CA trusted.
2. ``GET /v1-edge/config`` over TLS verified by that CA, with basic auth
   ``node:<secret>``.
3. ``POST /v1-edge/node-certs`` with this machine's node password, kept in
   ``<data-dir>/node-password`` (0600) so a restart keeps the node's identity.
4. Certificates go to ``<data-dir>/tls`` (keys 0600).

Blocking stdlib I/O (http.client, ssl) keeps the agent light; call it from a
thread in async code. ``server_url`` may be the local load balancer later.
"""
from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import secrets
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edgectl.errors import EdgectlError
from edgectl.joinproto import (
    CACERTS_PATH, CONFIG_PATH, NODE_CERTS_PATH, NODE_IP_HEADER, NODE_NAME_HEADER,
    NODE_PASSWORD_HEADER, ClusterConfig, NodeCerts, basic_auth, ca_hash, check_node_name,
    parse_token, split_pem_bundle,
)

PASSWORD_FILE = "node-password"
RENEW_WITHIN = dt.timedelta(days=90)  # as the server rotates its own leaves
MAX_REPLY = 1024 * 1024


class JoinError(EdgectlError):
    """The join failed; the message says why and what to check."""


@dataclass(frozen=True)
class JoinResult:
    node_name: str
    config: ClusterConfig
    tls_dir: Path

    @property
    def client_cert(self) -> Path:
        return self.tls_dir / "client-kubelet.crt"

    @property
    def client_key(self) -> Path:
        return self.tls_dir / "client-kubelet.key"

    @property
    def serving_cert(self) -> Path:
        return self.tls_dir / "serving-kubelet.crt"

    @property
    def serving_key(self) -> Path:
        return self.tls_dir / "serving-kubelet.key"

    @property
    def server_ca(self) -> Path:
        return self.tls_dir / "server-ca.crt"

    @property
    def client_ca(self) -> Path:
        return self.tls_dir / "client-ca.crt"

    def renewal_due(self, *, within: dt.timedelta = RENEW_WITHIN, now: dt.datetime | None = None) -> bool:
        """True when a node cert is missing, unreadable or within ``within`` of
        expiry; the agent then joins again (same password, fresh certs)."""
        from cryptography import x509  # only needed here; keeps agent start-up light

        now = now or dt.datetime.now(dt.timezone.utc)
        for path in (self.client_cert, self.serving_cert):
            try:
                cert = x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, ValueError):
                return True
            if cert.not_valid_after_utc - now <= within:
                return True
        return False

    def api_ssl_context(self) -> ssl.SSLContext:
        """TLS to the API server as this node (system:node:<name>)."""
        ctx = _client_context()
        ctx.load_verify_locations(cafile=self.server_ca)
        ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def join(*, server_url: str, token: str, data_dir: Path, node_name: str,
         node_ips: Sequence[str] = (), timeout: float = 10.0) -> JoinResult:
    """Join the cluster at ``server_url``; safe to repeat on every start."""
    parsed = parse_token(token)
    check_node_name(node_name)
    host, port = _split_url(server_url)

    ca_pem = _fetch(host, port, "GET", CACERTS_PATH, ctx=_insecure_context(), timeout=timeout)
    got = ca_hash(ca_pem)
    if not parsed.matches_ca(ca_pem):
        raise JoinError(f"CA hash mismatch: the token does not belong to the server at {server_url} "
                        f"(its CA bundle hashes to {got[:16]}..., the token expects {parsed.ca_hash[:16]}...)")
    blocks = split_pem_bundle(ca_pem)
    if len(blocks) < 2:
        raise JoinError(f"{server_url}{CACERTS_PATH} did not return a server CA and a client CA")
    server_ca = blocks[0]
    trusted = _client_context()
    try:
        trusted.load_verify_locations(cadata=server_ca.decode())
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise JoinError(f"the pinned server CA is not a usable certificate: {exc}") from None

    auth = {"Authorization": basic_auth(parsed.secret)}
    config = ClusterConfig.from_json(_fetch(host, port, "GET", CONFIG_PATH, ctx=trusted, timeout=timeout, headers=auth))

    password = _node_password(data_dir)
    headers = {**auth, NODE_NAME_HEADER: node_name, NODE_PASSWORD_HEADER: password}
    if node_ips:
        headers[NODE_IP_HEADER] = ",".join(node_ips)
    certs = NodeCerts.from_json(_fetch(host, port, "POST", NODE_CERTS_PATH, ctx=trusted, timeout=timeout, headers=headers))
    if certs.server_ca != server_ca:
        raise JoinError("the node certificate reply names a different server CA than /cacerts")

    result = JoinResult(node_name, config, data_dir / "tls")
    try:
        _write_certs(result, certs)
    except OSError as exc:
        raise JoinError(f"cannot write node certificates under {result.tls_dir}: {exc.strerror or exc}") from None
    return result


def _split_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise JoinError(f"server URL must look like https://host:port, got {url!r}")
    try:
        port = parts.port or 443
    except ValueError:
        raise JoinError(f"server URL has an invalid port: {url!r}") from None
    return parts.hostname, port


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _insecure_context() -> ssl.SSLContext:
    # Only for /cacerts, whose reply is checked against the token hash.
    ctx = _client_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _fetch(host: str, port: int, method: str, path: str, *, ctx: ssl.SSLContext, timeout: float,
           headers: dict[str, str] | None = None) -> bytes:
    where = f"https://{host}:{port}{path}"
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read(MAX_REPLY + 1)
    except ssl.SSLCertVerificationError as exc:
        raise JoinError(f"TLS verification of {where} failed against the pinned CA: {exc.verify_message}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise JoinError(f"cannot reach {where}: {exc or type(exc).__name__}") from None
    finally:
        conn.close()
    if len(body) > MAX_REPLY:
        raise JoinError(f"{where}: reply is larger than {MAX_REPLY} bytes")
    if resp.status == 200:
        return body
    message = _status_message(body)
    if resp.status == 401:
        raise JoinError(f"the server rejected the join token (401 Unauthorized at {where}): check the token; server said: {message}")
    raise JoinError(f"{where} returned {resp.status}: {message}")


def _status_message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:200].decode("utf-8", "replace").strip() or "(empty reply)"
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return str(doc["message"])
    return body[:200].decode("utf-8", "replace")


def _node_password(data_dir: Path) -> str:
    """This machine's node password; created once and reused across restarts."""
    path = data_dir / PASSWORD_FILE
    try:
        if path.exists():
            password = path.read_text().strip()
            if not password:
                raise JoinError(f"{path} is empty; delete it only if this machine should become a new node")
            return password
        password = secrets.token_hex(16)
        _write(path, f"{password}\n".encode(), mode=0o600)
    except (OSError, UnicodeDecodeError) as exc:
        raise JoinError(f"cannot use the node password file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return password


def _write_certs(result: JoinResult, certs: NodeCerts) -> None:
    _write(result.server_ca, certs.server_ca, mode=0o644)
    _write(result.client_ca, certs.client_ca, mode=0o644)
    # Keys before certs: a crash in between leaves a mismatch the next join fixes.
    _write(result.client_key, certs.client_key, mode=0o600)
    _write(result.client_cert, certs.client_cert, mode=0o644)
    _write(result.serving_key, certs.serving_key, mode=0o600)
    _write(result.serving_cert, certs.serving_cert, mode=0o644)


def _write(path: Path, data: bytes, *, mode: int) -> None:
    """Atomic replace with the mode set before the data lands."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
