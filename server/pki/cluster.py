"""The cluster's certificates on disk: two CAs, three server-side leaves.

Layout of ``tls_dir`` (k3s names)::

    server-ca.crt/.key            signs serving certs (API server, kubelets)
    client-ca.crt/.key            signs client identities (admin, nodes, ...)
    serving-kube-apiserver.*      the API's serving cert
    client-admin.*                CN=system:admin, O=system:masters
    client-kube-apiserver.*       CN=system:kube-apiserver-kubelet-client, O=system:masters

``ca_pem`` (served at /cacerts and hashed into the join token) is the server
CA PEM followed by the client CA PEM, in that order. CAs last 10 years and are
never replaced automatically (that would orphan every node); leaves last a
year and are reissued at load when within 90 days of expiry.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import re
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgectl.errors import EdgectlError
from edgectl.joinproto import NodeCerts, check_node_name
from edgectl.log import fields

from . import issue
from .files import write_atomic
from .issue import CertKey, Usage

log = logging.getLogger(__name__)

DEFAULT_SANS = (
    "localhost", "127.0.0.1", "::1", "kubernetes", "kubernetes.default",
    "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "10.43.0.1",
)
_DNS_SAN = re.compile(r"(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*")


@dataclass(frozen=True)
class LeafSpec:
    ca: str  # "server" or "client"
    common_name: str
    organizations: tuple[str, ...]
    usage: Usage


SERVING = "serving-kube-apiserver"
ADMIN = "client-admin"
KUBELET_CLIENT = "client-kube-apiserver"
LEAVES: dict[str, LeafSpec] = {
    SERVING: LeafSpec("server", "kube-apiserver", (), "server"),
    ADMIN: LeafSpec("client", "system:admin", ("system:masters",), "client"),
    KUBELET_CLIENT: LeafSpec("client", "system:kube-apiserver-kubelet-client", ("system:masters",), "client"),
}


def split_sans(sans: Sequence[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IPs) from user SANs, defaults appended; bad entries are errors."""
    dns: list[str] = []
    ips: list[str] = []
    for raw in [*sans, *DEFAULT_SANS]:
        san = raw.strip()
        try:
            ips.append(str(ipaddress.ip_address(san)))
            continue
        except ValueError:
            pass
        if len(san) > 253 or not _DNS_SAN.fullmatch(san):
            raise EdgectlError(f"invalid TLS SAN {raw!r}: must be an IP address or a DNS name")
        dns.append(san.lower())
    return list(dict.fromkeys(dns)), list(dict.fromkeys(ips))


