"""Namespaces: anchor processes that hold a node's namespaces, entering them, finding what runs in them.

A node is a network namespace plus a private mount (and UTS) namespace. Both
are held by an *anchor*: ``unshare`` runs a tiny bash script that sets up the
mounts, reports ``ready <pid>`` and then execs ``sleep infinity`` under the
name ``edgectl-lab: <lab>/<node>``. The anchor is started through
``setsid -f`` so it outlives ``edgectl lab up`` and is never our child.

The network namespace is also attached as ``/run/netns/<lab>-<node>`` so that
``ip netns`` and ``ip -n`` see it. Entering a node is
``nsenter -t <anchor> -n -m -u``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import LabError

NETNS_DIR = Path("/run/netns")
ANCHOR_PREFIX = "edgectl-lab: "
CLONE_NEWNET = 0x40000000

# Runs inside the fresh namespaces. $1 lab, $2 node, $3 node dir ("" for the
# switch), $4 "1" to enable IP forwarding. Bind mounts come before the tmpfs
# on /run because their sources live under the root namespace's /run.
_ANCHOR_SCRIPT = r"""
set -e
lab=$1 node=$2 dir=$3 forward=$4
if [ -n "$dir" ]; then
  mount --bind "$dir/etc-edgectl" /etc/edgectl
  mount --bind "$dir/var-lib-edgectl" /var/lib/edgectl
  mount --bind "$dir/cni-net.d" /etc/cni/net.d
  mount --bind "$dir/var-log" /var/log
  mount --bind "$dir/hosts" /etc/hosts
  mount -t tmpfs -o mode=0755,size=64m "edgectl-lab-$node" /run
  mkdir -p /run/edgectl /run/flannel /run/lock /run/netns
else
  # The switch only bridges: no IPv6 chatter from bridges and ports.
  echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
  echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
fi
hostname "$node"
ip link set lo up
if [ "$forward" = 1 ]; then
  echo 1 > /proc/sys/net/ipv4/ip_forward
fi
echo "ready $$"
exec -a "edgectl-lab: $lab/$node" sleep infinity </dev/null >/dev/null 2>&1
"""

# Host paths the node mounts over; they must exist as mount points (empty dirs).
MOUNT_POINTS = (Path("/etc/edgectl"), Path("/var/lib/edgectl"), Path("/etc/cni/net.d"))
NODE_SUBDIRS = ("etc-edgectl", "var-lib-edgectl", "cni-net.d", "var-log")


@dataclass(frozen=True, kw_only=True)
class ProcRef:
    """A process we started, identified by pid *and* start time so a reused pid is never killed."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcRef:
        return cls(pid=pid, start=start_time(pid) or 0)

    def alive(self) -> bool:
        st = _stat(self.pid)
        return st is not None and st[1] == self.start and st[0] != "Z"

    def to_doc(self) -> dict[str, int]:
        return {"pid": self.pid, "start": self.start}


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from /proc/<pid>/stat."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[19])


def start_time(pid: int) -> int | None:
    st = _stat(pid)
    return st[1] if st else None


# ---------------------------------------------------------------- anchors


def prepare_node_dir(node_dir: Path, hosts: str) -> None:
    for sub in NODE_SUBDIRS:
        (node_dir / sub).mkdir(parents=True, exist_ok=True)
    (node_dir / "hosts").write_text(hosts)
    for mp in MOUNT_POINTS:
        mp.mkdir(parents=True, exist_ok=True)


def spawn_anchor(*, lab: str, node: str, node_dir: Path | None, forward: bool) -> subprocess.Popen[bytes]:
    """Start an anchor; collect it with :func:`wait_anchor` (start many, then wait: they run in parallel)."""
    # The switch gets a private mount namespace too, although it mounts
    # nothing: then no anchor ever shares the host's mount namespace, and
    # "every process in this node's mount namespace" can never mean the host.
    unshare = ["unshare", "--net", "--uts", "--mount", "--propagation", "private"]
    argv = ["setsid", "-f", *unshare, "bash", "-c", _ANCHOR_SCRIPT, "anchor", lab, node, str(node_dir or ""), "1" if forward else "0"]
    # cwd=/: a long-lived anchor must not pin the caller's (maybe temporary) directory.
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")


def starter_output(proc: subprocess.Popen[bytes], *, timeout: float, too_slow: str) -> tuple[list[str], bytes]:
    """The stdout lines and stderr of a ``setsid -f`` starter, which exits once
    its detached child has said ``ready <pid>`` (or failed). A starter that
    overruns ``timeout`` is killed and reaped, then LabError(too_slow)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise LabError(too_slow) from None
    return out.decode().splitlines(), err


def ready_ref(line: str) -> ProcRef | None:
    """The process a starter's ``ready <pid>`` line names; None for any other line."""
    return ProcRef.of(int(line.split()[1])) if line.startswith("ready ") else None


def wait_anchor(proc: subprocess.Popen[bytes], *, what: str, timeout: float = 10.0) -> ProcRef:
    lines, err = starter_output(proc, timeout=timeout, too_slow=f"{what}: namespace anchor did not start within {timeout:.0f}s")
    for line in lines:
        if ref := ready_ref(line):
            return ref
    msg = err.decode().strip().splitlines()
    raise LabError(f"{what}: cannot create namespaces: {msg[-1] if msg else 'anchor exited'}")


