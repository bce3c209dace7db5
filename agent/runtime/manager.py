"""PodManager: keeps this node's pods as the API wants them (a reconcile loop).

The agent calls :meth:`PodManager.sync` with every pod bound to the node
(on each watch event; cheap and idempotent) and receives status through
``on_change(uid, status)`` (``status`` is ``None`` once a deleted pod is gone).
One loop reconciles every pod: create the sandbox, apply
:func:`lifecycle.plan`, notice exits, terminate what is deleted. Nothing is
incremental: each pass compares records with the desired list, so a missed
event is repaired by the next pass.

State lives in ``<data_dir>/pods/<uid>/state.json`` (pod, sandbox, container
handles with PIDs and their start times). After an agent restart the records
are loaded, running containers are adopted (their shims kept running), and
pods missing from the first sync are terminated and cleaned up.
"""
from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from edgectl import paths
from edgectl.aio import wait_event
from edgectl.log import fields

from . import atomicwriter, envsources, lifecycle, podfiles, tmpfs, volumes
from .interface import (
    ContainerLogs, ContainerProcess, ContainerStartError, PodNetwork, Runtime, Sandbox, SandboxError,
)
from .lifecycle import Backoff, ContainerRecord
from .prober import Key as ProbeKey, Prober, ProbeTarget
from .probes import Readiness
from .interface import ContainerAttach
from .shim import proc_start_ticks
from .spec import ContainerSpec, PodSpec, PodSpecError, parse_pod

log = logging.getLogger(__name__)

StatusCallback = Callable[[str, "dict[str, Any] | None"], None]


