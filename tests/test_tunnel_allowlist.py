"""Agent-side egress modes (k3s egress-selector style) and target parsing."""
from __future__ import annotations

import ipaddress

import pytest

from edgectl.tunnel.allowlist import AllowList, BadTarget, EgressMode, parse_target

POD = (ipaddress.ip_network("10.42.1.0/24"),)
CLUSTER = (ipaddress.ip_network("10.42.0.0/16"),)


def allowed(al: AllowList, target: str) -> bool:
    return al.check(target)[1] is None


@pytest.mark.parametrize(
    "target, agent, pod, cluster",
    [
        ("tcp/127.0.0.1:10250", True, True, True),
        ("tcp/127.0.0.9:10250", True, True, True),
        ("tcp/[::1]:10250", True, True, True),
        ("tcp/127.0.0.1:22", False, False, False),
        ("tcp/10.42.1.7:8080", False, True, True),
        ("tcp/10.42.9.7:8080", False, False, True),
        ("tcp/192.168.1.1:80", False, False, False),
    ],
)
def test_modes(target: str, agent: bool, pod: bool, cluster: bool) -> None:
    assert allowed(AllowList(), target) is agent  # default mode is agent
    assert allowed(AllowList(mode=EgressMode.POD, pod_cidrs=POD, cluster_cidrs=CLUSTER), target) is pod
    assert allowed(AllowList(mode=EgressMode.CLUSTER, pod_cidrs=POD, cluster_cidrs=CLUSTER), target) is cluster
    assert not allowed(AllowList(mode=EgressMode.DISABLED, pod_cidrs=POD, cluster_cidrs=CLUSTER), target)


def test_extra_loopback_ports_and_reasons() -> None:
    al = AllowList(loopback_ports=(10010,))
    assert allowed(al, "tcp/127.0.0.1:10010")
    target, reason = al.check("tcp/10.0.0.1:10250")
    assert target is not None and reason == "tcp/10.0.0.1:10250 is not allowed in egress mode 'agent'"
    assert AllowList(mode=EgressMode.DISABLED).check("tcp/127.0.0.1:10250")[1] == "tunnel egress is disabled on this agent"


@pytest.mark.parametrize(
    "bad, words",
    [
        ("udp/127.0.0.1:53", "expected tcp"),
        ("127.0.0.1:10250", "expected tcp"),
        ("tcp/localhost:10250", "IP address"),
        ("tcp/127.0.0.1", "port"),
        ("tcp/127.0.0.1:0", "port"),
        ("tcp/127.0.0.1:70000", "port"),
        ("tcp/[::1]:x", "port"),
    ],
)
def test_bad_targets(bad: str, words: str) -> None:
    with pytest.raises(BadTarget, match=words):
        parse_target(bad)
    target, reason = AllowList().check(bad)
    assert target is None and reason is not None and words in reason


def test_ipv6_target_round_trip() -> None:
    assert str(parse_target("tcp/[::1]:10250")) == "tcp/[::1]:10250"
