"""``edgectl agent``: join a cluster and run this machine as a node until SIGTERM."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
from pathlib import Path

import click

from edgectl.config import ConfigCommand
from edgectl.errors import EdgectlError
from edgectl.log import fields
from edgectl.paths import AGENT_DATA_DIR

from .config import EGRESS_MODES, AgentConfig, check_server_url, parse_size, default_node_ip, default_node_name, parse_ips, parse_label, parse_taint


@click.command(cls=ConfigCommand)
@click.option("--server", "-s", required=True, help="The server to join: https://HOST:6443.")
@click.option("--token", "-t", default=None, help="Join token (K10<ca hash>::server:<secret>, from the server's <data-dir>/token).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Read the join token from this file instead.")
@click.option("--node-name", default=None, help="Node name (default: this machine's host name).")
@click.option("--node-ip", multiple=True, help="InternalIP of the node (default: the address of the default route). Repeatable.")
@click.option("--node-external-ip", multiple=True, help="ExternalIP of the node. Repeatable.")
@click.option("--node-label", multiple=True, help="key=value label set at registration. Repeatable.")
@click.option("--node-taint", multiple=True, help="key[=value]:Effect taint set at registration. Repeatable.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=AGENT_DATA_DIR, show_default=True,
              help="Node password, certificates and pod state.")
@click.option("--egress-mode", type=click.Choice(EGRESS_MODES), default=None,
              help="What the server may reach through this node's tunnel (default: the server's egress-selector-mode).")
@click.option("--container-log-max-size", default="10Mi", show_default=True,
              help="Rotate a container's log past this size (as the kubelet's containerLogMaxSize).")
def agent(server: str, token: str | None, token_file: Path | None, node_name: str | None, node_ip: tuple[str, ...],
          node_external_ip: tuple[str, ...], node_label: tuple[str, ...], node_taint: tuple[str, ...], data_dir: Path,
          egress_mode: str | None, container_log_max_size: str) -> None:
    """Join the cluster at --server and run pods on this machine (outbound connections only)."""
    from .main import run

    config = build_config(server=server, token=token, token_file=token_file, node_name=node_name, node_ip=node_ip,
                          node_external_ip=node_external_ip, node_label=node_label, node_taint=node_taint,
                          data_dir=data_dir, egress_mode=egress_mode)
    config = dataclasses.replace(config, container_log_max_bytes=parse_size(container_log_max_size,
                                                                            flag="--container-log-max-size"))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(config, stop=stop)
        # A shutdown step that timed out may leave a task behind, and asyncio.run would
        # wait for it without bound. Give stragglers a moment, then leave regardless
        # (pods keep running in their shims; the next start re-adopts them).
        from edgectl.aio import cancel_and_wait

        left = await cancel_and_wait([t for t in asyncio.all_tasks() if t is not asyncio.current_task()], grace=1.0)
        if left:
            names = ",".join(t.get_name() for t in left)  # type: ignore[attr-defined]
            logging.getLogger(__name__).warning("exiting with stuck tasks", extra=fields(tasks=names))
            logging.shutdown()
            os._exit(0)

    try:
        import uvloop  # optional: a faster event loop when installed
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


def build_config(*, server: str, token: str | None, token_file: Path | None, node_name: str | None,
                 node_ip: tuple[str, ...], node_external_ip: tuple[str, ...], node_label: tuple[str, ...],
                 node_taint: tuple[str, ...], data_dir: Path, egress_mode: str | None) -> AgentConfig:
    """Flags -> AgentConfig; every bad value is one clear EdgectlError."""
    from edgectl.joinproto import check_node_name, parse_token

    server = check_server_url(server)
    if token_file is not None:
        if token:
            raise EdgectlError("give --token or --token-file, not both")
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise EdgectlError(f"--token-file {token_file}: {exc.strerror or exc}") from None
    if not token:
        raise EdgectlError("a join token is required: --token K10... (the server writes it to <data-dir>/token)")
    parse_token(token)  # a malformed token fails here, before any network traffic
    name = check_node_name(node_name or default_node_name())
    ips = parse_ips(node_ip, flag="--node-ip") or (default_node_ip(server),)
    return AgentConfig(
        server=server, token=token, node_name=name, node_ips=ips,
        node_external_ips=parse_ips(node_external_ip, flag="--node-external-ip"),
        labels=dict(parse_label(x) for x in node_label),
        taints=tuple(parse_taint(x) for x in node_taint),
        data_dir=data_dir, egress_mode=egress_mode,
    )
