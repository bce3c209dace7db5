"""QA: config.yaml as users break it: one clear ConfigError naming file and key.

Uses the real `edgectl server` command's flags (ConfigCommand validates the file
in make_context, before the command runs, so no server starts here).
"""
from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgectl.config import ConfigCommand, read_file
from edgectl.errors import ConfigError
from edgectl.server.cli import server


@click.command(cls=ConfigCommand)
@click.option("--token", default=None)
@click.option("--port", type=click.IntRange(0, 65535), default=6443)
@click.option("--flag", is_flag=True, default=False)
@click.option("--label", multiple=True)
def probe(token: str | None, port: int, flag: bool, label: tuple[str, ...]) -> None:
    click.echo(f"{token!r} {port} {flag} {list(label)}")


def invoke(tmp_path: Path, text: str | bytes) -> tuple[str, BaseException | None]:
    cfg = tmp_path / "config.yaml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    res = CliRunner().invoke(probe, ["-c", str(cfg)], env={}, catch_exceptions=True)
    return res.output.strip(), res.exception


@pytest.mark.parametrize("text, fragment", [
    # UnicodeDecodeError used to escape as a traceback.
    (b"\xa6\x00\xff binary", "not a UTF-8 text file (byte 0xa6 at offset 0)"),
    # Duplicate keys were merged silently (last one won).
    ("port: 1\nport: 2\n", "duplicate key 'port'"),
    # YAML floats/bools reached click's int(), which truncated 1.5 to 1 and read true as 1.
    ("port: 1.5\n", "key 'port': '1.5' is not a valid integer"),
    ("port: true\n", "key 'port': 'true' is not a valid integer"),
    # Nested values for a repeatable flag were stringified into garbage.
    ("label: [a=b, [c=d]]\n", "key 'label': expected a list of values, got a list in it"),
    ("label: &a [*a]\n", "key 'label': expected a list of values"),
    ("port:\n", "key 'port' has no value"),
    ("label: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
])
def test_bad_config_file(tmp_path: Path, text: str | bytes, fragment: str) -> None:
    out, exc = invoke(tmp_path, text)
    assert isinstance(exc, ConfigError), (out, exc)
    assert fragment in str(exc)
    assert str(tmp_path / "config.yaml") in str(exc)


def test_scalars_keep_the_text_the_user_wrote(tmp_path: Path) -> None:
    """`token: 0123` stayed 83 (YAML 1.1 octal) and `token: yes` became True: a
    token that silently changes locks every agent out."""
    out, exc = invoke(tmp_path, "token: 0123\nflag: yes\nlabel: [1, on]\n")
    assert exc is None, out
    assert out == "'0123' 6443 True ['1', 'on']"


def test_huge_and_endless_config(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("#" * (1024 * 1024 + 10))
    for path in (big, Path("/dev/zero")):
        with pytest.raises(ConfigError, match="larger than 1024 KiB"):
            read_file(path)


def test_server_config_errors_before_anything_is_created(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"data-dir: {data}\ndisable-agent: true\ncluster-cidr: 10.42.0.0/16\ncluster-cidr: 10.9.0.0/16\n")
    res = CliRunner().invoke(server, ["-c", str(cfg)], env={}, catch_exceptions=True)
    assert isinstance(res.exception, ConfigError)
    assert "duplicate key 'cluster-cidr'" in str(res.exception)
    assert not data.exists()


def test_empty_path_values_are_refused(tmp_path: Path) -> None:
    """`--data-dir ""` (an unset variable) became "." for click.Path options."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text('data-dir: ""\n')
    res = CliRunner().invoke(server, ["-c", str(cfg)], env={}, catch_exceptions=True)
    assert isinstance(res.exception, ConfigError)
    assert "key 'data-dir': must not be empty" in str(res.exception)
    res = CliRunner().invoke(server, ["--data-dir", ""], env={"EDGECTL_CONFIG": "/dev/null"})
    assert res.exit_code == 2 and "must not be empty" in res.output
