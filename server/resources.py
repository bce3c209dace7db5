"""The resource table: every kind the API serves, described as data.

Discovery, routing, storage keys and Table printing all read this one table,
so adding a resource is one entry here (plus columns in tables.py if it wants
more than NAME/AGE).
"""
from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    plural: str
    singular: str
    kind: str
    group: str
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    # Subresources that store into the object itself (status) or act on it.
    subresources: tuple[str, ...] = ()
    # Kinds kubectl compiles in get strategic-merge patches; others JSON merge.
    strategic: bool = True
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = field(default=ALL_VERBS)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def prefix(self, namespace: str | None = None) -> str:
        """Storage key prefix; a namespace narrows it for namespaced kinds."""
        if self.namespaced and namespace:
            return f"/registry/{self.plural}/{namespace}/"
        return f"/registry/{self.plural}/"

    def key(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            return f"/registry/{self.plural}/{namespace}/{name}"
        return f"/registry/{self.plural}/{name}"

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path, for selfLink-style messages and tests."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


RESOURCES: tuple[Resource, ...] = (
    Resource("namespaces", "namespace", "Namespace", "", "v1", False, ("ns",), ("status", "finalize")),
    Resource("nodes", "node", "Node", "", "v1", False, ("no",), ("status", "proxy")),
    Resource("pods", "pod", "Pod", "", "v1", True, ("po",),
             ("status", "binding", "log", "exec", "portforward", "attach", "eviction"), categories=("all",)),
    Resource("services", "service", "Service", "", "v1", True, ("svc",), ("status", "proxy"), categories=("all",)),
    Resource("endpoints", "endpoints", "Endpoints", "", "v1", True, ("ep",)),
    Resource("configmaps", "configmap", "ConfigMap", "", "v1", True, ("cm",)),
    Resource("secrets", "secret", "Secret", "", "v1", True),
    Resource("events", "event", "Event", "", "v1", True, ("ev",)),
    Resource("serviceaccounts", "serviceaccount", "ServiceAccount", "", "v1", True, ("sa",)),
    Resource("leases", "lease", "Lease", "coordination.k8s.io", "v1", True),
    Resource("networkpolicies", "networkpolicy", "NetworkPolicy", "networking.k8s.io", "v1", True, ("netpol",)),
    # Workloads: run by the controllers in controllers/{deployment,replicaset,daemonset}.py.
    Resource("deployments", "deployment", "Deployment", "apps", "v1", True, ("deploy",), ("status", "scale"),
             categories=("all",)),
    Resource("replicasets", "replicaset", "ReplicaSet", "apps", "v1", True, ("rs",), ("status", "scale"),
             categories=("all",)),
    Resource("daemonsets", "daemonset", "DaemonSet", "apps", "v1", True, ("ds",), ("status",), categories=("all",)),
    # batch/v1: run by controllers/{job,cronjob}.py.
    Resource("jobs", "job", "Job", "batch", "v1", True, (), ("status",), categories=("all",)),
    Resource("cronjobs", "cronjob", "CronJob", "batch", "v1", True, ("cj",), ("status",), categories=("all",)),
    # A DaemonSet's template history (``kubectl rollout history/undo daemonset``).
    Resource("controllerrevisions", "controllerrevision", "ControllerRevision", "apps", "v1", True),
    # Not stored: answered from the authorizer (``kubectl auth can-i``).
    Resource("selfsubjectaccessreviews", "selfsubjectaccessreview", "SelfSubjectAccessReview", "authorization.k8s.io",
             "v1", False, verbs=("create",)),
)
VIRTUAL = frozenset({"selfsubjectaccessreviews"})

# Verbs per subresource, as discovery lists them.
SUBRESOURCE_VERBS: dict[str, tuple[str, ...]] = {
    "status": ("get", "patch", "update"),
    "binding": ("create",),
    "log": ("get",),
    "exec": ("create", "get"),
    "attach": ("create", "get"),
    "portforward": ("create", "get"),
    "proxy": ("create", "delete", "get", "patch", "update"),
    "eviction": ("create",),
    "finalize": ("update",),
    "scale": ("get", "patch", "update"),
}
SUBRESOURCE_KIND: dict[str, str] = {"binding": "Binding", "eviction": "Eviction", "scale": "Scale"}
# Subresources served in another group-version; kubectl's scale client reads
# this from discovery and would otherwise expect an apps/v1 Scale.
SUBRESOURCE_GROUP_VERSION: dict[str, tuple[str, str]] = {"scale": ("autoscaling", "v1")}


class ResourceTable:
    def __init__(self, resources: tuple[Resource, ...] = RESOURCES) -> None:
        self.resources = resources
        self._by_gr = {(r.group, r.plural): r for r in resources}
        self._by_kind = {(r.api_version, r.kind): r for r in resources}

    def lookup(self, group: str, plural: str) -> Resource | None:
        return self._by_gr.get((group, plural))

    def get(self, plural: str, group: str = "") -> Resource:
        res = self._by_gr.get((group, plural))
        if res is None:
            raise KeyError(f"unknown resource {plural}.{group}" if group else f"unknown resource {plural}")
        return res

    def by_kind(self, api_version: str, kind: str) -> Resource | None:
        return self._by_kind.get((api_version, kind))

    def group_versions(self) -> dict[str, list[Resource]]:
        """``group/version`` (``v1`` for core) -> resources, in table order."""
        out: dict[str, list[Resource]] = {}
        for res in self.resources:
            out.setdefault(res.api_version, []).append(res)
        return out


TABLE = ResourceTable()
