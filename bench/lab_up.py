"""Time `lab up` and `lab down` of a 10-node topology (target: up <= 5 s on 2 cores).

Prints, per round, when each node became ready (seconds since the start of
`up`), the totals for up and down, and seconds per node. Run as root:
    .venv/bin/python bench/lab_up.py [--rounds 3]
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


def one_round() -> tuple[float, float, dict[str, float]]:
    ready: dict[str, float] = {}
    t0 = time.perf_counter()
    lab = Lab.up(TOPOLOGY, name=unique_name("bench"), progress=lambda n, e, t: ready.__setitem__(n, t) if e == "ready" else None)
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
    args = ap.parse_args()
    ups, downs = [], []
    n = len(TOPOLOGY["nodes"])
    for r in range(1, args.rounds + 1):
        t_up, t_down, ready = one_round()
        ups.append(t_up)
        downs.append(t_down)
        per_node = "  ".join(f"{k}={v:.3f}" for k, v in sorted(ready.items(), key=lambda kv: kv[1]))
        print(f"round {r}: node ready at (s since start): {per_node}")
        print(f"round {r}: up {t_up:.3f}s ({t_up / n:.3f} s/node)  down {t_down:.3f}s ({t_down / n:.3f} s/node)")
    print(f"{n} nodes, median of {args.rounds}: up {statistics.median(ups):.3f}s "
          f"({statistics.median(ups) / n:.3f} s/node), down {statistics.median(downs):.3f}s "
          f"({statistics.median(downs) / n:.3f} s/node); target up <= 5 s")


if __name__ == "__main__":
    main()
