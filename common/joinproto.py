"""The join protocol shared by server and agent: token format, paths, headers.

Both sides import this module, so the wire contract is written down once.

Token: ``K10<sha256 hex of the CA bundle served at /cacerts>::server:<secret>``.
The hash pins the cluster CA: an agent fetches ``/cacerts`` without trusting
anything, checks the bytes against the hash, and only then trusts them.

Join requests authenticate with HTTP basic auth ``node:<secret>`` (as k3s
does). Basic auth is deliberately *not* a Kubernetes credential, so the API
authenticator treats it as anonymous and the join handlers do their own check.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import EdgectlError

TOKEN_PREFIX = "K10"
TOKEN_USER = "server"
JOIN_USER = "node"  # basic-auth user name on join requests

CACERTS_PATH = "/cacerts"
CONFIG_PATH = "/v1-edge/config"
NODE_CERTS_PATH = "/v1-edge/node-certs"

NODE_NAME_HEADER = "Edgectl-Node-Name"
NODE_PASSWORD_HEADER = "Edgectl-Node-Password"
NODE_IP_HEADER = "Edgectl-Node-IP"  # comma-separated

_HEX64 = re.compile(r"[0-9a-f]{64}")
# Secrets travel in basic auth and in a file: keep them to a boring alphabet.
_SECRET = re.compile(r"[A-Za-z0-9._~+/=-]{1,256}")


class TokenError(EdgectlError):
    """A token that cannot be used; the message says what is wrong with it."""


def ca_hash(ca_pem: bytes) -> str:
    """The hex sha256 of the exact bytes served at /cacerts."""
    return hashlib.sha256(ca_pem).hexdigest()


@dataclass(frozen=True)
class JoinToken:
    ca_hash: str
    secret: str = field(repr=False)
    user: str = TOKEN_USER

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}{self.ca_hash}::{self.user}:{self.secret}"

    def matches_ca(self, ca_pem: bytes) -> bool:
        return hmac.compare_digest(self.ca_hash, ca_hash(ca_pem))


def check_secret(secret: str) -> str:
    if not _SECRET.fullmatch(secret):
        raise TokenError("token secret must be 1-256 characters of A-Z a-z 0-9 . _ ~ + / = -")
    return secret


def parse_token(text: str) -> JoinToken:
    """Parse a full token; every malformed shape gets its own message."""
    text = text.strip()
    if not text:
        raise TokenError("token is empty")
    if not text.startswith(TOKEN_PREFIX):
        raise TokenError(f"token must start with {TOKEN_PREFIX!r} (format K10<sha256 of CA>::server:<secret>)")
    head, sep, creds = text[len(TOKEN_PREFIX):].partition("::")
    if not sep:
        raise TokenError("token has no '::' after the CA hash (format K10<sha256 of CA>::server:<secret>)")
    if len(head) != 64:
        raise TokenError(f"token CA hash must be 64 hex characters, got {len(head)}")
    if not _HEX64.fullmatch(head.lower()):
        raise TokenError("token CA hash must be hexadecimal")
    user, sep, secret = creds.partition(":")
    if not sep or not user:
        raise TokenError("token must end with <user>:<secret> after '::'")
    if not secret:
        raise TokenError("token secret is empty")
    return JoinToken(ca_hash=head.lower(), secret=check_secret(secret), user=user)


def secret_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison of token secrets."""
    return hmac.compare_digest(presented.encode(), expected.encode())


def basic_auth(secret: str) -> str:
    """The Authorization header value a joining node sends."""
    return "Basic " + base64.b64encode(f"{JOIN_USER}:{secret}".encode()).decode()


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """(user, password) from a basic Authorization header, or None if absent/garbled."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def split_pem_bundle(pem: bytes) -> list[bytes]:
    """Split concatenated PEM certificates, keeping each block's exact bytes."""
    end = b"-----END CERTIFICATE-----"
    blocks = []
    for part in pem.split(end)[:-1]:
        start = part.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            blocks.append(part[start:] + end + b"\n")
    return blocks


# wire key -> ClusterConfig attribute (kebab-case, like the flags)
_CONFIG_KEYS = {
    "cluster-cidr": "cluster_cidr",
    "service-cidr": "service_cidr",
    "cluster-dns": "cluster_dns",
    "cluster-domain": "cluster_domain",
    "flannel-backend": "flannel_backend",
    "egress-selector-mode": "egress_selector_mode",
}


@dataclass(frozen=True)
class ClusterConfig:
    """What /v1-edge/config returns: settings every node must agree on."""

    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    cluster_dns: str = "10.43.0.10"
    cluster_domain: str = "cluster.local"
    flannel_backend: str = "vxlan"
    egress_selector_mode: str = "agent"
    servers: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {key: getattr(self, attr) for key, attr in _CONFIG_KEYS.items()}
        doc["servers"] = list(self.servers)
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_json(cls, body: bytes) -> ClusterConfig:
        doc = _json_object(body, what="server config")
        kwargs: dict[str, Any] = {}
        for key, attr in _CONFIG_KEYS.items():
            if key in doc:
                if not isinstance(doc[key], str):
                    raise EdgectlError(f"server config: {key} must be a string")
                kwargs[attr] = doc[key]
        servers = doc.get("servers", [])
        if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
            raise EdgectlError("server config: servers must be a list of URLs")
        return cls(servers=tuple(servers), **kwargs)


def _json_object(body: bytes, *, what: str) -> dict[str, Any]:
    """A server reply that must be a JSON object; anything else is a one-line EdgectlError naming ``what``."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EdgectlError(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EdgectlError(f"{what} is not a JSON object")
    return doc


_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def check_node_name(name: str) -> str:
    """Node names are DNS-1123 subdomains (as upstream); they end up in cert CNs."""
    if not name:
        raise EdgectlError("node name is empty")
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        raise EdgectlError(
            f"invalid node name {name!r}: must be a lowercase DNS-1123 subdomain "
            "(a-z, 0-9, '-' and '.', starting and ending with a letter or digit, at most 253 characters)"
        )
    return name


_BUNDLE_KEYS = ("client-cert", "client-key", "serving-cert", "serving-key", "server-ca", "client-ca")


@dataclass(frozen=True)
class NodeCerts:
    """PEMs a node receives at join: its client identity (system:node:<name>),
    its kubelet serving cert, and both CAs (server CA to trust the API,
    client CA to check the API server when it calls the kubelet)."""

    client_cert: bytes
    client_key: bytes = field(repr=False)
    serving_cert: bytes
    serving_key: bytes = field(repr=False)
    server_ca: bytes
    client_ca: bytes

    def to_json(self) -> bytes:
        values = (self.client_cert, self.client_key, self.serving_cert, self.serving_key, self.server_ca, self.client_ca)
        return json.dumps({k: v.decode() for k, v in zip(_BUNDLE_KEYS, values)}).encode()

    @classmethod
    def from_json(cls, body: bytes) -> NodeCerts:
        doc = _json_object(body, what="node certificate reply")
        values = []
        for key in _BUNDLE_KEYS:
            value = doc.get(key)
            if not isinstance(value, str) or "-----BEGIN" not in value:
                raise EdgectlError(f"node certificate reply: {key} is missing or not PEM")
            values.append(value.encode())
        return cls(*values)
