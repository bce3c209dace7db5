"""DELETE must survive a concurrent write between its read and its removal
(a controller's status update right after create used to surface as 409)."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from edgectl.server.registry import Registry
from edgectl.server.status import ApiError
from edgectl.server.testing import sqlite_registry


def _racing_writes(reg: Registry, key: str, times: int) -> None:
    """Before each of the first ``times`` removals of ``key`` reaches the real
    store, another writer bumps the object's revision (a real write)."""
    store: Any = reg.store
    real_delete, left = store.delete, [times]

    async def delete(k: str, *, expected_revision: int | None = None) -> Any:
        if k == key and left[0] > 0:
            left[0] -= 1
            cur = await store.get(k)
            await store.update(k, cur.value.replace(b'"v"', b'"v2"', 1) if b'"v"' in cur.value else cur.value + b" ",
                               expected_revision=cur.mod_revision)
        return await real_delete(k, expected_revision=expected_revision)

    store.delete = delete


def test_delete_retries_when_a_write_races_the_removal(tmp_path: Path) -> None:
    async def main() -> None:
        async with sqlite_registry(tmp_path / "db" / "state.db") as reg:
            cms = reg.resource("configmaps")
            await reg.create(cms, {"metadata": {"name": "cm", "namespace": "default"}, "data": {"k": "v"}},
                             namespace="default")
            _racing_writes(reg, cms.key("default", "cm"), times=3)
            _, removed = await reg.delete(cms, "default", "cm")
            assert removed
            with pytest.raises(ApiError) as gone:
                await reg.get(cms, "default", "cm")
            assert gone.value.code == 404

    asyncio.run(main())


def test_final_delete_of_a_terminating_pod_retries_past_status_writes(tmp_path: Path) -> None:
    """The kubelet's grace-0 delete of a terminating pod races its own status updates."""
    async def main() -> None:
        async with sqlite_registry(tmp_path / "db" / "state.db") as reg:
            pods = reg.resource("pods")
            await reg.create(pods, {"metadata": {"name": "p", "namespace": "default"},
                                    "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x", "command": ["v"]}]}},
                             namespace="default")
            _, removed = await reg.delete(pods, "default", "p")  # graceful: now terminating
            assert not removed
            _racing_writes(reg, pods.key("default", "p"), times=3)
            _, removed = await reg.delete(pods, "default", "p", grace_period_seconds=0)
            assert removed
            with pytest.raises(ApiError) as gone:
                await reg.get(pods, "default", "p")
            assert gone.value.code == 404

    asyncio.run(main())
