"""The ``process`` runtime: pods as namespaced host processes wired by real CNI.

A sandbox is a named network namespace (``/run/netns/edgectl-<hash>``)
attached with the conflist from ``/etc/cni/net.d`` (loopback first, then the
pod network on ``eth0``), plus the pod's /etc files and emptyDir directories
under ``<data_dir>/pods/<uid>/``. A container instance is one ``shim.py``
process (see there) that owns the namespaces, the log and the exit code.

The ADD result and the conflist it was made with are kept in the sandbox
record, so DEL releases the IP even after the conflist was replaced (flannel).
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from edgectl import paths
from edgectl.log import fields

from . import atomicwriter, childproc, cni, podfiles, tmpfs
from .interface import ContainerExit, ContainerHandle, ContainerStartError, Sandbox, SandboxError
from . import attachproto
from .shim import proc_start_ticks
from .spec import ContainerSpec, PodSpec, VolumeSpec
from .volumes import KINDS as PROJECTED_KINDS, VolumeError, memory_backed, memory_size, validate_sub_path

log = logging.getLogger(__name__)

SHIM = Path(__file__).with_name("shim.py")
SANDBOX_PREFIX = "edgectl-"
POD_IFNAME = "eth0"
START_TIMEOUT = 15.0
COMMAND_TIMEOUT = 30.0  # ip netns add/delete


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    pod_cidr: str | None = None  # when set (and manage_conflist), write 10-edgectl.conflist
    manage_conflist: bool = True  # False once flannel owns /etc/cni/net.d
    mtu: int | None = None
    data_dir: Path = paths.AGENT_DATA_DIR
    log_dir: Path = paths.POD_LOG_DIR
    cni_conf_dir: Path = paths.CNI_CONF_DIR
    cni_bin_dirs: tuple[Path, ...] = paths.CNI_BIN_DIRS
    netns_dir: Path = Path("/run/netns")  # where `ip netns` keeps its bind mounts
    host_resolv_conf: Path = Path("/etc/resolv.conf")
    host_hosts_file: Path = Path("/etc/hosts")  # what hostNetwork pods see as /etc/hosts
    # hostNetwork pods: their IPs are the node's, their hostname the node's.
    node_ips: tuple[str, ...] = ()
    node_hostname: str = field(default_factory=socket.gethostname)
    cluster: podfiles.ClusterInfo = field(default_factory=podfiles.ClusterInfo)
    python: str = sys.executable
    # kubelet's containerLogMaxSize / containerLogMaxFiles defaults; 0 = no rotation.
    log_max_bytes: int = 10 * 1024 * 1024
    log_max_files: int = 5


def sandbox_id(uid: str) -> str:
    """Deterministic, so a crash between netns creation and saving state leaves
    nothing that cannot be found again."""
    return SANDBOX_PREFIX + hashlib.sha256(uid.encode()).hexdigest()[:12]


def pod_log_dir(log_dir: Path, pod: PodSpec) -> Path:
    return log_dir / f"{pod.namespace}_{pod.name}_{pod.uid}"


def container_log_path(log_dir: Path, pod: PodSpec, container: str, restart_count: int) -> Path:
    return pod_log_dir(log_dir, pod) / container / f"{restart_count}.log"


async def _run(*argv: str, check: bool = True) -> tuple[int, str]:
    try:  # childproc: a cancel (agent stop) never wedges on the child
        done = await childproc.run(argv, stderr=childproc.STDOUT, timeout=COMMAND_TIMEOUT)
    except TimeoutError:
        raise SandboxError(f"{' '.join(argv)} timed out after {COMMAND_TIMEOUT:.0f}s") from None
    text = done.stdout.decode(errors="replace").strip()
    if check and done.returncode:
        raise SandboxError(f"{' '.join(argv)} failed: {text}")
    return done.returncode, text


def _node_memory() -> int:
    """MemTotal in bytes: the ceiling of a memory-backed volume (kubelet uses
    the node's allocatable memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 30


def _alive(pid: int, start: Any) -> bool:
    """The same process (start time matches, so not a reused PID) and not a
    zombie: a killed container whose shim died waits for init to reap it."""
    if pid <= 0 or start is None or proc_start_ticks(pid) != start:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


class ProcessRuntime:
    """Implements :class:`edgectl.agent.runtime.interface.Runtime`."""

    name = "process"

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config

    # -- paths ---------------------------------------------------------------

    def pod_dir(self, uid: str) -> Path:
        return self.config.data_dir / "pods" / uid

    def _netns_path(self, sid: str) -> str:
        return str(self.config.netns_dir / sid)

    # -- sandbox -------------------------------------------------------------

    def _network(self) -> cni.NetworkConfigList:
        if self.config.manage_conflist and self.config.pod_cidr:
            cni.ensure_default_conflist(self.config.cni_conf_dir, pod_cidr=self.config.pod_cidr,
                                        lease_dir=str(self.config.data_dir / "cni" / "networks"),
                                        mtu=self.config.mtu)
        return cni.load_conflist(self.config.cni_conf_dir)

    def _attachment(self, pod: PodSpec | None, sid: str, ifname: str) -> cni.Attachment:
        mappings = []
        args: dict[str, str] = {"K8S_POD_INFRA_CONTAINER_ID": sid}
        if pod is not None:
            args.update(K8S_POD_NAMESPACE=pod.namespace, K8S_POD_NAME=pod.name, K8S_POD_UID=pod.uid)
            for c in pod.containers:
                for p in c.ports:
                    if p.host_port:
                        mappings.append({"hostPort": p.host_port, "containerPort": p.container_port,
                                         "protocol": p.protocol.lower(), "hostIP": p.host_ip})
        return cni.Attachment(container_id=sid, netns=self._netns_path(sid), ifname=ifname,
                              runtime_config={"portMappings": mappings} if mappings else {}, cni_args=args)

    async def run_sandbox(self, pod: PodSpec) -> Sandbox:
        if pod.host_network:
            return self._host_network_sandbox(pod)
        sid = sandbox_id(pod.uid)
        net = self._network()
        netns = self._netns_path(sid)
        if not os.path.exists(netns):
            await _run("ip", "netns", "add", sid)
        lo = cni.CniNetwork(cni.NetworkConfigList.from_dict(cni.LOOPBACK), bin_dirs=self.config.cni_bin_dirs)
        main = cni.CniNetwork(net, bin_dirs=self.config.cni_bin_dirs)
        try:
            await lo.add(self._attachment(pod, sid, "lo"))
            result = await main.add(self._attachment(pod, sid, POD_IFNAME))
            ips = result.pod_ips(netns)
            if not ips:
                raise SandboxError(f"CNI network {net.name} ({net.path}) gave pod {pod.key} no IP address")
            sandbox = Sandbox(id=sid, netns_path=netns, ips=ips,
                              data={"conflist": {"cniVersion": net.cni_version, "name": net.name,
                                                 "plugins": [dict(p) for p in net.plugins]},
                                    "conflist_path": net.path, "result": dict(result.raw)})
            self._write_pod_files(pod, sandbox)
        except BaseException:
            await self._teardown_network(pod, sid, conflist=net, result=None)
            raise
        log.info("sandbox ready", extra=fields(pod=pod.key, sandbox=sid, ip=ips[0]))
        return sandbox

    def _host_network_sandbox(self, pod: PodSpec) -> Sandbox:
        """hostNetwork: no netns and no CNI; the pod uses the node's network
        namespace, so there is nothing of the node's to undo later."""
        if not self.config.node_ips:
            raise SandboxError(f"pod {pod.key} has hostNetwork: true but the node IP is unknown "
                               "(RuntimeConfig.node_ips is empty)")
        sandbox = Sandbox(id=sandbox_id(pod.uid), netns_path="", ips=self.config.node_ips,
                          data={"host_network": True, "hostname": self.hostname(pod)})
        self._write_pod_files(pod, sandbox)
        log.info("sandbox ready (host network)", extra=fields(pod=pod.key, ip=sandbox.ips[0]))
        return sandbox

    def hostname(self, pod: PodSpec) -> str:
        """As upstream: a hostNetwork pod's hostname is the node's."""
        return self.config.node_hostname if pod.host_network else pod.hostname

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text()
        except OSError:
            return ""

    def _write_pod_files(self, pod: PodSpec, sandbox: Sandbox) -> None:
        etc = self.pod_dir(pod.uid) / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        host_resolv = self._read(self.config.host_resolv_conf)
        (etc / "hostname").write_text(self.hostname(pod) + "\n")
        if pod.host_network:  # kubelet: the node's hosts file, plus hostAliases
            hosts = podfiles.host_network_hosts_file(pod, self._read(self.config.host_hosts_file))
        else:
            hosts = podfiles.hosts_file(pod, sandbox.ips, cluster_domain=self.config.cluster.cluster_domain)
        (etc / "hosts").write_text(hosts)
        (etc / "resolv.conf").write_text(podfiles.resolv_conf(pod, cluster=self.config.cluster,
                                                              host_resolv=host_resolv))
        for vol in pod.volumes:
            if vol.kind == "emptyDir":
                path = self.pod_dir(pod.uid) / "volumes" / vol.name
                path.mkdir(parents=True, exist_ok=True)
                if memory_backed(vol):  # medium: Memory; kubelet's tmpfs is world-writable and sticky
                    try:
                        self._ensure_tmpfs(pod, vol, path, mode=0o1777)
                    except (VolumeError, OSError) as exc:
                        raise SandboxError(f"emptyDir {vol.name}: {exc}") from None

    async def _teardown_network(self, pod: PodSpec | None, sid: str, *, conflist: cni.NetworkConfigList,
                                result: Mapping[str, Any] | None) -> list[str]:
        errors = []
        bins = self.config.cni_bin_dirs
        steps = [
            (cni.CniNetwork(conflist, bin_dirs=bins), POD_IFNAME, result),
            (cni.CniNetwork(cni.NetworkConfigList.from_dict(cni.LOOPBACK), bin_dirs=bins), "lo", None),
        ]
        for network, ifname, prev in steps:
            try:
                await network.delete(self._attachment(pod, sid, ifname), prev)
            except cni.CniError as exc:
                errors.append(str(exc))
        if os.path.exists(self._netns_path(sid)):
            rc, text = await _run("ip", "netns", "delete", sid, check=False)
            if rc:
                errors.append(f"ip netns delete {sid}: {text}")
        return errors

    async def check_sandbox(self, sandbox: Sandbox) -> None:
        """CNI CHECK of the pod network with the cached ADD result (after an
        agent restart: is the adopted pod still wired?). Raises CniError."""
        if sandbox.data.get("host_network"):
            return  # the node's own network: nothing of ours to check
        doc = sandbox.data.get("conflist")
        if not doc:
            raise cni.CniError(f"sandbox {sandbox.id} has no recorded CNI config to check against")
        network = cni.CniNetwork(cni.NetworkConfigList.from_dict(doc), bin_dirs=self.config.cni_bin_dirs)
        await network.check(self._attachment(None, sandbox.id, POD_IFNAME), sandbox.data.get("result") or {})

    async def stop_sandbox(self, pod: PodSpec, sandbox: Sandbox, *, remove: bool = False) -> None:
        """Release the network; with ``remove`` also delete pod files and logs.
        A hostNetwork sandbox has no network of its own: the node's is never touched."""
        doc = sandbox.data.get("conflist")
        conflist = None
        if not sandbox.data.get("host_network"):
            try:
                conflist = cni.NetworkConfigList.from_dict(doc) if doc else self._network()
            except cni.CniError as exc:
                log.warning("no CNI config to release the pod network with", extra=fields(pod=pod.key, error=str(exc)))
        errors = []
        if conflist is not None:
            errors = await self._teardown_network(pod, sandbox.id, conflist=conflist, result=sandbox.data.get("result"))
        self._remove_mount_points(pod.uid)
        # No container runs any more: as kubelet tears down a finished pod's
        # volumes, its secrets and Memory emptyDirs leave memory now.
        failed = tmpfs.unmount_under(self.pod_dir(pod.uid) / "volumes")
        if failed:
            log.warning("could not unmount the pod's volumes", extra=fields(pod=pod.key, errors="; ".join(failed)))
        if remove:
            shutil.rmtree(self.pod_dir(pod.uid) / "etc", ignore_errors=True)
            tmpfs.remove_tree(self.pod_dir(pod.uid) / "volumes")  # unmounts secret and Memory tmpfs first
            shutil.rmtree(self.pod_dir(pod.uid) / "containers", ignore_errors=True)
            shutil.rmtree(pod_log_dir(self.config.log_dir, pod), ignore_errors=True)
        if errors:
            raise SandboxError("; ".join(errors))
        log.info("sandbox stopped", extra=fields(pod=pod.key, sandbox=sandbox.id))

    # -- containers ----------------------------------------------------------

    def _mounts(self, pod: PodSpec, container: ContainerSpec) -> list[dict[str, Any]]:
        etc = self.pod_dir(pod.uid) / "etc"
        mounts = [{"source": str(etc / n), "target": f"/etc/{n}"} for n in ("hostname", "hosts", "resolv.conf")]
        volumes = {v.name: v for v in pod.volumes}
        for vm in container.volume_mounts:
            vol = volumes.get(vm.name)
            if vol is None:
                raise ContainerStartError(f"volumeMount {vm.name}: no such volume in the pod",
                                          reason="CreateContainerConfigError")
            read_only = vm.read_only
            if vol.kind == "emptyDir":
                source = self.pod_dir(pod.uid) / "volumes" / vol.name
            elif vol.kind == "hostPath":
                source = Path(vol.host_path)
            elif vol.kind in PROJECTED_KINDS:
                # Written by the manager before the sandbox (write_volume); kubelet
                # mounts these read-only whatever the mount says.
                source, read_only = self.volume_dir(pod.uid, vol.name), True
                if not (source / atomicwriter.DATA_DIR_LINK).is_symlink():
                    raise ContainerStartError(f"volume {vol.name}: its files are not written yet",
                                              reason="CreateContainerConfigError")
            else:
                raise ContainerStartError(
                    f"volume {vol.name}: type {vol.kind} is not supported by the process runtime "
                    f"(supported: emptyDir, hostPath, {', '.join(PROJECTED_KINDS)})", reason="CreateContainerConfigError")
            if vm.sub_path:
                source = self._sub_path(source, vm.sub_path, mount=vm.name, create=vol.kind not in PROJECTED_KINDS)
            if not vm.mount_path.startswith("/"):
                raise ContainerStartError(f"volumeMount {vm.name}: mountPath must be absolute",
                                          reason="CreateContainerConfigError")
            self._ensure_mount_point(pod.uid, Path(vm.mount_path), is_dir=source.is_dir())
            mounts.append({"source": str(source), "target": vm.mount_path, "readOnly": read_only})
        return mounts

    @staticmethod
    def _sub_path(root: Path, sub_path: str, *, mount: str, create: bool) -> Path:
        """``root/sub_path`` with symlinks resolved; it must stay inside ``root``
        (a link planted in an emptyDir must not reach the host). emptyDir and
        hostPath sub-paths are created; in the read-only kinds a missing one is
        an error. The resolved path is what gets bound, so, as upstream, a
        subPath mount of a configMap file does not see later updates."""
        try:
            validate_sub_path(sub_path)
        except VolumeError as exc:
            raise ContainerStartError(f"volumeMount {mount}: {exc}", reason="CreateContainerConfigError") from None
        base = root.resolve()
        real = (root / sub_path).resolve()
        if real != base and base not in real.parents:
            raise ContainerStartError(f"volumeMount {mount}: subPath {sub_path!r} resolves outside the volume",
                                      reason="CreateContainerConfigError")
        if create:
            real.mkdir(parents=True, exist_ok=True)
        elif not real.exists():
            raise ContainerStartError(f"volumeMount {mount}: subPath {sub_path!r} does not exist in the volume",
                                      reason="CreateContainerConfigError")
        return real

    def volume_dir(self, uid: str, name: str) -> Path:
        return self.pod_dir(uid) / "volumes" / name

    def write_volume(self, pod: PodSpec, name: str, payload: atomicwriter.Payload) -> bool:
        """Make a configMap/secret/downwardAPI/projected volume hold ``payload``
        (kubelet's atomic-writer layout; True if anything changed)."""
        target = self.volume_dir(pod.uid, name)
        vol = next((v for v in pod.volumes if v.name == name), None)
        if vol is not None and memory_backed(vol):
            # Secrets never touch the disk. A dir that already holds files
            # on disk (written by an agent from before tmpfs) keeps them: its
            # running containers are bound to that dir.
            if not target.exists() or tmpfs.fs_type(target) == "tmpfs" or not any(target.iterdir()):
                self._ensure_tmpfs(pod, vol, target, mode=0o755)
        return atomicwriter.write(target, payload)

    def _ensure_tmpfs(self, pod: PodSpec, vol: VolumeSpec, path: Path, *, mode: int) -> None:
        """Raises VolumeError (a bad sizeLimit) or OSError (mount failed)."""
        size = memory_size(pod, vol, node_memory=_node_memory())
        if tmpfs.ensure(path, size=size, mode=mode):
            log.info("tmpfs mounted", extra=fields(pod=pod.key, volume=vol.name, size=size))

    def _ensure_mount_point(self, uid: str, target: Path, *, is_dir: bool) -> None:
        """Containers share the host filesystem, so a missing mountPath must be
        created there; it is recorded and removed (if empty) with the sandbox."""
        if target.exists():
            return
        created = []
        for parent in reversed([target, *target.parents]):
            if not parent.exists():
                created.append(str(parent))
        if is_dir:
            target.mkdir(parents=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        record = self.pod_dir(uid) / "mountpoints.json"
        known = json.loads(record.read_text()) if record.exists() else []
        record.write_text(json.dumps(known + created))

    def _remove_mount_points(self, uid: str) -> None:
        record = self.pod_dir(uid) / "mountpoints.json"
        if not record.exists():
            return
        for path in sorted(json.loads(record.read_text()), key=len, reverse=True):
            try:
                p = Path(path)
                p.rmdir() if p.is_dir() else p.unlink()
            except OSError:
                pass  # not empty any more, or in use by another pod: leave it
        record.unlink()

    async def start_container(self, pod: PodSpec, sandbox: Sandbox, container: ContainerSpec, *,
                              restart_count: int, env: Mapping[str, str]) -> ContainerHandle:
        if not container.argv:
            raise ContainerStartError(
                f"container {container.name} has no command: the process runtime runs host commands and "
                f"cannot pull or run the image {container.image or '(none)'}; set spec.containers[].command",
                reason="CommandRequired")
        if container.unsupported:
            raise ContainerStartError("; ".join(container.unsupported), reason="CreateContainerConfigError")
        mounts = self._mounts(pod, container)  # may refuse the container: before any dir exists
        cid = secrets.token_hex(16)
        self._prune_instances(pod.uid, container.name)
        cdir = self.pod_dir(pod.uid) / "containers" / cid
        cdir.mkdir(parents=True)
        log_path = container_log_path(self.config.log_dir, pod, container.name, restart_count)
        self._prune_logs(log_path, keep_from=restart_count - 1)
        env = {**env, "TERM": env.get("TERM", "xterm")} if container.tty else env  # as containerd's WithTTY
        spec = {
            "name": container.name,
            "argv": podfiles.container_argv(container, env),
            "env": dict(env),
            "workingDir": container.working_dir or "/",
            "hostname": self.hostname(pod),
            "netns": sandbox.netns_path,  # "" for hostNetwork: stay in the node's netns
            "mounts": mounts,
            "log": str(log_path),
            "log_max_bytes": self.config.log_max_bytes,
            "log_max_files": self.config.log_max_files,
            "exit": str(cdir / "exit.json"),
            # The console (shim + console.py): attach socket, stdin pipe or pty.
            "attach": str(cdir / attachproto.SOCKET_NAME),
            "stdin": container.stdin,
            "stdinOnce": container.stdin_once,
            "tty": container.tty,
        }
        (cdir / "spec.json").write_text(json.dumps(spec))
        with open(cdir / "shim.log", "ab") as shim_log:
            # The launcher exits at once and the shim closes stdout after its one
            # line. childproc: an agent stopped mid-start never wedges on it.
            launched = await childproc.run(
                [self.config.python, "-E", "-S", str(SHIM), str(cdir / "spec.json")], stderr=shim_log,
                start_new_session=True, timeout=START_TIMEOUT)
        line = launched.stdout.split(b"\n", 1)[0]
        try:
            report = json.loads(line)
        except ValueError:
            detail = (cdir / "shim.log").read_text(errors="replace").strip()[-300:]
            raise ContainerStartError(f"container shim failed to start: {detail or 'no output'}",
                                      reason="StartError") from None
        (cdir / "pid.json").write_text(json.dumps(report))
        handle = ContainerHandle(
            id=cid, name=container.name, restart_count=restart_count, pid=int(report.get("pid") or 0),
            started_at=float(report.get("started_at") or time.time()), log_path=str(log_path),
            data={"dir": str(cdir), "pid_start": report.get("pid_start"), "shim_pid": report.get("shim_pid", 0),
                  "shim_start": report.get("shim_start"), "attach": str(cdir / attachproto.SOCKET_NAME)},
        )
        log.info("container started", extra=fields(pod=pod.key, container=container.name, pid=handle.pid,
                                                   restarts=restart_count, error=report.get("error", "")))
        return handle

    def _prune_instances(self, uid: str, name: str) -> None:
        """Keep the newest earlier instance of ``name`` (lastState) and drop the
        rest, so a crash-looping container does not pile up directories."""
        mine = []
        for cdir in (self.pod_dir(uid) / "containers").glob("*"):
            try:
                if json.loads((cdir / "spec.json").read_text()).get("name") == name:
                    mine.append((cdir.stat().st_mtime_ns, cdir))
            except (OSError, ValueError):
                continue
        for _, cdir in sorted(mine)[:-1]:
            if (cdir / "exit.json").exists():  # never remove a live instance's record
                shutil.rmtree(cdir, ignore_errors=True)

    @staticmethod
    def _prune_logs(log_path: Path, *, keep_from: int) -> None:
        """Keep the current and the previous instance's log, as kubelet does."""
        if not log_path.parent.is_dir():
            return
        for old in log_path.parent.glob("*.log*"):  # rotated files too: 3.log.20260101-120000
            try:
                if int(old.name.split(".", 1)[0]) < keep_from:
                    old.unlink()
            except ValueError:
                continue

    def poll_container(self, handle: ContainerHandle) -> ContainerExit | None:
        exit_file = Path(handle.data["dir"]) / "exit.json"
        for attempt in (0, 1):
            try:
                return ContainerExit.from_dict(json.loads(exit_file.read_text()))
            except FileNotFoundError:
                pass
            except ValueError:
                break
            if attempt == 0 and (_alive(handle.pid, handle.data.get("pid_start"))
                                 or _alive(handle.data.get("shim_pid", 0), handle.data.get("shim_start"))):
                return None
        # Neither the process nor its shim exists, and no exit was recorded
        # (the node rebooted, or someone killed the shim): report what kubelet does.
        return ContainerExit(exit_code=137, finished_at=time.time(), reason="ContainerStatusUnknown",
                             message="The container could not be located when the pod was checked")

    def signal_container(self, handle: ContainerHandle, sig: int = signal.SIGTERM) -> None:
        if not _alive(handle.pid, handle.data.get("pid_start")):
            return
        try:
            os.kill(handle.pid, sig)
        except ProcessLookupError:
            pass

    # -- garbage collection --------------------------------------------------

    async def cleanup(self, *, keep_sandboxes: set[str], keep_containers: set[str]) -> list[str]:
        """Kill unrecorded containers; release netns and IP leases of edgectl
        sandboxes nobody knows about."""
        removed = self._kill_unknown_containers(keep_containers)
        stale: set[str] = set()
        if self.config.netns_dir.is_dir():
            stale |= {p.name for p in self.config.netns_dir.iterdir() if p.name.startswith(SANDBOX_PREFIX)}
        try:
            conflist: cni.NetworkConfigList | None = self._network()
        except cni.CniError:
            conflist = None
        lease_files = self._lease_files(conflist) if conflist else []
        stale |= {owner for owner, _ in lease_files if owner.startswith(SANDBOX_PREFIX)}
        stale -= keep_sandboxes
        for sid in sorted(stale):
            if conflist is not None:
                errors = await self._teardown_network(None, sid, conflist=conflist, result=None)
            else:
                errors = []
                if os.path.exists(self._netns_path(sid)):
                    await _run("ip", "netns", "delete", sid, check=False)
            # A lease whose owner is gone for good is ours to drop, whatever DEL said.
            for owner, path in lease_files:
                if owner == sid and path.exists():
                    path.unlink()
            log.info("removed stale sandbox", extra=fields(sandbox=sid, errors="; ".join(errors)))
        return removed + sorted(stale)

    def _kill_unknown_containers(self, keep: set[str]) -> list[str]:
        """SIGKILL the shims of container dirs no record names (the container
        dies with its shim) and remove those dirs."""
        removed = []
        for cdir in self.config.data_dir.glob("pods/*/containers/*"):
            if cdir.name in keep:
                continue
            try:
                doc = json.loads((cdir / "pid.json").read_text())
            except (OSError, ValueError):
                doc = {}
            if _alive(int(doc.get("shim_pid") or 0), doc.get("shim_start")):
                os.kill(int(doc["shim_pid"]), signal.SIGKILL)
            if _alive(int(doc.get("pid") or 0), doc.get("pid_start")):
                os.kill(int(doc["pid"]), signal.SIGKILL)
            shutil.rmtree(cdir, ignore_errors=True)
            removed.append(cdir.name)
            log.info("killed unrecorded container", extra=fields(container=cdir.name, pid=doc.get("pid", 0)))
        return removed

    @staticmethod
    def _lease_files(conflist: cni.NetworkConfigList) -> list[tuple[str, Path]]:
        """(owner container id, file) of host-local leases in this node's ranges.

        Only IPs inside the configured ranges count: another node sharing the
        lease directory has other ranges, and its leases are not ours."""
        out = []
        for lease_dir in cni.host_local_lease_dirs(conflist):
            if not lease_dir.path.is_dir():
                continue
            for f in lease_dir.path.iterdir():
                try:
                    ip = ipaddress.ip_address(f.name)
                except ValueError:
                    continue  # lock, last_reserved_ip.N
                if not any(ip in net for net in lease_dir.subnets):
                    continue
                try:
                    owner = f.read_text().split()[0]
                except (OSError, IndexError):
                    continue
                out.append((owner, f))
        return out
