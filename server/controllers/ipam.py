"""Node IPAM: one /24 pod CIDR per node out of the cluster CIDR.

The allocation is derived from the stored nodes on every pass (no separate
allocation table), so it is stable across restarts and a deleted node's range
is free again as soon as the node object is gone.
"""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from edgectl.log import fields

from ..registry import Registry
from ..status import ApiError
from .loop import run_loop

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Net = ipaddress.IPv4Network

CLUSTER_CIDR = "10.42.0.0/16"
NODE_PREFIX = 24


def node_cidrs(node: Obj) -> list[Net]:
    """The IPv4 ranges a node already holds (podCIDR and podCIDRs)."""
    spec = node.get("spec") or {}
    texts = [spec.get("podCIDR"), *(spec.get("podCIDRs") or [])]
    out: list[Net] = []
    for text in texts:
        if not text:
            continue
        try:
            net = ipaddress.ip_network(str(text), strict=False)
        except ValueError:
            continue
        if isinstance(net, Net) and net not in out:
            out.append(net)
    return out


def allocate_cidr(used: Iterable[Net], cluster_cidr: str = CLUSTER_CIDR, *, prefix: int = NODE_PREFIX) -> Net | None:
    """The lowest /prefix in ``cluster_cidr`` overlapping nothing in ``used``."""
    cluster = ipaddress.IPv4Network(cluster_cidr)
    taken = [u for u in used if u.overlaps(cluster)]
    for candidate in cluster.subnets(new_prefix=prefix):
        if not any(candidate.overlaps(u) for u in taken):
            return candidate
    return None


def plan_ipam(nodes: list[Obj], cluster_cidr: str = CLUSTER_CIDR, *, prefix: int = NODE_PREFIX) -> tuple[dict[str, Net], list[str]]:
    """(node -> CIDR to assign, nodes left without one because the range is full).

    Nodes are served oldest first, so a burst of joins gets a deterministic
    order and an existing node never loses its range."""
    used = [net for node in nodes for net in node_cidrs(node)]
    plan: dict[str, Net] = {}
    exhausted: list[str] = []
    pending = [n for n in nodes if not node_cidrs(n) and not (n.get("metadata") or {}).get("deletionTimestamp")]
    pending.sort(key=lambda n: ((n["metadata"].get("creationTimestamp") or ""), n["metadata"]["name"]))
    for node in pending:
        net = allocate_cidr(used, cluster_cidr, prefix=prefix)
        if net is None:
            exhausted.append(node["metadata"]["name"])
            continue
        plan[node["metadata"]["name"]] = net
        used.append(net)
    return plan, exhausted


class NodeIPAM:
    def __init__(self, registry: Registry, *, cluster_cidr: str = CLUSTER_CIDR, prefix: int = NODE_PREFIX) -> None:
        self.registry = registry
        self.cluster_cidr = cluster_cidr
        self.prefix = prefix
        self.nodes = registry.resource("nodes")

    async def reconcile(self) -> float | None:
        nodes = (await self.registry.list(self.nodes)).items
        plan, exhausted = plan_ipam(nodes, self.cluster_cidr, prefix=self.prefix)
        for name in exhausted:
            log.error("no free pod CIDR for node", extra=fields(node=name, cluster_cidr=self.cluster_cidr))
        for name, net in plan.items():
            def assign(node: Obj, net: Net = net) -> Obj | None:
                if node_cidrs(node):
                    return None  # someone (an earlier pass) already assigned one
                spec = node.setdefault("spec", {})
                spec["podCIDR"] = str(net)
                spec["podCIDRs"] = [str(net)]
                return node

            try:
                await self.registry.guaranteed_update(self.nodes, None, name, assign)
            except ApiError as exc:
                if exc.code == 404:
                    continue  # deleted meanwhile
                raise
            log.info("pod CIDR assigned", extra=fields(node=name, pod_cidr=str(net)))
        return None

    async def run(self, *, resync: float = 30.0) -> None:
        await run_loop("node-ipam", self.registry, [(self.nodes, None)], self.reconcile, resync=resync)
