"""Probes: the pure rules (probes.py), the request bytes and status (prober.py,
lifecycle.py), and the handlers against this process and loopback servers,
without creating namespaces. Real pods with probes are in
tests/test_runtime_pods.py."""
from __future__ import annotations

import asyncio
import os
import socket

import pytest

from edgectl.agent.runtime import lifecycle
from edgectl.agent.runtime.interface import ContainerHandle, ContainerProcess
from edgectl.agent.runtime.prober import ProbeTarget, http_request, parse_status_line, run_probe
from edgectl.agent.runtime.probes import (
    LIVENESS, READINESS, STARTUP, ProbeSpec, ProbeSpecError, ProbeState, Readiness, container_readiness,
    http_success, parse_probe, should_probe,
)
from edgectl.agent.runtime.spec import parse_pod


def test_defaults_are_upstreams() -> None:
    p = parse_probe({"tcpSocket": {"port": 80}}, kind=LIVENESS)
    assert p == ProbeSpec(handler="tcpSocket", port=80, initial_delay=0, period=10, timeout=1,
                          success_threshold=1, failure_threshold=3)
    h = parse_probe({"httpGet": {"port": "web", "path": "healthz", "httpHeaders": [{"name": "X-A", "value": "1"}]},
                     "periodSeconds": 2, "successThreshold": 2}, kind=READINESS)
    assert h is not None and (h.port, h.path, h.scheme, h.headers, h.period, h.success_threshold) == \
        ("web", "/healthz", "HTTP", (("X-A", "1"),), 2.0, 2)
    assert parse_probe({"httpGet": {"port": "8080"}}, kind=READINESS).port == 8080  # type: ignore[union-attr]
    e = parse_probe({"exec": {"command": ["true"]}, "timeoutSeconds": 5}, kind=STARTUP)
    assert e is not None and e.command == ("true",) and e.timeout == 5.0
    assert parse_probe(None, kind=LIVENESS) is None


@pytest.mark.parametrize("doc, needle", [
    ({}, "exactly one of"),
    ({"exec": {"command": ["a"]}, "tcpSocket": {"port": 1}}, "exactly one of"),
    ({"exec": {"command": []}}, "exec.command"),
    ({"tcpSocket": {}}, "port is required"),
    ({"tcpSocket": {"port": 70000}}, "1-65535"),
    ({"tcpSocket": {"port": 1}, "periodSeconds": -1}, "periodSeconds"),
    ({"tcpSocket": {"port": 1}, "successThreshold": 2}, "successThreshold must be 1"),
    ({"grpc": {"port": 1}}, "grpc"),
    ({"httpGet": {"port": 1, "scheme": "FTP"}}, "scheme"),
])
def test_bad_probes_are_refused_with_a_reason(doc: dict, needle: str) -> None:
    with pytest.raises(ProbeSpecError, match=needle):
        parse_probe(doc, kind=LIVENESS)


def test_a_bad_probe_refuses_the_container_not_the_pod() -> None:
    pod = parse_pod({"metadata": {"uid": "u", "name": "p"}, "spec": {"containers": [
        {"name": "c", "command": ["x"], "livenessProbe": {"tcpSocket": {}},
         "ports": [{"name": "web", "containerPort": 8080}]}]}})
    c = pod.containers[0]
    assert c.probes == () and any("port is required" in u for u in c.unsupported)
    assert c.port_number("web") == 8080 and c.port_number("nope") is None and c.port_number(9) == 9


def spec(**kw: object) -> ProbeSpec:
    return ProbeSpec(handler="exec", command=("true",), **kw)  # type: ignore[arg-type]


def test_initial_results_and_thresholds() -> None:
    r = ProbeState(kind=READINESS, spec=spec(success_threshold=2, failure_threshold=2))
    assert r.result is False
    assert r.observe(True) is False and r.result is False  # 1 of 2
    assert r.observe(True) is True and r.result is True
    assert r.observe(False) is False and r.result is True  # 1 of 2 failures
    assert r.observe(True) is False  # streak broken
    assert r.observe(False) is False and r.observe(False) is True and r.result is False
    live = ProbeState(kind=LIVENESS, spec=spec(failure_threshold=3))
    assert live.result is True and not live.kill
    for _ in range(2):
        live.observe(False)
    assert not live.kill
    live.observe(False)
    assert live.kill
    s = ProbeState(kind=STARTUP, spec=spec())
    assert s.result is None and not s.done
    assert s.observe(True) and s.done and not s.kill


def test_startup_gates_the_others_and_initial_delay_waits() -> None:
    st = ProbeState(kind=STARTUP, spec=spec(failure_threshold=1))
    live = ProbeState(kind=LIVENESS, spec=spec(initial_delay=5))
    assert should_probe(st, started=False, running_for=0)
    assert not should_probe(live, started=False, running_for=100)
    assert not should_probe(live, started=True, running_for=4.9)
    assert should_probe(live, started=True, running_for=5)
    st.observe(False)
    assert st.kill and not should_probe(st, started=False, running_for=1)  # killed: nothing more to do


def test_started_and_ready_from_results() -> None:
    st = ProbeState(kind=STARTUP, spec=spec())
    rd = ProbeState(kind=READINESS, spec=spec())
    both = {STARTUP: st, READINESS: rd}
    assert container_readiness(both, running=True) == Readiness(started=False, ready=False)
    rd.observe(True)
    assert container_readiness(both, running=True) == Readiness(started=False, ready=False)  # startup gates
    st.observe(True)
    assert container_readiness(both, running=True) == Readiness(started=True, ready=True)
    assert container_readiness(both, running=False) == Readiness(started=False, ready=False)
    assert container_readiness({}, running=True) == Readiness(started=True, ready=True)


