"""``edgectl lab ...``: argument parsing and output only; the work is in :mod:`edgectl.lab.api`."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from . import build
from .api import Lab, resolve_node
from .errors import LabError, LabNotFound
from .topology import load

# Piped output (make demo | tee, CI logs) gets 140 columns instead of rich's 80.
out = Console(highlight=False, width=None if sys.stdout.isatty() else shutil.get_terminal_size((140, 24)).columns)

# `lab probe` exit codes (documented in docs/lab.md).
EXIT_REACHABLE, EXIT_BLOCKED, EXIT_REFUSED = 0, 1, 3


def _need_root() -> None:
    if os.geteuid() != 0:
        raise LabError("labs need root (network namespaces); run as root, e.g. sudo edgectl lab ...")


@click.group()
def lab() -> None:
    """Network-namespace labs: nodes, routers with NAT, shaped links, all on this host."""


@lab.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--name", help="Lab name (default: `name:` in FILE).")
@click.option("--no-roles", is_flag=True, help="Network only: start no edgectl server/agent in the nodes.")
def up(file: str, name: str | None, no_roles: bool) -> None:
    """Validate FILE, create the lab and wait until every node is up."""
    topo = load(file)  # validate before anything else, root or not
    if name is not None:  # --name "" is a mistake to report, not "use the file's name"
        topo = topo.renamed(name)
    _need_root()
    out.print(f"[bold]lab {topo.name}[/]: {len(topo.nodes)} nodes, {len(topo.networks)} networks from {file}")
    lock = threading.Lock()

    def progress(node: str, event: str, t: float) -> None:
        n = topo.node(node) if event in ("ready", "role") else None
        if n is None:
            return
        if event == "ready":
            what = ", ".join(f"{a.network} {a.cidr_address}" for a in n.attachments)
        else:
            what = f"[bold]{n.kind} ready[/]"
        with lock:
            out.print(f"  [green]✓[/] {node:<16} {n.kind:<7} {what}  [dim]{t:.2f}s[/]")

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM (e.g. a CI timeout) rolls back like Ctrl-C

    signal.signal(signal.SIGTERM, interrupted)
    t0 = time.monotonic()
    the_lab = Lab.up(topo, progress=progress, roles=not no_roles)
    for node, ns in the_lab.state.nodes.items():
        if ns.role:
            out.print(f"  [dim]·[/] {node}: {ns.role}")
    out.print(f"[bold green]lab {topo.name} is up[/] in {time.monotonic() - t0:.2f}s. "
              f"Try: edgectl lab status · edgectl lab exec {topo.nodes[0].name} -- ip addr · edgectl lab down {topo.name}")


@lab.command()
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Remove every lab, including leftovers of crashed runs.")
def down(name: str | None, all_: bool) -> None:
    """Remove a lab (or all): processes, namespaces, forwarders and state."""
    _need_root()
    if name and all_:
        raise click.UsageError("give a NAME or --all, not both")
    if all_:
        names = build.all_lab_names()
        if not names:
            out.print("no labs")
    elif name:
        names = [name]
        if name not in Lab.names() and name not in build.all_lab_names():
            raise LabNotFound(f"no lab named {name!r}")
    else:
        names = Lab.names()
        if not names:
            raise LabNotFound("no lab is up")
        if len(names) > 1:
            raise LabError(f"several labs are up ({', '.join(names)}); give a NAME or --all")
    for n in names:
        report = build.destroy(n)
        out.print(f"lab {n} removed ({len(report.netns)} namespaces, {report.processes} processes, {report.seconds:.2f}s)")


@lab.command()
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def status(name: str | None, output: str) -> None:
    """Show labs, their nodes, addresses and published ports."""
    labs: list[Lab] = []
    damaged: list[str] = []
    for n in [name] if name else Lab.names():
        try:
            labs.append(Lab.attach(n))
        except LabError as exc:
            if name:
                raise
            damaged.append(str(exc))  # one broken state file must not hide the other labs
    docs = [lab_.status() for lab_ in labs]
    _print_status(docs, output, empty=not damaged)
    if damaged:
        for msg in damaged[:-1]:
            click.echo(f"error: {msg}", err=True)
        raise LabError(damaged[-1])


def _print_status(docs: list[dict[str, Any]], output: str, *, empty: bool) -> None:
    if output == "json":
        click.echo(json.dumps(docs, indent=2))
        return
    if not docs:
        if empty:
            out.print("no labs are up (start one: edgectl lab up lab/examples/nat-edge.yaml)")
        return
    for doc in docs:
        nets = "  ".join(f"{n['name']} {n['cidr']}" + (f" rate {n['rate']}" if n["rate"] else "")
                         + (f" mtu {n['mtu']}" if n["mtu"] else "") for n in doc["networks"])
        table = Table(title=f"lab {doc['name']} ({doc['status']}) · {nets}", title_justify="left")
        for col in ("NODE", "KIND", "ADDRESSES", "GATEWAY", "NAT / FIREWALL", "PUBLISH", "PID"):
            table.add_column(col)
        for n in doc["nodes"]:
            nat = f"{'+'.join(n['nat']['from'])} → {n['nat']['to']}" if n["nat"] else ""
            if n["firewall_inbound"] == "deny":
                nat = (nat + ", " if nat else "") + "inbound deny"
            pid = str(n["pid"]) if n["running"] else f"[red]{n['pid']} (gone)[/]"
            kind = n["kind"] + (" [yellow]*[/]" if n["role"] else "")
            table.add_row(n["name"], kind, "\n".join(f"{k} {v}" for k, v in n["addresses"].items()),
                          n["gateway"] or "", nat, "\n".join(n["publish"]), pid)
        out.print(table)
        for n in doc["nodes"]:
            if n["role"]:
                out.print(f"[yellow]*[/] {n['name']}: {n['role']}")


@lab.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def exec(node: str, command: tuple[str, ...]) -> None:  # noqa: A001 - the command is called exec
    """Run COMMAND inside NODE (lab/node, or node when unambiguous); default: a shell.

    The exit code and the terminal pass straight through: edgectl becomes nsenter.
    """
    _need_root()
    the_lab, name = resolve_node(node)
    cmd = list(command[1:] if command[:1] == ("--",) else command) or [os.environ.get("SHELL") or "/bin/bash"]
    argv = [*the_lab.nsenter(name), *cmd]
    sys.stdout.flush()
    os.execvp(shutil.which("nsenter") or "nsenter", argv)


def _split_target(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise click.BadParameter(f"{target!r}: expected NODE:PORT or IP:PORT", param_hint="DST")
    return host, int(port)


@lab.command()
@click.argument("src")
@click.argument("dst")
@click.option("--udp", is_flag=True, help="UDP: send a datagram and wait for a reply.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Seconds to wait for an answer.")
@click.option("--listen", is_flag=True, help="Open a throw-away listener (TCP accept / UDP echo) in the destination node first.")
def probe(src: str, dst: str, udp: bool, timeout: float, listen: bool) -> None:
    """Can SRC open a connection to DST (NODE:PORT or IP:PORT)?

    Exit status: 0 reachable, 1 blocked (timeout or unreachable), 3 refused
    (the host answered but nothing listens on the port).
    """
    _need_root()
    the_lab, src_node = resolve_node(src)
    host, port = _split_target(dst)
    if "/" in host:
        lab_name, _, host = host.partition("/")
        if lab_name != the_lab.name:
            raise LabError("SRC and DST must be in the same lab")
    res = the_lab.probe(src_node, host, port, udp=udp, timeout=timeout, listen=listen)
    color = {"reachable": "green", "refused": "yellow", "blocked": "red"}[res.outcome]
    shown = host if host == res.destination.split(":")[0] else f"{host} ({res.destination.split(':')[0]})"
    out.print(f"{src_node} → {shown}:{port}/{res.protocol}: [bold {color}]{res.outcome}[/] ({res.detail}, {res.seconds * 1000:.0f} ms)")
    sys.exit({"reachable": EXIT_REACHABLE, "blocked": EXIT_BLOCKED, "refused": EXIT_REFUSED}[res.outcome])


@lab.command()
@click.argument("name", required=False)
@click.option("--port", type=click.IntRange(1, 65535), default=18000, show_default=True,
              help="First port for the throw-away listeners (one per source node).")
@click.option("--udp", is_flag=True, help="Probe UDP instead of TCP.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True)
@click.option("--routers", is_flag=True, help="Include routers as sources and destinations.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def matrix(name: str | None, port: int, udp: bool, timeout: float, routers: bool, output: str) -> None:
    """Who can open a new connection to whom: every node pair, probed in parallel."""
    _need_root()
    names = [name] if name else Lab.names()
    if len(names) != 1:
        raise LabError("no lab is up" if not names else f"several labs are up ({', '.join(names)}); give a NAME")
    the_lab = Lab.attach(names[0])
    nodes = [n.name for n in the_lab.topology.nodes if routers or n.kind != "router"]
    if port + len(nodes) > 65535:
        raise click.BadParameter(f"{port}: one port per source node is needed, up to {port + len(nodes)}",
                                 param_hint="--port")
    pairs = [(i, s, d) for i, s in enumerate(nodes) for d in nodes if s != d]
    with ThreadPoolExecutor(max_workers=16) as pool:
        # One port per source, so parallel probes to one destination never share a listener.
        results = dict(zip(
            [(s, d) for _, s, d in pairs],
            pool.map(lambda p: the_lab.probe(p[1], p[2], port + p[0], udp=udp, timeout=timeout, listen=True), pairs),
        ))
    if output == "json":
        click.echo(json.dumps([{"from": s, "to": d, "outcome": r.outcome} for (s, d), r in results.items()], indent=2))
        return
    proto = "udp" if udp else "tcp"
    table = Table(title=f"lab {the_lab.name}: new {proto} connections (row → column)", title_justify="left")
    table.add_column("from \\ to")
    for d in nodes:
        table.add_column(d, justify="center")
    for s in nodes:
        cells: list[Any] = []
        for d in nodes:
            if s == d:
                cells.append("[dim]·[/]")
            else:
                r = results[(s, d)]
                cells.append("[green]✓[/]" if r.reachable else "[red]✗[/]")
        table.add_row(s, *cells)
    out.print(table)
    out.print("[green]✓[/] reachable   [red]✗[/] blocked (no answer within "
              f"{timeout}s: NAT hides the node or a firewall drops new connections)")


@lab.command()
@click.argument("name", required=False)
@click.option("--node", "server", default=None, help="Server node (default: the first server).")
def kubeconfig(name: str | None, server: str | None) -> None:
    """Print the path of the host kubeconfig for a lab's server (its 6443 published on 127.0.0.1).

    Use it as: kubectl --kubeconfig "$(edgectl lab kubeconfig)" get nodes
    """
    from .cluster import kubeconfig_for

    names = [name] if name else Lab.names()
    if len(names) != 1:
        raise LabError("no lab is up" if not names else f"several labs are up ({', '.join(names)}); give a NAME")
    click.echo(str(kubeconfig_for(Lab.attach(names[0]), server)))
