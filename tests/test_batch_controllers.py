"""The Job and CronJob controllers' reconcile against a real Registry over the
real SQLite store, with their clocks injected: minutes pass in the test, not
on the wall. Pods are finished by writing their status, as a kubelet would."""
from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from edgectl.server.controllers.cronjob import CronJobController
from edgectl.server.controllers.job import JobController
from edgectl.server.registry import Registry
from edgectl.server.testing import sqlite_registry

Obj = dict[str, Any]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(tmp_path: Path, body: Callable[[Registry], Awaitable[None]]) -> None:
    async def main() -> None:
        async with sqlite_registry(tmp_path / "db" / "state.db") as reg:
            await body(reg)
    asyncio.run(main())


def cronjob(name: str, schedule: str, **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"schedule": schedule, **spec, "jobTemplate": {
                "metadata": {"labels": {"app": name}},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                                               "containers": [{"name": "c", "image": "busybox"}]}}}}}}


async def finish_pods(reg: Registry, phase: str) -> int:
    pods = reg.resource("pods")
    done = 0
    for p in (await reg.list(pods, "default")).items:
        if p["status"].get("phase") == "Pending":
            def mutate(cur: Obj) -> Obj:
                cur["status"]["phase"] = phase
                return cur
            await reg.guaranteed_update(pods, "default", p["metadata"]["name"], mutate, subresource="status")
            done += 1
    return done


async def names(reg: Registry, plural: str, group: str = "") -> list[str]:
    return sorted(o["metadata"]["name"] for o in (await reg.list(reg.resource(plural, group), "default")).items)


def test_cronjob_fires_each_minute_on_an_advanced_clock(tmp_path: Path) -> None:
    async def body(reg: Registry) -> None:
        created = await reg.create(reg.resource("cronjobs", "batch"), cronjob("tick", "* * * * *", concurrencyPolicy="Forbid",
                                                                              successfulJobsHistoryLimit=2))
        born = dt.datetime.fromisoformat(created["metadata"]["creationTimestamp"].replace("Z", "+00:00")).timestamp()
        minute = (int(born) // 60 + 1) * 60  # the first scheduled time after creation
        clock = Clock(minute - 5)
        cjc, jc = CronJobController(reg, clock=clock), JobController(reg, clock=clock)
        # Before the first scheduled time nothing happens; the controller asks to be woken at it.
        assert await cjc.reconcile() == 5.0
        assert await names(reg, "jobs", "batch") == []

        clock.now = minute + 1
        await cjc.reconcile()
        first = f"tick-{minute // 60}"
        assert await names(reg, "jobs", "batch") == [first]
        job = await reg.get(reg.resource("jobs", "batch"), "default", first)
        assert job["metadata"]["labels"] == {"app": "tick"}
        assert job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"] == job["metadata"]["uid"]
        cj = await reg.get(reg.resource("cronjobs", "batch"), "default", "tick")
        assert [r["name"] for r in cj["status"]["active"]] == [first]
        await jc.reconcile()
        assert len(await names(reg, "pods")) == 1

        # Forbid: the next minute comes while the first Job still runs, so nothing new starts.
        clock.now = minute + 61
        await cjc.reconcile()
        assert await names(reg, "jobs", "batch") == [first]
        # Once it completes, the missed minute runs at once.
        assert await finish_pods(reg, "Succeeded") == 1
        await jc.reconcile()
        await cjc.reconcile()
        second = f"tick-{minute // 60 + 1}"
        assert await names(reg, "jobs", "batch") == sorted([first, second])
        cj = await reg.get(reg.resource("cronjobs", "batch"), "default", "tick")
        assert [r["name"] for r in cj["status"]["active"]] == [second]
        assert cj["status"]["lastSuccessfulTime"] and cj["status"]["lastScheduleTime"].endswith(":00Z")

        # Three more minutes, each Job finishing: history keeps the newest two successes.
        for step in range(2, 5):
            await jc.reconcile()
            await finish_pods(reg, "Succeeded")
            await jc.reconcile()
            clock.now = minute + 60 * step + 1
            await cjc.reconcile()
        await jc.reconcile()
        await finish_pods(reg, "Succeeded")
        await jc.reconcile()
        await cjc.reconcile()
        assert await names(reg, "jobs", "batch") == [f"tick-{minute // 60 + 3}", f"tick-{minute // 60 + 4}"]

        # Suspended: time passes, nothing is created.
        def suspend(cur: Obj) -> Obj:
            cur["spec"]["suspend"] = True
            return cur
        await reg.guaranteed_update(reg.resource("cronjobs", "batch"), "default", "tick", suspend)
        clock.now = minute + 600
        await cjc.reconcile()
        assert await names(reg, "jobs", "batch") == [f"tick-{minute // 60 + 3}", f"tick-{minute // 60 + 4}"]
    run(tmp_path, body)


def test_replace_policy_deletes_the_running_job(tmp_path: Path) -> None:
    async def body(reg: Registry) -> None:
        created = await reg.create(reg.resource("cronjobs", "batch"), cronjob("swap", "*/2 * * * *",
                                                                              concurrencyPolicy="Replace"))
        born = dt.datetime.fromisoformat(created["metadata"]["creationTimestamp"].replace("Z", "+00:00")).timestamp()
        first = (int(born) // 120 + 1) * 120
        clock = Clock(first + 1)
        cjc = CronJobController(reg, clock=clock)
        await cjc.reconcile()
        assert await names(reg, "jobs", "batch") == [f"swap-{first // 60}"]
        clock.now = first + 121
        await cjc.reconcile()
        assert await names(reg, "jobs", "batch") == [f"swap-{first // 60 + 2}"]
    run(tmp_path, body)


def test_job_failure_backoff_on_the_clock(tmp_path: Path) -> None:
    async def body(reg: Registry) -> None:
        jobs = reg.resource("jobs", "batch")
        await reg.create(jobs, {"metadata": {"name": "flaky", "namespace": "default"}, "spec": {
            "backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never",
                                                     "containers": [{"name": "c", "image": "busybox"}]}}}})
        clock = Clock(dt.datetime.now(dt.timezone.utc).timestamp())
        jc = JobController(reg, clock=clock)
        await jc.reconcile()
        assert await finish_pods(reg, "Failed") == 1
        # The replacement waits out the 10 s back-off (the pod has no finishedAt: counted from its creation).
        wait = await jc.reconcile()
        assert wait is not None and 0 < wait <= 10
        assert len(await names(reg, "pods")) == 1
        clock.now += 11
        await jc.reconcile()
        assert len(await names(reg, "pods")) == 2
        assert await finish_pods(reg, "Failed") == 1
        await jc.reconcile()
        st = (await reg.get(jobs, "default", "flaky"))["status"]
        assert st["failed"] == 2 and {c["type"] for c in st["conditions"]} == {"FailureTarget", "Failed"}
        # Finished: no more pods, however long we wait.
        clock.now += 3600
        await jc.reconcile()
        assert len(await names(reg, "pods")) == 2
    run(tmp_path, body)
