"""The garbage collector's reconcile against a real Registry over the real
SQLite store, with its clock injected (no server process, no waiting)."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edgectl.server.controllers.garbagecollector import GarbageCollector
from edgectl.server.registry import Registry
from edgectl.server.status import ApiError
from edgectl.server.testing import sqlite_registry

Obj = dict[str, Any]


def run(tmp_path: Path, body: Callable[[Registry], Awaitable[None]]) -> None:
    async def main() -> None:
        async with sqlite_registry(tmp_path / "db" / "state.db") as reg:
            await body(reg)
    asyncio.run(main())


def pod(name: str, *, node: str | None = None, owners: list[Obj] | None = None) -> Obj:
    obj: Obj = {"metadata": {"name": name, "namespace": "default"},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    if node:
        obj["spec"]["nodeName"] = node
    if owners:
        obj["metadata"]["ownerReferences"] = owners
    return obj


def replicaset(name: str) -> Obj:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def ref(owner: Obj) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


async def exists(reg: Registry, plural: str, name: str, group: str = "") -> Obj | None:
    try:
        return await reg.get(reg.resource(plural, group), "default", name)
    except ApiError as exc:
        assert exc.code == 404
        return None


def test_background_and_orphan_propagation(tmp_path: Path) -> None:
    async def body(reg: Registry) -> None:
        rs_res, pods = reg.resource("replicasets", "apps"), reg.resource("pods")
        gc = GarbageCollector(reg)
        a = await reg.create(rs_res, replicaset("a"))
        b = await reg.create(rs_res, replicaset("b"))
        await reg.create(pods, pod("a-1", owners=[ref(a)]))
        await reg.create(pods, pod("b-1", owners=[ref(b)]))
        await reg.create(pods, pod("ab-1", owners=[ref(a), ref(b)]))
        await gc.reconcile()
        assert await exists(reg, "pods", "a-1") and await exists(reg, "pods", "ab-1")  # owners alive: nothing happens

        _, removed = await reg.delete(rs_res, "default", "a")  # Background: gone at once
        assert removed
        await gc.reconcile()
        assert await exists(reg, "pods", "a-1") is None
        shared = await exists(reg, "pods", "ab-1")  # one live owner left: only the dangling reference goes
        assert shared is not None and [r["name"] for r in shared["metadata"]["ownerReferences"]] == ["b"]

        obj, removed = await reg.delete(rs_res, "default", "b", propagation="Orphan")
        assert not removed and obj["metadata"]["finalizers"] == ["orphan"]
        await gc.reconcile()
        assert await exists(reg, "replicasets", "b", "apps") is None
        for name in ("b-1", "ab-1"):
            left = await exists(reg, "pods", name)
            assert left is not None and "ownerReferences" not in left["metadata"]

    run(tmp_path, body)


def test_foreground_waits_for_blocking_dependents(tmp_path: Path) -> None:
    async def body(reg: Registry) -> None:
        rs_res, pods = reg.resource("replicasets", "apps"), reg.resource("pods")
        gc = GarbageCollector(reg)
        owner = await reg.create(rs_res, replicaset("f"))
        await reg.create(pods, pod("f-1", owners=[ref(owner)]))
        keep = pod("f-2", owners=[ref(owner)])
        keep["metadata"]["finalizers"] = ["example.com/hold"]
        await reg.create(pods, keep)
        await reg.delete(rs_res, "default", "f", propagation="Foreground")
        await gc.reconcile()
        assert await exists(reg, "pods", "f-1") is None
        held = await exists(reg, "pods", "f-2")
        assert held is not None and held["metadata"].get("deletionTimestamp")
        await gc.reconcile()
        assert (await exists(reg, "replicasets", "f", "apps"))["metadata"]["finalizers"] == ["foregroundDeletion"]

        def release(cur: Obj) -> Obj:
            cur["metadata"]["finalizers"] = []
            return cur
        await reg.guaranteed_update(pods, "default", "f-2", release)
        await gc.reconcile()
        assert await exists(reg, "replicasets", "f", "apps") is None

    run(tmp_path, body)


def test_pods_of_a_missing_node_are_force_deleted_after_the_grace(tmp_path: Path) -> None:
    async def body(reg: Registry) -> None:
        now = [1000.0]
        gc = GarbageCollector(reg, clock=lambda: now[0], orphan_pod_grace=40.0)
        nodes, pods = reg.resource("nodes"), reg.resource("pods")
        await reg.create(nodes, {"metadata": {"name": "gone"}})
        await reg.create(nodes, {"metadata": {"name": "here"}})
        await reg.create(pods, pod("on-gone", node="gone"))
        await reg.create(pods, pod("on-here", node="here"))
        await reg.delete(pods, "default", "on-gone")  # graceful: Terminating, waiting for a kubelet
        await reg.delete(nodes, None, "gone")
        assert await gc.reconcile() == pytest.approx(40.0)
        assert await exists(reg, "pods", "on-gone") is not None
        now[0] += 41
        await gc.reconcile()
        assert await exists(reg, "pods", "on-gone") is None
        assert await exists(reg, "pods", "on-here") is not None

    run(tmp_path, body)
