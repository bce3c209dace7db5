"""Runs container probes: one asyncio task per probe, never in the reconcile loop.

The rules (thresholds, gating, what a result means) are in :mod:`.probes`;
this module only times the probes, runs the handlers and reports:

* ``exec``: ``nsenter`` into the container's namespaces
  (:meth:`ContainerProcess.enter_argv`) in its own session, so a timeout kills
  nsenter *and* the command it forked into the PID namespace;
* ``tcpSocket`` / ``httpGet``: the socket is created by a short-lived thread
  that ``setns``-es into the pod's netns (the node's for hostNetwork pods)
  and connects to the pod IP, as kubelet dials the pod IP from the host.
  The event loop then uses the socket; HTTP/1.1 GET is written by hand (one
  request, status line read, 200-399 succeed).

Every run is bounded by ``timeoutSeconds`` and a semaphore caps how many run
at once, so a slow or hung probe can delay only its own next tick.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable

from edgectl.log import fields

from . import childproc
from .interface import ContainerProcess
from .netns import connect_in_netns
from .probes import KINDS, STARTUP, ProbeSpec, ProbeState, Readiness, container_readiness, http_success, should_probe
from .spec import ContainerSpec

log = logging.getLogger(__name__)

USER_AGENT = "kube-probe/1.31"
MAX_OUTPUT = 10 * 1024  # exec output kept for the log message


@dataclass(frozen=True, kw_only=True)
class ProbeTarget:
    """How to reach one container instance right now."""

    pod_ip: str
    netns_path: str  # "": the agent's own namespace (hostNetwork pods)
    container: ContainerSpec
    process: ContainerProcess | None  # None when the container is gone


@dataclass(frozen=True, kw_only=True)
class Outcome:
    ok: bool
    message: str = ""


# ---- handlers -------------------------------------------------------------------


async def run_exec(spec: ProbeSpec, target: ProbeTarget) -> Outcome:
    if target.process is None:
        return Outcome(ok=False, message="container is not running")
    argv = target.process.enter_argv(spec.command)
    # Found on the agent's PATH: the container's env may set a PATH without it.
    argv[0] = shutil.which(argv[0]) or argv[0]
    try:  # childproc: a cancelled probe (agent stopping) can never wedge asyncio.run's teardown
        done = await childproc.run(argv, timeout=spec.timeout, env=dict(target.process.env), stderr=childproc.STDOUT,
                                   start_new_session=True)
    except TimeoutError:
        return Outcome(ok=False, message=f"command timed out after {spec.timeout:g}s")
    text = done.stdout[:MAX_OUTPUT].decode(errors="replace").strip()
    if done.returncode == 0:
        return Outcome(ok=True, message=text)
    return Outcome(ok=False, message=f"command exited {done.returncode}: {text}")


async def connect(target: ProbeTarget, host: str, port: int, timeout: float) -> socket.socket:
    return await connect_in_netns(target.netns_path, (host,), port, timeout=timeout)


def _endpoint(spec: ProbeSpec, target: ProbeTarget) -> tuple[str, int] | str:
    port = target.container.port_number(spec.port)
    if port is None:
        return f"no container port named {spec.port!r}"
    host = spec.host or target.pod_ip
    if not host:
        return "the pod has no IP"
    return host, port


async def run_tcp(spec: ProbeSpec, target: ProbeTarget) -> Outcome:
    where = _endpoint(spec, target)
    if isinstance(where, str):
        return Outcome(ok=False, message=where)
    try:
        sock = await connect(target, *where, spec.timeout)
    except OSError as exc:
        return Outcome(ok=False, message=f"dial tcp {where[0]}:{where[1]}: {exc.strerror or exc}")
    sock.close()
    return Outcome(ok=True)


def http_request(spec: ProbeSpec, host: str, port: int) -> bytes:
    """The GET kubelet sends; user headers replace the defaults of the same name."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers = {"host": ("Host", authority), "user-agent": ("User-Agent", USER_AGENT), "accept": ("Accept", "*/*")}
    for name, value in spec.headers:
        headers[name.lower()] = (name, value)
    headers["connection"] = ("Connection", "close")
    lines = [f"GET {spec.path} HTTP/1.1"] + [f"{n}: {v}" for n, v in headers.values()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_status_line(line: bytes) -> int | None:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    return int(parts[1])


async def run_http(spec: ProbeSpec, target: ProbeTarget) -> Outcome:
    where = _endpoint(spec, target)
    if isinstance(where, str):
        return Outcome(ok=False, message=where)
    host, port = where
    try:
        sock = await connect(target, host, port, spec.timeout)
        tls = None
        if spec.scheme == "HTTPS":  # kubelet does not verify probe certificates
            tls = ssl.create_default_context()
            tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        reader, writer = await asyncio.open_connection(sock=sock, ssl=tls,
                                                       server_hostname=host if tls else None)
    except (OSError, ssl.SSLError) as exc:
        return Outcome(ok=False, message=f"dial {host}:{port}: {getattr(exc, 'strerror', None) or exc}")
    try:
        writer.write(http_request(spec, host, port))
        await writer.drain()
        line = await reader.readline()
    except (OSError, ssl.SSLError, ValueError) as exc:  # ValueError: a status line over 64 KiB
        return Outcome(ok=False, message=f"GET {spec.path}: {exc}")
    finally:
        writer.close()
    code = parse_status_line(line)
    if code is None:
        return Outcome(ok=False, message=f"GET {spec.path}: not an HTTP response")
    return Outcome(ok=http_success(code), message=f"HTTP probe failed with statuscode: {code}"
                   if not http_success(code) else "")


HANDLER_RUNNERS = {"exec": run_exec, "tcpSocket": run_tcp, "httpGet": run_http}


async def run_probe(spec: ProbeSpec, target: ProbeTarget) -> Outcome:
    """One probe run, never longer than ``timeoutSeconds``."""
    try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a racing cancel
        async with asyncio.timeout(spec.timeout):
            return await HANDLER_RUNNERS[spec.handler](spec, target)
    except TimeoutError:
        return Outcome(ok=False, message=f"timeout after {spec.timeout:g}s")


# ---- scheduling -----------------------------------------------------------------

Key = tuple[str, str, str]  # pod uid, container name, container instance id
TargetFn = Callable[[], "ProbeTarget | None"]


class _Worker:
    """The probes of one container instance."""

    def __init__(self, key: Key, container: ContainerSpec, started_at: float) -> None:
        self.key = key
        self.started_at = started_at
        self.states = {kind: ProbeState(kind=kind, spec=spec) for kind, spec in container.probes}
        self.tasks: list[asyncio.Task[None]] = []


class Prober:
    """Owns the probe tasks; the manager says which container instances exist.

    ``on_change(uid)``: a readiness or startup result flipped (publish status).
    ``on_kill(uid, name, instance_id, grace)``: liveness or startup failed for good.
    """

    def __init__(self, *, on_change: Callable[[str], None],
                 on_kill: Callable[[str, str, str, "int | None"], None], max_concurrent: int = 16) -> None:
        self.on_change = on_change
        self.on_kill = on_kill
        self._workers: dict[Key, _Worker] = {}
        self._slots = asyncio.Semaphore(max_concurrent)

    def ensure(self, key: Key, container: ContainerSpec, *, started_at: float, target: TargetFn) -> None:
        """Probe this running container instance (idempotent)."""
        if key in self._workers or not container.probes:
            return
        worker = _Worker(key, container, started_at)
        self._workers[key] = worker
        for kind in KINDS:
            if kind in worker.states:
                worker.tasks.append(asyncio.create_task(self._loop(worker, kind, target),
                                                        name=f"probe-{kind}-{key[1]}"))

    def retain(self, keys: set[Key]) -> None:
        """Stop probing every instance not in ``keys`` (exited, restarted, deleted)."""
        for key in [k for k in self._workers if k not in keys]:
            for task in self._workers.pop(key).tasks:
                task.cancel()

    def readiness(self, key: Key, container: ContainerSpec, *, running: bool) -> Readiness:
        worker = self._workers.get(key)
        states = worker.states if worker else {k: ProbeState(kind=k, spec=s) for k, s in container.probes}
        return container_readiness(states, running=running)

    async def close(self) -> None:
        self.retain(set())

    async def _loop(self, worker: _Worker, kind: str, target: TargetFn) -> None:
        state = worker.states[kind]
        uid, name, _ = worker.key
        # kubelet's first run is at the end of the initial delay, then every period.
        next_at = worker.started_at + state.spec.initial_delay
        while True:
            await asyncio.sleep(max(0.0, next_at - time.time()))
            next_at = max(next_at + state.spec.period, time.time())
            startup = worker.states.get(STARTUP)
            started = startup is None or startup.result is True
            if not should_probe(state, started=started, running_for=time.time() - worker.started_at):
                if state.done:
                    return
                continue
            tgt = target()
            if tgt is None:
                return
            async with self._slots:
                try:
                    outcome = await run_probe(state.spec, tgt)
                except OSError as exc:  # e.g. nsenter missing
                    outcome = Outcome(ok=False, message=str(exc))
            if worker.key not in self._workers:  # stopped while it ran
                return
            if state.observe(outcome.ok):
                log.info("probe result changed", extra=fields(uid=uid, container=name, probe=kind,
                                                              result="success" if outcome.ok else "failure",
                                                              message=outcome.message))
                self.on_change(uid)
            elif not outcome.ok:
                log.debug("probe failed", extra=fields(uid=uid, container=name, probe=kind, message=outcome.message))
            if state.kill:
                log.info("container failed its probe; killing it", extra=fields(uid=uid, container=name, probe=kind,
                                                                                 message=outcome.message))
                self.on_kill(uid, name, worker.key[2], state.spec.grace_seconds)
                return
            if state.done:
                return
