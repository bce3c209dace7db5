"""Cluster PKI: files and modes, validity, rotation, SANs, node certs, real TLS."""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import logging
import ssl
import stat
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgectl.cli import main as cli_main
from edgectl.errors import EdgectlError
from edgectl.httpd import HTTPServer, Request, Response, text_response
from edgectl.server.auth import Authenticator
from edgectl.server.pki import DEFAULT_SANS, ClusterPKI
from edgectl.server.pki.issue import issue_leaf, new_ca, now_utc, sans_of

LEAVES = ["client-admin", "client-kube-apiserver", "serving-kube-apiserver"]


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def subject(c: x509.Certificate) -> tuple[str, list[str]]:
    cn = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return str(cn), [str(a.value) for a in c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


@pytest.fixture
def tls(tmp_path: Path) -> Path:
    return tmp_path / "tls"


def test_creates_cas_and_leaves_with_private_modes(tls: Path) -> None:
    ClusterPKI.load_or_create(tls, sans=["edge-1.example", "192.0.2.10"])
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    names = {p.name for p in tls.iterdir()}
    for base in ["server-ca", "client-ca", *LEAVES]:
        assert {f"{base}.crt", f"{base}.key"} <= names
        assert stat.S_IMODE((tls / f"{base}.key").stat().st_mode) == 0o600
    server_ca, client_ca = cert(tls / "server-ca.crt"), cert(tls / "client-ca.crt")
    for ca in (server_ca, client_ca):
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        life = ca.not_valid_after_utc - ca.not_valid_before_utc
        assert dt.timedelta(days=3649) < life < dt.timedelta(days=3652)
    assert server_ca.subject != client_ca.subject
    for leaf in LEAVES:
        c = cert(tls / f"{leaf}.crt")
        assert dt.timedelta(days=364) < c.not_valid_after_utc - c.not_valid_before_utc < dt.timedelta(days=367)


def test_leaf_identities_and_issuers(tls: Path) -> None:
    ClusterPKI.load_or_create(tls, sans=[])
    server_ca, client_ca = cert(tls / "server-ca.crt"), cert(tls / "client-ca.crt")
    admin = cert(tls / "client-admin.crt")
    assert subject(admin) == ("system:admin", ["system:masters"])
    admin.verify_directly_issued_by(client_ca)
    kubelet_client = cert(tls / "client-kube-apiserver.crt")
    assert subject(kubelet_client) == ("system:kube-apiserver-kubelet-client", ["system:masters"])
    kubelet_client.verify_directly_issued_by(client_ca)
    serving = cert(tls / "serving-kube-apiserver.crt")
    serving.verify_directly_issued_by(server_ca)
    eku = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_serving_sans_are_defaults_plus_given(tls: Path) -> None:
    ClusterPKI.load_or_create(tls, sans=["Edge-1.Example", "192.0.2.10", "2001:db8::1"])
    dns, ips = sans_of(cert(tls / "serving-kube-apiserver.crt"))
    assert dns == {"edge-1.example", "localhost", "kubernetes", "kubernetes.default",
                   "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
    assert ips == {"192.0.2.10", "2001:db8::1", "127.0.0.1", "::1", "10.43.0.1"}
    assert set(DEFAULT_SANS) <= dns | ips


@pytest.mark.parametrize("bad", ["", "under_score.example", "a b", "-lead.example", "x" * 300])
def test_invalid_san_is_a_clear_error(tls: Path, bad: str) -> None:
    with pytest.raises(EdgectlError, match="invalid TLS SAN"):
        ClusterPKI.load_or_create(tls, sans=[bad])


def serials(tls: Path) -> dict[str, int]:
    return {n: cert(tls / f"{n}.crt").serial_number for n in ["server-ca", "client-ca", *LEAVES]}


def test_reload_keeps_everything(tls: Path) -> None:
    first = ClusterPKI.load_or_create(tls, sans=["edge"])
    before = serials(tls)
    again = ClusterPKI.load_or_create(tls, sans=["edge"])
    assert serials(tls) == before
    assert again.ca_pem == first.ca_pem


def test_leaves_rotate_within_90_days_and_cas_stay(tls: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = ClusterPKI.load_or_create(tls, sans=["edge"])
    before = serials(tls)
    # 270 days on, a 365-day leaf has 95 days left: no rotation yet.
    ClusterPKI.load_or_create(tls, sans=["edge"], now=now_utc() + dt.timedelta(days=270))
    assert serials(tls) == before
    caplog.set_level(logging.INFO, logger="edgectl.server.pki")
    later = now_utc() + dt.timedelta(days=280)
    again = ClusterPKI.load_or_create(tls, sans=["edge"], now=later)
    after = serials(tls)
    assert after["server-ca"] == before["server-ca"] and after["client-ca"] == before["client-ca"]
    assert all(after[n] != before[n] for n in LEAVES)
    assert again.ca_pem == first.ca_pem  # the join token stays valid
    assert cert(tls / "client-admin.crt").not_valid_after_utc > later + dt.timedelta(days=360)
    rotated = [r for r in caplog.records if r.getMessage() == "rotated certificate"]
    assert sorted(r.edgectl_fields["name"] for r in rotated) == LEAVES  # type: ignore[attr-defined]
    assert {r.edgectl_fields["reason"] for r in rotated} == {"expiring"}  # type: ignore[attr-defined]


def test_forced_rotation_and_cli(tls: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = ClusterPKI.load_or_create(tls, sans=["edge"])
    before = serials(tls)
    assert sorted(pki.rotate(force=True)) == LEAVES
    mid = serials(tls)
    assert all(mid[n] != before[n] for n in LEAVES)
    assert pki.rotate(force=False) == []
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        cli_main(["certificate", "rotate", "--data-dir", str(tls.parent)])
        cli_main(["certificate", "check", "--data-dir", str(tls.parent)])
    finally:  # the CLI installs a handler on pytest's captured stderr
        root.handlers[:], root.level = saved[0], saved[1]
    out = capsys.readouterr().out
    assert all(f"rotated {n}" in out for n in LEAVES)
    assert "server-ca" in out and "client-admin" in out and "expires" in out
    after = serials(tls)
    assert all(after[n] != mid[n] for n in LEAVES)
    # SANs survive a CLI rotation, which does not know the server's flags.
    assert "edge" in sans_of(cert(tls / "serving-kube-apiserver.crt"))[0]


def test_cli_on_missing_dir_is_one_line_error(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "edgectl"
    out = subprocess.run([str(exe), "certificate", "rotate", "--data-dir", str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "no cluster CA" in out.stderr and "Traceback" not in out.stderr


def test_san_change_reissues_only_serving(tls: Path) -> None:
    ClusterPKI.load_or_create(tls, sans=["edge"])
    before = serials(tls)
    ClusterPKI.load_or_create(tls, sans=["edge", "198.51.100.7"])
    after = serials(tls)
    assert after["serving-kube-apiserver"] != before["serving-kube-apiserver"]
    assert after["client-admin"] == before["client-admin"]
    assert "198.51.100.7" in sans_of(cert(tls / "serving-kube-apiserver.crt"))[1]


def test_partial_or_corrupt_ca_is_refused_not_replaced(tls: Path) -> None:
    ClusterPKI.load_or_create(tls, sans=[])
    original = (tls / "server-ca.crt").read_bytes()
    key = (tls / "server-ca.key").read_bytes()
    (tls / "server-ca.key").unlink()
    with pytest.raises(EdgectlError, match="refusing to create a new CA"):
        ClusterPKI.load_or_create(tls, sans=[])
    assert (tls / "server-ca.crt").read_bytes() == original
    (tls / "server-ca.key").write_bytes(key)
    (tls / "client-ca.crt").write_text("garbage")
    with pytest.raises(EdgectlError, match="client-ca.crt"):
        ClusterPKI.load_or_create(tls, sans=[])


def test_corrupt_leaf_is_reissued(tls: Path) -> None:
    ClusterPKI.load_or_create(tls, sans=[])
    (tls / "client-admin.key").write_text("not a key")
    pki = ClusterPKI.load_or_create(tls, sans=[])
    admin = cert(tls / "client-admin.crt")
    assert admin.public_key() == pki.admin.key.public_key()


def test_leaf_from_a_replaced_ca_is_reissued(tls: Path) -> None:
    ClusterPKI.load_or_create(tls, sans=[])
    foreign = new_ca("other", now=now_utc())
    stray = issue_leaf(foreign, common_name="system:admin", organizations=["system:masters"], usage="client", now=now_utc())
    (tls / "client-admin.crt").write_bytes(stray.cert_pem)
    (tls / "client-admin.key").write_bytes(stray.key_pem)
    ClusterPKI.load_or_create(tls, sans=[])
    cert(tls / "client-admin.crt").verify_directly_issued_by(cert(tls / "client-ca.crt"))


def test_node_certs(tls: Path) -> None:
    pki = ClusterPKI.load_or_create(tls, sans=[])
    nc = pki.issue_node_certs("edge-a", node_ips=["192.0.2.21", "2001:db8::21"])
    client = x509.load_pem_x509_certificate(nc.client_cert)
    assert subject(client) == ("system:node:edge-a", ["system:nodes"])
    client.verify_directly_issued_by(pki.client_ca)
    serving = x509.load_pem_x509_certificate(nc.serving_cert)
    serving.verify_directly_issued_by(cert(tls / "server-ca.crt"))
    assert sans_of(serving) == ({"edge-a", "localhost"}, {"192.0.2.21", "2001:db8::21", "127.0.0.1"})
    assert nc.server_ca + nc.client_ca == pki.ca_pem
    with pytest.raises(EdgectlError, match="invalid node name"):
        pki.issue_node_certs("Bad_Name", node_ips=[])
    with pytest.raises(EdgectlError, match="invalid node IP"):
        pki.issue_node_certs("ok", node_ips=["300.1.1.1"])


def test_ca_pem_is_server_then_client_ca(tls: Path) -> None:
    pki = ClusterPKI.load_or_create(tls, sans=[])
    assert pki.ca_pem == (tls / "server-ca.crt").read_bytes() + (tls / "client-ca.crt").read_bytes()


def test_admin_kubeconfig(tls: Path, tmp_path: Path) -> None:
    pki = ClusterPKI.load_or_create(tls, sans=[])
    path = tmp_path / "etc" / "edgectl.yaml"
    pki.write_admin_kubeconfig(path, "https://127.0.0.1:6443")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["current-context"] == "default"
    assert [c["name"] for c in doc["clusters"]] == ["default"]
    assert base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]) == pki.server_ca_pem
    assert base64.b64decode(doc["users"][0]["user"]["client-certificate-data"]) == pki.admin.cert_pem


# ---- real TLS -----------------------------------------------------------------


async def _serve(ctx: ssl.SSLContext, handler) -> tuple[HTTPServer, int]:  # type: ignore[no-untyped-def]
    server = HTTPServer(handler, ssl_context=ctx)
    _, port = await server.start("127.0.0.1", 0)
    return server, port


def _whoami(auth: Authenticator):  # type: ignore[no-untyped-def]
    async def handler(req: Request) -> Response:
        user = auth.authenticate(peercert_der=req.peercert_der, authorization=req.headers.get("authorization"))
        return text_response(200 if user else 401, user.name if user else "unauthorized")
    return handler


async def _get(port: int, ctx: ssl.SSLContext, host: str = "localhost") -> tuple[str, str | None]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host)
    alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
    writer.write(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return data.decode().rsplit("\r\n", 1)[-1], alpn


def test_server_context_verifies_optional_client_certs(tls: Path, tmp_path: Path) -> None:
    pki = ClusterPKI.load_or_create(tls, sans=[])

    def client(cert_key: tuple[Path, Path] | None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=pki.server_ca_pem.decode())
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        if cert_key:
            ctx.load_cert_chain(*cert_key)
        return ctx

    foreign = issue_leaf(new_ca("rogue", now=now_utc()), common_name="system:admin",
                         organizations=["system:masters"], usage="client", now=now_utc())
    (tmp_path / "rogue.crt").write_bytes(foreign.cert_pem)
    (tmp_path / "rogue.key").write_bytes(foreign.key_pem)

    async def run() -> None:
        server, port = await _serve(pki.server_ssl_context(), _whoami(Authenticator({}, client_ca=pki.client_ca)))
        try:
            admin = (tls / "client-admin.crt", tls / "client-admin.key")
            assert await _get(port, client(admin)) == ("system:admin", "http/1.1")
            assert await _get(port, client(None)) == ("system:anonymous", "http/1.1")
            assert (await _get(port, client(admin), host="127.0.0.1"))[0] == "system:admin"
            rogue = client((tmp_path / "rogue.crt", tmp_path / "rogue.key"))
            try:
                # With TLS 1.3 the client learns of the rejection only when reading.
                got = await _get(port, rogue)
            except (ssl.SSLError, ConnectionError) as exc:
                got = (repr(exc), None)
            assert got[0] == "" or got[1] is None  # no HTTP reply: the handshake was refused
            with pytest.raises(ssl.SSLCertVerificationError):
                await _get(port, client(admin), host="not-in-sans.example")
        finally:
            await server.close()

    asyncio.run(run())


def test_kubelet_client_context_against_node_serving_cert(tls: Path, tmp_path: Path) -> None:
    pki = ClusterPKI.load_or_create(tls, sans=[])
    nc = pki.issue_node_certs("edge-k", node_ips=["127.0.0.1"])
    (tmp_path / "kubelet.crt").write_bytes(nc.serving_cert)
    (tmp_path / "kubelet.key").write_bytes(nc.serving_key)
    kubelet = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    kubelet.load_cert_chain(tmp_path / "kubelet.crt", tmp_path / "kubelet.key")
    kubelet.load_verify_locations(cadata=nc.client_ca.decode())  # the kubelet checks the API server
    kubelet.verify_mode = ssl.CERT_REQUIRED

    async def run() -> None:
        server, port = await _serve(kubelet, _whoami(Authenticator({})))
        try:
            for host in ("edge-k", "127.0.0.1", "localhost"):
                assert (await _get(port, pki.kubelet_client_ssl_context(), host=host))[0] == \
                    "system:kube-apiserver-kubelet-client"
        finally:
            await server.close()

    asyncio.run(run())


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_real_kubectl_accepts_admin_kubeconfig(tls: Path, tmp_path: Path) -> None:
    pki = ClusterPKI.load_or_create(tls, sans=[])
    auth = Authenticator({}, client_ca=pki.client_ca)

    async def handler(req: Request) -> Response:
        user = auth.authenticate(peercert_der=req.peercert_der, authorization=req.headers.get("authorization"))
        return text_response(200, f"{user.name if user else '-'} {','.join(user.groups) if user else ''}")

    async def run() -> str:
        server, port = await _serve(pki.server_ssl_context(), handler)
        try:
            pki.write_admin_kubeconfig(tmp_path / "kc.yaml", f"https://127.0.0.1:{port}")
            proc = await asyncio.create_subprocess_exec(
                "kubectl", "--kubeconfig", str(tmp_path / "kc.yaml"), "get", "--raw", "/whoami",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
            return out.decode()
        finally:
            await server.close()

    out = asyncio.run(run())
    assert out.startswith("system:admin ") and "system:masters" in out


def test_ipaddress_sans_normalised(tls: Path) -> None:
    # "2001:DB8::0001" and "2001:db8::1" are one SAN: no reissue churn on restart.
    ClusterPKI.load_or_create(tls, sans=["2001:DB8::0001"])
    before = serials(tls)
    ClusterPKI.load_or_create(tls, sans=["2001:db8::1"])
    assert serials(tls) == before
    assert ipaddress.ip_address("2001:db8::1").compressed in sans_of(cert(tls / "serving-kube-apiserver.crt"))[1]


def test_expired_ca_is_a_clear_error_not_a_silent_new_cluster(tls: Path) -> None:
    ClusterPKI.load_or_create(tls, sans=[])
    original = (tls / "server-ca.crt").read_bytes()
    with pytest.raises(EdgectlError, match="server-ca.crt expired on .* not replaced automatically"):
        ClusterPKI.load_or_create(tls, sans=[], now=now_utc() + dt.timedelta(days=3660))
    assert (tls / "server-ca.crt").read_bytes() == original


def test_ca_close_to_expiry_warns(tls: Path, caplog: pytest.LogCaptureFixture) -> None:
    ClusterPKI.load_or_create(tls, sans=[])
    caplog.set_level(logging.WARNING, logger="edgectl.server.pki")
    pki = ClusterPKI.load_or_create(tls, sans=[], now=now_utc() + dt.timedelta(days=3600))
    assert any(r.getMessage() == "certificate authority expires soon" for r in caplog.records)
    # Leaves reissued then cannot outlive their CA.
    assert pki.admin.cert.not_valid_after_utc <= pki.client_ca.not_valid_after_utc


def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EdgectlError, match="cannot use"):
        ClusterPKI.load_or_create(blocker / "tls", sans=[])
    pki = ClusterPKI.load_or_create(tmp_path / "tls", sans=[])
    with pytest.raises(EdgectlError, match="cannot use"):
        pki.write_admin_kubeconfig(blocker / "kubeconfig", "https://127.0.0.1:6443")
