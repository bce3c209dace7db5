"""Server-side printing: ``as=Table`` with upstream's columns.

kubectl has no per-type printers of its own; what ``kubectl get`` shows is
exactly these cells. Wide columns have ``priority: 1``. Each row carries the
object's metadata (PartialObjectMetadata) so ``-A``, ``--show-labels`` and
``-L`` work.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from edgectl.log import fields

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Column = tuple[str, str, str, int, str]  # name, type, format, priority, description
Printer = tuple[list[Column], Callable[[Obj, dt.datetime], list[Any]]]


def human_duration(seconds: float) -> str:
    """Upstream's duration.HumanDuration: coarser as the age grows."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rem = s % 60
        return f"{minutes}m" if rem == 0 else f"{minutes}m{rem}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rem = minutes % 60
        return f"{hours}h" if rem == 0 else f"{hours}h{rem}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rem = hours % 24
        return f"{hours // 24}d" if rem == 0 else f"{hours // 24}d{rem}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = hours // 24
        rem = days % 365
        return f"{days // 365}y" if rem == 0 else f"{days // 365}y{rem}d"
    return f"{hours // 24 // 365}y"


def parse_time(text: Any) -> dt.datetime | None:
    """An RFC 3339 timestamp from an object, or None."""
    return _ts(text)


