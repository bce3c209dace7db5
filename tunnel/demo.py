"""Thin standalone entry points, for lab tests, benchmarks and trying the tunnel
before the API server and agent mount it::

    python -m edgectl.tunnel.demo serve --listen 0.0.0.0:7443 --cert s.crt --key s.key \\
        --token T --admin-token A --forward 127.0.0.1:9000=agent1:tcp/127.0.0.1:7000
    python -m edgectl.tunnel.demo connect --server https://198.18.0.10:7443 --node agent1 \\
        --token T --ca ca.crt --kubelet-port 7000
    python -m edgectl.tunnel.demo echo --listen 127.0.0.1:7000

``--forward LISTEN=NODE:TARGET`` opens a TCP listener on the server side; every
connection to it is dialed through NODE's tunnel to TARGET (the way the API
server will reach a kubelet).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from .. import log as elog
from .agent import AgentConfig, TunnelAgent, client_ssl_context
from .allowlist import AllowList, EgressMode
from .errors import DialError
from .loop import run
from .pipe import pipe_tcp
from .server import ServerConfig
from .session import SessionConfig
from .standalone import server_ssl_context, start_standalone

log = logging.getLogger("edgectl.tunnel.demo")


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(args: argparse.Namespace) -> None:
    host, port = _hostport(args.listen)
    ctx = server_ssl_context(args.cert, args.key) if args.cert else None
    cfg = ServerConfig(admissions_per_second=args.admission_rate, admission_burst=max(1, int(args.admission_rate * 2)))
    srv = await start_standalone(token=args.token, admin_token=args.admin_token, ssl_context=ctx, host=host, port=port, config=cfg)
    print(f"listening {srv.url}", flush=True)
    forwards = []
    for spec in args.forward or []:
        listen, _, dest = spec.partition("=")
        node, _, target = dest.partition(":")
        fhost, fport = _hostport(listen)

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, node: str = node, target: str = target) -> None:
            try:
                tr, tw = await srv.tunnel.dial(node, target)
            except DialError as exc:
                log.warning("forward dial failed", extra=elog.fields(node=node, target=target, reason=exc.reason, error=str(exc)))
                w.close()
                return
            await pipe_tcp(r, w, tr, tw)

        fsrv = await asyncio.start_server(handle, fhost, fport, backlog=4096, limit=4 * 1024 * 1024)
        forwards.append(fsrv)
        print(f"forward {listen} -> {node}:{target}", flush=True)
    try:
        await _until_signal()
    finally:
        for f in forwards:
            f.close()
        await srv.close()


async def connect(args: argparse.Namespace) -> None:
    ctx = client_ssl_context(ca_file=args.ca) if args.server.startswith("https") else None
    allow = AllowList(mode=EgressMode(args.egress), kubelet_port=args.kubelet_port, loopback_ports=tuple(args.allow_port or ()))
    session = SessionConfig(identity=args.node, ping_interval=args.ping_interval, dead_after=args.ping_interval * 3)
    agent = TunnelAgent(AgentConfig(server=args.server, node=args.node, token=args.token, proxy=args.proxy, allow=allow, session=session), ssl_context=ctx)
    task = asyncio.create_task(agent.run())
    try:
        await _until_signal()
    finally:
        await agent.stop()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 5)


async def echo(args: argparse.Namespace) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await r.read(1 << 20):
                w.write(data)
                await w.drain()
            w.write_eof()
        w.close()

    host, port = _hostport(args.listen)
    srv = await asyncio.start_server(handle, host, port, backlog=4096, limit=4 * 1024 * 1024)
    print(f"echo {host}:{port}", flush=True)
    async with srv:
        await _until_signal()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m edgectl.tunnel.demo")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--listen", default="127.0.0.1:7443")
    s.add_argument("--cert")
    s.add_argument("--key")
    s.add_argument("--token", required=True)
    s.add_argument("--admin-token", required=True)
    s.add_argument("--forward", action="append", metavar="LISTEN=NODE:TARGET")
    s.add_argument("--admission-rate", type=float, default=50.0)
    c = sub.add_parser("connect")
    c.add_argument("--server", required=True)
    c.add_argument("--node", required=True)
    c.add_argument("--token", required=True)
    c.add_argument("--ca")
    c.add_argument("--proxy")
    c.add_argument("--egress", default="agent", choices=[m.value for m in EgressMode])
    c.add_argument("--kubelet-port", type=int, default=10250)
    c.add_argument("--allow-port", type=int, action="append")
    c.add_argument("--ping-interval", type=float, default=10.0)
    e = sub.add_parser("echo")
    e.add_argument("--listen", default="127.0.0.1:7000")
    args = p.parse_args(argv)
    elog.setup("info")
    run({"serve": serve, "connect": connect, "echo": echo}[args.cmd](args))


if __name__ == "__main__":
    main()
