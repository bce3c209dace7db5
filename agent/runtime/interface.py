"""The container-runtime interface the pod manager drives.

It is deliberately small (six methods) and shaped like the part of CRI that
kubelet's pod workers use, so a containerd CRI runtime can implement it later
without the manager changing:

* ``run_sandbox`` / ``stop_sandbox``: the pod's network namespace, CNI
  attachment and pod-level files (CRI RunPodSandbox / StopPodSandbox +
  RemovePodSandbox).
* ``start_container`` / ``signal_container`` / ``poll_container``: one
  container *instance* (one restart attempt) at a time. Restart policy, back-off
  and init ordering are the manager's job, not the runtime's.
* ``cleanup``: remove everything the runtime owns that no known pod refers to
  (after an agent restart or a crash mid-setup).

Handles (:class:`Sandbox`, :class:`ContainerHandle`) are plain data that the
manager persists as JSON and hands back after an agent restart; ``data`` is the
runtime's private part of that record.
"""
from __future__ import annotations

import signal as _signal
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Protocol

from edgectl.errors import EdgectlError

from .spec import ContainerSpec, PodSpec


class RuntimeError_(EdgectlError):
    """Base for runtime failures; ``reason`` is a Kubernetes-style CamelCase word."""

    reason = "RuntimeError"


class SandboxError(RuntimeError_):
    """Creating the pod sandbox failed (netns, CNI); the pod stays Pending."""

    reason = "FailedCreatePodSandBox"


class ContainerStartError(RuntimeError_):
    """A container could not be started; shows as waiting.reason / terminated."""

    def __init__(self, message: str, *, reason: str = "CreateContainerError") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class Sandbox:
    """A pod's shared environment, as created by :meth:`Runtime.run_sandbox`."""

    id: str
    netns_path: str  # e.g. /run/netns/edgectl-3f2a...; port-forward enters it; "" = the node's (hostNetwork)
    ips: tuple[str, ...]  # pod IPs, primary first (no prefix length)
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["ips"] = list(self.ips)
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "Sandbox":
        return cls(id=doc["id"], netns_path=doc["netns_path"], ips=tuple(doc["ips"]), data=dict(doc.get("data") or {}))


@dataclass(frozen=True, kw_only=True)
class ContainerHandle:
    """One running (or finished) container instance."""

    id: str  # runtime-unique; reported as containerID "<runtime>://<id>"
    name: str  # container name in the pod
    restart_count: int
    pid: int  # host PID of the container's main process (PID 1 of its PID namespace)
    started_at: float  # unix time
    log_path: str  # CRI-format log of this instance
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "ContainerHandle":
        return cls(**{**doc, "data": dict(doc.get("data") or {})})


@dataclass(frozen=True, kw_only=True)
class ContainerExit:
    """How a container instance ended (CRI ContainerStatus of an exited container)."""

    exit_code: int
    finished_at: float
    reason: str  # Completed, Error, StartError, ContainerStatusUnknown
    message: str = ""
    signal: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "ContainerExit":
        return cls(**doc)


class Runtime(Protocol):
    """What the pod manager needs from a container runtime."""

    name: str  # "process"; also the containerID scheme

    async def run_sandbox(self, pod: PodSpec) -> Sandbox:
        """Create the netns, attach it with CNI and write pod files.

        Raises :class:`SandboxError` with the CNI plugin's message on failure,
        after undoing whatever it had done.
        """

    async def stop_sandbox(self, pod: PodSpec, sandbox: Sandbox, *, remove: bool = False) -> None:
        """CNI DEL and delete the netns (the IP is free afterwards); with
        ``remove`` also delete the pod's runtime files and logs. Idempotent;
        every container must already have exited."""

    async def start_container(
        self,
        pod: PodSpec,
        sandbox: Sandbox,
        container: ContainerSpec,
        *,
        restart_count: int,
        env: Mapping[str, str],
    ) -> ContainerHandle:
        """Start one instance of ``container``; ``env`` is the full environment.

        Raises :class:`ContainerStartError` (reason e.g. ``StartError``) if the
        process could not be started at all.
        """

    def poll_container(self, handle: ContainerHandle) -> ContainerExit | None:
        """``None`` while the instance runs, else how it ended. Cheap; no waiting."""

    def signal_container(self, handle: ContainerHandle, sig: int = _signal.SIGTERM) -> None:
        """Send ``sig`` to the container's main process; SIGKILL ends the whole
        container (its PID namespace). A process that is already gone is fine."""

    async def cleanup(self, *, keep_sandboxes: set[str], keep_containers: set[str]) -> list[str]:
        """Kill containers not in ``keep_containers`` and tear down sandboxes
        (netns, CNI leases) not in ``keep_sandboxes``: what a crash left behind
        between starting something and recording it. Return the ids removed."""


# --- What the kubelet API (logs / exec / port-forward) reads from the manager ---


@dataclass(frozen=True, kw_only=True)
class ContainerProcess:
    """A running container, enough to exec into it (kubelet API ``/exec``)."""

    pod_uid: str
    container: str
    container_id: str  # "process://<id>"
    pid: int  # host PID of the container's main process
    env: Mapping[str, str]  # the container's environment; pass it to the exec'd process
    working_dir: str

    def enter_argv(self, argv: list[str] | tuple[str, ...]) -> list[str]:
        """argv that runs ``argv`` inside the container's namespaces.

        nsenter forks into the PID namespace and waits, so the exit code passes
        through; run it with ``env=dict(self.env)`` (and a pty for tty=true).
        """
        return [
            "nsenter", f"--target={self.pid}", "--mount", "--uts", "--net", "--pid",
            f"--wd={self.working_dir or '/'}", "--", *argv,
        ]


@dataclass(frozen=True, kw_only=True)
class ContainerLogs:
    """CRI-format log files of a container (kubelet API ``/containerLogs``)."""

    current: str | None  # log of the current (or last) instance
    previous: str | None  # log of the instance before it (``previous=true``)
    running: bool  # whether ``current`` may still grow (for ``follow``)


@dataclass(frozen=True, kw_only=True)
class ContainerAttach:
    """A container's console (kubelet API ``/attach``): the shim's attach
    socket (protocol in ``attachproto``) and the console fields of its spec."""

    pod_uid: str
    container: str
    container_id: str  # "process://<id>"
    running: bool
    socket: str  # "" when the instance has none (started before attach existed)
    stdin: bool
    stdin_once: bool
    tty: bool


@dataclass(frozen=True, kw_only=True)
class PodNetwork:
    """Where a pod's network lives (kubelet API ``/portForward``)."""

    pod_uid: str
    netns_path: str  # open it and setns(), or `nsenter --net=<path>`; "" = the node's own (hostNetwork)
    ips: tuple[str, ...]


class PodView(Protocol):
    """The read-only surface of :class:`edgectl.agent.runtime.manager.PodManager`
    that the kubelet API uses. Lookups are by namespace and pod name as they
    appear in kubelet URLs; all return ``None`` for unknown pods/containers."""

    def find_uid(self, namespace: str, name: str) -> str | None: ...

    def container_process(self, namespace: str, pod: str, container: str) -> ContainerProcess | None: ...

    def container_logs(self, namespace: str, pod: str, container: str) -> ContainerLogs | None: ...

    def container_attach(self, namespace: str, pod: str, container: str) -> ContainerAttach | None: ...

    def pod_network(self, namespace: str, pod: str) -> PodNetwork | None: ...

    def pods(self) -> list[dict[str, Any]]:
        """Every known pod as an API-shaped dict with current status (``/pods``)."""
        ...
