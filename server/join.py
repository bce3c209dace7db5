"""Join endpoints: how an agent gets the CA, the cluster settings and its certs.

``GET /cacerts``            anonymous; the CA bundle whose sha256 is in the token.
``GET /v1-edge/config``     join token; cluster settings (:class:`ClusterConfig` JSON).
``POST /v1-edge/node-certs`` join token + per-node password; a :class:`NodeCerts` JSON.

The join token is presented as HTTP basic auth ``node:<token secret>`` (the
full ``K10...`` token also works as the password; its CA hash must match).
Basic auth is not an API credential, so the API authenticator sees these
requests as anonymous and :func:`edgectl.server.auth.authorize` lets the join
paths through; the check happens here. Mount with :meth:`JoinService.mount`
or route ``JOIN_ROUTES`` yourself.

Node-certs request headers: ``Edgectl-Node-Name`` (DNS-1123), ``Edgectl-Node-Password``
(the machine's private password), ``Edgectl-Node-IP`` (optional, comma-separated).
The first join of a name stores a scrypt hash of the password in the immutable
Secret ``kube-system/<node>.node-password.edgectl``; later joins must present
the same password, so another machine cannot take the name over (403).

Wiring in ``edgectl server`` (the pieces of items 4 and 5 of issue 4)::

    pki = ClusterPKI.load_or_create(data_dir / "tls", sans=tls_sans)   # rotates expiring leaves
    token = load_or_create_token(data_dir, pki.ca_pem, secret=token_flag)  # writes <data-dir>/token
    pki.write_admin_kubeconfig(kubeconfig_path, f"https://127.0.0.1:{port}")
    auth = Authenticator({}, client_ca=pki.client_ca)
    JoinService(pki=pki, token=token, passwords=<NodePasswordStore over Secrets>,
                config=ClusterConfig(servers=(url,))).mount(router)
    HTTPServer(router, ssl_context=pki.server_ssl_context())
    # per API request:
    user = auth.authenticate(peercert_der=req.peercert_der, authorization=req.headers.get("authorization"))
    #   None -> 401 Unauthorized Status
    attrs = request_attributes(user, req.method, req.path, {k: v[0] for k, v in req.query.items()})
    decision = authorize(attrs)            # early check (= prefilter): no objects passed
    #   not allowed -> 403 Forbidden Status with forbidden_message(attrs, decision)
    decision = authorize(attrs, new_obj=new, old_obj=stored)   # in write handlers, with the objects
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
from typing import Any, Protocol

from edgectl.errors import EdgectlError
from edgectl.httpd import Request, Response, Router, json_response
from edgectl.joinproto import (
    CACERTS_PATH, CONFIG_PATH, NODE_CERTS_PATH, NODE_IP_HEADER, NODE_NAME_HEADER,
    NODE_PASSWORD_HEADER, ClusterConfig, JoinToken, check_node_name, parse_basic_auth,
)
from edgectl.log import fields
from edgectl.server.pki import ClusterPKI
from edgectl.server.pki.cluster import check_ips
from edgectl.server.token import presented_secret_ok

log = logging.getLogger(__name__)

SECRET_NAMESPACE = "kube-system"
SECRET_TYPE = "edgectl.io/node-password"
_PASSWORD = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no spaces

# scrypt at N=2^14, r=8: ~16 MiB and tens of ms per hash. JoinService bounds
# how many run at once, for memory and CPU when many nodes join together.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
HASH_CONCURRENCY = 2


class NodePasswordExists(Exception):
    """Raised by NodePasswordStore.create when the Secret already exists."""


class NodePasswordStore(Protocol):
    """Where node-password hashes live; the API implements it over Secrets
    (see :func:`node_password_secret` / :func:`hash_from_secret`)."""

    async def get(self, node: str) -> str | None:
        """The stored hash for ``node``, or None if it never joined."""

    async def create(self, node: str, password_hash: str) -> None:
        """Store a hash; raise NodePasswordExists if one is already there."""


def secret_name(node: str) -> str:
    return f"{node}.node-password.edgectl"


def node_password_secret(node: str, password_hash: str) -> dict[str, Any]:
    """The Secret object a store should create (immutable, as k3s does)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(node), "namespace": SECRET_NAMESPACE},
        "immutable": True,
        "type": SECRET_TYPE,
        "data": {"hash": base64.b64encode(password_hash.encode()).decode()},
    }


def hash_from_secret(secret: dict[str, Any]) -> str | None:
    data = secret.get("data")
    value = data.get("hash") if isinstance(data, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True).decode()
    except ValueError:
        return None


