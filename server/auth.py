"""Who is calling (authentication) and may they (authorization): pure functions.

Authentication, in upstream's order: an X.509 client certificate from the
client CA (CN = user, O = groups), then ``Authorization: Bearer <token>``.
No credential means ``system:anonymous``; a bearer token that matches nothing
means *Unauthorized* (``None``), never anonymous. Basic auth is not an API
credential (only the join endpoints read it), so it counts as no credential.

Authorization is a fixed policy, not RBAC:
- ``system:masters`` may do everything;
- anyone may GET /healthz, /livez, /readyz, /version and /cacerts; the join
  endpoints check the join token themselves, so they are open here too;
- any authenticated user may read discovery and OpenAPI documents;
- a node (``system:node:<n>`` in ``system:nodes``) gets NodeRestriction
  semantics, see :func:`_authorize_node`;
- everything else is denied.

Secrets and ConfigMaps follow upstream's NodeAuthorizer: a node may read one
only while a pod bound to it in that namespace references it (env
secretKeyRef/configMapKeyRef, envFrom secretRef/configMapRef, secret and
configMap volumes, projected sources, imagePullSecrets), and only one object
at a time: ``get``, or list/watch whose ``fieldSelector`` pins
``metadata.name`` (:func:`request_attributes` takes the name from it, as
upstream's RequestInfo does). The API layer looks those pods up and passes
them as ``pods`` (:func:`node_may_get` decides). The node-password hashes are
Secrets too and stay denied to every node, referenced or not.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgectl.joinproto import CACERTS_PATH, CONFIG_PATH, NODE_CERTS_PATH
from edgectl.server.pki.issue import issued_by, now_utc
from edgectl.server.selectors import SelectorError, parse_field_selector

MASTERS = "system:masters"
NODES = "system:nodes"
NODE_USER_PREFIX = "system:node:"
AUTHENTICATED = "system:authenticated"
NODE_LEASE_NAMESPACE = "kube-node-lease"
RESTRICTED_LABEL_PREFIX = "node-restriction.kubernetes.io/"
TUNNEL_PATH = "/v1-edge/connect"

READ_VERBS = frozenset({"get", "list", "watch"})
VERBS = READ_VERBS | {"create", "update", "patch", "delete", "deletecollection"}
PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", CACERTS_PATH})
JOIN_PATHS = frozenset({CONFIG_PATH, NODE_CERTS_PATH})
DISCOVERY_PREFIXES = ("/api", "/apis", "/openapi")
# Where join.py keeps node-password hashes (kept in step with join.secret_name).
NODE_PASSWORD_NAMESPACE = "kube-system"
NODE_PASSWORD_SUFFIX = ".node-password.edgectl"
NODE_PASSWORD_TYPE = "edgectl.io/node-password"


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()


ANONYMOUS = UserInfo("system:anonymous", ("system:unauthenticated",))


# ---- authentication ---------------------------------------------------------


class Authenticator:
    """Maps a request's credentials to a user.

    ``client_ca`` is optional: the TLS layer already verified any peer
    certificate against the client CA (CERT_OPTIONAL still verifies what is
    sent). Given it, we check the issuer signature, validity and clientAuth
    usage again, so a wiring mistake cannot turn into a login.
    """

    _CACHE_MAX = 1024

    def __init__(self, tokens: Mapping[str, UserInfo], *, client_ca: x509.Certificate | None = None) -> None:
        # Compare digests of equal length in constant time; a dict lookup would
        # leak how much of a token matched through timing.
        self._tokens = [(hashlib.sha256(t.encode()).digest(), u) for t, u in tokens.items()]
        self._client_ca = client_ca
        self._cert_cache: dict[bytes, tuple[UserInfo, x509.Certificate] | None] = {}

    def authenticate(self, *, peercert_der: bytes | None, authorization: str | None) -> UserInfo | None:
        """The user, ``ANONYMOUS`` without credentials, or None for 401."""
        if peercert_der:
            return self._from_cert(peercert_der)
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                return self._from_token(value.strip())
        return ANONYMOUS

    def _from_token(self, token: str) -> UserInfo | None:
        if not token:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for known, user in self._tokens:  # no early exit: constant time in the match position
            if hmac.compare_digest(digest, known):
                found = user
        return _authenticated(found) if found else None

    def _from_cert(self, der: bytes) -> UserInfo | None:
        if der not in self._cert_cache:
            if len(self._cert_cache) >= self._CACHE_MAX:
                self._cert_cache.clear()
            self._cert_cache[der] = self._parse_cert(der)
        entry = self._cert_cache[der]
        if entry is None:
            return None
        user, cert = entry
        if self._client_ca is not None:
            now = now_utc()
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                return None
        return user

    def _parse_cert(self, der: bytes) -> tuple[UserInfo, x509.Certificate] | None:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        if self._client_ca is not None:
            if not issued_by(cert, self._client_ca) or not _has_client_auth(cert):
                return None
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cns or not str(cns[0].value):
            return None  # upstream: a client certificate needs a common name
        groups = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
        return _authenticated(UserInfo(str(cns[0].value), groups)), cert


def _has_client_auth(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True  # no EKU means any usage
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku


def _authenticated(user: UserInfo) -> UserInfo:
    if AUTHENTICATED in user.groups:
        return user
    return UserInfo(user.name, (*user.groups, AUTHENTICATED))


# ---- request attributes -------------------------------------------------------


@dataclass(frozen=True)
class RequestAttributes:
    """What a request does, in upstream's terms. ``resource`` empty = a
    non-resource request (discovery, /healthz, ...), judged by ``path``."""

    user: UserInfo
    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def is_resource_request(self) -> bool:
        return bool(self.resource)


_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def request_attributes(user: UserInfo, method: str, path: str, query: Mapping[str, str]) -> RequestAttributes:
    """Upstream's RequestInfo rules: /api/v1/..., /apis/<g>/<v>/..., the
    legacy /watch/ prefix, and namespaces/<ns>/<resource>/<name>/<sub>."""
    method = method.upper()
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        rest = []
    if not rest:  # discovery documents and everything outside the API tree
        return RequestAttributes(user, method.lower(), path=path)
    watch_prefix = rest[0] == "watch"
    if watch_prefix:
        rest = rest[1:]
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    if not rest:
        return RequestAttributes(user, method.lower(), path=path)
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if method in ("GET", "HEAD"):
        if watch_prefix or query.get("watch", "").lower() in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if name else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _METHOD_VERBS.get(method, method.lower())
    if not name and verb in ("list", "watch"):
        name = _selected_name(query.get("fieldSelector"), resource)
    return RequestAttributes(user, verb, group, resource, subresource, namespace, name, path)


def _selected_name(field_selector: str | None, resource: str) -> str:
    """The ``metadata.name`` a list/watch pins with ``fieldSelector`` ("" if
    none): such a request reads at most that one object, so it is judged like
    a get of it. The API layer parses the same selector the same way."""
    try:
        selector = parse_field_selector(field_selector, resource)
    except SelectorError:
        return ""  # the handler answers 400; nothing is read
    return selector.exact("metadata.name") or ""


# ---- authorization ------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def _allow(reason: str) -> Decision:
    return Decision(True, reason)


def _deny(reason: str) -> Decision:
    return Decision(False, reason)


def node_name_of(user: UserInfo) -> str | None:
    """The node a user speaks for, if it is a node identity."""
    if NODES in user.groups and user.name.startswith(NODE_USER_PREFIX):
        return user.name[len(NODE_USER_PREFIX):] or None
    return None


class _Unknown:
    """Marks an object argument that was not passed (unknown), unlike None (absent)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


