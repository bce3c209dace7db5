"""QA: hostile requests to a real `edgectl server` get a Status with the right
code, store nothing, and leave no ERROR or traceback in the server log."""
from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgectl.server.testing import ServerProcess, kubectl_path

CMS = "/api/v1/namespaces/default/configmaps"
SVCS = "/api/v1/namespaces/default/services"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("qa-api"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
    log = server.log_path.read_text()
    # Every case above is a user error: none may reach the log as a failure.
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def names(srv: ServerProcess, path: str) -> set[str]:
    code, body = srv.json("GET", path)
    assert code == 200, body
    return {o["metadata"]["name"] for o in body["items"]}


def post(srv: ServerProcess, path: str, body: bytes, ctype: str) -> tuple[int, dict]:
    code, payload = srv.json("POST", path, body, headers={"Content-Type": ctype})
    assert isinstance(payload, dict), payload
    return code, payload


def laughs(levels: int) -> str:
    lines = []
    prev = None
    for c in "abcdefghij"[:levels]:
        items = ", ".join([f"*{prev}"] * 9) if prev else ", ".join(['"lol"'] * 9)
        lines.append(f"      {c}: &{c} [{items}]")
        prev = c
    return ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: laughs\n  managedFields:\n  - manager: x\n"
            "    fieldsV1:\n" + "\n".join(lines) + "\n")


DEEP_JSON = ('{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"deep"},"x":'
             + "[" * 100000 + "]" * 100000 + "}").encode()
BAD_SHAPES = [
    # RecursionError in json.loads / the YAML composer used to be a 500 InternalError.
    pytest.param(DEEP_JSON, "application/json", "nested too deeply", id="json-100k-deep"),
    pytest.param(b"x: " + b"[" * 5000 + b"]" * 5000, "application/yaml", "nested too deeply", id="yaml-5k-deep"),
    # Deep enough to decode, too deep for everything recursive after it.
    pytest.param(('{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"d"},"x":' + "[" * 900 + "]" * 900 + "}").encode(),
                 "application/json", "nested more than 128 levels", id="json-900-deep"),
    # `&a [*a]` decodes to a list containing itself.
    pytest.param(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: rec}\nextra: &a [*a]\n", "application/yaml",
                 "refers to itself", id="yaml-recursive-alias"),
    # ~2 KB of YAML expanding to 9^8 values.
    pytest.param(laughs(8).encode(), "application/yaml", "expands to more than", id="yaml-alias-bomb"),
]


@pytest.mark.parametrize("body, ctype, fragment", BAD_SHAPES)
def test_hostile_body_shapes_are_400(srv: ServerProcess, body: bytes, ctype: str, fragment: str) -> None:
    before = names(srv, CMS)
    code, st = post(srv, CMS, body, ctype)
    assert (code, st["kind"], st["reason"], st["code"]) == (400, "Status", "BadRequest", 400), st
    assert fragment in st["message"]
    assert names(srv, CMS) == before


def test_normal_yaml_with_aliases_still_works(srv: ServerProcess) -> None:
    body = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: anchors, labels: &l {app: x}, annotations: *l}\ndata: {k: v}\n"
    code, obj = post(srv, CMS, body, "application/yaml")
    assert code == 201, obj
    assert obj["metadata"]["annotations"] == {"app": "x"}


def svc(name: str, **spec: object) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"port": 80}], **spec}}


