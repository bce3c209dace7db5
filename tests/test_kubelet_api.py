"""The kubelet API end to end over real TLS sockets: client-cert enforcement,
exec (websocket v5/v4 and SPDY v2-v5, pipes and a real pty with resize) into
a real process in throwaway namespaces, port-forward (SPDY and
websocket-wrapped SPDY) into its netns, /pods and /containerLogs."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgectl.agent.kubelet import client as kc
from edgectl.agent.kubelet.server import KubeletConfig, KubeletServer
from edgectl.agent.kubelet.testing import StaticPods, container_namespace
from edgectl.agent.streams import channels as ch
from edgectl.agent.streams.spdy_frames import make_headers
from edgectl.server.pki import issue  # tests may use server code; agent code never does

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")

POD_PORT = 18080
HOSTNAME = "kltest-pod"


# --- certificates -------------------------------------------------------------

class Certs:
    def __init__(self, root: Path) -> None:
        now = issue.now_utc()
        self.root = root
        self.server_ca = issue.new_ca("test-server-ca", now=now)
        self.client_ca = issue.new_ca("test-client-ca", now=now)
        self.other_ca = issue.new_ca("other-ca", now=now)
        self.serving = issue.issue_leaf(self.server_ca, common_name="node-a", usage="server",
                                        dns_names=["localhost"], ips=["127.0.0.1"], now=now)
        self.apiserver = issue.issue_leaf(self.client_ca, common_name="system:kube-apiserver-kubelet-client",
                                          organizations=["system:masters"], usage="client", now=now)
        self.node = issue.issue_leaf(self.client_ca, common_name="system:node:node-b",
                                     organizations=["system:nodes"], usage="client", now=now)
        self.foreign = issue.issue_leaf(self.other_ca, common_name="system:kube-apiserver-kubelet-client",
                                        organizations=["system:masters"], usage="client", now=now)
        for name, ck in (("serving", self.serving), ("apiserver", self.apiserver), ("node", self.node), ("foreign", self.foreign)):
            (root / f"{name}.crt").write_bytes(ck.cert_pem)
            (root / f"{name}.key").write_bytes(ck.key_pem)
        (root / "client-ca.crt").write_bytes(self.client_ca.cert_pem)
        (root / "server-ca.crt").write_bytes(self.server_ca.cert_pem)

    def client_context(self, who: str | None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(self.root / "server-ca.crt"))
        if who:
            ctx.load_cert_chain(str(self.root / f"{who}.crt"), str(self.root / f"{who}.key"))
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("kubelet-certs"))


# --- a container: a real process in new pid/mount/uts/net namespaces ---------------

@pytest.fixture(scope="module")
def container() -> Iterator[int]:
    """Host PID of the container's PID 1 (a web server on 127.0.0.1:POD_PORT in its own netns)."""
    with container_namespace(hostname=HOSTNAME, http_port=POD_PORT) as pid:
        yield pid


class Kubelet:
    def __init__(self, server: KubeletServer, certs: Certs, pods: StaticPods) -> None:
        self.server, self.certs, self.pods = server, certs, pods
        assert server.address is not None
        self.host, self.port = server.address

    async def connect(self, who: str | None = "apiserver") -> Any:
        return await kc.open_connection(self.host, self.port, ssl_context=self.certs.client_context(who))

    async def get(self, target: str, who: str | None = "apiserver") -> tuple[int, bytes]:
        raw = await self.connect(who)
        try:
            raw.writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = await asyncio.wait_for(raw.reader.read(-1), 10)
        finally:
            raw.writer.close()
        if not data:  # TLS 1.3: a refused client certificate shows up as a closed connection
            raise ConnectionError("connection closed without a response")
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
        return status, body

    async def ws(self, target: str, protocols: list[str]) -> Any:
        raw = await self.connect()
        return await kc.ws_connect(raw, url=f"wss://127.0.0.1:{self.port}{target}", subprotocols=protocols)

    async def spdy(self, target: str, protocols: list[str]) -> Any:
        raw = await self.connect()
        resp, conn = await kc.spdy_upgrade(raw, target=target, host="127.0.0.1", protocols=protocols)
        return resp, conn


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def run_with_kubelet(certs: Certs, container: int, tmp_path: Path, scenario: Any, timeout: float = 60) -> Any:
    async def main() -> Any:
        pods = StaticPods(container, tmp_path)
        config = KubeletConfig(cert_file=certs.root / "serving.crt", key_file=certs.root / "serving.key",
                               client_ca_file=certs.root / "client-ca.crt", port=0)
        server = KubeletServer(config, pods=pods)
        await server.start()
        try:
            return await asyncio.wait_for(scenario(Kubelet(server, certs, pods)), timeout)
        finally:
            await server.close()

    return asyncio.run(main())


