"""The pure parts of batch/v1: the cron parser and next-fire computation,
the Job status arithmetic and the CronJob scheduling decision. No server."""
from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytest

from edgectl.server import tables, validation
from edgectl.server.controllers import cron, jobindex
from edgectl.server.controllers.cronjob import job_name, most_recent, plan_cronjob
from edgectl.server.controllers.job import backoff_left, plan_job, want_active
from edgectl.server.controllers.rfc3339 import format_time
from edgectl.server.resources import TABLE

UTC = dt.timezone.utc
NY = zoneinfo.ZoneInfo("America/New_York")


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expr: str, start: str, n: int, tz: dt.tzinfo = UTC) -> list[str]:
    sched = cron.parse(expr)
    t: dt.datetime | None = at(start)
    out = []
    for _ in range(n):
        assert t is not None
        t = sched.next_after(t, tz)
        assert t is not None
        out.append(t.astimezone(tz).strftime("%Y-%m-%d %H:%M %a"))
    return out


# --- cron: parsing ---------------------------------------------------------------------


def test_fields_ranges_steps_lists_and_names() -> None:
    s = cron.parse("*/15 9-17/4 1,15 JAN-mar mon-FRI")
    assert s.minutes == {0, 15, 30, 45} and s.hours == {9, 13, 17}
    assert s.days == {1, 15} and s.months == {1, 2, 3} and s.weekdays == {1, 2, 3, 4, 5}
    assert not s.days_star and not s.weekdays_star
    assert cron.parse("5/20 * * * *").minutes == {5, 25, 45}  # a/n runs to the field's end
    assert cron.parse("0 0 ? * SUN").days_star and cron.parse("0 0 ? * SUN").weekdays == {0}


@pytest.mark.parametrize(("macro", "expr"), sorted(cron.MACROS.items()))
def test_macros_are_their_expressions(macro: str, expr: str) -> None:
    assert cron.parse(macro) == cron.parse(expr)
    assert cron.parse(macro.upper()) == cron.parse(expr)


@pytest.mark.parametrize(("expr", "says"), [
    ("", "empty spec"),
    ("* * * *", "expected exactly 5 fields, found 4"),
    ("* * * * * *", "expected exactly 5 fields, found 6"),
    ("60 * * * *", "minute value out of range (0-59)"),
    ("* 24 * * *", "hour value out of range (0-23)"),
    ("* * 0 * *", "day of month value out of range (1-31)"),
    ("* * * 13 *", "month value out of range (1-12)"),
    ("* * * * 7", "day of week value out of range (0-6)"),
    ("5-1 * * * *", "beginning of range (5) beyond end of range (1)"),
    ("*/0 * * * *", "invalid step"),
    ("*/x * * * *", "invalid step"),
    ("a * * * *", "failed to parse int from a"),
    ("* * * FOO *", "failed to parse int from FOO"),
    ("1,,2 * * * *", "empty list element"),
    ("? * * * *", "'?' is only allowed"),
    ("@every 5m", "unrecognized descriptor"),
    ("TZ=UTC * * * * *", "use timeZone field instead"),
])
def test_invalid_expressions_say_why(expr: str, says: str) -> None:
    with pytest.raises(cron.CronError) as err:
        cron.parse(expr)
    assert says in str(err.value)


# --- cron: next fire ----------------------------------------------------------------------


def test_every_minute_is_strictly_after() -> None:
    assert fires("* * * * *", "2026-05-01T10:00:00", 2) == ["2026-05-01 10:01 Fri", "2026-05-01 10:02 Fri"]
    assert fires("* * * * *", "2026-05-01T10:00:30", 1) == ["2026-05-01 10:01 Fri"]


def test_month_ends_and_leap_years() -> None:
    # The 31st skips the months without one.
    assert fires("0 0 31 * *", "2026-01-31T00:00:00", 3) == [
        "2026-03-31 00:00 Tue", "2026-05-31 00:00 Sun", "2026-07-31 00:00 Fri"]
    # Feb 29 waits for a leap year; Dec 31 23:59 rolls into the next year.
    assert fires("0 12 29 2 *", "2026-03-01T00:00:00", 1) == ["2028-02-29 12:00 Tue"]
    assert fires("59 23 31 12 *", "2026-12-31T23:59:00", 1) == ["2027-12-31 23:59 Fri"]
    assert fires("@monthly", "2026-01-31T12:00:00", 2) == ["2026-02-01 00:00 Sun", "2026-03-01 00:00 Sun"]
    # A date that never comes: no fire within the 5-year horizon.
    assert cron.parse("0 0 30 2 *").next_after(at("2026-01-01T00:00:00")) is None