# ---- password hashing (pure) ------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``$scrypt$ln=14,r=8,p=1$<salt>$<hash>``: parameters travel with the hash."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"$scrypt$ln={_SCRYPT_N.bit_length() - 1},r={_SCRYPT_R},p={_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, scheme, params, salt, digest = stored.split("$")
        opts = dict(kv.split("=", 1) for kv in params.split(","))
        n, r, p = 2 ** int(opts["ln"]), int(opts["r"]), int(opts["p"])
        if scheme != "scrypt" or n > 2**20 or r > 32 or p > 16:
            return False
        want = _unb64(digest)
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=n, r=r, p=p, dklen=len(want),
                             maxmem=2 * 128 * n * r * p)
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(got, want)


# ---- Status replies -----------------------------------------------------------

_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 405: "MethodNotAllowed",
            503: "ServiceUnavailable"}


def status(code: int, message: str, *, headers: list[tuple[str, str]] | None = None) -> Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": _REASONS[code], "code": code}
    return json_response(code, body, headers=headers)


def _method_not_allowed(req: Request, allowed: str) -> Response:
    return status(405, f"{req.method} is not allowed on {req.path} (use {allowed})", headers=[("Allow", allowed)])


# ---- the service --------------------------------------------------------------


class JoinService:
    def __init__(self, *, pki: ClusterPKI, token: JoinToken, passwords: NodePasswordStore, config: ClusterConfig) -> None:
        self._pki = pki
        self._token = token
        self._passwords = passwords
        self._config = config
        self._hash_slots = asyncio.Semaphore(HASH_CONCURRENCY)

    def mount(self, router: Router) -> None:
        router.add(CACERTS_PATH, self.cacerts)
        router.add(CONFIG_PATH, self.config)
        router.add(NODE_CERTS_PATH, self.node_certs)

    async def cacerts(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return _method_not_allowed(req, "GET")
        return Response(200, [("Content-Type", "application/x-pem-file")], self._pki.ca_pem)

    async def config(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return _method_not_allowed(req, "GET")
        if (denied := self._check_token(req)) is not None:
            return denied
        return Response(200, [("Content-Type", "application/json")], self._config.to_json())

    async def node_certs(self, req: Request) -> Response:
        if req.method != "POST":
            return _method_not_allowed(req, "POST")
        if (denied := self._check_token(req)) is not None:
            return denied
        node = req.headers.get(NODE_NAME_HEADER) or ""
        password = req.headers.get(NODE_PASSWORD_HEADER) or ""
        ips = [ip.strip() for ip in (req.headers.get(NODE_IP_HEADER) or "").split(",") if ip.strip()]
        try:
            check_node_name(node)
        except EdgectlError as exc:
            return status(400, f"{NODE_NAME_HEADER}: {exc}")
        if not _PASSWORD.fullmatch(password):
            return status(400, f"{NODE_PASSWORD_HEADER} must be 1-256 printable ASCII characters without spaces")
        try:
            # Before the password is stored: a refused join must not claim the node name.
            ips = check_ips(ips)
        except EdgectlError as exc:
            return status(400, f"{NODE_IP_HEADER}: {exc}")
        try:
            first = await self._check_node_password(node, password)
        except _PasswordMismatch:
            log.warning("node password mismatch", extra=fields(node=node, peer=req.peer[0] if req.peer else ""))
            return status(403, f'node password does not match for node "{node}": another machine already '
                               f"joined with this name (delete Secret {SECRET_NAMESPACE}/{secret_name(node)} "
                               "to allow a new machine to take it)")
        except Exception:  # storage trouble: retryable, and the cause goes to the log
            log.exception("node password store failed", extra=fields(node=node))
            return status(503, "cannot check the node password right now; retry")
        try:
            certs = await asyncio.to_thread(self._pki.issue_node_certs, node, node_ips=ips)
        except EdgectlError as exc:
            return status(400, str(exc))
        log.info("node joined", extra=fields(node=node, ips=",".join(ips), first_join=first))
        return Response(200, [("Content-Type", "application/json")], certs.to_json())

    def _check_token(self, req: Request) -> Response | None:
        creds = parse_basic_auth(req.headers.get("authorization"))
        if creds is None or not presented_secret_ok(creds[1], self._token):
            return status(401, "join requests need basic auth node:<token secret>; the token was missing or wrong",
                          headers=[("WWW-Authenticate", 'Basic realm="edgectl-join"')])
        return None

    async def _check_node_password(self, node: str, password: str) -> bool:
        """True on first join (hash stored now); raise _PasswordMismatch on a stranger."""
        stored = await self._passwords.get(node)
        if stored is None:
            async with self._hash_slots:
                fresh = await asyncio.to_thread(hash_password, password)
            try:
                await self._passwords.create(node, fresh)
                return True
            except NodePasswordExists:  # lost a race with a concurrent first join
                stored = await self._passwords.get(node)
                if stored is None:
                    raise
        async with self._hash_slots:
            ok = await asyncio.to_thread(verify_password, password, stored)
        if not ok:
            raise _PasswordMismatch()
        return False


class _PasswordMismatch(Exception):
    pass
