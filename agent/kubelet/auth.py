"""Who may call the kubelet API: only the API server's kubelet-client identity.

TLS verifies the chain against the cluster client CA (``CERT_OPTIONAL``, so a
caller without a certificate gets a readable 401 instead of a handshake
alert); the handler then checks the subject. Node and admin certificates are
signed by the same CA, so the CA check alone would let any node exec into
every other node's pods.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

KUBELET_CLIENT_CN = "system:kube-apiserver-kubelet-client"
KUBELET_CLIENT_ORG = "system:masters"


@dataclass(frozen=True)
class Denied:
    status: int  # 401 no identity, 403 wrong identity
    message: str


def server_ssl_context(*, cert_file: Path, key_file: Path, client_ca_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    ctx.load_verify_locations(cafile=str(client_ca_file))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def check_client(peercert_der: bytes | None, *, common_name: str = KUBELET_CLIENT_CN,
                 organization: str | None = KUBELET_CLIENT_ORG) -> Denied | None:
    """None when the (already chain-verified) certificate is the allowed one."""
    if not peercert_der:
        return Denied(401, "Unauthorized: a client certificate is required")
    try:
        subject = x509.load_der_x509_certificate(peercert_der).subject
    except ValueError:
        return Denied(401, "Unauthorized: unreadable client certificate")
    cns = [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if cns != [common_name] or (organization is not None and organization not in orgs):
        who = cns[0] if cns else "<no CN>"
        return Denied(403, f"Forbidden: user {who!r} may not use the kubelet API (only {common_name!r})")
    return None
