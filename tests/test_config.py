"""Config precedence (flags > EDGECTL_* env > config.yaml) and bad-input errors."""
from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgectl.config import ConfigCommand
from edgectl.errors import ConfigError


@click.command(cls=ConfigCommand)
@click.option("--data-dir", default="/var/lib/x")
@click.option("--port", type=int, default=6443)
@click.option("--node-label", multiple=True)
def probe(data_dir: str, port: int, node_label: tuple[str, ...]) -> None:
    click.echo(f"{data_dir} {port} {','.join(node_label)}")


def run(args: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(probe, args, env=env or {}, catch_exceptions=True)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_precedence_flag_env_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "data-dir: /from/file\nport: 1\nnode-label: [a=b, c=d]\n")
    assert run(["-c", str(cfg)]).output.strip() == "/from/file 1 a=b,c=d"
    assert run(["-c", str(cfg)], {"EDGECTL_PORT": "2"}).output.strip() == "/from/file 2 a=b,c=d"
    assert run(["-c", str(cfg), "--port", "3"], {"EDGECTL_PORT": "2"}).output.strip() == "/from/file 3 a=b,c=d"


def test_config_from_env_path(tmp_path: Path) -> None:
    cfg = write(tmp_path, "port: 7\n")
    assert run([], {"EDGECTL_CONFIG": str(cfg)}).output.strip() == "/var/lib/x 7"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("bogus: 1\n", "unknown key 'bogus'"),
        ("port: abc\n", "key 'port'"),
        ("port: [1, 2]\n", "key 'port': expected a single value"),
        ("port: 1\n  bad: [\n", "invalid YAML"),
        ("- just\n- a list\n", "top level must be a mapping"),
    ],
)
def test_bad_config_names_key(tmp_path: Path, text: str, fragment: str) -> None:
    cfg = write(tmp_path, text)
    result = run(["-c", str(cfg)])
    assert isinstance(result.exception, ConfigError)
    assert fragment in str(result.exception)
    assert str(cfg) in str(result.exception)


def test_bad_env_value_names_variable() -> None:
    result = run([], {"EDGECTL_PORT": "nope"})
    assert result.exit_code != 0
    assert "EDGECTL_PORT" in result.output


def test_missing_explicit_config(tmp_path: Path) -> None:
    result = run(["-c", str(tmp_path / "missing.yaml")])
    assert isinstance(result.exception, ConfigError)
    assert "no such config file" in str(result.exception)
