"""Time `lab up` and `lab down` of a 10-node topology (target: up <= 5 s on 2 cores).

Prints, per round, when each node became ready (seconds since the start of
`up`), the totals for up and down, and seconds per node. By default only the
network is built (what the lab itself does); ``--roles`` also starts edgectl
server/agent in the nodes and waits until they are Ready. Run as root:
    .venv/bin/python bench/lab_up.py [--rounds 3] [--roles]
"""
from __future__ import annotations

import argparse
import statistics
import time

from edgectl.lab.api import Lab
from edgectl.lab.testing import unique_name

# 1 server and 1 host on the WAN, 2 NAT routers with 3 agents behind each: 10 nodes, 3 networks.
TOPOLOGY = {
    "name": "bench",
    "networks": {"wan": {"cidr": "198.18.0.0/24"}, "site1": {"cidr": "192.168.1.0/24"},
                 "site2": {"cidr": "192.168.2.0/24", "rate": "100mbit"}},
    "nodes": {
        "server": {"kind": "server", "networks": ["wan"]},
        "wanhost": {"networks": ["wan"]},
        **{f"router{s}": {"kind": "router", "networks": ["wan", f"site{s}"],
                          "nat": {"from": [f"site{s}"], "to": "wan"}, "firewall": {"inbound": "deny"}}
           for s in (1, 2)},
        **{f"agent{s}{i}": {"kind": "agent", "networks": [f"site{s}"], "gateway": f"router{s}"}
           for s in (1, 2) for i in (1, 2, 3)},
    },
}


def one_round(*, roles: bool) -> tuple[float, float, dict[str, float]]:
    ready: dict[str, float] = {}

    def progress(node: str, event: str, t: float) -> None:
        if event == "ready" or (roles and event == "role"):
            ready[node] = t

    t0 = time.perf_counter()
    lab = Lab.up(TOPOLOGY, name=unique_name("bench"), progress=progress, roles=roles)
    t_up = time.perf_counter() - t0
    try:
        assert lab.probe("agent11", "server", 9000, listen=True).reachable  # it really works
    finally:
        t1 = time.perf_counter()
        lab.down()
        t_down = time.perf_counter() - t1
    return t_up, t_down, ready


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--roles", action="store_true", help="also start edgectl server/agent and wait for Ready")
    args = ap.parse_args()
    ups, downs = [], []
    n = len(TOPOLOGY["nodes"])
    for r in range(1, args.rounds + 1):
        t_up, t_down, ready = one_round(roles=args.roles)
        ups.append(t_up)
        downs.append(t_down)
        per_node = "  ".join(f"{k}={v:.3f}" for k, v in sorted(ready.items(), key=lambda kv: kv[1]))
        print(f"round {r}: node ready at (s since start): {per_node}")
        print(f"round {r}: up {t_up:.3f}s ({t_up / n:.3f} s/node)  down {t_down:.3f}s ({t_down / n:.3f} s/node)")
    what = "network + roles" if args.roles else "network only"
    print(f"{n} nodes ({what}), median of {args.rounds}: up {statistics.median(ups):.3f}s "
          f"({statistics.median(ups) / n:.3f} s/node), down {statistics.median(downs):.3f}s "
          f"({statistics.median(downs) / n:.3f} s/node); target up <= 5 s")


if __name__ == "__main__":
    main()