class ClusterPKI:
    """Loads or creates the cluster certificates; mints node certificates."""

    def __init__(self, tls_dir: Path, cas: dict[str, CertKey], leaves: dict[str, CertKey], sans: tuple[list[str], list[str]]):
        self.tls_dir = tls_dir
        self._cas = cas
        self._leaves = leaves
        self._sans = sans
        # Leaves whose files exist but cannot be used (garbage, wrong key): name -> why.
        self.unusable: dict[str, str] = {}

    # ---- construction -------------------------------------------------

    @classmethod
    def load_or_create(cls, tls_dir: Path, *, sans: Sequence[str], now: dt.datetime | None = None) -> ClusterPKI:
        """Create what is missing, reissue leaves that are expiring, invalid, or
        whose SANs differ from ``sans`` (+ defaults)."""
        now = now or issue.now_utc()
        wanted = split_sans(sans)
        with _os_errors(tls_dir):
            tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tls_dir.chmod(0o700)
            cas = {name: _load_or_create_ca(tls_dir, name, now=now) for name in ("server", "client")}
            pki = cls(tls_dir, cas, {}, wanted)
            pki._ensure_leaves(force=False, now=now)
        return pki

    @classmethod
    def load(cls, tls_dir: Path, *, now: dt.datetime | None = None, ensure: bool = True) -> ClusterPKI:
        """Open an existing PKI, keeping the serving cert's SANs. With
        ``ensure=False`` nothing is reissued (for inspection and forced rotation)."""
        missing = [f for f in ("server-ca.crt", "client-ca.crt") if not (tls_dir / f).exists()]
        if missing:
            raise EdgectlError(f"no cluster CA ({', '.join(missing)}) under {tls_dir}: start the server once to create it")
        now = now or issue.now_utc()
        with _os_errors(tls_dir):
            cas = {name: _load_or_create_ca(tls_dir, name, now=now) for name in ("server", "client")}
            problems: dict[str, str] = {}
            leaves = {name: pair for name in LEAVES if (pair := _read_pair(tls_dir, name, problems)) is not None}
            serving = leaves.get(SERVING)
            dns, ips = issue.sans_of(serving.cert) if serving else (set(), set())
            pki = cls(tls_dir, cas, leaves, split_sans(sorted(dns) + sorted(ips)))
            pki.unusable = problems
            if ensure:
                pki._ensure_leaves(force=False, now=now)
        return pki

    # ---- what others use ---------------------------------------------

    @property
    def server_ca_pem(self) -> bytes:
        return self._cas["server"].cert_pem

    @property
    def client_ca_pem(self) -> bytes:
        return self._cas["client"].cert_pem

    @property
    def ca_pem(self) -> bytes:
        """Served at /cacerts and hashed into the token: server CA, then client CA."""
        return self.server_ca_pem + self.client_ca_pem

    @property
    def client_ca(self) -> x509.Certificate:
        return self._cas["client"].cert

    @property
    def admin(self) -> CertKey:
        return self._leaves[ADMIN]

    def path(self, name: str, suffix: str = ".crt") -> Path:
        return self.tls_dir / f"{name}{suffix}"

    def server_ssl_context(self) -> ssl.SSLContext:
        """API serving context: client certs optional but verified against the client CA."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.path(SERVING), self.path(SERVING, ".key"))
        ctx.load_verify_locations(cadata=self.client_ca_pem.decode())
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def kubelet_client_ssl_context(self) -> ssl.SSLContext:
        """For API server -> kubelet calls: our client cert, kubelets verified by the server CA."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.path(KUBELET_CLIENT), self.path(KUBELET_CLIENT, ".key"))
        ctx.load_verify_locations(cadata=self.server_ca_pem.decode())
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def issue_node_certs(self, node_name: str, *, node_ips: Sequence[str], now: dt.datetime | None = None) -> NodeCerts:
        """A node's client identity (system:node:<name>) and kubelet serving cert."""
        check_node_name(node_name)
        ips = check_ips(node_ips)
        now = now or issue.now_utc()
        client = issue.issue_leaf(
            self._cas["client"], common_name=f"system:node:{node_name}",
            organizations=("system:nodes",), usage="client", now=now,
        )
        serving = issue.issue_leaf(
            self._cas["server"], common_name=node_name, usage="server",
            dns_names=[node_name, "localhost"], ips=[*ips, "127.0.0.1"], now=now,
        )
        log.info("issued node certificates", extra=fields(node=node_name, ips=",".join(ips)))
        return NodeCerts(
            client_cert=client.cert_pem, client_key=client.key_pem,
            serving_cert=serving.cert_pem, serving_key=serving.key_pem,
            server_ca=self.server_ca_pem, client_ca=self.client_ca_pem,
        )

    def rotate(self, *, force: bool, now: dt.datetime | None = None) -> list[str]:
        """Reissue leaves (all if ``force``, else only those that need it); CAs stay."""
        with _os_errors(self.tls_dir):
            return self._ensure_leaves(force=force, now=now or issue.now_utc())

    def write_admin_kubeconfig(self, path: Path, server_url: str) -> None:
        from edgectl.server.kubeconfig import render_kubeconfig, write_kubeconfig

        text = render_kubeconfig(
            server_url=server_url, ca_pem=self.server_ca_pem,
            cert_pem=self.admin.cert_pem, key_pem=self.admin.key_pem,
        )
        with _os_errors(path):
            write_kubeconfig(path, text)

    def expiries(self) -> dict[str, dt.datetime]:
        """Not-after of every cert, CAs included (for `certificate check`/metrics)."""
        out = {f"{n}-ca": ck.cert.not_valid_after_utc for n, ck in self._cas.items()}
        out.update({n: ck.cert.not_valid_after_utc for n, ck in self._leaves.items()})
        return out

    # ---- internals -----------------------------------------------------

    def _ensure_leaves(self, *, force: bool, now: dt.datetime) -> list[str]:
        rotated = []
        for name, spec in LEAVES.items():
            current = self._leaves.get(name)
            if current is None and name not in self.unusable:
                current = _read_pair(self.tls_dir, name, self.unusable)
            broken = name in self.unusable
            reason = "unusable" if broken else "forced" if force else self._why_reissue(name, spec, current, now=now)
            if reason is None and current is not None:
                self._leaves[name] = current
                continue
            dns, ips = self._sans if spec.usage == "server" else ([], [])
            fresh = issue.issue_leaf(
                self._cas[spec.ca], common_name=spec.common_name, organizations=spec.organizations,
                usage=spec.usage, dns_names=dns, ips=ips, now=now,
            )
            _write_pair(self.tls_dir, name, fresh)
            self._leaves[name] = fresh
            why = self.unusable.pop(name, None)
            if current is not None or broken:  # first creation is not a rotation; replacing garbage is
                rotated.append(name)
                if broken:
                    log.warning("replaced an unusable certificate", extra=fields(name=name, error=why))
                log.info("rotated certificate", extra=fields(name=name, reason=reason,
                                                            not_after=fresh.cert.not_valid_after_utc.isoformat()))
        return rotated

    def _why_reissue(self, name: str, spec: LeafSpec, current: CertKey | None, *, now: dt.datetime) -> str | None:
        if current is None:
            return "missing"
        if not issue.issued_by(current.cert, self._cas[spec.ca].cert):
            return "issuer-changed"
        if issue.expires_within(current.cert, issue.ROTATE_WITHIN, now=now):
            return "expiring"
        if spec.usage == "server":
            dns, ips = issue.sans_of(current.cert)
            if dns != set(self._sans[0]) or ips != set(self._sans[1]):
                return "sans-changed"
        return None


