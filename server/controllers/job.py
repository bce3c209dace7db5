"""Job controller (batch/v1): run pods from the template until enough succeed.

``plan_job`` is the pure decision for one Job given the pods it owns and the
time: how many pods to create, which to delete, the new status, when to look
again, and whether ``ttlSecondsAfterFinished`` has run out. ``JobController``
lists Jobs and pods, claims each Job's pods by selector (as ReplicaSets do),
and carries the plan out.

Semantics (upstream's; Indexed completion mode as in jobindex.py):
- up to ``parallelism`` active pods while ``completions - succeeded`` remain;
  without ``completions`` (a work queue) no new pod starts once one succeeded,
  and the Job completes when one succeeded and none is active;
- succeeded/failed count the owned pods' phases; counts never go down, so a
  finished pod deleted by hand keeps its count (we have no job-tracking
  finalizer, so a pod deleted before this controller saw it finish is missed);
- failures past ``backoffLimit`` (failed pods, plus container restarts of
  active pods with restartPolicy OnFailure) -> FailureTarget and Failed,
  reason BackoffLimitExceeded; a pod is recreated after a failure only after
  upstream's back-off (10 s doubling per failure, at most 6 min);
- ``activeDeadlineSeconds`` past ``startTime`` -> Failed, DeadlineExceeded;
- completions reached -> SuccessCriteriaMet and Complete, ``completionTime``;
  active pods of a finished Job are deleted; finished pods stay for ``logs``;
- Indexed: each index in [0, completions) succeeds once; missing indexes get
  a pod, lowest first; ``status.completedIndexes``; a second pod for an index
  (or one for a finished index) is deleted;
- ``suspend`` deletes active pods (condition Suspended); resuming resets
  ``startTime``;
- podReplacementPolicy TerminatingOrFailed replaces a terminating pod at once,
  Failed only once it is gone;
- ``ttlSecondsAfterFinished`` deletes the finished Job (background cascade).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgectl.log import fields

from ..registry import Registry
from ..status import ApiError
from . import jobindex
from .loop import run_loop
from .replicaset import deletion_order
from .rfc3339 import format_time, parse_time
from .workloads import (
    by_namespace, claim, is_active, is_ready, meta, pod_from_template, record_event, selector_of, set_condition, sync_each,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "job-controller"
BURST = 100  # pods created per Job per pass
BACKOFF_BASE = 10.0  # upstream DefaultJobPodFailureBackOff
BACKOFF_MAX = 360.0


@dataclass(frozen=True)
class JobPlan:
    status: Obj
    create: int = 0
    indexes: tuple[int, ...] = ()  # Indexed mode: the index of each pod to create
    delete: tuple[str, ...] = ()
    recheck: float | None = None  # seconds until a deadline, back-off or TTL needs another look
    expired: bool = False  # ttlSecondsAfterFinished ran out: delete the Job
    event: tuple[str, str] | None = None  # (reason, message) of a Normal event: the Job just completed


def _condition(obj: Obj, kind: str) -> Obj | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def finished(job: Obj) -> str | None:
    """``Complete`` or ``Failed`` once the Job has finished, else None."""
    for kind in ("Complete", "Failed"):
        if _condition(job, kind) is not None:
            return kind
    return None


def finish_time(job: Obj) -> float | None:
    """When the Job finished (what ttlSecondsAfterFinished counts from)."""
    kind = finished(job)
    if kind is None:
        return None
    cond = _condition(job, kind) or {}
    return parse_time(cond.get("lastTransitionTime")) or parse_time((job.get("status") or {}).get("completionTime"))


def _restarts(pod: Obj) -> int:
    st = pod.get("status") or {}
    return sum(int(c.get("restartCount") or 0) for key in ("initContainerStatuses", "containerStatuses")
               for c in st.get(key) or [] if isinstance(c, dict))


def _finished_at(pod: Obj) -> float:
    """When a failed pod stopped: its containers' latest finishedAt, else its creation."""
    times = [parse_time(((c.get("state") or {}).get("terminated") or {}).get("finishedAt"))
             for c in (pod.get("status") or {}).get("containerStatuses") or [] if isinstance(c, dict)]
    known = [t for t in times if t is not None]
    return max(known) if known else (parse_time(meta(pod).get("creationTimestamp")) or 0.0)


def want_active(spec: Obj, succeeded: int, active: int) -> int:
    """How many pods should be running (NonIndexed)."""
    parallelism = int(spec.get("parallelism", 1) or 0)
    completions = spec.get("completions")
    if completions is None:
        return active if succeeded > 0 else parallelism  # a work queue: once one succeeded, start no more
    return max(0, min(parallelism, int(completions) - succeeded))


def backoff_left(failed_pods: list[Obj], failed: int, now: float, *, base: float = BACKOFF_BASE,
                 cap: float = BACKOFF_MAX) -> float:
    """Seconds until a replacement pod may start after ``failed`` failures."""
    if failed <= 0 or not failed_pods:
        return 0.0
    delay = min(cap, base * 2 ** (failed - 1))
    return max(0.0, max(_finished_at(p) for p in failed_pods) + delay - now)


