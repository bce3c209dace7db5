"""A node reads only the ConfigMaps its pods reference (upstream's NodeAuthorizer),
over real HTTPS with a real node client certificate against ``edgectl server``.

The pure rule is also checked without I/O: every reference kind, the
fieldSelector-pinned list/watch, and that Secret and ConfigMap edges never mix.
"""
from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from edgectl.server.auth import (
    NODES, RequestAttributes, UserInfo, authorize, node_may_get, pod_configmap_names, pod_secret_names,
    request_attributes,
)
from edgectl.server.testing import ServerProcess

NS = "default"
NODE = "cmnode-a"
OTHER_NODE = "cmnode-b"
CMS = f"/api/v1/namespaces/{NS}/configmaps"
PODS = f"/api/v1/namespaces/{NS}/pods"

# One pod per way of referencing a ConfigMap; the ConfigMap is named after the way.
REFERENCES: dict[str, dict[str, Any]] = {
    "env": {"containers": [{"name": "c", "image": "busybox", "env": [
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}}]}]},
    "envfrom": {"containers": [{"name": "c", "image": "busybox"}],
                "initContainers": [{"name": "i", "image": "busybox", "envFrom": [{"configMapRef": {"name": "cm-envfrom"}}]}]},
    "volume": {"containers": [{"name": "c", "image": "busybox"}],
               "volumes": [{"name": "v", "configMap": {"name": "cm-volume"}}]},
    "projected": {"containers": [{"name": "c", "image": "busybox"}],
                  "volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "s"}},
                                                                     {"configMap": {"name": "cm-projected"}}]}}]},
}


# ---- the pure rule ---------------------------------------------------------------------


def node_user(node: str) -> UserInfo:
    return UserInfo(f"system:node:{node}", (NODES, "system:authenticated"))


def attrs(verb: str, name: str = "", *, ns: str = NS, query: dict[str, str] | None = None) -> RequestAttributes:
    path = f"/api/v1/namespaces/{ns}/configmaps" + (f"/{name}" if name else "")
    return request_attributes(node_user(NODE), "GET", path, {**(query or {}), **({"watch": "1"} if verb == "watch" else {})})


def bound(node: str | None, kind: str) -> dict[str, Any]:
    spec = dict(REFERENCES[kind])
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": f"p-{kind}", "namespace": NS}, "spec": spec}


def test_every_reference_kind_is_an_edge_and_secrets_do_not_mix() -> None:
    pod = {"spec": {
        "containers": REFERENCES["env"]["containers"], "initContainers": REFERENCES["envfrom"]["initContainers"],
        "volumes": REFERENCES["volume"]["volumes"] + REFERENCES["projected"]["volumes"],
        "ephemeralContainers": [{"name": "e", "envFrom": [{"configMapRef": {"name": "cm-eph"}}, {"secretRef": {"name": "s2"}}]}]}}
    assert pod_configmap_names(pod) == {"cm-env", "cm-envfrom", "cm-volume", "cm-projected", "cm-eph"}
    assert pod_secret_names(pod) == {"s", "s2"}
    assert node_may_get(NODE, NS, "configmaps", "cm-volume", [bound(NODE, "volume")])
    assert not node_may_get(NODE, NS, "secrets", "cm-volume", [bound(NODE, "volume")])
    assert not node_may_get(NODE, NS, "configmaps", "s", [bound(NODE, "projected")])
    assert pod_configmap_names({"spec": {"volumes": [{"configMap": "junk"}, None], "containers": {"x": 1}}}) == set()


@pytest.mark.parametrize("kind", sorted(REFERENCES))
def test_get_and_pinned_list_watch_follow_the_reference(kind: str) -> None:
    name = f"cm-{kind}"
    pinned = {"fieldSelector": f"metadata.name={name}"}
    for a in (attrs("get", name), attrs("list", query=pinned), attrs("watch", query=pinned)):
        assert a.name == name
        assert authorize(a, pods=[bound(NODE, kind)]).allowed
        assert not authorize(a, pods=[bound(OTHER_NODE, kind)]).allowed
        assert not authorize(a, pods=[bound(None, kind)]).allowed
        assert not authorize(a, pods=[]).allowed


