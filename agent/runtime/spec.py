"""Pod manifests (API-shaped dicts) turned into frozen, validated specs.

Only the fields the runtime acts on are kept; everything else in the pod dict
is ignored here. Validation problems that concern one container (no
``command``) are *not* errors: the container gets a waiting reason instead, as
kubelet does for an image it cannot pull. Problems that make the whole pod
unrunnable (no uid, no name) raise :class:`PodSpecError`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from edgectl.errors import EdgectlError

from .probes import KINDS as PROBE_KINDS, ProbeSpec, ProbeSpecError, parse_probe

DEFAULT_GRACE_SECONDS = 30
RESTART_POLICIES = ("Always", "OnFailure", "Never")


class PodSpecError(EdgectlError):
    """The pod dict lacks something every pod must have (uid, name)."""


@dataclass(frozen=True, kw_only=True)
class EnvSource:
    """One ``env[].valueFrom``; which fields matter depends on ``kind``."""

    kind: str  # fieldRef | resourceFieldRef | configMapKeyRef | secretKeyRef
    field_path: str = ""  # fieldRef
    resource: str = ""  # resourceFieldRef: limits.cpu, requests.memory ...
    container_name: str = ""  # resourceFieldRef; "" means this container
    divisor: str = ""  # resourceFieldRef; "" means 1
    name: str = ""  # configMapKeyRef / secretKeyRef: the object's name
    key: str = ""
    optional: bool = False


@dataclass(frozen=True, kw_only=True)
class EnvFromSource:
    """One ``envFrom`` entry."""

    kind: str  # configMapRef | secretRef
    name: str
    prefix: str = ""
    optional: bool = False


@dataclass(frozen=True, kw_only=True)
class EnvVar:
    name: str
    value: str = ""
    source: EnvSource | None = None  # valueFrom; resolved when the container starts


@dataclass(frozen=True, kw_only=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True, kw_only=True)
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    host_port: int | None = None
    host_ip: str = ""
    name: str = ""


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[EnvVar, ...]
    working_dir: str
    volume_mounts: tuple[VolumeMount, ...]
    ports: tuple[ContainerPort, ...]
    init: bool = False
    env_from: tuple[EnvFromSource, ...] = ()
    # resources.limits / resources.requests as (resource, quantity) pairs.
    limits: tuple[tuple[str, str], ...] = ()
    requests: tuple[tuple[str, str], ...] = ()
    # Fields the process runtime cannot honour; the container is refused with
    # these reasons instead of running silently with a different configuration.
    unsupported: tuple[str, ...] = ()
    # kind (liveness/readiness/startup) -> probe; init containers have none.
    probes: tuple[tuple[str, ProbeSpec], ...] = ()
    # The console: stdin open for attachers, closed after the first one (stdinOnce), a pty.
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False

    def probe(self, kind: str) -> ProbeSpec | None:
        return dict(self.probes).get(kind)

    def port_number(self, port: int | str) -> int | None:
        """A probe port: a number, or the name of one of this container's ports."""
        if isinstance(port, int):
            return port
        for p in self.ports:
            if p.name == port:
                return p.container_port
        return None

    @property
    def argv(self) -> tuple[str, ...]:
        """What gets exec'd. Without ``command`` there is nothing to run:
        the process runtime has no image entrypoint to fall back to."""
        return self.command + self.args


