"""CNI 1.0 with the real plugins: conflist loading, ADD/CHECK/DEL, results, errors.

A conflist is run plugin by plugin, as libcni does: ADD in order, each plugin
getting the previous plugin's result as ``prevResult``; CHECK in order with
the cached ADD result; DEL in reverse order with it too. Parameters go in the
``CNI_*`` environment variables and the plugin config on stdin. A plugin that
fails prints ``{"code": N, "msg": ..., "details": ...}``, which becomes a
:class:`CniError` naming the plugin.

Building the invocation (:func:`plugin_invocation`) and reading its output
(:func:`parse_result`, :func:`parse_error`) are pure; :class:`CniNetwork`
only adds the subprocess calls.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgectl.log import fields

from . import childproc
from .interface import SandboxError

log = logging.getLogger(__name__)

CNI_VERSION = "1.0.0"
DEFAULT_CONFLIST_NAME = "10-edgectl.conflist"
DEFAULT_NETWORK_NAME = "edgectl"
PLUGIN_TIMEOUT = 60.0
# containerd attaches loopback as its own one-plugin network on "lo".
LOOPBACK = {"cniVersion": CNI_VERSION, "name": "cni-loopback", "plugins": [{"type": "loopback"}]}


class CniError(SandboxError):
    """A CNI plugin failed; carries the plugin's error code, msg and details."""

    def __init__(self, message: str, *, plugin: str = "", code: int = 0, details: str = "") -> None:
        super().__init__(message)
        self.plugin = plugin
        self.code = code
        self.details = details


@dataclass(frozen=True, kw_only=True)
class NetworkConfigList:
    name: str
    cni_version: str
    plugins: tuple[Mapping[str, Any], ...]
    path: str = ""

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, path: str = "") -> "NetworkConfigList":
        where = path or "conflist"
        if not isinstance(doc, Mapping):
            raise CniError(f"{where}: not a JSON object")
        if "plugins" not in doc and "type" in doc:  # a single-plugin .conf file
            doc = {"cniVersion": doc.get("cniVersion", CNI_VERSION), "name": doc.get("name"), "plugins": [doc]}
        plugins = doc.get("plugins")
        if not doc.get("name") or not isinstance(plugins, list) or not plugins:
            raise CniError(f"{where}: needs a name and a non-empty plugins list")
        for p in plugins:
            if not isinstance(p, Mapping) or not p.get("type"):
                raise CniError(f"{where}: every plugin needs a type")
        return cls(name=str(doc["name"]), cni_version=str(doc.get("cniVersion") or CNI_VERSION),
                   plugins=tuple(plugins), path=path)


def default_conflist(*, pod_cidr: str, lease_dir: str = "", bridge: str = "cni0", mtu: int | None = None,
                     name: str = DEFAULT_NETWORK_NAME) -> dict[str, Any]:
    """bridge + host-local on the node's podCIDR, then portmap (k3s' default shape).

    ``lease_dir`` keeps host-local's leases under the agent's data dir, so nodes
    that share /var/lib (lab nodes) never see each other's leases."""
    net = ipaddress.ip_network(pod_cidr, strict=True)
    bridge_conf: dict[str, Any] = {
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": True,
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": str(net)}]],
            "routes": [{"dst": "0.0.0.0/0" if net.version == 4 else "::/0"}],
        },
    }
    if lease_dir:
        bridge_conf["ipam"]["dataDir"] = lease_dir
    if mtu:
        bridge_conf["mtu"] = mtu
    return {
        "cniVersion": CNI_VERSION,
        "name": name,
        "plugins": [bridge_conf, {"type": "portmap", "capabilities": {"portMappings": True}}],
    }


