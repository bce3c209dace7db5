"""Per-kind defaulting, as the upstream API server applies it on every write.

Kept apart from registry.py so the object layer reads as semantics, and this
file as the list of "what upstream fills in" (which ``kubectl describe`` and
``get -o yaml`` users expect to see).
"""
from __future__ import annotations

import base64
import ipaddress
import json
from typing import TYPE_CHECKING, Any

from . import status
from .resources import Resource

if TYPE_CHECKING:
    from .registry import Registry

Obj = dict[str, Any]


def _container(c: Any) -> None:
    if not isinstance(c, dict):
        return
    image = str(c.get("image", ""))
    if "imagePullPolicy" not in c:
        tag = image.rsplit("/", 1)[-1]
        c["imagePullPolicy"] = "Always" if (":" not in tag or tag.endswith(":latest")) and "@" not in image else "IfNotPresent"
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def _pod(obj: Obj, old: Obj | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("priority", 0)
    spec.setdefault("tolerations", [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ])
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            _container(c)
    if old is None:
        st = obj.setdefault("status", {})
        if isinstance(st, dict):
            st.setdefault("phase", "Pending")
            st.setdefault("qosClass", _qos(spec))


def _qos(spec: Obj) -> str:
    containers = [c for c in (spec.get("containers") or []) if isinstance(c, dict)]
    if not containers:
        return "BestEffort"
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and req[r] != lim[r]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _namespace(obj: Obj, old: Obj | None) -> None:
    name = obj["metadata"].get("name", "")
    labels = obj["metadata"].setdefault("labels", {})
    if isinstance(labels, dict) and name:
        labels["kubernetes.io/metadata.name"] = name
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("finalizers", ["kubernetes"])
    st = obj.setdefault("status", {})
    if isinstance(st, dict) and not obj["metadata"].get("deletionTimestamp"):
        st["phase"] = "Active"


def _secret(obj: Obj) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = obj.setdefault("data", {}) or {}
        obj["data"] = data
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()


def _networkpolicy(obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("podSelector", {})
    if "policyTypes" not in spec or not spec["policyTypes"]:
        types = ["Ingress"]
        if spec.get("egress"):
            types.append("Egress")
        spec["policyTypes"] = types
    for direction in ("ingress", "egress"):
        for rule in spec.get(direction) or []:
            if isinstance(rule, dict):
                for port in rule.get("ports") or []:
                    if isinstance(port, dict):
                        port.setdefault("protocol", "TCP")


async def _service(registry: "Registry", res: Resource, obj: Obj, old: Obj | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])
    if spec["type"] == "ExternalName":
        return
    spec.setdefault("internalTrafficPolicy", "Cluster")
    old_spec = (old or {}).get("spec") or {}
    if old_spec.get("clusterIP") and not spec.get("clusterIP"):
        spec["clusterIP"] = old_spec["clusterIP"]  # clusterIP is immutable; an apply that omits it keeps it
        spec["clusterIPs"] = old_spec.get("clusterIPs", [old_spec["clusterIP"]])
    if not spec.get("clusterIP"):
        spec["clusterIP"] = await _allocate_ip(registry, res, obj)
    elif spec["clusterIP"] != "None" and spec["clusterIP"] != old_spec.get("clusterIP"):
        await _check_requested_ip(registry, res, obj, spec["clusterIP"])
    if spec["clusterIP"] != "None":
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
        old_ports = {(p.get("port"), p.get("protocol")): p.get("nodePort") for p in old_spec.get("ports") or [] if isinstance(p, dict)}
        await _check_requested_node_ports(registry, res, obj, old_spec)
        for port in spec.get("ports") or []:
            if isinstance(port, dict) and not port.get("nodePort"):
                port["nodePort"] = old_ports.get((port.get("port"), port.get("protocol"))) or await _allocate_node_port(registry, res, obj)
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    obj.setdefault("status", {"loadBalancer": {}})


async def _used_services(registry: "Registry", res: Resource) -> list[Obj]:
    listed = await registry.store.list(res.prefix())
    return [json.loads(kv.value) for kv in listed.items]


async def _allocate_ip(registry: "Registry", res: Resource, obj: Obj) -> str:
    """The lowest free address after .1 (which the kubernetes Service owns)."""
    net = registry.service_net
    if obj["metadata"].get("namespace") == "default" and obj["metadata"].get("name") == "kubernetes":
        return str(net.network_address + 1)
    async with registry._alloc_lock:
        used = {(s.get("spec") or {}).get("clusterIP") for s in await _used_services(registry, res)}
        for offset in range(10, net.num_addresses - 1):
            ip = str(net.network_address + offset)
            if ip not in used:
                return ip
    raise status.ApiError(500, f"no free cluster IP in {net}", "InternalError")


def _others(services: list[Obj], obj: Obj) -> list[Obj]:
    me = (obj["metadata"].get("namespace"), obj["metadata"].get("name"))
    return [s for s in services if ((s.get("metadata") or {}).get("namespace"), (s.get("metadata") or {}).get("name")) != me]


async def _check_requested_ip(registry: "Registry", res: Resource, obj: Obj, ip: Any) -> None:
    """A clusterIP the user chose must be in --service-cidr and free (upstream's
    allocator refuses both; accepting them gave Services unroutable or shared IPs)."""
    try:
        addr = ipaddress.ip_address(ip)
    except (TypeError, ValueError):
        return  # not an IP at all: validation reports it with the other field errors
    net = registry.service_net
    if addr not in net:
        problem = f"the provided IP ({ip}) is not in the valid range. The range of valid IPs is {net}"
    else:
        async with registry._alloc_lock:
            taken = any((s.get("spec") or {}).get("clusterIP") == str(addr)
                        for s in _others(await _used_services(registry, res), obj))
        if not taken:
            return
        problem = "provided IP is already allocated"
    raise status.invalid("Service", obj["metadata"].get("name") or "", [status.Cause(
        "spec.clusterIPs", f'Invalid value: ["{ip}"]: failed to allocate IP {ip}: {problem}')])


async def _check_requested_node_ports(registry: "Registry", res: Resource, obj: Obj, old_spec: Obj) -> None:
    low, high = registry.node_port_range
    kept = {p.get("nodePort") for p in old_spec.get("ports") or [] if isinstance(p, dict)}
    requested = [(i, p.get("nodePort")) for i, p in enumerate(obj["spec"].get("ports") or [])
                 if isinstance(p, dict) and isinstance(p.get("nodePort"), int) and not isinstance(p.get("nodePort"), bool)
                 and p.get("nodePort") and p.get("nodePort") not in kept]
    if not requested:
        return
    used = {p.get("nodePort") for s in _others(await _used_services(registry, res), obj)
            for p in ((s.get("spec") or {}).get("ports") or []) if isinstance(p, dict)}
    causes = []
    for i, port in requested:
        if not low <= port <= high:
            problem = f"provided port is not in the valid range. The range of valid ports is {low}-{high}"
        elif port in used:
            problem = "provided port is already allocated"
        else:
            continue
        causes.append(status.Cause(f"spec.ports[{i}].nodePort", f"Invalid value: {port}: {problem}"))
    if causes:
        raise status.invalid("Service", obj["metadata"].get("name") or "", causes)


async def _allocate_node_port(registry: "Registry", res: Resource, obj: Obj) -> int:
    low, high = registry.node_port_range
    used = {p.get("nodePort") for s in await _used_services(registry, res) for p in ((s.get("spec") or {}).get("ports") or [])}
    used |= {p.get("nodePort") for p in (obj.get("spec", {}).get("ports") or []) if isinstance(p, dict)}
    for port in range(low, high + 1):
        if port not in used:
            return port
    raise status.ApiError(500, "no free node port", "InternalError")


# Set on pods by admission, not in templates (upstream templates never show them).
_POD_ONLY_DEFAULTS = ("tolerations", "serviceAccountName", "serviceAccount", "priority")


def _pod_template(template: Any) -> None:
    """A workload's ``spec.template``: the pod spec defaults, without status."""
    if not isinstance(template, dict):
        return
    meta = template.setdefault("metadata", {})
    spec = template.get("spec")
    if not isinstance(spec, dict) or not isinstance(meta, dict):
        return
    had = set(spec)
    _pod(template, template)  # old given: no status is added
    for key in _POD_ONLY_DEFAULTS:
        if key not in had:
            spec.pop(key, None)
    meta.pop("creationTimestamp", None)


def _workload(kind: str, obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if kind != "daemonsets":
        spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    if kind == "deployments":
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("maxSurge", "25%")
                    rolling.setdefault("maxUnavailable", "25%")
    elif kind == "daemonsets":
        strategy = spec.setdefault("updateStrategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("maxUnavailable", 1)
                    rolling.setdefault("maxSurge", 0)
    else:
        spec.pop("revisionHistoryLimit", None)  # ReplicaSets have none
    _pod_template(spec.get("template"))
    obj.setdefault("status", {})


# The labels upstream puts on a Job's pods (both spellings) and the selector key.
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def _job(obj: Obj, old: Obj | None) -> None:
    """SetDefaults_Job plus the selector the Job strategy generates on create:
    the template is labelled with the Job's uid and name (old and new keys) and
    selected by ``batch.kubernetes.io/controller-uid``, unless manualSelector."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if not spec.get("podFailurePolicy"):
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    template = spec.get("template")
    old_sel = ((old or {}).get("spec") or {}).get("selector")
    if "selector" not in spec and old_sel is not None:
        spec["selector"] = old_sel  # immutable: a replace that omits it keeps it
    if not spec.get("manualSelector") and isinstance(template, dict) and old is None:
        meta = obj.get("metadata") or {}
        uid, name = str(meta.get("uid", "")), meta.get("name")
        tmeta = template.setdefault("metadata", {})
        if isinstance(tmeta, dict):
            labels = tmeta.get("labels")
            labels = labels if isinstance(labels, dict) else {}
            tmeta["labels"] = {**labels, "controller-uid": uid, JOB_UID_LABEL: uid}
            # With only generateName the name is chosen after defaulting: no
            # name label rather than a wrong one (the selector uses the uid).
            if isinstance(name, str) and name:
                tmeta["labels"].update({"job-name": name, JOB_NAME_LABEL: name})
        if "selector" not in spec:
            spec["selector"] = {"matchLabels": {JOB_UID_LABEL: uid}}
    _pod_template(template)
    obj.setdefault("status", {})


def _cronjob(obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    job_template = spec.get("jobTemplate")
    if isinstance(job_template, dict) and isinstance(job_template.get("spec"), dict):
        _pod_template(job_template["spec"].get("template"))
    obj.setdefault("status", {})


async def apply_defaults(registry: "Registry", res: Resource, obj: Obj, old: Obj | None) -> None:
    kind = res.plural
    if kind in ("deployments", "replicasets", "daemonsets"):
        _workload(kind, obj)
    elif kind == "jobs":
        _job(obj, old)
    elif kind == "cronjobs":
        _cronjob(obj)
    elif kind == "pods":
        _pod(obj, old)
    elif kind == "namespaces":
        _namespace(obj, old)
    elif kind == "secrets":
        _secret(obj)
    elif kind == "services":
        await _service(registry, res, obj, old)
    elif kind == "networkpolicies":
        _networkpolicy(obj)
    elif kind == "nodes" and old is None:
        obj.setdefault("spec", {})
        obj.setdefault("status", {})

