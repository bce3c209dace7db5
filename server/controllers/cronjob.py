"""CronJob controller (batch/v1): create a Job at each scheduled time.

``plan_cronjob`` is the pure decision for one CronJob given the Jobs it owns
and the time; ``CronJobController`` lists, plans and acts, and takes a clock
so tests can move time instead of waiting for a minute to pass.

Semantics (upstream's cronjob controller v2):
- the most recent scheduled time after ``status.lastScheduleTime`` (else the
  creation time; never earlier than now - ``startingDeadlineSeconds``) that
  is not in the future is due; older missed times are skipped, not replayed;
- a due time creates Job ``<cronjob>-<scheduled time in minutes since the
  epoch>`` from ``jobTemplate`` (its labels and annotations, plus
  ``batch.kubernetes.io/cronjob-scheduled-timestamp``) with a controller
  ownerReference, and records ``lastScheduleTime`` and ``status.active``;
- concurrencyPolicy Forbid skips a due time while a Job runs (it stays due
  until the deadline passes); Replace deletes running Jobs first;
- ``suspend`` creates nothing; history beyond successful/failedJobsHistoryLimit
  is deleted oldest first; ``lastSuccessfulTime`` is the newest completion;
- schedules are read in ``spec.timeZone`` (zoneinfo), UTC without one.
"""
from __future__ import annotations

import copy
import datetime as dt
import logging
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgectl.log import fields

from ..registry import Registry
from ..resources import Resource
from ..status import ApiError
from . import cron
from .job import finished
from .loop import run_loop
from .rfc3339 import format_time, parse_time
from .workloads import by_namespace, controller_ref, meta, owner_ref, record_event, sync_each

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "cronjob-controller"
SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MAX_MISSED = 10_000  # schedule steps walked per pass before jumping ahead


@dataclass(frozen=True)
class CronPlan:
    status: Obj
    create: dt.datetime | None = None  # the scheduled time to create a Job for
    delete: tuple[str, ...] = ()  # Jobs to delete (history limits, Replace)
    recheck: float | None = None  # seconds until the next scheduled time
    skipped: str | None = None  # why a due time created nothing (for logs)


def job_name(cronjob_name: str, scheduled: dt.datetime) -> str:
    return f"{cronjob_name}-{cron.unix_minutes(scheduled)}"


def time_zone(spec: Obj) -> dt.tzinfo:
    name = spec.get("timeZone")
    if not name:
        return dt.timezone.utc
    try:
        return zoneinfo.ZoneInfo(str(name))
    except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):
        return dt.timezone.utc  # validation refuses unknown zones; an old stored one must not stall the loop


