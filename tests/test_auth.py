"""Authentication and the fixed authorization policy, table-driven, no I/O."""
from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from edgectl.server.auth import (
    ANONYMOUS, AUTHENTICATED, Authenticator, RequestAttributes, UserInfo, authorize,
    forbidden_message, node_may_get_secret, pod_secret_names, prefilter, request_attributes,
)
from edgectl.server.pki.issue import issue_leaf, new_ca, now_utc

ADMIN = UserInfo("system:admin", ("system:masters", AUTHENTICATED))
NODE_A = UserInfo("system:node:a", ("system:nodes", AUTHENTICATED))
NODE_B = UserInfo("system:node:b", ("system:nodes", AUTHENTICATED))
ALICE = UserInfo("alice", ("devs", AUTHENTICATED))
FAKE_NODE = UserInfo("system:node:a", (AUTHENTICATED,))  # right name, not in system:nodes


def der(ck: Any) -> bytes:
    return ck.cert.public_bytes(serialization.Encoding.DER)  # type: ignore[no-any-return]


# ---- authentication -------------------------------------------------------------


@pytest.fixture(scope="module")
def cas() -> dict[str, Any]:
    now = now_utc()
    client_ca = new_ca("client-ca", now=now)
    rogue_ca = new_ca("client-ca", now=now)  # same name, different key
    leaf = lambda ca, cn, orgs, **kw: issue_leaf(ca, common_name=cn, organizations=orgs, usage=kw.pop("usage", "client"), now=kw.pop("now", now), **kw)  # noqa: E731
    return {
        "ca": client_ca,
        "node": leaf(client_ca, "system:node:a", ["system:nodes"]),
        "admin": leaf(client_ca, "system:admin", ["system:masters"]),
        "multi": leaf(client_ca, "bob", ["g1", "g2"]),
        "rogue": leaf(rogue_ca, "system:admin", ["system:masters"]),
        "expired": leaf(client_ca, "old", [], now=now - dt.timedelta(days=30), days=1),
        "serving": leaf(client_ca, "server", [], usage="server"),
    }


def test_certificate_users(cas: dict[str, Any]) -> None:
    auth = Authenticator({}, client_ca=cas["ca"].cert)
    assert auth.authenticate(peercert_der=der(cas["node"]), authorization=None) == NODE_A
    assert auth.authenticate(peercert_der=der(cas["admin"]), authorization=None) == ADMIN
    assert auth.authenticate(peercert_der=der(cas["multi"]), authorization=None) == UserInfo("bob", ("g1", "g2", AUTHENTICATED))
    # Defence in depth when TLS wiring is wrong: wrong issuer, expired, server-only usage.
    for bad in ("rogue", "expired", "serving"):
        assert auth.authenticate(peercert_der=der(cas[bad]), authorization=None) is None, bad
    assert auth.authenticate(peercert_der=b"\x30\x03garbage", authorization=None) is None
    # Cached results give the same answer.
    assert auth.authenticate(peercert_der=der(cas["rogue"]), authorization=None) is None
    assert auth.authenticate(peercert_der=der(cas["node"]), authorization=None) == NODE_A


def test_without_ca_trusts_tls_and_only_parses(cas: dict[str, Any]) -> None:
    auth = Authenticator({})
    assert auth.authenticate(peercert_der=der(cas["rogue"]), authorization=None) == ADMIN


TOKENS = {"s3cret-token": UserInfo("ci-bot", ("ci",)), "other": UserInfo("x")}


@pytest.mark.parametrize(
    "authorization, expected",
    [
        (None, ANONYMOUS),
        ("", ANONYMOUS),
        ("Bearer s3cret-token", UserInfo("ci-bot", ("ci", AUTHENTICATED))),
        ("bearer   s3cret-token ", UserInfo("ci-bot", ("ci", AUTHENTICATED))),
        ("Bearer wrong", None),  # a present but invalid bearer is Unauthorized, not anonymous
        ("Bearer ", None),
        ("Bearer s3cret-token-but-longer", None),
        ("Basic bm9kZTpzZWNyZXQ=", ANONYMOUS),  # join credentials are not API credentials
        ("Negotiate abc", ANONYMOUS),
    ],
)
def test_bearer_tokens(authorization: str | None, expected: UserInfo | None) -> None:
    assert Authenticator(TOKENS).authenticate(peercert_der=None, authorization=authorization) == expected