EXEC = "/exec/default/web/main"


def q(*command: str, **flags: int) -> str:
    from urllib.parse import urlencode
    return "?" + urlencode([("command", c) for c in command] + [(k, str(v)) for k, v in flags.items()])


# --- TLS and plain endpoints --------------------------------------------------------

def test_only_the_kubelet_client_certificate_is_accepted(certs: Certs, container: int, tmp_path: Path) -> None:
    async def scenario(k: Kubelet) -> None:
        assert await k.get("/healthz") == (200, b"ok")
        status, body = await k.get("/healthz", who=None)
        assert status == 401 and json.loads(body)["reason"] == "Unauthorized"
        status, body = await k.get("/pods", who="node")  # right CA, wrong identity
        assert status == 403 and "system:node:node-b" in json.loads(body)["message"]
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await k.get("/healthz", who="foreign")  # wrong CA: the handshake fails
        status, body = await k.get("/pods")
        doc = json.loads(body)
        assert status == 200 and doc["kind"] == "PodList" and doc["items"][0]["metadata"]["name"] == "web"
        status, body = await k.get("/nope")
        assert status == 404

    run_with_kubelet(certs, container, tmp_path, scenario)


def test_exec_errors_are_status_objects(certs: Certs, container: int, tmp_path: Path) -> None:
    async def scenario(k: Kubelet) -> None:
        status, body = await k.get(EXEC + q("true", output=1))
        assert status == 400 and "upgrade" in json.loads(body)["message"]
        status, body = await k.get(EXEC + "?output=1")
        assert status == 400 and "command is required" in json.loads(body)["message"]
        resp, conn = await k.spdy("/exec/default/nosuch/main" + q("true", output=1), [ch.V4])
        assert resp.status == 404 and conn is None and b"not found" in resp.body
        resp, conn = await k.spdy(EXEC + q("true", output=1), ["v9.channel.k8s.io"])
        assert resp.status == 403 and b"unable to negotiate" in resp.body

    run_with_kubelet(certs, container, tmp_path, scenario)


# --- exec over websocket ----------------------------------------------------------------

def test_ws_v5_exec_output_exit_code_stdin_stderr(certs: Certs, container: int, tmp_path: Path) -> None:
    async def scenario(k: Kubelet) -> None:
        ws = await k.ws(EXEC + q("cat", "/proc/sys/kernel/hostname", output=1, error=1), [ch.V5])
        assert ws.subprotocol == ch.V5
        res = await kc.ws_exec(ws, stdin=None)
        assert res.stdout == HOSTNAME.encode() + b"\n" and res.outcome == ch.ExecOutcome(0)

        ws = await k.ws(EXEC + q("sh", "-c", "echo out; echo err >&2; exit 3", output=1, error=1), [ch.V5, ch.V4])
        res = await kc.ws_exec(ws, stdin=None)
        assert (res.stdout, res.stderr) == (b"out\n", b"err\n")
        assert res.outcome is not None and res.outcome.exit_code == 3
        status = json.loads(res.status_raw)
        assert status["reason"] == "NonZeroExitCode" and status["details"]["causes"][0] == {"reason": "ExitCode", "message": "3"}

        # stdin piped through, ended by the v5 CLOSE signal; env and PID namespace are the container's
        ws = await k.ws(EXEC + q("sh", "-c", "cat; echo $GREETING; echo $$", input=1, output=1, error=1), [ch.V5])
        res = await kc.ws_exec(ws, stdin=b"line two\n", stdin_chunks=[b"line one\n"])
        lines = res.stdout.decode().splitlines()
        assert lines[:3] == ["line one", "line two", "hi"] and int(lines[3]) > 1  # not PID 1, but small:
        assert int(lines[3]) < 1000, "the exec'd shell lives in the container's PID namespace"
        assert res.outcome == ch.ExecOutcome(0)

    run_with_kubelet(certs, container, tmp_path, scenario)


