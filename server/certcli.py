"""``edgectl certificate``: inspect and rotate the server's leaf certificates.

Not a ConfigCommand on purpose: config.yaml holds server flags this command
does not have, and strict config validation would reject them. ``--data-dir``
still comes from ``EDGECTL_DATA_DIR`` when set.
"""
from __future__ import annotations

from pathlib import Path

import click

from edgectl.paths import SERVER_DATA_DIR

_DATA_DIR = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=SERVER_DATA_DIR,
    envvar="EDGECTL_DATA_DIR", show_default=True, help="Server data directory (certificates are in <data-dir>/tls).",
)


@click.group()
def certificate() -> None:
    """Inspect and rotate the cluster's certificates."""


@certificate.command()
@_DATA_DIR
def rotate(data_dir: Path) -> None:
    """Reissue every leaf certificate now (CAs and the join token stay valid).

    A running server keeps the old certificates until it restarts.
    """
    from edgectl.server.pki import ClusterPKI

    pki = ClusterPKI.load(data_dir / "tls", ensure=False)
    for name in pki.rotate(force=True):
        click.echo(f"rotated {name}")
    click.echo("restart the server to use the new certificates")


@certificate.command()
@_DATA_DIR
def check(data_dir: Path) -> None:
    """Show when each certificate expires."""
    from edgectl.server.pki import ClusterPKI

    pki = ClusterPKI.load(data_dir / "tls", ensure=False)
    for name, not_after in sorted(pki.expiries().items()):
        click.echo(f"{name:<24} expires {not_after:%Y-%m-%d %H:%M} UTC")
