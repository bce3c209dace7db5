"""Pod lifecycle rules, without I/O: what to start next, back-off, status.

Everything that decides *what should happen* to a pod lives here, as kubelet's
pod worker rules restated for our records:

* init containers run one at a time, in order; each must exit 0 before the
  next starts, and app containers start only after the last one;
* an exited container restarts if the policy says so (``Always``; ``OnFailure``
  when the exit code is not 0; init containers restart on failure unless the
  policy is ``Never``), after a crash back-off of ``base`` seconds doubling up
  to ``cap`` (the first restart is immediate, as in kubelet);
* phase, conditions and container statuses follow kubelet's ``getPhase`` and
  API shapes.

The manager feeds observations in (:func:`record_start`, :func:`record_exit`)
and applies :func:`plan`'s answer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .interface import ContainerExit, ContainerHandle
from .probes import Readiness
from .spec import ContainerSpec, PodSpec


@dataclass(frozen=True, kw_only=True)
class Backoff:
    base: float = 10.0
    cap: float = 300.0
    # A container that ran this long before exiting starts over at no delay.
    reset_after: float = 600.0

    def delay(self, level: int) -> float:
        return 0.0 if level <= 0 else min(self.base * 2 ** (level - 1), self.cap)


@dataclass(kw_only=True)
class ContainerRecord:
    """What the manager knows about one container of a pod (persisted)."""

    name: str
    restart_count: int = 0
    handle: ContainerHandle | None = None  # the latest instance
    exit: ContainerExit | None = None  # how the latest instance ended
    last_handle: ContainerHandle | None = None  # the instance before it
    last_exit: ContainerExit | None = None
    waiting_reason: str = ""  # e.g. CommandRequired, set when a start was refused
    waiting_message: str = ""
    backoff_level: int = 0
    not_before: float = 0.0  # no restart before this time (crash back-off)

    @property
    def running(self) -> bool:
        return self.handle is not None and self.exit is None

    @property
    def succeeded(self) -> bool:
        return self.exit is not None and self.exit.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "restart_count": self.restart_count,
            "handle": self.handle.to_dict() if self.handle else None,
            "exit": self.exit.to_dict() if self.exit else None,
            "last_handle": self.last_handle.to_dict() if self.last_handle else None,
            "last_exit": self.last_exit.to_dict() if self.last_exit else None,
            "waiting_reason": self.waiting_reason, "waiting_message": self.waiting_message,
            "backoff_level": self.backoff_level, "not_before": self.not_before,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "ContainerRecord":
        def opt(kind: Any, key: str) -> Any:
            return kind.from_dict(doc[key]) if doc.get(key) else None
        return cls(
            name=doc["name"], restart_count=int(doc.get("restart_count", 0)),
            handle=opt(ContainerHandle, "handle"), exit=opt(ContainerExit, "exit"),
            last_handle=opt(ContainerHandle, "last_handle"), last_exit=opt(ContainerExit, "last_exit"),
            waiting_reason=doc.get("waiting_reason", ""), waiting_message=doc.get("waiting_message", ""),
            backoff_level=int(doc.get("backoff_level", 0)), not_before=float(doc.get("not_before", 0.0)),
        )


def should_restart(policy: str, exit_code: int, *, init: bool) -> bool:
    if init:
        return exit_code != 0 and policy != "Never"
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def next_restart_count(rec: ContainerRecord) -> int:
    """The restartCount the next instance will have (it names its log file)."""
    return rec.restart_count + 1 if rec.handle is not None else 0


def record_start(rec: ContainerRecord, handle: ContainerHandle) -> None:
    """A new instance started; the previous one becomes ``lastState``."""
    if rec.handle is not None:
        rec.last_handle, rec.last_exit = rec.handle, rec.exit
    rec.handle, rec.exit = handle, None
    rec.restart_count = handle.restart_count
    rec.waiting_reason = rec.waiting_message = ""


def record_exit(rec: ContainerRecord, exit: ContainerExit, *, backoff: Backoff) -> None:
    """The current instance ended; arm the back-off for a possible restart."""
    rec.exit = exit
    ran = exit.finished_at - (rec.handle.started_at if rec.handle else exit.finished_at)
    if ran >= backoff.reset_after:
        rec.backoff_level = 0
    rec.not_before = exit.finished_at + backoff.delay(rec.backoff_level)
    rec.backoff_level += 1


def record_refused(rec: ContainerRecord, *, reason: str, message: str, now: float, backoff: Backoff,
                   retry_after: float | None = None) -> None:
    """The runtime refused to start it: wait, then retry with back-off, or
    after a fixed ``retry_after`` that leaves the back-off level alone."""
    rec.waiting_reason, rec.waiting_message = reason, message
    if retry_after is not None:
        rec.not_before = now + retry_after
        return
    rec.not_before = now + backoff.delay(max(rec.backoff_level, 1))
    rec.backoff_level += 1


@dataclass(frozen=True, kw_only=True)
class Plan:
    start: tuple[str, ...] = ()  # container names to start now, in this order
    wake_at: float | None = None  # earliest time a back-off ends
    init_failed: bool = False  # an init container failed for good (policy Never)


def _next_start(rec: ContainerRecord, spec: ContainerSpec, policy: str, now: float) -> tuple[bool, float | None]:
    """(start now?, back-off end if waiting for one)."""
    if rec.handle is None and not rec.waiting_reason:
        return True, None
    if rec.running:
        return False, None
    if rec.exit is not None and not should_restart(policy, rec.exit.exit_code, init=spec.init):
        return False, None
    if now >= rec.not_before:
        return True, None
    return False, rec.not_before


def plan(pod: PodSpec, records: Mapping[str, ContainerRecord], *, now: float) -> Plan:
    wake: list[float] = []
    for spec in pod.init_containers:
        rec = records[spec.name]
        if rec.succeeded:
            continue
        if rec.exit is not None and pod.restart_policy == "Never":
            return Plan(init_failed=True)
        go, until = _next_start(rec, spec, pod.restart_policy, now)
        return Plan(start=(spec.name,) if go else (), wake_at=until)
    start = []
    for spec in pod.containers:
        go, until = _next_start(records[spec.name], spec, pod.restart_policy, now)
        if go:
            start.append(spec.name)
        elif until is not None:
            wake.append(until)
    return Plan(start=tuple(start), wake_at=min(wake) if wake else None)


# ---- status -------------------------------------------------------------------


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _terminated(handle: ContainerHandle, exit: ContainerExit, runtime: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "exitCode": exit.exit_code,
        "reason": exit.reason,
        "startedAt": rfc3339(handle.started_at),
        "finishedAt": rfc3339(exit.finished_at),
        "containerID": f"{runtime}://{handle.id}",
    }
    if exit.signal:
        doc["signal"] = exit.signal
    if exit.message:
        doc["message"] = exit.message
    return doc


def container_status(pod: PodSpec, spec: ContainerSpec, rec: ContainerRecord, *, runtime: str,
                     default_waiting: str, readiness: Readiness | None = None) -> dict[str, Any]:
    """``readiness`` comes from the container's probes; without it a running
    container is started and (unless it is an init container) ready."""
    state: dict[str, Any]
    last: dict[str, Any] = {}
    if rec.waiting_reason:
        state = {"waiting": {"reason": rec.waiting_reason, "message": rec.waiting_message}}
        if rec.handle and rec.exit:
            last = {"terminated": _terminated(rec.handle, rec.exit, runtime)}
    elif rec.handle is None:
        state = {"waiting": {"reason": default_waiting}}
    elif rec.exit is None:
        state = {"running": {"startedAt": rfc3339(rec.handle.started_at)}}
    elif should_restart(pod.restart_policy, rec.exit.exit_code, init=spec.init) and not pod.deleting:
        # The whole delay, not what is left of it, so the status stays stable.
        delay = max(0.0, rec.not_before - rec.exit.finished_at)
        state = {"waiting": {
            "reason": "CrashLoopBackOff",
            "message": f"back-off {delay:g}s restarting failed container={spec.name} "
                       f"pod={pod.name}_{pod.namespace}({pod.uid})",
        }}
        last = {"terminated": _terminated(rec.handle, rec.exit, runtime)}
    else:
        state = {"terminated": _terminated(rec.handle, rec.exit, runtime)}
    if not last and rec.last_handle and rec.last_exit:
        last = {"terminated": _terminated(rec.last_handle, rec.last_exit, runtime)}
    doc: dict[str, Any] = {
        "name": spec.name,
        "image": spec.image,
        "imageID": "",
        "ready": (readiness.ready if readiness else rec.running) and not spec.init,
        "started": readiness.started if readiness else rec.running,
        "restartCount": rec.restart_count,
        "state": state,
        "lastState": last,
    }
    if rec.handle is not None:
        doc["containerID"] = f"{runtime}://{rec.handle.id}"
    return doc


def pod_phase(pod: PodSpec, records: Mapping[str, ContainerRecord], *, sandbox_ready: bool) -> str:
    """kubelet's getPhase, for our records."""
    for spec in pod.init_containers:
        rec = records[spec.name]
        if rec.succeeded:
            continue
        if rec.exit is not None and pod.restart_policy == "Never":
            return "Failed"
        return "Pending"
    running = waiting = succeeded = failed = 0
    for spec in pod.containers:
        rec = records[spec.name]
        if rec.running:
            running += 1
        elif rec.exit is not None:
            succeeded += rec.exit.exit_code == 0
            failed += rec.exit.exit_code != 0
        else:
            waiting += 1
    if not sandbox_ready and running == 0 and (succeeded + failed) == 0:
        return "Pending"
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if pod.deleting or pod.restart_policy == "Never":
        return "Succeeded" if failed == 0 else "Failed"
    if pod.restart_policy == "Always":
        return "Running"
    return "Succeeded" if failed == 0 else "Running"  # OnFailure