def test_day_of_month_or_day_of_week() -> None:
    # Both restricted: either matches (cron's OR).
    assert fires("0 0 13 * FRI", "2026-02-01T00:00:00", 3) == [
        "2026-02-06 00:00 Fri", "2026-02-13 00:00 Fri", "2026-02-20 00:00 Fri"]
    # One is *: both must match, so only Fridays.
    assert fires("0 0 * * 5", "2026-02-01T00:00:00", 2) == ["2026-02-06 00:00 Fri", "2026-02-13 00:00 Fri"]
    assert fires("@weekly", "2026-02-01T00:00:00", 1) == ["2026-02-08 00:00 Sun"]


def test_time_zone_walks_the_wall_clock_through_dst() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT: 02:30 does not exist that day and is skipped.
    assert fires("30 2 * * *", "2026-03-07T12:00:00", 2, NY) == ["2026-03-09 02:30 Mon", "2026-03-10 02:30 Tue"]
    # 03:30 exists on both sides, in different UTC hours.
    sched = cron.parse("30 3 * * *")
    first = sched.next_after(at("2026-03-06T12:00:00"), NY)
    assert first == at("2026-03-07T08:30:00")  # EST
    second = sched.next_after(first, NY)
    assert second == at("2026-03-08T07:30:00")  # EDT
    # 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 happens twice and fires twice, an hour apart.
    sched = cron.parse("30 1 * * *")
    a = sched.next_after(at("2026-10-31T12:00:00"), NY)
    assert a is not None and a == at("2026-11-01T05:30:00")
    b = sched.next_after(a, NY)
    assert b is not None and b == at("2026-11-01T06:30:00")
    c = sched.next_after(b, NY)
    assert c is not None and c == at("2026-11-02T06:30:00")
    # Every 15 minutes through the repeated hour never goes backwards in real time.
    sched = cron.parse("*/15 * * * *")
    t = at("2026-11-01T05:00:00")
    seen = []
    for _ in range(8):
        nxt = sched.next_after(t, NY)
        assert nxt is not None and nxt > t
        seen.append(nxt)
        t = nxt
    assert seen == [at("2026-11-01T05:15:00") + dt.timedelta(minutes=15 * i) for i in range(8)]


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "UTC"])
def test_next_fire_agrees_with_a_minute_by_minute_walk_across_clock_changes(zone: str) -> None:
    """Around every 2026 clock change of these zones (Lord Howe shifts by 30 min),
    following next_after fires exactly at the real minutes whose wall clock matches."""
    tz = zoneinfo.ZoneInfo(zone)
    starts = [at(s) for s in ("2026-03-07T23:00:00", "2026-10-31T23:00:00", "2026-03-28T20:00:00",
                              "2026-10-24T20:00:00", "2026-04-04T10:00:00", "2026-10-03T10:00:00")]
    for expr in ("*/15 * * * *", "30 1 * * *", "0,30 2 * * *", "45 0-3 * * *", "*/7 1,2 * * *", "* * * * *"):
        sched = cron.parse(expr)
        for start in starts:
            end = start + dt.timedelta(hours=14)
            minutes = (start + dt.timedelta(minutes=i) for i in range(1, 14 * 60))
            want = [t for t in minutes if (w := t.astimezone(tz)).minute in sched.minutes and w.hour in sched.hours
                    and w.month in sched.months and sched.day_matches(w.date())]
            got: list[dt.datetime] = []
            t: dt.datetime | None = start
            while (t := sched.next_after(t, tz)) is not None and t < end:
                got.append(t)
            assert got == want, (expr, start)


def test_job_names_use_minutes_since_the_epoch() -> None:
    when = at("2026-05-01T10:07:00")
    assert cron.unix_minutes(when) == int(when.timestamp()) // 60
    assert job_name("tick", when) == f"tick-{int(when.timestamp()) // 60}"


# --- Job status arithmetic -----------------------------------------------------------------

NOW = 1_800_000_000.0


def job(**spec: Any) -> dict[str, Any]:
    base = {"completions": 1, "parallelism": 1, "backoffLimit": 6,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "x"}]}}}
    base.update(spec)
    base = {k: v for k, v in base.items() if v is not None}
    return {"metadata": {"name": "j", "namespace": "d", "uid": "u"}, "spec": base, "status": {}}


