"""The running agent: join, tunnel, kubelet API, Node, Lease, pods.

Start-up order (each step needs the one before):

1. join: pin the CA, fetch cluster settings, get node certificates (the node
   password under ``--data-dir`` keeps the identity across restarts);
2. tunnel: dial out to the server with the node certificate, so the server
   can reach this node's kubelet API with no inbound port;
3. Node: register (NotReady), wait for IPAM's podCIDR;
4. pods: process runtime on that podCIDR, pod manager (re-adopts pods left by
   a previous run), kubelet API on 127.0.0.1:10250, pod watch and status;
5. Ready: post Ready=True, then renew the Lease every 10 s and re-post status
   every minute or whenever the server shows the node not Ready.

``stop()`` (SIGTERM) ends the agent's own tasks and leaves pods running, as
the kubelet does, so a restart re-adopts them.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import time
from typing import Any

from edgectl.aio import cancel_and_wait
from edgectl.errors import EdgectlError
from edgectl.log import fields

from . import node as nodeapi
from .client import ApiClient, ApiError, ApiUnavailable, StaticEndpoint
from .config import AgentConfig, describe
from .join import JoinResult, join
from .lease import LeaseKeeper
from .podsync import PodSync

log = logging.getLogger(__name__)

STATUS_INTERVAL = 60.0  # full Node status heartbeat; the Lease is the 10 s liveness signal
RENEW_CHECK_INTERVAL = 6 * 3600.0  # node certs last a year; a start always fetches fresh ones
START_CANCEL_GRACE = 2.0  # SIGTERM during start-up: how long the cancelled start may take to unwind
STOP_BUDGET = 6.0  # all shutdown steps together (each at most 3 s); SIGTERM to exit stays well under 10 s


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._stop_deadline = float("inf")  # set by stop()
        self.joined: JoinResult | None = None
        self.client: ApiClient | None = None
        self.tunnel: Any = None
        self.kubelet: Any = None
        self.manager: Any = None
        self.podsync: PodSync | None = None
        self.lease: LeaseKeeper | None = None
        self.pod_cidr: str | None = None
        self.ready = asyncio.Event()
        self.timings: dict[str, float] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._one_shot: set[str] = set()  # tasks that end by design (not a health signal)
        self._facts = nodeapi.machine_facts()
        self._ready_since: str | None = None

    # ---- start ---------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        t0 = time.monotonic()
        log.info("agent starting", extra=fields(**describe(cfg)))
        created = not cfg.data_dir.exists()
        try:
            cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:  # /proc/x, a file in the way, read-only: one line, not a traceback
            raise EdgectlError(f"cannot use --data-dir {cfg.data_dir}: {exc.strerror or exc}") from None
        try:
            self.joined = await self._join()
        except BaseException:
            if created:  # a refused join (wrong token, other CA) leaves nothing behind
                with contextlib.suppress(OSError):
                    cfg.data_dir.rmdir()  # only if still empty
            raise
        self.timings["join"] = time.monotonic() - t0
        self.client = ApiClient(endpoint=StaticEndpoint(cfg.server), ssl_context=self.joined.api_ssl_context())
        self._start_tunnel()
        stored = await self._retry("register node", lambda: nodeapi.register(self.client, cfg, self._facts))
        self.pod_cidr = await self._retry("wait for podCIDR", lambda: nodeapi.wait_pod_cidr(self.client, cfg.node_name))
        self.timings["registered"] = time.monotonic() - t0
        self._allow_pod_cidr()
        if cfg.run_pods:
            await self._start_pods()
        await self._start_kubelet()
        self.lease = LeaseKeeper(client=self.client, node=cfg.node_name, interval=cfg.lease_seconds,
                                 node_uid=(stored.get("metadata") or {}).get("uid"))
        await self._retry("renew lease", self.lease.renew)
        await self._post_ready()
        self.timings["ready"] = time.monotonic() - t0
        self._spawn(self._node_events(stored), "node-events", one_shot=True)
        self._spawn(self.lease.run(), "lease")
        self._spawn(self._status_loop(), "node-status")
        self._spawn(self._renew_loop(), "cert-renewal")
        self.ready.set()
        log.info("node ready", extra=fields(node=cfg.node_name, pod_cidr=self.pod_cidr,
                                            seconds=round(self.timings["ready"], 3)))

    async def _join(self) -> JoinResult:
        cfg = self.config
        delay = 1.0
        while True:
            try:
                return await asyncio.to_thread(join, server_url=cfg.server, token=cfg.token, data_dir=cfg.data_dir,
                                               node_name=cfg.node_name, node_ips=cfg.node_ips)
            except Exception as exc:  # noqa: BLE001 - JoinError says what is wrong
                msg = str(exc)
                # Only an unreachable or overloaded server is worth waiting for;
                # a wrong token, CA or node password will not fix itself.
                if not any(s in msg for s in ("cannot reach", "returned 5", "returned 429")):
                    raise
                log.warning("join failed; retrying", extra=fields(server=cfg.server, error=msg, retry_in=delay))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _retry(self, what: str, call: Any) -> Any:
        delay = 0.2
        while True:
            try:
                return await call()
            except ApiUnavailable as exc:
                log.warning(f"{what} failed; retrying", extra=fields(error=str(exc)))
            except ApiError as exc:
                if exc.code < 500 and exc.code != 429 and exc.code != 409:
                    raise
                log.warning(f"{what} failed; retrying", extra=fields(error=str(exc)))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _egress_mode(self) -> str:
        assert self.joined is not None
        return self.config.egress_mode or self.joined.config.egress_selector_mode or "agent"

    def _start_tunnel(self) -> None:
        try:
            from edgectl.tunnel.agent import AgentConfig as TunnelConfig, TunnelAgent
            from edgectl.tunnel.allowlist import AllowList, EgressMode
        except ImportError as exc:  # pragma: no cover - the tunnel package ships with edgectl
            log.warning("tunnel unavailable", extra=fields(error=str(exc)))
            return
        assert self.joined is not None
        allow = AllowList(mode=EgressMode(self._egress_mode()), kubelet_port=self.config.kubelet_port)
        self.tunnel = TunnelAgent(TunnelConfig(server=self.config.server, node=self.config.node_name, allow=allow),
                                  ssl_context=self.joined.api_ssl_context())
        self._spawn(self._keep_tunnel(), "tunnel")

    async def _keep_tunnel(self) -> None:
        """TunnelAgent.run reconnects by itself; this only guards against an
        unexpected exception ending it, which would cut the node off for good."""
        while True:
            try:
                await self.tunnel.run()
                return  # stopped on purpose
            except Exception as exc:  # noqa: BLE001 - log, then dial again
                log.error("tunnel loop failed; restarting it", extra=fields(error=repr(exc)))
                await asyncio.sleep(1.0)

    def _allow_pod_cidr(self) -> None:
        """Egress modes pod/cluster need the podCIDR, known only after registration."""
        if self.tunnel is None or self.pod_cidr is None:
            return
        assert self.joined is not None
        allow = dataclasses.replace(
            self.tunnel.config.allow, pod_cidrs=(ipaddress.ip_network(self.pod_cidr),),
            cluster_cidrs=(ipaddress.ip_network(self.joined.config.cluster_cidr),))
        self.tunnel.config = dataclasses.replace(self.tunnel.config, allow=allow)

    async def _start_pods(self) -> None:
        from .configmaps import ApiConfigMaps, ApiSecrets
        from .runtime.manager import PodManager
        from .runtime.podfiles import ClusterInfo
        from .runtime.process import ProcessRuntime, RuntimeConfig

        assert self.joined is not None and self.client is not None
        cluster = self.joined.config
        svc = ipaddress.ip_network(cluster.service_cidr)
        info = ClusterInfo(api_service_ip=str(svc.network_address + 1), cluster_domain=cluster.cluster_domain)
        runtime = ProcessRuntime(RuntimeConfig(pod_cidr=self.pod_cidr, data_dir=self.config.data_dir, cluster=info,
                                               log_max_bytes=self.config.container_log_max_bytes,
                                               node_ips=tuple(self.config.node_ips)))
        self.podsync = PodSync(client=self.client, node=self.config.node_name)
        self.manager = PodManager(runtime=runtime, data_dir=self.config.data_dir, on_change=self.podsync.on_change,
                                  cluster=info, host_ip=self.config.node_ips[0] if self.config.node_ips else "",
                                  allocatable=nodeapi.node_resources(self._facts),
                                  configmaps=ApiConfigMaps(self.client), secrets=ApiSecrets(self.client))
        self.podsync.manager = self.manager
        self._spawn(self.manager.run(), "pod-manager")
        self._spawn(self.podsync.run(), "pod-sync")

    async def _start_kubelet(self) -> None:
        if self.manager is None:
            return
        try:
            from .kubelet.server import KubeletConfig, KubeletServer
        except ImportError as exc:
            log.warning("kubelet API unavailable; logs/exec/port-forward will fail", extra=fields(error=str(exc)))
            return
        assert self.joined is not None
        self.kubelet = KubeletServer(KubeletConfig(cert_file=self.joined.serving_cert, key_file=self.joined.serving_key,
                                                   client_ca_file=self.joined.client_ca, port=self.config.kubelet_port),
                                     pods=self.manager)
        await self.kubelet.start()

    # ---- steady state --------------------------------------------------------------------

    def healthy(self) -> tuple[bool, str]:
        for task in self._tasks:
            if task.done() and task.get_name() not in self._one_shot:
                return False, f"agent task {task.get_name()} stopped"
        return True, "edgectl agent is posting ready status"

    async def _post_ready(self) -> None:
        assert self.client is not None
        ok, message = self.healthy()
        if self._ready_since is None or not ok:
            self._ready_since = nodeapi.now_rfc3339()
        await self._retry("post node status", lambda: nodeapi.post_status(
            self.client, self.config, self._facts, ready=ok, message=message, ready_since=self._ready_since))

    async def _status_loop(self) -> None:
        assert self.client is not None
        last_post = time.monotonic()
        while True:
            await asyncio.sleep(self.config.status_check_seconds)
            try:
                stored = await self.client.get(nodeapi.node_path(self.config.node_name))
                cond = nodeapi.condition(stored, "Ready") or {}
                ok, _ = self.healthy()
                shown = cond.get("status") == "True"
                if shown != ok or time.monotonic() - last_post >= STATUS_INTERVAL:
                    await self._post_ready()
                    last_post = time.monotonic()
            except (ApiError, ApiUnavailable) as exc:
                log.warning("node status check failed", extra=fields(error=str(exc)))

    async def _node_events(self, stored: dict[str, Any]) -> None:
        from .events import EventRecorder, EventSpec

        assert self.client is not None
        node = {"kind": "Node", "apiVersion": "v1",
                "metadata": {"name": self.config.node_name, "uid": self.config.node_name}}  # upstream uses the name as uid
        recorder = EventRecorder(client=self.client, node=self.config.node_name)
        await recorder.record(node, EventSpec("Normal", "Starting", "Starting edgectl agent."))
        await recorder.record(node, EventSpec("Normal", "NodeReady",
                                              f"Node {self.config.node_name} status is now: NodeReady"))

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(RENEW_CHECK_INTERVAL)
            assert self.joined is not None
            if await asyncio.to_thread(self.joined.renewal_due):
                try:
                    await self.renew_certificates()
                except Exception as exc:  # noqa: BLE001 - retried on the next check
                    log.warning("node certificate renewal failed", extra=fields(error=str(exc)))

    async def renew_certificates(self) -> None:
        """Join again (same node password) and use the new certificates for new
        connections: API client, tunnel reconnects and the kubelet API."""
        cfg = self.config
        self.joined = await asyncio.to_thread(join, server_url=cfg.server, token=cfg.token, data_dir=cfg.data_dir,
                                              node_name=cfg.node_name, node_ips=cfg.node_ips)
        ctx = self.joined.api_ssl_context()
        if self.client is not None:
            self.client.ssl_context = ctx
        if self.tunnel is not None:
            self.tunnel.ssl_context = ctx
        server_ctx = getattr(getattr(self.kubelet, "http", None), "ssl_context", None)
        if server_ctx is not None:  # later handshakes present the new serving cert
            server_ctx.load_cert_chain(self.joined.serving_cert, self.joined.serving_key)
        log.info("node certificates renewed", extra=fields(node=cfg.node_name))

    def _spawn(self, coro: Any, name: str, *, one_shot: bool = False) -> None:
        task = asyncio.create_task(coro, name=name)
        if one_shot:
            self._one_shot.add(name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("agent task failed", exc_info=exc, extra=fields(task=task.get_name()))

    # ---- stop -----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop the agent; pods keep running and are re-adopted by the next start.

        Every step is bounded, and so is their sum (STOP_BUDGET): a stuck close must
        never keep SIGTERM from ending us."""
        self._stop_deadline = asyncio.get_running_loop().time() + STOP_BUDGET
        if self.tunnel is not None:
            await self._bounded("tunnel", self.tunnel.stop())
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await self._bounded("tasks", asyncio.gather(*self._tasks, return_exceptions=True))
        if self.kubelet is not None:
            await self._bounded("kubelet API", self.kubelet.close())
        if self.manager is not None:
            await self._bounded("pod manager", self.manager.close())
        if self.client is not None:
            await self._bounded("API client", self.client.close())
        log.info("agent stopped", extra=fields(node=self.config.node_name))

    async def _bounded(self, what: str, aw: Any, timeout: float = 3.0) -> None:
        # A task and asyncio.wait, not wait_for: on 3.11 wait_for waits (unbounded) for
        # the cancelled step to finish, and can lose a racing cancel. A step still
        # running after its time is cancelled and left behind (cli.py ends the rest).
        timeout = max(0.1, min(timeout, self._stop_deadline - asyncio.get_running_loop().time()))
        step = asyncio.ensure_future(aw)
        done, _ = await asyncio.wait({step}, timeout=timeout)
        if not done:
            step.cancel()
            stuck = ",".join(t.get_name() for t in self._tasks if not t.done())
            log.warning("shutdown step timed out", extra=fields(step=what, seconds=round(timeout, 1), pending=stuck))
        elif not step.cancelled() and step.exception() is not None:
            log.warning("shutdown step failed", extra=fields(step=what, error=repr(step.exception())))

    def status(self) -> dict[str, Any]:
        return {"node": self.config.node_name, "ready": self.ready.is_set(), "pod_cidr": self.pod_cidr,
                "tunnel": self.tunnel.status() if self.tunnel is not None else None,
                "timings": {k: round(v, 3) for k, v in self.timings.items()}}


async def run(config: AgentConfig, *, stop: asyncio.Event) -> None:
    """Run an agent until ``stop`` is set (the CLI sets it on SIGTERM/SIGINT)."""
    agent = Agent(config)
    start = asyncio.create_task(agent.start())
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({start, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if start in done:
            start.result()  # raise a fatal start-up error (wrong token, ...)
            await stop.wait()
    finally:
        for t in (start, stopper):
            t.cancel()
        # Start may be mid-adoption (CNI CHECKs of recovered sandboxes): bounded, never a hang.
        await cancel_and_wait([start], grace=START_CANCEL_GRACE)
        await agent.stop()


async def run_embedded(*, server_url: str, token: str, data_dir: Any, node_name: str, node_ips: tuple[str, ...],
                       stop: asyncio.Event, **options: Any) -> None:
    """The agent that ``edgectl server`` runs in its own process (as k3s does),
    so the server machine is a node like the others (with node-role labels)."""
    config = AgentConfig(server=server_url, token=token, node_name=node_name, node_ips=node_ips, data_dir=data_dir,
                         control_plane=True, **options)
    await run(config, stop=stop)
