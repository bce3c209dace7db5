"""Create a lab from a plan, and destroy one (which is also the rollback of a failed create).

Creation is batched for speed: all anchors start in parallel, one ``ip``
process names every namespace, one ``ip -batch`` builds the whole switch, and
the nodes are configured in parallel (one ``ip -batch`` each, plus ``tc`` and
``iptables-restore`` where needed). Nothing sleeps; every step waits only for
the commands it ran.

:func:`destroy` never needs a complete state: it also finds anchors and
forwarders by their command line and namespaces by name, so it cleans up
after a crashed or interrupted ``lab up`` as well.
"""
from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgectl.paths import LAB_STATE_DIR

from . import netns, plan, publish, state
from .errors import LabError, LabExists
from .topology import Topology

# progress(node, event, seconds since start); events: "anchor", "ready", "role", "down"
Progress = Callable[[str, str, float], None]


@dataclass(frozen=True, kw_only=True)
class DownReport:
    lab: str
    netns: tuple[str, ...]
    processes: int
    seconds: float


def hosts_file(topo: Topology) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for node in topo.nodes:
        first = node.attachments[0]
        lines.append(f"{first.address}\t{node.name}")
        lines += [f"{a.address}\t{node.name}.{a.network}" for a in node.attachments]
    return "\n".join(lines) + "\n"


def create(topo: Topology, *, progress: Progress | None = None, root: Path = LAB_STATE_DIR) -> state.LabState:
    """Build the lab; on any failure (or Ctrl-C) remove everything created so far, then re-raise."""
    t0 = time.monotonic()
    say = progress or (lambda node, event, t: None)
    lab_plan = plan.build(topo)
    if state.state_file(topo.name, root).exists():
        raise LabExists(f"lab {topo.name!r} exists; remove it first with `edgectl lab down {topo.name}`")
    taken = sorted(set(netns.list_netns()) & {lab_plan.switch_netns, *(n.netns for n in lab_plan.nodes)})
    if taken:
        owner = _netns_owner(taken[0], root)
        if owner is not None and owner != topo.name:
            # "a" + node "b-c" and lab "a-b" + node "c" both make namespace "a-b-c".
            raise LabExists(f"lab {topo.name!r}: network namespace {taken[0]} belongs to lab {owner!r} "
                            "(lab and node names joined by '-' collide); rename this lab or the node")
        raise LabExists(f"lab {topo.name!r}: network namespace {taken[0]} already exists (leftover? `edgectl lab down {topo.name}`)")
    st = state.LabState(
        name=topo.name, source=topo.source, created=time.time(), status="creating", token=secrets.token_hex(16),
        topology=topo.to_doc(), switch=state.NodeState(name=plan.SWITCH, kind="switch", netns=lab_plan.switch_netns),
        nodes={n.name: state.NodeState(name=n.name, kind=n.kind, netns=n.netns) for n in lab_plan.nodes},
    )
    try:
        state.create(st, root)
    except FileExistsError:
        raise LabExists(f"lab {topo.name!r} exists; remove it first with `edgectl lab down {topo.name}`") from None
    try:
        _build(topo, lab_plan, st, say, t0, root)
    except BaseException:
        destroy(topo.name, root=root)
        raise
    return st


def _build(topo: Topology, lab_plan: plan.LabPlan, st: state.LabState, say: Progress, t0: float, root: Path) -> None:
    # 1. Per-node directories that become /etc/edgectl, /var/lib/edgectl, ... inside the node.
    hosts = hosts_file(topo)
    for node in topo.nodes:
        d = state.node_dir(topo.name, node.name, root)
        netns.prepare_node_dir(d, hosts)
        if node.config:
            (d / "etc-edgectl" / "config.yaml").write_text(yaml.safe_dump(dict(node.config), sort_keys=False))

    # 2. Anchors, all at once.
    errors: list[LabError] = []
    pending: dict[str, subprocess.Popen[bytes]] = {}

    def collect(name: str) -> None:
        proc = pending.pop(name)
        try:
            ref = netns.wait_anchor(proc, what=f"lab {topo.name} node {name}")
        except LabError as exc:
            errors.append(exc)
            return
        (st.switch if name == plan.SWITCH else st.nodes[name]).anchor = ref

    try:
        pending[plan.SWITCH] = netns.spawn_anchor(lab=topo.name, node=plan.SWITCH, node_dir=None, forward=False)
        for node in topo.nodes:
            pending[node.name] = netns.spawn_anchor(lab=topo.name, node=node.name, forward=node.kind == "router",
                                                    node_dir=state.node_dir(topo.name, node.name, root))
        for name in list(pending):
            collect(name)
            say(name, "anchor", time.monotonic() - t0)
    finally:
        # Interrupted half-way: an anchor not yet collected would still become
        # ready later, unseen by the rollback. Collect every one we started.
        for name in list(pending):
            collect(name)
        state.save(st, root)
    if errors:
        raise errors[0]

    # 3. Name the network namespaces, then build the switch with every veth pair.
    netns.attach([(n.netns, n.anchor.pid) for n in [st.switch, *st.nodes.values()] if n.anchor])
    netns.run_batch(["ip", "-n", lab_plan.switch_netns, "-batch", "-"], lab_plan.switch_ip_batch, what=f"lab {topo.name} switch")
    netns.run_batch(["tc", "-n", lab_plan.switch_netns, "-batch", "-"], lab_plan.switch_tc_batch, what=f"lab {topo.name} switch tc")

    # 4. Configure the nodes in parallel; start the port forwarder alongside.
    forwards = [
        publish.Forward(netns=plan.netns_name(topo.name, node.name), node_port=p.node_port, host_port=p.host_port,
                        addresses=tuple(str(a.address) for a in node.attachments))
        for node in topo.nodes for p in node.publish
    ]

    def configure(node_plan: plan.NodePlan) -> None:
        what = f"lab {topo.name} node {node_plan.name}"
        netns.run_batch(["ip", "-n", node_plan.netns, "-batch", "-"], node_plan.ip_batch, what=what)
        netns.run_batch(["tc", "-n", node_plan.netns, "-batch", "-"], node_plan.tc_batch, what=f"{what} tc")
        netns.run_batch(["nsenter", f"--net={netns.NETNS_DIR / node_plan.netns}", "iptables-restore"],
                        node_plan.iptables, what=f"{what} iptables")
        say(node_plan.name, "ready", time.monotonic() - t0)

    with ThreadPoolExecutor(max_workers=8) as pool:
        fwd_future = pool.submit(publish.start, lab=topo.name, forwards=forwards,
                                 log_path=state.lab_dir(topo.name, root) / "publish.log") if forwards else None
        futures = [pool.submit(configure, n) for n in lab_plan.nodes]
        failures = [f.exception() for f in futures if f.exception() is not None]
        if fwd_future is not None:
            try:
                st.forwarder = fwd_future.result()
            except LabError as exc:
                failures.append(exc)
        state.save(st, root)
    if failures:
        raise failures[0]  # type: ignore[misc]
    st.status = "up"
    state.save(st, root)