def test_service_ips_and_node_ports_must_be_allocatable(srv: ServerProcess) -> None:
    """A clusterIP outside --service-cidr, or one already used, was stored as given
    (unroutable / two Services on one IP); the same for nodePorts."""
    before = names(srv, SVCS)
    cases = [
        (svc("out-of-range", clusterIP="192.168.1.1"), "spec.clusterIPs",
         "is not in the valid range. The range of valid IPs is 10.43.0.0/16"),
        (svc("taken", clusterIP="10.43.0.1"), "spec.clusterIPs", "provided IP is already allocated"),
        (svc("low-port", type="NodePort", ports=[{"port": 80, "nodePort": 80}]), "spec.ports[0].nodePort",
         "The range of valid ports is 30000-32767"),
    ]
    for body, field, fragment in cases:
        code, st = srv.json("POST", SVCS, body)
        assert (code, st["reason"]) == (422, "Invalid"), st
        assert st["details"]["causes"][0]["field"] == field and fragment in st["message"], st
    assert names(srv, SVCS) == before

    code, first = srv.json("POST", SVCS, svc("np1", type="NodePort", clusterIP="10.43.77.7",
                                              ports=[{"port": 80, "nodePort": 30777}]))
    assert code == 201, first
    code, st = srv.json("POST", SVCS, svc("np2", type="NodePort", ports=[{"port": 80, "nodePort": 30777}]))
    assert (code, st["reason"]) == (422, "Invalid") and "provided port is already allocated" in st["message"], st
    code, st = srv.json("POST", SVCS, svc("ip2", clusterIP="10.43.77.7"))
    assert code == 422 and "already allocated" in st["message"], st
    # Updating the Service that owns them keeps its own IP and port.
    first["spec"]["ports"][0]["port"] = 81
    code, upd = srv.json("PUT", f"{SVCS}/np1", first)
    assert code == 200, upd
    assert upd["spec"]["clusterIP"] == "10.43.77.7" and upd["spec"]["ports"][0]["nodePort"] == 30777
    assert names(srv, SVCS) == before | {"np1"}


def test_kubectl_apply_service_out_of_range(srv: ServerProcess, tmp_path: Path) -> None:
    if not kubectl_path("1.33").exists():
        pytest.skip("kubectl 1.33 not installed")
    f = tmp_path / "svc.yaml"
    f.write_text(json.dumps(svc("kubectl-bad", clusterIP="172.16.0.9")))
    out = srv.kubectl("1.33", "apply", "-f", str(f), check=False)
    assert out.returncode == 1
    assert "is not in the valid range" in out.stderr and "Traceback" not in out.stderr


def test_head_requests_answer_headers_and_keep_the_connection(srv: ServerProcess) -> None:
    """HEAD made h11 raise 'Too much data for declared Content-Length' in the
    connection task: an ERROR in the log and a dropped keep-alive connection."""
    srv.request("GET", "/healthz")  # make sure the kept-alive connection exists
    conn = srv._conn
    assert conn is not None
    for path in ("/api/v1/pods", "/healthz", "/api/v1/pods?watch=1&timeoutSeconds=1"):
        conn.request("HEAD", path)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b""
    code, _, _ = srv.request("GET", "/healthz")  # same connection, still usable
    assert code == 200 and srv._conn is conn


def test_oversized_request_head_is_a_clear_431(srv: ServerProcess) -> None:
    conn = http.client.HTTPSConnection(srv.host, srv.port, context=srv._ctx, timeout=10)
    try:
        # Many header lines arrive over several reads, so h11's limit always applies.
        conn.putrequest("GET", "/api/v1/pods")
        for i in range(3000):
            conn.putheader(f"X-Filler-{i}", "v" * 40)
        conn.endheaders()
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 431 and body["kind"] == "Status" and body["code"] == 431
    assert re.search(r"request line and headers are larger than the 64 KiB limit", body["message"]), body


def node_context(srv: ServerProcess, node: str, tmp_path: Path) -> "ssl.SSLContext":
    import ssl

    from edgectl.server.pki import ClusterPKI

    certs = ClusterPKI.load(srv.data_dir / "tls", ensure=False).issue_node_certs(node, node_ips=["127.0.0.1"])
    (tmp_path / "n.crt").write_bytes(certs.client_cert)
    (tmp_path / "n.key").write_bytes(certs.client_key)
    ctx = ssl.create_default_context(cadata=certs.server_ca.decode())
    ctx.load_cert_chain(tmp_path / "n.crt", tmp_path / "n.key")
    return ctx


