"""Decode the Kubernetes protobuf request bodies that kubectl >= 1.32 sends.

Typed client-go clients (``kubectl create namespace|configmap|secret|service|
serviceaccount|deployment|job|cronjob``) POST ``application/vnd.kubernetes.protobuf`` and do not fall
back to JSON on 415. We answer in JSON (clients read the response type), so
only decoding is needed, and only for the kinds those commands create.

Wire format: the magic ``k8s\\0``, then a ``runtime.Unknown`` message whose
``raw`` field holds the object's own message. Field numbers below are the
upstream ``generated.proto`` ones; an unknown field number is skipped, as
protobuf decoders do.
"""
from __future__ import annotations

import base64
import datetime as dt
import struct
from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


# A field spec: (json name, type[, sub-spec]). Types: str, int, bool, bytes,
# msg (sub-spec), time, intstr, map_str, map_bytes; a "*" suffix means repeated.
Spec = dict[int, tuple[Any, ...]]

TIME: Spec = {1: ("seconds", "int"), 2: ("nanos", "int")}
OWNER_REF: Spec = {1: ("kind", "str"), 3: ("name", "str"), 4: ("uid", "str"), 5: ("apiVersion", "str"),
                   6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}
OBJECT_META: Spec = {
    1: ("name", "str"), 2: ("generateName", "str"), 3: ("namespace", "str"), 5: ("uid", "str"),
    6: ("resourceVersion", "str"), 7: ("generation", "int"), 8: ("creationTimestamp", "time"),
    9: ("deletionTimestamp", "time"), 10: ("deletionGracePeriodSeconds", "int"), 11: ("labels", "map_str"),
    12: ("annotations", "map_str"), 13: ("ownerReferences", "msg*", OWNER_REF), 14: ("finalizers", "str*"),
}
OBJECT_REF: Spec = {1: ("kind", "str"), 2: ("namespace", "str"), 3: ("name", "str"), 4: ("uid", "str"),
                    5: ("apiVersion", "str"), 6: ("resourceVersion", "str"), 7: ("fieldPath", "str")}
SERVICE_PORT: Spec = {1: ("name", "str"), 2: ("protocol", "str"), 6: ("appProtocol", "str"), 3: ("port", "int"),
                      4: ("targetPort", "intstr"), 5: ("nodePort", "int")}
SERVICE_SPEC: Spec = {
    1: ("ports", "msg*", SERVICE_PORT), 2: ("selector", "map_str"), 3: ("clusterIP", "str"), 18: ("clusterIPs", "str*"),
    4: ("type", "str"), 5: ("externalIPs", "str*"), 7: ("sessionAffinity", "str"), 8: ("loadBalancerIP", "str"),
    9: ("loadBalancerSourceRanges", "str*"), 10: ("externalName", "str"), 11: ("externalTrafficPolicy", "str"),
    12: ("healthCheckNodePort", "int"), 13: ("publishNotReadyAddresses", "bool"),
    14: ("sessionAffinityConfig", "msg", {1: ("clientIP", "msg", {1: ("timeoutSeconds", "int")})}),
    19: ("ipFamilies", "str*"), 17: ("ipFamilyPolicy", "str"), 20: ("allocateLoadBalancerNodePorts", "bool"),
    21: ("loadBalancerClass", "str"), 22: ("internalTrafficPolicy", "str"), 23: ("trafficDistribution", "str"),
}
# apps/v1 workloads (``kubectl create deployment`` sends one). The pod spec
# covers what kubectl's generators and common manifests set; other fields are
# skipped like any unknown field number.
LABEL_SELECTOR: Spec = {1: ("matchLabels", "map_str"),
                        2: ("matchExpressions", "msg*", {1: ("key", "str"), 2: ("operator", "str"), 3: ("values", "str*")})}
