"""Lab lifecycle: isolation, publishing, exec, clean teardown, rollback, leftovers and bad input."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgectl.lab import netns, state
from edgectl.lab.api import Lab
from edgectl.lab.errors import LabError
from edgectl.lab.testing import free_port, need_root, unique_name

pytestmark = pytest.mark.lab
EDGECTL = [str(Path(sys.executable).parent / "edgectl")]

TWO = {
    "name": "x",
    "networks": {"net": {"cidr": "198.18.7.0/24"}},
    "nodes": {
        "a": {"kind": "server", "networks": {"net": "198.18.7.10"}, "config": {"node-label": ["zone=a"]},
              "publish": ["7100:17100", "7101:17101"]},
        "b": {"networks": {"net": "198.18.7.20"}},
    },
}


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def gone(pid: int) -> bool:
    st = netns._stat(pid)
    return st is None or st[0] == "Z"  # a zombie holds nothing; init reaps it


def edgectl(*args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([*EDGECTL, *args], capture_output=True, text=True, timeout=60, **kw)


def test_nodes_are_isolated_and_get_their_config(lab_factory) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(TWO, prefix="iso", roles=False)
    assert lab.exec("a", ["hostname"]).stdout.strip() == "a"
    # /etc/edgectl/config.yaml holds the node's `config:`.
    assert yaml.safe_load(lab.exec("a", ["cat", "/etc/edgectl/config.yaml"], check=True).stdout) == {"node-label": ["zone=a"]}
    # Private /run, /etc/edgectl, /var/lib/edgectl, /etc/cni/net.d, /var/log per node.
    for path in ("/run/flannel/x", "/etc/edgectl/x", "/var/lib/edgectl/x", "/etc/cni/net.d/x", "/var/log/x"):
        lab.exec("a", ["sh", "-c", f"echo a > {path}"], check=True)
        assert lab.exec("b", ["cat", path]).returncode != 0, f"{path} leaked from node a to node b"
        assert not Path(path).exists() or Path(path).read_text() != "a\n", f"{path} leaked to the host"
    # Nodes resolve each other by name.
    assert lab.exec("b", ["getent", "hosts", "a"]).stdout.split()[0] == "198.18.7.10"
    assert lab.exec("a", ["ip", "-o", "addr", "show", "net"]).stdout.count("198.18.7.10/24") == 1


def test_publish_reaches_a_node_service_from_host_loopback(lab_factory) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(TWO, prefix="pub", roles=False)
    # One service on the node's loopback/any address, one bound only to the node's address.
    lab.popen("a", ["socat", "TCP-LISTEN:7100,reuseaddr,fork", "SYSTEM:echo hello-from-$(hostname)"])
    lab.popen("a", ["socat", "TCP-LISTEN:7101,reuseaddr,fork,bind=198.18.7.10", "SYSTEM:echo bound"])
    lab.wait_port("a", 7100)
    lab.wait_port("a", 7101, host="198.18.7.10")
    for node_port, want in ((7100, b"hello-from-a\n"), (7101, b"bound\n")):
        with socket.create_connection(("127.0.0.1", lab.host_port("a", node_port)), timeout=5) as s:
            assert s.recv(100) == want
    assert lab.host_port("a", 7100) != 17100  # the fixture picked free ports


def test_exec_passes_exit_code_and_output(lab_factory) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(TWO, prefix="exec", roles=False)
    res = edgectl("lab", "exec", f"{lab.name}/b", "--", "sh", "-c", "hostname; exit 7")
    assert res.returncode == 7 and res.stdout.strip() == "b", res
    assert lab.exec("b", "exit 3").returncode == 3
    res = edgectl("lab", "exec", f"{lab.name}/nope", "--", "true")
    assert res.returncode != 0 and "no node 'nope'" in res.stderr


def test_probe_cli_exit_codes(lab_factory) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(TWO, prefix="probe", roles=False)
    ok = edgectl("lab", "probe", f"{lab.name}/b", "a:7200", "--listen")
    assert ok.returncode == 0 and "reachable" in ok.stdout, ok
    refused = edgectl("lab", "probe", f"{lab.name}/b", "198.18.7.10:7201")
    assert refused.returncode == 3 and "refused" in refused.stdout, refused
    blocked = edgectl("lab", "probe", f"{lab.name}/b", "198.18.7.99:7202", "--timeout", "0.3")
    assert blocked.returncode == 1 and "blocked" in blocked.stdout, blocked


def test_down_leaves_no_namespace_interface_process_or_state() -> None:
    need_root()
    links_before = root_links()
    lab = Lab.up({**TWO, "nodes": {**TWO["nodes"], "a": {**TWO["nodes"]["a"], "publish": [f"7100:{free_port()}"]}}},
                 name=unique_name("down"), roles=False)
    try:
        ours = {f"{lab.name}-switch", f"{lab.name}-a", f"{lab.name}-b"}
        assert ours <= set(netns.list_netns())
        assert not (root_links() - links_before) & {"net", "v0_0", "v1_0"}, "lab interfaces in the root namespace"
        child = lab.popen("b", ["sleep", "1000"])  # our child: down() must end and reap it
        lab.exec("a", "setsid sleep 1001 </dev/null >/dev/null 2>&1 &", check=True)  # not our child
        deadline = time.monotonic() + 5
        while not (detached := [p for p in netns.pids_with_cmdline_prefix("sleep 1001")
                                if netns.ns_inode(p, "net") == netns.ns_inode(lab.pid("a"), "net")]):
            assert time.monotonic() < deadline, "the detached sleep did not start"
            time.sleep(0.01)
        pids = [lab.pid("a"), lab.pid("b"), lab.state.switch.anchor.pid, lab.state.forwarder.pid, child.pid, *detached]
    finally:
        report = lab.down()
    assert set(report.netns) == ours
    assert not ours & set(netns.list_netns())
    assert not {"net", "v0_0", "v1_0"} & root_links()
    still = [p for p in pids if not gone(p)]
    assert not still, f"processes left: {[(p, netns.cmdline(p)) for p in still]}"
    assert child.poll() is not None
    assert not netns.pids_with_cmdline_prefix(f"edgectl-lab: {lab.name}/")
    assert not state.state_file(lab.name).exists() and not state.lab_dir(lab.name).exists()


def test_up_twice_is_an_error_and_down_finds_crash_leftovers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    need_root()
    name = unique_name("twice")
    topo = tmp_path / "t.yaml"
    topo.write_text(yaml.safe_dump({**TWO, "name": name, "nodes": {"b": TWO["nodes"]["b"]}}))  # a host: no roles
    try:
        first = edgectl("lab", "up", str(topo))
        assert first.returncode == 0, first.stderr
        assert f"lab {name} is up" in first.stdout
        second = edgectl("lab", "up", str(topo))
        assert second.returncode != 0 and "exists" in second.stderr and second.stderr.count("\n") == 1, second
        # A crash that lost the state file: `lab down NAME` still finds namespaces and anchors by name.
        anchor = Lab.attach(name).pid("b")
        state.state_file(name).unlink()
        res = edgectl("lab", "down", name)
        assert res.returncode == 0, res.stderr
        assert not [ns for ns in netns.list_netns() if ns.startswith(name + "-")]
        assert gone(anchor)
    finally:
        edgectl("lab", "down", name)


def test_failed_create_rolls_back_completely() -> None:
    need_root()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    name = unique_name("rollback")
    before = set(netns.list_netns())
    try:
        with pytest.raises(LabError, match=f"cannot listen on 127.0.0.1:{port}"):
            Lab.up({**TWO, "nodes": {**TWO["nodes"], "a": {"networks": ["net"], "publish": [f"80:{port}"]}}}, name=name,
                   roles=False)
    finally:
        busy.close()
    assert set(netns.list_netns()) - before == set()
    assert not netns.pids_with_cmdline_prefix(f"edgectl-lab: {name}/")
    assert not state.state_file(name).exists() and not state.lab_dir(name).exists()


def test_ctrl_c_during_up_rolls_back() -> None:
    need_root()
    name = unique_name("intr")
    before = set(netns.list_netns())

    def interrupt(node: str, event: str, t: float) -> None:
        if event == "anchor" and node == "a":  # anchors exist, namespaces are not yet named
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Lab.up(TWO, name=name, progress=interrupt, roles=False)
    assert set(netns.list_netns()) - before == set()
    assert not netns.pids_with_cmdline_prefix(f"edgectl-lab: {name}/")
    assert not state.state_file(name).exists()


def test_status_json_and_node_resolution(lab_factory) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(TWO, prefix="status", roles=False)
    res = edgectl("lab", "status", lab.name, "-o", "json")
    assert res.returncode == 0, res.stderr
    (doc,) = json.loads(res.stdout)
    a = next(n for n in doc["nodes"] if n["name"] == "a")
    assert a["running"] and a["addresses"] == {"net": "198.18.7.10/24"} and a["kind"] == "server"
    assert a["publish"] == [f"127.0.0.1:{lab.host_port('a', 7100)}->7100", f"127.0.0.1:{lab.host_port('a', 7101)}->7101"]