def pod(name: str, phase: str, *, ready: bool = False, finished: float | None = None, restarts: int = 0) -> dict[str, Any]:
    st: dict[str, Any] = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                          "containerStatuses": [{"name": "m", "restartCount": restarts}]}
    if finished is not None:
        st["containerStatuses"][0]["state"] = {"terminated": {"finishedAt": format_time(finished)}}
    return {"metadata": {"name": name, "creationTimestamp": format_time(NOW - 100)}, "status": st}


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c.get("reason", "") for c in status.get("conditions") or [] if c["status"] == "True"}


def test_want_active_follows_parallelism_and_remaining_completions() -> None:
    assert want_active({"parallelism": 2, "completions": 5}, 0, 0) == 2
    assert want_active({"parallelism": 2, "completions": 5}, 4, 0) == 1
    assert want_active({"parallelism": 2, "completions": 5}, 5, 0) == 0
    assert want_active({"parallelism": 3}, 0, 0) == 3  # a work queue
    assert want_active({"parallelism": 3}, 1, 2) == 2  # one succeeded: start no more
    assert want_active({"parallelism": 0, "completions": 5}, 0, 0) == 0


def test_new_job_starts_pods_and_time() -> None:
    plan = plan_job(job(completions=4, parallelism=2), [], NOW)
    assert plan.create == 2 and not plan.delete
    assert plan.status["active"] == 2 and plan.status["startTime"] == format_time(NOW) and plan.status["ready"] == 0


def test_counts_complete_and_keep_finished_status() -> None:
    pods = [pod("a", "Succeeded"), pod("b", "Succeeded"), pod("c", "Running", ready=True)]
    plan = plan_job(job(completions=3, parallelism=2), pods, NOW)
    assert plan.create == 0 and plan.status["succeeded"] == 2 and plan.status["active"] == 1 and plan.status["ready"] == 1
    pods[2] = pod("c", "Succeeded")
    plan = plan_job(job(completions=3, parallelism=2), pods, NOW)
    assert conditions(plan.status) == {"Complete": "CompletionsReached", "SuccessCriteriaMet": "CompletionsReached"}
    assert plan.status["completionTime"] == format_time(NOW) and plan.event == ("Completed", "Job completed")
    # Once finished the status is final, even if pods disappear.
    done = {**job(completions=3), "status": plan.status}
    assert plan_job(done, [], NOW + 50).status == plan.status


def test_counts_never_go_down_when_finished_pods_vanish() -> None:
    j = job(completions=3)
    j["status"] = {"succeeded": 2, "failed": 1, "startTime": format_time(NOW - 10)}
    plan = plan_job(j, [], NOW)
    assert plan.status["succeeded"] == 2 and plan.status["failed"] == 1 and plan.create == 1


