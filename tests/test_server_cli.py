"""``edgectl server`` as a command: files it writes, readiness log, clean SIGTERM,
and one-line errors for bad flags."""
from __future__ import annotations

import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgectl.joinproto import parse_token
from edgectl.server.testing import ServerProcess

EDGECTL = str(Path(sys.executable).parent / "edgectl")


def test_start_files_readiness_and_sigterm(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "s")
    try:
        srv.start()
        assert stat.S_IMODE(srv.kubeconfig.stat().st_mode) == 0o600
        token = parse_token((srv.data_dir / "token").read_text().strip())
        assert len(token.ca_hash) == 64 and token.secret
        assert stat.S_IMODE((srv.data_dir / "token").stat().st_mode) == 0o600
        assert "edgectl server ready" in srv.log_path.read_text()
    finally:
        code = srv.stop()
    assert code == 0
    log = srv.log_path.read_text()
    assert "edgectl server stopped" in log and "Traceback" not in log
    # A restart keeps the token and the CA (agents keep working).
    srv.start()
    try:
        assert parse_token((srv.data_dir / "token").read_text().strip()) == token
    finally:
        srv.stop()


@pytest.mark.parametrize("args,message", [
    (["--service-cidr", "10.43.0.0/33"], "--service-cidr"),
    (["--cluster-cidr", "nonsense"], "--cluster-cidr"),
    (["--bind-address", "example.com"], "--bind-address"),
    (["--tls-san", "bad san!"], "invalid TLS SAN"),
])
def test_bad_flags_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    out = subprocess.run([EDGECTL, "server", "--disable-agent", "--data-dir", str(tmp_path / "d"),
                          "--write-kubeconfig", str(tmp_path / "kc"), "--https-listen-port", "0",
                          "--bind-address", "127.0.0.1", *args],
                         capture_output=True, text=True, timeout=30, env={"EDGECTL_CONFIG": "/dev/null", "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        out = subprocess.run([EDGECTL, "server", "--disable-agent", "--data-dir", str(tmp_path / "d"),
                              "--write-kubeconfig", str(tmp_path / "kc"), "--bind-address", "127.0.0.1",
                              "--https-listen-port", str(busy.getsockname()[1])],
                             capture_output=True, text=True, timeout=30, env={"EDGECTL_CONFIG": "/dev/null", "PATH": "/usr/bin:/bin"})
    finally:
        busy.close()
    assert out.returncode != 0 and "cannot listen on" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_second_server_on_same_data_dir_is_refused(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "s")
    try:
        srv.start()
        out = subprocess.run([EDGECTL, "server", "--disable-agent", "--data-dir", str(srv.data_dir),
                              "--write-kubeconfig", str(tmp_path / "kc2"), "--bind-address", "127.0.0.1",
                              "--https-listen-port", "0"],
                             capture_output=True, text=True, timeout=30, env={"EDGECTL_CONFIG": "/dev/null", "PATH": "/usr/bin:/bin"})
        assert out.returncode != 0 and "cannot open the datastore" in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert srv.json("GET", "/api/v1/namespaces")[0] == 200  # the first one is unharmed
    finally:
        srv.stop()
