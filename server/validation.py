"""Object validation with upstream's field paths and messages.

``validate(res, obj, old)`` returns a list of causes; an empty list means valid.
The registry turns causes into one 422 Invalid Status and stores nothing.
NetworkPolicy is validated in full (the netpol agent trusts what we store).
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

from .resources import Resource
from .selectors import SelectorError, from_structured, label_key_error, label_value_error
from .status import Cause

Obj = dict[str, Any]

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
              "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
              "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
                  "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
                  "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
PROTOCOLS = ("SCTP", "TCP", "UDP")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, f"Invalid value: {_show(value)}: {detail}", "FieldValueInvalid")


def required(path: str, detail: str = "") -> Cause:
    return Cause(path, "Required value" + (f": {detail}" if detail else ""), "FieldValueRequired")


def unsupported(path: str, value: Any, supported: tuple[str, ...]) -> Cause:
    allowed = ", ".join(f'"{s}"' for s in supported)
    return Cause(path, f"Unsupported value: {_show(value)}: supported values: {allowed}", "FieldValueNotSupported")


def forbidden(path: str, detail: str) -> Cause:
    return Cause(path, f"Forbidden: {detail}", "FieldValueForbidden")


def duplicate(path: str, value: Any) -> Cause:
    return Cause(path, f"Duplicate value: {_show(value)}", "FieldValueDuplicate")


def too_long(path: str, value: Any, limit: int) -> Cause:
    return Cause(path, f"Too long: may not be more than {limit} bytes", "FieldValueTooLong")


def _type_error(path: str, value: Any, want: str) -> Cause:
    return invalid(path, value, f"must be {want}")


# --- names and metadata -----------------------------------------------------


def dns1123_label(path: str, value: str) -> list[Cause]:
    if len(value) > 63:
        return [invalid(path, value, "must be no more than 63 characters")]
    if not _DNS1123_LABEL.match(value):
        return [invalid(path, value, _LABEL_MSG)]
    return []


def dns1123_subdomain(path: str, value: str) -> list[Cause]:
    if len(value) > 253:
        return [invalid(path, value, "must be no more than 253 characters")]
    if not _DNS1123_SUBDOMAIN.match(value):
        return [invalid(path, value, _SUBDOMAIN_MSG)]
    return []


# Kinds whose names must be DNS labels (they become DNS names or hostnames).
_LABEL_NAMED = ("namespaces", "services")


def validate_labels(path: str, labels: Any) -> list[Cause]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [_type_error(path, labels, "a map of string keys to string values")]
    out: list[Cause] = []
    for key, value in labels.items():
        err = label_key_error(str(key))
        if err:
            out.append(invalid(path, key, err))
        if not isinstance(value, str):
            out.append(invalid(f"{path}", value, "label values must be strings"))
            continue
        err = label_value_error(value)
        if err:
            out.append(invalid(path, value, err))
    return out


def validate_annotations(path: str, annotations: Any) -> list[Cause]:
    if annotations is None:
        return []
    if not isinstance(annotations, dict):
        return [_type_error(path, annotations, "a map of string keys to string values")]
    out: list[Cause] = []
    total = 0
    for key, value in annotations.items():
        err = label_key_error(str(key))
        if err:
            out.append(invalid(path, key, err))
        if not isinstance(value, str):
            out.append(invalid(f"{path}", value, "annotation values must be strings"))
            continue
        total += len(key) + len(value)
    if total > 256 * 1024:
        out.append(too_long(path, "", 256 * 1024))
    return out


def validate_metadata(res: Resource, meta: Any) -> list[Cause]:
    if not isinstance(meta, dict):
        return [_type_error("metadata", meta, "an object")]
    out: list[Cause] = []
    name = meta.get("name")
    if not name:
        out.append(required("metadata.name", "name or generateName is required"))
    elif not isinstance(name, str):
        out.append(_type_error("metadata.name", name, "a string"))
    elif res.plural in _LABEL_NAMED:
        out += dns1123_label("metadata.name", name)
    elif res.plural == "events":
        out += [] if len(name) <= 253 and "/" not in name else [invalid("metadata.name", name, "may not contain '/'")]
    else:
        out += dns1123_subdomain("metadata.name", name)
    ns = meta.get("namespace")
    if res.namespaced and isinstance(ns, str):
        out += dns1123_label("metadata.namespace", ns)
    out += validate_labels("metadata.labels", meta.get("labels"))
    out += validate_annotations("metadata.annotations", meta.get("annotations"))
    fin = meta.get("finalizers")
    if fin is not None and (not isinstance(fin, list) or not all(isinstance(f, str) for f in fin)):
        out.append(_type_error("metadata.finalizers", fin, "a list of strings"))
    return out


def validate_label_selector(path: str, sel: Any) -> list[Cause]:
    """A metav1.LabelSelector: matchLabels syntax and matchExpressions operators."""
    if sel is None:
        return []
    if not isinstance(sel, dict):
        return [_type_error(path, sel, "an object")]
    out = validate_labels(f"{path}.matchLabels", sel.get("matchLabels"))
    exprs = sel.get("matchExpressions") or []
    if not isinstance(exprs, list):
        return out + [_type_error(f"{path}.matchExpressions", exprs, "a list")]
    for i, expr in enumerate(exprs):
        p = f"{path}.matchExpressions[{i}]"
        if not isinstance(expr, dict):
            out.append(_type_error(p, expr, "an object"))
            continue
        key = expr.get("key")
        if not key:
            out.append(required(f"{p}.key"))
        else:
            err = label_key_error(str(key))
            if err:
                out.append(invalid(f"{p}.key", key, err))
        op = expr.get("operator")
        values = expr.get("values") or []
        if op in ("In", "NotIn"):
            if not values:
                out.append(required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                out.append(forbidden(f"{p}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            out.append(invalid(f"{p}.operator", op, "not a valid selector operator"))
        for j, value in enumerate(values if isinstance(values, list) else []):
            err = label_value_error(str(value))
            if err:
                out.append(invalid(f"{p}.values[{j}]", value, err))
    return out


# --- ports and CIDRs ---------------------------------------------------------


def port_number(path: str, value: Any) -> list[Cause]:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        return [invalid(path, value, "must be between 1 and 65535, inclusive")]
    return []


def port_name(path: str, value: str) -> list[Cause]:
    if len(value) > 15:
        return [invalid(path, value, "must be no more than 15 characters")]
    if not _IANA_SVC_NAME.match(value):
        return [invalid(path, value, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")]
    if "--" in value:
        return [invalid(path, value, "must not contain consecutive hyphens")]
    if not re.search(r"[a-z]", value):
        return [invalid(path, value, "must contain at least one letter (a-z)")]
    return []


def int_or_port_name(path: str, value: Any) -> list[Cause]:
    if isinstance(value, str):
        if value.isdigit():
            return port_number(path, int(value))
        return port_name(path, value)
    return port_number(path, value)


def protocol(path: str, value: Any) -> list[Cause]:
    if value not in PROTOCOLS:
        return [unsupported(path, value, PROTOCOLS)]
    return []


def parse_cidr(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not isinstance(value, str) or "/" not in value:
        return None
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


# --- NetworkPolicy -----------------------------------------------------------


def _netpol_port(path: str, port: Any) -> list[Cause]:
    if not isinstance(port, dict):
        return [_type_error(path, port, "an object")]
    out: list[Cause] = []
    if "protocol" in port and port["protocol"] is not None:
        out += protocol(f"{path}.protocol", port["protocol"])
    value = port.get("port")
    if value is not None:
        out += int_or_port_name(f"{path}.port", value)
    end = port.get("endPort")
    if end is not None:
        if value is None:
            out.append(required(f"{path}.port", "must be specified when `endPort` is specified"))
        elif isinstance(value, str) and not value.isdigit():
            out.append(forbidden(f"{path}.endPort", "may not be specified when `port` is non-numeric"))
        else:
            out += port_number(f"{path}.endPort", end)
            if isinstance(end, int) and not isinstance(end, bool) and int(value) > end:
                out.append(invalid(f"{path}.endPort", end, "must be greater than or equal to `port`"))
    return out


def _ip_block(path: str, block: Any) -> list[Cause]:
    if not isinstance(block, dict):
        return [_type_error(path, block, "an object")]
    cidr_text = block.get("cidr")
    if not cidr_text:
        return [required(f"{path}.cidr")]
    cidr = parse_cidr(cidr_text)
    if cidr is None:
        return [invalid(f"{path}.cidr", cidr_text, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")]
    out: list[Cause] = []
    excepts = block.get("except") or []
    if not isinstance(excepts, list):
        return [_type_error(f"{path}.except", excepts, "a list of CIDRs")]
    for i, text in enumerate(excepts):
        p = f"{path}.except[{i}]"
        sub = parse_cidr(text)
        if sub is None:
            out.append(invalid(p, text, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"))
        elif sub.version != cidr.version or not sub.subnet_of(cidr) or sub.prefixlen <= cidr.prefixlen:  # type: ignore[arg-type]
            out.append(invalid(p, text, "must be a strict subset of `cidr`"))
    return out


def _peer(path: str, peer: Any) -> list[Cause]:
    if not isinstance(peer, dict):
        return [_type_error(path, peer, "an object")]
    present = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None]
    if not present:
        return [required(path, "must specify a peer")]
    out: list[Cause] = []
    if "ipBlock" in present and len(present) > 1:
        out.append(forbidden(path, "may not specify both ipBlock and another peer"))
    out += validate_label_selector(f"{path}.podSelector", peer.get("podSelector"))
    out += validate_label_selector(f"{path}.namespaceSelector", peer.get("namespaceSelector"))
    if peer.get("ipBlock") is not None:
        out += _ip_block(f"{path}.ipBlock", peer["ipBlock"])
    return out


def _rules(path: str, rules: Any, peers_key: str) -> list[Cause]:
    if rules is None:
        return []
    if not isinstance(rules, list):
        return [_type_error(path, rules, "a list")]
    out: list[Cause] = []
    for i, rule in enumerate(rules):
        p = f"{path}[{i}]"
        if not isinstance(rule, dict):
            out.append(_type_error(p, rule, "an object"))
            continue
        ports = rule.get("ports") or []
        if not isinstance(ports, list):
            out.append(_type_error(f"{p}.ports", ports, "a list"))
        else:
            for j, port in enumerate(ports):
                out += _netpol_port(f"{p}.ports[{j}]", port)
        peers = rule.get(peers_key) or []
        if not isinstance(peers, list):
            out.append(_type_error(f"{p}.{peers_key}", peers, "a list"))
        else:
            for j, peer in enumerate(peers):
                out += _peer(f"{p}.{peers_key}[{j}]", peer)
    return out


def validate_networkpolicy(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")] if spec is None else [_type_error("spec", spec, "an object")]
    out = validate_label_selector("spec.podSelector", spec.get("podSelector"))
    out += _rules("spec.ingress", spec.get("ingress"), "from")
    out += _rules("spec.egress", spec.get("egress"), "to")
    types = spec.get("policyTypes") or []
    if not isinstance(types, list):
        out.append(_type_error("spec.policyTypes", types, "a list"))
    else:
        if len(types) > 2:
            out.append(invalid("spec.policyTypes", types, "may not specify more than two policyTypes"))
        for i, t in enumerate(types):
            if t not in ("Ingress", "Egress"):
                out.append(unsupported(f"spec.policyTypes[{i}]", t, ("Egress", "Ingress")))
    return out


# --- Pod -----------------------------------------------------------------------

_RESTART = ("Always", "Never", "OnFailure")
_PULL = ("Always", "IfNotPresent", "Never")
_DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
# What a pod update may change (upstream ValidatePodUpdate).
_MUTABLE_SPEC = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")


# Upstream's resource.Quantity grammar: a decimal number, then a binary (Ki..Ei),
# decimal (n u m k M G T P E) or exponent (e3) suffix.
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)((Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE][+-]?\d+)?")


def _resources(path: str, resources: Any) -> list[Cause]:
    """requests/limits are maps of quantities; "lots" or "-1" was stored as given."""
    if resources is None:
        return []
    if not isinstance(resources, dict):
        return [_type_error(path, resources, "an object")]
    out: list[Cause] = []
    for part in ("limits", "requests"):
        values = resources.get(part)
        if values is None:
            continue
        if not isinstance(values, dict):
            out.append(_type_error(f"{path}.{part}", values, "an object"))
            continue
        for name, q in values.items():
            qp = f"{path}.{part}[{name}]"
            text = str(q) if isinstance(q, (int, float)) and not isinstance(q, bool) else q
            if not isinstance(text, str) or not _QUANTITY.fullmatch(text):
                out.append(invalid(qp, q, "quantities must match the regular expression "
                                          "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"))
            elif text.startswith("-") and text.strip("-0.") != "":
                out.append(invalid(qp, q, "must be greater than or equal to 0"))
    return out


def _env(path: str, env: Any) -> list[Cause]:
    """Names the runtime can export ("A=B" failed only at start, as a StartError)."""
    if not isinstance(env, list):
        return [] if env is None else [_type_error(path, env, "a list")]
    out: list[Cause] = []
    for i, var in enumerate(env):
        if not isinstance(var, dict):
            out.append(_type_error(f"{path}[{i}]", var, "an object"))
            continue
        name = var.get("name")
        if not name:
            out.append(required(f"{path}[{i}].name"))
        elif not isinstance(name, str) or "=" in name or not all(" " <= ch <= "~" for ch in name):
            out.append(invalid(f"{path}[{i}].name", name, "a valid environment variable name must consist only "
                                                          "of printable ASCII characters other than '='"))
    return out


# --- volumes and mounts ---------------------------------------------------------
# What the agent would refuse only at pod start (a file path escaping the
# volume, two sources in one volume, a mode outside 0-0777, a clashing mount)
# is refused here, at create time, naming the field, as upstream does.

# Upstream's VolumeSource fields: a volume sets exactly one of them.
VOLUME_TYPES = (
    "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret", "nfs", "iscsi",
    "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "downwardAPI", "fc",
    "azureFile", "configMap", "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "projected",
    "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral", "image",
)
PROJECTED_SOURCES = ("secret", "downwardAPI", "configMap", "serviceAccountToken", "clusterTrustBundle",
                     "podCertificate")
_FILE_MODE_MSG = "must be a number between 0 and 0777 (octal), both inclusive"
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _file_mode(path: str, mode: Any) -> list[Cause]:
    if mode is None:
        return []
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        return [invalid(path, mode, _FILE_MODE_MSG)]
    return []


def _local_path(path: str, value: Any, *, item: bool) -> list[Cause]:
    """Upstream's validateLocalDescendingPath; ``item`` adds the reserved-name
    rule of key-to-path items (``..data`` and the timestamped dirs)."""
    if not isinstance(value, str):
        return [_type_error(path, value, "a string")]
    out: list[Cause] = []
    if value.startswith("/"):
        out.append(invalid(path, value, "must be a relative path"))
    if ".." in value.split("/"):
        out.append(invalid(path, value, "must not contain '..'"))
    elif item and value.startswith(".."):
        out.append(invalid(path, value, "must not start with '..'"))
    if "\x00" in value:
        out.append(invalid(path, value, "must not contain NUL"))
    return out


def _object(path: str, value: Any) -> tuple[dict[str, Any], list[Cause]]:
    if value is None or isinstance(value, dict):
        return value or {}, []
    return {}, [_type_error(path, value, "an object")]


def _list_of(path: str, value: Any) -> tuple[list[Any], list[Cause]]:
    if value is None or isinstance(value, list):
        return value or [], []
    return [], [_type_error(path, value, "a list")]


def _key_to_paths(path: str, items: Any) -> list[Cause]:
    items, out = _list_of(path, items)
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        if not isinstance(item, dict):
            out.append(_type_error(p, item, "an object"))
            continue
        key = item.get("key")
        if not key:
            out.append(required(f"{p}.key"))
        elif not isinstance(key, str) or len(key) > 253 or key in (".", "..") or not _CONFIG_KEY.match(key):
            out.append(invalid(f"{p}.key", key, "a valid config key must consist of alphanumeric characters, "
                                                "'-', '_' or '.'"))
        if not item.get("path"):
            out.append(required(f"{p}.path"))
        else:
            out += _local_path(f"{p}.path", item["path"], item=True)
        out += _file_mode(f"{p}.mode", item.get("mode"))
    return out


def _named_source(path: str, doc: dict[str, Any], name_field: str) -> list[Cause]:
    out = [] if doc.get(name_field) else [required(f"{path}.{name_field}")]
    return out + _key_to_paths(f"{path}.items", doc.get("items"))


def _downward_items(path: str, items: Any) -> list[Cause]:
    items, out = _list_of(path, items)
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        if not isinstance(item, dict):
            out.append(_type_error(p, item, "an object"))
            continue
        if not item.get("path"):
            out.append(required(f"{p}.path"))
        else:
            out += _local_path(f"{p}.path", item["path"], item=True)
        out += _file_mode(f"{p}.mode", item.get("mode"))
        if (item.get("fieldRef") is None) == (item.get("resourceFieldRef") is None):
            out.append(invalid(p, item, "must specify exactly one of fieldRef, resourceFieldRef"))
    return out


def _projected(path: str, doc: dict[str, Any]) -> list[Cause]:
    sources, out = _list_of(f"{path}.sources", doc.get("sources"))
    for i, src in enumerate(sources):
        sp = f"{path}.sources[{i}]"
        if not isinstance(src, dict):
            out.append(_type_error(sp, src, "an object"))
            continue
        kinds = [k for k in PROJECTED_SOURCES if src.get(k) is not None]
        if len(kinds) > 1:
            out.append(forbidden(sp, "may not specify more than 1 volume type per source"))
        elif not kinds:
            out.append(required(sp, "must specify one volume type: " + ", ".join(PROJECTED_SOURCES)))
        for kind in kinds:
            body, errs = _object(f"{sp}.{kind}", src[kind])
            out += errs
            if kind in ("secret", "configMap"):
                out += _named_source(f"{sp}.{kind}", body, "name")
            elif kind == "downwardAPI":
                out += _downward_items(f"{sp}.{kind}.items", body.get("items"))
    return out


def _volume_source(path: str, vol: dict[str, Any]) -> list[Cause]:
    kinds = [k for k in VOLUME_TYPES if k in vol]  # ``emptyDir:`` (null) still names its type
    if not kinds:
        return [required(path, "must specify a volume type")]
    out = [forbidden(f"{path}.{k}", "may not specify more than 1 volume type") for k in kinds[1:]]
    kind = kinds[0]
    doc, errs = _object(f"{path}.{kind}", vol[kind])
    out += errs
    at = f"{path}.{kind}"
    if kind in ("configMap", "secret", "downwardAPI", "projected"):
        out += _file_mode(f"{at}.defaultMode", doc.get("defaultMode"))
    if kind == "configMap":
        out += _named_source(at, doc, "name")
    elif kind == "secret":
        out += _named_source(at, doc, "secretName")
    elif kind == "downwardAPI":
        out += _downward_items(f"{at}.items", doc.get("items"))
    elif kind == "projected":
        out += _projected(at, doc)
    elif kind == "hostPath" and not doc.get("path"):
        out.append(required(f"{at}.path"))
    return out


def _mounts(path: str, mounts: Any, volumes: set[str]) -> list[Cause]:
    if not isinstance(mounts, list):
        return [] if mounts is None else [_type_error(path, mounts, "a list")]
    out: list[Cause] = []
    seen: set[str] = set()
    for i, m in enumerate(mounts):
        if not isinstance(m, dict):
            out.append(_type_error(f"{path}[{i}]", m, "an object"))
            continue
        if not m.get("name"):
            out.append(required(f"{path}[{i}].name"))
        elif m["name"] not in volumes:
            out.append(Cause(f"{path}[{i}].name", f"Not found: {_show(m['name'])}", "FieldValueNotFound"))
        mount_path = m.get("mountPath")
        if not mount_path:
            out.append(required(f"{path}[{i}].mountPath"))
        elif not isinstance(mount_path, str):
            out.append(_type_error(f"{path}[{i}].mountPath", mount_path, "a string"))
        else:
            if not mount_path.startswith("/"):  # the runtime mounts inside the container's root
                out.append(invalid(f"{path}[{i}].mountPath", mount_path, "must be an absolute path"))
            if mount_path in seen:
                out.append(invalid(f"{path}[{i}].mountPath", mount_path, "must be unique"))
            seen.add(mount_path)
        if m.get("subPath"):
            out += _local_path(f"{path}[{i}].subPath", m["subPath"], item=False)
            if m.get("subPathExpr"):
                out.append(invalid(f"{path}[{i}].subPathExpr", m["subPathExpr"],
                                   "subPathExpr and subPath are mutually exclusive"))
    return out


def _containers(path: str, containers: Any, names: set[str], *, need_one: bool, volumes: set[str]) -> list[Cause]:
    if containers is None or containers == []:
        return [required(path)] if need_one else []
    if not isinstance(containers, list):
        return [_type_error(path, containers, "a list")]
    out: list[Cause] = []
    for i, c in enumerate(containers):
        p = f"{path}[{i}]"
        if not isinstance(c, dict):
            out.append(_type_error(p, c, "an object"))
            continue
        name = c.get("name")
        if not name:
            out.append(required(f"{p}.name"))
        elif not isinstance(name, str):
            out.append(_type_error(f"{p}.name", name, "a string"))
        else:
            out += dns1123_label(f"{p}.name", name)
            if name in names:
                out.append(duplicate(f"{p}.name", name))
            names.add(name)
        if not c.get("image"):
            out.append(required(f"{p}.image"))
        if "imagePullPolicy" in c and c["imagePullPolicy"] not in _PULL:
            out.append(unsupported(f"{p}.imagePullPolicy", c["imagePullPolicy"], _PULL))
        out += _resources(f"{p}.resources", c.get("resources"))
        out += _env(f"{p}.env", c.get("env"))
        out += _mounts(f"{p}.volumeMounts", c.get("volumeMounts"), volumes)
        ports = c.get("ports") or []
        if not isinstance(ports, list):
            out.append(_type_error(f"{p}.ports", ports, "a list"))
            continue
        for j, port in enumerate(ports):
            pp = f"{p}.ports[{j}]"
            if not isinstance(port, dict):
                out.append(_type_error(pp, port, "an object"))
                continue
            if "containerPort" not in port:
                out.append(required(f"{pp}.containerPort"))
            else:
                out += port_number(f"{pp}.containerPort", port["containerPort"])
            if "hostPort" in port and port["hostPort"]:
                out += port_number(f"{pp}.hostPort", port["hostPort"])
            if "protocol" in port:
                out += protocol(f"{pp}.protocol", port["protocol"])
            if port.get("name"):
                out += port_name(f"{pp}.name", str(port["name"]))
    return out


def validate_pod(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")] if spec is None else [_type_error("spec", spec, "an object")]
    names: set[str] = set()
    volumes = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v, dict) and v.get("name")}
    out = _containers("spec.containers", spec.get("containers"), names, need_one=True, volumes=volumes)
    out += _containers("spec.initContainers", spec.get("initContainers"), names, need_one=False, volumes=volumes)
    if spec.get("dnsPolicy") is not None and spec["dnsPolicy"] not in _DNS_POLICIES:
        out.append(unsupported("spec.dnsPolicy", spec["dnsPolicy"], _DNS_POLICIES))
    if spec.get("hostname"):
        out += dns1123_label("spec.hostname", str(spec["hostname"]))
    if spec.get("subdomain"):
        out += dns1123_label("spec.subdomain", str(spec["subdomain"]))
    if spec.get("restartPolicy") not in _RESTART:
        out.append(unsupported("spec.restartPolicy", spec.get("restartPolicy"), _RESTART))
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or grace < 0):
        out.append(invalid("spec.terminationGracePeriodSeconds", grace, "must be greater than or equal to 0"))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int) or isinstance(deadline, bool)
                                 or not 1 <= deadline <= 2147483647):
        out.append(invalid("spec.activeDeadlineSeconds", deadline, "must be between 1 and 2147483647, inclusive"))
    if spec.get("nodeName"):
        out += dns1123_subdomain("spec.nodeName", str(spec["nodeName"]))
    if isinstance(spec.get("nodeSelector"), dict):
        out += validate_labels("spec.nodeSelector", spec["nodeSelector"])
    vols: set[str] = set()
    for i, vol in enumerate(spec.get("volumes") or []):
        name = vol.get("name") if isinstance(vol, dict) else None
        if not name:
            out.append(required(f"spec.volumes[{i}].name"))
        elif name in vols:
            out.append(duplicate(f"spec.volumes[{i}].name", name))
        else:
            out += dns1123_label(f"spec.volumes[{i}].name", str(name))
            vols.add(name)
        if isinstance(vol, dict):
            out += _volume_source(f"spec.volumes[{i}]", vol)
        else:
            out.append(_type_error(f"spec.volumes[{i}]", vol, "an object"))
    if old is not None:
        out = _ratchet(out, spec, old.get("spec") or {})
    if old is not None and not out:
        out += _pod_update(spec, old.get("spec") or {})
    return out


def _ratchet(causes: list[Cause], spec: Obj, old_spec: Obj) -> list[Cause]:
    """Checks added later (resource quantities, env names, mounts, dnsPolicy...) must not
    lock objects stored before them: an unchanged value is let through on update
    (upstream's "ratcheting"), so controllers can still bind or finalize them."""
    def unchanged(field: str) -> bool:
        # The cause's top-level spec field (or that one list item) is as it was.
        m = re.match(r"spec\.(\w+)(?:\[(\d+)\])?", field)
        if not m:
            return False
        new_v, old_v = spec.get(m[1]), old_spec.get(m[1])
        if m[2] is None:
            return new_v == old_v
        i = int(m[2])
        return (isinstance(new_v, list) and isinstance(old_v, list) and i < len(new_v) and i < len(old_v)
                and new_v[i] == old_v[i])
    return [c for c in causes if not unchanged(c.field)]


def _strip_mutable(spec: Obj) -> Obj:
    spec = {k: v for k, v in spec.items() if k not in _MUTABLE_SPEC}
    for key in ("containers", "initContainers"):
        if isinstance(spec.get(key), list):
            spec[key] = [{k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c for c in spec[key]]
    return spec


def _pod_update(spec: Obj, old_spec: Obj) -> list[Cause]:
    if old_spec.get("nodeName") and spec.get("nodeName") != old_spec.get("nodeName"):
        return [forbidden("spec.nodeName", "pod updates may not change nodeName once it is set")]
    new_s, old_s = _strip_mutable(spec), _strip_mutable(old_spec)
    if not old_spec.get("nodeName"):
        new_s.pop("nodeName", None)
        old_s.pop("nodeName", None)
    if new_s != old_s:
        return [forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,"
                          "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
                          "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
                          "(allow it to be set to 1 if it was previously negative)")]
    return []


# --- Service, Secret, ConfigMap, Namespace, Node, Lease -------------------------

_SVC_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")


def validate_service(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [_type_error("spec", spec, "an object")]
    out: list[Cause] = []
    if spec.get("type") not in _SVC_TYPES:
        out.append(unsupported("spec.type", spec.get("type"), _SVC_TYPES))
    ports = spec.get("ports") or []
    if not ports and spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None":
        out.append(required("spec.ports"))
    names: set[str] = set()
    for i, port in enumerate(ports if isinstance(ports, list) else []):
        p = f"spec.ports[{i}]"
        if not isinstance(port, dict):
            out.append(_type_error(p, port, "an object"))
            continue
        out += port_number(f"{p}.port", port.get("port"))
        out += protocol(f"{p}.protocol", port.get("protocol", "TCP"))
        if len(ports) > 1 and not port.get("name"):
            out.append(required(f"{p}.name"))
        if port.get("name"):
            if port["name"] in names:
                out.append(duplicate(f"{p}.name", port["name"]))
            names.add(port["name"])
        if "targetPort" in port:
            out += int_or_port_name(f"{p}.targetPort", port["targetPort"])
        if port.get("nodePort") is not None:
            out += port_number(f"{p}.nodePort", port["nodePort"])
    ip = spec.get("clusterIP")
    if ip and ip != "None":
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            out.append(invalid("spec.clusterIP", ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
    old_ip = ((old or {}).get("spec") or {}).get("clusterIP")
    if old_ip and ip != old_ip:
        out.append(invalid("spec.clusterIPs[0]", ip, "may not change once set"))
    out += validate_labels("spec.selector", spec.get("selector"))
    return out


def _string_map(path: str, data: Any, *, base64_values: bool = False) -> list[Cause]:
    if data is None:
        return []
    if not isinstance(data, dict):
        return [_type_error(path, data, "a map of string keys to string values")]
    out: list[Cause] = []
    for key, value in data.items():
        if not re.fullmatch(r"[-._a-zA-Z0-9]+", key) or len(key) > 253:
            out.append(invalid(path, key, "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"))
        if not isinstance(value, str):
            out.append(invalid(f"{path}[{key}]", value, "must be a string"))
        elif base64_values:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                out.append(invalid(f"{path}[{key}]", "<secret contents redacted>", "illegal base64 data"))
    return out


def validate_configmap(obj: Obj, old: Obj | None) -> list[Cause]:
    return (_string_map("data", obj.get("data")) + _string_map("binaryData", obj.get("binaryData"), base64_values=True)
            + _immutable_data(obj, old))


def _immutable_data(obj: Obj, old: Obj | None) -> list[Cause]:
    """ConfigMaps and Secrets marked ``immutable: true`` keep their data (and the mark)."""
    if old is None or not old.get("immutable"):
        return []
    out = []
    for key in ("data", "binaryData", "stringData"):
        if obj.get(key) != old.get(key) and (obj.get(key) or old.get(key)):
            out.append(forbidden(key, "field is immutable when `immutable` is set"))
    if not obj.get("immutable"):
        out.append(forbidden("immutable", "field is immutable when `immutable` is set"))
    return out


def validate_secret(obj: Obj, old: Obj | None) -> list[Cause]:
    out = _string_map("data", obj.get("data"), base64_values=True) + _immutable_data(obj, old)
    if old is not None and old.get("type") != obj.get("type"):
        out.append(invalid("type", obj.get("type"), "field is immutable"))
    return out


def validate_node(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    out: list[Cause] = []
    for i, taint in enumerate(spec.get("taints") or []):
        p = f"spec.taints[{i}]"
        if not isinstance(taint, dict) or not taint.get("key"):
            out.append(required(f"{p}.key"))
            continue
        err = label_key_error(taint["key"])
        if err:
            out.append(invalid(f"{p}.key", taint["key"], err))
        if taint.get("effect") not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            out.append(unsupported(f"{p}.effect", taint.get("effect"), ("NoExecute", "NoSchedule", "PreferNoSchedule")))
    cidr = spec.get("podCIDR")
    if cidr and parse_cidr(cidr) is None:
        out.append(invalid("spec.podCIDR", cidr, "must be a valid CIDR value"))
    old_cidr = ((old or {}).get("spec") or {}).get("podCIDR")
    if old_cidr and cidr != old_cidr:
        out.append(forbidden("spec.podCIDR", "podCIDR may not be changed once set"))
    return out


def validate_lease(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    dur = spec.get("leaseDurationSeconds")
    if dur is not None and (not isinstance(dur, int) or dur <= 0):
        return [invalid("spec.leaseDurationSeconds", dur, "must be greater than 0")]
    return []


# --- Deployment, ReplicaSet, DaemonSet ----------------------------------------------

_PERCENT = re.compile(r"^[0-9]+%$")


def _int_or_percent(path: str, value: Any) -> list[Cause]:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return [invalid(path, value, "must be an integer or percentage (e.g '5%')")]
    if isinstance(value, str):
        if not _PERCENT.match(value):
            return [invalid(path, value, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")]
        if int(value[:-1]) > 100:
            return [invalid(path, value, "must not be greater than 100%")]
    elif value < 0:
        return [invalid(path, value, "must be greater than or equal to 0")]
    return []


def _is_zero(value: Any) -> bool:
    return value in (0, "0%")


def _non_negative(path: str, value: Any) -> list[Cause]:
    if value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, int):
        return [_type_error(path, value, "an integer")]
    if value < 0:
        return [invalid(path, value, "must be greater than or equal to 0")]
    return []


def _selector_matches(sel: Obj, labels: Obj) -> bool:
    try:
        return from_structured(sel).matches({str(k): str(v) for k, v in labels.items()})
    except SelectorError:
        return True  # the selector itself is reported as invalid


def _template(path: str, template: Any, selector: Any, *, restart: tuple[str, ...] = ("Always",)) -> list[Cause]:
    if not isinstance(template, dict):
        return [required(path)] if template is None else [_type_error(path, template, "an object")]
    meta = template.get("metadata") or {}
    if not isinstance(meta, dict):
        return [_type_error(f"{path}.metadata", meta, "an object")]
    labels = meta.get("labels") or {}
    out = validate_labels(f"{path}.metadata.labels", labels)
    out += validate_annotations(f"{path}.metadata.annotations", meta.get("annotations"))
    if isinstance(selector, dict) and isinstance(labels, dict) and not out and not _selector_matches(selector, labels):
        shown = "map[" + " ".join(f"{k}:{v}" for k, v in sorted(labels.items())) + "]"
        out.append(Cause(f"{path}.metadata.labels", f"Invalid value: {shown}: `selector` does not match template `labels`",
                         "FieldValueInvalid"))
    # The pod checks, with their paths moved under the template.
    out += [Cause(f"{path}.{c.field}", c.message, c.type)
            for c in validate_pod({"spec": template.get("spec")}, None)]
    policy = (template.get("spec") or {}).get("restartPolicy") if isinstance(template.get("spec"), dict) else None
    if policy is not None and policy not in restart:
        out.append(unsupported(f"{path}.spec.restartPolicy", policy, restart))
    return out


def _workload(kind: str, obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")] if spec is None else [_type_error("spec", spec, "an object")]
    out: list[Cause] = []
    sel = spec.get("selector")
    if sel is None:
        out.append(required("spec.selector"))
    elif not isinstance(sel, dict):
        out.append(_type_error("spec.selector", sel, "an object"))
    else:
        out += validate_label_selector("spec.selector", sel)
        if not sel.get("matchLabels") and not sel.get("matchExpressions"):
            out.append(invalid("spec.selector", sel, f"empty selector is invalid for {kind[:-1]}"))
    out += _template("spec.template", spec.get("template"), sel if isinstance(sel, dict) else None)
    if kind != "daemonsets":
        out += _non_negative("spec.replicas", spec.get("replicas"))
    out += _non_negative("spec.minReadySeconds", spec.get("minReadySeconds"))
    out += _non_negative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    if kind == "deployments":
        out += _deployment_strategy(spec)
        deadline = spec.get("progressDeadlineSeconds")
        if deadline is not None and isinstance(deadline, int) and isinstance(spec.get("minReadySeconds"), int) \
                and deadline <= spec["minReadySeconds"]:
            out.append(invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds"))
    elif kind == "daemonsets":
        out += _daemonset_strategy(spec)
    old_sel = ((old or {}).get("spec") or {}).get("selector")
    if old is not None and old_sel is not None and sel != old_sel:
        out.append(invalid("spec.selector", sel, "field is immutable"))
    return out


def _deployment_strategy(spec: Obj) -> list[Cause]:
    strategy = spec.get("strategy") or {}
    if not isinstance(strategy, dict):
        return [_type_error("spec.strategy", strategy, "an object")]
    kind = strategy.get("type")
    if kind not in ("Recreate", "RollingUpdate"):
        return [unsupported("spec.strategy.type", kind, ("Recreate", "RollingUpdate"))]
    rolling = strategy.get("rollingUpdate")
    if kind == "Recreate":
        return [forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")] \
            if rolling is not None else []
    if not isinstance(rolling, dict):
        return [] if rolling is None else [_type_error("spec.strategy.rollingUpdate", rolling, "an object")]
    out = _int_or_percent("spec.strategy.rollingUpdate.maxSurge", rolling.get("maxSurge", 0))
    out += _int_or_percent("spec.strategy.rollingUpdate.maxUnavailable", rolling.get("maxUnavailable", 0))
    if not out and _is_zero(rolling.get("maxSurge", 0)) and _is_zero(rolling.get("maxUnavailable", 0)):
        out.append(invalid("spec.strategy.rollingUpdate.maxUnavailable", rolling.get("maxUnavailable", 0),
                           "may not be 0 when `maxSurge` is 0"))
    return out


def _daemonset_strategy(spec: Obj) -> list[Cause]:
    strategy = spec.get("updateStrategy") or {}
    if not isinstance(strategy, dict):
        return [_type_error("spec.updateStrategy", strategy, "an object")]
    kind = strategy.get("type")
    if kind not in ("OnDelete", "RollingUpdate"):
        return [unsupported("spec.updateStrategy.type", kind, ("OnDelete", "RollingUpdate"))]
    rolling = strategy.get("rollingUpdate")
    if kind != "RollingUpdate" or not isinstance(rolling, dict):
        return []
    out = _int_or_percent("spec.updateStrategy.rollingUpdate.maxUnavailable", rolling.get("maxUnavailable", 1))
    out += _int_or_percent("spec.updateStrategy.rollingUpdate.maxSurge", rolling.get("maxSurge", 0))
    if not out and _is_zero(rolling.get("maxSurge", 0)) and _is_zero(rolling.get("maxUnavailable", 1)):
        out.append(invalid("spec.updateStrategy.rollingUpdate.maxUnavailable", rolling.get("maxUnavailable"),
                           "may not be 0 when `maxSurge` is 0"))
    return out


def validate_deployment(obj: Obj, old: Obj | None) -> list[Cause]:
    return _workload("deployments", obj, old)


def validate_replicaset(obj: Obj, old: Obj | None) -> list[Cause]:
    return _workload("replicasets", obj, old)


def validate_daemonset(obj: Obj, old: Obj | None) -> list[Cause]:
    return _workload("daemonsets", obj, old)


def validate_controllerrevision(obj: Obj, old: Obj | None) -> list[Cause]:
    out = _non_negative("revision", obj.get("revision"))
    if old is not None and obj.get("data") != old.get("data"):
        out.append(invalid("data", "<data>", "field is immutable"))
    return out


# --- Job, CronJob (batch/v1) --------------------------------------------------------

_JOB_RESTART = ("OnFailure", "Never")
_CONCURRENCY = ("Allow", "Forbid", "Replace")


def _job_spec(path: str, spec: Any, old_spec: Any, *, need_selector: bool) -> list[Cause]:
    if not isinstance(spec, dict):
        return [required(path)] if spec is None else [_type_error(path, spec, "an object")]
    out: list[Cause] = []
    for key in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        out += _non_negative(f"{path}.{key}", spec.get(key))
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and not isinstance(deadline, bool) and deadline == 0:
        out.append(invalid(f"{path}.activeDeadlineSeconds", 0, "must be greater than 0"))
    mode = spec.get("completionMode", "NonIndexed")
    if mode not in ("NonIndexed", "Indexed"):
        out.append(unsupported(f"{path}.completionMode", mode, ("NonIndexed", "Indexed")))
    elif mode == "Indexed":
        if spec.get("completions") is None:
            out.append(required(f"{path}.completions", "when completion mode is Indexed"))
        for key in ("completions", "parallelism"):
            value = spec.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 100_000:
                out.append(invalid(f"{path}.{key}", value, "must be less than or equal to 100000 when completion mode is Indexed"))
    # Accepted by upstream but not carried out here: refused rather than silently ignored.
    for key in ("podFailurePolicy", "successPolicy", "backoffLimitPerIndex", "maxFailedIndexes"):
        if spec.get(key) is not None:
            out.append(forbidden(f"{path}.{key}", "not implemented by this server"))
    policy = spec.get("podReplacementPolicy")
    if policy is not None and policy not in ("TerminatingOrFailed", "Failed"):
        out.append(unsupported(f"{path}.podReplacementPolicy", policy, ("TerminatingOrFailed", "Failed")))
    sel = spec.get("selector")
    if sel is None:
        if need_selector:
            out.append(required(f"{path}.selector"))
    elif not isinstance(sel, dict):
        out.append(_type_error(f"{path}.selector", sel, "an object"))
    else:
        out += validate_label_selector(f"{path}.selector", sel)
    out += _template(f"{path}.template", spec.get("template"), sel if isinstance(sel, dict) else None,
                     restart=_JOB_RESTART)
    if isinstance(old_spec, dict):
        for key in ("selector", "completionMode", "completions"):
            if key in old_spec and spec.get(key) != old_spec.get(key):
                out.append(invalid(f"{path}.{key}", spec.get(key), "field is immutable"))
        # Upstream lets a suspended Job's scheduling directives change; the rest of the template is fixed.
        if spec.get("template") != old_spec.get("template") and not (spec.get("suspend") and old_spec.get("suspend")):
            out.append(invalid(f"{path}.template", "<template>", "field is immutable"))
    return out


def validate_job(obj: Obj, old: Obj | None) -> list[Cause]:
    return _job_spec("spec", obj.get("spec"), (old or {}).get("spec") if old else None, need_selector=True)


def validate_cronjob(obj: Obj, old: Obj | None) -> list[Cause]:
    import zoneinfo

    from .controllers import cron

    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")] if spec is None else [_type_error("spec", spec, "an object")]
    out: list[Cause] = []
    name = (obj.get("metadata") or {}).get("name") or ""
    if isinstance(name, str) and len(name) > 52:  # its Jobs are named <name>-<11 digits>
        out.append(invalid("metadata.name", name, "must be no more than 52 characters"))
    schedule = spec.get("schedule")
    if schedule is None or schedule == "":
        out.append(required("spec.schedule"))
    elif not isinstance(schedule, str):
        out.append(_type_error("spec.schedule", schedule, "a string"))
    else:
        try:
            cron.parse(schedule)
        except cron.CronError as exc:
            out.append(invalid("spec.schedule", schedule, str(exc)))
    tz = spec.get("timeZone")
    if tz is not None:
        try:
            if not isinstance(tz, str) or not tz or len(tz) > 255 or tz.startswith(("/", ".")) or ".." in tz:
                raise ValueError(tz)
            zoneinfo.ZoneInfo(tz)
        except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):  # OSError: a name the filesystem refuses
            out.append(invalid("spec.timeZone", tz, f"unknown time zone {tz}"))
    if spec.get("concurrencyPolicy", "Allow") not in _CONCURRENCY:
        out.append(unsupported("spec.concurrencyPolicy", spec.get("concurrencyPolicy"), _CONCURRENCY))
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        out += _non_negative(f"spec.{key}", spec.get(key))
    job_template = spec.get("jobTemplate")
    if not isinstance(job_template, dict):
        out.append(required("spec.jobTemplate") if job_template is None else
                   _type_error("spec.jobTemplate", job_template, "an object"))
    else:
        # Checked now: the controller copies them onto every Job it creates.
        tmeta = job_template.get("metadata") or {}
        if isinstance(tmeta, dict):
            out += validate_labels("spec.jobTemplate.metadata.labels", tmeta.get("labels"))
            out += validate_annotations("spec.jobTemplate.metadata.annotations", tmeta.get("annotations"))
        out += _job_spec("spec.jobTemplate.spec", job_template.get("spec"), None, need_selector=False)
    return out


_BY_KIND: dict[str, Callable[[Obj, Obj | None], list[Cause]]] = {
    "jobs": validate_job,
    "cronjobs": validate_cronjob,
    "controllerrevisions": validate_controllerrevision,
    "deployments": validate_deployment,
    "replicasets": validate_replicaset,
    "daemonsets": validate_daemonset,
    "networkpolicies": validate_networkpolicy,
    "pods": validate_pod,
    "services": validate_service,
    "configmaps": validate_configmap,
    "secrets": validate_secret,
    "nodes": validate_node,
    "leases": validate_lease,
}


def validate(res: Resource, obj: Obj, old: Obj | None, *, subresource: str | None = None) -> list[Cause]:
    out = validate_metadata(res, obj.get("metadata"))
    check = _BY_KIND.get(res.plural)
    if check is not None:
        try:
            if subresource in ("status", "binding") and res.plural == "pods":
                out += []  # status writes and bindings cannot touch the rest of the spec
            else:
                out += check(obj, old)
        except (TypeError, AttributeError, ValueError) as exc:
            # A shape we did not anticipate (e.g. a list where a map belongs) is
            # the client's error, never a 500.
            out.append(Cause("", f"Invalid value: {exc}"))
    return out
