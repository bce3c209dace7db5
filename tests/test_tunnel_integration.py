"""The tunnel over real websockets and TLS on loopback (self-signed CA made here)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgectl.cli import edgectl as edgectl_cli
from edgectl.tunnel.agent import AgentConfig, HandshakeError, TunnelAgent, client_ssl_context
from edgectl.tunnel.allowlist import AllowList
from edgectl.tunnel.backoff import backoff_delay
from edgectl.tunnel.errors import DialError, StreamReset
from edgectl.tunnel.selfsigned import TLSFiles, write_tls_files
from edgectl.tunnel.server import CONNECT_PATH, ServerConfig
from edgectl.tunnel.session import SessionConfig
from edgectl.tunnel.standalone import Standalone, server_ssl_context, start_standalone

TOKEN = "bootstrap-secret"
ADMIN = "admin-secret"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return write_tls_files(tmp_path_factory.mktemp("tunnel-tls"))


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


class Env:
    def __init__(self, tls: TLSFiles) -> None:
        self.tls = tls
        self.srv: Standalone | None = None
        self.agents: list[tuple[TunnelAgent, asyncio.Task[None]]] = []
        self.echo: asyncio.Server | None = None
        self.echo_port = 0

    def server_ctx(self) -> ssl.SSLContext:
        return server_ssl_context(str(self.tls.server_cert), str(self.tls.server_key))

    async def start(self, *, port: int = 0, config: ServerConfig = ServerConfig()) -> Standalone:
        self.srv = await start_standalone(token=TOKEN, admin_token=ADMIN, ssl_context=self.server_ctx(), port=port, config=config)
        return self.srv

    def agent(self, node: str = "edge-1", *, token: str = TOKEN, url: str | None = None, **kw: Any) -> TunnelAgent:
        assert self.srv is not None
        allow = kw.pop("allow", AllowList(kubelet_port=self.echo_port))
        cfg = AgentConfig(server=url or self.srv.url, node=node, token=token, allow=allow, **kw)
        return TunnelAgent(cfg, ssl_context=client_ssl_context(ca_file=str(self.tls.ca_cert)))

    def run_agent(self, agent: TunnelAgent) -> TunnelAgent:
        self.agents.append((agent, asyncio.create_task(agent.run())))
        return agent

    async def close(self) -> None:
        for agent, task in self.agents:
            await agent.stop()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 5)
        if self.srv is not None:
            await self.srv.close()
        if self.echo is not None:
            self.echo.close()


@contextlib.asynccontextmanager
async def env(tls: TLSFiles, **kw: Any) -> AsyncIterator[Env]:
    e = Env(tls)
    e.echo = await asyncio.start_server(echo_handler, "127.0.0.1", 0, backlog=4096)
    e.echo_port = e.echo.sockets[0].getsockname()[1]
    await e.start(**kw)
    try:
        yield e
    finally:
        await e.close()


async def echo_once(srv: Standalone, node: str, port: int, payload: bytes) -> bytes:
    r, w = await srv.tunnel.dial(node, f"tcp/127.0.0.1:{port}", timeout=10)
    w.write(payload)
    await w.drain()
    w.write_eof()
    data = await r.read()
    w.close()
    return data


def test_echo_1000_concurrent_streams(tls: TLSFiles) -> None:
    async def main() -> None:
        async with env(tls) as e:
            e.run_agent(e.agent())
            await e.srv.tunnel.wait_for_session("edge-1", 10)  # type: ignore[union-attr]
            payloads = [os.urandom(random.randint(1, 8192)) for _ in range(1000)]
            results = await asyncio.gather(*(echo_once(e.srv, "edge-1", e.echo_port, p) for p in payloads))  # type: ignore[arg-type]
            assert results == payloads
            stats = e.srv.tunnel.stats()  # type: ignore[union-attr]
            (sess,) = stats["sessions"]
            assert sess["bytes_out"] == sum(map(len, payloads)) == sess["bytes_in"]
            for _ in range(100):
                if e.srv.tunnel.stats()["sessions"][0]["open_streams"] == 0:  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.02)
            assert e.srv.tunnel.stats()["sessions"][0]["open_streams"] == 0  # type: ignore[union-attr]

    run(main(), 120)


def test_refused_and_failed_dials_leave_session_and_streams_alive(tls: TLSFiles) -> None:
    async def main() -> None:
        async with env(tls) as e:
            agent = e.run_agent(e.agent())
            await e.srv.tunnel.wait_for_session("edge-1", 10)  # type: ignore[union-attr]
            tun = e.srv.tunnel  # type: ignore[union-attr]
            r, w = await tun.dial("edge-1", f"tcp/127.0.0.1:{e.echo_port}")
            w.write(b"before")
            assert await r.readexactly(6) == b"before"
            with pytest.raises(DialError) as refused:
                await tun.dial("edge-1", "tcp/10.1.2.3:22")
            assert refused.value.reason == DialError.REFUSED and "not allowed" in str(refused.value)
            with pytest.raises(DialError) as bad:
                await tun.dial("edge-1", "tcp/example.com:80")
            assert bad.value.reason == DialError.REFUSED
            # allowed port on loopback with nothing listening: connect fails, session lives
            free = AllowList(kubelet_port=e.echo_port, loopback_ports=(1,))
            object.__setattr__(agent.config, "allow", free)
            with pytest.raises(DialError) as failed:
                await tun.dial("edge-1", "tcp/127.0.0.1:1")
            assert failed.value.reason == DialError.CONNECT_FAILED
            with pytest.raises(DialError) as nosess:
                await tun.dial("edge-9", "tcp/127.0.0.1:1")
            assert nosess.value.reason == DialError.NO_SESSION
            w.write(b"after")
            assert await r.readexactly(5) == b"after"
            assert agent.sessions == 1 and agent.reconnects == 0
            w.close()

    run(main())


def test_wrong_token_gets_401_before_upgrade(tls: TLSFiles) -> None:
    async def main() -> None:
        async with env(tls) as e:
            agent = e.agent(token="wrong")
            with pytest.raises(HandshakeError) as exc:
                await agent.connect_once()
            assert exc.value.status == 401
            assert not e.srv.tunnel.has_session("edge-1")  # type: ignore[union-attr]

    run(main())


def test_plain_get_is_400_and_admission_rate_is_429(tls: TLSFiles) -> None:
    async def main() -> None:
        async with env(tls, config=ServerConfig(admissions_per_second=0.01, admission_burst=1)) as e:
            ctx = client_ssl_context(ca_file=str(e.tls.ca_cert))
            r, w = await asyncio.open_connection("127.0.0.1", e.srv.port, ssl=ctx)  # type: ignore[union-attr]
            w.write(f"GET {CONNECT_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nX-Edge-Node: n\r\n\r\n".encode())
            assert (await r.readline()).startswith(b"HTTP/1.1 400")
            w.close()
            first = e.run_agent(e.agent("edge-1"))
            await e.srv.tunnel.wait_for_session("edge-1", 10)  # type: ignore[union-attr]
            with pytest.raises(HandshakeError) as exc:
                await e.agent("edge-2").connect_once()
            assert exc.value.status == 429 and exc.value.retry_after is not None
            assert first.connected.is_set()

    run(main())


def test_killed_server_makes_agent_reconnect_with_backoff(tls: TLSFiles) -> None:
    async def main() -> None:
        async with env(tls) as e:
            srv = e.srv
            assert srv is not None
            port = srv.port
            agent = e.run_agent(e.agent(backoff_base=0.05, backoff_cap=0.4))
            await srv.tunnel.wait_for_session("edge-1", 10)
            await srv.close()
            t0 = time.monotonic()
            await asyncio.sleep(1.5)
            down_attempts = agent.reconnects
            # Backoff: without it the agent would retry thousands of times in 1.5 s.
            assert 2 <= down_attempts <= 25, down_attempts
            assert not agent.connected.is_set() and agent.last_error
            srv2 = await e.start(port=port)
            await srv2.tunnel.wait_for_session("edge-1", 5)
            assert time.monotonic() - t0 < 1.5 + 5
            assert await echo_once(srv2, "edge-1", e.echo_port, b"back") == b"back"

    run(main())


def test_backoff_is_exponential_with_full_jitter() -> None:
    rng = random.Random(1)
    for attempt in range(12):
        ceiling = min(30.0, 0.5 * 2**attempt)
        samples = [backoff_delay(attempt, rng=rng) for _ in range(400)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > 0.8 * ceiling and min(samples) < 0.2 * ceiling  # spread over [0, ceiling]


def test_same_node_reconnect_drains_old_session(tls: TLSFiles) -> None:
    async def main() -> None:
        async with env(tls) as e:
            tun = e.srv.tunnel  # type: ignore[union-attr]
            a1 = e.run_agent(e.agent("edge-1"))
            await tun.wait_for_session("edge-1", 10)
            r, w = await tun.dial("edge-1", f"tcp/127.0.0.1:{e.echo_port}")
            w.write(b"one")
            assert await r.readexactly(3) == b"one"
            old = tun._sessions["edge-1"].conn
            a2 = e.run_agent(e.agent("edge-1"))
            await a2.connected.wait()
            for _ in range(100):
                if old.session.goaway_sent:
                    break
                await asyncio.sleep(0.02)
            assert old.session.goaway_sent and old.session.closed is None  # draining, not cut
            w.write(b"still")  # the old stream finishes on the old session
            assert await r.readexactly(5) == b"still"
            assert tun.stats()["sessions"][0]["reconnects"] == 1
            w.write_eof()
            assert await r.read() == b""
            await asyncio.wait_for(old.ended.wait(), 5)  # drained and closed
            assert await echo_once(e.srv, "edge-1", e.echo_port, b"new") == b"new"  # type: ignore[arg-type]
            assert a1.sessions >= 1

    run(main())


def test_server_goaway_drains_then_new_dials_fail(tls: TLSFiles) -> None:
    async def main() -> None:
        async with env(tls) as e:
            tun = e.srv.tunnel  # type: ignore[union-attr]
            e.run_agent(e.agent("edge-1", backoff_base=5.0))
            await tun.wait_for_session("edge-1", 10)
            r, w = await tun.dial("edge-1", f"tcp/127.0.0.1:{e.echo_port}")
            conn = tun._sessions["edge-1"].conn
            drain = asyncio.create_task(conn.drain(10, "maintenance"))
            await asyncio.sleep(0.1)
            with pytest.raises(DialError) as exc:
                await tun.dial("edge-1", f"tcp/127.0.0.1:{e.echo_port}")
            assert exc.value.reason == DialError.SESSION_CLOSED
            payload = os.urandom(3 * 1024 * 1024)
            w.write(payload)
            w.write_eof()
            got = await r.read()
            assert got == payload  # the open stream completed during the drain
            await asyncio.wait_for(drain, 5)
            assert conn.session.closed is not None and conn.session.closed.code == 0

    run(main())


def test_dead_peer_detected_and_streams_end_with_error(tls: TLSFiles) -> None:
    """A relay that stops forwarding (a silent network) ends the session on both sides."""

    async def main() -> None:
        frozen = asyncio.Event()

        async def relay(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            sr, sw = await asyncio.open_connection("127.0.0.1", e.srv.port)  # type: ignore[union-attr]

            async def copy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                with contextlib.suppress(Exception):
                    while data := await r.read(65536):
                        if frozen.is_set():
                            await asyncio.sleep(3600)
                        w.write(data)
                        await w.drain()

            await asyncio.gather(copy(cr, sw), copy(sr, cw))

        fast = SessionConfig(identity="s", ping_interval=0.2, dead_after=0.8)
        async with env(tls, config=ServerConfig(session=fast)) as e:
            proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
            try:
                url = f"https://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
                agent = e.run_agent(e.agent("edge-1", url=url, session=SessionConfig(identity="edge-1", ping_interval=0.2, dead_after=0.8), backoff_base=5.0))
                tun = e.srv.tunnel  # type: ignore[union-attr]
                await tun.wait_for_session("edge-1", 10)
                # TLS server name is 127.0.0.1 in the cert, so the relay is transparent
                r, w = await tun.dial("edge-1", f"tcp/127.0.0.1:{e.echo_port}")
                frozen.set()
                t0 = time.monotonic()
                with pytest.raises(StreamReset) as exc:
                    await asyncio.wait_for(r.read(), 5)
                assert "silent" in str(exc.value)
                assert time.monotonic() - t0 < 3
                for _ in range(100):
                    if not agent.connected.is_set():
                        break
                    await asyncio.sleep(0.05)
                assert not agent.connected.is_set() and "silent" in (agent.last_error or "")
            finally:
                proxy.close()

    run(main())


def test_agent_through_http_connect_proxy(tls: TLSFiles) -> None:
    async def main() -> None:
        seen: list[bytes] = []

        async def connect_proxy(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            head = await cr.readuntil(b"\r\n\r\n")
            seen.append(head.split(b"\r\n")[0])
            host, port = head.split(b" ")[1].decode().rsplit(":", 1)
            sr, sw = await asyncio.open_connection(host, int(port))
            cw.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

            async def copy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                with contextlib.suppress(Exception):
                    while data := await r.read(65536):
                        w.write(data)
                        await w.drain()
                w.close()

            await asyncio.gather(copy(cr, sw), copy(sr, cw))

        async with env(tls) as e:
            proxy = await asyncio.start_server(connect_proxy, "127.0.0.1", 0)
            try:
                e.run_agent(e.agent("edge-1", proxy=f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"))
                await e.srv.tunnel.wait_for_session("edge-1", 10)  # type: ignore[union-attr]
                assert await echo_once(e.srv, "edge-1", e.echo_port, b"via proxy") == b"via proxy"  # type: ignore[arg-type]
                assert seen == [f"CONNECT 127.0.0.1:{e.srv.port} HTTP/1.1".encode()]  # type: ignore[union-attr]
            finally:
                proxy.close()

    run(main())


def test_status_cli_json_shows_session_and_open_streams(tls: TLSFiles) -> None:
    async def main() -> None:
        async with env(tls) as e:
            e.run_agent(e.agent("edge-7"))
            tun = e.srv.tunnel  # type: ignore[union-attr]
            await tun.wait_for_session("edge-7", 10)
            r, w = await tun.dial("edge-7", f"tcp/127.0.0.1:{e.echo_port}")
            w.write(b"x" * 1000)
            await r.readexactly(1000)
            args = ["tunnel", "status", "--server", e.srv.url, "--token", ADMIN,  # type: ignore[union-attr]
                    "--certificate-authority", str(e.tls.ca_cert), "--kubeconfig", "/nonexistent", "-o", "json"]
            result = await asyncio.to_thread(CliRunner().invoke, edgectl_cli, args)
            assert result.exit_code == 0, result.output
            doc = json.loads(result.output)
            (sess,) = doc["sessions"]
            assert sess["node"] == "edge-7" and sess["open_streams"] == 1 and sess["last_rtt_ms"] is not None
            (stream,) = sess["streams"]
            assert stream["target"] == f"tcp/127.0.0.1:{e.echo_port}" and stream["bytes_out"] == 1000
            assert stream["state"] == "open" and stream["recv_window"] >= 256 * 1024
            table = await asyncio.to_thread(CliRunner().invoke, edgectl_cli, args[:-2] + ["--streams"])
            assert table.exit_code == 0 and "edge-7" in table.output and "tcp/127.0.0.1" in table.output
            wrong = await asyncio.to_thread(CliRunner().invoke, edgectl_cli, [*args[:4], "--token", "nope", *args[6:]])
            assert wrong.exit_code != 0 and "401" in str(wrong.exception or wrong.output)
            w.close()

    run(main())


def test_garbage_from_a_real_websocket_client_ends_session_with_log_line(tls: TLSFiles, caplog: pytest.LogCaptureFixture) -> None:
    from websockets.asyncio.client import connect

    from edgectl.tunnel import frames as fr

    async def main() -> None:
        async with env(tls) as e:
            ctx = client_ssl_context(ca_file=str(e.tls.ca_cert))
            url = f"wss://127.0.0.1:{e.srv.port}{CONNECT_PATH}"  # type: ignore[union-attr]
            headers = {"Authorization": f"Bearer {TOKEN}", "X-Edge-Node": "evil"}
            async with connect(url, ssl=ctx, additional_headers=headers) as ws:
                await ws.recv()  # the server's HELLO + PING
                await ws.send(fr.encode(fr.FrameType.DATA, 1, b"x"))  # no HELLO first
                goaway = None
                with contextlib.suppress(Exception):
                    while True:
                        for f in fr.parse_all(await ws.recv()):  # type: ignore[arg-type]
                            if f.type is fr.FrameType.GOAWAY:
                                goaway = fr.decode_goaway(f.payload)
                assert goaway is not None and goaway[0] == fr.ErrorCode.PROTOCOL and "HELLO" in goaway[2]
            async with connect(url, ssl=ctx, additional_headers=headers, max_size=None) as ws:
                await ws.recv()
                await ws.send(struct_header(fr.FrameType.HELLO, 0, 64 * 1024 * 1024))  # oversized
                with contextlib.suppress(Exception):
                    while True:
                        await ws.recv()
            # the server is fine: a real agent still connects and works
            e.run_agent(e.agent("edge-1"))
            await e.srv.tunnel.wait_for_session("edge-1", 10)  # type: ignore[union-attr]
            assert await echo_once(e.srv, "edge-1", e.echo_port, b"ok") == b"ok"  # type: ignore[arg-type]

    with caplog.at_level("WARNING", logger="edgectl.tunnel.connection"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "edgectl.tunnel.connection"]
    assert lines.count("tunnel session ended with an error") >= 2


def struct_header(ftype: int, sid: int, length: int) -> bytes:
    import struct

    return struct.pack("!BBII", ftype, 0, sid, length)


def test_metrics_and_kubeconfig_status(tls: TLSFiles, tmp_path: Path) -> None:
    import base64
    import urllib.request

    import yaml

    async def main() -> None:
        async with env(tls) as e:
            e.run_agent(e.agent("edge-m"))
            tun = e.srv.tunnel  # type: ignore[union-attr]
            await tun.wait_for_session("edge-m", 10)
            with pytest.raises(DialError):
                await tun.dial("edge-m", "tcp/10.9.9.9:1")
            r, w = await tun.dial("edge-m", f"tcp/127.0.0.1:{e.echo_port}")
            ctx = client_ssl_context(ca_file=str(e.tls.ca_cert))
            req = urllib.request.Request(f"{e.srv.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"})  # type: ignore[union-attr]
            text = (await asyncio.to_thread(lambda: urllib.request.urlopen(req, context=ctx).read())).decode()
            assert 'edgectl_tunnel_dial_failures_total{reason="refused"}' in text
            assert "edgectl_tunnel_dial_seconds_bucket" in text
            assert any(line.startswith("edgectl_tunnel_streams ") and float(line.split()[1]) >= 1 for line in text.splitlines())
            assert any(line.startswith("edgectl_tunnel_sessions ") and float(line.split()[1]) >= 1 for line in text.splitlines())
            assert "edgectl_tunnel_blocked_streams" in text and "edgectl_tunnel_buffered_bytes" in text
            kubeconfig = tmp_path / "admin.yaml"
            kubeconfig.write_text(yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": e.srv.url,  # type: ignore[union-attr]
                              "certificate-authority-data": base64.b64encode(e.tls.ca_cert.read_bytes()).decode()}}],
                "users": [{"name": "u", "user": {"token": ADMIN}}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            }))
            res = await asyncio.to_thread(CliRunner().invoke, edgectl_cli, ["tunnel", "status", "--kubeconfig", str(kubeconfig), "-o", "yaml"])
            assert res.exit_code == 0, res.output
            doc = yaml.safe_load(res.output)
            assert doc["sessions"][0]["node"] == "edge-m" and doc["sessions"][0]["open_streams"] == 1
            missing = await asyncio.to_thread(CliRunner().invoke, edgectl_cli, ["tunnel", "status", "--kubeconfig", str(tmp_path / "nope.yaml")])
            assert missing.exit_code != 0 and "no such kubeconfig" in str(missing.exception)
            w.close()

    run(main())


def test_dial_timeout_and_cancel_leave_no_orphan_streams(tls: TLSFiles) -> None:
    async def main() -> None:
        async with env(tls) as e:
            agent = e.run_agent(e.agent("edge-1", dial_timeout=30.0, allow=AllowList(kubelet_port=e.echo_port, loopback_ports=(9,))))
            tun = e.srv.tunnel  # type: ignore[union-attr]
            await tun.wait_for_session("edge-1", 10)
            # Make the agent's TCP connect hang (as to a blackholed address) until released.
            blocker = asyncio.Event()

            async def slow_open(*a: Any, **k: Any) -> Any:
                await blocker.wait()
                raise OSError("never")

            real = asyncio.open_connection
            asyncio.open_connection = slow_open  # type: ignore[assignment]
            try:
                with pytest.raises(DialError) as exc:
                    await tun.dial("edge-1", "tcp/127.0.0.1:9", timeout=0.3)
                assert exc.value.reason == DialError.TIMEOUT
                task = asyncio.create_task(tun.dial("edge-1", "tcp/127.0.0.1:9", timeout=30))
                await asyncio.sleep(0.2)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            finally:
                asyncio.open_connection = real  # type: ignore[assignment]
                blocker.set()
            for _ in range(100):
                if tun.stats()["sessions"][0]["open_streams"] == 0 and agent.conn and agent.conn.session.open_streams == 0:
                    break
                await asyncio.sleep(0.02)
            assert tun.stats()["sessions"][0]["open_streams"] == 0
            assert agent.conn is not None and agent.conn.session.open_streams == 0
            assert await echo_once(e.srv, "edge-1", e.echo_port, b"fine") == b"fine"  # type: ignore[arg-type]

    run(main())


def test_slow_reader_backpressure_reaches_the_agents_tcp_source(tls: TLSFiles) -> None:
    """A reader that does not read holds only its window on the server and about
    one write high-water mark on the agent; the rest stays in the source's socket."""
    total = 40 * 1024 * 1024

    async def main() -> None:
        async def source(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                block = b"s" * 65536
                for _ in range(total // len(block)):
                    w.write(block)
                    await w.drain()
                w.write_eof()
            w.close()

        src = await asyncio.start_server(source, "127.0.0.1", 0)
        port = src.sockets[0].getsockname()[1]
        try:
            async with env(tls) as e:
                agent = e.run_agent(e.agent("edge-1", allow=AllowList(kubelet_port=port)))
                tun = e.srv.tunnel  # type: ignore[union-attr]
                await tun.wait_for_session("edge-1", 10)
                r, w = await tun.dial("edge-1", f"tcp/127.0.0.1:{port}")
                await asyncio.sleep(1.0)  # do not read
                (info,) = tun.stats()["sessions"][0]["streams"]
                assert info["buffered"] <= info["recv_window"] == 256 * 1024
                assert agent.conn is not None
                queued = sum(agent.conn.session.pending_out(s) for s in agent.conn.session.stream_ids)
                assert queued <= 2 * 1024 * 1024, queued  # ~1 MiB high-water + one socket read
                got = 0
                while chunk := await r.read(1 << 20):
                    got += len(chunk)
                assert got == total
                w.close()
        finally:
            src.close()

    run(main())