def test_backoff_limit_and_backoff_delay() -> None:
    failed = [pod("a", "Failed", finished=NOW - 3)]
    plan = plan_job(job(backoffLimit=2), failed, NOW)
    assert plan.create == 0 and plan.recheck == pytest.approx(7.0)  # 10 s after the failure
    plan = plan_job(job(backoffLimit=2), failed, NOW + 8)
    assert plan.create == 1
    assert backoff_left(failed * 3, 3, NOW - 3) == pytest.approx(40.0)  # 10 * 2**2
    assert backoff_left(failed, 20, NOW - 3) == pytest.approx(360.0)  # capped at 6 minutes
    three = [pod(n, "Failed", finished=NOW - 100) for n in "abc"]
    plan = plan_job(job(backoffLimit=2), three + [pod("d", "Running")], NOW)
    assert conditions(plan.status) == {"Failed": "BackoffLimitExceeded", "FailureTarget": "BackoffLimitExceeded"}
    assert plan.delete == ("d",) and plan.status["failed"] == 3 and "completionTime" not in plan.status
    # backoffLimit 0 with OnFailure: any container restart fails the Job.
    on_failure = job(backoffLimit=0)
    on_failure["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    plan = plan_job(on_failure, [pod("a", "Running", restarts=1)], NOW)
    assert conditions(plan.status)["Failed"] == "BackoffLimitExceeded" and plan.delete == ("a",)


def test_active_deadline() -> None:
    j = job(activeDeadlineSeconds=30)
    j["status"] = {"startTime": format_time(NOW - 10)}
    plan = plan_job(j, [pod("a", "Running")], NOW)
    assert plan.recheck == pytest.approx(20.0) and not conditions(plan.status)
    plan = plan_job(j, [pod("a", "Running")], NOW + 20)
    assert conditions(plan.status)["Failed"] == "DeadlineExceeded" and plan.delete == ("a",)


def test_suspend_and_resume() -> None:
    j = job(suspend=True)
    j["status"] = {"startTime": format_time(NOW - 100)}
    plan = plan_job(j, [pod("a", "Running")], NOW)
    assert plan.delete == ("a",) and conditions(plan.status) == {"Suspended": "JobSuspended"} and plan.create == 0
    resumed = {**job(suspend=False), "status": plan.status}
    plan = plan_job(resumed, [], NOW + 5)
    assert plan.create == 1 and plan.status["startTime"] == format_time(NOW + 5)
    assert {c["type"]: c["reason"] for c in plan.status["conditions"]}["Suspended"] == "JobResumed"


def test_pod_replacement_policy() -> None:
    terminating = pod("a", "Running")
    terminating["metadata"]["deletionTimestamp"] = format_time(NOW)
    assert plan_job(job(podReplacementPolicy="TerminatingOrFailed"), [terminating], NOW).create == 1
    plan = plan_job(job(podReplacementPolicy="Failed"), [terminating], NOW)
    assert plan.create == 0 and plan.status["terminating"] == 1 and not plan.delete


def test_completed_indexes_intervals() -> None:
    assert jobindex.format_intervals({0, 1, 2, 4, 6, 7}) == "0-2,4,6-7"
    assert jobindex.format_intervals(set()) == ""
    assert jobindex.parse_intervals("0-2,4,6-7", 100) == {0, 1, 2, 4, 6, 7}
    assert jobindex.parse_intervals("0-9", 3) == {0, 1, 2}  # beyond completions: dropped
    assert jobindex.parse_intervals("x,3-,5", 10) == {5} and jobindex.parse_intervals(None, 5) == set()


def indexed_pod(name: str, index: int, phase: str, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    p = pod(name, phase)
    p["metadata"]["annotations"] = {jobindex.INDEX_KEY: str(index)}
    p["metadata"]["creationTimestamp"] = created
    return p


def test_indexed_job_fills_missing_indexes_lowest_first() -> None:
    j = job(completions=5, parallelism=2, completionMode="Indexed")
    plan = plan_job(j, [], NOW)
    assert plan.indexes == (0, 1) and plan.create == 2
    pods = [indexed_pod("a", 0, "Succeeded"), indexed_pod("b", 1, "Running"), indexed_pod("c", 3, "Failed")]
    plan = plan_job(j, pods, NOW)
    assert plan.indexes == (2,) and plan.status["completedIndexes"] == "0" and plan.status["succeeded"] == 1
    # A second pod for a running index, and one for a finished index, are deleted.
    dup = [indexed_pod("b2", 1, "Running", "2026-01-02T00:00:00Z"), indexed_pod("a2", 0, "Running")]
    plan = plan_job(j, pods + dup, NOW)
    assert sorted(plan.delete) == ["a2", "b2"] and plan.indexes == (2,)
    # Recorded indexes survive their pods; all five done completes the Job.
    j["status"] = {"completedIndexes": "0-3", "startTime": format_time(NOW - 5)}
    plan = plan_job(j, [indexed_pod("e", 4, "Succeeded")], NOW)
    assert plan.status["completedIndexes"] == "0-4" and plan.status["succeeded"] == 5
    assert "Complete" in conditions(plan.status)


def test_indexed_pod_gets_index_hostname_and_env() -> None:
    body = {"metadata": {"generateName": "work-", "labels": {"x": "y"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b", "env": [{"name": "JOB_COMPLETION_INDEX", "value": "k"}]}],
                     "initContainers": [{"name": "i"}]}}
    out = jobindex.indexed_pod(body, "work", 3)
    assert out["metadata"]["generateName"] == "work-3-"
    assert out["metadata"]["annotations"][jobindex.INDEX_KEY] == "3" and out["metadata"]["labels"][jobindex.INDEX_KEY] == "3"
    assert out["spec"]["hostname"] == "work-3"
    env_a = out["spec"]["containers"][0]["env"]
    assert env_a == [{"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "apiVersion": "v1", "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]
    assert out["spec"]["containers"][1]["env"] == [{"name": "JOB_COMPLETION_INDEX", "value": "k"}]  # the user's wins
    assert out["spec"]["initContainers"][0]["env"][0]["name"] == "JOB_COMPLETION_INDEX"


def test_ttl_after_finished() -> None:
    j = job(ttlSecondsAfterFinished=60)
    j["status"] = {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": format_time(NOW)}]}
    assert plan_job(j, [], NOW + 10).recheck == pytest.approx(50.0)
    assert not plan_job(j, [], NOW + 10).expired
    assert plan_job(j, [], NOW + 60).expired


# --- CronJob scheduling decision ---------------------------------------------------------


def cj(schedule: str = "* * * * *", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "tick", "namespace": "d", "uid": "cu", "creationTimestamp": "2026-05-01T10:00:00Z"},
            "spec": {"schedule": schedule, "concurrencyPolicy": "Allow", "successfulJobsHistoryLimit": 3,
                     "failedJobsHistoryLimit": 1, **spec}, "status": {}}


def cjob(name: str, outcome: str | None, completed: str = "2026-05-01T10:00:00Z") -> dict[str, Any]:
    st: dict[str, Any] = {}
    if outcome:
        st = {"conditions": [{"type": outcome, "status": "True"}], "completionTime": completed}
    return {"metadata": {"name": name, "uid": name, "creationTimestamp": completed}, "status": st}


T = at("2026-05-01T10:05:30").timestamp()


def test_cronjob_fires_the_most_recent_due_time_only() -> None:
    plan = plan_cronjob(cj(), [], T)
    assert plan.create == at("2026-05-01T10:05:00")
    assert plan.status["lastScheduleTime"] == "2026-05-01T10:05:00Z" and plan.recheck == pytest.approx(30.0)
    # Nothing due before the first minute after creation.
    assert plan_cronjob(cj(), [], at("2026-05-01T10:00:30").timestamp()).create is None
    # Already ran this minute (its Job exists): only the status catches up.
    plan = plan_cronjob(cj(), [cjob(job_name("tick", at("2026-05-01T10:05:00")), None)], T)
    assert plan.create is None and plan.status["lastScheduleTime"] == "2026-05-01T10:05:00Z"
    assert len(plan.status["active"]) == 1


def test_cronjob_starting_deadline_and_suspend() -> None:
    c = cj(startingDeadlineSeconds=10)
    c["status"] = {"lastScheduleTime": "2026-05-01T10:00:00Z"}
    # 10:05:00 is 30 s ago, beyond the 10 s deadline: missed, nothing created.
    assert plan_cronjob(c, [], T).create is None
    assert plan_cronjob(c, [], at("2026-05-01T10:05:05").timestamp()).create == at("2026-05-01T10:05:00")
    assert plan_cronjob(cj(suspend=True), [], T).create is None


def test_cronjob_concurrency_policies() -> None:
    running = [cjob("tick-1", None)]
    assert plan_cronjob(cj(concurrencyPolicy="Allow"), running, T).create is not None
    forbid = plan_cronjob(cj(concurrencyPolicy="Forbid"), running, T)
    assert forbid.create is None and forbid.skipped and "lastScheduleTime" not in forbid.status
    replace = plan_cronjob(cj(concurrencyPolicy="Replace"), running, T)
    assert replace.create is not None and replace.delete == ("tick-1",)


def test_cronjob_history_limits_and_last_success() -> None:
    jobs = [cjob(f"ok{i}", "Complete", f"2026-05-01T09:0{i}:00Z") for i in range(5)] + \
        [cjob(f"bad{i}", "Failed", f"2026-05-01T09:0{i}:00Z") for i in range(3)]
    plan = plan_cronjob(cj(), jobs, T)
    assert sorted(plan.delete) == ["bad0", "bad1", "ok0", "ok1"]
    assert plan.status["lastSuccessfulTime"] == "2026-05-01T09:04:00Z"


def test_cronjob_time_zone_and_missed_runs_catch_up() -> None:
    c = cj("0 9 * * *", timeZone="America/New_York")
    c["metadata"]["creationTimestamp"] = "2026-04-01T00:00:00Z"
    plan = plan_cronjob(c, [], at("2026-05-01T14:00:00").timestamp())
    assert plan.create == at("2026-05-01T13:00:00")  # 09:00 EDT
    # A very old lastScheduleTime with a minutely schedule is walked quickly.
    last, upcoming = most_recent(cron.parse("* * * * *"), UTC, at("2010-01-01T00:00:00"), at("2026-05-01T10:05:30"))
    assert last == at("2026-05-01T10:05:00") and upcoming == at("2026-05-01T10:06:00")


# --- validation and printing ----------------------------------------------------------------


def fields(causes: list[Any]) -> list[str]:
    return [c.field for c in causes]


def test_job_and_cronjob_validation_name_the_fields() -> None:
    good = job()
    good["spec"]["selector"] = {"matchLabels": {"a": "b"}}
    good["spec"]["template"]["metadata"] = {"labels": {"a": "b"}}
    assert validation.validate_job(good, None) == []
    bad = job()
    bad["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    assert "spec.template.spec.restartPolicy" in fields(validation.validate_job(bad, None))
    assert "spec.selector" in fields(validation.validate_job(job(), None))
    changed = {**good, "spec": {**good["spec"], "completions": 9}}
    assert "spec.completions" in fields(validation.validate_job(changed, good))
    unimplemented = {**good, "spec": {**good["spec"], "podFailurePolicy": {"rules": []}}}
    causes = validation.validate_job(unimplemented, None)
    assert fields(causes) == ["spec.podFailurePolicy"] and "not implemented" in str(causes)
    indexed = {**good, "spec": {**good["spec"], "completionMode": "Indexed"}}
    assert validation.validate_job(indexed, None) == []
    del indexed["spec"]["completions"]
    assert fields(validation.validate_job(indexed, None)) == ["spec.completions"]
    indexed["spec"].update(completions=100_001, completionMode="Indexed")
    assert fields(validation.validate_job(indexed, None)) == ["spec.completions"]
    assert fields(validation.validate_job({**good, "spec": {**good["spec"], "completionMode": "Odd"}}, None)) == [
        "spec.completionMode"]
    c = cj("*/5 * * * *", jobTemplate={"spec": {"template": good["spec"]["template"]}})
    assert validation.validate_cronjob(c, None) == []
    c["spec"]["jobTemplate"]["metadata"] = {"labels": {"bad key!": "x"}}
    assert fields(validation.validate_cronjob(c, None)) == ["spec.jobTemplate.metadata.labels"]
    del c["spec"]["jobTemplate"]["metadata"]
    c["spec"]["schedule"] = "* * *"
    c["spec"]["concurrencyPolicy"] = "Sometimes"
    c["spec"]["timeZone"] = "../etc/passwd"
    assert fields(validation.validate_cronjob(c, None)) == ["spec.schedule", "spec.timeZone", "spec.concurrencyPolicy"]
    for zone in ("A" * 300, "Mars/Olympus", "/etc/localtime", ""):
        c["spec"]["timeZone"] = zone
        assert "spec.timeZone" in fields(validation.validate_cronjob(c, None))
    c["metadata"]["name"] = "x" * 53
    assert "metadata.name" in fields(validation.validate_cronjob(c, None))


def test_tables_print_upstream_cells() -> None:
    j = job(completions=None, parallelism=3)
    j["metadata"]["creationTimestamp"] = format_time(NOW - 60)
    j["status"] = {"startTime": format_time(NOW - 50), "succeeded": 1}
    now = dt.datetime.fromtimestamp(NOW, UTC)
    cells = tables.rows("jobs", [j], now=now)[0]["cells"]
    assert cells[:5] == ["j", "Running", "1/1 of 3", "50s", "60s"]
    j["status"]["completionTime"] = format_time(NOW - 20)
    j["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
    assert tables.rows("jobs", [j], now=now)[0]["cells"][1:4] == ["Complete", "1/1 of 3", "30s"]
    c = cj("@daily", timeZone="Europe/Berlin")
    c["status"] = {"active": [{"name": "x"}], "lastScheduleTime": format_time(NOW - 3600)}
    cells = tables.rows("cronjobs", [c], now=now)[0]["cells"]
    assert cells[1:6] == ["@daily", "Europe/Berlin", "<unset>", 1, "60m"]
    assert [col["name"] for col in tables.column_definitions("cronjobs") if col["priority"] == 0] == [
        "Name", "Schedule", "Timezone", "Suspend", "Active", "Last Schedule", "Age"]
    assert TABLE.get("cronjobs", "batch").short_names == ("cj",)