def authorize(attrs: RequestAttributes, *, new_obj: dict[str, Any] | None = UNKNOWN,
              old_obj: dict[str, Any] | None = UNKNOWN,
              pods: Iterable[dict[str, Any]] | None = UNKNOWN) -> Decision:
    """Decide one request.

    Called with the attributes only, it is the early check (see
    :func:`prefilter`). For writes, call it again after decoding (and for
    patches, applying) the body, passing both objects explicitly: the result
    as ``new_obj`` and the stored one as ``old_obj`` (None = there is none,
    e.g. ``old_obj=None`` on create). Node rules need them: the name of a
    created Node or Lease, label/taint/podCIDR changes, and ``spec.nodeName``
    of the stored pod for pods/status and pod deletes; an object that is
    needed but None is a denial, never a silent allow.

    A node's read of a Secret or ConfigMap also needs ``pods``: the pods in
    its namespace bound to that node (the stored object, if read, as
    ``old_obj``); see :data:`NODE_REFERENCED`."""
    if new_obj is UNKNOWN and old_obj is UNKNOWN and pods is UNKNOWN:
        return _decide(attrs, None, None, early=True)
    return _decide(attrs, None if new_obj is UNKNOWN else new_obj, None if old_obj is UNKNOWN else old_obj,
                   early=False, pods=None if pods is UNKNOWN else list(pods or ()))


