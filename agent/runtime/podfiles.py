"""Pod-level files and environment, rendered as text (pure functions).

Container runtimes give every pod its own ``/etc/hosts``, ``/etc/hostname``
and ``/etc/resolv.conf``; kubelet also injects service environment variables
(``KUBERNETES_SERVICE_HOST`` ...) so in-cluster clients find the API. The
process runtime writes these files per pod and bind-mounts them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .envsources import PodFacts, env_from_values, value_from
from .spec import ContainerSpec, PodSpec

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, kw_only=True)
class ClusterInfo:
    """Cluster-wide facts pods see (k3s defaults)."""

    api_service_ip: str = "10.43.0.1"
    api_service_port: int = 443
    cluster_domain: str = "cluster.local"
    cluster_dns: str | None = None  # None: pods use the host's resolv.conf


def hosts_file(pod: PodSpec, ips: Iterable[str], *, cluster_domain: str = "cluster.local") -> str:
    lines = [
        "# Kubernetes-managed hosts file (edgectl process runtime).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    for ip in ips:
        if pod.subdomain:
            fqdn = f"{pod.hostname}.{pod.subdomain}.{pod.namespace}.svc.{cluster_domain}"
            lines.append(f"{ip}\t{fqdn}\t{pod.hostname}")
        else:
            lines.append(f"{ip}\t{pod.hostname}")
    if pod.host_aliases:
        lines.append("# Entries added by HostAliases.")
        lines += [f"{ip}\t{' '.join(names)}" for ip, names in pod.host_aliases]
    return "\n".join(lines) + "\n"


def host_network_hosts_file(pod: PodSpec, node_hosts: str) -> str:
    """hostNetwork pods see the node's /etc/hosts (kubelet copies it), plus their hostAliases."""
    text = node_hosts if not node_hosts or node_hosts.endswith("\n") else node_hosts + "\n"
    if pod.host_aliases:
        text += "\n# Entries added by HostAliases.\n"
        text += "".join(f"{ip}\t{' '.join(names)}\n" for ip, names in pod.host_aliases)
    return text


def resolv_conf(pod: PodSpec, *, cluster: ClusterInfo, host_resolv: str) -> str:
    """ClusterFirst pods use the cluster DNS when there is one; others the host's
    file. With hostNetwork, ClusterFirst means the host's file (kubelet falls back
    to Default); ClusterFirstWithHostNet asks for the cluster DNS."""
    policies = ("ClusterFirstWithHostNet",) if pod.host_network else ("ClusterFirst", "ClusterFirstWithHostNet")
    if cluster.cluster_dns and pod.dns_policy in policies:
        d = cluster.cluster_domain
        return (
            f"search {pod.namespace}.svc.{d} svc.{d} {d}\n"
            f"nameserver {cluster.cluster_dns}\n"
            "options ndots:5\n"
        )
    return host_resolv


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def service_env(services: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Docker-link style variables for services (kubelet's envvars.FromServices)."""
    env: dict[str, str] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        ports = [p for p in spec.get("ports") or [] if isinstance(p, dict) and p.get("port")]
        if not ip or ip == "None" or not ports:
            continue
        n = _env_name(str((svc.get("metadata") or {}).get("name", "")))
        first = ports[0]
        env[f"{n}_SERVICE_HOST"] = ip
        env[f"{n}_SERVICE_PORT"] = str(first["port"])
        for p in ports:
            if p.get("name"):
                env[f"{n}_SERVICE_PORT_{_env_name(p['name'])}"] = str(p["port"])
        proto = str(first.get("protocol", "TCP")).lower()
        env[f"{n}_PORT"] = f"{proto}://{ip}:{first['port']}"
        for p in ports:
            pr = str(p.get("protocol", "TCP"))
            prefix = f"{n}_PORT_{p['port']}_{pr.upper()}"
            env[prefix] = f"{pr.lower()}://{ip}:{p['port']}"
            env[f"{prefix}_PROTO"] = pr.lower()
            env[f"{prefix}_PORT"] = str(p["port"])
            env[f"{prefix}_ADDR"] = ip
    return env


def kubernetes_service(cluster: ClusterInfo) -> dict[str, Any]:
    """The default/kubernetes service, used when the service list lacks it."""
    return {
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "spec": {"clusterIP": cluster.api_service_ip,
                 "ports": [{"name": "https", "port": cluster.api_service_port, "protocol": "TCP"}]},
    }


_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: unknown references stay as written, ``$$`` escapes."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _REF.sub(sub, text)


def container_env(
    pod: PodSpec,
    container: ContainerSpec,
    *,
    cluster: ClusterInfo,
    services: Iterable[Mapping[str, Any]] = (),
    facts: PodFacts = PodFacts(),
) -> dict[str, str]:
    """The full environment of one container, in kubelet's precedence order:
    service links, then ``envFrom`` in order, then ``env`` in order (each
    ``value`` expanded against what came before). Raises
    :class:`edgectl.agent.runtime.envsources.EnvError` for a reference that
    cannot be resolved."""
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", "HOSTNAME": facts.hostname or pod.hostname}
    svcs = list(services)
    if not any((s.get("metadata") or {}).get("name") == "kubernetes"
               and (s.get("metadata") or {}).get("namespace", "default") == "default" for s in svcs):
        svcs.append(kubernetes_service(cluster))
    same_ns = [s for s in svcs if (s.get("metadata") or {}).get("namespace", "default") == pod.namespace]
    master = [s for s in svcs if (s.get("metadata") or {}).get("namespace", "default") == "default"
              and (s.get("metadata") or {}).get("name") == "kubernetes"]
    env.update(service_env(same_ns if pod.enable_service_links else []))
    env.update(service_env(master))
    for src in container.env_from:
        env.update(env_from_values(pod, src, facts))
    for var in container.env:
        if var.source is None:
            env[var.name] = expand(var.value, env)
            continue
        value = value_from(pod, container, var.name, var.source, facts)
        if value is not None:  # an optional reference that is missing sets nothing
            env[var.name] = value
    return env


def container_argv(container: ContainerSpec, env: Mapping[str, str]) -> list[str]:
    return [expand(a, env) for a in container.argv]