CONTAINER: Spec = {
    1: ("name", "str"), 2: ("image", "str"), 3: ("command", "str*"), 4: ("args", "str*"), 5: ("workingDir", "str"),
    6: ("ports", "msg*", {1: ("name", "str"), 2: ("hostPort", "int"), 3: ("containerPort", "int"), 4: ("protocol", "str"),
                          5: ("hostIP", "str")}),
    7: ("env", "msg*", {1: ("name", "str"), 2: ("value", "str")}), 13: ("terminationMessagePath", "str"),
    14: ("imagePullPolicy", "str"), 20: ("terminationMessagePolicy", "str"), 16: ("stdin", "bool"), 17: ("stdinOnce", "bool"), 18: ("tty", "bool"),
}
POD_SPEC: Spec = {
    2: ("containers", "msg*", CONTAINER), 20: ("initContainers", "msg*", CONTAINER), 3: ("restartPolicy", "str"),
    4: ("terminationGracePeriodSeconds", "int"), 6: ("dnsPolicy", "str"), 7: ("nodeSelector", "map_str"),
    8: ("serviceAccountName", "str"), 10: ("nodeName", "str"), 11: ("hostNetwork", "bool"), 16: ("hostname", "str"),
    17: ("subdomain", "str"), 19: ("schedulerName", "str"),
    22: ("tolerations", "msg*", {1: ("key", "str"), 2: ("operator", "str"), 3: ("value", "str"), 4: ("effect", "str"),
                                 5: ("tolerationSeconds", "int")}),
    24: ("priorityClassName", "str"),
}
POD_TEMPLATE: Spec = {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", POD_SPEC)}
ROLLING: Spec = {1: ("maxUnavailable", "intstr"), 2: ("maxSurge", "intstr")}
# batch/v1 (``kubectl create job|cronjob``).
JOB_SPEC: Spec = {
    1: ("parallelism", "int"), 2: ("completions", "int"), 3: ("activeDeadlineSeconds", "int"),
    4: ("selector", "msg", LABEL_SELECTOR), 5: ("manualSelector", "bool"), 6: ("template", "msg", POD_TEMPLATE),
    7: ("backoffLimit", "int"), 8: ("ttlSecondsAfterFinished", "int"), 9: ("completionMode", "str"),
    10: ("suspend", "bool"), 14: ("podReplacementPolicy", "str"),
}
CRONJOB_SPEC: Spec = {
    1: ("schedule", "str"), 8: ("timeZone", "str"), 2: ("startingDeadlineSeconds", "int"), 3: ("concurrencyPolicy", "str"),
    4: ("suspend", "bool"), 5: ("jobTemplate", "msg", {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", JOB_SPEC)}),
    6: ("successfulJobsHistoryLimit", "int"), 7: ("failedJobsHistoryLimit", "int"),
}
KINDS: dict[str, Spec] = {
    "Job": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", JOB_SPEC), 3: ("status", "msg", {})},
    "CronJob": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", CRONJOB_SPEC), 3: ("status", "msg", {})},
    "Deployment": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", {
        1: ("replicas", "int"), 2: ("selector", "msg", LABEL_SELECTOR), 3: ("template", "msg", POD_TEMPLATE),
        4: ("strategy", "msg", {1: ("type", "str"), 2: ("rollingUpdate", "msg", ROLLING)}), 5: ("minReadySeconds", "int"),
        6: ("revisionHistoryLimit", "int"), 7: ("paused", "bool"), 9: ("progressDeadlineSeconds", "int")}),
        3: ("status", "msg", {})},
    "Namespace": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", {1: ("finalizers", "str*")}),
                  3: ("status", "msg", {1: ("phase", "str")})},
    "ConfigMap": {1: ("metadata", "msg", OBJECT_META), 4: ("immutable", "bool"), 2: ("data", "map_str"),
                  3: ("binaryData", "map_bytes")},
    "Secret": {1: ("metadata", "msg", OBJECT_META), 5: ("immutable", "bool"), 2: ("data", "map_bytes"),
               4: ("stringData", "map_str"), 3: ("type", "str")},
    "ServiceAccount": {1: ("metadata", "msg", OBJECT_META), 2: ("secrets", "msg*", OBJECT_REF),
                       3: ("imagePullSecrets", "msg*", {1: ("name", "str")}), 4: ("automountServiceAccountToken", "bool")},
    "Service": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", SERVICE_SPEC), 3: ("status", "msg", {})},
    "SelfSubjectAccessReview": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", {
        1: ("resourceAttributes", "msg", {1: ("namespace", "str"), 2: ("verb", "str"), 3: ("group", "str"),
                                          4: ("version", "str"), 5: ("resource", "str"), 6: ("subresource", "str"),
                                          7: ("name", "str")}),
        2: ("nonResourceAttributes", "msg", {1: ("path", "str"), 2: ("verb", "str")}),
    })},
}
UNKNOWN: Spec = {1: ("typeMeta", "msg", {1: ("apiVersion", "str"), 2: ("kind", "str")}), 2: ("raw", "bytes"),
                 3: ("contentEncoding", "str"), 4: ("contentType", "str")}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    out = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ProtobufError("truncated length-delimited field")
            value, pos = buf[pos:pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):  # struct.error escaped as a 500
                raise ProtobufError("truncated fixed-width field")
            value, pos = struct.unpack_from("<q" if wire == 1 else "<i", buf, pos)[0], pos + size
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((num, wire, value))
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _scalar(kind: str, wire: int, value: Any, sub: Any) -> Any:
    if kind in ("str", "bytes", "msg", "time", "intstr") and wire != 2:
        # bytes(<varint>) would allocate that many zero bytes (2**40: the server dies).
        raise ProtobufError(f"wire type {wire} where a length-delimited {kind} belongs")
    if kind == "str":
        return bytes(value).decode("utf-8")
    if kind == "bytes":
        return bytes(value)
    if kind == "int":
        return _signed(value) if wire == 0 else value
    if kind == "bool":
        return bool(value)
    if kind == "msg":
        return decode_message(bytes(value), sub)
    if kind == "time":
        t = decode_message(bytes(value), TIME)
        when = dt.datetime.fromtimestamp(t.get("seconds", 0), dt.timezone.utc)
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "intstr":
        d = decode_message(bytes(value), {1: ("type", "int"), 2: ("intVal", "int"), 3: ("strVal", "str")})
        return d.get("strVal", "") if d.get("type") == 1 else d.get("intVal", 0)
    raise ProtobufError(f"unknown field type {kind}")


