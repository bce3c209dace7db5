"""configMap/secret/downwardAPI/projected volumes without namespaces: path
rules, payloads, kubelet's atomic-writer layout on a real directory, the
FailedMount event, and the NodeAuthorizer's projected-secret edge."""
from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from edgectl.agent.events import status_events
from edgectl.agent.runtime import atomicwriter
from edgectl.agent.runtime.atomicwriter import FileProjection, PayloadError, validate_path
from edgectl.agent.runtime.spec import parse_pod
from edgectl.agent.runtime.volumes import (
    StaticObjectFiles, VolumeError, fetch_files, format_map, go_quote, parse, payload, validate_sub_path,
)
from edgectl.server.auth import node_may_get_secret, pod_secret_names


def fp(data: str, mode: int = 0o644) -> FileProjection:
    return FileProjection(data=data.encode(), mode=mode)


# ---- path rules ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["a", "a/b", "a/b/c.txt", "a..b", "a/..b", ".hidden", "x/./y", "a.b"])
def test_valid_item_paths(path: str) -> None:
    validate_path(path)


@pytest.mark.parametrize("path,why", [
    ("", "must not be empty"), ("/etc/passwd", "must be a relative path"), ("..", "must not contain '..'"),
    ("a/../b", "must not contain '..'"), ("../x", "must not contain '..'"), ("..data", "must not start with '..'"),
    ("..2026_01_01/x", "must not start with '..'"), ("a/" + "x" * 256, "at most 255"),
    ("a" * 4097, "at most 4096"),
])
def test_invalid_item_paths_give_upstream_reasons(path: str, why: str) -> None:
    with pytest.raises(PayloadError, match=why):
        validate_path(path)


def test_sub_path_rules() -> None:
    validate_sub_path("a/b")
    validate_sub_path("..a")  # subPath has no reserved prefix, only backsteps
    with pytest.raises(VolumeError, match="relative"):
        validate_sub_path("/x")
    with pytest.raises(VolumeError, match=r"must not contain '\.\.'"):
        validate_sub_path("a/../../etc")


def test_clean_payload_normalises_and_refuses_file_dir_clashes() -> None:
    assert set(atomicwriter.clean_payload({"a//b/./c": fp("x")})) == {"a/b/c"}
    with pytest.raises(PayloadError, match="'a' is also a file"):
        atomicwriter.clean_payload({"a": fp("1"), "a/b": fp("2")})
    with pytest.raises(PayloadError, match="must name a file"):
        atomicwriter.clean_payload({"./": fp("1")})


def test_plan_is_pure() -> None:
    new = {"a": fp("1"), "d/e": fp("2")}
    step = atomicwriter.plan(new, current=None, old_visible=set())
    assert step.write and step.link == {"a", "d"} and not step.remove
    step = atomicwriter.plan(new, current=dict(new), old_visible={"a", "d", "gone"})
    assert not step.write and step.remove == {"gone"}
    assert atomicwriter.plan({"a": fp("1", 0o600)}, current={"a": fp("1")}, old_visible={"a"}).write  # mode counts
    assert atomicwriter.timestamped_name(0, "abc") == "..1970_01_01_00_00_00.abc"


# ---- the writer on a real directory ---------------------------------------------------------


def test_atomic_writer_layout_modes_updates_and_removals(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    assert atomicwriter.write(vol, {"app.conf": fp("v1"), "nested/deep/key": fp("n", 0o400)})
    data = os.readlink(vol / "..data")
    assert data.startswith("..") and (vol / data).is_dir() and oct((vol / data).stat().st_mode & 0o777) == "0o755"
    assert os.readlink(vol / "app.conf") == "..data/app.conf" and os.readlink(vol / "nested") == "..data/nested"
    assert (vol / "app.conf").read_text() == "v1" and (vol / "nested/deep/key").read_text() == "n"
    assert (vol / "app.conf").stat().st_mode & 0o777 == 0o644
    assert (vol / "nested/deep/key").stat().st_mode & 0o777 == 0o400
    assert not atomicwriter.write(vol, {"app.conf": fp("v1"), "nested/deep/key": fp("n", 0o400)})  # no change
    assert os.readlink(vol / "..data") == data

    assert atomicwriter.write(vol, {"app.conf": fp("v2"), "new": fp("x")})
    assert os.readlink(vol / "..data") != data and not (vol / data).exists()  # old version removed
    assert (vol / "app.conf").read_text() == "v2" and (vol / "new").read_text() == "x"
    assert not os.path.lexists(vol / "nested")  # gone from the payload: link removed
    assert sorted(os.listdir(vol)) == sorted(["..data", os.readlink(vol / "..data"), "app.conf", "new"])

    assert atomicwriter.write(vol, {})  # an empty version (optional object gone): no user-visible files
    assert sorted(n for n in os.listdir(vol) if not n.startswith("..")) == []


def test_atomic_writer_readers_never_see_a_mixed_set(tmp_path: Path) -> None:
    """Two files that always carry the same version number: a reader that goes
    through ..data once (resolving it, as a process opening both files under
    one snapshot would) never sees them disagree while the writer swaps."""
    vol = tmp_path / "vol"
    atomicwriter.write(vol, {"a": fp("0"), "b": fp("0")})
    stop = threading.Event()
    mixed: list[tuple[str, str]] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                root = vol / os.readlink(vol / "..data")
                a, b = (root / "a").read_text(), (root / "b").read_text()
            except FileNotFoundError:
                continue  # the old version was removed after we resolved it: retry
            if a != b:
                mixed.append((a, b))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, 150):
            atomicwriter.write(vol, {"a": fp(str(i)), "b": fp(str(i))})
    finally:
        stop.set()
        t.join()
    assert mixed == []
    assert (vol / "a").read_text() == (vol / "b").read_text() == "149"


