"""configMap, secret, downwardAPI and projected volumes: what their files are (pure).

Every one of these kinds is a *projection*: a list of sources, each giving
files (path → bytes and mode) that the atomic writer (``atomicwriter.py``)
puts under the pod's volume directory. A plain ``configMap`` volume is a
projection with one source, so all four kinds share one code path, as
upstream's projected plugin shares its helpers with the others.

The manager fetches the referenced objects through the same injected
sources as env (the runtime never calls the API) and hands them in as
``{(kind, name): files or None}``; ``None`` means not found. Messages follow
kubelet's ``MountVolume.SetUp`` errors (``configmap "x" not found``,
``configmap references non-existent config key: k``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Protocol, Union

from . import envsources
from .atomicwriter import FileProjection, PayloadError, clean_payload, validate_mode, validate_path
from .envsources import EnvError, PodFacts
from .spec import EnvSource, PodSpec, VolumeSpec

KINDS = ("configMap", "secret", "downwardAPI", "projected")
PROJECTED_SOURCES = ("configMap", "secret", "downwardAPI")
DEFAULT_MODE = 0o644  # the API's default for defaultMode of all four kinds
CONFIGMAP, SECRET = "configmap", "secret"  # kubelet's words, and the keys of ``objects``


class VolumeError(Exception):
    """The volume cannot be set up; the message is kubelet's SetUp error."""


class ObjectFiles(Protocol):
    """A ConfigMap's ``data`` + ``binaryData`` or a Secret's decoded ``data``, as bytes."""

    async def get_files(self, namespace: str, name: str) -> Mapping[str, bytes] | None: ...


