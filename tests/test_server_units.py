"""Pure parts of the API server (patches, selectors, tables, protobuf) and the
registry's semantics over the real SQLite backend, without HTTP."""
from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import pytest

from edgectl.server import patch, protobuf, tables
from edgectl.server.registry import Registry, Selection
from edgectl.server.selectors import SelectorError, parse_field_selector, parse_label_selector
from edgectl.server.status import ApiError
from edgectl.server.storage.sqlite import SQLiteBackend
from edgectl.server.testing import sqlite_registry

# --- strategic merge patch -----------------------------------------------------------

POD = {
    "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
    "spec": {
        "containers": [
            {"name": "app", "image": "app:1", "ports": [{"containerPort": 80}, {"containerPort": 443}],
             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "side", "image": "side:1"},
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "tolerations": [{"key": "k", "operator": "Exists"}],
    },
}


def smp(p: Any) -> Any:
    return patch.strategic_merge(POD, p, kind="pods")


def test_smp_merges_lists_by_key() -> None:
    out = smp({"spec": {"containers": [{"name": "side", "image": "side:2"},
                                       {"name": "app", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}]}})
    app, side = out["spec"]["containers"]
    assert side["image"] == "side:2" and app["image"] == "app:1"
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}]
    assert [p["containerPort"] for p in app["ports"]] == [80, 443]
    assert POD["spec"]["containers"][1]["image"] == "side:1"  # the original is untouched


