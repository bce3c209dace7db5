"""``edgectl tunnel status``: live tunnel sessions and streams from the server."""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click
import yaml

from ..errors import EdgectlError
from ..paths import ADMIN_KUBECONFIG
from .clientconfig import Credentials, from_kubeconfig, read_text_file
from .server import STATUS_PATH


@click.group()
def tunnel() -> None:
    """Reverse tunnels from edge agents to the server."""


def fetch_status(creds: Credentials, *, streams: bool, timeout: float = 10.0) -> dict[str, Any]:
    try:
        parts = urllib.parse.urlsplit(creds.server)  # raises for a bad [IPv6] host
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        raise EdgectlError(f"server URL {creds.server!r}: invalid host or port") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EdgectlError(f"server URL {creds.server!r}: expected https://HOST:PORT")
    url = f"{creds.server}{STATUS_PATH}?streams={'true' if streams else 'false'}"
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    if creds.token:
        req.add_header("Authorization", f"Bearer {creds.token}")
    try:
        context = creds.ssl_context() if url.startswith("https") else None
    except (ssl.SSLError, ValueError) as exc:
        raise EdgectlError(f"unusable TLS credentials (CA, client certificate or key in the kubeconfig or "
                           f"--certificate-authority): {exc}") from None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()
        try:  # the server answers errors as Status objects: show their message
            detail = json.loads(detail).get("message") or detail
        except (ValueError, AttributeError):
            pass
        hint = " (check the credentials: --token or the kubeconfig's user)" if exc.code in (401, 403) else ""
        raise EdgectlError(f"{creds.server}: HTTP {exc.code}: {detail or exc.reason}{hint}") from None
    except urllib.error.URLError as exc:
        raise EdgectlError(f"cannot reach {creds.server}: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise EdgectlError(f"{url}: {exc}") from None


def _read_ca(path: str) -> str:
    try:
        return read_text_file(Path(path), what="PEM file")
    except OSError as exc:
        raise EdgectlError(f"--certificate-authority {path}: {exc.strerror or exc}") from None


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60}m"


def render_table(doc: dict[str, Any], *, streams: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    import sys

    # Piped output (scripts, tests) must not be cut to the default 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 200)
    sessions = doc.get("sessions", [])
    if not sessions:
        console.print("no tunnel sessions")
        return
    table = Table(box=None, header_style="bold")
    for col in ("NODE", "REMOTE", "UPTIME", "RTT", "STREAMS", "IN", "OUT", "BUFFERED", "BLOCKED", "RECONNECTS", "STATE"):
        table.add_column(col, justify="right" if col in ("RTT", "STREAMS", "IN", "OUT", "BUFFERED", "BLOCKED", "RECONNECTS") else "left")
    for s in sessions:
        rtt = f"{s['last_rtt_ms']:.1f}ms" if s.get("last_rtt_ms") is not None else "-"
        table.add_row(
            s["node"], s["remote"], _age(s["uptime_seconds"]), rtt, str(s["open_streams"]),
            _size(s["bytes_in"]), _size(s["bytes_out"]), _size(s["buffered"]), str(s["blocked_streams"]),
            str(s["reconnects"]), "draining" if s.get("draining") else "connected",
        )
    console.print(table)
    if streams:
        st = Table(box=None, header_style="bold", title="streams", title_justify="left")
        for col in ("NODE", "ID", "TARGET", "STATE", "AGE", "IN", "OUT", "WINDOW", "BUFFERED", "QUEUED", "BLOCKED"):
            st.add_column(col)
        for s in sessions:
            for x in s.get("streams", []):
                st.add_row(
                    s["node"], str(x["id"]), x["target"], x["state"], _age(x["age_seconds"]), _size(x["bytes_in"]),
                    _size(x["bytes_out"]), _size(x["recv_window"]), _size(x["buffered"]), _size(x["queued_out"]),
                    "yes" if x["blocked"] else "",
                )
        console.print(st)


@tunnel.command()
@click.option("--streams", is_flag=True, help="Also list every open stream.")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=str(ADMIN_KUBECONFIG), show_default=True,
              envvar="KUBECONFIG", help="Server URL and admin credentials.")
@click.option("--server", help="Server URL (overrides the kubeconfig), e.g. https://10.0.0.1:6443.")
@click.option("--token", help="Bearer token (overrides the kubeconfig).")
@click.option("--certificate-authority", "ca_file", type=click.Path(dir_okay=False, exists=True), help="CA file to verify the server.")
def status(streams: bool, output: str, kubeconfig: Path, server: str | None, token: str | None, ca_file: str | None) -> None:
    """Show tunnel sessions (and with --streams, their streams)."""
    if server:
        base = None
        if kubeconfig.exists():
            base = from_kubeconfig(kubeconfig)
        ca = _read_ca(ca_file) if ca_file else (base.ca_pem if base else None)
        creds = Credentials(server=server.rstrip("/"), ca_pem=ca, token=token or (base.token if base else None),
                            cert_pem=None if token else (base.cert_pem if base else None),
                            key_pem=None if token else (base.key_pem if base else None))
    else:
        creds = from_kubeconfig(kubeconfig)
        if token:
            creds = Credentials(server=creds.server, ca_pem=creds.ca_pem, token=token)
        if ca_file:
            creds = Credentials(server=creds.server, ca_pem=_read_ca(ca_file), token=creds.token, cert_pem=creds.cert_pem, key_pem=creds.key_pem)
    doc = fetch_status(creds, streams=streams or output != "table")
    if output == "json":
        click.echo(json.dumps(doc, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)
    else:
        render_table(doc, streams=streams)