def test_a_key_replaces_a_foreign_file_in_the_volume_dir(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "k").write_text("someone else's")
    atomicwriter.write(vol, {"k": fp("ours")})
    assert os.readlink(vol / "k") == "..data/k" and (vol / "k").read_text() == "ours"


# ---- parsing and payloads ----------------------------------------------------------------------


def pod_doc(volumes: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "shop", "uid": "u-1", **meta},
            "spec": {"volumes": volumes, "containers": [
                {"name": "main", "command": ["true"], "resources": {"limits": {"memory": "64Mi"}}}]}}


def files_of(volume: dict[str, Any], objects: dict[tuple[str, str], dict[str, bytes] | None] | None = None,
             **meta: Any) -> dict[str, tuple[bytes, int]]:
    spec = parse_pod(pod_doc([{"name": "v", **volume}], **meta))
    proj = parse(spec.volumes[0])
    out = payload(proj, pod=spec, objects=objects or {})
    return {k: (v.data, v.mode) for k, v in out.items()}


def test_configmap_all_keys_items_modes_and_binary_data() -> None:
    cm = {("configmap", "app"): {"a.conf": b"x=1", "logo.bin": b"\x00\xff"}}
    assert files_of({"configMap": {"name": "app"}}, cm) == {"a.conf": (b"x=1", 0o644), "logo.bin": (b"\x00\xff", 0o644)}
    assert files_of({"configMap": {"name": "app", "defaultMode": 0o600,
                                   "items": [{"key": "a.conf", "path": "etc/app.conf", "mode": 0o440},
                                             {"key": "logo.bin", "path": "logo"}]}}, cm) == {
        "etc/app.conf": (b"x=1", 0o440), "logo": (b"\x00\xff", 0o600)}


def test_missing_objects_and_keys_follow_kubelet() -> None:
    with pytest.raises(VolumeError, match='^configmap "app" not found$'):
        files_of({"configMap": {"name": "app"}}, {("configmap", "app"): None})
    assert files_of({"configMap": {"name": "app", "optional": True}}, {("configmap", "app"): None}) == {}
    with pytest.raises(VolumeError, match="^configmap references non-existent config key: nope$"):
        files_of({"configMap": {"name": "app", "items": [{"key": "nope", "path": "p"}]}}, {("configmap", "app"): {}})
    assert files_of({"configMap": {"name": "app", "optional": True, "items": [{"key": "nope", "path": "p"}]}},
                    {("configmap", "app"): {}}) == {}
    with pytest.raises(VolumeError, match='^secret "db" not found$'):
        files_of({"secret": {"secretName": "db"}}, {("secret", "db"): None})
    with pytest.raises(VolumeError, match="^secret references non-existent secret key: pw$"):
        files_of({"secret": {"secretName": "db", "items": [{"key": "pw", "path": "pw"}]}}, {("secret", "db"): {}})


