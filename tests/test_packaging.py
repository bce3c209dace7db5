"""Installed import names live under edgectl.; no generic top-level names."""
from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_components_import_under_edgectl() -> None:
    for name in ("tunnel", "lb", "flannel", "netpol", "server", "agent", "lab"):
        mod = importlib.import_module(f"edgectl.{name}")
        assert Path(mod.__file__).resolve().parent == REPO / name


def test_no_generic_top_level_names() -> None:
    # Run outside the repo so the working directory cannot shadow anything.
    code = "import importlib.util as u; print([n for n in ('server','agent','tunnel','lab','common') if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script() -> None:
    exe = Path(sys.executable).parent / "edgectl"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert "edgectl" in out.stdout