def _ready(name: str, rec: ContainerRecord, readiness: Mapping[str, Readiness]) -> bool:
    return readiness[name].ready if name in readiness else rec.running


def conditions(pod: PodSpec, records: Mapping[str, ContainerRecord], *, phase: str,
               since: Mapping[str, tuple[str, float]],
               readiness: Mapping[str, Readiness] | None = None) -> list[dict[str, Any]]:
    """The four standard conditions; ``since`` maps type -> (status, time) last set;
    ``readiness`` holds probe verdicts of the containers that have probes."""
    init_done = all(records[c.name].succeeded for c in pod.init_containers)
    ready = phase == "Running" and all(_ready(c.name, records[c.name], readiness or {}) for c in pod.containers)
    values = {
        "Initialized": (init_done, "" if init_done else "ContainersNotInitialized"),
        "Ready": (ready, "" if ready else ("PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady")),
        "ContainersReady": (ready, "" if ready else ("PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady")),
        "PodScheduled": (True, ""),
    }
    out = []
    for kind, (ok, reason) in values.items():
        status = "True" if ok else "False"
        doc: dict[str, Any] = {"type": kind, "status": status,
                               "lastProbeTime": None,
                               "lastTransitionTime": rfc3339(since.get(kind, (status, 0.0))[1] or None)}
        if reason:
            doc["reason"] = reason
        out.append(doc)
    return out