def most_recent(schedule: cron.Schedule, tz: dt.tzinfo, earliest: dt.datetime,
                now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(the latest fire time in (earliest, now], the first one after now)."""
    last: dt.datetime | None = None
    t = schedule.next_after(earliest, tz)
    steps = 0
    while t is not None and t <= now:
        last = t
        steps += 1
        if steps >= MAX_MISSED:  # years of a minutely schedule: look at the last day only
            return most_recent(schedule, tz, max(t, now - dt.timedelta(days=1)), now)[0] or last, \
                schedule.next_after(now, tz)
        t = schedule.next_after(t, tz)
    return last, t


def _job_ref(job: Obj) -> Obj:
    m = meta(job)
    return {"apiVersion": "batch/v1", "kind": "Job", "name": m["name"], "namespace": m.get("namespace"),
            "resourceVersion": m.get("resourceVersion"), "uid": m.get("uid")}


def _history(jobs: list[Obj], outcome: str, limit: Any) -> list[str]:
    if limit is None:
        return []
    done = [j for j in jobs if finished(j) == outcome]
    done.sort(key=lambda j: (parse_time((j.get("status") or {}).get("completionTime"))
                             or parse_time(meta(j).get("creationTimestamp")) or 0.0, meta(j)["name"]))
    extra = len(done) - max(0, int(limit))
    return [meta(j)["name"] for j in done[:extra]] if extra > 0 else []


def plan_cronjob(cj: Obj, jobs: list[Obj], now: float) -> CronPlan:
    """``jobs``: the Jobs this CronJob controls (not being deleted)."""
    spec, old = cj.get("spec") or {}, cj.get("status") or {}
    running = sorted((j for j in jobs if finished(j) is None), key=lambda j: meta(j)["name"])
    status: Obj = {k: v for k, v in old.items() if k in ("lastScheduleTime", "lastSuccessfulTime")}
    completed = [parse_time((j.get("status") or {}).get("completionTime")) for j in jobs if finished(j) == "Complete"]
    newest = max([t for t in completed if t is not None], default=None)
    if newest is not None and newest > (parse_time(status.get("lastSuccessfulTime")) or 0.0):
        status["lastSuccessfulTime"] = format_time(newest)
    delete = _history(jobs, "Complete", spec.get("successfulJobsHistoryLimit")) + \
        _history(jobs, "Failed", spec.get("failedJobsHistoryLimit"))

    known = {r.get("uid"): r for r in old.get("active") or [] if isinstance(r, dict)}

    def build(active: list[Obj]) -> Obj:
        # A ref already listed is kept as it was (its resourceVersion is the Job's at creation, as upstream).
        out = {**status, "active": [known.get(meta(j).get("uid")) or _job_ref(j) for j in active]}
        return {k: v for k, v in out.items() if v}

    try:
        schedule = cron.parse(str(spec.get("schedule", "")))
    except cron.CronError:
        return CronPlan(status=build(running), delete=tuple(delete))
    if meta(cj).get("deletionTimestamp") or spec.get("suspend"):
        return CronPlan(status=build(running), delete=tuple(delete))
    tz = time_zone(spec)
    now_dt = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    earliest = parse_time(status.get("lastScheduleTime")) or parse_time(meta(cj).get("creationTimestamp")) or now
    deadline = spec.get("startingDeadlineSeconds")
    if deadline is not None:
        earliest = max(earliest, now - int(deadline))
    due, upcoming = most_recent(schedule, tz, dt.datetime.fromtimestamp(earliest, dt.timezone.utc), now_dt)
    recheck = None if upcoming is None else max(0.0, (upcoming - now_dt).total_seconds())
    if due is None:
        return CronPlan(status=build(running), delete=tuple(delete), recheck=recheck)
    name = job_name(meta(cj)["name"], due)
    if any(meta(j)["name"] == name for j in jobs):  # created already (our status write was lost)
        status["lastScheduleTime"] = format_time(due.timestamp())
        return CronPlan(status=build(running), delete=tuple(delete), recheck=recheck)
    policy = spec.get("concurrencyPolicy", "Allow")
    if policy == "Forbid" and running:
        return CronPlan(status=build(running), delete=tuple(delete), recheck=recheck,
                        skipped="concurrencyPolicy Forbid and a Job is still running")
    if policy == "Replace":
        delete += [meta(j)["name"] for j in running]
        running = []
    status["lastScheduleTime"] = format_time(due.timestamp())
    return CronPlan(status=build(running), create=due, delete=tuple(delete), recheck=recheck)


def job_from_template(cj: Obj, res: Resource, scheduled: dt.datetime, tz: dt.tzinfo) -> Obj:
    """The Job for ``scheduled``; ``res`` is the CronJob resource (for the ownerReference)."""
    template = (cj.get("spec") or {}).get("jobTemplate") or {}
    tmeta = template.get("metadata") or {}
    annotations = {**(tmeta.get("annotations") or {}),
                   SCHEDULED_ANNOTATION: scheduled.astimezone(tz).isoformat().replace("+00:00", "Z")}
    job_meta: Obj = {"name": job_name(meta(cj)["name"], scheduled), "namespace": meta(cj).get("namespace"),
                     "annotations": annotations, "ownerReferences": [owner_ref(cj, res)]}
    if tmeta.get("labels"):
        job_meta["labels"] = dict(tmeta["labels"])
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_meta,
            "spec": copy.deepcopy(template.get("spec") or {})}


class CronJobController:
    def __init__(self, registry: Registry, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.clock = clock
        self.cronjobs = registry.resource("cronjobs", "batch")
        self.jobs = registry.resource("jobs", "batch")

    async def reconcile(self) -> float | None:
        cjs = (await self.registry.list(self.cronjobs)).items
        if not cjs:
            return None
        jobs = by_namespace((await self.registry.list(self.jobs)).items)
        return await sync_each("cronjob", cjs, lambda cj: self.sync(cj, jobs.get(meta(cj).get("namespace") or "", [])))

    async def sync(self, cj: Obj, ns_jobs: list[Obj]) -> float | None:
        ns, name, uid = meta(cj)["namespace"], meta(cj)["name"], meta(cj)["uid"]
        owned = [j for j in ns_jobs if (controller_ref(j) or {}).get("uid") == uid and not meta(j).get("deletionTimestamp")]
        plan = plan_cronjob(cj, owned, self.clock())
        for job in plan.delete:
            try:
                await self.registry.delete(self.jobs, ns, job, propagation="Background")
            except ApiError as exc:
                if exc.code != 404:
                    raise
                continue
            await record_event(self.registry, cj, self.cronjobs, component=COMPONENT, reason="SuccessfulDelete",
                               message=f"Deleted job {job}")
        status = plan.status
        if plan.create is not None:
            body = job_from_template(cj, self.cronjobs, plan.create, time_zone(cj.get("spec") or {}))
            try:
                job = await self.registry.create(self.jobs, body, namespace=ns)
            except ApiError as exc:
                if exc.code != 409:
                    raise
                job = await self.registry.get(self.jobs, ns, body["metadata"]["name"])
                if (controller_ref(job) or {}).get("uid") != uid:
                    raise
            else:
                log.info("cronjob created job", extra=fields(cronjob=f"{ns}/{name}", job=meta(job)["name"]))
                await record_event(self.registry, cj, self.cronjobs, component=COMPONENT, reason="SuccessfulCreate",
                                   message=f"Created job {meta(job)['name']}")
            if finished(job) is None and all(r["uid"] != meta(job)["uid"] for r in status.get("active") or []):
                status = {**status, "active": [*(status.get("active") or []), _job_ref(job)]}
        elif plan.skipped:
            log.debug("cronjob skipped a scheduled time", extra=fields(cronjob=f"{ns}/{name}", reason=plan.skipped))
        if status != (cj.get("status") or {}):
            await self._write_status(ns, name, uid, status)
        return plan.recheck

    async def _write_status(self, ns: str, name: str, uid: str, status: Obj) -> None:
        def mutate(cur: Obj) -> Obj | None:
            if meta(cur).get("uid") != uid or cur.get("status") == status:
                return None
            cur["status"] = status
            return cur

        await self.registry.guaranteed_update(self.cronjobs, ns, name, mutate, subresource="status")

    async def run(self, *, resync: float = 30.0) -> None:
        await run_loop("cronjob", self.registry, [(self.cronjobs, None), (self.jobs, None)], self.reconcile,
                       resync=resync)
