"""Pod runtime for the agent: the ``process`` runtime and the pod manager.

Layers, lowest first (each module says why it exists):

* ``spec``       pod dict -> frozen :class:`PodSpec` (validation only).
* ``interface``  the small :class:`Runtime` protocol (sandbox + container
  instance calls, shaped after CRI) and the :class:`PodView` surface the kubelet
  API uses (container PID for exec, log paths, pod netns for port-forward).
* ``cni``        CNI 1.0 conflist execution (ADD/CHECK/DEL) with the real plugins.
* ``podfiles``   /etc/hosts, /etc/hostname, /etc/resolv.conf, Kubernetes env vars.
* ``crilog``     CRI log line encoder/decoder (``<ts> <stream> <P|F> <text>``).
* ``shim``       per-container supervisor (stdlib only, outlives agent restarts):
  enters the namespaces, execs the command, writes the CRI log and exit file.
* ``process``    :class:`ProcessRuntime`, the ``process`` runtime.
* ``lifecycle``  pure rules: restart policy, back-off, phase, conditions, status.
* ``manager``    :class:`PodManager`: ``sync(desired_pods)``, ``status(uid)``,
  ``on_change``; persists state and re-adopts pods after an agent restart.

Usage from the agent::

    rt = ProcessRuntime(RuntimeConfig(pod_cidr="10.42.1.0/24"))
    mgr = PodManager(runtime=rt, data_dir=AGENT_DATA_DIR, on_change=push_status)
    task = asyncio.create_task(mgr.run())
    mgr.sync(pods_for_this_node)          # on every watch event; idempotent
    mgr.status(uid)                       # API-shaped PodStatus dict
"""
from .interface import (
    ContainerExit,
    ContainerHandle,
    ContainerLogs,
    ContainerProcess,
    ContainerStartError,
    PodNetwork,
    PodView,
    Runtime,
    Sandbox,
    SandboxError,
)
from .spec import ContainerSpec, PodSpec, PodSpecError, parse_pod

__all__ = [
    "ContainerExit", "ContainerHandle", "ContainerLogs", "ContainerProcess", "ContainerStartError",
    "PodNetwork", "PodView", "Runtime", "Sandbox", "SandboxError",
    "ContainerSpec", "PodSpec", "PodSpecError", "parse_pod",
]