def test_smp_directives() -> None:
    out = smp({"spec": {"containers": [{"name": "side", "$patch": "delete"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["app"]
    out = smp({"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80, "$patch": "delete"}]}]}})
    assert out["spec"]["containers"][0]["ports"] == [{"containerPort": 443}]
    out = smp({"metadata": {"labels": {"a": None, "c": "3"}}})
    assert out["metadata"]["labels"] == {"b": "2", "c": "3"}
    out = smp({"metadata": {"finalizers": ["y"]}})
    assert out["metadata"]["finalizers"] == ["x", "y"]  # primitive merge list: union
    out = smp({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}})
    assert out["metadata"]["finalizers"] == []
    out = smp({"spec": {"tolerations": [{"key": "other", "operator": "Exists"}]}})
    assert out["spec"]["tolerations"] == [{"key": "other", "operator": "Exists"}]  # no strategy: replace
    out = smp({"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
                        "containers": [{"name": "app", "image": "app:2"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["side", "app"]
    out = smp({"spec": {"volumes": [{"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/x"}}]}})
    assert out["spec"]["volumes"] == [{"name": "data", "hostPath": {"path": "/x"}}]
    out = smp({"metadata": {"labels": {"$patch": "replace", "only": "me"}}})
    assert out["metadata"]["labels"] == {"only": "me"}
    with pytest.raises(patch.PatchError):
        smp({"spec": {"containers": [{"image": "no-name"}]}})


def test_json_patch_and_merge_patch() -> None:
    doc = {"a": {"b": [1, 2, 3]}, "c": "x"}
    out = patch.json_patch(doc, [
        {"op": "add", "path": "/a/b/1", "value": 9}, {"op": "remove", "path": "/a/b/0"},
        {"op": "replace", "path": "/c", "value": "y"}, {"op": "copy", "from": "/c", "path": "/d"},
        {"op": "move", "from": "/d", "path": "/e"}, {"op": "add", "path": "/a/b/-", "value": 7},
        {"op": "test", "path": "/e", "value": "y"}, {"op": "add", "path": "/k~1v", "value": 1},
    ])
    assert out == {"a": {"b": [9, 2, 3, 7]}, "c": "y", "e": "y", "k/v": 1}
    for bad in ([{"op": "remove", "path": "/nope"}], [{"op": "test", "path": "/c", "value": "z"}],
                [{"op": "add", "path": "/a/b/9", "value": 0}], [{"op": "frob", "path": "/c"}], {"op": "add"}):
        with pytest.raises(patch.PatchError):
            patch.json_patch(doc, bad)
    assert patch.json_merge(doc, {"a": {"b": None}, "c": None, "n": {"m": 1}}) == {"a": {}, "n": {"m": 1}}


# --- selectors ---------------------------------------------------------------------------------


def test_label_selector_syntax() -> None:
    sel = parse_label_selector("a=b, c!=d, e in (f,g), h notin (i), j, !k, n>3")
    labels = {"a": "b", "c": "x", "e": "g", "h": "z", "j": "", "n": "5"}
    assert sel.matches(labels)
    assert not sel.matches({**labels, "k": "1"})
    assert not sel.matches({**labels, "n": "2"})
    assert parse_label_selector("").matches({})
    assert parse_label_selector("a==b").matches({"a": "b"})
    for bad in ("a in (b", "=b", "a=b,", "a b", "bad key=1", "a=" + "x" * 64, "a>b", "a in b"):
        with pytest.raises(SelectorError):
            parse_label_selector(bad)


def test_field_selector() -> None:
    sel = parse_field_selector("metadata.name=x,status.phase!=Running", "pods")
    assert sel.matches({"metadata": {"name": "x"}, "status": {"phase": "Pending"}})
    assert not sel.matches({"metadata": {"name": "x"}, "status": {"phase": "Running"}})
    assert parse_field_selector("spec.nodeName=", "pods").matches({"spec": {}})
    with pytest.raises(SelectorError, match="field label not supported"):
        parse_field_selector("spec.nodeName=a", "configmaps")


# --- tables -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds,text", [
    (5, "5s"), (119, "119s"), (125, "2m5s"), (600, "10m"), (3 * 3600 + 60, "3h1m"), (30 * 3600, "30h"),
    (3 * 86400 + 3600, "3d1h"), (40 * 86400, "40d"), (3 * 365 * 86400, "3y"), (-5, "<invalid>"),
])
def test_human_duration(seconds: int, text: str) -> None:
    assert tables.human_duration(seconds) == text


def test_pod_row_status_and_restarts() -> None:
    pod = {"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
           "status": {"phase": "Running", "podIP": "10.42.0.5", "containerStatuses": [
               {"name": "a", "ready": True, "restartCount": 2, "state": {"running": {}}},
               {"name": "b", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
    row = tables.rows("pods", [pod])[0]
    assert row["cells"][:4] == ["p", "1/2", "CrashLoopBackOff", "2"]
    assert row["cells"][5:7] == ["10.42.0.5", "n1"]
    assert row["object"]["kind"] == "PartialObjectMetadata"


# --- protobuf -------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _field(num: int, value: bytes | int | str) -> bytes:
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def test_protobuf_configmap_and_service() -> None:
    meta = _field(1, "cfg") + _field(11, _field(1, "app") + _field(2, "web")) + _field(8, _field(1, 0))
    raw = _field(1, meta) + _field(2, _field(1, "k") + _field(2, "v")) + _field(3, _field(1, "bin") + _field(2, b"\x00\x01"))
    body = protobuf.MAGIC + _field(1, _field(1, "v1") + _field(2, "ConfigMap")) + _field(2, raw)
    assert protobuf.decode_object(body) == {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"app": "web"}},
        "data": {"k": "v"}, "binaryData": {"bin": "AAE="}}
    port = _field(1, "http") + _field(2, "TCP") + _field(3, 80) + _field(4, _field(1, 0) + _field(2, 8080)) + _field(5, 0)
    svc = _field(1, _field(1, "s")) + _field(2, _field(1, port) + _field(4, "ClusterIP"))
    body = protobuf.MAGIC + _field(1, _field(1, "v1") + _field(2, "Service")) + _field(2, svc)
    assert protobuf.decode_object(body)["spec"] == {
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}], "type": "ClusterIP"}
    for bad in (b"nope", protobuf.MAGIC + b"\xff", protobuf.MAGIC + _field(1, _field(2, "Pod"))):
        with pytest.raises(protobuf.ProtobufError):
            protobuf.decode_object(bad)
    assert struct  # keep the import honest for fixed-width tests later


# --- registry over SQLite ---------------------------------------------------------------------------


def run_registry(tmp_path: Path, body: Any) -> Any:
    async def main() -> Any:
        async with sqlite_registry(tmp_path / "state.db") as reg:
            return await body(reg, reg.store)

    return asyncio.run(main())


def test_registry_defaults_generation_and_status(tmp_path: Path) -> None:
    async def body(reg: Registry, store: SQLiteBackend) -> None:
        pods = reg.resource("pods")
        p = await reg.create(pods, {"metadata": {"generateName": "web-"},
                                    "spec": {"containers": [{"name": "c", "image": "i:1"}]}}, namespace="default")
        name = p["metadata"]["name"]
        assert name.startswith("web-") and len(name) == 9 and p["metadata"]["generation"] == 1
        assert p["status"]["phase"] == "Pending" and p["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"

        def image(o: dict) -> dict:
            o["spec"]["containers"][0]["image"] = "i:2"
            o["status"] = {"phase": "Running"}  # ignored on the main resource
            return o

        p2 = await reg.guaranteed_update(pods, "default", name, image)
        assert p2["metadata"]["generation"] == 2 and p2["status"]["phase"] == "Pending"

        def running(o: dict) -> dict:
            o["status"]["phase"] = "Running"
            o["spec"]["containers"][0]["image"] = "ignored"
            return o

        p3 = await reg.guaranteed_update(pods, "default", name, running, subresource="status")
        assert p3["status"]["phase"] == "Running" and p3["spec"]["containers"][0]["image"] == "i:2"
        assert p3["metadata"]["generation"] == 2
        same = await reg.guaranteed_update(pods, "default", name, lambda o: o)
        assert same["metadata"]["resourceVersion"] == p3["metadata"]["resourceVersion"]  # no-op: no write
        with pytest.raises(ApiError) as err:
            await reg.update(pods, "default", name, p2)  # stale resourceVersion
        assert err.value.reason == "Conflict"

    run_registry(tmp_path, body)


def test_registry_finalizers_and_graceful_pods(tmp_path: Path) -> None:
    async def body(reg: Registry, store: SQLiteBackend) -> None:
        cms = reg.resource("configmaps")
        await reg.create(cms, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}, namespace="default")
        obj, removed = await reg.delete(cms, "default", "held")
        assert not removed and obj["metadata"]["deletionTimestamp"]

        def release(o: dict) -> dict:
            o["metadata"]["finalizers"] = []
            return o

        await reg.guaranteed_update(cms, "default", "held", release)
        with pytest.raises(ApiError) as err:
            await reg.get(cms, "default", "held")
        assert err.value.code == 404

        pods = reg.resource("pods")
        spec = {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}
        await reg.create(pods, {"metadata": {"name": "bound"}, "spec": spec}, namespace="default")
        obj, removed = await reg.delete(pods, "default", "bound", grace_period_seconds=10)
        assert not removed and obj["metadata"]["deletionGracePeriodSeconds"] == 10
        _, removed = await reg.delete(pods, "default", "bound", grace_period_seconds=0)
        assert removed
        with pytest.raises(ApiError) as err:
            await reg.delete(pods, "default", "bound")
        assert err.value.code == 404

    run_registry(tmp_path, body)


def test_registry_watch_filters_and_compaction(tmp_path: Path) -> None:
    async def body(reg: Registry, store: SQLiteBackend) -> None:
        cms = reg.resource("configmaps")
        start = await store.current_revision()
        stream = await reg.watch(cms, "default", resource_version=str(start),
                                 selection=Selection(parse_label_selector("app=x")))
        await reg.create(cms, {"metadata": {"name": "a", "labels": {"app": "y"}}}, namespace="default")

        def relabel(value: str):  # type: ignore[no-untyped-def]
            def mutate(o: dict) -> dict:
                o["metadata"]["labels"]["app"] = value
                return o
            return mutate

        await reg.guaranteed_update(cms, "default", "a", relabel("x"))  # enters the selection: ADDED
        await reg.guaranteed_update(cms, "default", "a", relabel("z"))  # leaves it: DELETED
        seen = [(await stream.next(2)).type for _ in range(2)]  # type: ignore[union-attr]
        assert seen == ["ADDED", "DELETED"]
        await stream.close()
        for i in range(5):
            await reg.create(cms, {"metadata": {"name": f"c{i}"}}, namespace="default")
        page = await reg.list(cms, "default", limit=2)
        assert page.continue_token
        await reg.create(cms, {"metadata": {"name": "later"}}, namespace="default")  # the page's revision becomes history
        await store.compact(await store.current_revision())
        old = await reg.watch(cms, "default", resource_version=str(start))
        ev = await old.next(2)
        assert ev is not None and ev.type == "ERROR" and ev.object["code"] == 410
        await old.close()
        with pytest.raises(ApiError) as err:
            await reg.list(cms, "default", limit=2, continue_token=page.continue_token)
        assert err.value.code == 410

    run_registry(tmp_path, body)


def test_events_expire_after_ttl(tmp_path: Path) -> None:
    import datetime as dt

    from edgectl.server import eventttl

    async def body(reg: Registry, store: SQLiteBackend) -> None:
        events = reg.resource("events")
        for name, last in (("old", "2026-01-01T00:00:00Z"), ("new", "2026-01-01T00:59:00Z")):
            await reg.create(events, {"metadata": {"name": name}, "involvedObject": {"kind": "Pod", "name": "p"},
                                      "reason": "R", "lastTimestamp": last}, namespace="default")
        now = dt.datetime(2026, 1, 1, 1, 30, tzinfo=dt.timezone.utc)
        assert await eventttl.expire_once(reg, ttl=3600, now=now) == 1
        assert [e["metadata"]["name"] for e in (await reg.list(events)).items] == ["new"]

    run_registry(tmp_path, body)


def test_protobuf_container_interactive_fields() -> None:
    """Container fields 16-18 (stdin, stdinOnce, tty) in a Deployment's pod template."""
    container = _field(1, "sh") + _field(3, "sh") + _field(16, 1) + _field(17, 1) + _field(18, 1)
    template = _field(2, _field(2, container))
    deploy = _field(1, _field(1, "dbg")) + _field(2, _field(3, template))
    body = protobuf.MAGIC + _field(1, _field(1, "apps/v1") + _field(2, "Deployment")) + _field(2, deploy)
    c = protobuf.decode_object(body)["spec"]["template"]["spec"]["containers"][0]
    assert (c["stdin"], c["stdinOnce"], c["tty"]) == (True, True, True)


def test_smp_merges_job_and_cronjob_pod_templates_by_key() -> None:
    """`kubectl set env job/x` and apply send strategic patches of the template's containers."""
    job = {"spec": {"template": POD}}
    out = patch.strategic_merge(job, {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "side:2"}]}}}},
                                kind="jobs")
    assert [(c["name"], c["image"]) for c in out["spec"]["template"]["spec"]["containers"]] == [("app", "app:1"), ("side", "side:2")]
    cron = {"spec": {"jobTemplate": {"spec": {"template": POD}}}}
    out = patch.strategic_merge(cron, {"spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "env": [{"name": "C", "value": "4"}]}]}}}}}}, kind="cronjobs")
    app = out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in app["env"]] == ["A", "B", "C"] and app["image"] == "app:1"
