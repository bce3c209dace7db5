"""The ``default/kubernetes`` Service and its Endpoints.

ClusterIP 10.43.0.1 (the first address of the service CIDR), port 443 to the
servers' HTTPS port; the Endpoints list every server address, which is what
the agent's load balancer reads to find the control plane.
"""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

from edgectl.errors import ConfigError
from edgectl.log import fields

from ..registry import Registry
from ..status import ApiError
from .loop import run_loop

log = logging.getLogger(__name__)
Obj = dict[str, Any]

NAMESPACE = "default"
NAME = "kubernetes"
LABELS = {"component": "apiserver", "provider": "kubernetes"}


def desired_service(service_cidr: str = "10.43.0.0/16", https_port: int = 6443) -> Obj:
    ip = str(ipaddress.ip_network(service_cidr).network_address + 1)
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": https_port}]},
    }


def desired_endpoints(addresses: Sequence[str], https_port: int = 6443) -> Obj:
    ips = sorted(set(addresses), key=lambda a: ipaddress.ip_address(a))
    subsets = [{"addresses": [{"ip": ip} for ip in ips],
                "ports": [{"name": "https", "port": https_port, "protocol": "TCP"}]}] if ips else []
    return {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets,
    }


def service_drift(live: Obj, want: Obj) -> Obj | None:
    """The live Service corrected to ours, or None when it already matches.
    clusterIP is immutable, so a wrong one is reported, not fixed here."""
    spec, want_spec = live.setdefault("spec", {}), want["spec"]
    changed = False
    if spec.get("ports") != want_spec["ports"]:
        spec["ports"] = want_spec["ports"]
        changed = True
    labels = live["metadata"].setdefault("labels", {})
    for k, v in LABELS.items():
        if labels.get(k) != v:
            labels[k] = v
            changed = True
    return live if changed else None


def endpoints_drift(live: Obj, want: Obj) -> Obj | None:
    if live.get("subsets") == want["subsets"]:
        return None
    live["subsets"] = want["subsets"]
    return live


class KubernetesService:
    def __init__(self, registry: Registry, *, server_addresses: Sequence[str], https_port: int = 6443,
                 service_cidr: str = "10.43.0.0/16") -> None:
        for a in server_addresses:
            try:
                ipaddress.ip_address(a)
            except ValueError:  # a configuration error: fail at start, in one line
                raise ConfigError(f"server address {a!r} is not an IP address") from None
        self.registry = registry
        self.addresses = list(server_addresses)
        self.https_port = https_port
        self.service_cidr = service_cidr
        self.services = registry.resource("services")
        self.endpoints = registry.resource("endpoints")

    async def _ensure(self, res: Any, want: Obj, drift: Any) -> None:
        try:
            await self.registry.guaranteed_update(res, NAMESPACE, NAME, lambda live: drift(live, want))
        except ApiError as exc:
            if exc.code != 404:
                raise
            try:
                await self.registry.create(res, want, namespace=NAMESPACE)
                log.info("created", extra=fields(kind=want["kind"], name=f"{NAMESPACE}/{NAME}"))
            except ApiError as exc2:
                if exc2.code != 409:  # created meanwhile: next pass compares
                    raise

    async def reconcile(self) -> float | None:
        want_svc = desired_service(self.service_cidr, self.https_port)
        await self._ensure(self.services, want_svc, service_drift)
        await self._ensure(self.endpoints, desired_endpoints(self.addresses, self.https_port), endpoints_drift)
        return None

    async def run(self, *, resync: float = 30.0) -> None:
        await run_loop("kubernetes-service", self.registry,
                       [(self.services, NAMESPACE), (self.endpoints, NAMESPACE)], self.reconcile, resync=resync)
