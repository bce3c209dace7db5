"""batch/v1 Jobs and CronJobs driven by real kubectl against a real
``edgectl server --disable-agent``.

One Node object stands in for a machine; ``FinishingKubelet`` (a thread making
the calls a kubelet makes) runs its pods on paper: a pod whose command
mentions ``exit 1`` ends Failed, ``sleep`` stays Running and Ready, anything
else ends Succeeded. Everything is polled; nothing asserts on timing.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from edgectl.server.testing import MERGE_PATCH, PaperKubelet, ServerProcess, kubectl_path, poll
from edgectl.server.testing import get_ok as get

V = "1.33"
OLD = "1.27"
NODE = "batch-n1"
pytestmark = pytest.mark.skipif(not kubectl_path(V).exists() or not kubectl_path(OLD).exists(),
                                reason="kubectl binaries not installed")


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class FinishingKubelet(PaperKubelet):
    """Runs (on paper) the pods bound to NODE: a command with ``sleep`` stays Running,
    ``exit 1`` fails, anything else succeeds at once."""

    def __init__(self, srv: ServerProcess) -> None:
        super().__init__(srv, {NODE}, name="batch-fake-kubelet")

    def advance(self, pod: dict[str, Any], path: str) -> None:
        spec = pod["spec"]
        if pod.get("status", {}).get("phase") != "Pending":
            return
        now = _stamp()
        words = " ".join(spec["containers"][0].get("command") or []) + " " + " ".join(spec["containers"][0].get("args") or [])
        if "sleep" in words:
            phase, state, ready = "Running", {"running": {"startedAt": now}}, True
        else:
            code_ = 1 if "exit 1" in words else 0
            phase = "Failed" if code_ else "Succeeded"
            state = {"terminated": {"exitCode": code_, "reason": "Error" if code_ else "Completed",
                                    "startedAt": now, "finishedAt": now}}
            ready = False
        conds = [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now}]
        statuses = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": ready, "restartCount": 0,
                     "started": ready, "state": state} for c in spec["containers"]]
        self.srv.request("PATCH", path + "/status", {"status": {
            "phase": phase, "conditions": conds, "containerStatuses": statuses, "podIP": "10.42.0.9",
            "startTime": now}}, headers=MERGE_PATCH, fresh=True)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("batch"))
    kubelet: FinishingKubelet | None = None
    try:
        server.start()
        assert server.json("POST", "/api/v1/nodes", {"metadata": {"name": NODE}, "spec": {}})[0] == 201
        code, body = server.json("PATCH", f"/api/v1/nodes/{NODE}/status", {"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]}},
            headers=MERGE_PATCH)
        assert code == 200, body
        code, body = server.json("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
            "metadata": {"name": NODE}, "spec": {"holderIdentity": NODE, "renewTime": "2099-01-01T00:00:00Z"}})
        assert code == 201, body
        kubelet = FinishingKubelet(server)
        kubelet.start()
        yield server
    finally:
        if kubelet is not None:
            kubelet.halt.set()
            kubelet.join(5)
        server.stop()


def jobs(ns: str) -> str:
    return f"/apis/batch/v1/namespaces/{ns}/jobs"


def pods_of(srv: ServerProcess, ns: str, job: str) -> list[dict[str, Any]]:
    return get(srv, f"/api/v1/namespaces/{ns}/pods?labelSelector=batch.kubernetes.io/job-name={job}")["items"]


def job_manifest(name: str, command: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {**spec, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", command]}]}}}}


def test_discovery_lists_batch_with_short_names(srv: ServerProcess) -> None:
    out = srv.kubectl(V, "api-resources", "--api-group=batch").stdout
    rows = {line.split()[0]: line.split() for line in out.strip().splitlines()[1:]}
    assert rows["jobs"][1:4] == ["batch/v1", "true", "Job"]
    assert rows["cronjobs"][1:5] == ["cj", "batch/v1", "true", "CronJob"]
    doc = get(srv, "/apis/batch/v1")
    names = {r["name"]: r for r in doc["resources"]}
    assert "jobs/status" in names and "cronjobs/status" in names
    assert "all" in names["jobs"]["categories"] and "all" in names["cronjobs"]["categories"]


def test_create_job_completes_and_wait_and_tables(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "namespace", "batch1")
    out = srv.kubectl(V, "-n", "batch1", "create", "job", "hello", "--image=busybox:1.36", "--", "sh", "-c", "exit 0")
    assert "job.batch/hello created" in out.stdout
    job = get(srv, jobs("batch1") + "/hello")
    spec, uid = job["spec"], job["metadata"]["uid"]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"], spec["completionMode"], spec["suspend"]) == \
        (1, 1, 6, "NonIndexed", False)
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    labels = spec["template"]["metadata"]["labels"]
    assert labels["batch.kubernetes.io/job-name"] == labels["job-name"] == "hello"
    assert labels["controller-uid"] == labels["batch.kubernetes.io/controller-uid"] == uid
    assert spec["template"]["spec"]["restartPolicy"] == "Never"

    out = srv.kubectl(V, "-n", "batch1", "wait", "--for=condition=complete", "job/hello", "--timeout=60s", timeout=70)
    assert "job.batch/hello condition met" in out.stdout
    job = get(srv, jobs("batch1") + "/hello")
    st = job["status"]
    assert st["succeeded"] == 1 and st.get("failed", 0) == 0 and st["ready"] == 0 and "active" not in st
    assert st["startTime"] <= st["completionTime"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Complete"]["status"] == "True" and conds["Complete"]["reason"] == "CompletionsReached"
    pods = pods_of(srv, "batch1", "hello")
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Succeeded"
    name = pods[0]["metadata"]["name"]
    assert name.startswith("hello-") and len(name) == len("hello-") + 5
    ref = pods[0]["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("Job", "hello", uid, True)

    table = srv.kubectl(V, "-n", "batch1", "get", "jobs", "-o", "wide").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    row = table[1].split()
    assert row[:3] == ["hello", "Complete", "1/1"] and row[5:7] == ["hello", "busybox:1.36"]
    assert row[7] == f"batch.kubernetes.io/controller-uid={uid}"
    old = srv.kubectl(OLD, "-n", "batch1", "get", "job", "hello").stdout.splitlines()
    assert old[0].split()[:3] == ["NAME", "STATUS", "COMPLETIONS"] and old[1].split()[:3] == ["hello", "Complete", "1/1"]
    described = srv.kubectl(V, "-n", "batch1", "describe", "job", "hello").stdout
    assert "SuccessfulCreate" in described and f"Created pod: {name}" in described, described
    # `kubectl get all` lists Jobs (category all).
    assert "job.batch/hello" in srv.kubectl(V, "-n", "batch1", "get", "all").stdout

    # Deleting the Job (background, kubectl's default) cascades to its pod.
    srv.kubectl(V, "-n", "batch1", "delete", "job", "hello")
    poll("the job's pods to go", lambda: not pods_of(srv, "batch1", "hello"))


def test_backoff_limit_fails_the_job(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "namespace", "batch2")
    # Never restarts: each failure is a new pod; backoffLimit 1 allows two (one back-off of 10 s between them).
    srv.kubectl(V, "-n", "batch2", "create", "-f", "-", input=json.dumps(job_manifest("boom", "exit 1", backoffLimit=1)))
    out = srv.kubectl(V, "-n", "batch2", "wait", "--for=condition=failed", "job/boom", "--timeout=60s", timeout=70)
    assert "condition met" in out.stdout
    st = get(srv, jobs("batch2") + "/boom")["status"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Failed"]["reason"] == "BackoffLimitExceeded" and conds["Failed"]["status"] == "True"
    assert "Complete" not in conds and "completionTime" not in st and st["failed"] == 2
    pods = pods_of(srv, "batch2", "boom")
    assert len(pods) == 2 and all(p["status"]["phase"] == "Failed" for p in pods)
    table = srv.kubectl(V, "-n", "batch2", "get", "job", "boom").stdout.splitlines()
    assert table[1].split()[:3] == ["boom", "Failed", "0/1"]
    # kubectl wait for Complete on a failed Job is not met.
    res = srv.kubectl(V, "-n", "batch2", "wait", "--for=condition=complete", "job/boom", "--timeout=1s", check=False)
    assert res.returncode != 0


def test_parallelism_and_completions(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "namespace", "batch3")
    srv.kubectl(V, "-n", "batch3", "create", "-f", "-",
                input=json.dumps(job_manifest("many", "exit 0", completions=5, parallelism=2)))
    # The oldest supported kubectl creates Jobs too (as JSON).
    out = srv.kubectl(OLD, "-n", "batch3", "create", "job", "old", "--image=busybox:1.36", "--", "true")
    assert "job.batch/old created" in out.stdout
    srv.kubectl(OLD, "-n", "batch3", "wait", "--for=condition=complete", "job/old", "--timeout=60s", timeout=70)
    srv.kubectl(V, "-n", "batch3", "wait", "--for=condition=complete", "job/many", "--timeout=60s", timeout=70)
    st = get(srv, jobs("batch3") + "/many")["status"]
    assert st["succeeded"] == 5 and "failed" not in st
    assert len(pods_of(srv, "batch3", "many")) == 5
    # A running Job with parallelism 2 holds exactly two active pods.
    srv.kubectl(V, "-n", "batch3", "create", "-f", "-",
                input=json.dumps(job_manifest("workers", "sleep 3600", completions=4, parallelism=2)))
    poll("two ready workers", lambda: get(srv, jobs("batch3") + "/workers")["status"].get("ready") == 2)
    running = [p for p in pods_of(srv, "batch3", "workers") if not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 2
    st = get(srv, jobs("batch3") + "/workers")["status"]
    assert st["active"] == 2 and st["ready"] == 2
    row = srv.kubectl(V, "-n", "batch3", "get", "job", "workers").stdout.splitlines()[1].split()
    assert row[:3] == ["workers", "Running", "0/4"]
    # Suspending stops the pods; the table says so.
    srv.kubectl(V, "-n", "batch3", "patch", "job", "workers", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    poll("suspended workers stop", lambda: not [p for p in pods_of(srv, "batch3", "workers")])
    row = srv.kubectl(V, "-n", "batch3", "get", "job", "workers").stdout.splitlines()[1].split()
    assert row[:2] == ["workers", "Suspended"]
    conds = {c["type"]: c for c in get(srv, jobs("batch3") + "/workers")["status"]["conditions"]}
    assert conds["Suspended"]["reason"] == "JobSuspended"


def test_indexed_job_runs_each_index_once(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "namespace", "batch7")
    srv.kubectl(V, "-n", "batch7", "create", "-f", "-",
                input=json.dumps(job_manifest("idx", "exit 0", completions=4, parallelism=2, completionMode="Indexed")))
    srv.kubectl(V, "-n", "batch7", "wait", "--for=condition=complete", "job/idx", "--timeout=60s", timeout=70)
    st = get(srv, jobs("batch7") + "/idx")["status"]
    assert st["completedIndexes"] == "0-3" and st["succeeded"] == 4
    pods = pods_of(srv, "batch7", "idx")
    index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p for p in pods}
    assert sorted(index) == ["0", "1", "2", "3"] and len(pods) == 4
    for i, p in index.items():
        assert p["metadata"]["name"].startswith(f"idx-{i}-") and p["spec"]["hostname"] == f"idx-{i}"
        assert p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == i
        env = {e["name"]: e for e in p["spec"]["containers"][0]["env"]}
        assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def test_ttl_after_finished_deletes_job_and_pods(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "namespace", "batch4")
    srv.kubectl(V, "-n", "batch4", "create", "-f", "-",
                input=json.dumps(job_manifest("brief", "exit 0", ttlSecondsAfterFinished=0)))
    poll("the job to be deleted", lambda: srv.json("GET", jobs("batch4") + "/brief")[0] == 404)
    poll("its pods to be collected", lambda: not pods_of(srv, "batch4", "brief"))


def test_deadline_exceeded(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "namespace", "batch5")
    srv.kubectl(V, "-n", "batch5", "create", "-f", "-",
                input=json.dumps(job_manifest("slow", "sleep 3600", activeDeadlineSeconds=1)))
    srv.kubectl(V, "-n", "batch5", "wait", "--for=condition=failed", "job/slow", "--timeout=60s", timeout=70)
    conds = {c["type"]: c for c in get(srv, jobs("batch5") + "/slow")["status"]["conditions"]}
    assert conds["Failed"]["reason"] == "DeadlineExceeded"
    poll("the running pod to be stopped", lambda: not pods_of(srv, "batch5", "slow"))


@pytest.mark.parametrize(("patch", "field"), [
    ({"restartPolicy": "Always"}, "spec.template.spec.restartPolicy"),
    ({"backoffLimit": -1}, "spec.backoffLimit"),
    ({"completionMode": "Sequential"}, "spec.completionMode"),
    ({"podFailurePolicy": {"rules": []}}, "spec.podFailurePolicy"),
    ({"parallelism": -2}, "spec.parallelism"),
])
def test_invalid_jobs_name_the_field(srv: ServerProcess, patch: dict[str, Any], field: str) -> None:
    manifest = job_manifest("bad", "exit 0")
    if "restartPolicy" in patch:
        manifest["spec"]["template"]["spec"].update(patch)
    else:
        manifest["spec"].update(patch)
    res = srv.kubectl(V, "create", "-f", "-", input=json.dumps(manifest), check=False)
    assert res.returncode != 0 and field in res.stderr and "is invalid" in res.stderr, res.stderr


def test_invalid_cronjobs_name_the_field(srv: ServerProcess) -> None:
    code, body = srv.json("POST", "/apis/batch/v1/namespaces/default/cronjobs", cronjob("bad", "61 * * * *"))
    assert code == 422 and body["details"]["causes"][0]["field"] == "spec.schedule", body
    assert "61 * * * *" in body["details"]["causes"][0]["message"]
    code, body = srv.json("POST", "/apis/batch/v1/namespaces/default/cronjobs",
                          cronjob("bad", "* * * * *", timeZone="Mars/Olympus"))
    assert code == 422 and body["details"]["causes"][0]["field"] == "spec.timeZone", body
    res = srv.kubectl(V, "create", "cronjob", "bad", "--image=busybox", "--schedule=not a schedule", check=False)
    assert res.returncode != 0 and "spec.schedule" in res.stderr, res.stderr


def cronjob(name: str, schedule: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
            "spec": {"schedule": schedule, **spec, "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", "exit 0"]}]}}}}}}


def test_cronjob_fires_a_missed_schedule_and_cascades(srv: ServerProcess) -> None:
    srv.kubectl(V, "create", "namespace", "batch6")
    out = srv.kubectl(V, "-n", "batch6", "create", "cronjob", "tick", "--image=busybox:1.36", "--schedule=* * * * *",
                      "--", "sh", "-c", "exit 0")
    assert "cronjob.batch/tick created" in out.stdout
    cj = get(srv, "/apis/batch/v1/namespaces/batch6/cronjobs/tick")
    spec = cj["spec"]
    assert (spec["concurrencyPolicy"], spec["suspend"], spec["successfulJobsHistoryLimit"],
            spec["failedJobsHistoryLimit"]) == ("Allow", False, 3, 1)
    # Rather than waiting for the next minute, say the last run was three minutes
    # ago: the most recent missed time (this minute) is due now; older ones are skipped.
    before = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) - dt.timedelta(minutes=3)
    code, body = srv.json("PATCH", "/apis/batch/v1/namespaces/batch6/cronjobs/tick/status",
                          {"status": {"lastScheduleTime": before.strftime("%Y-%m-%dT%H:%M:%SZ")}}, headers=MERGE_PATCH)
    assert code == 200, body
    made = poll("a job from the cronjob", lambda: get(srv, jobs("batch6"))["items"])
    assert len(made) == 1
    job = made[0]
    minutes = int(job["metadata"]["name"].rsplit("-", 1)[1])
    assert job["metadata"]["name"] == f"tick-{minutes}" and minutes > int(before.timestamp()) // 60
    ref = job["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["controller"]) == ("CronJob", "tick", True)
    assert job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"] == \
        dt.datetime.fromtimestamp(minutes * 60, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    srv.kubectl(V, "-n", "batch6", "wait", "--for=condition=complete", f"job/{job['metadata']['name']}",
                "--timeout=60s", timeout=70)
    st = poll("lastSuccessfulTime", lambda: (g := get(srv, "/apis/batch/v1/namespaces/batch6/cronjobs/tick")["status"])
              .get("lastSuccessfulTime") and g)
    assert st["lastScheduleTime"] == dt.datetime.fromtimestamp(minutes * 60, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert not st.get("active")

    table = srv.kubectl(V, "-n", "batch6", "get", "cronjobs,jobs").stdout.splitlines()
    assert table[0].split() == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"]
    assert table[1].split()[:7] == ["cronjob.batch/tick", "*", "*", "*", "*", "*", "<none>"]
    assert table[1].split()[7:9] == ["False", "0"]
    assert any(line.split()[:3] == [f"job.batch/tick-{minutes}", "Complete", "1/1"] for line in table)
    # A Job made by hand from the CronJob (kubectl create job --from) works too.
    out = srv.kubectl(V, "-n", "batch6", "create", "job", "manual", "--from=cronjob/tick")
    assert "job.batch/manual created" in out.stdout
    srv.kubectl(V, "-n", "batch6", "wait", "--for=condition=complete", "job/manual", "--timeout=60s", timeout=70)

    # CronJob -> Jobs -> Pods all go with a background delete.
    srv.kubectl(V, "-n", "batch6", "delete", "cronjob", "tick")
    poll("jobs collected", lambda: not get(srv, jobs("batch6"))["items"])
    poll("pods collected", lambda: not get(srv, "/api/v1/namespaces/batch6/pods")["items"])