# ---------------------------------------------------------------- destroy


def destroy(name: str, *, root: Path = LAB_STATE_DIR, progress: Progress | None = None) -> DownReport:
    """Remove a lab: processes in its namespaces, anchors, forwarder, namespaces, state. Idempotent."""
    t0 = time.monotonic()
    try:
        st: state.LabState | None = state.load(name, root)
    except LabError:
        st = None
    names: set[str] = set(st.all_netns()) if st else set()
    # Leftovers by name, unless another lab's state file claims them ("a-b" vs lab "a", node "b-...").
    claimed = set()
    for other in state.names(root):
        if other != name:
            try:
                claimed |= set(state.load(other, root).all_netns())
            except LabError:
                pass
    names |= {ns for ns in netns.list_netns() if ns.startswith(name + "-") and ns not in claimed}

    anchors = [n.anchor for n in ([st.switch, *st.nodes.values()] if st else []) if n.anchor]
    anchors += [netns.ProcRef.of(p) for p in netns.pids_with_cmdline_prefix(f"{netns.ANCHOR_PREFIX}{name}/")]
    anchors = list({a.pid: a for a in anchors if a.alive()}.values())
    helpers = ([st.forwarder] if st and st.forwarder else []) + (st.extra_pids if st else [])
    helpers += [netns.ProcRef.of(p) for p in forwarder_pids(name)]
    helpers = list({h.pid: h for h in helpers if h.alive()}.values())

    net_inodes = {i for ns in names if (i := netns.path_inode(netns.NETNS_DIR / ns))}
    net_inodes |= {i for a in anchors if (i := netns.ns_inode(a.pid, "net"))}
    mnt_inodes = {i for a in anchors if (i := netns.ns_inode(a.pid, "mnt"))}
    # pids_in() drops host namespaces from these sets, whatever an anchor claims.
    anchor_pids = {a.pid for a in anchors}
    inside = [netns.ProcRef.of(p) for p in netns.pids_in(net_inodes=net_inodes, mnt_inodes=mnt_inodes) if p not in anchor_pids]

    netns.terminate(inside + helpers, grace=1.0)  # give edgectl/charon/etcd a moment to exit cleanly
    netns.terminate(anchors, grace=0.0)  # sleep holds nothing; SIGKILL at once
    netns.detach(sorted(names))
    state.remove(name, root)
    if progress:
        progress(name, "down", time.monotonic() - t0)
    return DownReport(lab=name, netns=tuple(sorted(names)), processes=len(inside) + len(helpers) + len(anchors),
                      seconds=round(time.monotonic() - t0, 3))


def forwarder_pids(lab: str) -> list[int]:
    return netns.pids_with_cmdline_containing(f"-m {publish.MARKER} --lab {lab} ")


def _netns_owner(ns: str, root: Path) -> str | None:
    """The running lab whose state lists namespace ``ns``, if any."""
    for other in state.names(root):
        try:
            if ns in state.load(other, root).all_netns():
                return other
        except LabError:
            continue
    return None


def all_lab_names(root: Path = LAB_STATE_DIR) -> list[str]:
    """Labs with a state file, plus labs that only left anchors or a forwarder behind."""
    found = set(state.names(root))
    for pid in netns.pids_with_cmdline_prefix(netns.ANCHOR_PREFIX):
        cmd = netns.cmdline(pid)
        if cmd and "/" in cmd:
            found.add(cmd[len(netns.ANCHOR_PREFIX):].split("/", 1)[0])
    for pid in netns.pids_with_cmdline_containing(f"-m {publish.MARKER} --lab "):
        parts = (netns.cmdline(pid) or "").split()
        if "--lab" in parts and parts.index("--lab") + 1 < len(parts):
            found.add(parts[parts.index("--lab") + 1])
    # Namespaces alone are not enough to claim a lab: "x-switch" may belong to someone else.
    return sorted(found)
