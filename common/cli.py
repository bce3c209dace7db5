"""The ``edgectl`` command: parses arguments and calls library code, nothing more.

Subcommands load lazily so ``edgectl lab ...`` does not import the API server.
Each component registers its click object here by import path.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from . import __version__, log
from .errors import EdgectlError

# name -> "module:attribute" of a click command or group.
SUBCOMMANDS: dict[str, str] = {
    "lab": "edgectl.lab.cli:lab",
    "server": "edgectl.server.cli:server",
    "certificate": "edgectl.server.certcli:certificate",
    "tunnel": "edgectl.tunnel.cli:tunnel",
    "agent": "edgectl.agent.cli:agent",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(SUBCOMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SUBCOMMANDS:
            module, _, attr = SUBCOMMANDS[cmd_name].partition(":")
            return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgectl")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]), envvar="EDGECTL_LOG_LEVEL")
@click.option("--log-format", default="text", type=click.Choice(["text", "json"]), envvar="EDGECTL_LOG_FORMAT")
def edgectl(log_level: str, log_format: str) -> None:
    """edgectl: a lightweight Kubernetes-style edge stack."""
    log.setup(log_level, log_format)


def main(argv: list[str] | None = None) -> Any:
    """Console entry: user errors become one line on stderr and a non-zero exit."""
    try:
        rv = edgectl.main(args=argv, prog_name="edgectl", standalone_mode=False)
        if isinstance(rv, int):
            sys.exit(rv)
        return rv
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgectlError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
