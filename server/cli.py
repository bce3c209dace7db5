"""``edgectl server``: run the control plane in the foreground until SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import ipaddress
import signal
from pathlib import Path
from typing import Any

import click

from edgectl.config import ConfigCommand
from edgectl.errors import EdgectlError
from edgectl.httpd import DEFAULT_MAX_BODY
from edgectl.nodeflags import node_options
from edgectl.paths import ADMIN_KUBECONFIG, SERVER_DATA_DIR, SERVER_PORT

_BACKENDS = ("vxlan", "host-gw", "wireguard-native", "ipsec", "none")
_EGRESS = ("agent", "pod", "cluster", "disabled")


def _cidr(value: str, flag: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise EdgectlError(f"{flag}: {value!r} is not a valid CIDR ({exc})") from None
    if net.version != 4:
        raise EdgectlError(f"{flag}: only IPv4 ranges are supported, got {value}")
    if net.prefixlen > 24 and flag == "--cluster-cidr":
        raise EdgectlError(f"{flag}: {value} is too small; nodes get a /24 each")
    return str(net)


@click.command(cls=ConfigCommand)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=SERVER_DATA_DIR, show_default=True,
              help="Where the database, certificates and token live.")
@click.option("--bind-address", default="0.0.0.0", show_default=True, help="Address to serve HTTPS on.")
@click.option("--https-listen-port", type=click.IntRange(0, 65535), default=SERVER_PORT, show_default=True,
              help="HTTPS port for the API, join and tunnel endpoints (0 picks a free port).")
@click.option("--write-kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=ADMIN_KUBECONFIG,
              show_default=True, help="Write the admin kubeconfig here (mode 0600).")
@click.option("--token", default=None, help="Join token secret (default: generated; stored in <data-dir>/token).")
@click.option("--tls-san", multiple=True, help="Extra DNS name or IP in the serving certificate (repeatable).")
@click.option("--disable-agent", is_flag=True, default=False, help="Run the control plane only, without a local agent.")
@click.option("--cluster-cidr", default="10.42.0.0/16", show_default=True, help="Pod network; each node gets a /24.")
@click.option("--service-cidr", default="10.43.0.0/16", show_default=True, help="Service cluster IP range.")
@click.option("--egress-selector-mode", type=click.Choice(_EGRESS), default="agent", show_default=True,
              help="What the server reaches through node tunnels.")
@click.option("--flannel-backend", type=click.Choice(_BACKENDS), default="vxlan", show_default=True,
              help="Overlay backend the agents use.")
@click.option("--max-request-body", type=click.IntRange(1024, 1 << 30), default=DEFAULT_MAX_BODY, show_default=True,
              help="Largest accepted request body in bytes (larger gets 413).")
@node_options
def server(data_dir: Path, bind_address: str, https_listen_port: int, write_kubeconfig: Path, token: str | None,
           tls_san: tuple[str, ...], disable_agent: bool, cluster_cidr: str, service_cidr: str,
           egress_selector_mode: str, flannel_backend: str, max_request_body: int, **agent_flags: Any) -> None:
    """Run the edgectl control plane (API server, datastore, join endpoints)."""
    from .app import ServerConfig, run

    try:
        ipaddress.ip_address(bind_address)
    except ValueError:
        raise EdgectlError(f"--bind-address: {bind_address!r} is not an IP address") from None
    service = _cidr(service_cidr, "--service-cidr")
    cluster = _cidr(cluster_cidr, "--cluster-cidr")
    if ipaddress.ip_network(service).overlaps(ipaddress.ip_network(cluster)):
        # Pod IPs and Service IPs from one range would collide; upstream refuses too.
        raise EdgectlError(f"--service-cidr {service} overlaps --cluster-cidr {cluster}; give them separate ranges")
    config = ServerConfig(
        data_dir=data_dir, bind_address=bind_address, https_port=https_listen_port, write_kubeconfig=write_kubeconfig,
        token=token, tls_sans=tls_san, cluster_cidr=cluster, service_cidr=service,
        cluster_dns=str(ipaddress.ip_network(service).network_address + 10), flannel_backend=flannel_backend,
        egress_selector_mode=egress_selector_mode, max_request_body=max_request_body, disable_agent=disable_agent,
    )

    agent_config = None
    if not disable_agent:
        # Imported here, not at the top: --disable-agent must never load agent code.
        from edgectl.agent.embed import embedded_agent_config, run_embedded_agent

        agent_config = embedded_agent_config(config, agent_flags)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if agent_config is None:
            await run(config, stop=stop)
            return
        # The agent is the server machine's node (as in k3s): same process, its
        # own task; it joins over loopback once the server answers.
        await asyncio.gather(run(config, stop=stop), run_embedded_agent(config, agent_config, stop=stop))

    try:
        import uvloop  # optional: a faster event loop when installed
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
