"""Join cost: one agent join, 50 concurrent joins, and a restart re-join.

Real HTTPS (common/httpd.py) with the real JoinService; node-password hashes
are kept in memory here, so storage latency is not included. Prints figures;
the issue's targets are "agent start to Node Ready <= 10 s" and "50
concurrent joins without errors".
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgectl.agent.join import join
from edgectl.httpd import HTTPServer, Router
from edgectl.joinproto import ClusterConfig
from edgectl.server.join import JoinService, NodePasswordExists, hash_password
from edgectl.server.pki import ClusterPKI
from edgectl.server.token import load_or_create_token


class Passwords:
    def __init__(self) -> None:
        self.hashes: dict[str, str] = {}

    async def get(self, node: str) -> str | None:
        return self.hashes.get(node)

    async def create(self, node: str, password_hash: str) -> None:
        if node in self.hashes:
            raise NodePasswordExists(node)
        self.hashes[node] = password_hash


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-join-") as tmp:
        return run(Path(tmp))


def run(tmp: Path) -> int:
    t_pki = timed(lambda: ClusterPKI.load_or_create(tmp / "tls-cold", sans=[]))
    pki = ClusterPKI.load_or_create(tmp / "server" / "tls", sans=[])
    t_pki_warm = timed(lambda: ClusterPKI.load_or_create(tmp / "server" / "tls", sans=[]))
    token = str(load_or_create_token(tmp / "server", pki.ca_pem))
    t_hash = timed(lambda: hash_password("x"))

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    router = Router()
    server_box: list[HTTPServer] = []

    async def start() -> int:
        JoinService(pki=pki, token=load_or_create_token(tmp / "server", pki.ca_pem), passwords=Passwords(),
                    config=ClusterConfig()).mount(router)
        server = HTTPServer(router, ssl_context=pki.server_ssl_context())
        server_box.append(server)
        return (await server.start("127.0.0.1", 0))[1]

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    url = f"https://127.0.0.1:{port}"

    def one(i: int) -> float:
        return timed(lambda: join(server_url=url, token=token, data_dir=tmp / f"n{i}", node_name=f"edge-{i}", timeout=60))

    single = [one(1000 + i) for i in range(5)]
    rejoin = [one(1000) for _ in range(5)]
    with ThreadPoolExecutor(50) as pool:
        start_all = time.perf_counter()
        burst = list(pool.map(one, range(50)))
        wall = time.perf_counter() - start_all

    asyncio.run_coroutine_threadsafe(server_box[0].close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)

    burst.sort()
    print(f"PKI create (2 CAs + 3 leaves):   {t_pki * 1000:7.1f} ms   (warm load {t_pki_warm * 1000:.1f} ms)")
    print(f"scrypt hash of a node password:  {t_hash * 1000:7.1f} ms")
    print(f"single join, median of 5:        {statistics.median(single) * 1000:7.1f} ms")
    print(f"restart re-join, median of 5:    {statistics.median(rejoin) * 1000:7.1f} ms")
    print(f"50 concurrent joins: wall {wall:.2f} s, p50 {burst[24] * 1000:.0f} ms, p95 {burst[47] * 1000:.0f} ms, "
          f"max {burst[-1] * 1000:.0f} ms, errors 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