def test_certificate_wins_over_bearer(cas: dict[str, Any]) -> None:
    auth = Authenticator(TOKENS, client_ca=cas["ca"].cert)
    assert auth.authenticate(peercert_der=der(cas["node"]), authorization="Bearer s3cret-token") == NODE_A


# ---- request attributes ---------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, query, expected",
    [
        ("GET", "/api/v1/pods", {}, ("list", "", "pods", "", "", "")),
        ("GET", "/api/v1/namespaces/ns1/pods", {"watch": "true"}, ("watch", "", "pods", "", "ns1", "")),
        ("GET", "/api/v1/watch/namespaces/ns1/pods/p", {}, ("watch", "", "pods", "", "ns1", "p")),
        ("GET", "/api/v1/namespaces/ns1/pods/p/log", {}, ("get", "", "pods", "log", "ns1", "p")),
        ("POST", "/api/v1/namespaces/ns1/pods/p/exec", {}, ("create", "", "pods", "exec", "ns1", "p")),
        ("PATCH", "/api/v1/nodes/a/status", {}, ("patch", "", "nodes", "status", "", "a")),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/a", {},
         ("update", "coordination.k8s.io", "leases", "", "kube-node-lease", "a")),
        ("DELETE", "/api/v1/namespaces/ns1/pods", {}, ("deletecollection", "", "pods", "", "ns1", "")),
        ("DELETE", "/api/v1/namespaces/ns1", {}, ("delete", "", "namespaces", "", "ns1", "ns1")),
        ("PUT", "/api/v1/namespaces/ns1/finalize", {}, ("update", "", "namespaces", "finalize", "ns1", "ns1")),
        ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
    ],
)
def test_request_attributes(method: str, path: str, query: dict[str, str], expected: tuple[str, ...]) -> None:
    a = request_attributes(ALICE, method, path, query)
    assert (a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name) == expected
    assert a.is_resource_request


@pytest.mark.parametrize("path", ["/api", "/api/v1", "/apis", "/apis/networking.k8s.io/v1", "/healthz", "/version", "/openapi/v3"])
def test_non_resource_paths(path: str) -> None:
    a = request_attributes(ALICE, "GET", path, {})
    assert not a.is_resource_request and a.verb == "get" and a.path == path


# ---- authorization ---------------------------------------------------------------


def pod(node: str | None) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": node} if node else {}}


