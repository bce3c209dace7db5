"""The agent's pure parts (config parsing, Node/Lease builders, pod-sync
decisions) and its control path (join, register, lease, restart) against a
real `edgectl server --disable-agent` on loopback.

The control-path tests run the agent with ``run_pods=False``: they only speak
HTTPS to 127.0.0.1 and program nothing, so they are safe in the root
namespace. Pods, CNI and the kubelet API are covered in test_agent_lab.py.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgectl.agent import lease as leasemod
from edgectl.agent import node as nodeapi
from edgectl.agent.client import ApiClient, ApiError, StaticEndpoint
from edgectl.agent.config import (
    AgentConfig, check_server_url, parse_ips, parse_label, parse_size, parse_taint,
)
from edgectl.agent.main import Agent
from edgectl.agent.podsync import finished_terminating
from edgectl.errors import ConfigError, EdgectlError

EDGECTL = str(Path(sys.executable).parent / "edgectl")

FACTS = nodeapi.MachineFacts(cpus=2, memory_kib=4_000_000, kernel="6.1.0", os_image="Debian GNU/Linux 12 (bookworm)",
                             arch="amd64", machine_id="m1", boot_id="b1")


def config(**kw: object) -> AgentConfig:
    base: dict[str, object] = dict(server="https://127.0.0.1:6443", token="t", node_name="n1", node_ips=("10.0.0.5",))
    base.update(kw)
    return AgentConfig(**base)  # type: ignore[arg-type]


# ---- flag parsing --------------------------------------------------------------------


def test_labels_and_taints_parse_like_upstream() -> None:
    assert parse_label("zone=edge-1") == ("zone", "edge-1")
    assert parse_label("example.com/tier=") == ("example.com/tier", "")
    assert parse_taint("dedicated=edge:NoSchedule") == {"key": "dedicated", "value": "edge", "effect": "NoSchedule"}
    assert parse_taint("gpu:NoExecute") == {"key": "gpu", "effect": "NoExecute"}


@pytest.mark.parametrize("bad, message", [
    ("zone", "expected key=value"),
    ("bad key=x", "key name"),
    ("Example.COM/x=y", "key prefix"),
    ("k=" + "v" * 64, "value must be"),
])
def test_bad_labels_are_clear_errors(bad: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_label(bad)


@pytest.mark.parametrize("bad, message", [("gpu", "expected key"), ("gpu:Sometimes", "effect must be"),
                                          ("=x:NoSchedule", "=x:NoSchedule.*key name")])
def test_bad_taints_are_clear_errors(bad: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_taint(bad)


def test_ips_sizes_and_server_urls() -> None:
    assert parse_ips(["10.0.0.1,10.0.0.2", "fd00::1"], flag="--node-ip") == ("10.0.0.1", "10.0.0.2", "fd00::1")
    with pytest.raises(ConfigError, match="not an IP address"):
        parse_ips(["10.0.0.300"], flag="--node-ip")
    assert parse_size("10Mi", flag="x") == 10 * 1024 * 1024 and parse_size("500k", flag="x") == 500_000
    with pytest.raises(ConfigError, match="not a size"):
        parse_size("lots", flag="--container-log-max-size")
    assert check_server_url("https://s:6443/") == "https://s:6443"
    for bad in ("http://s:6443", "s:6443", "https://:6443", "https://s:99999"):
        with pytest.raises(ConfigError):
            check_server_url(bad)


@pytest.mark.parametrize("args, message", [
    (["--server", "http://x:6443", "--token", "K10"], "expected https://HOST:PORT"),
    (["--server", "https://x:6443", "--token", "abc"], "token must start with 'K10'"),
    (["--server", "https://x:6443"], "a join token is required"),
    (["--server", "https://x:6443", "--token", "K10" + "a" * 64 + "::server:s", "--node-taint", "x:Bad"], "effect must be"),
    (["--server", "https://x:6443", "--token", "K10" + "a" * 64 + "::server:s", "--node-name", "Bad_Name"], "invalid node name"),
])
def test_cli_bad_input_is_one_line_without_traceback(args: list[str], message: str, tmp_path: Path) -> None:
    res = subprocess.run([EDGECTL, "agent", "--data-dir", str(tmp_path), *args], capture_output=True, text=True,
                         timeout=30, env={"EDGECTL_CONFIG": "/dev/null", "PATH": "/usr/bin:/bin"})
    assert res.returncode != 0
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_config_yaml_keys_are_the_flag_names(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server: https://x:6443\ntoken: nope\nnode-label: [zone=a]\n")
    res = subprocess.run([EDGECTL, "agent", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "token must start with 'K10'" in res.stderr  # the file's token was read
    cfg.write_text("server: https://x:6443\nnode-lable: [zone=a]\n")
    res = subprocess.run([EDGECTL, "agent", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "unknown key 'node-lable'" in res.stderr


# ---- builders ------------------------------------------------------------------------------


def test_node_object_has_addresses_labels_taints_and_capacity() -> None:
    cfg = config(node_external_ips=("203.0.113.7",), labels={"zone": "a", "kubernetes.io/os": "linux"},
                 taints=({"key": "edge", "effect": "NoSchedule"},), control_plane=True)
    obj = nodeapi.node_object(cfg, FACTS, now="2026-01-01T00:00:00Z")
    labels = obj["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == "n1" and labels["kubernetes.io/arch"] == "amd64"
    assert labels["zone"] == "a" and labels["node-role.kubernetes.io/control-plane"] == "true"
    assert obj["spec"]["taints"] == [{"key": "edge", "effect": "NoSchedule"}]
    status = obj["status"]
    assert status["addresses"] == [{"type": "InternalIP", "address": "10.0.0.5"},
                                   {"type": "ExternalIP", "address": "203.0.113.7"},
                                   {"type": "Hostname", "address": "n1"}]
    assert status["capacity"] == {"cpu": "2", "memory": "4000000Ki", "pods": "110", "ephemeral-storage": "0"}
    ready = nodeapi.condition(obj, "Ready")
    assert ready is not None and ready["status"] == "False"  # Ready only once pods can run
    assert status["nodeInfo"]["osImage"].startswith("Debian") and status["nodeInfo"]["operatingSystem"] == "linux"
    assert "node-role.kubernetes.io/control-plane" not in nodeapi.node_labels(config(), FACTS)


def test_label_patch_touches_only_our_changed_labels() -> None:
    stored = {"metadata": {"labels": {"zone": "old", "kubernetes.io/os": "linux", "theirs": "x"}}}
    assert nodeapi.label_patch(stored, {"zone": "new", "kubernetes.io/os": "linux"}) == {"zone": "new"}


def test_lease_body_new_and_renewed() -> None:
    new = leasemod.lease_body("n1", now="T1", node_uid="u1")
    assert new["metadata"]["namespace"] == "kube-node-lease" and new["spec"]["renewTime"] == "T1"
    assert new["metadata"]["ownerReferences"][0]["uid"] == "u1"
    renewed = leasemod.lease_body("n1", now="T2", existing={**new, "metadata": {**new["metadata"], "resourceVersion": "7"}})
    assert renewed["spec"]["renewTime"] == "T2" and renewed["spec"]["acquireTime"] == "T1"
    assert renewed["metadata"]["resourceVersion"] == "7"  # a stale renewal is a 409, not a blind write
    assert leasemod.micro_time().endswith("Z") and "." in leasemod.micro_time()


def test_deletion_is_confirmed_only_when_nothing_runs() -> None:
    deleting = {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}
    running = {"containerStatuses": [{"state": {"running": {}}}]}
    stopped = {"containerStatuses": [{"state": {"terminated": {"exitCode": 0}}}]}
    assert not finished_terminating(deleting, running)
    assert finished_terminating(deleting, stopped) and finished_terminating(deleting, None)
    assert not finished_terminating({"metadata": {}}, stopped)


def test_status_changes_become_kubelet_events() -> None:
    from edgectl.agent.events import event_object, status_events

    waiting = {"containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}}]}
    running = {"containerStatuses": [{"name": "c", "containerID": "process://1", "state": {"running": {}}}]}
    crashed = {"containerStatuses": [{"name": "c", "containerID": "process://1",
                                      "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
    again = {"containerStatuses": [{"name": "c", "containerID": "process://2", "state": {"running": {}}}]}
    bad = {"containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "CreateContainerConfigError",
                                                                     "message": "no command"}}}]}
    assert status_events(None, waiting) == []
    assert [e.reason for e in status_events(waiting, running)] == ["Started"]
    assert status_events(running, running) == []  # nothing changed, nothing said
    assert [(e.type, e.reason) for e in status_events(running, crashed)] == [("Warning", "BackOff")]
    assert [e.reason for e in status_events(crashed, again)] == ["Started"]
    (failed,) = status_events(None, bad)
    assert (failed.type, failed.reason, failed.message) == ("Warning", "Failed", "no command")
    pod = {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "ns", "uid": "u"}}
    ev = event_object(involved=pod, spec=status_events(waiting, running)[0], node="n1", now="2026-01-01T00:00:00.000001Z")
    assert ev["involvedObject"] == {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u", "namespace": "ns",
                                    "fieldPath": "spec.containers{c}"}
    assert ev["metadata"]["namespace"] == "ns" and ev["source"] == {"component": "kubelet", "host": "n1"}
    assert ev["lastTimestamp"] == "2026-01-01T00:00:00Z" and ev["count"] == 1


# ---- control path against a real server ----------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from edgectl.server.testing import ServerProcess

    with ServerProcess(tmp_path_factory.mktemp("agent-srv")) as srv:
        yield srv


def _token(srv: object) -> str:
    return (srv.data_dir / "token").read_text().strip()  # type: ignore[attr-defined]


async def _run_agent(cfg: AgentConfig, body: object) -> object:
    agent = Agent(cfg)
    try:
        await asyncio.wait_for(agent.start(), 20)
        return await body(agent)  # type: ignore[operator]
    finally:
        await agent.stop()


def test_join_register_lease_and_restart_keep_identity(server: object, tmp_path: Path) -> None:
    cfg = config(server=server.url, token=_token(server), node_name="unit-a", data_dir=tmp_path,  # type: ignore[attr-defined]
                 run_pods=False, labels={"zone": "lab"}, taints=({"key": "edge", "effect": "NoSchedule"},),
                 lease_seconds=0.2)

    async def first(agent: Agent) -> tuple[dict, dict]:
        assert agent.client is not None and agent.lease is not None
        renewals = agent.lease.renewals
        await asyncio.sleep(0.7)
        assert agent.lease.renewals >= renewals + 2  # renews on its period
        node = await agent.client.get("/api/v1/nodes/unit-a")
        lease = await agent.client.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/unit-a")
        return node, lease

    node, lease = asyncio.run(_run_agent(cfg, first))  # type: ignore[misc]
    assert nodeapi.condition(node, "Ready")["status"] == "True"
    assert node["metadata"]["labels"]["zone"] == "lab"
    assert node["spec"]["taints"] == [{"key": "edge", "effect": "NoSchedule"}] and node["spec"]["podCIDR"]
    assert lease["spec"]["holderIdentity"] == "unit-a"
    password = (tmp_path / "node-password").read_text()

    async def second(agent: Agent) -> dict:
        assert agent.client is not None
        return await agent.client.get("/api/v1/nodes/unit-a")

    again = asyncio.run(_run_agent(cfg, second))  # type: ignore[misc]
    assert again["metadata"]["uid"] == node["metadata"]["uid"]  # same Node, adopted
    assert again["spec"]["podCIDR"] == node["spec"]["podCIDR"]
    assert (tmp_path / "node-password").read_text() == password


def test_agent_puts_ready_back_when_the_node_shows_otherwise(server: object, tmp_path: Path) -> None:
    """Whatever set Ready to something else (here an admin; the lifecycle controller
    undoes only its own NodeStatusUnknown), a healthy agent posts Ready=True again."""
    cfg = config(server=server.url, token=_token(server), node_name="unit-e", data_dir=tmp_path, run_pods=False,  # type: ignore[attr-defined]
                 status_check_seconds=0.2)

    async def body(agent: Agent) -> str:
        unknown = {"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "SomethingElse",
                                              "message": "set by the test"}]}}
        code, _ = await asyncio.to_thread(server.json, "PATCH", "/api/v1/nodes/unit-e/status", unknown,  # type: ignore[attr-defined]
                                          headers={"Content-Type": "application/strategic-merge-patch+json"})
        assert code == 200
        assert agent.client is not None
        for _ in range(50):
            await asyncio.sleep(0.1)
            node = await agent.client.get("/api/v1/nodes/unit-e")
            if nodeapi.condition(node, "Ready")["status"] == "True":
                return "True"
        return str(nodeapi.condition(node, "Ready"))

    assert asyncio.run(_run_agent(cfg, body)) == "True"  # type: ignore[misc]


def test_certificate_renewal_keeps_the_node_working(server: object, tmp_path: Path) -> None:
    cfg = config(server=server.url, token=_token(server), node_name="unit-f", data_dir=tmp_path, run_pods=False)  # type: ignore[attr-defined]

    async def body(agent: Agent) -> tuple[bytes, bytes, str]:
        assert agent.joined is not None and agent.client is not None
        before = agent.joined.client_cert.read_bytes()
        assert not agent.joined.renewal_due()
        await agent.renew_certificates()
        after = agent.joined.client_cert.read_bytes()
        agent.client._idle.clear()  # force a new TLS connection with the new certificate
        node = await agent.client.get("/api/v1/nodes/unit-f")
        return before, after, node["metadata"]["name"]

    before, after, name = asyncio.run(_run_agent(cfg, body))  # type: ignore[misc]
    assert before != after and name == "unit-f"


def test_another_machine_cannot_take_over_a_node_name(server: object, tmp_path: Path) -> None:
    a = config(server=server.url, token=_token(server), node_name="unit-b", data_dir=tmp_path / "a", run_pods=False)  # type: ignore[attr-defined]

    async def noop(agent: Agent) -> None:
        return None

    asyncio.run(_run_agent(a, noop))  # type: ignore[misc]
    b = config(server=server.url, token=_token(server), node_name="unit-b", data_dir=tmp_path / "b", run_pods=False)  # type: ignore[attr-defined]
    with pytest.raises(EdgectlError, match="403|password"):
        asyncio.run(_run_agent(b, noop))  # type: ignore[misc]


def test_wrong_token_fails_fast_with_a_clear_error(server: object, tmp_path: Path) -> None:
    token = _token(server)
    bad = token[: token.rindex(":") + 1] + "wrong-secret"
    cfg = config(server=server.url, token=bad, node_name="unit-c", data_dir=tmp_path, run_pods=False)  # type: ignore[attr-defined]
    with pytest.raises(EdgectlError, match="rejected the join token"):
        asyncio.run(asyncio.wait_for(Agent(cfg).start(), 10))


def test_client_errors_carry_the_status(server: object, tmp_path: Path) -> None:
    cfg = config(server=server.url, token=_token(server), node_name="unit-d", data_dir=tmp_path, run_pods=False)  # type: ignore[attr-defined]

    async def body(agent: Agent) -> None:
        assert agent.client is not None
        with pytest.raises(ApiError) as err:
            await agent.client.get("/api/v1/namespaces/default/pods/nope")
        assert err.value.code == 404 and err.value.reason == "NotFound"
        with pytest.raises(ApiError) as err:  # NodeRestriction: another node's object
            await agent.client.patch("/api/v1/nodes/unit-a", {"metadata": {"labels": {"x": "y"}}})
        assert err.value.code == 403
        # A watch delivers events in order and hands back resourceVersions.
        listed = await agent.client.list("/api/v1/nodes")
        events = agent.client.watch("/api/v1/nodes", resource_version=listed["metadata"]["resourceVersion"],
                                    fieldSelector="metadata.name=unit-d")
        await agent.client.patch("/api/v1/nodes/unit-d", {"metadata": {"labels": {"w": "1"}}})
        kind, obj = await asyncio.wait_for(events.__anext__(), 5)
        assert kind == "MODIFIED" and obj["metadata"]["labels"]["w"] == "1"
        await events.aclose()

    asyncio.run(_run_agent(cfg, body))  # type: ignore[misc]


def test_configmaps_for_env_are_read_with_the_node_identity(server: object, tmp_path: Path) -> None:
    from edgectl.agent.configmaps import ApiConfigMaps

    status, _ = server.json("POST", "/api/v1/namespaces/default/configmaps", {  # type: ignore[attr-defined]
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unit-env"}, "data": {"LEVEL": "debug"}})
    assert status == 201
    # A node reads only ConfigMaps its bound pods reference (NodeAuthorizer).
    status, _ = server.json("POST", "/api/v1/namespaces/default/configmaps", {  # type: ignore[attr-defined]
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unit-unrelated"}, "data": {"A": "b"}})
    assert status == 201
    status, _ = server.json("POST", "/api/v1/namespaces/default/pods", {  # type: ignore[attr-defined]
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unit-cm-user"},
        "spec": {"nodeName": "unit-cm", "containers": [{"name": "c", "image": "busybox", "envFrom": [
            {"configMapRef": {"name": "unit-env"}}, {"configMapRef": {"name": "no-such-cm", "optional": True}}]}]}})
    assert status == 201
    cfg = config(server=server.url, token=_token(server), node_name="unit-cm", data_dir=tmp_path, run_pods=False)  # type: ignore[attr-defined]

    async def body(agent: Agent) -> None:
        from edgectl.agent.runtime.envsources import ConfigMapLookupError

        assert agent.client is not None
        source = ApiConfigMaps(agent.client)
        assert await source.get("default", "unit-env") == {"LEVEL": "debug"}
        assert await source.get("default", "no-such-cm") is None  # 404 is "not found", not an error
        with pytest.raises(ConfigMapLookupError, match="reading configmap default/unit-unrelated: 403"):
            await source.get("default", "unit-unrelated")

    asyncio.run(_run_agent(cfg, body))  # type: ignore[misc]


def test_static_endpoint_is_the_one_server_seam() -> None:
    assert StaticEndpoint("https://10.0.0.1:6443").address() == ("10.0.0.1", 6443, "10.0.0.1")
    assert json.dumps(ApiClient(endpoint=StaticEndpoint("https://h:1"), ssl_context=__import__("ssl").create_default_context()).endpoint.address())


def test_secret_values_are_base64_decoded_and_bad_data_is_a_clear_error() -> None:
    from edgectl.agent.configmaps import _decode
    from edgectl.agent.runtime.envsources import ConfigMapLookupError

    assert _decode("secret d/s", "k", "czNjcmV0") == "s3cret"
    raw = _decode("secret d/s", "k", "/w==")  # one byte 0xff: not UTF-8, kept for the process env
    assert __import__("os").fsencode(raw) == b"\xff"
    with pytest.raises(ConfigMapLookupError, match=r"reading secret d/s: data\['k'\] is not base64"):
        _decode("secret d/s", "k", "not base64!")
