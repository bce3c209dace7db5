"""Small in-process controllers: node IPAM, node lifecycle, scheduler, the
``default/kubernetes`` Service, the apps/v1 workloads (ReplicaSet, Deployment,
DaemonSet), the batch/v1 Job and CronJob controllers and the garbage collector. Each is one module with pure decision
functions and a ``reconcile()`` run by ``loop.run_loop`` (watch + resync)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from edgectl.aio import cancel_and_wait
from edgectl.log import fields

from ..registry import Registry

log = logging.getLogger(__name__)


@dataclass
class Controllers:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        stuck = await cancel_and_wait(self.tasks)
        if stuck:
            log.error("controllers did not stop", extra=fields(tasks=[t.get_name() for t in stuck if isinstance(t, asyncio.Task)]))


def start_all(
    registry: Registry,
    *,
    server_addresses: Sequence[str],
    https_port: int = 6443,
    cluster_cidr: str = "10.42.0.0/16",
    service_cidr: str = "10.43.0.0/16",
    node_grace: float = 40.0,
    resync: float = 30.0,
) -> Controllers:
    """Start every controller as a task on the running loop."""
    from .apiservice import KubernetesService
    from .cronjob import CronJobController
    from .daemonset import DaemonSetController
    from .deployment import DeploymentController
    from .garbagecollector import GarbageCollector
    from .ipam import NodeIPAM
    from .job import JobController
    from .replicaset import ReplicaSetController
    from .lifecycle import NodeLifecycle
    from .scheduler import Scheduler

    runners = {
        "node-ipam": NodeIPAM(registry, cluster_cidr=cluster_cidr).run(resync=resync),
        "node-lifecycle": NodeLifecycle(registry, grace=node_grace).run(resync=resync),
        "scheduler": Scheduler(registry).run(resync=resync),
        "kubernetes-service": KubernetesService(registry, server_addresses=server_addresses, https_port=https_port,
                                                service_cidr=service_cidr).run(resync=resync),
        "replicaset": ReplicaSetController(registry).run(resync=resync),
        "deployment": DeploymentController(registry).run(resync=resync),
        "daemonset": DaemonSetController(registry).run(resync=resync),
        "job": JobController(registry).run(resync=resync),
        "cronjob": CronJobController(registry).run(resync=resync),
        "garbage-collector": GarbageCollector(registry).run(resync=resync),
    }
    return Controllers([asyncio.create_task(coro, name=f"controller-{name}") for name, coro in runners.items()])