def prefilter(attrs: RequestAttributes) -> Decision:
    """The early check, before the body is decoded or the stored object read
    (and the only check for list, watch and other object-less requests);
    the same as ``authorize(attrs)``.

    It denies what no object could make allowed and provisionally allows the
    object-dependent node writes (pod status, pod delete, creating its Node
    or Lease); for those the handler must then call :func:`authorize` with
    the objects."""
    return _decide(attrs, None, None, early=True)


def _decide(attrs: RequestAttributes, new_obj: dict[str, Any] | None, old_obj: dict[str, Any] | None,
            *, early: bool, pods: list[dict[str, Any]] | None = None) -> Decision:
    user = attrs.user
    if MASTERS in user.groups:
        return _allow("system:masters may do everything")
    if not attrs.is_resource_request:
        return _authorize_path(attrs)
    if user == ANONYMOUS or AUTHENTICATED not in user.groups:
        return _deny("anonymous requests may only read /healthz, /livez, /readyz, /version and /cacerts")
    node = node_name_of(user)
    if node is not None:
        if (attrs.api_group, attrs.resource) in NODE_REFERENCED and attrs.verb in READ_VERBS:
            return _node_reads_referenced(node, attrs, old_obj, pods, early=early)
        return _authorize_node(node, attrs, new_obj, old_obj, early=early)
    return _deny("no policy grants this user access to API resources")


def _authorize_path(attrs: RequestAttributes) -> Decision:
    path = attrs.path.rstrip("/") or "/"
    reading = attrs.verb in ("get", "head")
    if path in PUBLIC_PATHS and reading:
        return _allow("public endpoint")
    if path in JOIN_PATHS:
        return _allow("join endpoint; the handler checks the join token")
    if attrs.user == ANONYMOUS or AUTHENTICATED not in attrs.user.groups:
        return _deny("anonymous requests may only read /healthz, /livez, /readyz, /version and /cacerts")
    if reading and any(path == p or path.startswith(p + "/") for p in DISCOVERY_PREFIXES):
        return _allow("discovery is readable by authenticated users")
    if path == TUNNEL_PATH and node_name_of(attrs.user) is not None:
        return _allow("nodes open the tunnel")
    return _deny(f"no policy allows {attrs.verb} on path {attrs.path!r}")


# (group, resource) pairs a kubelet, kube-proxy and our agent read.
NODE_READABLE = frozenset({
    ("", "nodes"), ("", "pods"), ("", "services"), ("", "endpoints"), ("", "namespaces"),
    ("", "events"), ("coordination.k8s.io", "leases"),
    ("networking.k8s.io", "networkpolicies"), ("discovery.k8s.io", "endpointslices"),
    ("events.k8s.io", "events"),
})
# Streaming and proxy subresources reach into workloads: admins only.
ADMIN_ONLY_SUBRESOURCES = frozenset({
    ("nodes", "proxy"), ("pods", "exec"), ("pods", "log"), ("pods", "portforward"),
    ("pods", "attach"), ("pods", "proxy"), ("services", "proxy"),
})


_PROVISIONAL = "provisional: decided again once the object is known"


def _q(name: str) -> str:
    return f'"{name}"'


def _meta(obj: dict[str, Any] | None) -> dict[str, Any]:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) else {}


def _spec(obj: dict[str, Any] | None) -> dict[str, Any]:
    spec = obj.get("spec") if isinstance(obj, dict) else None
    return spec if isinstance(spec, dict) else {}


def _authorize_node(node: str, a: RequestAttributes, new: dict[str, Any] | None, old: dict[str, Any] | None,
                    *, early: bool) -> Decision:
    key = (a.api_group, a.resource)
    if (a.resource, a.subresource) in ADMIN_ONLY_SUBRESOURCES:
        return _deny(f"{a.resource}/{a.subresource} is reserved for cluster admins")
    if a.verb in READ_VERBS:
        if key in NODE_READABLE and a.subresource in ("", "status"):
            return _allow("nodes read what a kubelet reads")
        return _deny(f"node {_q(node)} may not read {_resource_name(a)}")
    target = a.name or str(_meta(new).get("name", ""))
    if key == ("", "nodes"):
        return _node_write(node, a, target, new, old, early=early)
    if key == ("coordination.k8s.io", "leases"):
        if a.namespace == NODE_LEASE_NAMESPACE and a.verb != "deletecollection":
            if target == node:
                return _allow("a node manages its own lease")
            if early and not target:
                return _allow(_PROVISIONAL)
        return _deny(f"node {_q(node)} is not allowed to modify lease {a.namespace}/{target or '*'}")
    if key == ("", "pods"):
        return _pod_write(node, a, old, early=early)
    if a.resource == "events" and a.api_group in ("", "events.k8s.io") and a.verb in ("create", "patch"):
        return _allow("nodes record events")
    return _deny(f"node {_q(node)} may only write its own Node and Lease, the status of its pods, and events")