def attach(names_pids: Iterable[tuple[str, int]]) -> None:
    """Name network namespaces (``ip netns attach``) in one ``ip`` process."""
    run_batch(["ip", "-batch", "-"], "".join(f"netns attach {name} {pid}\n" for name, pid in names_pids))


def detach(names: Iterable[str]) -> None:
    """Unmount and remove /run/netns/<name> (what ``ip netns delete`` does), ignoring missing ones."""
    for name in names:
        path = NETNS_DIR / name
        _umount(path)
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def run_batch(argv: list[str], text: str, *, what: str = "") -> None:
    if not text:
        return
    res = subprocess.run(argv, input=text.encode(), capture_output=True)
    if res.returncode != 0:
        raise LabError(f"{what or argv[0]}: {_first_error(res.stderr, text)}")


def _first_error(stderr: bytes, batch: str) -> str:
    msg = stderr.decode().strip()
    # ip/tc -batch report "Command failed <file>:<line>"; show that command.
    for line in msg.splitlines():
        if "Command failed" in line and ":" in line:
            try:
                n = int(line.rsplit(":", 1)[1])
                return f"{msg.splitlines()[0]} (in: {batch.splitlines()[n - 1]})"
            except (ValueError, IndexError):
                break
    return msg.splitlines()[0] if msg else "failed"


# ---------------------------------------------------------------- entering


def nsenter_argv(pid: int, *, cwd: str | None = None) -> list[str]:
    argv = ["nsenter", "-t", str(pid), "-n", "-m", "-u"]
    # Entering the mount namespace resets the cwd to /; keep the caller's when
    # it exists inside (everything but /run is the host's filesystem).
    if cwd and not (cwd == "/run" or cwd.startswith("/run/")):
        argv.append(f"--wd={cwd}")
    return [*argv, "--"]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def socket_in(netns: str | Path, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in another network namespace.

    A socket belongs to the namespace of the thread that created it, for its
    whole life. So a short-lived thread enters the namespace (setns affects
    only that thread), creates the socket and ends; the socket is then used
    from any thread, and the calling process never leaves the root namespace.
    """
    path = Path(netns) if "/" in str(netns) else NETNS_DIR / str(netns)
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            result.append(socket.socket(family, type))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            result.append(exc)

    t = threading.Thread(target=work, name="netns-socket", daemon=True)
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        if isinstance(result[0], FileNotFoundError):
            raise LabError(f"network namespace {path.name} does not exist")
        raise result[0]
    return result[0]


# ---------------------------------------------------------------- finding and ending processes


def ns_inode(pid: int, ns: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{ns}").st_ino
    except OSError:
        return None


def path_inode(path: Path) -> int | None:
    """The namespace inode behind /run/netns/<name>, or None if nothing is mounted there."""
    try:
        st = os.stat(path)
        if st.st_dev != os.stat("/proc/self/ns/net").st_dev:  # not nsfs: a stale plain file
            return None
        return st.st_ino
    except OSError:
        return None


def host_inodes() -> tuple[set[int], set[int]]:
    """(net, mnt) namespace inodes of this process, its ancestors and PID 1: never a lab's."""
    net: set[int] = set()
    mnt: set[int] = set()
    for pid in {1, *_ancestors()}:
        net.add(ns_inode(pid, "net") or -1)
        mnt.add(ns_inode(pid, "mnt") or -1)
    return net, mnt


def _ancestors() -> list[int]:
    chain, pid = [], os.getpid()
    while pid > 1:
        chain.append(pid)
        st = Path(f"/proc/{pid}/stat").read_bytes()
        pid = int(st[st.rindex(b")") + 2 :].split()[1])
    return chain


def pids_in(*, net_inodes: set[int], mnt_inodes: set[int]) -> list[int]:
    """Every process whose network or mount namespace is one of the given ones.

    Host namespaces (ours, our ancestors', PID 1's) are refused outright, so a
    bug elsewhere can never turn this into "every process on the machine".
    """
    host_net, host_mnt = host_inodes()
    net_inodes = net_inodes - host_net
    mnt_inodes = mnt_inodes - host_mnt
    skip = {1, *_ancestors()}
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        pid = int(entry.name)
        if ns_inode(pid, "net") in net_inodes or ns_inode(pid, "mnt") in mnt_inodes:
            found.append(pid)
    return found


def cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _pids_matching(match: Callable[[str], bool]) -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != me:
            cmd = cmdline(int(entry.name))
            if cmd and match(cmd):
                found.append(int(entry.name))
    return found


def pids_with_cmdline_prefix(prefix: str) -> list[int]:
    return _pids_matching(lambda cmd: cmd.startswith(prefix))


def pids_with_cmdline_containing(text: str) -> list[int]:
    return _pids_matching(lambda cmd: text in cmd)


def terminate(refs: Iterable[ProcRef], *, grace: float = 1.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once all are gone (or zombies)."""
    live = [r for r in refs if r.alive()]
    for r in live:
        _kill(r.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        live = [r for r in live if r.alive()]
        if live:
            time.sleep(0.01)
    for r in live:
        _kill(r.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while live and time.monotonic() < deadline:
        live = [r for r in live if r.alive()]
        if live:
            time.sleep(0.005)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _umount(path: Path) -> None:
    MNT_DETACH = 2
    if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
        e = ctypes.get_errno()
        if e not in (errno.EINVAL, errno.ENOENT):
            raise LabError(f"cannot unmount {path}: {os.strerror(e)}")
