"""Agent settings: a frozen dataclass built from flags (``agent/cli.py``) or by
the server when it embeds an agent. Parsing of labels and taints lives here so
both entry points reject bad input with the same one-line message.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgectl.errors import ConfigError
from edgectl.paths import AGENT_DATA_DIR, KUBELET_PORT

EGRESS_MODES = ("agent", "pod", "cluster", "disabled")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# A label key: optional DNS prefix and a name (upstream's qualified name).
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)")
_LABEL_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    server: str  # https://host:port; the one seam a client-side load balancer replaces
    token: str
    node_name: str
    node_ips: tuple[str, ...]
    node_external_ips: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Mapping[str, str], ...] = ()
    data_dir: Path = AGENT_DATA_DIR
    egress_mode: str | None = None  # None: take the server's egress-selector-mode
    kubelet_port: int = KUBELET_PORT
    control_plane: bool = False  # embedded in `edgectl server`: node-role labels
    run_pods: bool = True  # False only for tests/benchmarks of the control path
    lease_seconds: float = 10.0
    status_check_seconds: float = 10.0  # how often the Node's Ready condition is compared with our health
    container_log_max_bytes: int = 10 * 1024 * 1024  # kubelet's containerLogMaxSize default


def parse_label(text: str) -> tuple[str, str]:
    """``key=value`` -> (key, value) with upstream's syntax rules."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"--node-label {text!r}: expected key=value")
    check_label_key(key, flag="--node-label", shown=text)
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise ConfigError(f"--node-label {text!r}: value must be at most 63 characters of A-Z a-z 0-9 - _ . "
                          "starting and ending with a letter or digit")
    return key, value


def check_label_key(key: str, *, flag: str, shown: str | None = None) -> str:
    prefix, slash, name = key.rpartition("/")
    shown = key if shown is None else shown
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ConfigError(f"{flag} {shown!r}: key name must be 1-63 characters of A-Z a-z 0-9 - _ . "
                          "starting and ending with a letter or digit")
    if slash and (len(prefix) > 253 or not _LABEL_PREFIX.fullmatch(prefix)):
        raise ConfigError(f"{flag} {shown!r}: key prefix must be a lowercase DNS subdomain")
    return key


def parse_taint(text: str) -> dict[str, str]:
    """``key[=value]:Effect`` -> a Node taint."""
    head, sep, effect = text.rpartition(":")
    if not sep or not head:
        raise ConfigError(f"--node-taint {text!r}: expected key[=value]:Effect "
                          f"(Effect one of {', '.join(TAINT_EFFECTS)})")
    if effect not in TAINT_EFFECTS:
        raise ConfigError(f"--node-taint {text!r}: effect must be one of {', '.join(TAINT_EFFECTS)}")
    key, _, value = head.partition("=")
    check_label_key(key, flag="--node-taint", shown=text)
    if value and (len(value) > 63 or not _LABEL_VALUE.fullmatch(value)):
        raise ConfigError(f"--node-taint {text!r}: invalid value")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def parse_ips(values: Iterable[str], *, flag: str) -> tuple[str, ...]:
    """Flags may repeat and hold comma lists (as k3s accepts); each must be an IP."""
    out: list[str] = []
    for value in values:
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            try:
                out.append(str(ipaddress.ip_address(part)))
            except ValueError:
                raise ConfigError(f"{flag}: {part!r} is not an IP address") from None
    return tuple(out)


_SIZE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3}


def parse_size(text: str, *, flag: str) -> int:
    """``10Mi``, ``500k``, ``1048576`` -> bytes (Kubernetes quantity suffixes)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]i?)?\s*", text)
    if not m:
        raise ConfigError(f"{flag}: {text!r} is not a size like 10Mi, 500Ki or 1048576")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()]


def check_server_url(url: str) -> str:
    from urllib.parse import urlsplit

    url = url.strip()
    try:
        parts = urlsplit(url)  # raises itself for a bad [IPv6] host
        port = parts.port
    except ValueError:
        raise ConfigError(f"--server {url!r}: invalid host or port") from None
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"--server {url!r}: expected https://HOST:PORT (the server's 6443 port)")
    if port == 0 or parts.username or parts.password or parts.path.strip("/") or parts.query or parts.fragment:
        # The agent appends its own paths (/cacerts, /v1-edge/...): anything else here is a mistake.
        raise ConfigError(f"--server {url!r}: expected just https://HOST:PORT (no user, path or query)")
    return url.rstrip("/")


def default_node_name() -> str:
    return socket.gethostname().split(".")[0].lower()


def default_node_ip(server_url: str) -> str:
    """The address of the default route; without one (a LAN with no gateway),
    the source address towards the server. Route lookups send no packets."""
    from urllib.parse import urlsplit

    targets = ["1.1.1.1"]  # any public address: only the routing decision matters
    host = urlsplit(server_url).hostname or ""
    try:
        targets.append(str(ipaddress.ip_address(host)))
    except ValueError:
        try:
            targets.append(socket.gethostbyname(host))
        except OSError:
            pass
    for dst in targets:
        ip = _route_source(dst)
        if ip and not ipaddress.ip_address(ip).is_loopback:
            return ip
    ip = _first_global_address()
    if ip:
        return ip
    raise ConfigError("cannot find this machine's node IP (no default route and no global address); pass --node-ip")


def _route_source(dst: str) -> str | None:
    from pyroute2 import IPRoute

    try:
        with IPRoute() as ipr:
            routes = ipr.route("get", dst=dst)
    except Exception:  # noqa: BLE001 - ENETUNREACH and friends: no route that way
        return None
    for route in routes:
        src = route.get_attr("RTA_PREFSRC")
        if src:
            return str(src)
    return None


def _first_global_address() -> str | None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for addr in ipr.get_addr(family=socket.AF_INET):
            ip = addr.get_attr("IFA_ADDRESS")
            if ip and not ipaddress.ip_address(ip).is_loopback and not ipaddress.ip_address(ip).is_link_local:
                return str(ip)
    return None


def describe(config: AgentConfig) -> dict[str, Any]:
    """Loggable summary (the token is never logged)."""
    return {"server": config.server, "node": config.node_name, "node_ip": ",".join(config.node_ips),
            "data_dir": str(config.data_dir), "egress_mode": config.egress_mode or "(server)"}
