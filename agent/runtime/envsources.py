"""``env[].valueFrom`` and ``envFrom``: the values kubelet fills in (pure).

Everything here runs when a container starts, after its sandbox exists, so
``status.podIP`` is known. ConfigMaps and Secrets are fetched by the manager
through a :class:`ConfigMapSource` per kind that the agent injects (the
runtime never calls the API; the server lets a node get exactly the Secrets
its pods reference) and handed in as plain dicts; a name missing from that
dict was not found. Both kinds share one code path, :data:`KINDS`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping, Protocol

from .spec import ContainerSpec, EnvFromSource, EnvSource, PodSpec


class EnvError(Exception):
    """A reference cannot be resolved: the container waits with CreateContainerConfigError."""


class ConfigMapLookupError(Exception):
    """The API could not be asked (unreachable, 403 ...): not the same as "not found".
    Raised by ConfigMap and Secret sources alike."""


class ConfigMapSource(Protocol):
    """Read one ConfigMap's (or Secret's, decoded) ``data``; ``None`` when it does not exist."""

    async def get(self, namespace: str, name: str) -> Mapping[str, str] | None: ...


class StaticConfigMaps:
    """A ConfigMapSource (either kind) backed by a dict ``{(namespace, name): data}`` (tests, fixed setups)."""

    def __init__(self, items: Mapping[tuple[str, str], Mapping[str, str]] | None = None) -> None:
        self.items: dict[tuple[str, str], Mapping[str, str]] = dict(items or {})

    async def get(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.items.get((namespace, name))


@dataclass(frozen=True, kw_only=True)
class PodFacts:
    """What only the node knows when the container starts."""

    pod_ips: tuple[str, ...] = ()
    host_ips: tuple[str, ...] = ()
    allocatable: Mapping[str, str] | None = None  # node allocatable: limits default to it
    configmaps: Mapping[str, Mapping[str, str]] | None = None  # name -> data, this pod's namespace
    secrets: Mapping[str, Mapping[str, str]] | None = None  # name -> decoded data, this pod's namespace
    hostname: str = ""  # the container's hostname when not the pod's (hostNetwork: the node's)


# ---- quantities -------------------------------------------------------------------

_SUFFIX = {
    "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)")


def parse_quantity(text: str) -> Fraction:
    """A Kubernetes resource quantity (``500m``, ``1.5Gi``, ``2e3``) as an exact number."""
    m = _QUANTITY.fullmatch(text.strip())
    if not m:
        raise EnvError(f"{text!r} is not a resource quantity")
    number = Fraction(m.group(1))
    if m.group(2):
        return number * Fraction(10) ** int(m.group(2)[1:])
    return number * _SUFFIX[m.group(3) or ""]


# ---- fieldRef ------------------------------------------------------------------------

_SUBSCRIPT = re.compile(r"metadata\.(labels|annotations)\['(.*)'\]")
FIELD_PATHS = ("metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels['<key>']",
               "metadata.annotations['<key>']", "spec.nodeName", "spec.serviceAccountName",
               "status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs")


def field_value(pod: PodSpec, path: str, facts: PodFacts) -> str:
    """The downward API for env vars (kubelet's podFieldSelectorRuntimeValue)."""
    meta = pod.raw.get("metadata") or {}
    m = _SUBSCRIPT.fullmatch(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": pod.name, "metadata.namespace": pod.namespace, "metadata.uid": pod.uid,
        "spec.nodeName": pod.node_name, "spec.serviceAccountName": pod.service_account,
        "status.podIP": facts.pod_ips[0] if facts.pod_ips else "", "status.podIPs": ",".join(facts.pod_ips),
        "status.hostIP": facts.host_ips[0] if facts.host_ips else "", "status.hostIPs": ",".join(facts.host_ips),
    }
    if path not in simple:
        raise EnvError(f"fieldRef.fieldPath {path!r} is not supported (supported: {', '.join(FIELD_PATHS)})")
    return simple[path]


# ---- resourceFieldRef -------------------------------------------------------------------

RESOURCES = ("limits.cpu", "limits.memory", "limits.ephemeral-storage",
             "requests.cpu", "requests.memory", "requests.ephemeral-storage")


def resource_value(pod: PodSpec, container: ContainerSpec, src: EnvSource, facts: PodFacts) -> str:
    """kubelet's rules: an unset limit is the node's allocatable, an unset
    request is the limit (API defaulting) or 0; the result is
    ceil(value / divisor), with CPU counted in millicores first."""
    if src.resource not in RESOURCES:
        raise EnvError(f"resourceFieldRef.resource {src.resource!r} is not supported "
                       f"(supported: {', '.join(RESOURCES)})")
    target = pod.container(src.container_name) if src.container_name else container
    if target is None:
        raise EnvError(f"resourceFieldRef.containerName {src.container_name!r}: no such container in the pod")
    kind, resource = src.resource.split(".", 1)
    limits, requests = dict(target.limits), dict(target.requests)
    raw = limits.get(resource) if kind == "limits" else requests.get(resource, limits.get(resource))
    if raw is None and kind == "limits":
        raw = (facts.allocatable or {}).get(resource)
        if raw is None:
            raise EnvError(f"resourceFieldRef {src.resource}: the container has no limit and the node's "
                           f"allocatable {resource} is unknown")
    value = parse_quantity(raw or "0")
    divisor = parse_quantity(src.divisor or "1")
    if resource == "cpu":  # kubelet divides MilliValues, each rounded up
        value, divisor = Fraction(math.ceil(value * 1000)), Fraction(math.ceil(divisor * 1000))
    else:
        value, divisor = Fraction(math.ceil(value)), Fraction(math.ceil(divisor))
    if divisor <= 0:
        raise EnvError(f"resourceFieldRef {src.resource}: divisor {src.divisor!r} must be positive")
    return str(math.ceil(value / divisor))


# ---- configMaps and secrets ---------------------------------------------------------------


@dataclass(frozen=True)
class DataKind:
    """What differs between ConfigMap and Secret references: names and wording."""

    word: str  # "configmap" / "secret", as kubelet's not-found message
    title: str  # "ConfigMap" / "Secret"
    key_ref: str  # env[].valueFrom kind
    from_ref: str  # envFrom kind
    facts_field: str  # the PodFacts field holding the fetched data


CONFIGMAP = DataKind("configmap", "ConfigMap", "configMapKeyRef", "configMapRef", "configmaps")
SECRET = DataKind("secret", "Secret", "secretKeyRef", "secretRef", "secrets")
KINDS = (CONFIGMAP, SECRET)
_BY_REF = {k.key_ref: k for k in KINDS} | {k.from_ref: k for k in KINDS}
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def referenced_names(container: ContainerSpec, kind: DataKind) -> list[str]:
    """Objects of ``kind`` (in the pod's namespace) the manager must fetch before starting ``container``."""
    names = [f.name for f in container.env_from if f.kind == kind.from_ref]
    names += [v.source.name for v in container.env if v.source and v.source.kind == kind.key_ref]
    return list(dict.fromkeys(names))


def configmap_names(container: ContainerSpec) -> list[str]:
    return referenced_names(container, CONFIGMAP)


def secret_names(container: ContainerSpec) -> list[str]:
    return referenced_names(container, SECRET)


def _data(kind: DataKind, name: str, facts: PodFacts) -> Mapping[str, str] | None:
    return (getattr(facts, kind.facts_field) or {}).get(name)


def env_from_values(pod: PodSpec, src: EnvFromSource, facts: PodFacts) -> dict[str, str]:
    """One envFrom entry. Keys that are not valid variable names are skipped, as kubelet does."""
    kind = _BY_REF[src.kind]
    data = _data(kind, src.name, facts)
    if data is None:
        if src.optional:
            return {}
        raise EnvError(f'{kind.word} "{src.name}" not found')
    return {src.prefix + k: str(v) for k, v in data.items() if _ENV_NAME.fullmatch(src.prefix + k)}


def value_from(pod: PodSpec, container: ContainerSpec, name: str, src: EnvSource,
               facts: PodFacts) -> str | None:
    """The value of one valueFrom variable; None when an optional reference is missing."""
    try:
        if src.kind == "fieldRef":
            return field_value(pod, src.field_path, facts)
        if src.kind == "resourceFieldRef":
            return resource_value(pod, container, src, facts)
        kind = _BY_REF[src.kind]
        data = _data(kind, src.name, facts)
        if data is None:
            if src.optional:
                return None
            raise EnvError(f'{kind.word} "{src.name}" not found')
        if src.key not in data:
            if src.optional:
                return None
            raise EnvError(f"couldn't find key {src.key} in {kind.title} {pod.namespace}/{src.name}")
        return str(data[src.key])
    except EnvError as exc:
        raise EnvError(f"env {name}: {exc}") from None