def ensure_default_conflist(conf_dir: Path, *, pod_cidr: str, lease_dir: str = "", mtu: int | None = None) -> Path:
    """Write ``10-edgectl.conflist`` unless it already says the same (atomic)."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / DEFAULT_CONFLIST_NAME
    text = json.dumps(default_conflist(pod_cidr=pod_cidr, lease_dir=lease_dir, mtu=mtu), indent=2) + "\n"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def load_conflist(conf_dir: Path) -> NetworkConfigList:
    """The first ``*.conflist``/``*.conf``/``*.json`` in lexical order, as libcni picks it."""
    try:
        names = sorted(p for p in conf_dir.iterdir() if p.suffix in (".conflist", ".conf", ".json"))
    except FileNotFoundError:
        names = []
    if not names:
        raise CniError(f"no CNI network config in {conf_dir}")
    path = names[0]
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CniError(f"{path}: cannot read CNI config: {exc}") from None
    return NetworkConfigList.from_dict(doc, path=str(path))


DEFAULT_LEASE_ROOT = "/var/lib/cni/networks"


@dataclass(frozen=True, kw_only=True)
class LeaseDir:
    """Where host-local keeps one network's leases, and the ranges it hands out."""

    path: Path
    subnets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def host_local_lease_dirs(net: NetworkConfigList) -> list[LeaseDir]:
    """Lease directories of the host-local IPAM sections in ``net`` (for GC)."""
    out = []
    for plugin in net.plugins:
        ipam = plugin.get("ipam") or {}
        if ipam.get("type") != "host-local":
            continue
        subnets = []
        for rng in ipam.get("ranges") or []:
            for r in rng:
                try:
                    subnets.append(ipaddress.ip_network(r["subnet"], strict=False))
                except (KeyError, ValueError, TypeError):
                    continue
        if ipam.get("subnet"):  # the older single-subnet form
            subnets.append(ipaddress.ip_network(ipam["subnet"], strict=False))
        out.append(LeaseDir(path=Path(ipam.get("dataDir") or DEFAULT_LEASE_ROOT) / net.name, subnets=tuple(subnets)))
    return out


@dataclass(frozen=True, kw_only=True)
class CniIP:
    address: str  # with prefix length, e.g. 10.42.0.5/24
    gateway: str = ""
    interface: int | None = None

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


@dataclass(frozen=True, kw_only=True)
class CniResult:
    cni_version: str
    interfaces: tuple[Mapping[str, Any], ...] = ()
    ips: tuple[CniIP, ...] = ()
    routes: tuple[Mapping[str, Any], ...] = ()
    dns: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    def pod_ips(self, netns: str) -> tuple[str, ...]:
        """IPs on interfaces inside ``netns`` (a result also lists host-side veths/bridges)."""
        out = []
        for ip in self.ips:
            iface = self.interfaces[ip.interface] if ip.interface is not None and ip.interface < len(self.interfaces) else {}
            if ip.interface is None or iface.get("sandbox") == netns:
                out.append(ip.ip)
        return tuple(out)


def parse_result(raw: bytes, *, plugin: str) -> CniResult:
    try:
        doc = json.loads(raw or b"{}")
        ips = tuple(
            CniIP(address=str(i["address"]), gateway=str(i.get("gateway", "")), interface=i.get("interface"))
            for i in doc.get("ips") or []
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CniError(f"CNI plugin {plugin} returned an unreadable result: {exc}", plugin=plugin) from None
    return CniResult(
        cni_version=str(doc.get("cniVersion", "")),
        interfaces=tuple(doc.get("interfaces") or ()),
        ips=ips,
        routes=tuple(doc.get("routes") or ()),
        dns=doc.get("dns") or {},
        raw=doc,
    )


def parse_error(*, plugin: str, command: str, returncode: int, stdout: bytes, stderr: bytes) -> CniError:
    """Turn a failed plugin run into an error whose message a user can act on."""
    code, msg, details = 0, "", ""
    try:
        doc = json.loads(stdout)
        code, msg, details = int(doc.get("code", 0)), str(doc.get("msg", "")), str(doc.get("details", ""))
    except (ValueError, TypeError, AttributeError):
        msg = (stderr or stdout).decode(errors="replace").strip()[-500:]
    text = f"CNI {command} failed in plugin {plugin}"
    text += f": {msg}" if msg else f" (exit {returncode})"
    if details:
        text += f" ({details})"
    return CniError(text, plugin=plugin, code=code, details=details)


def plugin_invocation(
    *,
    command: str,
    net: NetworkConfigList,
    plugin: Mapping[str, Any],
    container_id: str,
    netns: str,
    ifname: str,
    bin_dirs: Sequence[Path],
    prev_result: Mapping[str, Any] | None = None,
    runtime_config: Mapping[str, Any] | None = None,
    cni_args: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], bytes]:
    """The environment and stdin for one plugin call (CNI spec section 'Execution')."""
    conf = {k: v for k, v in plugin.items() if k != "capabilities" or v}
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    if prev_result is not None:
        conf["prevResult"] = dict(prev_result)
    caps = plugin.get("capabilities") or {}
    rc = {k: v for k, v in (runtime_config or {}).items() if caps.get(k)}
    if rc:
        conf["runtimeConfig"] = rc
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": ":".join(str(d) for d in bin_dirs),
    }
    if cni_args:
        env["CNI_ARGS"] = ";".join(["IgnoreUnknown=1", *(f"{k}={v}" for k, v in cni_args.items())])
    return env, json.dumps(conf).encode()


