"""The three patch formats the API accepts, as pure functions on dicts.

- JSON merge patch (RFC 7386): ``application/merge-patch+json``.
- JSON patch (RFC 6902): ``application/json-patch+json``.
- Strategic merge patch: ``application/strategic-merge-patch+json``, for the
  built-in kinds. Lists with a merge key (containers by name, ports by
  containerPort, ...) merge element-wise; the ``$patch``, ``$retainKeys``,
  ``$setElementOrder/`` and ``$deleteFromPrimitiveList/`` directives work as
  upstream. The merge keys are the upstream struct tags, written down below.

Every function raises :class:`PatchError` for a patch that cannot apply; the
API answers it with 422 (or 400 for a malformed document).
"""
from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]


class PatchError(ValueError):
    """The patch does not apply to this object."""


# --- JSON merge patch -------------------------------------------------------------


def json_merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json_merge(out.get(key), value)
    return out


# --- JSON patch -------------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer {path!r}")
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict):
            if part not in doc:
                raise PatchError(f"path does not exist: /{'/'.join(parts)}")
            doc = doc[part]
        elif isinstance(doc, list):
            idx = _index(part, len(doc) - 1)
            doc = doc[idx]
        else:
            raise PatchError(f"path does not exist: /{'/'.join(parts)}")
    return doc


def _index(part: str, upper: int) -> int:
    if not part.isdigit() or (len(part) > 1 and part.startswith("0")):
        raise PatchError(f"invalid array index {part!r}")
    idx = int(part)
    if idx > upper:
        raise PatchError(f"array index {idx} out of bounds")
    return idx


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            parent.insert(_index(last, len(parent)), value)
    else:
        raise PatchError(f"cannot add to a non-container at /{'/'.join(parts[:-1])}")
    return doc


