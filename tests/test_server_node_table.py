"""``kubectl get nodes`` STATUS column, as upstream's printer writes it:
Ready only for Ready=True, NotReady for any other Ready status (False or the
lifecycle controller's Unknown), Unknown only without a Ready condition, and
``,SchedulingDisabled`` appended for a cordoned node."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgectl.server import tables
from edgectl.server.testing import ServerProcess, kubectl_path

VERSIONS = ["1.27", "1.33"]
# node name -> (Ready status or None for no condition, cordoned, expected STATUS)
CASES = {
    "tbl-ready": ("True", False, "Ready"),
    "tbl-false": ("False", False, "NotReady"),
    "tbl-unknown": ("Unknown", False, "NotReady"),
    "tbl-nocond": (None, False, "Unknown"),
    "tbl-cordoned": ("True", True, "Ready,SchedulingDisabled"),
    "tbl-lost-cordoned": ("Unknown", True, "NotReady,SchedulingDisabled"),
}


def _status(ready: str | None) -> dict[str, object]:
    if ready is None:
        return {"addresses": [{"type": "InternalIP", "address": "198.18.0.20"}]}
    return {"conditions": [{"type": "MemoryPressure", "status": "False"},
                           {"type": "Ready", "status": ready, "reason": "Test", "message": "set by the test",
                            "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_node_status_cell(name: str) -> None:
    ready, cordoned, want = CASES[name]
    node = {"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"unschedulable": True} if cordoned else {}, "status": _status(ready)}
    doc = tables.table("nodes", [node], resource_version="1")
    assert doc["rows"][0]["cells"][1] == want


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not kubectl_path("1.33").exists():
        pytest.skip("kubectl binaries not installed")
    server = ServerProcess(tmp_path_factory.mktemp("node-table"))
    try:
        server.start()
        for name, (ready, cordoned, _) in CASES.items():
            assert server.json("POST", "/api/v1/nodes", {"metadata": {"name": name}})[0] == 201
            code, body = server.json("PATCH", f"/api/v1/nodes/{name}/status", {"status": _status(ready)},
                                     headers={"Content-Type": "application/strategic-merge-patch+json"})
            assert code == 200, body
            if cordoned:  # the real cordon path: kubectl patches spec.unschedulable
                server.kubectl("1.33", "cordon", name)
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("v", VERSIONS)
def test_kubectl_get_nodes_status(srv: ServerProcess, v: str) -> None:
    out = srv.kubectl(v, "get", "nodes", "--no-headers").stdout
    got = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}
    assert got == {name: want for name, (_, _, want) in CASES.items()}, out
    # The column stays right when kubectl asks for one node and for wide output.
    wide = srv.kubectl(v, "get", "node", "tbl-lost-cordoned", "-o", "wide", "--no-headers").stdout.split()
    assert wide[:2] == ["tbl-lost-cordoned", "NotReady,SchedulingDisabled"]
