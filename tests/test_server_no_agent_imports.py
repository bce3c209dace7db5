"""``edgectl server --disable-agent`` never imports agent code: the embedded
agent is imported only on the path that starts it. Checked on a real server
process whose entry point records ``sys.modules`` when it exits, so every
module loaded at start-up and while serving counts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edgectl.server.testing import ServerProcess

EDGECTL = str(Path(sys.executable).parent / "edgectl")
# The console script's two lines, plus an exit hook that writes sys.modules.
_ENTRY = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from edgectl.cli import main
sys.exit(main())
"""


class ModuleRecordingServer(ServerProcess):
    def command(self) -> list[str]:
        cmd = super().command()  # cmd[0] is the edgectl console script
        return [sys.executable, "-c", _ENTRY, str(self.workdir / "modules.json"), *cmd[1:]]


def test_disable_agent_server_imports_no_agent_code(tmp_path: Path) -> None:
    srv = ModuleRecordingServer(tmp_path / "srv")
    try:
        srv.start()
        # Exercise the API a little so lazily imported request paths load too.
        assert srv.json("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c"}})[0] == 201
        assert srv.json("GET", "/api/v1/nodes")[0] == 200
    finally:
        assert srv.stop() == 0
    modules = set(json.loads((srv.workdir / "modules.json").read_text()))
    # The record itself works: the server's own modules and the node flags are in it.
    assert {"edgectl.server.cli", "edgectl.server.app", "edgectl.nodeflags"} <= modules, sorted(m for m in modules if m.startswith('edgectl'))
    agent = sorted(m for m in modules if m == "edgectl.agent" or m.startswith("edgectl.agent."))
    assert agent == [], f"--disable-agent imported agent modules: {agent}"


def test_embedded_agent_flags_still_validated(tmp_path: Path) -> None:
    """Without --disable-agent the lazily imported agent code still checks the node flags up front."""
    out = subprocess.run([EDGECTL, "server", "--data-dir", str(tmp_path / "d"), "--write-kubeconfig", str(tmp_path / "kc"),
                          "--bind-address", "127.0.0.1", "--https-listen-port", "0"],
                         capture_output=True, text=True, timeout=30,
                         env={"EDGECTL_CONFIG": os.devnull, "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0
    assert "--https-listen-port 0 cannot be combined with the embedded agent" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was written