class StaticObjectFiles:
    """Both source protocols over a dict ``{(namespace, name): {key: bytes}}`` (tests)."""

    def __init__(self, items: Mapping[tuple[str, str], Mapping[str, bytes]] | None = None) -> None:
        self.items: dict[tuple[str, str], Mapping[str, bytes]] = dict(items or {})

    async def get_files(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        return self.items.get((namespace, name))

    async def get(self, namespace: str, name: str) -> Mapping[str, str] | None:
        files = self.items.get((namespace, name))
        return None if files is None else {k: v.decode("utf-8", "surrogateescape") for k, v in files.items()}


async def fetch_files(source: Any, namespace: str, name: str) -> Mapping[str, bytes] | None:
    """Files of one object from an env ``ConfigMapSource`` or an :class:`ObjectFiles`
    (``None`` source: nothing exists). Lookup failures raise VolumeError."""
    if source is None:
        return None
    try:
        if hasattr(source, "get_files"):
            return await source.get_files(namespace, name)
        data = await source.get(namespace, name)
    except envsources.ConfigMapLookupError as exc:
        raise VolumeError(str(exc)) from None
    return None if data is None else {k: str(v).encode("utf-8", "surrogateescape") for k, v in data.items()}


# ---- parsed sources -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class KeyToPath:
    key: str
    path: str
    mode: int | None = None


@dataclass(frozen=True, kw_only=True)
class ObjectSource:
    """A configMap or secret source (of a volume or of a projection)."""

    kind: str  # CONFIGMAP | SECRET
    name: str
    items: tuple[KeyToPath, ...] = ()
    optional: bool = False


@dataclass(frozen=True, kw_only=True)
class DownwardFile:
    path: str
    mode: int | None = None
    field_path: str = ""  # fieldRef
    resource: EnvSource | None = None  # resourceFieldRef


@dataclass(frozen=True, kw_only=True)
class DownwardSource:
    items: tuple[DownwardFile, ...]


Source = Union[ObjectSource, DownwardSource]


@dataclass(frozen=True, kw_only=True)
class Projection:
    """One volume of the four kinds, normalised to sources and a default mode."""

    name: str
    kind: str
    default_mode: int
    sources: tuple[Source, ...]

    def objects(self) -> list[tuple[str, str]]:
        """``(kind, name)`` of every ConfigMap and Secret it reads."""
        return list(dict.fromkeys((s.kind, s.name) for s in self.sources if isinstance(s, ObjectSource)))


def _dict(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise VolumeError(f"{what} must be an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise VolumeError(f"{what} must be a list")
    return value


def _mode(value: Any, what: str) -> int | None:
    if value is None:
        return None
    try:
        return validate_mode(value, what=what)
    except PayloadError as exc:
        raise VolumeError(str(exc)) from None


def _path(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise VolumeError(f"{what}: Required value")
    try:
        validate_path(value)
    except PayloadError as exc:
        raise VolumeError(f"{what}: {exc}") from None
    return value


def _key_to_paths(items: Any, what: str) -> tuple[KeyToPath, ...]:
    out = []
    for i, item in enumerate(_list(items, f"{what}.items")):
        item = _dict(item, f"{what}.items[{i}]")
        key = item.get("key")
        if not isinstance(key, str) or not key:
            raise VolumeError(f"{what}.items[{i}].key: Required value")
        out.append(KeyToPath(key=key, path=_path(item.get("path"), f"{what}.items[{i}].path"),
                             mode=_mode(item.get("mode"), f"{what}.items[{i}].mode")))
    return tuple(out)


def _object_source(doc: Mapping[str, Any], *, kind: str, name_field: str, what: str) -> ObjectSource:
    name = doc.get(name_field)
    if not isinstance(name, str) or not name:
        raise VolumeError(f"{what}.{name_field}: Required value")
    return ObjectSource(kind=kind, name=name, items=_key_to_paths(doc.get("items"), what),
                        optional=doc.get("optional") is True)


_LABEL_PATH = re.compile(r"metadata\.(labels|annotations)\['(.*)'\]")
VOLUME_FIELD_PATHS = ("metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace",
                      "metadata.uid")


def _downward_source(doc: Mapping[str, Any], what: str) -> DownwardSource:
    files = []
    for i, item in enumerate(_list(doc.get("items"), f"{what}.items")):
        at = f"{what}.items[{i}]"
        item = _dict(item, at)
        path = _path(item.get("path"), f"{at}.path")
        mode = _mode(item.get("mode"), f"{at}.mode")
        field_ref = _dict(item.get("fieldRef"), f"{at}.fieldRef")
        res_ref = _dict(item.get("resourceFieldRef"), f"{at}.resourceFieldRef")
        if bool(field_ref) == bool(res_ref):
            raise VolumeError(f"{at}: must set exactly one of fieldRef, resourceFieldRef")
        if field_ref:
            fp = str(field_ref.get("fieldPath") or "")
            if fp not in VOLUME_FIELD_PATHS and not _LABEL_PATH.fullmatch(fp):
                raise VolumeError(f'{at}.fieldRef.fieldPath: Unsupported value: "{fp}": supported values: '
                                  + ", ".join(f'"{p}"' for p in VOLUME_FIELD_PATHS))
            files.append(DownwardFile(path=path, mode=mode, field_path=fp))
            continue
        container = res_ref.get("containerName")
        if not isinstance(container, str) or not container:
            raise VolumeError(f"{at}.resourceFieldRef.containerName: Required value")
        files.append(DownwardFile(path=path, mode=mode, resource=EnvSource(
            kind="resourceFieldRef", resource=str(res_ref.get("resource") or ""), container_name=container,
            divisor=str(res_ref.get("divisor") or ""))))
    return DownwardSource(items=tuple(files))


def parse(volume: VolumeSpec) -> Projection:
    """The volume's sources; bad input raises VolumeError naming the field."""
    doc = _dict(volume.source, volume.kind)
    what = volume.kind
    default = _mode(doc.get("defaultMode"), f"{what}.defaultMode")
    sources: list[Source] = []
    if volume.kind == "configMap":
        sources.append(_object_source(doc, kind=CONFIGMAP, name_field="name", what=what))
    elif volume.kind == "secret":
        sources.append(_object_source(doc, kind=SECRET, name_field="secretName", what=what))
    elif volume.kind == "downwardAPI":
        sources.append(_downward_source(doc, what))
    elif volume.kind == "projected":
        for i, src in enumerate(_list(doc.get("sources"), "projected.sources")):
            at = f"projected.sources[{i}]"
            src = _dict(src, at)
            kinds = [k for k in src if src.get(k) is not None]
            if len(kinds) != 1:
                raise VolumeError(f"{at}: must set exactly one source (supported: {', '.join(PROJECTED_SOURCES)})")
            kind = kinds[0]
            if kind == "configMap":
                sources.append(_object_source(_dict(src[kind], at), kind=CONFIGMAP, name_field="name",
                                              what=f"{at}.configMap"))
            elif kind == "secret":
                sources.append(_object_source(_dict(src[kind], at), kind=SECRET, name_field="name",
                                              what=f"{at}.secret"))
            elif kind == "downwardAPI":
                sources.append(_downward_source(_dict(src[kind], at), f"{at}.downwardAPI"))
            else:
                raise VolumeError(f"{at}: projected source {kind} is not supported by the process runtime "
                                  f"(supported: {', '.join(PROJECTED_SOURCES)})")
    else:
        raise VolumeError(f"volume type {volume.kind} is not a projection")
    return Projection(name=volume.name, kind=volume.kind, default_mode=DEFAULT_MODE if default is None else default,
                      sources=tuple(sources))


# ---- payloads --------------------------------------------------------------------------


def go_quote(text: str) -> str:
    """Go's ``%q`` of a string (strconv.Quote), which kubelet uses for label values."""
    out = ['"']
    named = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v",
             "\\": r"\\", '"': r"\""}
    for ch in text:
        if ch in named:
            out.append(named[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def format_map(values: Mapping[str, Any]) -> str:
    """kubelet's fieldpath.FormatMap: sorted ``key="value"`` lines, no final newline."""
    return "\n".join(f"{k}={go_quote(str(values[k]))}" for k in sorted(values))


def _field(pod: PodSpec, path: str) -> str:
    meta = pod.raw.get("metadata") or {}
    if path in ("metadata.labels", "metadata.annotations"):
        return format_map(meta.get(path.split(".", 1)[1]) or {})
    m = _LABEL_PATH.fullmatch(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    return {"metadata.name": pod.name, "metadata.namespace": pod.namespace, "metadata.uid": pod.uid}[path]


def _object_files(src: ObjectSource, files: Mapping[str, bytes] | None, *,
                  default_mode: int) -> dict[str, FileProjection]:
    if files is None:
        if src.optional:
            return {}
        raise VolumeError(f'{src.kind} "{src.name}" not found')
    if not src.items:
        return {k: FileProjection(data=v, mode=default_mode) for k, v in files.items()}
    out = {}
    for item in src.items:
        if item.key not in files:
            if src.optional:
                continue
            noun = "config" if src.kind == CONFIGMAP else "secret"
            raise VolumeError(f"{src.kind} references non-existent {noun} key: {item.key}")
        out[item.path] = FileProjection(data=files[item.key], mode=default_mode if item.mode is None else item.mode)
    return out


def _downward_files(src: DownwardSource, pod: PodSpec, *, facts: PodFacts,
                    default_mode: int) -> tuple[dict[str, FileProjection], list[str]]:
    out, errors = {}, []
    for item in src.items:
        mode = default_mode if item.mode is None else item.mode
        try:
            if item.resource is not None:
                container = pod.container(item.resource.container_name)
                if container is None:
                    raise EnvError(f"resourceFieldRef.containerName {item.resource.container_name!r}: "
                                   "no such container in the pod")
                value = envsources.resource_value(pod, container, item.resource, facts)
            else:
                value = _field(pod, item.field_path)
        except EnvError as exc:
            errors.append(str(exc))
            continue
        out[item.path] = FileProjection(data=value.encode(), mode=mode)
    return out, errors


def payload(proj: Projection, *, pod: PodSpec, objects: Mapping[tuple[str, str], Mapping[str, bytes] | None],
            facts: PodFacts | None = None) -> dict[str, FileProjection]:
    """The files of one volume. Later projected sources win on a shared path,
    as upstream. ``objects`` must hold every entry of ``proj.objects()``."""
    facts = facts or PodFacts()
    files: dict[str, FileProjection] = {}
    errors: list[str] = []
    for src in proj.sources:
        try:
            if isinstance(src, ObjectSource):
                files.update(_object_files(src, objects.get((src.kind, src.name)),
                                           default_mode=proj.default_mode))
            else:
                got, errs = _downward_files(src, pod, facts=facts, default_mode=proj.default_mode)
                files.update(got)
                errors += errs
        except VolumeError as exc:
            errors.append(str(exc))
    if errors:  # upstream aggregates: one error is itself, several are "[a, b]"
        raise VolumeError(errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
    try:
        return clean_payload(files)
    except PayloadError as exc:
        raise VolumeError(str(exc)) from None


def projections(volumes: Iterable[VolumeSpec]) -> list[VolumeSpec]:
    """The pod's volumes of the four atomic-writer kinds."""
    return [v for v in volumes if v.kind in KINDS]


def validate_sub_path(sub_path: str) -> None:
    """Upstream's rule for ``volumeMounts[].subPath``: relative, no ``..`` element."""
    if sub_path.startswith("/"):
        raise VolumeError(f"subPath {sub_path!r}: must be a relative path")
    if ".." in sub_path.split("/"):
        raise VolumeError(f"subPath {sub_path!r}: must not contain '..'")
    if "\x00" in sub_path:
        raise VolumeError(f"subPath {sub_path!r}: must not contain NUL")


# ---- medium Memory (tmpfs) -------------------------------------------------------------

MEMORY_KINDS = ("secret", "projected")  # kubelet always backs these with tmpfs


def memory_backed(volume: VolumeSpec) -> bool:
    """kubelet's medium Memory: secret and projected volumes (projected ones
    may hold secrets and tokens), and ``emptyDir`` with ``medium: Memory``."""
    return volume.kind in MEMORY_KINDS or (volume.kind == "emptyDir" and volume.medium == "Memory")


def _pod_memory_limit(pod: PodSpec) -> int | None:
    """As kubelet's pod cgroup: the sum of the app containers' memory limits
    (or the largest init container's, if larger); None unless all have one."""
    def limit(c: Any) -> int | None:
        text = dict(c.limits).get("memory")
        try:
            return int(envsources.parse_quantity(text)) if text else None
        except EnvError:
            return None
    apps = [limit(c) for c in pod.containers]
    inits = [limit(c) for c in pod.init_containers]
    if not apps or None in apps or None in inits:
        return None
    return max([sum(a for a in apps if a is not None)] + [i for i in inits if i is not None])


def memory_size(pod: PodSpec, volume: VolumeSpec, *, node_memory: int) -> int:
    """The tmpfs size, as kubelet's calculateEmptyDirMemorySize: the node's
    memory, lowered to the pod's memory limit and then to the emptyDir's
    ``sizeLimit`` (each only when positive and smaller). Raises VolumeError
    for a sizeLimit that is not a quantity."""
    size = node_memory
    pod_limit = _pod_memory_limit(pod)
    if pod_limit and 0 < pod_limit <= size:
        size = pod_limit
    if volume.kind == "emptyDir":
        for doc in (pod.raw.get("spec") or {}).get("volumes") or []:
            if isinstance(doc, Mapping) and doc.get("name") == volume.name:
                text = (doc.get("emptyDir") or {}).get("sizeLimit")
                if text is None:
                    break
                try:
                    limit = int(envsources.parse_quantity(str(text)))
                except EnvError:
                    raise VolumeError(f"emptyDir.sizeLimit: {text!r} is not a quantity") from None
                if 0 < limit <= size:
                    size = limit
                break
    return size