def test_tunnel_endpoints_answer_status_objects(srv: ServerProcess, tmp_path: Path) -> None:
    """The tunnel package answers in plain text; on the API port they were plain
    text too ('only GET is supported'), which kubectl and clients cannot parse."""
    code, st = srv.json("POST", "/v1-edge/tunnels")
    assert (code, st["kind"], st["reason"]) == (405, "Status", "MethodNotAllowed"), st
    conn = http.client.HTTPSConnection(srv.host, srv.port, context=node_context(srv, "qa-node", tmp_path), timeout=10)
    try:
        conn.request("GET", "/v1-edge/connect")  # a node identity, but no websocket upgrade
        resp = conn.getresponse()
        st = json.loads(resp.read())
    finally:
        conn.close()
    assert (resp.status, st["kind"], st["reason"]) == (400, "Status", "BadRequest"), st
    assert "expected a websocket upgrade" in st["message"]


def test_tunnel_garbage_from_a_node_ends_only_that_session(srv: ServerProcess, tmp_path: Path) -> None:
    import struct

    from websockets.exceptions import ConnectionClosedError
    from websockets.sync.client import connect

    url = f"wss://{srv.host}:{srv.port}/v1-edge/connect"
    ctx = node_context(srv, "qa-garbage", tmp_path)
    frame = struct.pack(">BBII", 3, 0, 1, 0xFFFFFFFF)  # DATA of 4 GiB, and no HELLO first
    for payload in (b"\x98" * 64, frame, "text"):
        with connect(url, ssl=ctx, open_timeout=5, close_timeout=2, compression=None) as ws:
            ws.send(payload)
            with pytest.raises(ConnectionClosedError) as info:
                while True:
                    ws.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1002  # protocol error
    code, _, _ = srv.request("GET", "/readyz", fresh=True)
    assert code == 200


def test_refused_join_does_not_claim_the_node_name(srv: ServerProcess) -> None:
    """A join with a bad Edgectl-Node-IP was refused only after the node password
    was stored, so the name stayed claimed by a machine that never joined."""
    import base64

    secret = (srv.data_dir / "token").read_text().strip().rsplit(":", 1)[1]
    auth = "Basic " + base64.b64encode(f"node:{secret}".encode()).decode()
    headers = {"Authorization": auth, "Edgectl-Node-Name": "qa-claim", "Edgectl-Node-Password": "first"}
    code, st = srv.json("POST", "/v1-edge/node-certs", b"", headers={**headers, "Edgectl-Node-IP": "10.0.0.1,notip"},
                        anonymous=True)
    assert (code, st["kind"], st["reason"]) == (400, "Status", "BadRequest"), st
    assert "invalid node IP 'notip'" in st["message"]
    assert "qa-claim.node-password.edgectl" not in names(srv, "/api/v1/namespaces/kube-system/secrets")
    # Another machine (another password) can still take the name.
    code, body = srv.json("POST", "/v1-edge/node-certs", b"", headers={**headers, "Edgectl-Node-Password": "second",
                                                                       "Edgectl-Node-IP": "10.0.0.1"}, anonymous=True)
    assert code == 200, body