@dataclass(frozen=True, kw_only=True)
class VolumeSpec:
    name: str
    kind: str  # emptyDir, hostPath, or a projection kind (volumes.KINDS); others are unsupported
    host_path: str = ""
    medium: str = ""
    # configMap/secret/downwardAPI/projected: the raw source, parsed by volumes.parse
    source: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class PodSpec:
    uid: str
    namespace: str
    name: str
    hostname: str
    subdomain: str
    restart_policy: str
    grace_seconds: int
    init_containers: tuple[ContainerSpec, ...]
    containers: tuple[ContainerSpec, ...]
    volumes: tuple[VolumeSpec, ...]
    host_aliases: tuple[tuple[str, tuple[str, ...]], ...] = ()
    dns_policy: str = "ClusterFirst"
    enable_service_links: bool = True
    deleting: bool = False  # metadata.deletionTimestamp is set
    service_account: str = "default"
    node_name: str = ""
    host_network: bool = False  # the sandbox is the node's own network namespace
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def container(self, name: str) -> ContainerSpec | None:
        for c in self.init_containers + self.containers:
            if c.name == name:
                return c
        return None


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PodSpecError(f"{what} must be a list of strings")
    return tuple(str(v) for v in value)


ENV_SOURCES = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")


def _env_source(doc: Any) -> EnvSource | str:
    """Parse one valueFrom, or return why it cannot be used."""
    kinds = [k for k in ENV_SOURCES if isinstance(doc, dict) and isinstance(doc.get(k), dict)]
    if len(kinds) != 1:
        return f"valueFrom must set exactly one of {', '.join(ENV_SOURCES)}"
    kind = kinds[0]
    ref = doc[kind]
    if kind == "fieldRef":
        return EnvSource(kind=kind, field_path=str(ref.get("fieldPath") or ""))
    if kind == "resourceFieldRef":
        return EnvSource(kind=kind, resource=str(ref.get("resource") or ""),
                         container_name=str(ref.get("containerName") or ""), divisor=str(ref.get("divisor") or ""))
    if not ref.get("name") or not ref.get("key"):
        return f"valueFrom.{kind} needs name and key"
    return EnvSource(kind=kind, name=str(ref["name"]), key=str(ref["key"]), optional=ref.get("optional") is True)


def _env_from(doc: Any) -> EnvFromSource | str:
    kinds = [k for k in ("configMapRef", "secretRef") if isinstance(doc, dict) and isinstance(doc.get(k), dict)]
    if len(kinds) != 1:
        return "envFrom entries must set exactly one of configMapRef, secretRef"
    ref = doc[kinds[0]]
    if not ref.get("name"):
        return f"envFrom.{kinds[0]} needs a name"
    return EnvFromSource(kind=kinds[0], name=str(ref["name"]), prefix=str(doc.get("prefix") or ""),
                         optional=ref.get("optional") is True)


def _resource_list(doc: Any) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in doc.items())) if isinstance(doc, dict) else ()


def _container(doc: Mapping[str, Any], *, init: bool) -> ContainerSpec:
    name = doc.get("name")
    if not name or not isinstance(name, str):
        raise PodSpecError("every container needs a name")
    env = []
    unsupported = []
    for item in doc.get("env") or []:
        if isinstance(item, dict) and item.get("name"):
            if item.get("valueFrom") is not None:
                source = _env_source(item["valueFrom"])
                if isinstance(source, str):
                    unsupported.append(f"env {item['name']}: {source}")
                    continue
                env.append(EnvVar(name=str(item["name"]), source=source))
                continue
            env.append(EnvVar(name=str(item["name"]), value=str(item.get("value", ""))))
    env_from = []
    for item in doc.get("envFrom") or []:
        parsed = _env_from(item)
        if isinstance(parsed, str):
            unsupported.append(parsed)
        else:
            env_from.append(parsed)
    probes = []
    for kind in PROBE_KINDS if not init else ():
        try:
            probe = parse_probe(doc.get(f"{kind}Probe"), kind=kind)
        except ProbeSpecError as exc:
            unsupported.append(str(exc))
            continue
        if probe is not None:
            probes.append((kind, probe))
    resources = doc.get("resources") if isinstance(doc.get("resources"), dict) else {}
    mounts = tuple(
        VolumeMount(
            name=str(m.get("name", "")),
            mount_path=str(m.get("mountPath", "")),
            read_only=bool(m.get("readOnly", False)),
            sub_path=str(m.get("subPath", "")),
        )
        for m in doc.get("volumeMounts") or []
        if isinstance(m, dict)
    )
    ports = tuple(
        ContainerPort(
            container_port=int(p.get("containerPort", 0)),
            protocol=str(p.get("protocol", "TCP")),
            host_port=int(p["hostPort"]) if p.get("hostPort") else None,
            host_ip=str(p.get("hostIP", "")),
            name=str(p.get("name", "")),
        )
        for p in doc.get("ports") or []
        if isinstance(p, dict)
    )
    return ContainerSpec(
        name=name,
        image=str(doc.get("image", "")),
        command=_str_list(doc.get("command"), f"container {name}: command"),
        args=_str_list(doc.get("args"), f"container {name}: args"),
        env=tuple(env),
        working_dir=str(doc.get("workingDir") or ""),
        volume_mounts=mounts,
        ports=ports,
        init=init,
        env_from=tuple(env_from),
        limits=_resource_list(resources.get("limits")),
        requests=_resource_list(resources.get("requests")),
        unsupported=tuple(unsupported),
        probes=tuple(probes),
        stdin=doc.get("stdin") is True,
        stdin_once=doc.get("stdinOnce") is True,
        tty=doc.get("tty") is True,
    )