def pod_status(
    pod: PodSpec,
    records: Mapping[str, ContainerRecord],
    *,
    runtime: str,
    ips: Iterable[str],
    sandbox_ready: bool,
    sandbox_error: str = "",
    start_time: float,
    host_ip: str = "",
    since: Mapping[str, tuple[str, float]] | None = None,
    readiness: Mapping[str, Readiness] | None = None,
) -> dict[str, Any]:
    readiness = readiness or {}
    phase = pod_phase(pod, records, sandbox_ready=sandbox_ready)
    init_done = all(records[c.name].succeeded for c in pod.init_containers)
    app_waiting = "ContainerCreating" if init_done else "PodInitializing"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions(pod, records, phase=phase, since=since or {}, readiness=readiness),
        "startTime": rfc3339(start_time),
        "qosClass": "BestEffort",
    }
    ip_list = list(ips)
    if ip_list:
        status["podIP"] = ip_list[0]
        status["podIPs"] = [{"ip": ip} for ip in ip_list]
    if host_ip:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
    if sandbox_error:
        status["message"] = sandbox_error
        status["reason"] = "FailedCreatePodSandBox"
    if pod.init_containers:
        status["initContainerStatuses"] = [
            container_status(pod, c, records[c.name], runtime=runtime, default_waiting="PodInitializing")
            for c in pod.init_containers
        ]
    status["containerStatuses"] = [
        container_status(pod, c, records[c.name], runtime=runtime, default_waiting=app_waiting,
                         readiness=readiness.get(c.name))
        for c in pod.containers
    ]
    return status


def condition_times(old: Mapping[str, tuple[str, float]], current: list[dict[str, Any]],
                    *, now: float) -> dict[str, tuple[str, float]]:
    """Carry lastTransitionTime forward; stamp ``now`` where a status flipped."""
    out = {}
    for cond in current:
        prev = old.get(cond["type"])
        out[cond["type"]] = prev if prev and prev[0] == cond["status"] else (cond["status"], now)
    return out