@pytest.mark.parametrize("quantity", ["lots", "1Gb", "", "-1", True])
def test_pod_resource_quantities_are_validated(srv: ServerProcess, quantity: object) -> None:
    """`resources.limits.cpu: lots` used to be stored as given."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "qa-quantity"},
           "spec": {"containers": [{"name": "c", "image": "busybox",
                                    "resources": {"limits": {"cpu": quantity}, "requests": {"memory": "64Mi"}}}]}}
    code, st = srv.json("POST", "/api/v1/namespaces/default/pods", pod)
    assert (code, st["reason"]) == (422, "Invalid"), st
    assert st["details"]["causes"][0]["field"] == "spec.containers[0].resources.limits[cpu]"
    assert "qa-quantity" not in names(srv, "/api/v1/namespaces/default/pods")


def test_pod_resource_quantities_that_are_fine(srv: ServerProcess) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "qa-quantity-ok"},
           "spec": {"containers": [{"name": "c", "image": "busybox",
                                    "resources": {"limits": {"cpu": "1.5", "memory": "1Gi"},
                                                  "requests": {"cpu": 0.25, "memory": "64e6", "ephemeral-storage": "1G"}}}]}}
    code, obj = srv.json("POST", "/api/v1/namespaces/default/pods", pod)
    assert code == 201, obj


PODS = "/api/v1/namespaces/default/pods"


def bound_pod(name: str, **spec: object) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "qa-no-such-node", "containers": [{"name": "c", "image": "busybox"}], **spec}}


def test_out_of_range_numbers_are_400_not_500(srv: ServerProcess) -> None:
    # ?limit= beyond int64 overflowed SQLite; a body number beyond int64 overflowed later.
    code, st = srv.json("GET", f"{CMS}?limit=99999999999999999999999")
    assert (code, st["reason"]) == (400, "BadRequest") and "out of range" in st["message"], st
    code, st = srv.json("POST", CMS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "qa-big"},
                                      "data": {}, "x": 10**30})
    assert (code, st["reason"]) == (400, "BadRequest") and "does not fit in a 64-bit integer" in st["message"], st
    code, st = srv.json("POST", PODS, bound_pod("qa-deadline", activeDeadlineSeconds=-5))
    assert (code, st["reason"]) == (422, "Invalid") and "spec.activeDeadlineSeconds" in st["message"], st


def test_huge_grace_periods_do_not_make_a_pod_undeletable(srv: ServerProcess) -> None:
    """A bound pod with terminationGracePeriodSeconds 2^62 (or a DELETE with that
    gracePeriodSeconds) made every delete a 500 (datetime overflow): the pod could
    never be removed."""
    for name, spec, query in (("qa-grace1", {"terminationGracePeriodSeconds": 2**62}, ""),
                              ("qa-grace2", {}, f"?gracePeriodSeconds={2**62}")):
        code, _ = srv.json("POST", PODS, bound_pod(name, **spec))
        assert code == 201
        code, obj = srv.json("DELETE", f"{PODS}/{name}{query}")
        assert code == 200, obj
        assert obj["metadata"]["deletionTimestamp"] and obj["metadata"]["deletionGracePeriodSeconds"] == 2**31 - 1
        code, _ = srv.json("DELETE", f"{PODS}/{name}?gracePeriodSeconds=0")  # force: gone at once
        assert code == 200
        assert name not in names(srv, PODS)


EVENTS = "/api/v1/namespaces/default/events"


@pytest.mark.parametrize("fields, fragment", [
    ({"count": "abc"}, "count: expected an integer, got string"),
    ({"count": 1.5}, "count: expected an integer, got number"),
    ({"involvedObject": "pod/x"}, "involvedObject: expected an object, got string"),
    ({"reason": 5}, "reason: expected a string, got number"),
    ({"count": float("inf")}, "inf is not a valid JSON number"),
])
def test_wrongly_typed_events_are_400_and_kubectl_get_events_keeps_working(
        srv: ServerProcess, fields: dict, fragment: str) -> None:
    """An Event with count "abc" (or Infinity) was stored; from then on every
    `kubectl get events` in the namespace was a 500."""
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "qa-event"},
             "involvedObject": {"kind": "Pod", "name": "x"}, "reason": "R", "count": 1, **fields}
    body = json.dumps(event, allow_nan=True).encode()
    code, st = srv.json("POST", EVENTS, body, headers={"Content-Type": "application/json"})
    assert (code, st["reason"]) == (400, "BadRequest"), st
    assert fragment in st["message"]
    code, table = srv.json("GET", EVENTS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert code == 200, table


def test_a_normal_event_still_works(srv: ServerProcess) -> None:
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "qa-ok-event"},
             "involvedObject": {"kind": "Pod", "name": "x", "namespace": "default", "fieldPath": "spec.containers{c}"},
             "reason": "Started", "message": "m", "type": "Normal", "count": 2,
             "source": {"component": "kubelet", "host": "n1"}, "firstTimestamp": "2026-01-01T00:00:00Z",
             "lastTimestamp": "2026-01-01T00:00:00Z", "eventTime": None}
    code, obj = srv.json("POST", EVENTS, event)
    assert code == 201, obj


@pytest.mark.parametrize("status_patch, fragment", [
    ({"containerStatuses": [{"name": "c", "restartCount": "abc", "ready": True}]},
     "status.containerStatuses[0].restartCount: expected an integer, got string"),
    ({"containerStatuses": [{"name": "c", "ready": "yes"}]}, "ready: expected a boolean, got string"),
    ({"containerStatuses": [{"name": "c", "state": {"waiting": "x"}}]}, "state.waiting: expected an object"),
    ({"phase": 5}, "status.phase: expected a string, got number"),
])
def test_wrongly_typed_pod_status_is_400_and_the_pod_list_survives(
        srv: ServerProcess, status_patch: dict, fragment: str) -> None:
    """A status write with restartCount "abc" was stored; every `kubectl get pods`
    in the namespace was a 500 from then on."""
    name = "qa-status"
    if name not in names(srv, PODS):
        assert srv.json("POST", PODS, bound_pod(name))[0] == 201
    code, st = srv.json("PATCH", f"{PODS}/{name}/status", json.dumps({"status": status_patch}).encode(),
                        headers={"Content-Type": "application/merge-patch+json"})
    assert (code, st["reason"]) == (400, "BadRequest"), st
    assert fragment in st["message"]
    code, table = srv.json("GET", PODS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert code == 200, table


def test_legacy_invalid_resources_do_not_block_updates(srv: ServerProcess) -> None:
    """Validation added later ratchets: an unchanged old value passes on update."""
    from edgectl.server.validation import validate_pod

    old = bound_pod("legacy")
    old["spec"]["restartPolicy"] = "Always"
    old["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "lots"}}
    new = json.loads(json.dumps(old))
    new["metadata"]["labels"] = {"a": "b"}
    assert validate_pod(new, old) == []
    new["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "more"
    assert [c.field for c in validate_pod(new, old)] == ["spec.containers[0].resources.limits[cpu]"]


@pytest.mark.parametrize("spec, field", [
    ({"container": {"env": [{"name": "A=B", "value": "x"}]}}, "spec.containers[0].env[0].name"),
    ({"container": {"env": [{"name": "", "value": "x"}]}}, "spec.containers[0].env[0].name"),
    ({"container": {"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}}, "spec.containers[0].volumeMounts[0].name"),
    ({"dnsPolicy": "Bogus"}, "spec.dnsPolicy"),
    ({"hostname": "Bad_Host!"}, "spec.hostname"),
])
def test_pod_specs_the_node_cannot_run_are_422(srv: ServerProcess, spec: dict, field: str) -> None:
    """These were stored and failed only on the node (StartError / config error)."""
    body = bound_pod("qa-spec")
    body["spec"]["containers"][0].update(spec.pop("container", {}))
    body["spec"].update(spec)
    code, st = srv.json("POST", PODS, body)
    assert (code, st["reason"]) == (422, "Invalid"), st
    assert field in [c["field"] for c in st["details"]["causes"]], st
    assert "qa-spec" not in names(srv, PODS)


def test_one_malformed_stored_object_does_not_break_the_table() -> None:
    """Objects stored before the type checks (or with fields they do not cover)
    made every Table listing of their kind a 500; their row now degrades."""
    from edgectl.server import tables

    good = {"metadata": {"name": "ok", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}}
    bad = {"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "c"}]},
           "status": {"containerStatuses": [{"name": "c", "restartCount": "abc", "state": {"waiting": "x"}}]}}
    out = tables.rows("pods", [good, bad])
    assert out[0]["cells"][0] == "ok" and out[0]["cells"][2] == "Running"
    assert out[1]["cells"][0] == "bad" and set(out[1]["cells"][1:]) == {"<invalid>"}
    assert len(out[1]["cells"]) == len(tables.column_definitions("pods"))
    ev = tables.rows("events", [{"metadata": {"name": "e"}, "count": "x", "involvedObject": "y"}])
    assert ev[0]["cells"][-1] == "e" and ev[0]["cells"][0] == "<invalid>"  # Name is the last event column
