"""pipe_tcp keeps the TCP side paused while the tunnel cannot take more (real TLS tunnel on loopback)."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from pathlib import Path
from typing import Any

from edgectl.tunnel.agent import AgentConfig, TunnelAgent, client_ssl_context
from edgectl.tunnel.allowlist import AllowList
from edgectl.tunnel.pipe import READ_BUFFER_MAX, pipe_tcp
from edgectl.tunnel.selfsigned import write_tls_files
from edgectl.tunnel.standalone import server_ssl_context, start_standalone
from edgectl.tunnel.streams import WRITE_HIGH_WATER

MiB = 1024 * 1024


def test_big_read_ahead_does_not_unpause_the_tcp_side(tmp_path: Path) -> None:
    """Regression: bytes read ahead before the dial finished (more than the high-water
    mark) paused reading, and pipe_tcp resumed it right after, so a sender whose
    target never reads filled the server's memory without bound."""
    tls = write_tls_files(tmp_path / "tls")
    stop = threading.Event()

    async def main() -> None:
        # A target on the agent side that accepts and never reads.
        held: list[asyncio.StreamWriter] = []

        async def never_read(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            held.append(w)

        target = await asyncio.start_server(never_read, "127.0.0.1", 0)
        tport = target.sockets[0].getsockname()[1]
        srv = await start_standalone(token="t", admin_token="a", ssl_context=server_ssl_context(str(tls.server_cert), str(tls.server_key)))
        agent = TunnelAgent(AgentConfig(server=srv.url, node="n1", token="t", allow=AllowList(loopback_ports=(tport,))),
                            ssl_context=client_ssl_context(ca_file=str(tls.ca_cert)))
        agent_task = asyncio.create_task(agent.run())
        seen: dict[str, Any] = {}

        async def forward(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await asyncio.sleep(0.5)  # the sender fills the StreamReader meanwhile (4 MiB limit, as the demo)
            seen["ahead"] = len(r._buffer)  # noqa: SLF001
            tr, tw = await srv.tunnel.dial("n1", f"tcp/127.0.0.1:{tport}")
            seen["tw"], seen["transport"] = tw, w.transport
            await pipe_tcp(r, w, tr, tw)

        fwd = await asyncio.start_server(forward, "127.0.0.1", 0, limit=4 * MiB)
        fport = fwd.sockets[0].getsockname()[1]
        await srv.tunnel.wait_for_session("n1", 10)
        sent = [0]

        def blast() -> None:  # sends until told to stop (never more than it is allowed)
            with socket.create_connection(("127.0.0.1", fport)) as s:
                s.settimeout(0.2)
                block = b"x" * MiB
                while not stop.is_set() and sent[0] < 256 * MiB:
                    with contextlib.suppress(socket.timeout):
                        sent[0] += s.send(block)

        th = threading.Thread(target=blast, daemon=True)
        th.start()
        try:
            await asyncio.sleep(3.0)
            assert seen.get("ahead", 0) > WRITE_HIGH_WATER, seen  # the case under test happened
            queued = seen["tw"].queued()
            # Bounded by what was read ahead plus one read past the high-water mark.
            assert queued <= seen["ahead"] + WRITE_HIGH_WATER + READ_BUFFER_MAX, (queued, sent[0])
            assert not seen["transport"].is_reading()
            assert sent[0] < 128 * MiB  # the sender was held back by TCP, not buffered by us
        finally:
            stop.set()
            await asyncio.to_thread(th.join, 5)
            for w in held:
                w.close()
            fwd.close()
            target.close()
            await agent.stop()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(agent_task, 5)
            await srv.close()

    asyncio.run(asyncio.wait_for(main(), 60))