def test_unpinned_or_cross_namespace_reads_are_denied_early() -> None:
    pods = [bound(NODE, "volume")]
    for a in (attrs("list"), attrs("watch"), attrs("list", query={"fieldSelector": "metadata.name!=cm-volume"}),
              request_attributes(node_user(NODE), "GET", "/api/v1/configmaps", {"fieldSelector": "metadata.name=cm-volume"})):
        decision = authorize(a, pods=pods)
        assert not decision.allowed and "may only get individual configmaps" in decision.reason
        assert not authorize(a).allowed  # the early check already refuses


# ---- over the API ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("nodecm"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def node_ctx(srv: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    from edgectl.server.pki import ClusterPKI

    d = tmp_path_factory.mktemp("nodecm-certs")
    certs = ClusterPKI.load(srv.data_dir / "tls", ensure=False).issue_node_certs(NODE, node_ips=["127.0.0.1"])
    (d / "n.crt").write_bytes(certs.client_cert)
    (d / "n.key").write_bytes(certs.client_key)
    ctx = ssl.create_default_context(cadata=certs.server_ca.decode())
    ctx.load_cert_chain(d / "n.crt", d / "n.key")
    return ctx


def as_node(srv: ServerProcess, ctx: ssl.SSLContext, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPSConnection(srv.host, srv.port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    return resp.status, json.loads(body) if body else None


def create(srv: ServerProcess, path: str, obj: dict[str, Any]) -> None:
    code, body = srv.json("POST", path, obj)
    assert code == 201, body


def assert_forbidden(code: int, body: Any, what: str) -> None:
    assert code == 403, body
    assert body["kind"] == "Status" and body["reason"] == "Forbidden", body
    assert body["message"].startswith(f'{what} is forbidden: User "system:node:{NODE}" cannot'), body


@pytest.fixture(scope="module")
def objects(srv: ServerProcess) -> None:
    for kind, spec in REFERENCES.items():
        create(srv, CMS, {"metadata": {"name": f"cm-{kind}"}, "data": {"k": kind}})
        create(srv, PODS, {"metadata": {"name": f"p-{kind}"}, "spec": {"nodeName": NODE, **spec}})
    create(srv, CMS, {"metadata": {"name": "cm-unrelated"}, "data": {"k": "secret-ish"}})
    # Referenced, but only by a pod on another node.
    create(srv, CMS, {"metadata": {"name": "cm-elsewhere"}, "data": {"k": "x"}})
    create(srv, PODS, {"metadata": {"name": "p-elsewhere"}, "spec": {"nodeName": OTHER_NODE, "containers": [
        {"name": "c", "image": "busybox", "envFrom": [{"configMapRef": {"name": "cm-elsewhere"}}]}]}})


@pytest.mark.parametrize("kind", sorted(REFERENCES))
def test_node_gets_configmaps_its_pods_reference(srv: ServerProcess, node_ctx: ssl.SSLContext, objects: None,
                                                 kind: str) -> None:
    code, cm = as_node(srv, node_ctx, f"{CMS}/cm-{kind}")
    assert code == 200, cm
    assert cm["data"] == {"k": kind}
    # The kubelet-style single-object list and watch (fieldSelector metadata.name).
    selector = quote(f"metadata.name=cm-{kind}")
    code, listed = as_node(srv, node_ctx, f"{CMS}?fieldSelector={selector}")
    assert code == 200, listed
    assert [i["metadata"]["name"] for i in listed["items"]] == [f"cm-{kind}"]
    code, events = as_node_watch(srv, node_ctx, f"{CMS}?watch=1&timeoutSeconds=1&fieldSelector={selector}")
    assert code == 200
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", f"cm-{kind}")]


def as_node_watch(srv: ServerProcess, ctx: ssl.SSLContext, path: str) -> tuple[int, list[dict[str, Any]]]:
    conn = http.client.HTTPSConnection(srv.host, srv.port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()  # timeoutSeconds=1 ends the stream
    finally:
        conn.close()
    if resp.status != 200:
        return resp.status, [json.loads(body)]
    return resp.status, [json.loads(line) for line in body.splitlines() if line.strip()]


def test_node_cannot_read_unrelated_configmaps(srv: ServerProcess, node_ctx: ssl.SSLContext, objects: None) -> None:
    for name in ("cm-unrelated", "cm-elsewhere", "does-not-exist"):
        code, st = as_node(srv, node_ctx, f"{CMS}/{name}")
        assert_forbidden(code, st, f'configmaps "{name}"')
        assert f"no relationship found between node '{NODE}' and this object" in st["message"], st
        assert st["details"] == {"name": name, "kind": "configmaps"}, st
    # kube-system holds nothing a node needs to read (join settings come from /v1-edge/config).
    code, st = as_node(srv, node_ctx, "/api/v1/namespaces/kube-system/configmaps/cm-volume")
    assert_forbidden(code, st, 'configmaps "cm-volume"')
    code, st = as_node(srv, node_ctx, f"{CMS}?fieldSelector=metadata.name%3Dcm-unrelated")
    assert_forbidden(code, st, 'configmaps "cm-unrelated"')


def test_node_cannot_list_or_watch_all_configmaps(srv: ServerProcess, node_ctx: ssl.SSLContext, objects: None) -> None:
    for path in (CMS, "/api/v1/configmaps", f"{CMS}?watch=1&timeoutSeconds=1", "/api/v1/watch/configmaps",
                 f"{CMS}?labelSelector=a%3Db", "/api/v1/configmaps?fieldSelector=metadata.name%3Dcm-volume"):
        code, st = as_node(srv, node_ctx, path)
        assert_forbidden(code, st, 'configmaps "cm-volume"' if "metadata.name" in path else "configmaps")
        assert "may only get individual configmaps its pods reference" in st["message"], (path, st)


def test_access_ends_when_the_pod_is_deleted(srv: ServerProcess, node_ctx: ssl.SSLContext, objects: None) -> None:
    create(srv, CMS, {"metadata": {"name": "cm-shortlived"}, "data": {"k": "v"}})
    create(srv, PODS, {"metadata": {"name": "p-shortlived"}, "spec": {"nodeName": NODE, "containers": [
        {"name": "c", "image": "busybox"}], "volumes": [{"name": "v", "configMap": {"name": "cm-shortlived"}}]}})
    assert as_node(srv, node_ctx, f"{CMS}/cm-shortlived")[0] == 200
    code, body = srv.json("DELETE", f"{PODS}/p-shortlived?gracePeriodSeconds=0")
    assert code == 200, body
    deadline_left = 50
    while srv.json("GET", f"{PODS}/p-shortlived")[0] != 404 and deadline_left:  # graceful delete settles
        deadline_left -= 1
        time.sleep(0.1)
    code, st = as_node(srv, node_ctx, f"{CMS}/cm-shortlived")
    assert_forbidden(code, st, 'configmaps "cm-shortlived"')


def test_node_still_cannot_write_configmaps(srv: ServerProcess, node_ctx: ssl.SSLContext, objects: None) -> None:
    conn = http.client.HTTPSConnection(srv.host, srv.port, context=node_ctx, timeout=10)
    try:
        conn.request("PUT", f"{CMS}/cm-volume", body=json.dumps({"metadata": {"name": "cm-volume"}, "data": {}}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        st = json.loads(resp.read())
    finally:
        conn.close()
    assert_forbidden(resp.status, st, 'configmaps "cm-volume"')
    assert srv.json("GET", f"{CMS}/cm-volume")[1]["data"] == {"k": "volume"}
