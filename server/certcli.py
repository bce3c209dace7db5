"""``edgectl certificate``: inspect and rotate the server's leaf certificates.

Not a ConfigCommand on purpose: config.yaml holds server flags this command
does not have, and strict config validation would reject them. ``--data-dir``
still comes from ``EDGECTL_DATA_DIR`` when set.
"""
from __future__ import annotations

from pathlib import Path

import click

from edgectl.config import NonEmptyPath
from edgectl.errors import EdgectlError
from edgectl.paths import SERVER_DATA_DIR

_DATA_DIR = click.option(
    "--data-dir", type=NonEmptyPath(file_okay=False, path_type=Path), default=SERVER_DATA_DIR,
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
    from edgectl.server.pki.cluster import LEAVES, SERVING

    pki = ClusterPKI.load(data_dir / "tls", ensure=False)
    broken = dict(pki.unusable)
    missing = [n for n in LEAVES if n not in pki.expiries() and n not in broken]
    for name in pki.rotate(force=True):
        click.echo(f"rotated {name}" + (" (the old files were unusable)" if name in broken else ""))
    for name in missing:
        click.echo(f"created {name} (it was missing)")
    if SERVING in broken:
        # Its SANs lived only in the broken certificate.
        click.echo(f"note: {SERVING} now has the default SANs only; the server adds its --tls-san names when it starts")
    click.echo("restart the server to use the new certificates")


@certificate.command()
@_DATA_DIR
def check(data_dir: Path) -> None:
    """Show when each certificate expires."""
    from edgectl.server.pki import ClusterPKI
    from edgectl.server.pki.cluster import LEAVES

    pki = ClusterPKI.load(data_dir / "tls", ensure=False)
    rows = {name: f"expires {not_after:%Y-%m-%d %H:%M} UTC" for name, not_after in pki.expiries().items()}
    # A leaf that is unreadable or absent must show up, not vanish from the list.
    bad = {name: f"UNUSABLE: {why}" for name, why in pki.unusable.items()}
    bad.update({name: "MISSING" for name in LEAVES if name not in rows and name not in bad})
    for name, text in sorted({**rows, **bad}.items()):
        click.echo(f"{name:<24} {text}")
    if bad:
        raise EdgectlError(f"{len(bad)} certificate(s) need attention: run `edgectl certificate rotate"
                           f" --data-dir {data_dir}` (or restart the server) to reissue them")
