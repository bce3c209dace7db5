"""Publishing node ports on the host's loopback: ``publish: ["6443:16443"]``.

One forwarder process per lab listens on 127.0.0.1:<host port> in the root
namespace. For each accepted connection it creates the upstream socket inside
the node's network namespace (:func:`edgectl.lab.netns.socket_in`) and
connects to the node's loopback, then to the node's own addresses, at the
node port. No address, route or rule is added to the root namespace.

Run as ``python -m edgectl.lab.publish --lab L NETNS:NODEPORT:HOSTPORT[:ADDR,...] ...``;
it prints ``ready`` once every listener is bound, or one ``error:`` line.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import LabError
from .netns import ProcRef, ready_ref, socket_in, starter_output

MARKER = "edgectl.lab.publish"


@dataclass(frozen=True, kw_only=True)
class Forward:
    netns: str
    node_port: int
    host_port: int
    addresses: tuple[str, ...] = ()  # tried after 127.0.0.1, for services bound to one address

    def to_arg(self) -> str:
        return f"{self.netns}:{self.node_port}:{self.host_port}:{','.join(self.addresses)}"

    @classmethod
    def from_arg(cls, arg: str) -> Forward:
        netns, node_port, host_port, addrs = arg.split(":")
        return cls(netns=netns, node_port=int(node_port), host_port=int(host_port),
                   addresses=tuple(a for a in addrs.split(",") if a))


def start(*, lab: str, forwards: list[Forward], log_path: Path, timeout: float = 10.0) -> ProcRef:
    """Start the lab's forwarder (detached, like the anchors) and wait until it listens."""
    argv = ["setsid", "-f", sys.executable, "-m", MARKER, "--lab", lab, *(f.to_arg() for f in forwards)]
    with open(log_path, "ab") as log:
        # cwd=/: `python -m` puts the cwd first on sys.path; it must not shadow edgectl.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd="/")
    lines, _ = starter_output(proc, timeout=timeout,
                             too_slow=f"lab {lab}: port forwarder did not start within {timeout:.0f}s (log: {log_path})")
    for line in lines:
        if ref := ready_ref(line):
            return ref
        if line.startswith("error: "):
            raise LabError(f"lab {lab}: publish: {line[7:]}")
    raise LabError(f"lab {lab}: port forwarder exited (log: {log_path})")


# ---------------------------------------------------------------- the forwarder process


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # keep half-close semantics (e.g. HTTP/1.0 clients)
    except OSError:
        writer.close()


async def _upstream(fwd: Forward) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for host in ("127.0.0.1", *fwd.addresses):
        sock = socket_in(fwd.netns)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, fwd.node_port)), 5)
        except (OSError, asyncio.TimeoutError) as exc:
            sock.close()
            last = exc if isinstance(exc, OSError) else TimeoutError(f"{host}:{fwd.node_port} timed out")
            continue
        return await asyncio.open_connection(sock=sock)
    assert last is not None
    raise last


def _handler(fwd: Forward):  # type: ignore[no-untyped-def]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await _upstream(fwd)
        except OSError as exc:
            print(f"{fwd.netns}:{fwd.node_port}: {exc}", file=sys.stderr, flush=True)
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
        finally:
            for w in (writer, up_w):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()

    return handle


async def _serve(forwards: list[Forward]) -> None:
    servers = []
    for fwd in forwards:
        try:
            servers.append(await asyncio.start_server(_handler(fwd), "127.0.0.1", fwd.host_port, reuse_address=True))
        except OSError as exc:
            print(f"error: cannot listen on 127.0.0.1:{fwd.host_port}: {exc.strerror}", flush=True)
            sys.exit(1)
    print(f"ready {os.getpid()}", flush=True)
    # Detach from the starter's pipe so it sees EOF and we never block on it.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MARKER}")
    parser.add_argument("--lab", required=True, help="lab name (marks the process for `lab down`)")
    parser.add_argument("forward", nargs="+", help="NETNS:NODEPORT:HOSTPORT[:ADDR,...]")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve([Forward.from_arg(a) for a in args.forward]))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
