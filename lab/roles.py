"""What runs inside a node once its network is up, by node kind: the extension point for server/agent.

``ROLES`` maps a kind to a :class:`Role` (an explicit dict, no registration
side effects). The lab starts roles in phases - all servers, wait until they
are ready, then all agents - so an agent's server is up before it joins.
``server`` and ``agent`` run ``edgectl server`` / ``edgectl agent`` (see
cluster.py); :class:`Pending` is kept for kinds whose component has not
landed yet (the node then behaves as a plain host and says so). A role's
``start`` gets a :class:`RoleContext` (the lab, the node, the lab's join
token, the server URL for agents); the node's ``config:`` is already in its
/etc/edgectl/config.yaml. Processes started in a node need no bookkeeping:
``lab down`` ends every process in the node's namespaces.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .cluster import AgentRole, ServerRole
from .topology import Node

if TYPE_CHECKING:
    from .api import Lab

PHASES = (("server",), ("agent",))  # kinds started together, in this order; others have nothing to run


@dataclass(frozen=True, kw_only=True)
class RoleContext:
    lab: Lab
    node: Node
    token: str  # the lab's join token (random per lab, kept in the state file)
    server_url: str | None  # agents: https://<server address as the agent sees it>:6443


class Role(Protocol):
    def start(self, ctx: RoleContext) -> str:
        """Start the node's processes; return a one-line note for `lab status` ("" if none)."""

    def wait_ready(self, ctx: RoleContext, *, timeout: float) -> None:
        """Block until the node is ready; raise LabError with a clear message if it is not."""


class Plain:
    """Hosts and routers: the network is all there is."""

    def start(self, ctx: RoleContext) -> str:
        return ""

    def wait_ready(self, ctx: RoleContext, *, timeout: float) -> None:
        return None


@dataclass(frozen=True)
class Pending:
    """A kind whose component has not landed yet: runs as a plain host, with a note."""

    command: str

    def start(self, ctx: RoleContext) -> str:
        return f"`edgectl {self.command}` is not available yet; node runs as a plain host"

    def wait_ready(self, ctx: RoleContext, *, timeout: float) -> None:
        return None


ROLES: dict[str, Role] = {
    "host": Plain(),
    "router": Plain(),
    "server": ServerRole(),  # edgectl server (+ embedded agent), see cluster.py
    "agent": AgentRole(),  # edgectl agent
}


def start_all(lab: Lab, *, timeout: float = 120.0, say: Callable[[str, str], None] | None = None) -> dict[str, str]:
    """Run every node's role, phase by phase; return node -> note."""
    notes: dict[str, str] = {}
    topo = lab.topology
    for kinds in PHASES:
        started = []
        for node in topo.nodes:
            if node.kind not in kinds:
                continue
            server_url = f"https://{lab.address_for(node.name, node.server)}:6443" if node.server else None
            ctx = RoleContext(lab=lab, node=node, token=lab.state.token, server_url=server_url)
            role = ROLES[node.kind]
            notes[node.name] = role.start(ctx)
            started.append((role, ctx))
        for role, ctx in started:
            role.wait_ready(ctx, timeout=timeout)
            if say:
                say(ctx.node.name, notes[ctx.node.name])
    return notes