def test_downward_api_fields_labels_and_resources() -> None:
    got = files_of({"downwardAPI": {"defaultMode": 0o444, "items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}, "mode": 0o400},
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
        {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
        {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
        {"path": "mem", "resourceFieldRef": {"containerName": "main", "resource": "limits.memory", "divisor": "1Mi"}},
    ]}}, labels={"tier": "front", "app": "shop"}, annotations={"note": 'say "hi"\n'})
    assert got == {
        "labels": (b'app="shop"\ntier="front"', 0o444), "annotations": (b'note="say \\"hi\\"\\n"', 0o400),
        "name": (b"web", 0o444), "ns": (b"shop", 0o444), "uid": (b"u-1", 0o444), "tier": (b"front", 0o444),
        "mem": (b"64", 0o444)}


def test_go_quote_matches_strconv_quote() -> None:
    assert go_quote('a"b\\c') == r'"a\"b\\c"'
    assert go_quote("tab\there\x01\x7f") == r'"tab\there\x01\x7f"'
    assert go_quote("grüße ☃") == '"grüße ☃"'
    assert go_quote("\u200b") == r'"\u200b"'
    assert format_map({}) == ""


def test_projected_sources_merge_in_order_and_unsupported_ones_are_named() -> None:
    objects = {("configmap", "a"): {"k": b"from-cm", "only": b"cm"}, ("secret", "s"): {"k": b"from-secret"}}
    got = files_of({"projected": {"defaultMode": 0o640, "sources": [
        {"configMap": {"name": "a"}},
        {"secret": {"name": "s"}},  # later source wins on the shared path, as upstream
        {"downwardAPI": {"items": [{"path": "pod/name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
    ]}}, objects)
    assert got == {"k": (b"from-secret", 0o640), "only": (b"cm", 0o640), "pod/name": (b"web", 0o640)}
    with pytest.raises(VolumeError, match="projected source serviceAccountToken is not supported"):
        files_of({"projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}})
    with pytest.raises(VolumeError, match="clusterTrustBundle is not supported"):
        files_of({"projected": {"sources": [{"clusterTrustBundle": {"path": "ca"}}]}})
    with pytest.raises(VolumeError, match=r'^\[configmap "a" not found, secret "s" not found\]$'):
        files_of({"projected": {"sources": [{"configMap": {"name": "a"}}, {"secret": {"name": "s"}}]}},
                 {("configmap", "a"): None, ("secret", "s"): None})


@pytest.mark.parametrize("volume,why", [
    ({"configMap": {"name": "a", "items": [{"key": "k", "path": "../../etc/x"}]}},
     r"configMap.items\[0\].path: invalid path '../../etc/x': must not contain '..'"),
    ({"configMap": {"name": "a", "items": [{"key": "k", "path": "/abs"}]}}, "must be a relative path"),
    ({"secret": {"secretName": "s", "items": [{"key": "k", "path": "..data"}]}}, "must not start with '..'"),
    ({"secret": {"secretName": "s", "items": [{"key": "k"}]}}, r"items\[0\].path: Required value"),
    ({"secret": {"secretName": "s", "items": [{"path": "p"}]}}, r"items\[0\].key: Required value"),
    ({"secret": {}}, "secret.secretName: Required value"),
    ({"configMap": {"name": "a", "defaultMode": 0o1777}}, "between 0 and 0777"),
    ({"configMap": {"name": "a", "items": [{"key": "k", "path": "p", "mode": "0644"}]}}, "between 0 and 0777"),
    ({"configMap": {"name": "a", "items": "nope"}}, "items must be a list"),
    ({"downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "spec.nodeName"}}]}},
     'Unsupported value: "spec.nodeName"'),
    ({"downwardAPI": {"items": [{"path": "n", "resourceFieldRef": {"resource": "limits.cpu"}}]}},
     "containerName: Required value"),
    ({"downwardAPI": {"items": [{"path": "n"}]}}, "exactly one of fieldRef, resourceFieldRef"),
    ({"projected": {"sources": [{}]}}, "must set exactly one source"),
])
def test_bad_volumes_are_clear_errors(volume: dict[str, Any], why: str) -> None:
    with pytest.raises(VolumeError, match=why):
        files_of(volume, {("configmap", "a"): {"k": b""}, ("secret", "s"): {"k": b""}})


def test_fetch_files_adapts_env_sources_and_static_files() -> None:
    from edgectl.agent.runtime.envsources import StaticConfigMaps

    async def go() -> tuple[Any, ...]:
        env_style = StaticConfigMaps({("ns", "a"): {"k": "v"}})
        files = StaticObjectFiles({("ns", "b"): {"bin": b"\xff"}})
        return (await fetch_files(env_style, "ns", "a"), await fetch_files(files, "ns", "b"),
                await fetch_files(files, "ns", "zz"), await fetch_files(None, "ns", "a"),
                await files.get("ns", "b"))

    assert asyncio.run(go()) == ({"k": b"v"}, {"bin": b"\xff"}, None, None, {"bin": "\udcff"})


# ---- the FailedMount event and the NodeAuthorizer edge ----------------------------------------------


def test_failed_mount_is_one_pod_event_per_message() -> None:
    msg = 'MountVolume.SetUp failed for volume "cfg" : configmap "app" not found'
    waiting = {"containerStatuses": [{"name": n, "state": {"waiting": {"reason": "ContainerCreating", "message": msg}}}
                                     for n in ("a", "b")]}
    events = status_events(None, waiting)
    assert [(e.type, e.reason, e.message, e.container) for e in events] == [("Warning", "FailedMount", msg, "")]
    assert status_events(waiting, waiting) == []


def test_projected_secret_sources_count_for_the_node_authorizer() -> None:
    pod = {"metadata": {"namespace": "default"}, "spec": {"nodeName": "n1", "volumes": [
        {"name": "p", "projected": {"sources": [{"secret": {"name": "proj"}}, {"configMap": {"name": "cm"}},
                                                {"serviceAccountToken": {"path": "t"}}, "junk", {"secret": None}]}},
        {"name": "bad", "projected": "nope"}]}}
    assert pod_secret_names(pod) == {"proj"}
    assert node_may_get_secret("n1", "default", "proj", [pod])
    assert not node_may_get_secret("n2", "default", "proj", [pod])
