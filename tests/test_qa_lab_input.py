"""QA: hostile and clumsy input to `edgectl lab` gets one clear line, never a traceback.

Each case runs the real CLI entry (`edgectl.cli.main`) in-process, so what is
checked is exactly what a user sees on stderr and the exit status.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from edgectl.cli import main
from edgectl.lab import LabError

LAUGHS = "".join(
    f"      {c}: &{c} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['x'] * 9)}]\n"
    for p, c in zip(["", "a", "b", "c", "d", "e", "f", "g"], "abcdefgh")
)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def one_clear_line(out: str) -> str:
    assert "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    return lines[0]


@pytest.mark.parametrize("content, fragment", [
    # Unknown/python tags: PyYAML's ConstructorError escaped as a traceback.
    ('!!python/object:os.system ["echo pwned"]\n', "could not determine a constructor"),
    # A recursive alias made the line-number walk recurse until RecursionError.
    ("a: &a [*a]\n", "recursive YAML"),
    # Nesting deeper than the YAML composer's recursion limit.
    ("[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    # Binary garbage and NUL bytes.
    (b"\xff\xfe\x00garbage", "not a UTF-8 text file (byte 0xff at offset 0)"),
    ("name: x\x00\n", "contains NUL bytes"),
    # An alias bomb in config: values are scalars or lists of scalars; it used to
    # pass validation and then hang writing the node's config.yaml.
    ("name: x\nnetworks: {a: {}}\nnodes:\n  n:\n    kind: server\n    networks: [a]\n    config:\n" + LAUGHS,
     "nodes.n.config.b: config values are scalars or lists of scalars"),
])
def test_lab_up_rejects_hostile_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     content: str | bytes, fragment: str) -> None:
    f = tmp_path / "topo.yaml"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, out = run_cli(["lab", "up", str(f)], capsys)
    assert code == 2
    line = one_clear_line(out)
    assert line.startswith(f"error: {f}"), line
    assert fragment in line


def test_alias_bomb_is_walked_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """9^8 leaves behind aliases: the line map walks each YAML node once, so the
    error (an unknown key) comes at once instead of after minutes."""
    f = tmp_path / "topo.yaml"
    f.write_text("x:\n" + LAUGHS.replace("      ", "  "))
    code, out = run_cli(["lab", "up", str(f)], capsys)
    assert code == 2
    assert "unknown key 'x'" in one_clear_line(out)


def test_lab_up_rejects_huge_and_endless_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_text("#" * (2 * 1024 * 1024))
    for path in (str(huge), "/dev/zero"):
        code, out = run_cli(["lab", "up", path], capsys)
        assert code == 2
        assert "larger than 1024 KiB" in one_clear_line(out)


def test_lab_up_empty_name_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--name ""` used to be ignored silently (the file's name was used)."""
    f = tmp_path / "topo.yaml"
    f.write_text("name: qa-x\nnetworks: {a: {}}\nnodes: {n: {networks: [a]}}\n")
    code, out = run_cli(["lab", "up", "--name", "", str(f)], capsys)
    assert code == 2
    assert "lab name must be a non-empty string" in one_clear_line(out)