def _node_write(node: str, a: RequestAttributes, target: str, new: dict[str, Any] | None,
                old: dict[str, Any] | None, *, early: bool) -> Decision:
    if a.verb not in ("create", "update", "patch") or a.subresource not in ("", "status"):
        return _deny(f"node {_q(node)} is not allowed to {a.verb} {_resource_name(a)}")
    if not target:
        if early:
            return _allow(_PROVISIONAL)
        return _deny("cannot check which node is created without the object (pass new_obj)")
    if target != node:
        return _deny(f"node {_q(node)} is not allowed to modify node {_q(target)}")
    if new is None:
        return _allow("a node updates its own Node")
    new_labels = _restricted_labels(new)
    if old is None:
        if new_labels:
            return _deny(f"node {_q(node)} is not allowed to set the following labels: {', '.join(sorted(new_labels))}")
        return _allow("a node registers itself")
    old_labels = _restricted_labels(old)
    changed = {k for k in new_labels.keys() | old_labels.keys() if new_labels.get(k) != old_labels.get(k)}
    if changed:
        return _deny(f"node {_q(node)} is not allowed to modify labels: {', '.join(sorted(changed))}")
    if _spec(new).get("taints") != _spec(old).get("taints"):
        return _deny(f"node {_q(node)} is not allowed to modify taints")
    for field in ("podCIDR", "podCIDRs"):  # assigned by IPAM; a node moving it breaks others
        if _spec(old).get(field) and _spec(new).get(field) != _spec(old).get(field):
            return _deny(f"node {_q(node)} is not allowed to modify spec.{field}")
    return _allow("a node updates its own Node")


def _restricted_labels(obj: dict[str, Any]) -> dict[str, Any]:
    labels = _meta(obj).get("labels")
    if not isinstance(labels, dict):
        return {}
    return {k: v for k, v in labels.items() if isinstance(k, str) and k.startswith(RESTRICTED_LABEL_PREFIX)}


def _pod_write(node: str, a: RequestAttributes, old: dict[str, Any] | None, *, early: bool) -> Decision:
    bound_here = old is not None and _spec(old).get("nodeName") == node
    if early and old is None and (a.subresource, a.verb) in (("status", "update"), ("status", "patch"), ("", "delete")):
        return _allow(_PROVISIONAL)
    if a.subresource == "status" and a.verb in ("update", "patch"):
        if bound_here:
            return _allow("a node reports status of its pods")
        return _deny(f"node {_q(node)} can only update pod status for pods with spec.nodeName set to itself")
    if a.subresource == "" and a.verb == "delete":
        if bound_here:
            return _allow("a node deletes its own pods")
        return _deny(f"node {_q(node)} can only delete pods with spec.nodeName set to itself")
    if a.verb == "create" and a.subresource == "":
        return _deny(f"node {_q(node)} is not allowed to create pods")
    return _deny(f"node {_q(node)} is not allowed to {a.verb} {_resource_name(a)}")


# ---- secrets: upstream's node-to-secret relationship --------------------------


def is_node_password_secret(namespace: str, name: str, obj: dict[str, Any] | None = None) -> bool:
    if isinstance(obj, dict) and obj.get("type") == NODE_PASSWORD_TYPE:
        return True
    return namespace == NODE_PASSWORD_NAMESPACE and name.endswith(NODE_PASSWORD_SUFFIX)


def _names(items: Any, *path: str) -> set[str]:
    """``item[path...]`` for each dict in a list, as non-empty strings."""
    out: set[str] = set()
    for item in items if isinstance(items, list) else ():
        for key in path:
            item = item.get(key) if isinstance(item, dict) else None
        if isinstance(item, str) and item:
            out.add(item)
    return out


@dataclass(frozen=True)
class _References:
    """Where a pod names objects of one kind (upstream's graph edges pod -> object)."""

    word: str  # "secrets" / "configmaps", for messages
    pod_field: tuple[str, ...]  # spec.<field>[].<key>, e.g. imagePullSecrets[].name
    volume: tuple[str, str]  # volumes[].<source>.<name key>
    projected: tuple[str, str]  # volumes[].projected.sources[].<source>.<name key>
    env: str  # env[].valueFrom.<ref>.name
    env_from: str  # envFrom[].<ref>.name