def find_plugin(kind: str, bin_dirs: Sequence[Path]) -> Path:
    for d in bin_dirs:
        path = d / kind
        if os.access(path, os.X_OK):
            return path
    raise CniError(f"CNI plugin {kind} not found in {':'.join(map(str, bin_dirs))}", plugin=kind)


@dataclass(frozen=True, kw_only=True)
class Attachment:
    """What identifies one ADD, needed again for CHECK and DEL."""

    container_id: str
    netns: str
    ifname: str
    runtime_config: Mapping[str, Any] = field(default_factory=dict)
    cni_args: Mapping[str, str] = field(default_factory=dict)


class CniNetwork:
    """Runs one conflist's plugins as subprocesses."""

    def __init__(self, net: NetworkConfigList, *, bin_dirs: Sequence[Path]) -> None:
        self.net = net
        self.bin_dirs = tuple(bin_dirs)

    async def _run(self, command: str, plugin: Mapping[str, Any], att: Attachment,
                   prev: Mapping[str, Any] | None) -> bytes:
        kind = str(plugin["type"])
        exe = find_plugin(kind, self.bin_dirs)
        env, stdin = plugin_invocation(
            command=command, net=self.net, plugin=plugin, container_id=att.container_id, netns=att.netns,
            ifname=att.ifname, bin_dirs=self.bin_dirs, prev_result=prev, runtime_config=att.runtime_config,
            cni_args=att.cni_args,
        )
        try:
            # childproc, not asyncio's subprocess transport: a cancel (agent stop
            # during an adopted pod's CHECK) must never wedge on the child.
            done = await childproc.run([str(exe)], env=env, stdin=stdin, timeout=PLUGIN_TIMEOUT)
        except TimeoutError:
            raise CniError(f"CNI {command} timed out in plugin {kind}", plugin=kind) from None
        out, err = done.stdout, done.stderr
        if done.returncode != 0:
            raise parse_error(plugin=kind, command=command, returncode=done.returncode, stdout=out, stderr=err)
        log.debug("cni plugin ran", extra=fields(command=command, plugin=kind, id=att.container_id))
        return out

    async def add(self, att: Attachment) -> CniResult:
        prev: Mapping[str, Any] | None = None
        result = CniResult(cni_version=self.net.cni_version)
        for plugin in self.net.plugins:
            result = parse_result(await self._run("ADD", plugin, att, prev), plugin=str(plugin["type"]))
            prev = result.raw
        return result

    async def check(self, att: Attachment, result: Mapping[str, Any]) -> None:
        for plugin in self.net.plugins:
            await self._run("CHECK", plugin, att, result)

    async def delete(self, att: Attachment, result: Mapping[str, Any] | None) -> None:
        """DEL in reverse order; keeps going after a failure so that as much as
        possible (the IP lease above all) is released, then reports the first error."""
        first: CniError | None = None
        for plugin in reversed(self.net.plugins):
            try:
                await self._run("DEL", plugin, att, result)
            except CniError as exc:
                first = first or exc
        if first:
            raise first