def node_obj(name: str, *, labels: dict[str, str] | None = None, taints: Any = None, cidr: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if taints is not None:
        spec["taints"] = taints
    if cidr:
        spec["podCIDR"] = cidr
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def R(user: UserInfo, verb: str, resource: str, *, group: str = "", sub: str = "", ns: str = "", name: str = "") -> RequestAttributes:  # noqa: N802
    return RequestAttributes(user, verb, group, resource, sub, ns, name, "")


def P(user: UserInfo, verb: str, path: str) -> RequestAttributes:  # noqa: N802
    return RequestAttributes(user, verb, path=path)


LEASE = "coordination.k8s.io"
NETPOL = "networking.k8s.io"
TAINT = [{"key": "k", "effect": "NoSchedule"}]

# (attributes, new_obj, old_obj, allowed, reason substring for denials)
CASES: list[tuple[str, RequestAttributes, Any, Any, bool, str]] = [
    # admin
    ("admin anything", R(ADMIN, "delete", "nodes", name="b"), None, None, True, ""),
    ("admin exec", R(ADMIN, "create", "pods", sub="exec", ns="x", name="p"), None, None, True, ""),
    ("admin secrets", R(ADMIN, "list", "secrets"), None, None, True, ""),
    # anonymous
    ("anon healthz", P(ANONYMOUS, "get", "/healthz"), None, None, True, ""),
    ("anon readyz", P(ANONYMOUS, "get", "/readyz"), None, None, True, ""),
    ("anon livez", P(ANONYMOUS, "get", "/livez"), None, None, True, ""),
    ("anon version", P(ANONYMOUS, "get", "/version"), None, None, True, ""),
    ("anon cacerts", P(ANONYMOUS, "get", "/cacerts"), None, None, True, ""),
    ("anon join config", P(ANONYMOUS, "get", "/v1-edge/config"), None, None, True, ""),
    ("anon post healthz", P(ANONYMOUS, "post", "/healthz"), None, None, False, "anonymous"),
    ("anon discovery", P(ANONYMOUS, "get", "/api"), None, None, False, "anonymous"),
    ("anon metrics", P(ANONYMOUS, "get", "/metrics"), None, None, False, "anonymous"),
    ("anon list pods", R(ANONYMOUS, "list", "pods"), None, None, False, "anonymous"),
    ("anon tunnel", P(ANONYMOUS, "get", "/v1-edge/connect"), None, None, False, "anonymous"),
    # other authenticated users
    ("user discovery", P(ALICE, "get", "/apis/networking.k8s.io/v1"), None, None, True, ""),
    ("user openapi", P(ALICE, "get", "/openapi/v3"), None, None, True, ""),
    ("user pods", R(ALICE, "list", "pods"), None, None, False, "no policy"),
    ("user tunnel", P(ALICE, "get", "/v1-edge/connect"), None, None, False, "no policy"),
    ("not really a node", R(FAKE_NODE, "get", "nodes", name="a"), None, None, False, "no policy"),
    # node reads
    ("node tunnel", P(NODE_A, "get", "/v1-edge/connect"), None, None, True, ""),
    ("node discovery", P(NODE_A, "get", "/api/v1"), None, None, True, ""),
    *[(f"node reads {r}", R(NODE_A, v, r, group=g), None, None, True, "")
      for v in ("get", "list", "watch")
      for g, r in [("", "nodes"), ("", "pods"), ("", "services"), ("", "endpoints"), ("", "namespaces"),
                   (LEASE, "leases"), (NETPOL, "networkpolicies"), ("", "events")]],
    *[(f"node {v} all configmaps", R(NODE_A, v, "configmaps"), None, None, False, "may only get individual configmaps")
      for v in ("list", "watch")],
    ("node reads other node", R(NODE_A, "get", "nodes", name="b"), None, None, True, ""),
    ("node reads its password secret", R(NODE_A, "get", "secrets", ns="kube-system", name="a.node-password.edgectl"), None, None, False, "no relationship found between node 'a'"),
    ("node reads secret without pods", R(NODE_A, "get", "secrets", ns="default", name="s"), None, None, False, "pass pods"),
    ("node lists secrets", R(NODE_A, "list", "secrets"), None, None, False, "may only get individual secrets"),
    ("node reads serviceaccounts", R(NODE_A, "list", "serviceaccounts"), None, None, False, "may not read"),
    ("node pod log", R(NODE_A, "get", "pods", sub="log", ns="x", name="p"), None, None, False, "reserved for cluster admins"),
    ("node exec", R(NODE_A, "create", "pods", sub="exec", ns="x", name="p"), None, None, False, "reserved for cluster admins"),
    ("node portforward", R(NODE_A, "create", "pods", sub="portforward", ns="x", name="p"), None, None, False, "reserved"),
    ("node nodes/proxy", R(NODE_A, "get", "nodes", sub="proxy", name="a"), None, None, False, "reserved"),
    # node writes: its own Node
    ("register self", R(NODE_A, "create", "nodes"), node_obj("a"), None, True, ""),
    ("register without object", R(NODE_A, "create", "nodes"), None, None, False, "pass new_obj"),
    ("register self with taints", R(NODE_A, "create", "nodes"), node_obj("a", taints=TAINT), None, True, ""),
    ("register other", R(NODE_A, "create", "nodes"), node_obj("b"), None, False, 'node "a" is not allowed to modify node "b"'),
    ("patch self", R(NODE_A, "patch", "nodes", name="a"), node_obj("a", labels={"x": "1"}), node_obj("a"), True, ""),
    ("patch own status", R(NODE_A, "patch", "nodes", sub="status", name="a"), node_obj("a"), node_obj("a"), True, ""),
    ("update own status no objs", R(NODE_A, "update", "nodes", sub="status", name="a"), None, None, True, ""),
    ("patch other", R(NODE_A, "patch", "nodes", name="b"), None, None, False, 'node "a" is not allowed to modify node "b"'),
    ("patch other status", R(NODE_A, "update", "nodes", sub="status", name="b"), None, None, False, 'not allowed to modify node "b"'),
    ("delete self", R(NODE_A, "delete", "nodes", name="a"), None, None, False, "not allowed to delete"),
    ("delete other", R(NODE_A, "delete", "nodes", name="b"), None, None, False, "not allowed to delete"),
    ("deletecollection nodes", R(NODE_A, "deletecollection", "nodes"), None, None, False, "not allowed"),
    ("restricted label on create", R(NODE_A, "create", "nodes"),
     node_obj("a", labels={"node-restriction.kubernetes.io/role": "db"}), None, False, "set the following labels"),
    ("restricted label change", R(NODE_A, "patch", "nodes", name="a"),
     node_obj("a", labels={"node-restriction.kubernetes.io/role": "db"}), node_obj("a"), False, "modify labels: node-restriction.kubernetes.io/role"),
    ("restricted label kept", R(NODE_A, "patch", "nodes", name="a"),
     node_obj("a", labels={"node-restriction.kubernetes.io/role": "db", "y": "2"}),
     node_obj("a", labels={"node-restriction.kubernetes.io/role": "db"}), True, ""),
    ("restricted label removed", R(NODE_A, "update", "nodes", name="a"),
     node_obj("a"), node_obj("a", labels={"node-restriction.kubernetes.io/role": "db"}), False, "modify labels"),
    ("taints changed", R(NODE_A, "patch", "nodes", name="a"), node_obj("a"), node_obj("a", taints=TAINT), False, "modify taints"),
    ("podCIDR changed", R(NODE_A, "patch", "nodes", name="a"), node_obj("a", cidr="10.42.9.0/24"),
     node_obj("a", cidr="10.42.1.0/24"), False, "spec.podCIDR"),
    ("podCIDR kept", R(NODE_A, "patch", "nodes", sub="status", name="a"), node_obj("a", cidr="10.42.1.0/24"),
     node_obj("a", cidr="10.42.1.0/24"), True, ""),
    # its own Lease
    ("own lease create", R(NODE_A, "create", "leases", group=LEASE, ns="kube-node-lease"),
     {"metadata": {"name": "a"}}, None, True, ""),
    ("own lease update", R(NODE_A, "update", "leases", group=LEASE, ns="kube-node-lease", name="a"), None, None, True, ""),
    ("own lease patch", R(NODE_A, "patch", "leases", group=LEASE, ns="kube-node-lease", name="a"), None, None, True, ""),
    ("other lease", R(NODE_A, "update", "leases", group=LEASE, ns="kube-node-lease", name="b"), None, None, False, "lease kube-node-lease/b"),
    ("own-named lease elsewhere", R(NODE_A, "update", "leases", group=LEASE, ns="kube-system", name="a"), None, None, False, "lease kube-system/a"),
    ("create other lease", R(NODE_A, "create", "leases", group=LEASE, ns="kube-node-lease"), {"metadata": {"name": "b"}}, None, False, "lease"),
    # pods
    ("status of own pod", R(NODE_A, "patch", "pods", sub="status", ns="default", name="p"), pod("a"), pod("a"), True, ""),
    ("update status own pod", R(NODE_A, "update", "pods", sub="status", ns="default", name="p"), pod("a"), pod("a"), True, ""),
    ("status of other pod", R(NODE_A, "patch", "pods", sub="status", ns="default", name="p"), pod("a"), pod("b"), False,
     "only update pod status for pods with spec.nodeName set to itself"),
    ("status of unbound pod", R(NODE_A, "patch", "pods", sub="status", ns="default", name="p"), None, pod(None), False, "spec.nodeName"),
    ("status without old obj", R(NODE_A, "patch", "pods", sub="status", ns="default", name="p"), None, None, False, "spec.nodeName"),
    ("delete own pod", R(NODE_A, "delete", "pods", ns="default", name="p"), None, pod("a"), True, ""),
    ("delete other pod", R(NODE_A, "delete", "pods", ns="default", name="p"), None, pod("b"), False, "only delete pods"),
    ("create pod", R(NODE_A, "create", "pods", ns="default"), pod("a"), None, False, 'node "a" is not allowed to create pods'),
    ("update pod spec", R(NODE_A, "update", "pods", ns="default", name="p"), pod("a"), pod("a"), False, "not allowed to update pods"),
    ("patch pod", R(NODE_A, "patch", "pods", ns="default", name="p"), pod("a"), pod("a"), False, "not allowed to patch pods"),
    ("bind pod", R(NODE_A, "create", "pods", sub="binding", ns="default", name="p"), None, None, False, "pods/binding"),
    ("deletecollection pods", R(NODE_A, "deletecollection", "pods", ns="default"), None, None, False, "not allowed"),
    # events
    ("create event", R(NODE_A, "create", "events", ns="default"), None, None, True, ""),
    ("patch event", R(NODE_A, "patch", "events", ns="default", name="e"), None, None, True, ""),
    ("create events.k8s.io event", R(NODE_A, "create", "events", group="events.k8s.io", ns="default"), None, None, True, ""),
    ("delete event", R(NODE_A, "delete", "events", ns="default", name="e"), None, None, False, "may only write"),
    # everything else
    ("create configmap", R(NODE_A, "create", "configmaps", ns="default"), None, None, False, "may only write"),
    ("create secret", R(NODE_A, "create", "secrets", ns="kube-system"), None, None, False, "may only write"),
    ("create netpol", R(NODE_A, "create", "networkpolicies", group=NETPOL, ns="default"), None, None, False, "may only write"),
    ("delete namespace", R(NODE_A, "delete", "namespaces", ns="x", name="x"), None, None, False, "may only write"),
    ("update service", R(NODE_A, "update", "services", ns="default", name="kubernetes"), None, None, False, "may only write"),
]


@pytest.mark.parametrize("attrs, new, old, allowed, reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_authorize(attrs: RequestAttributes, new: Any, old: Any, allowed: bool, reason: str) -> None:
    decision = authorize(attrs, new_obj=new, old_obj=old)
    assert decision.allowed is allowed, decision.reason
    assert reason in decision.reason


def test_node_b_is_symmetric() -> None:
    assert authorize(R(NODE_B, "patch", "nodes", name="b")).allowed
    assert not authorize(R(NODE_B, "patch", "nodes", name="a")).allowed


def test_forbidden_message_matches_upstream_wording() -> None:
    attrs = request_attributes(NODE_A, "PATCH", "/api/v1/nodes/b", {})
    decision = authorize(attrs)
    assert forbidden_message(attrs, decision) == (
        'nodes "b" is forbidden: User "system:node:a" cannot patch resource "nodes" in API group "" '
        'at the cluster scope: node "a" is not allowed to modify node "b"'
    )
    attrs = request_attributes(NODE_A, "POST", "/api/v1/namespaces/default/pods", {})
    msg = forbidden_message(attrs, authorize(attrs, new_obj=pod("a")))
    assert msg.startswith('pods is forbidden: User "system:node:a" cannot create resource "pods" in API group "" in the namespace "default"')
    attrs = request_attributes(ANONYMOUS, "GET", "/api", {})
    assert forbidden_message(attrs, authorize(attrs)).startswith('forbidden: User "system:anonymous" cannot get path "/api"')


@pytest.mark.parametrize("attrs, new, old, allowed, reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_prefilter_is_never_stricter_than_authorize(attrs: RequestAttributes, new: Any, old: Any, allowed: bool, reason: str) -> None:
    early = prefilter(attrs)
    if allowed:
        assert early.allowed, early.reason
    if not early.allowed:  # an early denial must be final whatever the objects are
        assert not authorize(attrs, new_obj=new, old_obj=old).allowed


@pytest.mark.parametrize(
    "attrs, allowed",
    [
        (R(NODE_A, "patch", "pods", sub="status", ns="default", name="p"), True),
        (R(NODE_A, "delete", "pods", ns="default", name="p"), True),
        (R(NODE_A, "create", "nodes"), True),
        (R(NODE_A, "create", "leases", group=LEASE, ns="kube-node-lease"), True),
        (R(NODE_A, "list", "pods"), True),
        (R(NODE_A, "watch", "nodes"), True),
        (R(NODE_A, "create", "leases", group=LEASE, ns="default"), False),
        (R(NODE_A, "patch", "nodes", name="b"), False),
        (R(NODE_A, "create", "pods", ns="default"), False),
        (R(NODE_A, "patch", "pods", ns="default", name="p"), False),
        (R(NODE_A, "deletecollection", "pods", ns="default"), False),
        (R(NODE_A, "list", "secrets"), False),
        (R(NODE_A, "create", "pods", sub="exec", ns="default", name="p"), False),
        (R(ALICE, "list", "pods"), False),
        (R(ANONYMOUS, "create", "nodes"), False),
    ],
)
def test_prefilter(attrs: RequestAttributes, allowed: bool) -> None:
    assert prefilter(attrs).allowed is allowed


def test_provisional_node_writes_are_decided_with_objects() -> None:
    status = R(NODE_A, "patch", "pods", sub="status", ns="default", name="p")
    assert "provisional" in prefilter(status).reason
    assert not authorize(status, new_obj=pod("b"), old_obj=pod("b")).allowed
    create = R(NODE_A, "create", "nodes")
    assert prefilter(create).allowed and not authorize(create, new_obj=node_obj("b")).allowed


def test_objects_not_passed_means_early_check_but_none_means_absent() -> None:
    status = R(NODE_A, "patch", "pods", sub="status", ns="default", name="p")
    assert authorize(status) == prefilter(status)
    assert authorize(status).allowed  # provisional: the handler decides with the stored pod
    assert not authorize(status, new_obj=None, old_obj=None).allowed
    assert not authorize(status, new_obj=pod("a")).allowed  # old_obj not passed counts as none
    create = R(NODE_A, "create", "nodes")
    assert authorize(create).allowed and "provisional" in authorize(create).reason
    assert not authorize(create, new_obj=None, old_obj=None).allowed
    assert authorize(create, new_obj=node_obj("a")).allowed


# ---- secrets: the node-to-secret relationship ---------------------------------------


def spod(node: str | None, ns: str = "default", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": ns}, "spec": {**({"nodeName": node} if node else {}), **spec}}


ENV_REF = {"containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}
ENV_FROM = {"initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s"}}]}]}
VOLUME = {"volumes": [{"name": "v", "secret": {"secretName": "s"}}]}
PULL = {"imagePullSecrets": [{"name": "s"}]}
CM_ONLY = {"containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "s"}}]}]}

# (id, attributes, pods, stored secret, allowed, reason substring)
SECRET_CASES: list[tuple[str, RequestAttributes, list[Any], Any, bool, str]] = [
    *[(f"bound pod via {label}", R(NODE_A, "get", "secrets", ns="default", name="s"), [spod("a", **ref)], None, True, "references")
      for label, ref in (("secretKeyRef", ENV_REF), ("envFrom initContainer", ENV_FROM), ("volume", VOLUME),
                         ("imagePullSecrets", PULL))],
    ("with the stored secret", R(NODE_A, "get", "secrets", ns="default", name="s"), [spod("a", **VOLUME)],
     {"metadata": {"name": "s"}, "type": "Opaque"}, True, ""),
    ("unreferenced", R(NODE_A, "get", "secrets", ns="default", name="other"), [spod("a", **ENV_REF)], None, False,
     "no relationship found between node 'a' and this object"),
    ("no pods", R(NODE_A, "get", "secrets", ns="default", name="s"), [], None, False, "no relationship found"),
    ("pod on another node", R(NODE_A, "get", "secrets", ns="default", name="s"), [spod("b", **ENV_REF)], None, False, "no relationship"),
    ("unbound pod", R(NODE_A, "get", "secrets", ns="default", name="s"), [spod(None, **ENV_REF)], None, False, "no relationship"),
    ("pod in another namespace", R(NODE_A, "get", "secrets", ns="default", name="s"), [spod("a", "shop", **ENV_REF)], None, False, "no relationship"),
    ("configmap of the same name", R(NODE_A, "get", "secrets", ns="default", name="s"), [spod("a", **CM_ONLY)], None, False, "no relationship"),
    ("password secret even if referenced", R(NODE_A, "get", "secrets", ns="kube-system", name="b.node-password.edgectl"),
     [spod("a", "kube-system", imagePullSecrets=[{"name": "b.node-password.edgectl"}])], None, False, "no relationship"),
    ("password-typed secret elsewhere", R(NODE_A, "get", "secrets", ns="default", name="s"), [spod("a", **PULL)],
     {"metadata": {"name": "s"}, "type": "edgectl.io/node-password"}, False, "no relationship"),
    ("list even with pods", R(NODE_A, "list", "secrets", ns="default"), [spod("a", **PULL)], None, False, "may only get"),
    ("watch even with pods", R(NODE_A, "watch", "secrets", ns="default"), [spod("a", **PULL)], None, False, "may only get"),
    ("watch of the one referenced secret", R(NODE_A, "watch", "secrets", ns="default", name="s"), [spod("a", **PULL)], None, True, "references"),
    ("write even with pods", R(NODE_A, "update", "secrets", ns="default", name="s"), [spod("a", **PULL)], None, False, "may only write"),
    ("other users unaffected", R(ALICE, "get", "secrets", ns="default", name="s"), [spod("a", **PULL)], None, False, "no policy"),
]


@pytest.mark.parametrize("attrs, pods, stored, allowed, reason", [c[1:] for c in SECRET_CASES], ids=[c[0] for c in SECRET_CASES])
def test_node_secret_access(attrs: RequestAttributes, pods: list[Any], stored: Any, allowed: bool, reason: str) -> None:
    decision = authorize(attrs, old_obj=stored, pods=pods)
    assert decision.allowed is allowed, decision.reason
    assert reason in decision.reason
    if not prefilter(attrs).allowed:  # early denials are final
        assert not allowed


def test_secret_prefilter_is_provisional_only_for_single_gets() -> None:
    assert "provisional" in prefilter(R(NODE_A, "get", "secrets", ns="default", name="s")).reason
    assert not prefilter(R(NODE_A, "get", "secrets", ns="kube-system", name="a.node-password.edgectl")).allowed
    assert not prefilter(R(NODE_A, "list", "secrets", ns="default")).allowed
    assert not prefilter(R(NODE_A, "watch", "secrets")).allowed


def test_pod_secret_names_reads_every_reference_and_ignores_junk() -> None:
    pod = spod("a", imagePullSecrets=[{"name": "pull"}, {}, "junk"], volumes=[{"secret": {"secretName": "vol"}}, {"configMap": {"name": "cm"}}],
               containers=[{"env": [{"valueFrom": {"secretKeyRef": {"name": "env"}}}, {"value": "x"}], "envFrom": [{"secretRef": {"name": "from"}}]}],
               initContainers=[{"envFrom": [{"secretRef": {"name": "init"}}]}, None])
    assert pod_secret_names(pod) == {"pull", "vol", "env", "from", "init"}
    assert pod_secret_names({"spec": {"containers": "nope", "volumes": {"x": 1}}}) == set()
    assert node_may_get_secret("a", "default", "vol", [pod]) and not node_may_get_secret("b", "default", "vol", [pod])