@dataclass(kw_only=True)
class PodRecord:
    """Everything the manager remembers about one pod (persisted as JSON)."""

    doc: dict[str, Any]  # the pod as last desired
    spec: PodSpec
    containers: dict[str, ContainerRecord]
    start_time: float
    sandbox: Sandbox | None = None
    sandbox_error: str = ""
    sandbox_not_before: float = 0.0
    sandbox_level: int = 0
    network_released: bool = False  # a finished pod gives its IP back
    term_deadline: float | None = None  # set when termination began
    term_killed: bool = False
    since: dict[str, tuple[str, float]] = field(default_factory=dict)
    # configMap/secret/downwardAPI/projected volumes: why they are not set up
    # (kubelet's FailedMount message; not persisted, the next pass retries).
    volume_error: str = ""

    @property
    def uid(self) -> str:
        return self.spec.uid

    @classmethod
    def new(cls, doc: dict[str, Any], spec: PodSpec, *, now: float) -> "PodRecord":
        names = [c.name for c in spec.init_containers + spec.containers]
        return cls(doc=doc, spec=spec, start_time=now, containers={n: ContainerRecord(name=n) for n in names})

    def to_dict(self) -> dict[str, Any]:
        return {
            "pod": self.doc, "start_time": self.start_time,
            "sandbox": self.sandbox.to_dict() if self.sandbox else None,
            "sandbox_error": self.sandbox_error, "sandbox_not_before": self.sandbox_not_before,
            "sandbox_level": self.sandbox_level, "network_released": self.network_released,
            "term_deadline": self.term_deadline, "term_killed": self.term_killed,
            "since": {k: list(v) for k, v in self.since.items()},
            "containers": {n: r.to_dict() for n, r in self.containers.items()},
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "PodRecord":
        spec = parse_pod(doc["pod"])
        rec = cls.new(doc["pod"], spec, now=float(doc["start_time"]))
        rec.sandbox = Sandbox.from_dict(doc["sandbox"]) if doc.get("sandbox") else None
        rec.sandbox_error = doc.get("sandbox_error", "")
        rec.sandbox_not_before = float(doc.get("sandbox_not_before", 0.0))
        rec.sandbox_level = int(doc.get("sandbox_level", 0))
        rec.network_released = bool(doc.get("network_released", False))
        rec.term_deadline = doc.get("term_deadline")
        rec.term_killed = bool(doc.get("term_killed", False))
        rec.since = {k: (v[0], float(v[1])) for k, v in (doc.get("since") or {}).items()}
        for name, c in (doc.get("containers") or {}).items():
            if name in rec.containers:
                rec.containers[name] = ContainerRecord.from_dict(c)
        return rec


class PodManager:
    """Implements :class:`edgectl.agent.runtime.interface.PodView` for the kubelet API."""

    def __init__(
        self,
        *,
        runtime: Runtime,
        data_dir: Path = paths.AGENT_DATA_DIR,
        on_change: StatusCallback | None = None,
        cluster: podfiles.ClusterInfo | None = None,
        backoff: Backoff = Backoff(),
        resync_interval: float = 2.0,
        host_ip: str = "",
        allocatable: Mapping[str, str] | None = None,
        configmaps: envsources.ConfigMapSource | None = None,
        secrets: envsources.ConfigMapSource | None = None,
        orphan_grace_seconds: float | None = None,
        volume_refresh_interval: float = 10.0,
    ) -> None:
        self.runtime = runtime
        self.data_dir = data_dir
        self.on_change = on_change
        self.cluster = cluster or podfiles.ClusterInfo()
        self.backoff = backoff
        self.resync_interval = resync_interval
        self.host_ip = host_ip
        # The node's allocatable resources: resourceFieldRef limits default to them.
        self.allocatable = dict(allocatable or {})
        # Where env configMapKeyRef/secretKeyRef/envFrom values come from (the
        # agent reads the API as the node); None: every such object counts as missing.
        self.configmaps = configmaps
        self.secrets = secrets
        # Grace for pods that vanished from the API (None: their own grace period).
        self.orphan_grace_seconds = orphan_grace_seconds
        # Running pods' configMap/secret/downwardAPI/projected files are
        # re-read and rewritten (atomically, only when changed) this often.
        self.volume_refresh_interval = volume_refresh_interval
        self._pods: dict[str, PodRecord] = {}
        self._desired: dict[str, tuple[dict[str, Any], PodSpec]] | None = None  # None until the first sync
        self._services: list[dict[str, Any]] = []
        self._published: dict[str, dict[str, Any]] = {}
        # Deleting pods whose termination finished and was announced once (see _terminate).
        self._announced_done: set[str] = set()
        self._wake = asyncio.Event()
        self._watched: dict[int, int] = {}  # shim pid -> pidfd
        self._load_lock = asyncio.Lock()
        self._load_done = asyncio.Event()
        self._pass = asyncio.Lock()  # run() and close(stop_pods=True) both reconcile
        self._closed = False
        # Probes run in their own tasks; results come back through these callbacks.
        self._prober = Prober(on_change=self._probe_changed, on_kill=self._probe_kill)
        self._kills: dict[ProbeKey, float] = {}  # liveness kill -> SIGKILL deadline

    # ---- agent-facing API ------------------------------------------------------

    def sync(self, desired_pods: list[dict[str, Any]]) -> None:
        """Declare the complete set of pods that should run here. Bad pods are
        logged and skipped; everything else is reconciled by :meth:`run`."""
        desired: dict[str, tuple[dict[str, Any], PodSpec]] = {}
        for doc in desired_pods:
            doc = copy.deepcopy(doc)  # the caller may mutate or reuse its dicts
            try:
                spec = parse_pod(doc)
            except PodSpecError as exc:
                log.warning("ignoring pod", extra=fields(error=str(exc)))
                continue
            desired[spec.uid] = (doc, spec)
        self._desired = desired
        self._wake.set()

    def set_services(self, services: list[dict[str, Any]]) -> None:
        """Services whose env vars new containers get (kubelet's service links)."""
        self._services = list(services)

    def status(self, uid: str) -> dict[str, Any] | None:
        rec = self._pods.get(uid)
        return self._status(rec) if rec else None

    async def run(self) -> None:
        """Reconcile until cancelled or :meth:`close` is called."""
        await self.load()
        refresher = asyncio.create_task(self._refresh_volumes_loop())
        try:
            while not self._closed:
                await self.reconcile()
                await wait_event(self._wake, self._next_wait())
                self._wake.clear()
        finally:
            refresher.cancel()

    async def close(self, *, stop_pods: bool = False) -> None:
        """Stop the loop; with ``stop_pods`` terminate every pod first (node drain)."""
        if stop_pods:
            self.sync([])
            deadline = time.monotonic() + max([r.spec.grace_seconds for r in self._pods.values()] + [0]) + 10
            while self._pods and time.monotonic() < deadline:
                await self.reconcile()
                await asyncio.sleep(0.05)
        self._closed = True
        self._wake.set()
        await self._prober.close()
        loop = asyncio.get_running_loop()
        for fd in self._watched.values():
            loop.remove_reader(fd)
            os.close(fd)
        self._watched.clear()

    # ---- loading and persistence -------------------------------------------------

    def _pod_dir(self, uid: str) -> Path:
        return self.data_dir / "pods" / uid

    async def load(self) -> None:
        """Re-adopt pods from disk and drop sandboxes no record knows (once)."""
        # One loader at a time; a concurrent caller must not see half the pods.
        # A load that was cancelled (agent stopped during a CNI CHECK) is
        # redone by the next caller instead of leaving it waiting forever.
        async with self._load_lock:
            if not self._load_done.is_set():
                await self._load()

    async def _load(self) -> None:
        for state in sorted(self.data_dir.glob("pods/*/state.json")):
            try:
                rec = PodRecord.from_dict(json.loads(state.read_text()))
            except (OSError, ValueError, KeyError, TypeError, PodSpecError) as exc:
                log.warning("unreadable pod state; its pod will be cleaned up",
                            extra=fields(path=str(state), error=str(exc)))
                continue
            self._pods[rec.uid] = rec
            running = [n for n, c in rec.containers.items() if c.running]
            log.info("adopted pod", extra=fields(pod=rec.spec.key, running=",".join(running)))
            check = getattr(self.runtime, "check_sandbox", None)  # optional: CNI CHECK
            if check and rec.sandbox and not rec.network_released:
                try:
                    await check(rec.sandbox)
                except SandboxError as exc:
                    log.warning("adopted pod's network fails CNI CHECK", extra=fields(pod=rec.spec.key,
                                                                                      error=str(exc)))
        for pod_dir in sorted(self.data_dir.glob("pods/*")):
            if pod_dir.name not in self._pods and pod_dir.is_dir():
                # No record (unreadable state): nothing will unmount its tmpfs later.
                failed = tmpfs.unmount_under(pod_dir)
                if failed:
                    log.warning("could not unmount an unknown pod's volumes", extra=fields(errors="; ".join(failed)))
        keep = {r.sandbox.id for r in self._pods.values() if r.sandbox and not r.network_released}
        try:
            containers = {h.id for r in self._pods.values() for c in r.containers.values()
                          for h in (c.handle, c.last_handle) if h is not None}
            removed = await self.runtime.cleanup(keep_sandboxes=keep, keep_containers=containers)
        except SandboxError as exc:
            log.warning("sandbox cleanup failed", extra=fields(error=str(exc)))
            removed = []
        if removed:
            log.info("cleaned stale sandboxes", extra=fields(count=len(removed)))
        self._load_done.set()

    async def wait_loaded(self) -> None:
        """Return once pods on disk are adopted and stale sandboxes are gone."""
        await self._load_done.wait()

    def _save(self, rec: PodRecord) -> None:
        d = self._pod_dir(rec.uid)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "state.json.tmp"
        tmp.write_text(json.dumps(rec.to_dict()))
        os.replace(tmp, d / "state.json")

    # ---- the loop --------------------------------------------------------------

    def _next_wait(self) -> float:
        now = time.time()
        wait = self.resync_interval
        for rec in self._pods.values():
            if rec.term_deadline is not None:
                wait = min(wait, max(0.05, rec.term_deadline - now) if not rec.term_killed else 0.2)
            if rec.sandbox is None and rec.sandbox_not_before:
                wait = min(wait, max(0.05, rec.sandbox_not_before - now))
            for c in rec.containers.values():
                if not c.running and c.not_before > now:
                    wait = min(wait, max(0.05, c.not_before - now))
        for deadline in self._kills.values():
            wait = min(wait, max(0.05, deadline - now))
        return wait

    async def reconcile(self) -> None:
        """One pass over every known and desired pod (one pass at a time)."""
        async with self._pass:
            await self._reconcile_all()

    async def _reconcile_all(self) -> None:
        await self.load()
        if self._desired is None:  # after a restart: adopt, but change nothing yet
            for rec in list(self._pods.values()):
                self._poll(rec)
                self._publish(rec)
            return
        uids = set(self._pods) | set(self._desired)
        results = await asyncio.gather(*(self._reconcile_pod(uid) for uid in sorted(uids)), return_exceptions=True)
        for uid, res in zip(sorted(uids), results):
            if isinstance(res, BaseException):
                log.error("pod reconcile failed", exc_info=res, extra=fields(uid=uid))
        probed = self._probe_keys()
        self._prober.retain(probed)
        self._kills = {k: v for k, v in self._kills.items() if k in probed}

    async def _reconcile_pod(self, uid: str) -> None:
        assert self._desired is not None
        want = self._desired.get(uid)
        rec = self._pods.get(uid)
        now = time.time()
        if rec is None:
            if want is None:
                return
            rec = PodRecord.new(want[0], want[1], now=now)
            self._pods[uid] = rec
            self._save(rec)
        elif want is not None and want[0] != rec.doc:
            # Pods are immutable but for metadata, so keep our containers and
            # take the new document (deletionTimestamp, grace).
            rec.doc, rec.spec = want[0], want[1]
            for c in rec.spec.init_containers + rec.spec.containers:
                rec.containers.setdefault(c.name, ContainerRecord(name=c.name))
            self._save(rec)
        if want is None or rec.spec.deleting:
            await self._terminate(rec, forget=want is None)
            return
        self._poll(rec)
        phase = lifecycle.pod_phase(rec.spec, rec.containers, sandbox_ready=rec.sandbox is not None)
        if phase in ("Succeeded", "Failed"):
            await self._release_network(rec)
        else:
            await self._advance(rec, now=now)
            self._sync_probes(rec, now=time.time())
        self._publish(rec)

    def _poll(self, rec: PodRecord) -> None:
        """Notice containers that exited since the last pass."""
        changed = False
        for c in rec.containers.values():
            if c.running and c.handle is not None:
                result = self.runtime.poll_container(c.handle)
                if result is None:
                    self._watch(c.handle.data.get("shim_pid", 0), c.handle.data.get("shim_start"))
                    continue
                lifecycle.record_exit(c, result, backoff=self.backoff)
                changed = True
                log.info("container exited", extra=fields(pod=rec.spec.key, container=c.name,
                                                          code=result.exit_code, reason=result.reason))
        if changed:
            self._save(rec)

    def _watch(self, pid: int, start: Any) -> None:
        """Wake the loop the moment a shim exits (it writes exit.json first)."""
        if not pid or pid in self._watched or self._closed:
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        if proc_start_ticks(pid) != start:
            os.close(fd)
            return
        self._watched[pid] = fd
        loop = asyncio.get_running_loop()

        def exited() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self._watched.pop(pid, None)
            self._wake.set()

        loop.add_reader(fd, exited)

    async def _advance(self, rec: PodRecord, *, now: float) -> None:
        spec = rec.spec
        if rec.sandbox is None:
            if now < rec.sandbox_not_before:
                return
            if not await self._set_up_volumes(rec):
                return  # kubelet: no sandbox until every volume is mounted; retried every pass
            try:
                rec.sandbox = await self.runtime.run_sandbox(spec)
                rec.sandbox_error, rec.sandbox_level, rec.network_released = "", 0, False
            except SandboxError as exc:
                rec.sandbox_error = str(exc)
                rec.sandbox_level += 1
                rec.sandbox_not_before = now + self.backoff.delay(rec.sandbox_level)
                log.warning("pod sandbox failed", extra=fields(pod=spec.key, error=str(exc)))
                self._save(rec)
                return
            self._save(rec)
        step = lifecycle.plan(spec, rec.containers, now=now)
        for name in step.start:
            await self._start(rec, name)

    async def _start(self, rec: PodRecord, name: str) -> None:
        spec = rec.spec
        container = spec.container(name)
        assert container is not None and rec.sandbox is not None
        c = rec.containers[name]
        try:
            env = await self._container_env(rec, container)
            handle = await self.runtime.start_container(
                spec, rec.sandbox, container, restart_count=lifecycle.next_restart_count(c), env=env)
        except ContainerStartError as exc:
            if c.waiting_reason != exc.reason or c.waiting_message != str(exc):
                log.warning("container not started", extra=fields(pod=spec.key, container=name, reason=exc.reason,
                                                                   error=str(exc)))
            # kubelet retries a config error on the pod worker's next sync (a
            # steady 10 s), not with the crash back-off: the ConfigMap may appear.
            retry = self.backoff.base if exc.reason == "CreateContainerConfigError" else None
            lifecycle.record_refused(c, reason=exc.reason, message=str(exc), now=time.time(), backoff=self.backoff,
                                     retry_after=retry)
        else:
            lifecycle.record_start(c, handle)
            self._watch(handle.data.get("shim_pid", 0), handle.data.get("shim_start"))
        self._save(rec)

    # ---- configMap, secret, downwardAPI and projected volumes ------------------------

    async def _volume_payloads(self, rec: PodRecord, cache: dict[tuple[str, str, str], Any]
                               ) -> dict[str, atomicwriter.Payload]:
        """The files of each such volume, or VolumeError with kubelet's message."""
        out: dict[str, atomicwriter.Payload] = {}
        facts = envsources.PodFacts(allocatable=self.allocatable)
        for vol in volumes.projections(rec.spec.volumes):
            try:
                proj = volumes.parse(vol)
                objects = {}
                for kind, name in proj.objects():
                    key = (rec.spec.namespace, kind, name)
                    if key not in cache:
                        source = self.configmaps if kind == volumes.CONFIGMAP else self.secrets
                        try:
                            cache[key] = await volumes.fetch_files(source, rec.spec.namespace, name)
                        except volumes.VolumeError as exc:
                            cache[key] = exc
                    if isinstance(cache[key], volumes.VolumeError):
                        raise cache[key]
                    objects[(kind, name)] = cache[key]
                out[vol.name] = volumes.payload(proj, pod=rec.spec, objects=objects, facts=facts)
            except volumes.VolumeError as exc:
                raise volumes.VolumeError(f'MountVolume.SetUp failed for volume "{vol.name}" : {exc}') from None
        return out

    async def _set_up_volumes(self, rec: PodRecord, *, cache: dict[tuple[str, str, str], Any] | None = None,
                              refresh: bool = False) -> bool:
        """Write the pod's projected-kind volumes; False (and ``volume_error``) if one cannot be.
        A refresh that fails keeps the files as they are, as kubelet does."""
        write = getattr(self.runtime, "write_volume", None)
        if write is None or not volumes.projections(rec.spec.volumes):
            return True  # another runtime refuses the volume type itself at container start
        try:
            payloads = await self._volume_payloads(rec, {} if cache is None else cache)
            if refresh and not self._refreshable(rec):
                return False  # torn down while we were reading the API: write nothing
            changed = [name for name, files in payloads.items() if write(rec.spec, name, files)]
        except (volumes.VolumeError, OSError) as exc:
            message = str(exc)
            if message != rec.volume_error:  # once per message, not on every pass
                log.warning("volume not refreshed, files kept" if refresh else "volume not set up",
                            extra=fields(pod=rec.spec.key, error=message))
            rec.volume_error = message  # shown in the status only while there is no sandbox
            return False
        if refresh and changed:
            log.info("volume files updated", extra=fields(pod=rec.spec.key, volumes=",".join(changed)))
        rec.volume_error = ""
        return True

    def _refreshable(self, rec: PodRecord) -> bool:
        """Set up, not terminating and not finished. A crash-looping pod counts:
        its next container instance must see current files."""
        return (self._pods.get(rec.uid) is rec and rec.sandbox is not None and rec.term_deadline is None
                and not rec.spec.deleting and not rec.network_released)

    async def _refresh_volumes_loop(self) -> None:
        """Bring set-up pods' volume files up to date with their ConfigMaps,
        Secrets and pod metadata. Objects are read once per round."""
        while not self._closed:
            await asyncio.sleep(self.volume_refresh_interval)
            cache: dict[tuple[str, str, str], Any] = {}
            for rec in list(self._pods.values()):
                if self._refreshable(rec) and volumes.projections(rec.spec.volumes):
                    try:
                        await self._set_up_volumes(rec, cache=cache, refresh=True)
                    except Exception:  # noqa: BLE001 - one bad pod must not stop the refresh
                        log.exception("volume refresh failed", extra=fields(pod=rec.spec.key))

    async def _container_env(self, rec: PodRecord, container: ContainerSpec) -> dict[str, str]:
        """Resolve the environment now that the sandbox (and so the pod IP) exists."""
        assert rec.sandbox is not None
        found: dict[str, dict[str, Mapping[str, str]]] = {}
        for kind, source in ((envsources.CONFIGMAP, self.configmaps), (envsources.SECRET, self.secrets)):
            found[kind.facts_field] = {}
            for name in envsources.referenced_names(container, kind):
                try:
                    data = await source.get(rec.spec.namespace, name) if source else None
                except envsources.ConfigMapLookupError as exc:
                    raise ContainerStartError(str(exc), reason="CreateContainerConfigError") from None
                if data is not None:
                    found[kind.facts_field][name] = data
        facts = envsources.PodFacts(pod_ips=rec.sandbox.ips, host_ips=(self.host_ip,) if self.host_ip else (),
                                    allocatable=self.allocatable, configmaps=found["configmaps"],
                                    secrets=found["secrets"],
                                    hostname=str(rec.sandbox.data.get("hostname") or ""))
        try:
            return podfiles.container_env(rec.spec, container, cluster=self.cluster, services=self._services,
                                          facts=facts)
        except envsources.EnvError as exc:
            raise ContainerStartError(str(exc), reason="CreateContainerConfigError") from None

    async def _release_network(self, rec: PodRecord) -> None:
        if rec.sandbox is None or rec.network_released:
            return
        try:
            await self.runtime.stop_sandbox(rec.spec, rec.sandbox)
        except SandboxError as exc:
            log.warning("releasing pod network failed", extra=fields(pod=rec.spec.key, error=str(exc)))
            return
        rec.network_released = True
        self._save(rec)

    async def _terminate(self, rec: PodRecord, *, forget: bool) -> None:
        """SIGTERM, grace period, SIGKILL; then release the sandbox and, for
        pods gone from the API, forget them."""
        now = time.time()
        self._poll(rec)
        running = [c for c in rec.containers.values() if c.running and c.handle]
        if rec.term_deadline is None:
            grace = float(rec.spec.grace_seconds)
            if forget and self.orphan_grace_seconds is not None:
                grace = self.orphan_grace_seconds
            rec.term_deadline = now + grace
            for c in running:
                self.runtime.signal_container(c.handle, signal.SIGTERM if grace > 0 else signal.SIGKILL)  # type: ignore[arg-type]
            log.info("terminating pod", extra=fields(pod=rec.spec.key, grace=grace, running=len(running)))
            self._save(rec)
        elif running and now >= rec.term_deadline and not rec.term_killed:
            for c in running:
                self.runtime.signal_container(c.handle, signal.SIGKILL)  # type: ignore[arg-type]
            rec.term_killed = True
            log.info("grace period over, killed", extra=fields(pod=rec.spec.key, running=len(running)))
            self._save(rec)
        if running:
            self._publish(rec)
            return
        if rec.sandbox is not None and (forget or not rec.network_released):
            try:
                await self.runtime.stop_sandbox(rec.spec, rec.sandbox, remove=forget)  # type: ignore[call-arg]
            except SandboxError as exc:
                log.warning("pod teardown failed; will retry", extra=fields(pod=rec.spec.key, error=str(exc)))
                return
            rec.network_released = True
        if forget:
            # Unmounts its tmpfs (secret, projected, emptyDir Memory) first: also
            # those of a pod that never got a sandbox, or was adopted after a restart.
            tmpfs.remove_tree(self._pod_dir(rec.uid))
            del self._pods[rec.uid]
            self._published.pop(rec.uid, None)
            self._announced_done.discard(rec.uid)
            log.info("pod removed", extra=fields(pod=rec.spec.key))
            if self.on_change:
                self.on_change(rec.uid, None)
            return
        self._save(rec)
        if rec.spec.deleting and rec.uid not in self._announced_done:
            # The kubelet confirms the API deletion on a status push. A pod whose
            # containers never started has the same status before and after
            # termination, so without this it stayed Terminating forever.
            self._announced_done.add(rec.uid)
            self._published.pop(rec.uid, None)
        self._publish(rec)

    # ---- probes -------------------------------------------------------------------

    def _probe_keys(self) -> set[ProbeKey]:
        """Container instances that should be probed: running, pod not terminating."""
        return {(uid, c.name, c.handle.id) for uid, rec in self._pods.items()
                if rec.term_deadline is None and not rec.spec.deleting
                for c in rec.containers.values() if c.running and c.handle is not None}

    def _sync_probes(self, rec: PodRecord, *, now: float) -> None:
        """Start probing new instances; SIGKILL liveness kills past their grace."""
        for spec in rec.spec.containers:
            c = rec.containers[spec.name]
            if not c.running or c.handle is None or not spec.probes:
                continue
            key = (rec.uid, spec.name, c.handle.id)
            self._prober.ensure(key, spec, started_at=c.handle.started_at, target=self._probe_target(key))
            deadline = self._kills.get(key)
            if deadline is not None and now >= deadline:
                self.runtime.signal_container(c.handle, signal.SIGKILL)  # type: ignore[arg-type]
                self._kills[key] = float("inf")
                log.info("probe kill grace over, killed", extra=fields(pod=rec.spec.key, container=spec.name))

    def _live_container(self, key: ProbeKey) -> tuple[PodRecord, ContainerRecord] | None:
        rec = self._pods.get(key[0])
        c = rec.containers.get(key[1]) if rec else None
        if rec is None or c is None or not c.running or c.handle is None or c.handle.id != key[2]:
            return None
        return rec, c

    def _probe_target(self, key: ProbeKey) -> Callable[[], ProbeTarget | None]:
        def target() -> ProbeTarget | None:
            found = self._live_container(key)
            if found is None or found[0].sandbox is None:
                return None
            rec, _ = found
            spec = rec.spec.container(key[1])
            assert spec is not None and rec.sandbox is not None
            return ProbeTarget(pod_ip=rec.sandbox.ips[0] if rec.sandbox.ips else "",
                               netns_path=rec.sandbox.netns_path, container=spec,
                               process=self.container_process(rec.spec.namespace, rec.spec.name, key[1]))
        return target

    def _probe_changed(self, uid: str) -> None:
        rec = self._pods.get(uid)
        if rec is not None:
            self._publish(rec)

    def _probe_kill(self, uid: str, name: str, instance: str, grace: int | None) -> None:
        """A liveness or startup probe failed for good: kill as kubelet does
        (SIGTERM, grace, SIGKILL); the exit then meets the restart policy."""
        key = (uid, name, instance)
        found = self._live_container(key)
        if found is None or key in self._kills or found[0].spec.deleting:
            return
        rec, c = found
        seconds = float(rec.spec.grace_seconds if grace is None else grace)
        assert c.handle is not None
        self.runtime.signal_container(c.handle, signal.SIGTERM if seconds > 0 else signal.SIGKILL)
        self._kills[key] = time.time() + seconds
        log.info("killing container that failed its probe", extra=fields(pod=rec.spec.key, container=name,
                                                                          grace=seconds))
        self._wake.set()

    def _readiness(self, rec: PodRecord) -> dict[str, Readiness]:
        out = {}
        for spec in rec.spec.containers:
            c = rec.containers[spec.name]
            if spec.probes:
                key = (rec.uid, spec.name, c.handle.id if c.handle else "")
                out[spec.name] = self._prober.readiness(key, spec, running=c.running)
        return out

    # ---- status -------------------------------------------------------------------

    def _status(self, rec: PodRecord) -> dict[str, Any]:
        def build() -> dict[str, Any]:
            return lifecycle.pod_status(
                rec.spec, rec.containers, runtime=self.runtime.name,
                ips=rec.sandbox.ips if rec.sandbox else (), sandbox_ready=rec.sandbox is not None,
                sandbox_error=rec.sandbox_error, start_time=rec.start_time, host_ip=self.host_ip, since=rec.since,
                readiness=self._readiness(rec),
            )
        status = build()
        since = lifecycle.condition_times(rec.since, status["conditions"], now=time.time())
        if since != rec.since:
            rec.since = since
            status = build()
        if rec.sandbox is None and rec.volume_error:
            # kubelet reports this as FailedMount events while the containers
            # stay ContainerCreating; the message rides along for the event.
            for cs in status.get("initContainerStatuses", []) + status["containerStatuses"]:
                waiting = cs.get("state", {}).get("waiting")
                if waiting is not None and waiting.get("reason") in ("ContainerCreating", "PodInitializing"):
                    waiting["message"] = rec.volume_error
        return status

    def _publish(self, rec: PodRecord) -> None:
        status = self._status(rec)
        if self._published.get(rec.uid) != status:
            self._published[rec.uid] = status
            if self.on_change:
                try:
                    self.on_change(rec.uid, status)
                except Exception:  # noqa: BLE001 - a bad callback must not stop the loop
                    log.exception("on_change callback failed", extra=fields(uid=rec.uid))

    # ---- PodView: what the kubelet API reads ----------------------------------------

    def find_uid(self, namespace: str, name: str) -> str | None:
        for uid, rec in self._pods.items():
            if rec.spec.namespace == namespace and rec.spec.name == name:
                return uid
        return None

    def _container(self, namespace: str, pod: str, container: str) -> tuple[PodRecord, ContainerRecord] | None:
        uid = self.find_uid(namespace, pod)
        if uid is None:
            return None
        rec = self._pods[uid]
        c = rec.containers.get(container)
        return (rec, c) if c else None

    def container_process(self, namespace: str, pod: str, container: str) -> ContainerProcess | None:
        found = self._container(namespace, pod, container)
        if found is None:
            return None
        rec, c = found
        if not c.running or c.handle is None or proc_start_ticks(c.handle.pid) != c.handle.data.get("pid_start"):
            return None
        spec = rec.spec.container(container)
        assert spec is not None
        env = self._started_env(c.handle)
        return ContainerProcess(pod_uid=rec.uid, container=container,
                                container_id=f"{self.runtime.name}://{c.handle.id}", pid=c.handle.pid,
                                env=env, working_dir=spec.working_dir or "/")

    @staticmethod
    def _started_env(handle: Any) -> dict[str, str]:
        """The environment the container was started with (valueFrom values
        were resolved then; recomputing could give other values)."""
        try:
            spec = json.loads((Path(handle.data["dir"]) / "spec.json").read_text())
            return {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
        except (OSError, ValueError, KeyError, AttributeError):
            return {"PATH": podfiles.DEFAULT_PATH}

    def container_logs(self, namespace: str, pod: str, container: str) -> ContainerLogs | None:
        found = self._container(namespace, pod, container)
        if found is None:
            return None
        _, c = found
        return ContainerLogs(current=c.handle.log_path if c.handle else None,
                             previous=c.last_handle.log_path if c.last_handle else None,
                             running=c.running)

    def container_attach(self, namespace: str, pod: str, container: str) -> ContainerAttach | None:
        """The console of the current instance; the socket path is part of the
        persisted handle, so attach works again after an agent restart."""
        found = self._container(namespace, pod, container)
        if found is None:
            return None
        rec, c = found
        spec = rec.spec.container(container)
        assert spec is not None
        handle = c.handle
        running = bool(c.running and handle is not None
                       and proc_start_ticks(handle.pid) == handle.data.get("pid_start"))
        return ContainerAttach(pod_uid=rec.uid, container=container,
                               container_id=f"{self.runtime.name}://{handle.id}" if handle else "",
                               running=running, socket=str(handle.data.get("attach") or "") if handle else "",
                               stdin=spec.stdin, stdin_once=spec.stdin_once, tty=spec.tty)

    def pod_network(self, namespace: str, pod: str) -> PodNetwork | None:
        uid = self.find_uid(namespace, pod)
        rec = self._pods.get(uid) if uid else None
        if rec is None or rec.sandbox is None or rec.network_released:
            return None
        return PodNetwork(pod_uid=rec.uid, netns_path=rec.sandbox.netns_path, ips=rec.sandbox.ips)

    def pods(self) -> list[dict[str, Any]]:
        return [{**rec.doc, "status": self._status(rec)} for rec in self._pods.values()]
