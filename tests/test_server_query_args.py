"""Query parameters are parsed as upstream does: booleans as Go's ParseBool,
resourceVersionMatch from its fixed set; anything else is a 400 Status."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgectl.server.testing import ServerProcess

CMS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("query"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("query, fragment", [
    ("watch=maybe", "watch: 'maybe' is not a boolean"),
    ("allowWatchBookmarks=yes&watch=1&timeoutSeconds=1", "allowWatchBookmarks: 'yes' is not a boolean"),
    ("resourceVersionMatch=Bogus&resourceVersion=1", 'Unsupported value: "Bogus"'),
    ("resourceVersionMatch=Exact", "unless resourceVersion is provided"),
])
def test_bad_query_values_are_400(srv: ServerProcess, query: str, fragment: str) -> None:
    code, body = srv.json("GET", f"{CMS}?{query}")
    assert code == 400, body
    assert body["kind"] == "Status" and body["reason"] == "BadRequest"
    assert fragment in body["message"]


@pytest.mark.parametrize("query", ["watch=false", "watch=0", "watch=F", "resourceVersionMatch=NotOlderThan&resourceVersion=0"])
def test_valid_spellings_list(srv: ServerProcess, query: str) -> None:
    code, body = srv.json("GET", f"{CMS}?{query}")
    assert code == 200, body
    assert body["kind"] == "ConfigMapList"


def test_watch_true_spellings_watch(srv: ServerProcess) -> None:
    code, _, raw = srv.request("GET", f"{CMS}?watch=True&timeoutSeconds=1", fresh=True)
    assert code == 200
    assert b"ConfigMapList" not in raw
