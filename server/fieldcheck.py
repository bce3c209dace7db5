"""Unknown-field detection for ``fieldValidation`` (Strict / Warn / Ignore).

Upstream decodes into typed structs, so unknown fields are dropped (Ignore),
reported as warnings (Warn) or rejected (Strict, which kubectl sends by
default). We describe each kind's known fields as a small schema tree. Large
or rarely used sub-structures are left open (``ANY``) rather than guessed:
a missing entry here would reject or drop a legitimate field, which is worse
than letting an unknown one through.
"""
from __future__ import annotations

from typing import Any

from .validation import VOLUME_TYPES

ANY: Any = "*"  # anything goes below here
S: Any = "s"  # a scalar (or anything we do not descend into)
# Scalars of one JSON type, where a wrong one would otherwise be stored and break
# readers later (a string Event.count made every `kubectl get events` a 500).
INT: Any = "int"
STR: Any = "str"
BOOL: Any = "bool"
_SCALARS = (S, INT, STR, BOOL)


def L(item: Any) -> list[Any]:  # noqa: N802 - reads like a type
    return [item]


def M(value: Any = S) -> dict[str, Any]:  # noqa: N802
    """A map with free keys."""
    return {"*": value}


OWNER_REF = {k: S for k in ("apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion")}
OBJECT_META: dict[str, Any] = {
    "name": S, "generateName": S, "namespace": S, "selfLink": S, "uid": S, "resourceVersion": S,
    "generation": S, "creationTimestamp": S, "deletionTimestamp": S, "deletionGracePeriodSeconds": S,
    "labels": M(), "annotations": M(), "ownerReferences": L(OWNER_REF), "finalizers": L(S),
    "managedFields": ANY,
}
LABEL_SELECTOR = {"matchLabels": M(), "matchExpressions": L({"key": S, "operator": S, "values": L(S)})}
CONTAINER_PORT = {"name": S, "hostPort": S, "containerPort": S, "protocol": S, "hostIP": S}
ENV_VAR = {"name": S, "value": S, "valueFrom": ANY}
VOLUME_MOUNT = {k: S for k in ("name", "readOnly", "recursiveReadOnly", "mountPath", "subPath", "mountPropagation",
                               "subPathExpr")}
