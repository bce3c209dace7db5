"""QA: `edgectl server` with bad flags fails with one line and creates nothing;
a full K10 token given back as --token works (as k3s accepts)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgectl.joinproto import parse_token
from edgectl.server.testing import ServerProcess

EDGECTL = str(Path(sys.executable).parent / "edgectl")


def run_server(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Flags given twice: the last wins, so a case can override --data-dir or --write-kubeconfig.
    return subprocess.run([EDGECTL, "server", "--disable-agent", "--data-dir", str(tmp_path / "d"),
                           "--write-kubeconfig", str(tmp_path / "kc"), "--https-listen-port", "0",
                           "--bind-address", "127.0.0.1", *args],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path,
                          env={"EDGECTL_CONFIG": "/dev/null", "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("args, message", [
    # A bad --token used to fail only after the CAs and keys were written.
    (["--token", ""], "token secret must be"),
    (["--token", "has space"], "token secret must be"),
    (["--token", "K10::server:abc"], "token CA hash must be 64 hex characters"),
    # An unset shell variable: the server filled the current directory with its state.
    (["--data-dir", ""], "--data-dir"),
    # The kubeconfig path is checked before the CA, token and database are made.
    (["--write-kubeconfig", "/proc/qa/kc.yaml"], "cannot create /proc/qa"),
    # Overlapping pod and service ranges were accepted.
    (["--service-cidr", "10.42.0.0/16"], "--service-cidr 10.42.0.0/16 overlaps --cluster-cidr 10.42.0.0/16"),
    (["--service-cidr", "10.0.0.0/8"], "overlaps --cluster-cidr"),
])
def test_bad_flags_fail_before_anything_is_created(tmp_path: Path, args: list[str], message: str) -> None:
    out = run_server(tmp_path, *args)
    assert out.returncode in (1, 2)  # 2: click's usage error
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith(("error:", "Error:"))]
    assert len(errors) == 1, out.stderr
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())
    assert not (tmp_path / "kc").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["d"])  # nothing in the working directory


def test_full_token_as_token_flag(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "s")
    srv.start()
    srv.stop()
    token_file = srv.data_dir / "token"
    token = token_file.read_text().strip()
    # The whole K10 token from <data-dir>/token is accepted and keeps the same secret.
    srv.extra_args = ("--token", token)
    srv.start()
    try:
        assert parse_token(token_file.read_text()) == parse_token(token)
    finally:
        assert srv.stop() == 0
    # A full token of another cluster (other CA hash) is refused with a clear line.
    other = "K10" + "ab" * 32 + "::server:" + parse_token(token).secret
    out = subprocess.run([*srv.command()[:-2], "--token", other], capture_output=True, text=True, timeout=30,
                         env={"EDGECTL_CONFIG": "/dev/null", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1
    assert "full token for another cluster's CA" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert parse_token(token_file.read_text()) == parse_token(token)  # untouched
