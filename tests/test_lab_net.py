"""Lab network semantics with real namespaces, NAT, firewalls and tc: what later issues rely on.

The examples are brought up with ``roles=False``: these tests are about the
network, so no edgectl server/agent runs in the nodes.
"""
from __future__ import annotations

import json

import pytest

from edgectl.lab.api import Lab

pytestmark = pytest.mark.lab

# A TCP and a UDP service that answer with the address the connection came from.
TCP_PEER = ["socat", "TCP-LISTEN:7000,reuseaddr,fork", "SYSTEM:echo $SOCAT_PEERADDR"]
UDP_PEER = ["socat", "UDP-RECVFROM:7001,fork", "SYSTEM:echo $SOCAT_PEERADDR"]


def start_peer_services(lab: Lab, node: str) -> None:
    lab.popen(node, TCP_PEER)
    lab.popen(node, UDP_PEER)
    lab.wait_port(node, 7000)
    lab.wait_listening(node, 7001, udp=True)


def tcp_peer(lab: Lab, src: str, ip: str) -> str:
    res = lab.exec(src, ["socat", "-T3", "-", f"TCP:{ip}:7000"], input="", check=True)
    return res.stdout.strip()


def udp_peer(lab: Lab, src: str, ip: str) -> str:
    for _ in range(20):  # the UDP service may still be starting; UDP has no handshake to wait on
        res = lab.exec(src, ["socat", "-T0.5", "-", f"UDP:{ip}:7001"], input="ping\n")
        if res.stdout.strip():
            return res.stdout.strip()
    raise AssertionError(f"no UDP reply from {ip}: {res.stderr}")


def test_nat_host_reaches_wan_over_tcp_and_udp_and_wan_cannot_reach_it(lab_factory) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory("nat-edge", roles=False)
    server_ip = lab.node_ip("server", "wan")
    router_wan = lab.node_ip("router1", "wan")
    start_peer_services(lab, "server")

    # The server sees the NAT router's WAN address, not 192.168.1.10: masquerading works.
    assert tcp_peer(lab, "agent1", server_ip) == router_wan
    assert udp_peer(lab, "agent1", server_ip) == router_wan
    # A host directly on the WAN is seen as itself (the service really reports the peer).
    assert tcp_peer(lab, "wan-agent", server_ip) == lab.node_ip("wan-agent")

    # A real listener behind the NAT, reachable from its own site ...
    lab.popen("agent1", ["socat", "TCP-LISTEN:7002,reuseaddr,fork", "SYSTEM:echo inside"])
    lab.wait_port("agent1", 7002)
    agent_ip = lab.node_ip("agent1")
    assert lab.probe("router1", agent_ip, 7002).outcome == "reachable"
    # ... but not from the WAN: no route to a private network ...
    assert lab.probe("server", agent_ip, 7002, timeout=1).outcome == "blocked"
    # ... and even with a route via the router, its firewall drops new inbound
    # connections; the probe times out (no RST, no ICMP).
    lab.exec("server", ["ip", "route", "add", "192.168.1.0/24", "via", router_wan], check=True)
    res = lab.probe("server", agent_ip, 7002, timeout=1)
    assert res.outcome == "blocked" and "no answer" in res.detail, res
    # The router itself is closed from outside too (INPUT), but open to replies.
    assert lab.probe("server", router_wan, 22, timeout=0.5).outcome == "blocked"


def test_nat_without_firewall_lets_routed_inbound_through(lab_factory) -> None:  # type: ignore[no-untyped-def]
    """The contrast case: the probe does report reachable, so 'blocked' above means something."""
    lab = lab_factory({
        "name": "x",
        "networks": {"wan": {"cidr": "198.18.0.0/24"}, "lan": {"cidr": "192.168.9.0/24"}},
        "nodes": {
            "r": {"kind": "router", "networks": {"wan": "198.18.0.1", "lan": "192.168.9.1"},
                  "nat": {"from": ["lan"], "to": "wan"}},
            "inside": {"networks": {"lan": "192.168.9.10"}, "gateway": "r"},
            "outside": {"networks": {"wan": "198.18.0.10"}},
        },
    }, prefix="nofw")
    lab.exec("outside", ["ip", "route", "add", "192.168.9.0/24", "via", "198.18.0.1"], check=True)
    assert lab.probe("outside", "inside", 7003, listen=True).outcome == "reachable"
    assert lab.probe("outside", "inside", 7004, listen=True, udp=True).outcome == "reachable"


def test_double_nat_reaches_the_wan(lab_factory) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory("double-nat", roles=False)
    server_ip = lab.node_ip("server", "wan")
    start_peer_services(lab, "server")
    cgnat_wan = lab.node_ip("cgnat", "wan")
    assert tcp_peer(lab, "agent", server_ip) == cgnat_wan
    assert udp_peer(lab, "agent", server_ip) == cgnat_wan
    # Neither the WAN nor the ISP network can open a connection to the agent.
    assert lab.probe("server", "agent", 7005, listen=True, timeout=0.5).outcome == "blocked"
    assert lab.probe("cgnat", "agent", 7006, listen=True, timeout=0.5).outcome == "blocked"
    assert lab.probe("agent", "server", 7007, listen=True).outcome == "reachable"


@pytest.mark.slow
def test_rate_limited_segment_measures_about_20mbit(lab_factory) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory({
        "name": "x",
        # "n" also guards against ip reading a short device name as a keyword ("name").
        "networks": {"n": {"cidr": "198.18.5.0/24", "rate": "20mbit", "mtu": 1400}},
        "nodes": {"a": {"networks": ["n"]}, "b": {"networks": ["n"]}},
    }, prefix="rate")
    b_ip = lab.node_ip("b")
    server = lab.popen("b", ["iperf3", "-s", "-1", "-B", b_ip])
    try:
        lab.wait_listening("b", 5201)
        res = lab.exec("a", ["iperf3", "-c", b_ip, "-t", "3", "-J"], timeout=30, check=True)
    finally:
        server.kill()
        server.wait()
    mbit = json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    assert 14 <= mbit <= 26, f"measured {mbit:.1f} Mbit/s on a 20mbit segment"