# A volume's type is one of its keys: a misspelt one (``configmap:``) is an
# unknown field, not a silently typeless volume. The sources stay open.
VOLUME = {"name": S, **{kind: ANY for kind in VOLUME_TYPES}}
CONTAINER: dict[str, Any] = {
    "name": S, "image": S, "command": L(S), "args": L(S), "workingDir": S, "ports": L(CONTAINER_PORT),
    "envFrom": ANY, "env": L(ENV_VAR), "resources": ANY, "resizePolicy": ANY, "restartPolicy": S,
    "restartPolicyRules": ANY, "volumeMounts": L(VOLUME_MOUNT), "volumeDevices": ANY, "livenessProbe": ANY,
    "readinessProbe": ANY, "startupProbe": ANY, "lifecycle": ANY, "terminationMessagePath": S,
    "terminationMessagePolicy": S, "imagePullPolicy": S, "securityContext": ANY, "stdin": S, "stdinOnce": S,
    "tty": S, "targetContainerName": S,
}
POD_SPEC: dict[str, Any] = {
    "volumes": L(VOLUME), "initContainers": L(CONTAINER), "containers": L(CONTAINER),
    "ephemeralContainers": L(CONTAINER), "restartPolicy": S, "terminationGracePeriodSeconds": S,
    "activeDeadlineSeconds": S, "dnsPolicy": S, "nodeSelector": M(), "serviceAccountName": S,
    "serviceAccount": S, "automountServiceAccountToken": S, "nodeName": S, "hostNetwork": S, "hostPID": S,
    "hostIPC": S, "shareProcessNamespace": S, "securityContext": ANY, "imagePullSecrets": L({"name": S}),
    "hostname": S, "subdomain": S, "affinity": ANY, "schedulerName": S, "tolerations": ANY,
    "hostAliases": ANY, "priorityClassName": S, "priority": S, "dnsConfig": ANY, "readinessGates": ANY,
    "runtimeClassName": S, "enableServiceLinks": S, "preemptionPolicy": S, "overhead": ANY,
    "topologySpreadConstraints": ANY, "setHostnameAsFQDN": S, "os": ANY, "hostUsers": S,
    "schedulingGates": ANY, "resourceClaims": ANY, "resources": ANY, "hostnameOverride": S,
}
PEER = {"podSelector": LABEL_SELECTOR, "namespaceSelector": LABEL_SELECTOR, "ipBlock": {"cidr": S, "except": L(S)}}
NP_PORT = {"protocol": S, "port": S, "endPort": S}
SERVICE_PORT = {"name": S, "protocol": S, "appProtocol": S, "port": S, "targetPort": S, "nodePort": S}
SERVICE_SPEC = {
    "ports": L(SERVICE_PORT), "selector": M(), "clusterIP": S, "clusterIPs": L(S), "type": S,
    "externalIPs": L(S), "sessionAffinity": S, "loadBalancerIP": S, "loadBalancerSourceRanges": L(S),
    "externalName": S, "externalTrafficPolicy": S, "healthCheckNodePort": S, "publishNotReadyAddresses": S,
    "sessionAffinityConfig": ANY, "ipFamilies": L(S), "ipFamilyPolicy": S, "allocateLoadBalancerNodePorts": S,
    "loadBalancerClass": S, "internalTrafficPolicy": S, "trafficDistribution": S,
}
TOP = {"apiVersion": S, "kind": S, "metadata": OBJECT_META}
OBJECT_REF = {k: STR for k in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")}
OBJ: dict[str, Any] = {"*": ANY}  # an object with any content
ENDPOINT_ADDRESS = {"ip": STR, "hostname": STR, "nodeName": STR, "*": ANY}
# Status fields the printers (tables.py) read are typed; the rest stays open ("*").
CONDITION = {"type": STR, "status": STR, "reason": STR, "message": STR, "*": ANY}
_TERMINATED = {"exitCode": INT, "signal": INT, "reason": STR, "message": STR, "startedAt": STR, "finishedAt": STR,
               "containerID": STR, "*": ANY}
CONTAINER_STATE = {"waiting": {"reason": STR, "message": STR, "*": ANY}, "running": {"startedAt": STR, "*": ANY},
                   "terminated": _TERMINATED}
CONTAINER_STATUS = {"name": STR, "ready": BOOL, "started": BOOL, "restartCount": INT, "image": STR, "imageID": STR,
                    "containerID": STR, "state": CONTAINER_STATE, "lastState": CONTAINER_STATE, "*": ANY}
POD_STATUS = {"phase": STR, "reason": STR, "message": STR, "podIP": STR, "hostIP": STR, "nominatedNodeName": STR,
              "startTime": STR, "conditions": L(CONDITION), "containerStatuses": L(CONTAINER_STATUS),
              "initContainerStatuses": L(CONTAINER_STATUS), "ephemeralContainerStatuses": L(CONTAINER_STATUS),
              "podIPs": L({"ip": STR, "*": ANY}), "hostIPs": L({"ip": STR, "*": ANY}), "*": ANY}
NODE_STATUS = {"conditions": L(CONDITION), "addresses": L({"type": STR, "address": STR, "*": ANY}),
               "daemonEndpoints": {"kubeletEndpoint": {"Port": INT, "*": ANY}},
               "nodeInfo": {**{k: STR for k in ("kubeletVersion", "osImage", "kernelVersion", "containerRuntimeVersion",
                                                "operatingSystem", "architecture")}, "*": ANY},
               "capacity": M(), "allocatable": M(), "*": ANY}

POD_TEMPLATE = {"metadata": OBJECT_META, "spec": POD_SPEC}
WORKLOAD_STATUS = {"replicas": INT, "readyReplicas": INT, "availableReplicas": INT, "updatedReplicas": INT,
                   "observedGeneration": INT, "conditions": L(CONDITION), "*": ANY}
ROLLING_UPDATE = {"maxSurge": S, "maxUnavailable": S}
JOB_SPEC: dict[str, Any] = {
    "parallelism": INT, "completions": INT, "activeDeadlineSeconds": INT, "podFailurePolicy": ANY,
    "successPolicy": ANY, "backoffLimit": INT, "backoffLimitPerIndex": INT, "maxFailedIndexes": INT,
    "selector": LABEL_SELECTOR, "manualSelector": BOOL, "template": POD_TEMPLATE, "ttlSecondsAfterFinished": INT,
    "completionMode": STR, "suspend": BOOL, "podReplacementPolicy": STR, "managedBy": STR,
}
JOB_STATUS = {"conditions": L(CONDITION), "startTime": STR, "completionTime": STR, "active": INT, "succeeded": INT,
              "failed": INT, "ready": INT, "terminating": INT, "*": ANY}
CRONJOB_SPEC: dict[str, Any] = {
    "schedule": STR, "timeZone": STR, "startingDeadlineSeconds": INT, "concurrencyPolicy": STR, "suspend": BOOL,
    "jobTemplate": {"metadata": OBJECT_META, "spec": JOB_SPEC}, "successfulJobsHistoryLimit": INT,
    "failedJobsHistoryLimit": INT,
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "jobs": {**TOP, "spec": JOB_SPEC, "status": JOB_STATUS},
    "cronjobs": {**TOP, "spec": CRONJOB_SPEC, "status": {"active": L(OBJECT_REF), "lastScheduleTime": STR,
                                                          "lastSuccessfulTime": STR, "*": ANY}},
    "controllerrevisions": {**TOP, "data": ANY, "revision": INT},
    "deployments": {**TOP, "spec": {
        "replicas": INT, "selector": LABEL_SELECTOR, "template": POD_TEMPLATE, "strategy": {"type": S, "rollingUpdate": ROLLING_UPDATE},
        "minReadySeconds": INT, "revisionHistoryLimit": INT, "paused": BOOL, "progressDeadlineSeconds": INT,
    }, "status": WORKLOAD_STATUS},
    "replicasets": {**TOP, "spec": {"replicas": INT, "minReadySeconds": INT, "selector": LABEL_SELECTOR,
                                    "template": POD_TEMPLATE}, "status": WORKLOAD_STATUS},
    "daemonsets": {**TOP, "spec": {
        "selector": LABEL_SELECTOR, "template": POD_TEMPLATE, "updateStrategy": {"type": S, "rollingUpdate": ROLLING_UPDATE},
        "minReadySeconds": INT, "revisionHistoryLimit": INT,
    }, "status": {**{k: INT for k in ("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled",
                                      "numberReady", "updatedNumberScheduled", "numberAvailable")}, "*": ANY}},
    "pods": {**TOP, "spec": POD_SPEC, "status": POD_STATUS},
    "nodes": {**TOP, "spec": {"podCIDR": S, "podCIDRs": L(S), "providerID": S, "unschedulable": S, "taints": ANY,
                              "configSource": ANY, "externalID": S}, "status": NODE_STATUS},
    "namespaces": {**TOP, "spec": {"finalizers": L(S)}, "status": OBJ},
    "services": {**TOP, "spec": SERVICE_SPEC, "status": OBJ},
    "endpoints": {**TOP, "subsets": L({"addresses": L(ENDPOINT_ADDRESS), "notReadyAddresses": L(ENDPOINT_ADDRESS),
                                       "ports": L({"name": STR, "port": INT, "protocol": STR, "*": ANY})})},
    "configmaps": {**TOP, "data": M(), "binaryData": M(), "immutable": S},
    "secrets": {**TOP, "data": M(), "stringData": M(), "type": STR, "immutable": S},
    "serviceaccounts": {**TOP, "secrets": L(OBJ), "imagePullSecrets": L(OBJ), "automountServiceAccountToken": S},
    "events": {**TOP, **{k: STR for k in (
        "reason", "message", "firstTimestamp", "lastTimestamp", "type", "eventTime", "action",
        "reportingComponent", "reportingInstance")},
        "count": INT, "involvedObject": OBJECT_REF, "related": OBJECT_REF,
        "source": {"component": STR, "host": STR},
        "series": {"count": INT, "lastObservedTime": STR, "*": ANY}},
    "leases": {**TOP, "spec": {k: S for k in (
        "holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime", "leaseTransitions",
        "strategy", "preferredHolder")}},
    "networkpolicies": {**TOP, "spec": {
        "podSelector": LABEL_SELECTOR,
        "ingress": L({"ports": L(NP_PORT), "from": L(PEER)}),
        "egress": L({"ports": L(NP_PORT), "to": L(PEER)}),
        "policyTypes": L(S),
    }, "status": OBJ},
}


def unknown_fields(plural: str, obj: Any, *, prune: bool = False) -> list[str]:
    """Paths of fields the kind does not have (``spec.foo``, ``spec.containers[0].bar``).
    With ``prune``, they are also removed from ``obj`` in place."""
    schema = SCHEMAS.get(plural)
    if schema is None:
        return []
    out: list[str] = []
    _walk(schema, obj, "", out, prune)
    return out


def _walk(schema: Any, value: Any, path: str, out: list[str], prune: bool) -> None:
    if schema is ANY or schema in _SCALARS:
        return
    if isinstance(schema, list):
        if isinstance(value, list):
            for i, item in enumerate(value):
                _walk(schema[0], item, f"{path}[{i}]", out, prune)
        return
    if not isinstance(schema, dict) or not isinstance(value, dict):
        return
    free = schema.get("*")
    for key in list(value):
        sub = schema.get(key)
        if sub is None:
            if free is not None:
                _walk(free, value[key], f"{path}.{key}" if path else key, out, prune)
                continue
            out.append(f"{path}.{key}" if path else key)
            if prune:
                del value[key]
            continue
        _walk(sub, value[key], f"{path}.{key}" if path else key, out, prune)


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def shape_errors(plural: str, obj: Any) -> list[str]:
    """Values of the wrong JSON type where the schema knows the type (a map where
    a string belongs, a string where a list belongs). Upstream's decoder rejects
    these with 400 before anything else runs; so do we."""
    if not isinstance(obj, dict):
        return [f"the object must be a JSON object, not {_kind_of(obj)}"]
    schema = SCHEMAS.get(plural, TOP)
    out: list[str] = []
    _shape(schema, obj, "", out)
    return out


def _shape(schema: Any, value: Any, path: str, out: list[str]) -> None:
    if schema is ANY or value is None:
        return
    where = path or "<root>"
    if schema is S:
        if isinstance(value, (dict, list)):
            out.append(f"{where}: expected a scalar value, got {_kind_of(value)}")
        return
    if schema is INT:
        if not isinstance(value, int) or isinstance(value, bool):
            out.append(f"{where}: expected an integer, got {_kind_of(value)}")
        return
    if schema is STR:
        if not isinstance(value, str):
            out.append(f"{where}: expected a string, got {_kind_of(value)}")
        return
    if schema is BOOL:
        if not isinstance(value, bool):
            out.append(f"{where}: expected a boolean, got {_kind_of(value)}")
        return
    if isinstance(schema, list):
        if not isinstance(value, list):
            out.append(f"{where}: expected an array, got {_kind_of(value)}")
            return
        for i, item in enumerate(value):
            _shape(schema[0], item, f"{path}[{i}]", out)
        return
    if not isinstance(value, dict):
        out.append(f"{where}: expected an object, got {_kind_of(value)}")
        return
    free = schema.get("*")
    for key, item in value.items():
        sub = schema.get(key, free)
        if sub is not None:
            _shape(sub, item, f"{path}.{key}" if path else key, out)
