"""Manifest auto-deploy: parsing and discovery without I/O on the API, then
scans against a real Registry over the real SQLite store."""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from edgectl.server.manifests import ANNOTATION, ManifestDeployer, ManifestError, discover, merged, parse_manifest
from edgectl.server.registry import Registry
from edgectl.server.status import ApiError
from edgectl.server.testing import sqlite_registry

NS_AND_CM = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: edge-system}
data: {mode: fast}
---
apiVersion: v1
kind: Namespace
metadata: {name: edge-system}
---
"""


def test_parse_multi_document_yaml_namespaces_first() -> None:
    objs = parse_manifest(NS_AND_CM.encode(), name="a.yaml")
    assert [o["kind"] for o in objs] == ["Namespace", "ConfigMap"]


def test_parse_list_and_json() -> None:
    doc = b'{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}]}'
    assert [o["metadata"]["name"] for o in parse_manifest(doc, name="l.json")] == ["a"]


@pytest.mark.parametrize("text,name,message", [
    ("kind: ConfigMap\nmetadata: {name: [x\n", "bad.yaml", "bad.yaml: invalid YAML at line 3"),
    ("- just\n- a list\n", "list.yaml", "document 1 is a list, not an object"),
    ("apiVersion: v1\nmetadata: {name: x}\n", "nokind.yaml", "has no apiVersion/kind"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "noname.yaml", "ConfigMap in document 1 has no metadata.name"),
    ('{"apiVersion": "v1",', "bad.json", "bad.json: invalid JSON at line 1"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: off}\n", "yes.yaml", "metadata.name False is not a string; quote it"),
])
def test_parse_errors_name_the_problem(text: str, name: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("{", r"\{")):
        parse_manifest(text.encode(), name=name)
    with pytest.raises(ManifestError, match="not UTF-8"):
        parse_manifest(b"\xff\xfe", name="bin.yaml")


def test_discover_skips_dotfiles_skip_markers_and_other_files(tmp_path: Path) -> None:
    for rel in ("a.yaml", "b.yml", "c.json", "d.txt", ".hidden.yaml", ".git/x.yaml", "sub/e.yaml", "f.yaml", "f.yaml.skip"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{}")
    assert [str(p.relative_to(tmp_path)) for p in discover(tmp_path)] == ["a.yaml", "b.yml", "c.json", "sub/e.yaml"]
    assert discover(tmp_path / "missing") == []


def test_merged_overlays_fields_and_merges_labels() -> None:
    live = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"keep": "1", "x": "old"}},
            "data": {"k": "v"}, "status": {"s": 1}}
    want = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"x": "new"}},
            "data": {"k": "v2"}, "status": {"s": 2}}
    out = merged(live, want)
    assert out is not None and out["metadata"]["labels"] == {"keep": "1", "x": "new"}
    assert out["data"] == {"k": "v2"} and out["status"] == {"s": 1}
    assert merged(out, want) is None


def with_registry(tmp_path: Path, body: Callable[[Registry, Path], Awaitable[None]]) -> None:
    async def main() -> None:
        async with sqlite_registry(tmp_path / "db" / "state.db") as reg:
            mdir = tmp_path / "manifests"
            mdir.mkdir()
            await asyncio.wait_for(body(reg, mdir), 60)

    asyncio.run(main())


SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: edge-system}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"""


def test_apply_at_start_then_on_change_with_prune(tmp_path: Path) -> None:
    async def body(reg: Registry, mdir: Path) -> None:
        cms, svcs = reg.resource("configmaps"), reg.resource("services")
        (mdir / "edge.yaml").write_text(NS_AND_CM + SERVICE)
        d = ManifestDeployer(reg, mdir)
        r = await d.scan_once()
        assert r.applied == ["edge.yaml"] and not r.failed
        cm = await reg.get(cms, "edge-system", "settings")
        assert cm["data"] == {"mode": "fast"} and cm["metadata"]["annotations"][ANNOTATION] == "edge.yaml"
        svc = await reg.get(svcs, "edge-system", "web")
        rv = cm["metadata"]["resourceVersion"]
        # no change: nothing rewritten, even after a touch with the same content
        os.utime(mdir / "edge.yaml", ns=(1, 1))
        r = await d.scan_once()
        assert r.unchanged == ["edge.yaml"]
        assert (await reg.get(cms, "edge-system", "settings"))["metadata"]["resourceVersion"] == rv
        # change the data and drop the Service: applied again, the Service pruned
        (mdir / "edge.yaml").write_text(NS_AND_CM.replace("fast", "slow"))
        r = await d.scan_once()
        assert r.applied == ["edge.yaml"]
        assert (await reg.get(cms, "edge-system", "settings"))["data"] == {"mode": "slow"}
        with pytest.raises(ApiError) as err:
            await reg.get(svcs, "edge-system", "web")
        assert err.value.code == 404
        assert svc["spec"]["clusterIP"]  # it had been a real, defaulted Service

    with_registry(tmp_path, body)


def test_bad_files_are_logged_and_never_stop_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body(reg: Registry, mdir: Path) -> None:
        (mdir / "a-broken.yaml").write_text("kind: [\n")
        (mdir / "b-unknown.yaml").write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n")
        (mdir / "c-invalid.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Not_Valid}\n")
        (mdir / "d-good.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: good}\ndata: {a: b}\n")
        (mdir / "e-off.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: disabled}\n")
        (mdir / "e-off.yaml.skip").write_text("")
        d = ManifestDeployer(reg, mdir)
        with caplog.at_level(logging.INFO, logger="edgectl.server.manifests"):
            r = await d.scan_once()
        assert r.applied == ["d-good.yaml"]
        assert r.failed == ["a-broken.yaml", "b-unknown.yaml", "c-invalid.yaml"]
        # the reasons travel as structured fields (edgectl.log.fields)
        text = "\n".join(f"{r.getMessage()} {getattr(r, 'edgectl_fields', {})}" for r in caplog.records)
        assert "a-broken.yaml: invalid YAML at line" in text
        assert "unknown kind Widget" in text
        assert "c-invalid.yaml" in text and "Not_Valid" in text
        await reg.get(reg.resource("configmaps"), "default", "good")
        with pytest.raises(ApiError):
            await reg.get(reg.resource("configmaps"), "default", "disabled")  # skipped
        # a fixed file is applied on the next scan; removing .skip enables the other
        (mdir / "c-invalid.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: now-valid}\n")
        (mdir / "e-off.yaml.skip").unlink()
        r = await d.scan_once()
        assert r.applied == ["c-invalid.yaml", "e-off.yaml"], (r, text, [getattr(x, "edgectl_fields", {}) for x in caplog.records])
        await reg.get(reg.resource("configmaps"), "default", "now-valid")
        await reg.get(reg.resource("configmaps"), "default", "disabled")

    with_registry(tmp_path, body)


def test_failed_object_is_retried_when_its_cause_goes_away(tmp_path: Path) -> None:
    async def body(reg: Registry, mdir: Path) -> None:
        # the namespace is missing at first: a transient failure, retried every scan
        (mdir / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: later}\n")
        d = ManifestDeployer(reg, mdir)
        assert (await d.scan_once()).failed == ["cm.yaml"]
        await reg.create(reg.resource("namespaces"), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "later"}})
        assert (await d.scan_once()).applied == ["cm.yaml"]
        await reg.get(reg.resource("configmaps"), "later", "x")

    with_registry(tmp_path, body)