_SECRET_REFS = _References("secrets", ("imagePullSecrets", "name"), ("secret", "secretName"), ("secret", "name"),
                           "secretKeyRef", "secretRef")
_CONFIGMAP_REFS = _References("configmaps", (), ("configMap", "name"), ("configMap", "name"),
                              "configMapKeyRef", "configMapRef")
# (group, resource) a node may read only while one of its pods references the object.
NODE_REFERENCED = {("", "secrets"): _SECRET_REFS, ("", "configmaps"): _CONFIGMAP_REFS}


def _pod_references(pod: dict[str, Any], refs: _References) -> set[str]:
    spec = _spec(pod)
    names = _names(spec.get(refs.pod_field[0]), refs.pod_field[1]) if refs.pod_field else set()
    names |= _names(spec.get("volumes"), *refs.volume)
    volumes = spec.get("volumes")
    for vol in volumes if isinstance(volumes, list) else ():
        projected = vol.get("projected") if isinstance(vol, dict) else None
        if isinstance(projected, dict):  # upstream's graph also follows projected sources
            names |= _names(projected.get("sources"), *refs.projected)
    for kind in ("containers", "initContainers", "ephemeralContainers"):
        containers = spec.get(kind)
        for c in containers if isinstance(containers, list) else ():
            if isinstance(c, dict):
                names |= _names(c.get("env"), "valueFrom", refs.env, "name")
                names |= _names(c.get("envFrom"), refs.env_from, "name")
    return names


def pod_secret_names(pod: dict[str, Any]) -> set[str]:
    """Secrets a pod references (upstream's graph edges pod -> secret)."""
    return _pod_references(pod, _SECRET_REFS)


def pod_configmap_names(pod: dict[str, Any]) -> set[str]:
    """ConfigMaps a pod references (upstream's graph edges pod -> configmap)."""
    return _pod_references(pod, _CONFIGMAP_REFS)


def node_may_get(node: str, namespace: str, resource: str, name: str, pods: Iterable[dict[str, Any]]) -> bool:
    """True iff a pod bound to ``node`` in ``namespace`` references the
    object (``resource`` is "secrets" or "configmaps")."""
    refs = NODE_REFERENCED[("", resource)]
    for pod in pods:
        if (_spec(pod).get("nodeName") == node and _meta(pod).get("namespace", namespace) == namespace
                and name in _pod_references(pod, refs)):
            return True
    return False


def node_may_get_secret(node: str, namespace: str, name: str, pods: Iterable[dict[str, Any]]) -> bool:
    """True iff a pod bound to ``node`` in ``namespace`` references the Secret."""
    return node_may_get(node, namespace, "secrets", name, pods)


def _node_reads_referenced(node: str, a: RequestAttributes, stored: dict[str, Any] | None,
                           pods: list[dict[str, Any]] | None, *, early: bool) -> Decision:
    refs = NODE_REFERENCED[(a.api_group, a.resource)]
    no_relation = f"no relationship found between node {node!r} and this object"
    if not a.name or not a.namespace or a.subresource:
        return _deny(f"node {_q(node)} may only get individual {refs.word} its pods reference "
                     "(list and watch need a metadata.name field selector)")
    if a.resource == "secrets" and is_node_password_secret(a.namespace, a.name, stored):
        return _deny(no_relation)  # node-password hashes: never, whatever a pod says
    if early:
        return _allow(_PROVISIONAL)
    if pods is None:
        return _deny("cannot check the node's pods without them (pass pods)")
    if node_may_get(node, a.namespace, a.resource, a.name, pods):
        return _allow(f"a pod bound to the node references the {refs.word[:-1]}")
    return _deny(no_relation)


def _resource_name(a: RequestAttributes) -> str:
    return f"{a.resource}/{a.subresource}" if a.subresource else a.resource


def forbidden_message(attrs: RequestAttributes, decision: Decision) -> str:
    """Upstream's wording for a 403 Status message."""
    who = f'User "{attrs.user.name}"'
    if not attrs.is_resource_request:
        return f'forbidden: {who} cannot {attrs.verb} path "{attrs.path}": {decision.reason}'
    subject = f'{attrs.resource} "{attrs.name}"' if attrs.name else attrs.resource
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (f'{subject} is forbidden: {who} cannot {attrs.verb} resource "{_resource_name(attrs)}" '
            f'in API group "{attrs.api_group}" {scope}: {decision.reason}')