def test_ws_v4_exec(certs: Certs, container: int, tmp_path: Path) -> None:
    async def scenario(k: Kubelet) -> None:
        ws = await k.ws(EXEC + q("head", "-c", "5", input=1, output=1), [ch.V4])
        assert ws.subprotocol == ch.V4
        res = await kc.ws_exec(ws, stdin=b"abcdefgh")  # v4 cannot half-close; head stops by itself
        assert res.stdout == b"abcde" and res.outcome == ch.ExecOutcome(0)
        ws = await k.ws(EXEC + q("sh", "-c", "exit 7", output=1), [ch.V4])
        res = await kc.ws_exec(ws, stdin=None)
        assert res.outcome is not None and res.outcome.exit_code == 7

    run_with_kubelet(certs, container, tmp_path, scenario)


def test_ws_tty_gets_a_pty_and_follows_resizes(certs: Certs, container: int, tmp_path: Path) -> None:
    async def scenario(k: Kubelet) -> None:
        ws = await k.ws(EXEC + q("sh", "-c", "sleep 0.3; stty size; read x; stty size; tty; exit 4",
                                 input=1, output=1, tty=1), [ch.V5])
        await ws.send(ch.encode_channel(ch.RESIZE, b'{"Width":80,"Height":24}'))
        out = bytearray()

        async def until(text: bytes) -> None:
            while text not in out:
                msg = await ws.recv()
                assert msg is not None, out
                if msg[:1] == bytes([ch.STDOUT]):
                    out.extend(msg[1:])
                elif msg[:1] == bytes([ch.ERROR]):
                    out.extend(b"<status>" + msg[1:])

        await until(b"24 80")
        await ws.send(ch.encode_channel(ch.RESIZE, b'{"Width":132,"Height":50}'))
        await asyncio.sleep(0.2)
        await ws.send(ch.encode_channel(ch.STDIN, b"\n"))
        await until(b"50 132")
        await until(b"<status>")
        await ws.close()
        text = out.decode(errors="replace")
        assert "/dev/pts/" in text, text  # a real terminal
        assert "\r\n" in text  # tty line discipline (onlcr)
        status = json.loads(text.split("<status>", 1)[1])
        assert status["details"]["causes"][0]["message"] == "4"

    run_with_kubelet(certs, container, tmp_path, scenario)


def test_ws_client_leaving_kills_the_exec(certs: Certs, container: int, tmp_path: Path) -> None:
    async def scenario(k: Kubelet) -> None:
        marker = f"300.{os.getpid()}"  # a unique sleep argument to find the process by
        ws = await k.ws(EXEC + q("sleep", marker, output=1), [ch.V5])
        await asyncio.sleep(0.5)
        assert _pids_with_arg0(marker)
        await ws.close()
        for _ in range(50):
            if not _pids_with_arg0(marker):
                return
            await asyncio.sleep(0.1)
        raise AssertionError("exec'd process survived its client")

    run_with_kubelet(certs, container, tmp_path, scenario)