def test_http_request_and_status() -> None:
    p = ProbeSpec(handler="httpGet", port=80, path="/h?x=1", headers=(("host", "svc"), ("X-Y", "z")))
    req = http_request(p, "10.42.0.5", 80).decode()
    lines = req.split("\r\n")
    assert lines[0] == "GET /h?x=1 HTTP/1.1" and req.endswith("\r\n\r\n")
    assert "host: svc" in lines and "X-Y: z" in lines and "Host: 10.42.0.5:80" not in lines
    assert "User-Agent: kube-probe/1.31" in lines and "Connection: close" in lines
    assert "Host: [fd00::5]:8080" in http_request(ProbeSpec(handler="httpGet", port=1), "fd00::5", 8080).decode()
    assert parse_status_line(b"HTTP/1.0 302 Found\r\n") == 302 and parse_status_line(b"SSH-2.0\r\n") is None
    assert [http_success(c) for c in (199, 200, 399, 400, 500)] == [False, True, True, False, False]


def test_status_uses_probe_readiness_for_ready_and_conditions() -> None:
    pod = parse_pod({"metadata": {"uid": "u", "name": "p"}, "spec": {"containers": [
        {"name": "a", "command": ["x"]}, {"name": "b", "command": ["y"]}]}})
    recs = {n: lifecycle.ContainerRecord(name=n) for n in ("a", "b")}
    for n in recs:
        lifecycle.record_start(recs[n], ContainerHandle(id=n, name=n, restart_count=0, pid=1, started_at=1.0,
                                                        log_path="", data={}))
    st = lifecycle.pod_status(pod, recs, runtime="process", ips=(), sandbox_ready=True, start_time=1.0,
                              readiness={"b": Readiness(started=True, ready=False)})
    ready = {c["type"]: c["status"] for c in st["conditions"]}
    assert st["phase"] == "Running" and ready["Ready"] == ready["ContainersReady"] == "False"
    assert [(c["ready"], c["started"]) for c in st["containerStatuses"]] == [(True, True), (False, True)]
    st = lifecycle.pod_status(pod, recs, runtime="process", ips=(), sandbox_ready=True, start_time=1.0,
                              readiness={"b": Readiness(started=True, ready=True)})
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"


# ---- handlers against real processes and sockets (no namespaces changed) -------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="nsenter needs root")


def target(*, env: dict[str, str] | None = None, ports: list[dict] | None = None) -> ProbeTarget:
    """This test process as the 'container': nsenter into our own namespaces
    changes nothing, and sockets dial 127.0.0.1 in our own netns."""
    pod = parse_pod({"metadata": {"uid": "u", "name": "p"}, "spec": {"containers": [
        {"name": "c", "command": ["x"], "ports": ports or []}]}})
    proc = ContainerProcess(pod_uid="u", container="c", container_id="process://x", pid=os.getpid(),
                            env=env or {"PATH": "/usr/bin:/bin"}, working_dir="/")
    return ProbeTarget(pod_ip="127.0.0.1", netns_path="", container=pod.containers[0], process=proc)


@needs_root
def test_exec_handler_exit_codes_timeout_and_a_container_path_without_nsenter() -> None:
    async def main() -> None:
        ok = await run_probe(ProbeSpec(handler="exec", command=("/usr/bin/true",)), target(env={"PATH": "/opt/none"}))
        assert ok.ok, ok.message
        bad = await run_probe(ProbeSpec(handler="exec", command=("sh", "-c", "echo nope; exit 3")), target())
        assert not bad.ok and "exited 3" in bad.message and "nope" in bad.message
        t0 = asyncio.get_running_loop().time()
        slow = await run_probe(ProbeSpec(handler="exec", command=("sleep", "5"), timeout=1), target())
        assert not slow.ok and "time" in slow.message
        assert asyncio.get_running_loop().time() - t0 < 3

    asyncio.run(main())


def test_tcp_and_http_handlers_against_loopback_servers() -> None:
    async def main() -> None:
        seen: list[bytes] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head)
            code = b"200 OK" if head.startswith(b"GET /ok ") else b"500 Oops"
            writer.write(b"HTTP/1.1 " + code + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tgt = target(ports=[{"name": "web", "containerPort": port}])
        good = await run_probe(ProbeSpec(handler="httpGet", port="web", path="/ok",
                                         headers=(("X-Probe", "yes"),)), tgt)
        assert good.ok, good.message
        assert b"X-Probe: yes" in seen[0] and f"Host: 127.0.0.1:{port}".encode() in seen[0]
        fail = await run_probe(ProbeSpec(handler="httpGet", port=port, path="/boom"), tgt)
        assert not fail.ok and "500" in fail.message
        unnamed = await run_probe(ProbeSpec(handler="httpGet", port="nope"), tgt)
        assert not unnamed.ok and "no container port named" in unnamed.message
        assert (await run_probe(ProbeSpec(handler="tcpSocket", port=port), tgt)).ok
        server.close()
        await server.wait_closed()
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        refused = await run_probe(ProbeSpec(handler="tcpSocket", port=free), tgt)
        assert not refused.ok and "dial tcp 127.0.0.1" in refused.message
        # A server that accepts but never answers: bounded by timeoutSeconds.
        with socket.socket() as mute:
            mute.bind(("127.0.0.1", 0))
            mute.listen()
            hung = await run_probe(ProbeSpec(handler="httpGet", port=mute.getsockname()[1], timeout=1), tgt)
            assert not hung.ok and "timeout" in hung.message

    asyncio.run(main())