@pytest.mark.parametrize("argv, fragment", [
    (["lab", "probe", "a", "b:80", "--timeout", "-1"], "is not in the range x>0"),
    (["lab", "probe", "a", "b:80", "--timeout", "0"], "is not in the range x>0"),
    (["lab", "matrix", "--port", "70000"], "is not in the range 1<=x<=65535"),
])
def test_probe_and_matrix_flags_checked_before_anything(argv: list[str], fragment: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(argv, capsys)
    assert code == 2
    assert "Traceback" not in out
    assert fragment in out


@pytest.mark.skipif(os.geteuid() != 0, reason="labs need root")
def test_probe_unknown_destination_is_an_error_not_blocked(lab_factory, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory({"name": "qa-probe", "networks": {"a": {}}, "nodes": {"n1": {"networks": ["a"]},
                                                                             "n2": {"networks": ["a"]}}},
                      roles=False)
    # A typo in the destination used to print "blocked" (a claim about the network).
    with pytest.raises(LabError, match="'n3' is neither a node of lab .* nor an IP address"):
        lab.probe("n1", "n3", 80)
    code, out = run_cli(["lab", "probe", f"{lab.name}/n1", "n3:80"], capsys)
    assert code == 1
    assert "is neither a node" in one_clear_line(out)
    # A negative timeout through the API: a LabError, not "ValueError: Timeout value out of range".
    with pytest.raises(LabError, match="timeout must be a positive"):
        lab.probe("n1", "n2", 80, timeout=-1)
    # The real thing still works: an IP and a node name.
    assert lab.probe("n1", lab.node_ip("n2"), 9, timeout=0.5).outcome == "refused"
    assert lab.probe("n1", "n2", 9, timeout=0.5).outcome == "refused"


@pytest.mark.skipif(os.geteuid() != 0, reason="labs need root")
def test_damaged_state_file_is_one_line_and_hides_no_other_lab(lab_factory, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    topo = {"name": "qa-st", "networks": {"a": {}}, "nodes": {"n1": {"networks": ["a"]}}}
    good = lab_factory(topo, roles=False)
    bad = lab_factory(topo, roles=False)
    path = Path("/run/edgectl-lab") / f"{bad.name}.json"
    saved = path.read_bytes()
    try:
        path.write_text("[]\n")  # JSON, but not a state document: was an AttributeError traceback
        code, out = run_cli(["lab", "status", bad.name], capsys)
        assert code == 1
        assert f"state file {path} is damaged" in one_clear_line(out)
        # Listing every lab shows the good one and still reports the damaged one.
        code, out = run_cli(["lab", "status", "-o", "json"], capsys)
        assert code == 1 and "Traceback" not in out
        assert f'"name": "{good.name}"' in out and f"state file {path} is damaged" in out
    finally:
        path.write_bytes(saved)
    code, out = run_cli(["lab", "status", bad.name], capsys)
    assert code == 0, out


@pytest.mark.skipif(os.geteuid() != 0, reason="labs need root")
def test_agent_with_an_unusable_data_dir_is_one_line(lab_factory) -> None:  # type: ignore[no-untyped-def]
    """`edgectl agent --data-dir /proc/x` ended in a FileNotFoundError traceback.
    Run inside a lab node: agents never run in the root namespace."""
    lab = lab_factory({"name": "qa-ag", "networks": {"a": {}}, "nodes": {"n": {"networks": ["a"]}}}, roles=False)
    token = "K10" + "ab" * 32 + "::server:secret"
    exe = str(Path(sys.executable).parent / "edgectl")
    res = lab.exec("n", [exe, "agent", "--server", "https://127.0.0.1:1", "--token", token,
                         "--data-dir", "/proc/qa-agent"], timeout=30, env={**os.environ, "EDGECTL_CONFIG": "/dev/null"})
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert "error: cannot use --data-dir /proc/qa-agent: No such file or directory" in res.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="labs need root")
def test_refused_join_leaves_no_agent_data_dir(lab_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A join refused for a CA mismatch left an empty data dir behind."""
    lab = lab_factory({"name": "qa-join", "networks": {"a": {}},
                       "nodes": {"s": {"kind": "server", "networks": ["a"]}, "n": {"kind": "agent", "networks": ["a"]}}})
    exe = str(Path(sys.executable).parent / "edgectl")
    token = "K10" + "ab" * 32 + "::server:" + lab.state.token
    data = tmp_path / "agent-data"
    res = lab.exec("n", [exe, "agent", "--server", f"https://{lab.address_for('n', 's')}:6443", "--token", token,
                         "--data-dir", str(data), "--node-name", "qa-refused"],
                   timeout=60, env={**os.environ, "EDGECTL_CONFIG": "/dev/null"})
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and "CA hash mismatch" in res.stderr, res.stderr
    assert not data.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="labs need root")
def test_namespace_collision_names_the_other_lab(lab_factory) -> None:  # type: ignore[no-untyped-def]
    """Lab "a" with node "b-c" and lab "a-b" with node "c" share namespace "a-b-c".
    The error used to suggest `edgectl lab down a`, which points at the wrong lab."""
    from edgectl.lab import Lab, LabError

    other = lab_factory({"name": "x", "networks": {"a": {}}, "nodes": {"n1": {"networks": ["a"]}}}, roles=False)
    head, _, tail = other.name.partition("-")  # "t", "<prefix>-<hex>"
    clash = {"name": head, "networks": {"a": {}}, "nodes": {f"{tail}-n1": {"networks": ["a"]}}}
    with pytest.raises(LabError, match=f"belongs to lab '{other.name}'"):
        made = Lab.up(clash, roles=False)
        made.down()  # never reached; cleans up if the check ever regresses
    assert other.exec("n1", ["true"]).returncode == 0  # untouched
