"""This machine as a Node object: pure builders plus the registration calls.

The builders (``node_object``, ``node_status``) take every fact as an argument
so tests can check them without I/O; ``machine_facts()`` reads them from the
host. Registration follows the kubelet: create the Node; if it exists (an agent
restart), keep it, bring our labels up to date and post fresh status. Taints
are only set at registration (a node may not change its own taints later;
``kubectl taint`` does that).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgectl import __version__
from edgectl.log import fields

from .client import ApiClient, ApiError
from .config import AgentConfig

log = logging.getLogger(__name__)
Obj = dict[str, Any]

KUBE_VERSION = "v1.31.0"  # the API level the server emulates (kept in step with server discovery)
MAX_PODS = 110
CONTROL_PLANE_LABELS = {"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": "true"}


@dataclass(frozen=True, kw_only=True)
class MachineFacts:
    cpus: int
    memory_kib: int
    kernel: str
    os_image: str
    arch: str
    machine_id: str
    boot_id: str


def machine_facts() -> MachineFacts:
    return MachineFacts(
        cpus=os.cpu_count() or 1,
        memory_kib=_meminfo_kib(),
        kernel=platform.release(),
        os_image=_os_image(),
        arch=go_arch(platform.machine()),
        machine_id=_read("/etc/machine-id"),
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
    )


def go_arch(machine: str) -> str:
    """Kubernetes spells architectures the Go way."""
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_labels(config: AgentConfig, facts: MachineFacts) -> dict[str, str]:
    labels = {
        "kubernetes.io/hostname": config.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": facts.arch,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": facts.arch,
        "node.kubernetes.io/instance-type": "edgectl",
    }
    if config.control_plane:
        labels.update(CONTROL_PLANE_LABELS)
    labels.update(config.labels)  # the user's word wins
    return labels


def node_addresses(config: AgentConfig) -> list[Obj]:
    out = [{"type": "InternalIP", "address": ip} for ip in config.node_ips]
    out += [{"type": "ExternalIP", "address": ip} for ip in config.node_external_ips]
    out.append({"type": "Hostname", "address": config.node_name})
    return out


def ready_condition(*, ready: bool, message: str, now: str, since: str | None = None) -> Obj:
    return {
        "type": "Ready", "status": "True" if ready else "False",
        "reason": "KubeletReady" if ready else "KubeletNotReady",
        "message": message, "lastHeartbeatTime": now, "lastTransitionTime": since or now,
    }


def node_resources(facts: MachineFacts) -> dict[str, str]:
    """Capacity and allocatable (the same: nothing is reserved); resourceFieldRef
    env vars of containers without limits fall back to these."""
    return {"cpu": str(facts.cpus), "memory": f"{facts.memory_kib}Ki", "pods": str(MAX_PODS),
            "ephemeral-storage": "0"}


def node_status(config: AgentConfig, facts: MachineFacts, *, ready: bool, message: str, now: str,
                ready_since: str | None = None) -> Obj:
    resources = node_resources(facts)
    pressure = [
        {"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": now, "lastTransitionTime": ready_since or now}
        for t, r, m in (("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"))
    ]
    return {
        "addresses": node_addresses(config),
        "capacity": resources,
        "allocatable": dict(resources),
        "conditions": [*pressure, ready_condition(ready=ready, message=message, now=now, since=ready_since)],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet_port}},
        "nodeInfo": {
            "machineID": facts.machine_id, "systemUUID": facts.machine_id, "bootID": facts.boot_id,
            "kernelVersion": facts.kernel, "osImage": facts.os_image,
            "containerRuntimeVersion": f"process://{__version__}",
            "kubeletVersion": f"{KUBE_VERSION}+edgectl-{__version__}",
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": facts.arch,
        },
    }


def node_object(config: AgentConfig, facts: MachineFacts, *, now: str) -> Obj:
    spec: Obj = {}
    if config.taints:
        spec["taints"] = [dict(t) for t in config.taints]
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": config.node_name, "labels": node_labels(config, facts),
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                     "edgectl.io/node-ips": ",".join(config.node_ips)}},
        "spec": spec,
        "status": node_status(config, facts, ready=False, message="agent is starting", now=now),
    }


def condition(node: Obj, kind: str) -> Obj | None:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


def label_patch(existing: Obj, wanted: dict[str, str]) -> dict[str, str]:
    """Our labels whose value on the stored Node differs (others' labels stay)."""
    have = (existing.get("metadata") or {}).get("labels") or {}
    return {k: v for k, v in wanted.items() if have.get(k) != v}


# ---- API calls -----------------------------------------------------------------------


def node_path(name: str) -> str:
    return f"/api/v1/nodes/{name}"


async def register(client: ApiClient, config: AgentConfig, facts: MachineFacts) -> Obj:
    """Create or adopt this machine's Node; returns the stored object."""
    obj = node_object(config, facts, now=now_rfc3339())
    try:
        created = await client.create("/api/v1/nodes", obj)
        log.info("node registered", extra=fields(node=config.node_name))
        return created
    except ApiError as exc:
        if exc.code != 409:
            raise
    existing = await client.get(node_path(config.node_name))
    changes = label_patch(existing, obj["metadata"]["labels"])
    if changes:
        existing = await client.patch(node_path(config.node_name), {"metadata": {"labels": changes}})
    have = {(t.get("key"), t.get("value"), t.get("effect")) for t in (existing.get("spec") or {}).get("taints") or []}
    missing = [t for t in config.taints if (t.get("key"), t.get("value"), t.get("effect")) not in have]
    if missing:
        log.warning("taints are only applied when a node first registers; use `kubectl taint` to add them",
                    extra=fields(node=config.node_name, missing=",".join(f"{t['key']}:{t['effect']}" for t in missing)))
    log.info("node already registered; adopting it", extra=fields(node=config.node_name))
    return existing


async def post_status(client: ApiClient, config: AgentConfig, facts: MachineFacts, *, ready: bool, message: str,
                      ready_since: str | None = None) -> Obj:
    status = node_status(config, facts, ready=ready, message=message, now=now_rfc3339(), ready_since=ready_since)
    return await client.patch(f"{node_path(config.node_name)}/status", {"status": status}, strategic=True)


async def wait_pod_cidr(client: ApiClient, name: str, *, timeout: float = 30.0, interval: float = 0.05) -> str:
    """The podCIDR IPAM assigned to this node (it does so right after creation)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        node = await client.get(node_path(name))
        cidr = (node.get("spec") or {}).get("podCIDR")
        if cidr:
            return str(cidr)
        if loop.time() > deadline:
            raise TimeoutError(f"the server assigned no podCIDR to node {name} within {timeout:.0f}s "
                               "(is the cluster CIDR exhausted?)")
        await asyncio.sleep(interval)
        interval = min(interval * 2, 1.0)


def _meminfo_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""
