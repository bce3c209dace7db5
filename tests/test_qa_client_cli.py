"""QA: `edgectl tunnel status` and `edgectl certificate check|rotate` with broken
inputs: one `error:` line and a non-zero exit, never a traceback."""
from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgectl.cli import main
from edgectl.server.testing import ServerProcess


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("qa-cli"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def kubeconfig(tmp_path: Path, text: str | bytes) -> str:
    p = tmp_path / "kc.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(p)


def test_tunnel_status_broken_kubeconfigs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        # UnicodeDecodeError escaped as a traceback.
        (b"\xff\xfe\x00garbage", "not a kubeconfig (not UTF-8 text)"),
        # A YAML error printed PyYAML's multi-line message.
        ("clusters: [unclosed\n", "not a kubeconfig: invalid YAML (line 2, column 1)"),
        ("current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
         "clusters: [{name: c, cluster: {server: https://127.0.0.1:1}}]\nusers: [{name: u, user: x}]\n",
         "user 'u' must be a mapping"),
        ("current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\nclusters: [{name: c, cluster: {server: [1]}}]\n",
         "cluster has no server URL"),
        ("current-context: a\ncontexts: {a: b}\n", "no context named 'a'"),
    ]
    for text, fragment in cases:
        code, _, err = run_cli(["tunnel", "status", "--kubeconfig", kubeconfig(tmp_path, text)], capsys)
        assert code == 1
        assert fragment in error_line(err), err


def test_tunnel_status_bad_server_and_credentials(srv: ServerProcess, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    kc = str(srv.kubeconfig)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"\xff\x00 not pem")
    text_not_pem = tmp_path / "text.pem"
    text_not_pem.write_text("hello\n")
    bad_key = kubeconfig(tmp_path, srv.kubeconfig.read_text().replace(
        _user_field(srv, "client-key-data"), base64.b64encode(b"not a key").decode()))
    cases = [
        # urllib's "unknown url type" ValueError escaped as a traceback.
        (["--server", "notaurl"], "server URL 'notaurl': expected https://HOST:PORT"),
        (["--server", "https://[zz]:6443"], "invalid host or port"),
        (["--server", "https://127.0.0.1:99999"], "invalid host or port"),
        # A 401 printed the raw Status JSON; now its message and a hint.
        (["--token", "wrong"], "HTTP 401: Unauthorized (check the credentials"),
        (["--certificate-authority", str(garbage)], "not a PEM file (not UTF-8 text)"),
        (["--certificate-authority", str(text_not_pem)], "unusable TLS credentials"),
        (["--server", "https://127.0.0.1:1"], "cannot reach https://127.0.0.1:1"),
    ]
    for extra, fragment in cases:
        code, _, err = run_cli(["tunnel", "status", "--kubeconfig", kc, *extra], capsys)
        assert code == 1
        assert fragment in error_line(err), (extra, err)
    code, _, err = run_cli(["tunnel", "status", "--kubeconfig", bad_key], capsys)
    assert code == 1 and "unusable TLS credentials" in error_line(err)
    # And the real thing still works.
    code, out, _ = run_cli(["tunnel", "status", "--kubeconfig", kc], capsys)
    assert code == 0 and "no tunnel sessions" in out


def _user_field(srv: ServerProcess, key: str) -> str:
    for line in srv.kubeconfig.read_text().splitlines():
        if line.strip().startswith(f"{key}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(key)


def test_certificate_check_and_rotate_with_broken_files(srv: ServerProcess, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(srv.data_dir, data, ignore=shutil.ignore_patterns("db"))
    tls = data / "tls"
    (tls / "serving-kube-apiserver.crt").write_bytes(b"\x00garbage")
    (tls / "client-admin.key").unlink()
    # `check` used to drop both from its list silently and exit 0.
    code, out, err = run_cli(["certificate", "check", "--data-dir", str(data)], capsys)
    assert code == 1
    assert "serving-kube-apiserver   UNUSABLE:" in out and "client-admin             MISSING" in out
    assert "2 certificate(s) need attention" in error_line(err)
    # `rotate` replaced them without saying so.
    code, out, _ = run_cli(["certificate", "rotate", "--data-dir", str(data)], capsys)
    assert code == 0
    assert "rotated serving-kube-apiserver (the old files were unusable)" in out
    assert "created client-admin (it was missing)" in out
    code, out, _ = run_cli(["certificate", "check", "--data-dir", str(data)], capsys)
    assert code == 0 and "UNUSABLE" not in out and "MISSING" not in out
    # Wrong data dirs: one line, nothing created.
    for bad in (tmp_path / "nope", tmp_path):
        for verb in ("check", "rotate"):
            code, _, err = run_cli(["certificate", verb, "--data-dir", str(bad)], capsys)
            assert code == 1 and "no cluster CA" in error_line(err)
    assert not (tmp_path / "nope").exists()
    # A corrupt CA key is named, not reissued.
    (tls / "server-ca.key").write_text("garbage\n")
    code, _, err = run_cli(["certificate", "rotate", "--data-dir", str(data)], capsys)
    assert code == 1 and "server-ca.key: not an unencrypted PEM private key" in error_line(err)