def _volume(doc: Mapping[str, Any]) -> VolumeSpec:
    name = str(doc.get("name", ""))
    if "emptyDir" in doc:
        return VolumeSpec(name=name, kind="emptyDir", medium=str((doc["emptyDir"] or {}).get("medium", "")))
    if "hostPath" in doc:
        return VolumeSpec(name=name, kind="hostPath", host_path=str((doc["hostPath"] or {}).get("path", "")))
    kinds = [k for k in doc if k != "name"]
    kind = kinds[0] if kinds else "unknown"
    source = doc.get(kind)
    return VolumeSpec(name=name, kind=kind, source=source if isinstance(source, dict) else {})


def parse_pod(doc: Mapping[str, Any]) -> PodSpec:
    """Turn an API pod dict into a :class:`PodSpec`; raise PodSpecError if unusable."""
    if not isinstance(doc, Mapping):
        raise PodSpecError("a pod must be a mapping")
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    uid, name = meta.get("uid"), meta.get("name")
    if not uid or not name:
        raise PodSpecError("pod needs metadata.uid and metadata.name")
    restart = spec.get("restartPolicy") or "Always"
    if restart not in RESTART_POLICIES:
        raise PodSpecError(f"pod {name}: restartPolicy must be one of {', '.join(RESTART_POLICIES)}")
    grace = spec.get("terminationGracePeriodSeconds")
    if meta.get("deletionGracePeriodSeconds") is not None:
        grace = meta["deletionGracePeriodSeconds"]
    aliases = tuple(
        (str(a.get("ip", "")), tuple(str(h) for h in a.get("hostnames") or ()))
        for a in spec.get("hostAliases") or []
        if isinstance(a, dict)
    )
    return PodSpec(
        uid=str(uid),
        namespace=str(meta.get("namespace") or "default"),
        name=str(name),
        hostname=str(spec.get("hostname") or name),
        subdomain=str(spec.get("subdomain") or ""),
        restart_policy=restart,
        grace_seconds=DEFAULT_GRACE_SECONDS if grace is None else max(0, int(grace)),
        init_containers=tuple(_container(c, init=True) for c in spec.get("initContainers") or []),
        containers=tuple(_container(c, init=False) for c in spec.get("containers") or []),
        volumes=tuple(_volume(v) for v in spec.get("volumes") or [] if isinstance(v, dict)),
        host_aliases=aliases,
        dns_policy=str(spec.get("dnsPolicy") or "ClusterFirst"),
        enable_service_links=spec.get("enableServiceLinks", True) is not False,
        deleting=bool(meta.get("deletionTimestamp")),
        service_account=str(spec.get("serviceAccountName") or "default"),
        node_name=str(spec.get("nodeName") or ""),
        host_network=spec.get("hostNetwork") is True,
        raw=doc,
    )