def _ts(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    return _parse_ts(text)


@functools.lru_cache(maxsize=4096)  # many objects share a creation second
def _parse_ts(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(obj: Obj, now: dt.datetime, field: str = "creationTimestamp") -> str:
    when = _ts((obj.get("metadata") or {}).get(field))
    return "<unknown>" if when is None else human_duration((now - when).total_seconds())


def _since(text: Any, now: dt.datetime) -> str:
    when = _ts(text)
    return "<unknown>" if when is None else human_duration((now - when).total_seconds())


def _name_col() -> Column:
    return ("Name", "string", "name", 0, "Name must be unique within a namespace.")


def _age_col() -> Column:
    return ("Age", "string", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.")


def _col(name: str, priority: int = 0, typ: str = "string", desc: str = "") -> Column:
    return (name, typ, "", priority, desc or name)


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def format_label_selector(sel: Any) -> str:
    """metav1.FormatLabelSelector: ``<none>`` for an empty selector."""
    if not isinstance(sel, dict):
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts) or "<none>"


# --- pods ------------------------------------------------------------------------


def _pod_row(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    containers = spec.get("containers") or []
    reason = st.get("reason") or st.get("phase") or ""
    statuses = st.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = 0
    last_restart: dt.datetime | None = None
    init_done = True
    for i, c in enumerate(st.get("initContainerStatuses") or []):
        restarts += int(c.get("restartCount") or 0)
        state = c.get("state") or {}
        term = state.get("terminated")
        if term and term.get("exitCode") == 0:
            continue
        init_done = False
        if term:
            reason = "Init:" + (term.get("reason") or f"ExitCode:{term.get('exitCode')}")
        elif (state.get("waiting") or {}).get("reason") not in (None, "", "PodInitializing"):
            reason = "Init:" + state["waiting"]["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        break
    if init_done:
        running = False
        for c in reversed(statuses):
            restarts += int(c.get("restartCount") or 0)
            term_last = ((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
            when = _ts(term_last)
            if when and (last_restart is None or when > last_restart):
                last_restart = when
            state = c.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif state.get("terminated"):
                term = state["terminated"]
                reason = term.get("reason") or (f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode')}")
            elif state.get("running") and c.get("ready"):
                running = True
        if reason == "Completed" and running:
            reason = "Running" if any(cond.get("type") == "Ready" and cond.get("status") == "True"
                                      for cond in st.get("conditions") or []) else "NotReady"
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Unknown" if st.get("reason") == "NodeLost" else "Terminating"
    restart_cell = str(restarts)
    if restarts and last_restart is not None:
        restart_cell = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    gates = spec.get("readinessGates") or []
    if gates:
        conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
        gate_cell = f"{sum(1 for g in gates if conds.get(g.get('conditionType')) == 'True')}/{len(gates)}"
    else:
        gate_cell = "<none>"
    return [
        _name(obj), f"{ready}/{len(containers)}", reason, restart_cell, age(obj, now),
        st.get("podIP") or "<none>", spec.get("nodeName") or "<none>", st.get("nominatedNodeName") or "<none>", gate_cell,
    ]


_POD_COLS: list[Column] = [
    _name_col(),
    _col("Ready", desc="The aggregate readiness state of this pod for accepting traffic."),
    _col("Status", desc="The aggregate status of the containers in this pod."),
    _col("Restarts", desc="The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    _age_col(),
    _col("IP", 1, desc="IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
    _col("Node", 1, desc="NodeName is a request to schedule this pod onto a specific node."),
    _col("Nominated Node", 1, desc="nominatedNodeName is set only when this pod preempts other pods on the node."),
    _col("Readiness Gates", 1, desc="If specified, all readiness gates will be evaluated for pod readiness."),
]


# --- nodes -----------------------------------------------------------------------


def _node_row(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, st, meta = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    conds = {c.get("type"): c.get("status") for c in st.get("conditions") or [] if isinstance(c, dict)}
    # Upstream's printer: any Ready status but True (False or Unknown) is
    # NotReady; only a node with no Ready condition at all is Unknown.
    status_parts = ["Unknown" if "Ready" not in conds else "Ready" if conds["Ready"] == "True" else "NotReady"]
    if spec.get("unschedulable"):
        status_parts.append("SchedulingDisabled")
    roles = sorted({k.split("/", 1)[1] for k in (meta.get("labels") or {}) if k.startswith("node-role.kubernetes.io/") and "/" in k}
                   | ({(meta.get("labels") or {}).get("kubernetes.io/role")} - {None}))
    roles = [r for r in roles if r]
    addresses = st.get("addresses") or []

    def addr(kind: str) -> str:
        return next((a.get("address") for a in addresses if a.get("type") == kind), None) or "<none>"

    info = st.get("nodeInfo") or {}
    return [
        _name(obj), ",".join(status_parts), ",".join(roles) or "<none>", age(obj, now), info.get("kubeletVersion", ""),
        addr("InternalIP"), addr("ExternalIP"), info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


_NODE_COLS: list[Column] = [
    _name_col(),
    _col("Status", desc="The status of the node"),
    _col("Roles", desc="The roles of the node"),
    _age_col(),
    _col("Version", desc="Kubelet Version reported by the node."),
    _col("Internal-IP", 1, desc="List of addresses reachable to the node. Queried from cloud provider, if available."),
    _col("External-IP", 1, desc="List of addresses reachable to the node. Queried from cloud provider, if available."),
    _col("OS-Image", 1, desc="OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
    _col("Kernel-Version", 1, desc="Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
    _col("Container-Runtime", 1, desc="ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
]


# --- services, endpoints ------------------------------------------------------------


def _svc_row(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    typ = spec.get("type", "ClusterIP")
    external = "<none>"
    if typ == "LoadBalancer":
        ips = [i.get("ip") or i.get("hostname") for i in (st.get("loadBalancer") or {}).get("ingress") or []]
        ips += spec.get("externalIPs") or []
        external = ",".join(i for i in ips if i) or "<pending>"
    elif typ == "ExternalName":
        external = spec.get("externalName") or "<none>"
    elif spec.get("externalIPs"):
        external = ",".join(spec["externalIPs"])
    ports = []
    for p in spec.get("ports") or []:
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        ports.append(f"{text}/{p.get('protocol', 'TCP')}")
    selector = spec.get("selector") or {}
    return [
        _name(obj), typ, spec.get("clusterIP") or "<none>", external, ",".join(ports) or "<none>", age(obj, now),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
    ]


_SVC_COLS: list[Column] = [
    _name_col(), _col("Type", desc="type determines how the Service is exposed."),
    _col("Cluster-IP", desc="clusterIP is the IP address of the service and is usually assigned randomly."),
    _col("External-IP", desc="externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
    _col("Port(s)", desc="The list of ports that are exposed by this service."), _age_col(),
    _col("Selector", 1, desc="Route service traffic to pods with label keys and values matching this selector."),
]


def _ep_row(obj: Obj, now: dt.datetime) -> list[Any]:
    eps: list[str] = []
    for subset in obj.get("subsets") or []:
        ports = subset.get("ports") or [{}]
        for addr in subset.get("addresses") or []:
            for p in ports:
                eps.append(f"{addr.get('ip')}:{p['port']}" if p.get("port") else str(addr.get("ip")))
    cell = ",".join(eps[:3]) + (f" + {len(eps) - 3} more..." if len(eps) > 3 else "")
    return [_name(obj), cell or "<none>", age(obj, now)]


# --- the rest ------------------------------------------------------------------------


def _ns_row(obj: Obj, now: dt.datetime) -> list[Any]:
    return [_name(obj), (obj.get("status") or {}).get("phase", ""), age(obj, now)]


def _netpol_row(obj: Obj, now: dt.datetime) -> list[Any]:
    return [_name(obj), format_label_selector((obj.get("spec") or {}).get("podSelector")), age(obj, now)]


def _lease_row(obj: Obj, now: dt.datetime) -> list[Any]:
    return [_name(obj), (obj.get("spec") or {}).get("holderIdentity") or "", age(obj, now)]


def _cm_row(obj: Obj, now: dt.datetime) -> list[Any]:
    return [_name(obj), len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), age(obj, now)]


def _secret_row(obj: Obj, now: dt.datetime) -> list[Any]:
    return [_name(obj), obj.get("type", "Opaque"), len(obj.get("data") or {}), age(obj, now)]


def _sa_row(obj: Obj, now: dt.datetime) -> list[Any]:
    return [_name(obj), len(obj.get("secrets") or []), age(obj, now)]


def _event_row(obj: Obj, now: dt.datetime) -> list[Any]:
    inv = obj.get("involvedObject") or {}
    src = obj.get("source") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or (obj.get("series") or {}).get("lastObservedTime") \
        or (obj.get("metadata") or {}).get("creationTimestamp")
    first = obj.get("firstTimestamp") or obj.get("eventTime") or (obj.get("metadata") or {}).get("creationTimestamp")
    source = src.get("component") or obj.get("reportingComponent") or ""
    if src.get("host"):
        source += f", {src['host']}"
    kind = str(inv.get("kind", "")).lower()
    return [
        _since(last, now), obj.get("type", ""), obj.get("reason", ""), f"{kind}/{inv.get('name', '')}",
        str(obj.get("message", "")).strip(), inv.get("fieldPath", ""), source, _since(first, now),
        int(obj.get("count") or (obj.get("series") or {}).get("count") or 1), _name(obj),
    ]


_EVENT_COLS: list[Column] = [
    _col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message"),
    _col("Subobject", 1), _col("Source", 1), _col("First Seen", 1), _col("Count", 1, "integer"), _col("Name", 1),
]


# --- workloads (apps/v1) ------------------------------------------------------------


def _template_cells(obj: Obj) -> tuple[str, str]:
    """CONTAINERS and IMAGES: the template's container names and images, comma-joined."""
    containers = ((((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [])
    return (",".join(str(c.get("name", "")) for c in containers if isinstance(c, dict)),
            ",".join(str(c.get("image", "")) for c in containers if isinstance(c, dict)))


def _deploy_row(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _template_cells(obj)
    return [_name(obj), f"{int(st.get('readyReplicas') or 0)}/{int(spec.get('replicas', 1))}",
            int(st.get("updatedReplicas") or 0), int(st.get("availableReplicas") or 0), age(obj, now),
            names, images, format_label_selector(spec.get("selector"))]


def _rs_row(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _template_cells(obj)
    return [_name(obj), int(spec.get("replicas", 1)), int(st.get("replicas") or 0), int(st.get("readyReplicas") or 0),
            age(obj, now), names, images, format_label_selector(spec.get("selector"))]


def _ds_row(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _template_cells(obj)
    node_sel = (((spec.get("template") or {}).get("spec") or {}).get("nodeSelector") or {})
    return [_name(obj)] + [int(st.get(k) or 0) for k in (
        "desiredNumberScheduled", "currentNumberScheduled", "numberReady", "updatedNumberScheduled", "numberAvailable")] + [
        ",".join(f"{k}={v}" for k, v in sorted(node_sel.items())) or "<none>", age(obj, now),
        names, images, format_label_selector(spec.get("selector"))]


_WORKLOAD_WIDE: list[Column] = [
    _col("Containers", 1, desc="Names of each container in the template."),
    _col("Images", 1, desc="Images referenced by each container in the template."),
    _col("Selector", 1, desc="Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
]
_DEPLOY_COLS: list[Column] = [
    _name_col(), _col("Ready", desc="Number of the pod with ready state"),
    _col("Up-to-date", typ="integer", desc="Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
    _col("Available", typ="integer", desc="Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
    _age_col(), *_WORKLOAD_WIDE,
]
_RS_COLS: list[Column] = [
    _name_col(), _col("Desired", typ="integer", desc="Replicas is the number of desired replicas."),
    _col("Current", typ="integer", desc="Replicas is the most recently observed number of replicas."),
    _col("Ready", typ="integer", desc="The number of ready replicas for this replica set."),
    _age_col(), *_WORKLOAD_WIDE,
]
_DS_COLS: list[Column] = [
    _name_col(),
    _col("Desired", typ="integer", desc="The total number of nodes that should be running the daemon pod."),
    _col("Current", typ="integer", desc="The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
    _col("Ready", typ="integer", desc="numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition."),
    _col("Up-to-date", typ="integer", desc="The total number of nodes that are running updated daemon pod"),
    _col("Available", typ="integer", desc="The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
    _col("Node Selector", desc="NodeSelector is a selector which must be true for the pod to fit on a node."),
    _age_col(), *_WORKLOAD_WIDE,
]


# --- batch/v1 ------------------------------------------------------------------------


def _has_condition(obj: Obj, kind: str) -> bool:
    return any(isinstance(c, dict) and c.get("type") == kind and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def _job_row(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    succeeded = int(st.get("succeeded") or 0)
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{int(spec['completions'])}"
    elif int(spec.get("parallelism") or 1) > 1:
        completions = f"{succeeded}/1 of {int(spec['parallelism'])}"
    else:
        completions = f"{succeeded}/1"
    start, end = _ts(st.get("startTime")), _ts(st.get("completionTime"))
    took = "" if start is None else human_duration(((end or now) - start).total_seconds())
    for status, condition in (("Complete", "Complete"), ("Failed", "Failed")):
        if _has_condition(obj, condition):
            break
    else:
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            status = "Terminating"
        elif _has_condition(obj, "Suspended"):
            status = "Suspended"
        elif _has_condition(obj, "FailureTarget"):
            status = "FailureTarget"
        elif _has_condition(obj, "SuccessCriteriaMet"):
            status = "SuccessCriteriaMet"
        else:
            status = "Running"
    names, images = _template_cells(obj)
    return [_name(obj), status, completions, took, age(obj, now), names, images,
            format_label_selector(spec.get("selector"))]


def _cronjob_row(obj: Obj, now: dt.datetime) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    suspend = spec.get("suspend")
    job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    names, images = _template_cells({"spec": job_spec})
    last = "<none>" if not st.get("lastScheduleTime") else _since(st["lastScheduleTime"], now)
    return [_name(obj), str(spec.get("schedule", "")), spec.get("timeZone") or "<none>",
            "<unset>" if suspend is None else str(bool(suspend)), len(st.get("active") or []), last, age(obj, now),
            names, images, format_label_selector(job_spec.get("selector"))]


_JOB_WIDE: list[Column] = [
    _col("Containers", 1, desc="Names of each container in the template."),
    _col("Images", 1, desc="Images referenced by each container in the template."),
    _col("Selector", 1, desc="A label query over pods that should match the pod count."),
]
_JOB_COLS: list[Column] = [
    _name_col(), _col("Status", desc="Status of the job."),
    _col("Completions", desc="The desired number of successfully finished pods the job should be run with."),
    _col("Duration", desc="Time required to complete the job."), _age_col(), *_JOB_WIDE,
]
_CRONJOB_COLS: list[Column] = [
    _name_col(), _col("Schedule", desc="The schedule in Cron format."),
    _col("Timezone", desc="The time zone name for the given schedule."),
    _col("Suspend", typ="boolean", desc="This flag tells the controller to suspend subsequent executions."),
    _col("Active", typ="integer", desc="A list of pointers to currently running jobs."),
    _col("Last Schedule", desc="Information when was the last time the job was successfully scheduled."),
    _age_col(), *_JOB_WIDE,
]


def _revision_row(obj: Obj, now: dt.datetime) -> list[Any]:
    owner = next((r for r in (obj.get("metadata") or {}).get("ownerReferences") or []
                  if isinstance(r, dict) and r.get("controller")), None)
    controller = f"{str(owner.get('kind', '')).lower()}.{str(owner.get('apiVersion', '')).split('/')[0]}/{owner.get('name')}" \
        if owner else "<none>"
    return [_name(obj), controller, int(obj.get("revision") or 0), age(obj, now)]


PRINTERS: dict[str, Printer] = {
    "controllerrevisions": ([_name_col(), _col("Controller"), _col("Revision", typ="integer"), _age_col()], _revision_row),
    "deployments": (_DEPLOY_COLS, _deploy_row),
    "replicasets": (_RS_COLS, _rs_row),
    "daemonsets": (_DS_COLS, _ds_row),
    "jobs": (_JOB_COLS, _job_row),
    "cronjobs": (_CRONJOB_COLS, _cronjob_row),
    "pods": (_POD_COLS, _pod_row),
    "nodes": (_NODE_COLS, _node_row),
    "namespaces": ([_name_col(), _col("Status", desc="The status of the namespace"), _age_col()], _ns_row),
    "networkpolicies": ([_name_col(), _col("Pod-Selector", desc="Selects the pods to which this NetworkPolicy object applies."), _age_col()], _netpol_row),
    "services": (_SVC_COLS, _svc_row),
    "endpoints": ([_name_col(), _col("Endpoints", desc="Endpoints of the service"), _age_col()], _ep_row),
    "events": (_EVENT_COLS, _event_row),
    "leases": ([_name_col(), _col("Holder", desc="The holder of the lease."), _age_col()], _lease_row),
    "configmaps": ([_name_col(), _col("Data", typ="integer"), _age_col()], _cm_row),
    "secrets": ([_name_col(), _col("Type"), _col("Data", typ="integer"), _age_col()], _secret_row),
    "serviceaccounts": ([_name_col(), _col("Secrets", typ="integer"), _age_col()], _sa_row),
}
_DEFAULT: Printer = ([_name_col(), _age_col()], lambda obj, now: [_name(obj), age(obj, now)])


def column_definitions(plural: str) -> list[Obj]:
    cols, _ = PRINTERS.get(plural, _DEFAULT)
    return [{"name": n, "type": t, "format": f, "description": d, "priority": p} for n, t, f, p, d in cols]


def partial_metadata(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata") or {}}


def rows(plural: str, objs: Sequence[Obj], *, include: str = "Metadata", now: dt.datetime | None = None) -> list[Obj]:
    cols, row_fn = PRINTERS.get(plural, _DEFAULT)
    now = now or dt.datetime.now(dt.timezone.utc)
    out = []
    for obj in objs:
        try:
            cells = row_fn(obj, now)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            # One malformed stored object (older data, a field the type checks miss)
            # must not turn the whole listing into a 500: its row degrades instead.
            log.warning("cannot print object", extra=fields(resource=plural, name=_name(obj), error=repr(exc)))
            cells = [_name(obj) if c[0] == "Name" else "<invalid>" for c in cols]
        row: Obj = {"cells": cells}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = partial_metadata(obj)
        out.append(row)
    return out


def table(plural: str, objs: Sequence[Obj], *, resource_version: str = "", continue_token: str = "",
          include: str = "Metadata", api_version: str = "meta.k8s.io/v1", with_columns: bool = True) -> Obj:
    meta: Obj = {}
    if resource_version:
        meta["resourceVersion"] = resource_version
    if continue_token:
        meta["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": meta,
        "columnDefinitions": column_definitions(plural) if with_columns else [],
        "rows": rows(plural, objs, include=include),
    }