def decode_message(buf: bytes, spec: Spec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for num, wire, value in _fields(buf):
        entry = spec.get(num)
        if entry is None:
            continue
        name, kind = entry[0], entry[1]
        sub = entry[2] if len(entry) > 2 else None
        if kind in ("map_str", "map_bytes"):
            if wire != 2:
                raise ProtobufError(f"wire type {wire} where a map entry belongs")
            pair = decode_message(bytes(value), {1: ("k", "str"), 2: ("v", "bytes")})
            v = pair.get("v", b"")
            out.setdefault(name, {})[pair.get("k", "")] = (
                v.decode("utf-8") if kind == "map_str" else base64.b64encode(v).decode())
        elif kind.endswith("*"):
            out.setdefault(name, []).append(_scalar(kind[:-1], wire, value, sub))
        else:
            out[name] = _scalar(kind, wire, value, sub)
    return out


def decode_object(body: bytes) -> dict[str, Any]:
    """A JSON-shaped object from a ``k8s\\0``-prefixed protobuf body."""
    try:
        return _decode_object(body)
    except ProtobufError:
        raise
    except (ValueError, OverflowError, OSError, TypeError, RecursionError) as exc:
        # Bad UTF-8, timestamps out of range, nesting: the body is malformed, not the server.
        raise ProtobufError(f"malformed protobuf body: {exc}") from None


def _decode_object(body: bytes) -> dict[str, Any]:
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    envelope = decode_message(body[len(MAGIC):], UNKNOWN)
    type_meta = envelope.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    spec = KINDS.get(kind)
    if spec is None:
        raise ProtobufError(f"protobuf bodies of kind {kind or '<none>'!r} are not supported; send JSON")
    if envelope.get("contentEncoding"):
        raise ProtobufError("compressed protobuf bodies are not supported")
    decoded = decode_message(envelope.get("raw", b""), spec)
    replicas = (decoded.get("spec") or {}).get("replicas")  # a pointer: an explicit 0 is meant
    obj = _omit_empty(decoded)
    if replicas is not None:
        obj.setdefault("spec", {})["replicas"] = replicas
    obj.get("metadata", {}).pop("creationTimestamp", None)  # always on the wire, zero when unset
    template_meta = (obj.get("spec") or {}).get("template", {}).get("metadata")
    if isinstance(template_meta, dict):
        template_meta.pop("creationTimestamp", None)
    job_template = (obj.get("spec") or {}).get("jobTemplate")
    if isinstance(job_template, dict):  # a CronJob's: the same zero timestamps one and two levels down
        job_template.get("metadata", {}).pop("creationTimestamp", None)
        job_template.get("spec", {}).get("template", {}).get("metadata", {}).pop("creationTimestamp", None)
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **obj}


def _omit_empty(value: Any) -> Any:
    """Go's protobuf writes zero values ("", 0, false) that JSON would omit
    (``omitempty``); for these kinds a zero value means "unset"."""
    if isinstance(value, dict):
        out = {k: _omit_empty(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in ("", None, {}, [], 0)}
    if isinstance(value, list):
        return [_omit_empty(v) for v in value]
    return value