@contextlib.contextmanager
def _os_errors(where: Path) -> Iterator[None]:
    """Disk trouble (read-only, permissions, full) as one clear line."""
    try:
        yield
    except OSError as exc:
        raise EdgectlError(f"cannot use {where}: {exc.strerror or exc} ({exc.filename or where})") from None


def check_ips(node_ips: Sequence[str]) -> list[str]:
    out = []
    for ip in node_ips:
        try:
            out.append(str(ipaddress.ip_address(ip.strip())))
        except ValueError:
            raise EdgectlError(f"invalid node IP {ip!r}") from None
    return list(dict.fromkeys(out))


def _load_or_create_ca(tls_dir: Path, kind: str, *, now: dt.datetime) -> CertKey:
    name = f"{kind}-ca"
    crt, key = tls_dir / f"{name}.crt", tls_dir / f"{name}.key"
    if not crt.exists() and not key.exists():
        ca = issue.new_ca(f"edgectl-{name}@{int(now.timestamp())}", now=now)
        _write_pair(tls_dir, name, ca)
        log.info("created certificate authority", extra=fields(name=name))
        return ca
    if not (crt.exists() and key.exists()):
        have, missing = (crt, key) if crt.exists() else (key, crt)
        raise EdgectlError(f"found {have} but not {missing}; refusing to create a new CA over a partial one")
    pair = _parse_pair(crt, key)
    try:
        is_ca = pair.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise EdgectlError(f"{crt} is not a CA certificate")
    not_after = pair.cert.not_valid_after_utc
    if not_after <= now:
        raise EdgectlError(f"{crt} expired on {not_after:%Y-%m-%d}; every cluster certificate depends on it, "
                           "so it is not replaced automatically (move the tls directory away to start a new cluster)")
    if issue.expires_within(pair.cert, issue.ROTATE_WITHIN, now=now):
        # Leaves are capped at the CA's expiry, so rotation cannot help here.
        log.warning("certificate authority expires soon", extra=fields(name=name, not_after=not_after.isoformat()))
    return pair


def _read_pair(tls_dir: Path, name: str, problems: dict[str, str]) -> CertKey | None:
    """A leaf from disk, or None if missing or unreadable (recorded in ``problems``;
    whoever loaded it decides whether to reissue or to report)."""
    crt, key = tls_dir / f"{name}.crt", tls_dir / f"{name}.key"
    if not (crt.exists() and key.exists()):
        return None
    try:
        return _parse_pair(crt, key)
    except EdgectlError as exc:
        problems[name] = str(exc)
        return None


def _parse_pair(crt: Path, key: Path) -> CertKey:
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
    except ValueError as exc:
        raise EdgectlError(f"{crt}: not a PEM certificate ({exc})") from None
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise EdgectlError(f"{key}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey) or private.public_key() != cert.public_key():
        raise EdgectlError(f"{key} is not the EC (P-256) private key of {crt}")
    return CertKey(cert, private)


def _write_pair(tls_dir: Path, name: str, pair: CertKey) -> None:
    # Key first: a crash between the two leaves a mismatch we detect and reissue.
    write_atomic(tls_dir / f"{name}.key", pair.key_pem, mode=0o600)
    write_atomic(tls_dir / f"{name}.crt", pair.cert_pem, mode=0o644)