def _remove(doc: Any, parts: list[str]) -> tuple[Any, Any]:
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path does not exist: /{'/'.join(parts)}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent) - 1))
    raise PatchError(f"path does not exist: /{'/'.join(parts)}")


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError(f"operation {i} is not an object with an 'op'")
        kind = op["op"]
        parts = _pointer(op.get("path"))
        if kind == "add":
            if "value" not in op:
                raise PatchError(f"operation {i} ({kind}) has no value")
            doc = _add(doc, parts, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc, _ = _remove(doc, parts)
        elif kind == "replace":
            if "value" not in op:
                raise PatchError(f"operation {i} ({kind}) has no value")
            _walk(doc, parts)  # must exist
            if parts:
                doc, _ = _remove(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from"))
            if kind == "move":
                if parts[: len(src)] == src and len(parts) > len(src):
                    raise PatchError("cannot move a value into one of its children")
                doc, value = _remove(doc, src)
            else:
                value = copy.deepcopy(_walk(doc, src))
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise PatchError(f"test failed at {op.get('path')}")
        else:
            raise PatchError(f"unknown operation {kind!r}")
    return doc


# --- strategic merge patch ---------------------------------------------------------

# path (list items as "[]") -> merge key; "" marks a primitive list merged as a set.
_COMMON: dict[str, str] = {
    "metadata.finalizers": "",
    "metadata.ownerReferences": "uid",
}
_POD_SPEC: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "containers[].ports": "containerPort",
    "initContainers[].ports": "containerPort",
    "containers[].env": "name",
    "initContainers[].env": "name",
    "ephemeralContainers[].env": "name",
    "containers[].volumeMounts": "mountPath",
    "initContainers[].volumeMounts": "mountPath",
    "ephemeralContainers[].volumeMounts": "mountPath",
    "containers[].volumeDevices": "devicePath",
    "initContainers[].volumeDevices": "devicePath",
    "containers[].resizePolicy": "resourceName",
    "volumes": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "schedulingGates": "name",
}
MERGE_KEYS: dict[str, dict[str, str]] = {
    "pods": {
        **_COMMON,
        **{f"spec.{k}": v for k, v in _POD_SPEC.items()},
        "status.conditions": "type",
        "status.podIPs": "ip",
        "status.hostIPs": "ip",
        "status.resourceClaimStatuses": "name",
    },
    "nodes": {**_COMMON, "status.conditions": "type", "status.addresses": "type", "spec.podCIDRs": ""},
    "services": {**_COMMON, "spec.ports": "port"},
    "namespaces": {**_COMMON, "status.conditions": "type"},
    # apps/v1 workloads: the pod template's keys under spec.template.spec.
    **{kind: {**_COMMON, **{f"spec.template.spec.{k}": v for k, v in _POD_SPEC.items()}, "status.conditions": "type"}
       for kind in ("deployments", "replicasets", "daemonsets", "jobs")},
    # batch/v1 CronJob: the pod template sits under spec.jobTemplate.spec.template.spec.
    "cronjobs": {**_COMMON, **{f"spec.jobTemplate.spec.template.spec.{k}": v for k, v in _POD_SPEC.items()}},
}
# Fields tagged patchStrategy "retainKeys" (union types whose members are exclusive).
RETAIN_KEYS = {"pods": {"spec.volumes[]"}}


def _merge_key(kind: str, path: str) -> str | None:
    return MERGE_KEYS.get(kind, _COMMON).get(path)


def strategic_merge(original: Any, patch: Any, *, kind: str) -> Any:
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    return _merge_map(original if isinstance(original, dict) else {}, patch, kind, "")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _merge_map(original: Obj, patch: Obj, kind: str, path: str) -> Obj:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return {}
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type {directive!r} in map at {path or '<root>'}")
    out = dict(original)
    retain = patch.get("$retainKeys")
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(out.get(field), list) and isinstance(value, list):
                out[field] = [v for v in out[field] if v not in value]
            continue
        if key.startswith("$"):
            raise PatchError(f"unknown directive {key!r}")
        sub = _join(path, key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            cur = out.get(key)
            out[key] = _merge_map(cur if isinstance(cur, dict) else {}, value, kind, sub)
        elif isinstance(value, list):
            out[key] = _merge_list(out.get(key), value, kind, sub)
        else:
            out[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    for field, order in orders.items():
        if isinstance(out.get(field), list) and isinstance(order, list):
            out[field] = _apply_order(out[field], order, _merge_key(kind, _join(path, field)))
    return out


def _merge_list(original: Any, patch: list[Any], kind: str, path: str) -> list[Any]:
    key = _merge_key(kind, path)
    original = original if isinstance(original, list) else []
    if key is None:
        # No strategy: the patch list replaces (directive elements are not allowed here).
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v and len(v) == 1)]
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    if key == "":
        out = list(original)
        for v in patch:
            if v not in out:
                out.append(copy.deepcopy(v))
        return out
    out = [copy.deepcopy(v) for v in original]
    item_path = path + "[]"
    for elem in patch:
        if not isinstance(elem, dict):
            raise PatchError(f"{path}: list elements must be objects with the merge key {key!r}")
        if key not in elem:
            raise PatchError(f"{path}: map in list does not contain the merge key {key!r}")
        idx = next((i for i, v in enumerate(out) if isinstance(v, dict) and v.get(key) == elem[key]), None)
        if elem.get("$patch") == "delete":
            out = [v for v in out if not (isinstance(v, dict) and v.get(key) == elem[key])]
            continue
        if idx is None:
            out.append(_merge_map({}, elem, kind, item_path))
        else:
            out[idx] = _merge_map(out[idx], elem, kind, item_path)
    return out


def _apply_order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """Sort merged elements by ``$setElementOrder``; unlisted ones keep their place at the end."""
    def ident(v: Any) -> Any:
        if key and isinstance(v, dict):
            return ("k", repr(v.get(key)))
        return ("v", repr(v))

    rank = {ident(v): i for i, v in enumerate(order)}
    listed = [v for v in items if ident(v) in rank]
    rest = [v for v in items if ident(v) not in rank]
    return sorted(listed, key=lambda v: rank[ident(v)]) + rest


PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


def apply_patch(kind: str, patch_type: str, original: Obj, patch: Any, *, strategic_ok: bool = True) -> Any:
    if patch_type == "merge":
        if not isinstance(patch, dict):
            raise PatchError("a merge patch must be a JSON object")
        return json_merge(original, patch)
    if patch_type == "json":
        return json_patch(original, patch)
    if patch_type == "strategic":
        if not strategic_ok:
            raise PatchError("strategic merge patch is not supported for this resource")
        return strategic_merge(original, patch, kind=kind)
    raise PatchError(f"unsupported patch type {patch_type!r}")
