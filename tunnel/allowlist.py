"""Agent-side allow-list for tunnel OPENs, mirroring k3s's egress-selector modes.

- ``agent`` (default): only the kubelet port on loopback;
- ``pod``: also addresses in this node's pod CIDR(s);
- ``cluster``: also the cluster CIDR(s);
- ``disabled``: the tunnel carries nothing (the server dials nodes directly).

Targets are ``tcp/<ip>:<port>`` with an IP literal (``tcp/[::1]:10250`` for
IPv6); names are refused so a tunnel can never be pointed at a DNS name.
"""
from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from ..paths import KUBELET_PORT

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressMode(str, enum.Enum):
    AGENT = "agent"
    POD = "pod"
    CLUSTER = "cluster"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Target:
    proto: str
    host: IPAddress
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.host.version == 6 else str(self.host)
        return f"{self.proto}/{host}:{self.port}"


class BadTarget(ValueError):
    pass


def parse_target(text: str) -> Target:
    """``tcp/127.0.0.1:10250`` -> Target; BadTarget with a clear message otherwise."""
    proto, sep, rest = text.partition("/")
    if not sep or proto != "tcp":
        raise BadTarget(f"target {text!r}: expected tcp/<ip>:<port>")
    host, sep, port_s = rest.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise BadTarget(f"target {text!r}: bad or missing port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise BadTarget(f"target {text!r}: host must be an IP address") from None
    return Target(proto, addr, int(port_s))


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowList:
    mode: EgressMode = EgressMode.AGENT
    kubelet_port: int = KUBELET_PORT
    # Extra loopback ports (k3s also allows containerd's stream server, 10010).
    loopback_ports: tuple[int, ...] = ()
    pod_cidrs: tuple[IPNetwork, ...] = ()
    cluster_cidrs: tuple[IPNetwork, ...] = ()

    def check(self, target: str) -> tuple[Target | None, str | None]:
        """(parsed target, None) when allowed, else (parsed or None, refusal reason)."""
        try:
            t = parse_target(target)
        except BadTarget as exc:
            return None, str(exc)
        if self.mode is EgressMode.DISABLED:
            return t, "tunnel egress is disabled on this agent"
        if t.host.is_loopback and (t.port == self.kubelet_port or t.port in self.loopback_ports):
            return t, None
        if self.mode in (EgressMode.POD, EgressMode.CLUSTER) and any(t.host in n for n in self.pod_cidrs):
            return t, None
        if self.mode is EgressMode.CLUSTER and any(t.host in n for n in self.cluster_cidrs):
            return t, None
        return t, f"{t} is not allowed in egress mode {self.mode.value!r}"
