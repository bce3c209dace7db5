"""The agent inside ``edgectl server`` (k3s style): the server machine is a node too.

``server/cli.py`` declares the node flags (``edgectl.nodeflags``) and, unless
``--disable-agent``, runs :func:`run_embedded_agent` next to the control plane
in the same event loop. The agent joins over loopback like any other agent
(token from ``<data-dir>/token``), so there is one join path, not two. This
module never imports the server: it reads the few settings it needs off the
server config object by attribute.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from edgectl.errors import EdgectlError
from edgectl.log import fields
from edgectl.paths import AGENT_DATA_DIR, SERVER_DATA_DIR

from .config import AgentConfig, default_node_ip, default_node_name, parse_ips, parse_label, parse_taint

log = logging.getLogger(__name__)

TOKEN_FILE = "token"


def agent_data_dir(server_data_dir: Path) -> Path:
    """Default layout keeps /var/lib/edgectl/{server,agent}; a custom server
    data dir gets the agent beside its own files."""
    return AGENT_DATA_DIR if Path(server_data_dir) == SERVER_DATA_DIR else Path(server_data_dir) / "agent"


def server_url(server_config: Any) -> str:
    host = server_config.bind_address
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}:{server_config.https_port}"


def embedded_agent_config(server_config: Any, flags: dict[str, Any]) -> AgentConfig:
    """Validate the node flags up front (token filled in once the server wrote it)."""
    if not server_config.https_port:
        raise EdgectlError("--https-listen-port 0 cannot be combined with the embedded agent; add --disable-agent")
    url = server_url(server_config)
    from edgectl.joinproto import check_node_name

    name = check_node_name(flags.get("node_name") or default_node_name())
    ips = parse_ips(flags.get("node_ip") or (), flag="--node-ip") or (default_node_ip(url),)
    return AgentConfig(
        server=url, token="", node_name=name, node_ips=ips,
        node_external_ips=parse_ips(flags.get("node_external_ip") or (), flag="--node-external-ip"),
        labels=dict(parse_label(x) for x in flags.get("node_label") or ()),
        taints=tuple(parse_taint(x) for x in flags.get("node_taint") or ()),
        data_dir=agent_data_dir(server_config.data_dir), control_plane=True,
    )


async def run_embedded_agent(server_config: Any, config: AgentConfig, *, stop: asyncio.Event,
                             timeout: float = 60.0) -> None:
    """Wait for the server's token file, then run the agent until ``stop``."""
    import dataclasses

    from .main import run

    path = Path(server_config.data_dir) / TOKEN_FILE
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    token = ""
    while not stop.is_set():
        try:
            token = path.read_text().strip()
        except OSError:
            token = ""
        if token:
            break
        if loop.time() > deadline:
            raise EdgectlError(f"embedded agent: the server wrote no token to {path} within {timeout:.0f}s")
        await asyncio.sleep(0.05)
    if stop.is_set():
        return
    log.info("starting embedded agent", extra=fields(node=config.node_name, server=config.server))
    await run(dataclasses.replace(config, token=token), stop=stop)