def _pids_with_arg0(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == b"sleep\0" + marker.encode() + b"\0":
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


# --- exec over SPDY -----------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [ch.V5, ch.V4, ch.V3, ch.V2, ch.V1])
def test_spdy_exec_stdin_stdout_stderr_exit_code(certs: Certs, container: int, tmp_path: Path, protocol: str) -> None:
    async def scenario(k: Kubelet) -> None:
        resp, conn = await k.spdy(EXEC + q("sh", "-c", "cat; echo oops >&2; exit 3", input=1, output=1, error=1),
                                  [protocol, ch.V1])
        assert resp.status == 101 and resp.headers["x-stream-protocol-version"] == protocol
        big = os.urandom(300_000)  # more than the 64 KiB SPDY window: no flow-control stall
        res = await kc.spdy_exec(conn, protocol=protocol, stdin=big, stdin_chunks=[b"hello "])
        assert res.stdout == b"hello " + big
        assert res.stderr == b"oops\n"
        if ch.uses_json_status(protocol):
            assert res.outcome is not None and res.outcome.exit_code == 3
        else:  # v2/v3 carry the message as text
            assert b"non-zero exit code" in res.status_raw
        resp, conn = await k.spdy(EXEC + q("true", output=1), [protocol])
        res = await kc.spdy_exec(conn, protocol=protocol, stdin=None)
        assert res.status_raw == (b"" if not ch.uses_json_status(protocol) else res.status_raw)
        assert res.outcome == ch.ExecOutcome(0)

    run_with_kubelet(certs, container, tmp_path, scenario)


def test_spdy_tty_with_resize(certs: Certs, container: int, tmp_path: Path) -> None:
    async def scenario(k: Kubelet) -> None:
        resp, conn = await k.spdy(EXEC + q("sh", "-c", "sleep 0.3; stty size; read x; stty size", input=1, output=1, tty=1),
                                  [ch.V4])
        assert resp.status == 101
        res = await kc.spdy_exec(conn, protocol=ch.V4, stdin=b"\n", tty=True, resize=[(90, 30), (120, 45)],
                                 stdin_chunks=[b""], pause=0.6)
        text = res.stdout.decode()
        assert "30 90" in text and "45 120" in text, text
        assert res.outcome == ch.ExecOutcome(0)

    run_with_kubelet(certs, container, tmp_path, scenario)


# --- port-forward ---------------------------------------------------------------------

async def _http_get_via(conn: Any, request_id: int, port: int = POD_PORT) -> tuple[bytes, bytes]:
    error, data = await kc.portforward_streams(conn, port=port, request_id=request_id)
    await data.write(b"GET / HTTP/1.0\r\n\r\n")
    await data.close()
    body = await data.read_all()
    return body, await error.read_all()


def test_spdy_portforward_reaches_the_pod_netns(certs: Certs, container: int, tmp_path: Path) -> None:
    async def scenario(k: Kubelet) -> None:
        resp, conn = await k.spdy("/portForward/default/web", [ch.PORTFORWARD_PROTOCOL])
        assert resp.status == 101 and resp.headers["x-stream-protocol-version"] == ch.PORTFORWARD_PROTOCOL
        runner = asyncio.create_task(conn.run())
        try:
            results = await asyncio.gather(*(_http_get_via(conn, i) for i in range(3)))  # concurrent connections
            for body, err in results:
                assert body.startswith(b"HTTP/1.0 200") and b"Directory listing" in body, body[:200]
                assert err == b""
            body, err = await _http_get_via(conn, 10, port=POD_PORT + 1)  # nothing listens there
            assert body == b"" and b"connection refused" in err, err
        finally:
            await conn.close()
            runner.cancel()
        # The host's own loopback does not have the pod's server: the socket really was in the netns.
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", POD_PORT)

    run_with_kubelet(certs, container, tmp_path, scenario)


def test_websocket_wrapped_spdy_portforward(certs: Certs, container: int, tmp_path: Path) -> None:
    async def scenario(k: Kubelet) -> None:
        ws = await k.ws("/portForward/default/web?ports=18080", [ch.WS_PORTFORWARD_PROTOCOL])
        assert ws.subprotocol == ch.WS_PORTFORWARD_PROTOCOL
        conn = kc.ws_spdy_connection(ws)
        runner = asyncio.create_task(conn.run())
        try:
            body, err = await _http_get_via(conn, 0)
            assert body.startswith(b"HTTP/1.0 200") and err == b""
        finally:
            await conn.close()
            runner.cancel()

    run_with_kubelet(certs, container, tmp_path, scenario)


def test_portforward_unknown_pod_and_missing_protocol(certs: Certs, container: int, tmp_path: Path) -> None:
    async def scenario(k: Kubelet) -> None:
        resp, conn = await k.spdy("/portForward/default/ghost", [ch.PORTFORWARD_PROTOCOL])
        assert resp.status == 404 and conn is None
        resp, conn = await k.spdy("/portForward/default/web", [])
        assert resp.status == 400 and conn is None

    run_with_kubelet(certs, container, tmp_path, scenario)


# --- containerLogs over HTTP --------------------------------------------------------------

def _cri(ts: dt.datetime, stream: str, tag: str, text: str) -> bytes:
    return f"{ts.strftime('%Y-%m-%dT%H:%M:%S')}.{ts.microsecond:06d}000Z {stream} {tag} {text}\n".encode()


def test_container_logs_endpoint(certs: Certs, container: int, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    old = now - dt.timedelta(hours=1)
    (tmp_path / "0.log").write_bytes(_cri(old, "stdout", "F", "first run"))
    (tmp_path / "1.log").write_bytes(
        _cri(old, "stdout", "F", "old line") + _cri(now, "stderr", "P", "part-") + _cri(now, "stderr", "F", "joined")
        + _cri(now, "stdout", "F", "last"))

    async def scenario(k: Kubelet) -> None:
        base = "/containerLogs/default/web/main"
        assert await k.get(base) == (200, b"old line\npart-joined\nlast\n")
        assert await k.get(base + "?tailLines=2") == (200, b"part-joined\nlast\n")
        assert await k.get(base + "?sinceSeconds=60") == (200, b"part-joined\nlast\n")
        assert await k.get(base + "?previous=true") == (200, b"first run\n")
        assert await k.get(base + "?limitBytes=5") == (200, b"old l")
        status, body = await k.get(base + "?timestamps=true&tailLines=1")
        assert status == 200 and body.endswith(b"Z last\n") and body.startswith(str(now.year).encode())
        status, body = await k.get(base + "?tailLines=x")
        assert status == 400 and "tailLines" in json.loads(body)["message"]
        status, _ = await k.get("/containerLogs/default/web/other")
        assert status == 404

    run_with_kubelet(certs, container, tmp_path, scenario)


def test_follow_over_http_sees_new_lines_and_ends_with_the_container(certs: Certs, container: int, tmp_path: Path) -> None:
    log_file = tmp_path / "0.log"
    log_file.write_bytes(_cri(dt.datetime.now(dt.timezone.utc), "stdout", "F", "one"))

    async def scenario(k: Kubelet) -> None:
        raw = await k.connect()
        raw.writer.write(b"GET /containerLogs/default/web/main?follow=true HTTP/1.1\r\nHost: x\r\n\r\n")
        got = bytearray()

        async def read_until(text: bytes) -> None:
            while text not in got:
                chunk = await raw.reader.read(4096)
                assert chunk, got
                got.extend(chunk)

        await read_until(b"one\n")
        with log_file.open("ab") as f:
            f.write(_cri(dt.datetime.now(dt.timezone.utc), "stdout", "F", "two"))
        await read_until(b"two\n")
        k.pods.running = False  # the container exits: the stream ends after the last line
        await read_until(b"0\r\n\r\n")
        raw.writer.close()

    run_with_kubelet(certs, container, tmp_path, scenario)


def test_spdy_stream_type_headers_are_lowercased(certs: Certs, container: int, tmp_path: Path) -> None:
    # Go's http.Header canonicalises names ("Streamtype"); on the wire spdystream lowercases them.
    assert make_headers({"streamType": "error"}) == (("streamtype", "error"),)


def test_garbage_after_spdy_upgrade_ends_that_connection_only(certs: Certs, container: int, tmp_path: Path) -> None:
    async def scenario(k: Kubelet) -> None:
        raw = await k.connect()
        resp = await kc.send_upgrade(raw, method="POST", target=EXEC + q("true", output=1), host="x", headers=[
            ("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), (ch.STREAM_PROTOCOL_HEADER, ch.V4)])
        assert resp.status == 101
        raw.writer.write(b"\x80\x03\x00\x01\x00\x00\x00\x0c" + b"\x00\x00\x00\x01" * 3)  # SYN_STREAM with a broken header block
        await raw.writer.drain()
        reply = await asyncio.wait_for(raw.reader.read(-1), 10)  # GOAWAY, then the connection closes
        assert reply[:4] == b"\x80\x03\x00\x07" and reply[-4:] == b"\x00\x00\x00\x01", reply  # PROTOCOL_ERROR
        raw.writer.close()
        assert await k.get("/healthz") == (200, b"ok")
        status, body = await k.get("/attach/default/web/main?output=1")
        assert status == 400 and "needs a websocket" in json.loads(body)["message"]

    run_with_kubelet(certs, container, tmp_path, scenario)


def test_no_descriptor_or_process_leaks(certs: Certs, container: int, tmp_path: Path) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def scenario(k: Kubelet) -> None:
        async def once() -> None:
            ws = await k.ws(EXEC + q("sh", "-c", "echo hi", output=1, tty=1), [ch.V5])
            assert (await kc.ws_exec(ws, stdin=None)).outcome == ch.ExecOutcome(0)
            resp, conn = await k.spdy(EXEC + q("cat", input=1, output=1, error=1), [ch.V4])
            assert (await kc.spdy_exec(conn, protocol=ch.V4, stdin=b"x")).stdout == b"x"
            resp, conn = await k.spdy("/portForward/default/web", [ch.PORTFORWARD_PROTOCOL])
            runner = asyncio.create_task(conn.run())
            body, _ = await _http_get_via(conn, 1)
            assert body.startswith(b"HTTP/1.0 200")
            await conn.close()
            runner.cancel()

        await once()  # warm up (thread pool, caches)
        await asyncio.sleep(0.3)
        before = fds()
        for _ in range(8):
            await once()
        await asyncio.sleep(0.5)  # server-side handlers finish their close handshakes
        assert fds() <= before + 2, (before, fds())
        children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
        assert not [c for c in children if "nsenter" in Path(f"/proc/{c}/cmdline").read_text(errors="replace")]

    run_with_kubelet(certs, container, tmp_path, scenario)


def test_legacy_portforward_pairing_without_request_id(certs: Certs, container: int, tmp_path: Path) -> None:
    async def scenario(k: Kubelet) -> None:
        resp, conn = await k.spdy("/portForward/default/web", [ch.PORTFORWARD_PROTOCOL])
        runner = asyncio.create_task(conn.run())
        try:
            # Old clients sent no requestID: error then data, consecutive odd stream ids.
            error = await conn.open_stream(make_headers({ch.STREAM_TYPE: ch.STREAM_ERROR, ch.PORT_HEADER: str(POD_PORT)}))
            await error.close()
            data = await conn.open_stream(make_headers({ch.STREAM_TYPE: ch.STREAM_DATA, ch.PORT_HEADER: str(POD_PORT)}))
            await data.write(b"GET / HTTP/1.0\r\n\r\n")
            await data.close()
            assert (await data.read_all()).startswith(b"HTTP/1.0 200")
            assert await error.read_all() == b""
        finally:
            await conn.close()
            runner.cancel()

    run_with_kubelet(certs, container, tmp_path, scenario)


def test_exec_into_an_exited_container_is_refused(certs: Certs, container: int, tmp_path: Path) -> None:
    async def scenario(k: Kubelet) -> None:
        gone = await asyncio.create_subprocess_exec("true")
        await gone.wait()
        k.pods.pid = gone.pid  # the runtime still points at a process that has exited
        resp, conn = await k.spdy(EXEC + q("true", output=1), [ch.V4])
        assert resp.status == 400 and conn is None and b"not running" in resp.body

    run_with_kubelet(certs, container, tmp_path, scenario)
