"""The API over raw HTTPS and the Python ``kubernetes`` client: bad input gets a
4xx Status and stores nothing, auth gates every request, watch semantics,
paging, metrics."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from edgectl.server.testing import ServerProcess

PODS = "/api/v1/namespaces/default/pods"
CMS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("api"), extra_args=("--max-request-body", "65536"))
    manifests = server.data_dir / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "base.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-manifest, namespace: kube-system}\n"
                                         "data: {a: b}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: manifest-ns}\n")
    (manifests / "off.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: skipped}\n")
    (manifests / "off.yaml.skip").write_text("")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def pod(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def assert_status(code: int, body: object, want_code: int, reason: str) -> dict:
    assert code == want_code, body
    assert isinstance(body, dict) and body["kind"] == "Status" and body["status"] == "Failure", body
    assert body["code"] == want_code and body["reason"] == reason, body
    return body


def count(srv: ServerProcess, path: str) -> int:
    return len(srv.json("GET", path)[1]["items"])


BAD_BODIES = [
    (b'{"metadata": {"name": "x"', "application/json", 400, "BadRequest"),
    (b"metadata: [unclosed", "application/yaml", 400, "BadRequest"),
    (b"[1,2,3]", "application/json", 400, "BadRequest"),
    (b'{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}}', "application/json", 400, "BadRequest"),
    (b'{"apiVersion":"v9","kind":"Pod","metadata":{"name":"x"}}', "application/json", 400, "BadRequest"),
    (b'{"metadata":{"name":"UPPER"},"spec":{"containers":[{"name":"c","image":"i"}]}}', "application/json", 422, "Invalid"),
    (b'{"metadata":{"name":"x","labels":{"bad key!":"v"}},"spec":{"containers":[{"name":"c","image":"i"}]}}',
     "application/json", 422, "Invalid"),
    (b'{"metadata":{"name":"x"},"spec":{"containers":[]}}', "application/json", 422, "Invalid"),
    (b'{"metadata":{"name":"x"},"spec":{"containers":[{"name":"c","image":"i","ports":[{"containerPort":0}]}]}}',
     "application/json", 422, "Invalid"),
    (b"k8s\x00garbage", "application/vnd.kubernetes.protobuf", 415, "UnsupportedMediaType"),
]


@pytest.mark.parametrize("body,ctype,code,reason", BAD_BODIES)
def test_bad_bodies_get_status_and_store_nothing(srv: ServerProcess, body: bytes, ctype: str, code: int, reason: str) -> None:
    before = count(srv, PODS)
    got, payload = srv.json("POST", PODS, body, headers={"Content-Type": ctype})
    assert_status(got, payload, code, reason)
    assert count(srv, PODS) == before


def test_invalid_reports_field_causes(srv: ServerProcess) -> None:
    code, body = srv.json("POST", "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies", {
        "metadata": {"name": "np"}, "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}})
    body = assert_status(code, body, 422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "spec.ingress[0].from[0].ipBlock.cidr"


def test_oversized_body_is_413_status(srv: ServerProcess) -> None:
    big = {"metadata": {"name": "big"}, "data": {"k": "x" * 70000}}
    code, body = srv.json("POST", CMS, big)
    assert_status(code, body, 413, "RequestEntityTooLarge")
    assert srv.json("GET", f"{CMS}/big")[0] == 404


def test_strict_field_validation(srv: ServerProcess) -> None:
    obj = {"metadata": {"name": "strict"}, "data": {"a": "b"}, "bogus": 1}
    code, body = srv.json("POST", f"{CMS}?fieldValidation=Strict", obj)
    assert "unknown field \"bogus\"" in assert_status(code, body, 400, "BadRequest")["message"]
    code, _, raw = srv.request("POST", f"{CMS}?fieldValidation=Warn", obj)
    assert code == 201 and "bogus" not in json.loads(raw)
    code, body = srv.json("PATCH", f"{CMS}/strict?fieldValidation=Strict", {"extra": True},
                          headers={"Content-Type": "application/merge-patch+json"})
    assert_status(code, body, 400, "BadRequest")
    dup = b'{"metadata":{"name":"dup"},"data":{"a":"1"},"data":{"b":"2"}}'
    code, body = srv.json("POST", f"{CMS}?fieldValidation=Strict", dup, headers={"Content-Type": "application/json"})
    assert 'duplicate field "data"' in assert_status(code, body, 400, "BadRequest")["message"]
    code, body = srv.json("POST", f"{CMS}?fieldValidation=Sometimes", obj)
    assert_status(code, body, 400, "BadRequest")


def test_selectors_and_errors(srv: ServerProcess) -> None:
    for i, tier in enumerate(["a", "b", "c"]):
        assert srv.json("POST", PODS, pod(f"sel-{i}", app="sel", tier=tier))[0] == 201
    names = lambda q: sorted(o["metadata"]["name"] for o in srv.json("GET", f"{PODS}?{q}")[1]["items"])  # noqa: E731
    assert names("labelSelector=app%3Dsel,tier+in+(a,c)") == ["sel-0", "sel-2"]
    assert names("labelSelector=app%3Dsel,tier+notin+(a),!missing") == ["sel-1", "sel-2"]
    assert names("labelSelector=app%3Dsel&fieldSelector=metadata.name!%3Dsel-1") == ["sel-0", "sel-2"]
    assert names("fieldSelector=status.phase%3DPending,metadata.name%3Dsel-2") == ["sel-2"]
    assert names("fieldSelector=spec.nodeName%3D&labelSelector=app%3Dsel") == ["sel-0", "sel-1", "sel-2"]
    assert_status(*srv.json("GET", f"{PODS}?labelSelector=app+in+(a"), 400, "BadRequest")
    assert_status(*srv.json("GET", f"{PODS}?labelSelector=bad%20key%3Dv"), 400, "BadRequest")
    assert_status(*srv.json("GET", f"{PODS}?fieldSelector=spec.image%3Dx"), 400, "BadRequest")
    assert_status(*srv.json("GET", f"{PODS}/nope"), 404, "NotFound")
    assert_status(*srv.json("POST", PODS, pod("sel-0")), 409, "AlreadyExists")
    assert_status(*srv.json("GET", "/api/v1/widgets"), 404, "NotFound")
    assert_status(*srv.json("PUT", PODS, pod("x")), 405, "MethodNotAllowed")
    assert_status(*srv.json("POST", "/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "c"}}), 404, "NotFound")
    stale = srv.json("GET", f"{PODS}/sel-0")[1]
    stale["metadata"]["labels"]["x"] = "1"
    assert srv.json("PUT", f"{PODS}/sel-0", stale)[0] == 200
    assert_status(*srv.json("PUT", f"{PODS}/sel-0", stale), 409, "Conflict")
    # Protobuf-first Accept is answered in JSON.
    code, headers, raw = srv.request("GET", f"{PODS}/sel-0",
                                     headers={"Accept": "application/vnd.kubernetes.protobuf,application/json"})
    assert code == 200 and headers["content-type"] == "application/json" and json.loads(raw)["kind"] == "Pod"


def test_paging_is_consistent(srv: ServerProcess) -> None:
    for i in range(7):
        srv.json("POST", CMS, {"metadata": {"name": f"page-{i}", "labels": {"page": "yes"}}})
    seen: list[str] = []
    code, body = srv.json("GET", f"{CMS}?limit=3&labelSelector=page")
    rv = body["metadata"]["resourceVersion"]
    srv.json("POST", CMS, {"metadata": {"name": "page-late", "labels": {"page": "yes"}}})  # after the snapshot
    while True:
        seen += [o["metadata"]["name"] for o in body["items"]]
        token = body["metadata"].get("continue")
        if not token:
            break
        code, body = srv.json("GET", f"{CMS}?limit=3&labelSelector=page&continue={token}")
        assert code == 200 and body["metadata"]["resourceVersion"] == rv
    assert seen == [f"page-{i}" for i in range(7)]
    assert_status(*srv.json("GET", f"{CMS}?limit=3&continue=!!notbase64"), 400, "BadRequest")


def test_auth_gates_requests(srv: ServerProcess) -> None:
    assert srv.request("GET", "/healthz", anonymous=True)[0] == 200
    assert srv.request("GET", "/readyz", anonymous=True)[0] == 200
    assert json.loads(srv.request("GET", "/version", anonymous=True)[2])["major"] == "1"
    assert srv.request("GET", "/cacerts", anonymous=True)[0] == 200
    code, _, raw = srv.request("GET", PODS, anonymous=True)
    assert_status(code, json.loads(raw), 403, "Forbidden")
    code, _, raw = srv.request("GET", PODS, anonymous=True, headers={"Authorization": "Bearer not-a-token"})
    assert_status(code, json.loads(raw), 401, "Unauthorized")
    code, _, raw = srv.request("GET", "/metrics", anonymous=True)
    assert code == 403


def test_metrics(srv: ServerProcess) -> None:
    srv.json("GET", PODS)
    code, _, raw = srv.request("GET", "/metrics")
    text = raw.decode()
    assert code == 200
    assert 'edgectl_apiserver_requests_total{code="200",resource="pods",subresource="",verb="list"}' in text
    assert "edgectl_apiserver_request_duration_seconds_bucket" in text
    assert "edgectl_apiserver_watchers" in text
    assert "edgectl_storage_db_size_bytes" in text and "edgectl_storage_compact_revision" in text


def test_watch_semantics(srv: ServerProcess) -> None:
    """Synthetic ADDED for RV 0, bookmarks on request, server-side timeout, 410 for compacted RVs."""
    srv.json("POST", CMS, {"metadata": {"name": "w-0"}})
    code, _, raw = srv.request("GET", f"{CMS}?watch=true&resourceVersion=0&fieldSelector=metadata.name%3Dw-0&timeoutSeconds=1",
                               fresh=True)
    events = [json.loads(line) for line in raw.splitlines()]
    assert code == 200 and [e["type"] for e in events] == ["ADDED"] and events[0]["object"]["metadata"]["name"] == "w-0"
    rv = srv.json("GET", CMS)[1]["metadata"]["resourceVersion"]

    def later() -> None:
        time.sleep(0.3)
        srv.json("POST", CMS, {"metadata": {"name": "w-1"}}, fresh=True)

    threading.Thread(target=later).start()
    t0 = time.monotonic()
    code, _, raw = srv.request("GET", f"{CMS}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=2",
                               fresh=True)
    assert 1.5 < time.monotonic() - t0 < 5
    events = [json.loads(line) for line in raw.splitlines()]
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "w-1"
    # Watch-list (sendInitialEvents): the state as ADDED, then a bookmark marking its end.
    code, _, raw = srv.request("GET", f"{CMS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                                      "&allowWatchBookmarks=true&fieldSelector=metadata.name%3Dw-0&timeoutSeconds=1", fresh=True)
    events = [json.loads(line) for line in raw.splitlines()]
    assert [e["type"] for e in events[:2]] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    # Tables in watch events.
    code, _, raw = srv.request("GET", f"{CMS}?watch=true&fieldSelector=metadata.name%3Dw-1&timeoutSeconds=1", fresh=True,
                               headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    ev = json.loads(raw.splitlines()[0])
    assert ev["object"]["kind"] == "Table" and ev["object"]["rows"][0]["cells"][0] == "w-1"


def test_python_kubernetes_client_lists_and_watches(srv: ServerProcess) -> None:
    kubernetes = pytest.importorskip("kubernetes")
    from kubernetes import client, config, watch

    api_client = config.new_client_from_config(config_file=str(srv.kubeconfig))
    core = client.CoreV1Api(api_client)
    created = core.create_namespaced_pod("default", client.V1Pod(
        metadata=client.V1ObjectMeta(name="pyclient", labels={"from": "python"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")])))
    assert created.metadata.uid
    listed = core.list_namespaced_pod("default", label_selector="from=python")
    assert [p.metadata.name for p in listed.items] == ["pyclient"]
    assert core.list_pod_for_all_namespaces().items

    events: list[tuple[str, str]] = []

    def change() -> None:
        time.sleep(0.5)
        c = client.CoreV1Api(config.new_client_from_config(config_file=str(srv.kubeconfig)))
        c.patch_namespaced_pod("pyclient", "default", {"metadata": {"labels": {"seen": "yes"}}})
        c.delete_namespaced_pod("pyclient", "default")

    threading.Thread(target=change).start()
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_pod, "default", label_selector="from=python",
                       resource_version=listed.metadata.resource_version, timeout_seconds=5):
        events.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()
    # Controllers (the scheduler) may add MODIFIED events of their own in between.
    assert events[0] == ("MODIFIED", "pyclient") and events[-1] == ("DELETED", "pyclient")
    assert {e[0] for e in events} == {"MODIFIED", "DELETED"}
    with pytest.raises(kubernetes.client.exceptions.ApiException) as err:
        core.read_namespaced_pod("pyclient", "default")
    assert err.value.status == 404


def test_random_malformed_objects_never_500(srv: ServerProcess) -> None:
    """Random shapes (wrong types, junk patches) in every resource: always a 4xx, never a 5xx."""
    import random

    rnd = random.Random(4)
    vals = [None, 1, -1, "x", "", [], {}, [1], {"a": 1}, True, 1.5, "UPPER", {"name": 1}, [{}], [None]]
    paths = {
        PODS: ["metadata", "spec", "status", "kind", "apiVersion"],
        "/api/v1/namespaces/default/services": ["metadata", "spec"],
        "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies": ["metadata", "spec"],
        "/api/v1/nodes": ["metadata", "spec", "status"],
        "/api/v1/namespaces/default/secrets": ["metadata", "data", "stringData", "type"],
        "/api/v1/namespaces/default/endpoints": ["metadata", "subsets"],
        "/apis/coordination.k8s.io/v1/namespaces/default/leases": ["metadata", "spec"],
    }

    def sub() -> object:
        return rnd.choice(vals + [{"name": "ok"}, {"containers": rnd.choice(vals)}, {"ports": [rnd.choice(vals)]},
                                  {"ingress": [{"from": [rnd.choice(vals)], "ports": [rnd.choice(vals)]}]},
                                  {"podSelector": rnd.choice(vals)}, {"labels": rnd.choice(vals)}])

    patch_types = ["application/merge-patch+json", "application/strategic-merge-patch+json", "application/json-patch+json"]
    for i in range(300):
        path, keys = rnd.choice(list(paths.items()))
        body: object = {k: sub() for k in rnd.sample(keys, rnd.randint(0, len(keys)))}
        if rnd.random() < 0.7:
            body.setdefault("metadata", {"name": f"fz{i}"})  # type: ignore[union-attr]
        method = rnd.choice(["POST", "PUT", "PATCH"])
        url = path if method == "POST" else f"{path}/fz{rnd.randint(0, i)}"
        headers = {"Content-Type": "application/json"}
        if method == "PATCH":
            headers["Content-Type"] = rnd.choice(patch_types)
            if headers["Content-Type"] == patch_types[2]:
                body = [{"op": rnd.choice(["add", "remove", "replace", "move", "x"]), "path": rnd.choice(["/spec", "", "/a/b", 5]),
                         "value": sub(), "from": "/metadata"}]
        code, resp = srv.json(method, url, body, headers=headers)
        assert code < 500, (method, url, body, resp)


def test_manifests_are_applied_at_start(srv: ServerProcess) -> None:
    deadline = time.monotonic() + 10
    while srv.json("GET", "/api/v1/namespaces/kube-system/configmaps/from-manifest")[0] != 200:
        assert time.monotonic() < deadline, "manifest not applied"
        time.sleep(0.1)
    assert srv.json("GET", "/api/v1/namespaces/manifest-ns")[0] == 200
    assert srv.json("GET", f"{CMS}/skipped")[0] == 404