def _finish(conditions: list[Obj], stamp: str, *, kind: str, reason: str, message: str) -> list[Obj]:
    lead = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
    for t in (lead, kind):
        conditions = set_condition(conditions, {"type": t, "status": "True", "reason": reason, "message": message,
                                                "lastProbeTime": stamp, "lastTransitionTime": stamp})
    return conditions


def plan_job(job: Obj, pods: list[Obj], now: float, *, backoff_base: float = BACKOFF_BASE) -> JobPlan:
    spec, old = job.get("spec") or {}, job.get("status") or {}
    stamp = format_time(now)
    active = [p for p in pods if is_active(p)]
    failed_pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    succeeded = max(int(old.get("succeeded") or 0),
                    sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"))
    failed = max(int(old.get("failed") or 0), len(failed_pods))
    terminating = sum(1 for p in pods if meta(p).get("deletionTimestamp") and
                      (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
    conditions = [c for c in old.get("conditions") or [] if isinstance(c, dict)]
    status: Obj = {k: v for k, v in old.items() if k in ("startTime", "completionTime")}
    indexed = spec.get("completionMode") == "Indexed"
    done_indexes: set[int] = set()
    extra: list[str] = []  # Indexed: second pods for one index, pods of finished or unknown indexes
    if indexed:
        total = int(spec.get("completions") or 0)
        done_indexes = jobindex.completed(old.get("completedIndexes"), pods, total)
        succeeded = len(done_indexes)
        active, extra = jobindex.split_active(active, done_indexes, total)
        if done_indexes:
            status["completedIndexes"] = jobindex.format_intervals(done_indexes)

    def build(active_count: int, ready: int) -> Obj:
        out = {**status, "active": active_count, "succeeded": succeeded, "failed": failed, "ready": ready,
               "terminating": terminating, "uncountedTerminatedPods": {}, "conditions": conditions}
        # Upstream omits zero counters (omitempty) but always shows ready/terminating (pointers).
        return {k: v for k, v in out.items() if v or k in ("ready", "terminating", "uncountedTerminatedPods")}

    done = finished(job)
    if done is not None:
        ttl = spec.get("ttlSecondsAfterFinished")
        recheck, expired = None, False
        if ttl is not None:
            at = finish_time(job)
            left = (at or now) + int(ttl) - now
            expired, recheck = left <= 0, (None if left <= 0 else left)
        # A finished Job's status is final; pods still running are stopped.
        return JobPlan(status=old, delete=tuple(extra + [meta(p)["name"] for p in active]), recheck=recheck,
                       expired=expired)

    suspended = bool(spec.get("suspend"))
    was_suspended = any(c.get("type") == "Suspended" and c.get("status") == "True" for c in conditions)
    if suspended:
        if not was_suspended:
            conditions = set_condition(conditions, {"type": "Suspended", "status": "True", "reason": "JobSuspended",
                                                    "message": "Job suspended", "lastProbeTime": stamp,
                                                    "lastTransitionTime": stamp})
        return JobPlan(status=build(0, 0), delete=tuple(extra + [meta(p)["name"] for p in active]))
    if was_suspended:
        conditions = set_condition(conditions, {"type": "Suspended", "status": "False", "reason": "JobResumed",
                                                "message": "Job resumed", "lastProbeTime": stamp,
                                                "lastTransitionTime": stamp})
        status["startTime"] = stamp  # the activeDeadlineSeconds clock restarts on resume
    status.setdefault("startTime", stamp)

    limit = int(spec.get("backoffLimit", 6))
    restarts = sum(_restarts(p) for p in active) if ((spec.get("template") or {}).get("spec") or {}).get(
        "restartPolicy") == "OnFailure" else 0
    over_restarts = restarts > 0 if limit == 0 else (restarts > 0 and restarts >= limit)
    failure: tuple[str, str] | None = None
    if failed > limit or over_restarts:
        failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    deadline = spec.get("activeDeadlineSeconds")
    deadline_left: float | None = None
    if failure is None and deadline is not None:
        deadline_left = (parse_time(status["startTime"]) or now) + int(deadline) - now
        if deadline_left <= 0:
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
    if failure is not None:
        conditions = _finish(conditions, stamp, kind="Failed", reason=failure[0], message=failure[1])
        # Upstream records a Warning here; record_event writes Normal ones only, so none.
        return JobPlan(status=build(0, 0), delete=tuple(extra + [meta(p)["name"] for p in active]),
                       recheck=_ttl_recheck(spec))

    completions = spec.get("completions")
    if (completions is not None and succeeded >= int(completions)) or (completions is None and succeeded > 0 and not active):
        conditions = _finish(conditions, stamp, kind="Complete", reason="CompletionsReached",
                             message="Reached expected number of succeeded pods")
        status["completionTime"] = stamp
        return JobPlan(status=build(0, 0), delete=tuple(extra + [meta(p)["name"] for p in active]),
                       event=("Completed", "Job completed"), recheck=_ttl_recheck(spec))

    # podReplacementPolicy Failed: a terminating pod keeps its slot until it is gone.
    occupied = len(active) + (terminating if spec.get("podReplacementPolicy") == "Failed" else 0)
    diff = want_active(spec, succeeded, occupied) - occupied
    create, delete, recheck = 0, tuple(extra), deadline_left
    indexes: tuple[int, ...] = ()
    if diff > 0:
        wait = backoff_left(failed_pods, failed, now, base=backoff_base)
        if wait > 0:
            recheck = wait if recheck is None else min(recheck, wait)
        else:
            create = min(diff, BURST)
            if indexed:
                indexes = tuple(jobindex.pending(int(spec["completions"]), done_indexes, active)[:create])
                create = len(indexes)
    elif diff < 0 and active:
        delete += tuple(meta(p)["name"] for p in sorted(active, key=deletion_order)[:min(-diff, len(active))])
    kept = [p for p in active if meta(p)["name"] not in delete]
    return JobPlan(status=build(len(kept) + create, sum(1 for p in kept if is_ready(p))), create=create,
                   indexes=indexes, delete=delete, recheck=recheck)


def _ttl_recheck(spec: Obj) -> float | None:
    ttl = spec.get("ttlSecondsAfterFinished")
    return None if ttl is None else max(0.0, float(ttl))


class JobController:
    def __init__(self, registry: Registry, *, clock: Callable[[], float] = time.time,
                 backoff_base: float = BACKOFF_BASE) -> None:
        self.registry = registry
        self.clock = clock
        self.backoff_base = backoff_base
        self.jobs = registry.resource("jobs", "batch")
        self.pods = registry.resource("pods")

    async def reconcile(self) -> float | None:
        jobs = [j for j in (await self.registry.list(self.jobs)).items if not meta(j).get("deletionTimestamp")]
        if not jobs:
            return None
        pods = by_namespace((await self.registry.list(self.pods)).items)
        return await sync_each("job", jobs, lambda job: self.sync(job, pods.get(meta(job).get("namespace") or "", [])))

    async def sync(self, job: Obj, ns_pods: list[Obj]) -> float | None:
        ns, name = meta(job)["namespace"], meta(job)["name"]
        owned = await claim(self.registry, self.pods, job, self.jobs, ns_pods, selector_of(job))
        plan = plan_job(job, owned, self.clock(), backoff_base=self.backoff_base)
        if plan.expired:
            try:
                await self.registry.delete(self.jobs, ns, name, propagation="Background",
                                           preconditions={"uid": meta(job)["uid"]})
            except ApiError as exc:
                if exc.code not in (404, 409):
                    raise
            log.info("job expired (ttlSecondsAfterFinished)", extra=fields(job=f"{ns}/{name}"))
            return None
        for pod_name in plan.delete:
            try:
                await self.registry.delete(self.pods, ns, pod_name)
            except ApiError as exc:
                if exc.code != 404:
                    raise
                continue
            await record_event(self.registry, job, self.jobs, component=COMPONENT, reason="SuccessfulDelete",
                               message=f"Deleted pod: {pod_name}")
        template = (job.get("spec") or {}).get("template") or {}
        for i in range(plan.create):
            body = pod_from_template(job, self.jobs, template)
            if plan.indexes:
                body = jobindex.indexed_pod(body, name, plan.indexes[i])
            pod = await self.registry.create(self.pods, body, namespace=ns)
            await record_event(self.registry, job, self.jobs, component=COMPONENT, reason="SuccessfulCreate",
                               message=f"Created pod: {meta(pod)['name']}")
        if plan.create:
            log.info("job created pods", extra=fields(job=f"{ns}/{name}", count=plan.create))
        if plan.status != (job.get("status") or {}):
            await self._write_status(ns, name, meta(job)["uid"], plan.status)
            if plan.event is not None:
                await record_event(self.registry, job, self.jobs, component=COMPONENT, reason=plan.event[0],
                                   message=plan.event[1])
        return plan.recheck

    async def _write_status(self, ns: str, name: str, uid: str, status: Obj) -> None:
        def mutate(cur: Obj) -> Obj | None:
            if meta(cur).get("uid") != uid or cur.get("status") == status:
                return None
            if finished(cur) is not None and not finished({"status": status}):
                return None  # finished elsewhere meanwhile: a finished Job never runs again
            cur["status"] = status
            return cur

        await self.registry.guaranteed_update(self.jobs, ns, name, mutate, subresource="status")

    async def run(self, *, resync: float = 30.0) -> None:
        await run_loop("job", self.registry, [(self.jobs, None), (self.pods, None)], self.reconcile, resync=resync)
