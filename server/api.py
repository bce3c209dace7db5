"""The resource API: URL parsing, content negotiation and one handler per verb.

``/api/v1/...`` and ``/apis/<group>/<version>/...`` land here after
authentication. Every failure leaves as a ``Status`` (status.py); a handler
bug becomes a logged 500 Status rather than a dropped connection.
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from edgectl.httpd import Request, Response, json_response
from edgectl.log import fields

from . import discovery, fieldcheck, protobuf, status, tables
from .auth import NODE_REFERENCED, UNKNOWN, RequestAttributes, authorize, forbidden_message, node_name_of
from .bodyshape import check_shape
from .nodeproxy import node_proxy_target, split_node_name
from .patch import PATCH_TYPES, PatchError, apply_patch
from .registry import ALL, Obj, Registry, Selection, WatchStream, now_rfc3339
from .resources import VIRTUAL, Resource
from .selectors import FieldRequirement, FieldSelector, SelectorError, parse_field_selector, parse_label_selector
from .status import ApiError

log = logging.getLogger(__name__)

# The authenticated request's attributes, set by the app before dispatch.
current_attrs: contextvars.ContextVar[RequestAttributes | None] = contextvars.ContextVar("edgectl_attrs", default=None)

WATCH_TIMEOUT = 1800.0  # upstream's min-request-timeout; each watch gets 1-2x this
BOOKMARK_INTERVAL = 60.0
_STREAM_SUBRESOURCES = ("log", "exec", "portforward", "attach", "proxy")


class NodeProxy(Protocol):
    """Carries pods/log, exec, portforward, attach and nodes/proxy to the node's kubelet."""

    async def __call__(self, req: Request, *, pod: Obj, subresource: str) -> Response: ...

    async def node(self, req: Request, *, node: str, target: str, port: int | None = None) -> Response: ...


def status_response(err: ApiError) -> Response:
    return json_response(err.code, err.status())


@dataclass(frozen=True)
class Target:
    res: Resource
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_prefix: bool


# --- negotiation and decoding -----------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    as_: str  # "", "Table", "PartialObjectMetadata", "PartialObjectMetadataList"
    version: str = "v1"


def negotiate(accept: str | None) -> Wanted:
    """Pick the first acceptable media type. Protobuf is answered in JSON."""
    for part in (accept or "").split(","):
        params = {}
        bits = part.split(";")
        for p in bits[1:]:
            k, _, v = p.strip().partition("=")
            params[k.strip()] = v.strip()
        as_ = params.get("as")
        if as_ and params.get("g") == "meta.k8s.io":
            if as_ in ("Table", "PartialObjectMetadata", "PartialObjectMetadataList"):
                return Wanted(as_, params.get("v", "v1"))
            continue
        if as_:
            continue  # e.g. aggregated discovery: we only serve the legacy format
        mt = bits[0].strip()
        if mt in ("application/json", "*/*", "application/*", "", "application/vnd.kubernetes.protobuf",
                  "application/yaml", "application/cbor"):
            return Wanted("")
    return Wanted("")


def decode_body(req: Request, *, what: str = "object") -> Any:
    if not req.body:
        raise status.bad_request(f"request body is empty; expected a JSON {what}")
    ctype = (req.headers.get("content-type") or "application/json").split(";")[0].strip().lower()
    try:
        if ctype in ("application/yaml", "application/x-yaml", "text/yaml", "application/apply-patch+yaml"):
            doc = yaml.safe_load(req.body.decode("utf-8"))
        elif ctype == "application/vnd.kubernetes.protobuf":
            return protobuf.decode_object(req.body)
        elif ctype == "application/cbor":
            raise ApiError(415, f"the body of the request was in an unknown format - accepted media types include: "
                                f"application/json, application/yaml (got {ctype})", "UnsupportedMediaType")
        else:
            doc = json.loads(req.body)
        check_shape(doc, body_size=len(req.body))  # deep/recursive/alias bombs: 400, not a 500 later
        return doc
    except RecursionError:
        raise status.bad_request("the body of the request could not be decoded: nested too deeply") from None
    except ApiError:
        raise
    except protobuf.ProtobufError as exc:
        raise ApiError(415, f"the protobuf body could not be decoded: {exc}", "UnsupportedMediaType") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise status.bad_request(f"the body of the request could not be decoded as JSON or YAML: {exc}") from None
    except yaml.YAMLError as exc:
        raise status.bad_request(f"the body of the request could not be decoded as YAML: {str(exc).splitlines()[0]}") from None


def _int_arg(req: Request, name: str) -> int | None:
    value = req.arg(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)  # type: ignore[arg-type]
    except ValueError:
        raise status.bad_request(f"invalid value for {name}: {value!r}") from None
    if not -(1 << 63) <= number < 1 << 63:  # int64, as upstream parses it (SQLite overflowed: 500)
        raise status.bad_request(f"invalid value for {name}: {value!r} is out of range")
    return number


_TRUE = ("1", "t", "T", "true", "TRUE", "True")  # Go's strconv.ParseBool, as upstream parses
_FALSE = ("", "0", "f", "F", "false", "FALSE", "False")


def _bool_arg(req: Request, name: str) -> bool:
    value = req.arg(name) or ""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise status.bad_request(f"invalid value for {name}: {value!r} is not a boolean")


def _rv_match_exact(req: Request) -> bool:
    match = req.arg("resourceVersionMatch") or ""
    if match not in ("", "Exact", "NotOlderThan"):
        raise status.bad_request(f'resourceVersionMatch: Unsupported value: "{match}": supported values: "Exact", "NotOlderThan"')
    if match and not req.arg("resourceVersion"):
        raise status.bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")
    return match == "Exact"


def _dry_run(req: Request) -> bool:
    values = req.query.get("dryRun") or []
    for v in values:
        if v != "All":
            raise status.bad_request(f"unsupported dryRun value {v!r}; only 'All' is supported")
    return bool(values)


def _field_validation(req: Request) -> str:
    mode = req.arg("fieldValidation") or "Warn"
    if mode not in ("Strict", "Warn", "Ignore"):
        raise status.bad_request(f"fieldValidation must be one of Ignore, Warn or Strict, not {mode!r}")
    return mode


# --- the API ------------------------------------------------------------------------


class ApiServer:
    def __init__(self, registry: Registry, *, server_address: str = "127.0.0.1:6443", node_proxy: NodeProxy | None = None,
                 watch_timeout: float = WATCH_TIMEOUT) -> None:
        self.registry = registry
        self.table = registry.table
        self.server_address = server_address
        self.node_proxy = node_proxy
        self.watch_timeout = watch_timeout
        self.watchers = 0
        # Set by metrics: (verb, resource, code) after each request.
        self.observe: Callable[[str, str, str, int, float], None] | None = None

    async def handle(self, req: Request) -> Response:
        started = time.perf_counter()
        verb, resource, sub, code = req.method.lower(), "", "", 500
        try:
            response, verb, resource, sub = await self._dispatch(req)
        except ApiError as err:
            response = status_response(err)
        except Exception:
            log.exception("API handler failed", extra=fields(method=req.method, path=req.path))
            response = status_response(ApiError(500, "internal error; see the server log", "InternalError"))
        code = response.status
        if self.observe is not None:
            self.observe(verb, resource, sub, code, time.perf_counter() - started)
        return response

    async def _dispatch(self, req: Request) -> tuple[Response, str, str, str]:
        parts = [p for p in req.path.split("/") if p]
        if parts[:1] == ["api"]:
            if len(parts) == 1:
                return self._get_only(req, discovery.api_versions(self.server_address)), "get", "discovery", ""
            gv, rest = parts[1], parts[2:]
            if gv != "v1":
                raise ApiError(404, "the server could not find the requested resource", "NotFound")
        elif parts[:1] == ["apis"]:
            if len(parts) == 1:
                return self._get_only(req, discovery.api_groups(self.table)), "get", "discovery", ""
            if len(parts) == 2:
                doc = discovery.api_group(self.table, parts[1])
                if doc is None:
                    raise ApiError(404, "the server could not find the requested resource", "NotFound")
                return self._get_only(req, doc), "get", "discovery", ""
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if not rest:
            doc = discovery.resource_list(self.table, gv)
            if doc is None:
                raise ApiError(404, "the server could not find the requested resource", "NotFound")
            return self._get_only(req, doc), "get", "discovery", ""
        target = self._parse_target(gv, rest)
        verb, response = await self._route(req, target)
        return response, verb, target.res.plural, target.subresource or ""

    def _get_only(self, req: Request, doc: Any) -> Response:
        if req.method not in ("GET", "HEAD"):
            raise status.method_not_allowed()
        return json_response(200, doc)

    def _parse_target(self, gv: str, rest: list[str]) -> Target:
        group = gv.split("/")[0] if "/" in gv else ""
        watch_prefix = False
        if rest[0] == "watch":
            watch_prefix, rest = True, rest[1:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        # Only {resource}/{name}/proxy/{path...} may be longer than resource/name/subresource.
        if not rest or (len(rest) > 3 and rest[2] != "proxy"):
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        res = self.table.lookup(group, rest[0])
        if res is None or res.api_version != gv:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if namespace is not None and not res.namespaced:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in res.subresources:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if name is not None and (not name or "/" in name):
            raise status.bad_request(f"invalid resource name {name!r}")
        if res.namespaced and name is not None and namespace is None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        return Target(res, namespace, name, sub, watch_prefix)

    async def _route(self, req: Request, t: Target) -> tuple[str, Response]:
        m = req.method
        if t.res.plural in VIRTUAL and (m != "POST" or t.name is not None):
            raise status.method_not_allowed()
        if t.subresource in _STREAM_SUBRESOURCES:
            return t.subresource, await self._node_stream(req, t)
        if t.subresource == "scale":
            return await self._scale(req, t)
        if t.name is None:
            if m in ("GET", "HEAD"):
                if t.watch_prefix or _bool_arg(req, "watch"):
                    return "watch", await self.watch(req, t)
                return "list", await self.list(req, t)
            if m == "POST":
                return "create", await self.create(req, t)
            if m == "DELETE":
                return "deletecollection", await self.delete_collection(req, t)
            raise status.method_not_allowed()
        if t.watch_prefix and m == "GET":
            return "watch", await self.watch(req, t)
        if m in ("GET", "HEAD"):
            return "get", await self.get(req, t)
        if m == "PUT":
            return "update", await self.update(req, t)
        if m == "PATCH":
            return "patch", await self.patch(req, t)
        if m == "DELETE":
            return "delete", await self.delete(req, t)
        if m == "POST" and t.subresource in ("binding", "eviction"):
            return "create", await self.bind_or_evict(req, t)
        raise status.method_not_allowed()

    # --- authorization with objects -------------------------------------------------

    def _authorize_objects(self, t: Target, new: Obj | None, old: Obj | None, *, pods: list[Obj] | None = None) -> None:
        attrs = current_attrs.get()
        if attrs is None:
            return
        decision = authorize(attrs, new_obj=new, old_obj=old, pods=UNKNOWN if pods is None else pods)
        if not decision.allowed:
            raise status.forbidden(forbidden_message(attrs, decision), t.res.plural, t.name or "", t.res.group)

    # --- rendering ------------------------------------------------------------------

    def _render_one(self, req: Request, t: Target, obj: Obj, code: int = 200) -> Response:
        wanted = negotiate(req.headers.get("accept"))
        if wanted.as_ == "Table":
            doc = tables.table(t.res.plural, [obj], resource_version=obj["metadata"].get("resourceVersion", ""),
                               include=req.arg("includeObject") or "Metadata", api_version=f"meta.k8s.io/{wanted.version}")
            return json_response(code, doc)
        if wanted.as_ == "PartialObjectMetadata":
            return json_response(code, dict(tables.partial_metadata(obj), apiVersion=f"meta.k8s.io/{wanted.version}"))
        return json_response(code, obj)

    # --- reads ------------------------------------------------------------------------

    def _selection(self, req: Request, t: Target) -> Selection:
        try:
            labels = parse_label_selector(req.arg("labelSelector"))
            fields_ = parse_field_selector(req.arg("fieldSelector"), t.res.plural)
        except SelectorError as exc:
            raise status.bad_request(str(exc)) from None
        if labels.empty and fields_.empty:
            return ALL
        return Selection(labels, fields_)

    async def _node_pods(self, t: Target) -> list[Obj] | None:
        """For a node reading a Secret or ConfigMap: its pods in the object's
        namespace (the NodeAuthorizer's graph, read on demand); None for
        everyone else."""
        attrs = current_attrs.get()
        node = node_name_of(attrs.user) if attrs is not None else None
        if node is None or (t.res.group, t.res.plural) not in NODE_REFERENCED or not t.namespace:
            return None
        pods_res = self.table.lookup("", "pods")
        assert pods_res is not None
        bound = Selection(fields=FieldSelector((FieldRequirement("spec.nodeName", node, False),)))
        return (await self.registry.list(pods_res, t.namespace, selection=bound)).items

    async def get(self, req: Request, t: Target) -> Response:
        assert t.name is not None
        pods = await self._node_pods(t)
        if pods is not None:  # decided before the read, as upstream: no existence leak to unrelated nodes
            self._authorize_objects(t, None, None, pods=pods)
        obj = await self.registry.get(t.res, t.namespace, t.name)
        self._authorize_objects(t, None, obj, pods=pods)
        return self._render_one(req, t, obj)

    async def list(self, req: Request, t: Target) -> Response:
        limit = _int_arg(req, "limit") or 0
        if limit < 0:
            raise status.bad_request("limit must not be negative")
        pods = await self._node_pods(t)
        if pods is not None:  # a node's list pinned to one name (see auth): only that object's relation counts
            self._authorize_objects(t, None, None, pods=pods)
        listed = await self.registry.list(
            t.res, t.namespace, selection=self._selection(req, t), limit=limit,
            continue_token=req.arg("continue"), resource_version=req.arg("resourceVersion"),
            exact=_rv_match_exact(req), shared=True,
        )
        wanted = negotiate(req.headers.get("accept"))
        if wanted.as_ == "Table":
            doc = tables.table(t.res.plural, listed.items, resource_version=listed.resource_version,
                               continue_token=listed.continue_token, include=req.arg("includeObject") or "Metadata",
                               api_version=f"meta.k8s.io/{wanted.version}")
            return json_response(200, doc)
        meta: Obj = {"resourceVersion": listed.resource_version}
        if listed.continue_token:
            meta["continue"] = listed.continue_token
        if wanted.as_ in ("PartialObjectMetadataList", "PartialObjectMetadata"):
            items = [dict(tables.partial_metadata(o), apiVersion=f"meta.k8s.io/{wanted.version}") for o in listed.items]
            return json_response(200, {"kind": "PartialObjectMetadataList", "apiVersion": f"meta.k8s.io/{wanted.version}",
                                       "metadata": meta, "items": items})
        body = _list_body(t.res, meta, listed.items)
        return Response(200, [("Content-Type", "application/json")], body)

    async def watch(self, req: Request, t: Target) -> Response:
        selection = self._selection(req, t)
        pods = await self._node_pods(t)
        if pods is not None:
            self._authorize_objects(t, None, None, pods=pods)
        if t.name is not None:  # the legacy /watch/.../name form
            selection = Selection(selection.labels, parse_field_selector(f"metadata.name={t.name}", t.res.plural))
        timeout = _int_arg(req, "timeoutSeconds")
        deadline = float(timeout) if timeout and timeout > 0 else self.watch_timeout * (1 + random.random())
        bookmarks = _bool_arg(req, "allowWatchBookmarks")
        send_initial = req.arg("sendInitialEvents")
        initial_flag = None if send_initial is None else send_initial.lower() == "true"
        stream = await self.registry.watch(t.res, t.namespace, resource_version=req.arg("resourceVersion"),
                                           selection=selection, send_initial=initial_flag)
        wanted = negotiate(req.headers.get("accept"))
        include = req.arg("includeObject") or "Metadata"
        body = self._watch_body(stream, t, wanted, include, deadline, bookmarks, initial_flag is True)
        return Response(200, [("Content-Type", "application/json"), ("Cache-Control", "no-cache, private")], body)

    async def _watch_body(self, stream: WatchStream, t: Target, wanted: Wanted, include: str, deadline: float,
                          bookmarks: bool, initial_end_bookmark: bool) -> AsyncIterator[bytes]:
        self.watchers += 1
        end = time.monotonic() + deadline
        first_table = True
        pending_initial = initial_end_bookmark
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    return
                wait = min(left, BOOKMARK_INTERVAL) if bookmarks else left
                if pending_initial and stream.initial_sent:
                    pending_initial = False
                    yield _event_line("BOOKMARK", _bookmark(t.res, stream.revision, initial_end=True))
                    continue
                try:
                    ev = await stream.next(wait)
                except asyncio.TimeoutError:
                    if bookmarks and end - time.monotonic() > 0:
                        yield _event_line("BOOKMARK", _bookmark(t.res, stream.revision))
                    continue
                if ev is None:
                    return
                obj = ev.object
                if ev.type != "ERROR" and wanted.as_ == "Table":
                    obj = tables.table(t.res.plural, [obj], resource_version=obj["metadata"].get("resourceVersion", ""),
                                       include=include, api_version=f"meta.k8s.io/{wanted.version}", with_columns=first_table)
                    first_table = False
                elif ev.type != "ERROR" and wanted.as_.startswith("PartialObjectMetadata"):
                    obj = dict(tables.partial_metadata(obj), apiVersion=f"meta.k8s.io/{wanted.version}")
                yield _event_line(ev.type, obj)
                if ev.type == "ERROR":
                    return
        finally:
            self.watchers -= 1
            await stream.close()

    # --- writes -----------------------------------------------------------------------

    def _check_shape(self, t: Target, obj: Any) -> None:
        problems = fieldcheck.shape_errors(t.res.plural, obj)
        if problems:
            raise status.bad_request(f"{t.res.kind} in version \"{t.res.version}\" cannot be handled as a {t.res.kind}: "
                                     + "; ".join(problems[:5]))

    def _check_fields(self, req: Request, t: Target, obj: Any) -> list[str]:
        """Apply fieldValidation; returns warnings for Warn mode."""
        self._check_shape(t, obj)
        mode = _field_validation(req)
        if not isinstance(obj, dict) or mode == "Ignore":
            if isinstance(obj, dict):
                fieldcheck.unknown_fields(t.res.plural, obj, prune=True)
            return []
        unknown = fieldcheck.unknown_fields(t.res.plural, obj, prune=mode != "Strict")
        if mode == "Strict":
            duplicates = [f'duplicate field "{d}"' for d in _duplicate_keys(req.body)]
        else:
            duplicates = []
        if duplicates or (unknown and mode == "Strict"):
            detail = ", ".join([*(f'unknown field "{u}"' for u in unknown), *duplicates])
            raise status.bad_request(f"{t.res.kind} in version \"{t.res.version}\" cannot be handled as a {t.res.kind}: "
                                     f"strict decoding error: {detail}")
        return [f'unknown field "{u}"' for u in unknown]

    def _written(self, req: Request, t: Target, obj: Obj, code: int, warnings: list[str]) -> Response:
        resp = self._render_one(req, t, obj, code)
        for w in warnings:
            resp.headers.append(("Warning", f'299 - {json.dumps(w)}'))
        return resp

    async def create(self, req: Request, t: Target) -> Response:
        obj = decode_body(req)
        if not isinstance(obj, dict):
            raise status.bad_request(f"the body must be a {t.res.kind} object")
        if t.res.plural == "selfsubjectaccessreviews":
            return self._access_review(obj)
        warnings = self._check_fields(req, t, obj)
        self._authorize_objects(t, _with_ns(obj, t.namespace), None)
        created = await self.registry.create(t.res, obj, namespace=t.namespace, dry_run=_dry_run(req))
        return self._written(req, t, created, 201, warnings)

    async def update(self, req: Request, t: Target) -> Response:
        assert t.name is not None
        obj = decode_body(req)
        if not isinstance(obj, dict):
            raise status.bad_request(f"the body must be a {t.res.kind} object")
        warnings = self._check_fields(req, t, obj)
        if t.subresource not in (None, "status", "finalize"):
            raise status.method_not_allowed()
        sub = "status" if t.subresource == "status" else None
        if t.subresource == "finalize":
            return await self._finalize(req, t, obj)
        old = await self.registry.get(t.res, t.namespace, t.name)
        self._authorize_objects(t, obj, old)
        updated = await self.registry.update(t.res, t.namespace, t.name, obj, subresource=sub, dry_run=_dry_run(req))
        return self._written(req, t, updated, 200, warnings)

    def _access_review(self, review: Obj) -> Response:
        """``kubectl auth can-i``: ask the authorizer about the caller itself."""
        attrs = current_attrs.get()
        spec = review.get("spec") if isinstance(review.get("spec"), dict) else {}
        res_attrs, path_attrs = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if attrs is None:
            raise status.forbidden("no authenticated user")
        if isinstance(res_attrs, dict):
            ask = RequestAttributes(attrs.user, str(res_attrs.get("verb", "")), str(res_attrs.get("group", "")),
                                    str(res_attrs.get("resource", "")), str(res_attrs.get("subresource", "")),
                                    str(res_attrs.get("namespace", "")), str(res_attrs.get("name", "")))
        elif isinstance(path_attrs, dict):
            ask = RequestAttributes(attrs.user, str(path_attrs.get("verb", "")), path=str(path_attrs.get("path", "")))
        else:
            raise status.invalid("SelfSubjectAccessReview", "", [status.Cause(
                "spec.resourceAttributes", "Required value: exactly one of nonResourceAttributes or resourceAttributes "
                "must be specified", "FieldValueRequired")], "authorization.k8s.io")
        decision = authorize(ask)
        out = {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
               "metadata": {"creationTimestamp": None}, "spec": spec,
               "status": {"allowed": decision.allowed, "reason": decision.reason}}
        if not decision.allowed:
            out["status"]["denied"] = True
        return json_response(201, out)

    async def _finalize(self, req: Request, t: Target, obj: Obj) -> Response:
        finalizers = (obj.get("spec") or {}).get("finalizers") or []

        def mutate(cur: Obj) -> Obj:
            cur.setdefault("spec", {})["finalizers"] = finalizers
            return cur

        assert t.name is not None
        out = await self.registry.guaranteed_update(t.res, None, t.name, mutate, dry_run=_dry_run(req))
        return self._written(req, t, out, 200, [])

    async def patch(self, req: Request, t: Target) -> Response:
        assert t.name is not None
        ctype = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
        patch_type = PATCH_TYPES.get(ctype)
        if patch_type is None or patch_type == "apply":
            supported = ", ".join(k for k, v in PATCH_TYPES.items() if v != "apply")
            raise ApiError(415, f"the body of the request was in an unknown format - accepted media types include: {supported}",
                           "UnsupportedMediaType")
        body = decode_body(req, what="patch")
        sub = t.subresource if t.subresource in ("status",) else None
        if t.subresource not in (None, "status"):
            raise status.method_not_allowed()
        mode = _field_validation(req)
        warnings: list[str] = []

        def mutate(cur: Obj) -> Obj:
            try:
                new = apply_patch(t.res.plural, patch_type, cur, body, strategic_ok=t.res.strategic)
            except PatchError as exc:
                raise ApiError(422 if patch_type == "json" else 400, f"the patch could not be applied: {exc}",
                               "Invalid" if patch_type == "json" else "BadRequest") from None
            self._check_shape(t, new)
            unknown = fieldcheck.unknown_fields(t.res.plural, new, prune=mode != "Strict")
            if unknown and mode == "Strict":
                detail = ", ".join(f'unknown field "{u}"' for u in unknown)
                raise status.bad_request(f"strict decoding error: {detail}")
            if mode == "Warn":
                warnings[:] = [f'unknown field "{u}"' for u in unknown]
            self._authorize_objects(t, new, cur)
            return new

        out = await self.registry.guaranteed_update(t.res, t.namespace, t.name, mutate, subresource=sub, dry_run=_dry_run(req))
        return self._written(req, t, out, 200, warnings)

    async def delete(self, req: Request, t: Target) -> Response:
        assert t.name is not None
        opts = decode_body(req, what="DeleteOptions") if req.body else {}
        if not isinstance(opts, dict):
            raise status.bad_request("DeleteOptions must be a JSON object")
        grace = _int_arg(req, "gracePeriodSeconds")
        if grace is None and opts.get("gracePeriodSeconds") is not None:
            try:
                grace = int(opts["gracePeriodSeconds"])
            except (TypeError, ValueError):
                raise status.bad_request("gracePeriodSeconds must be an integer") from None
        pre = opts.get("preconditions")
        dry = _dry_run(req) or bool(opts.get("dryRun"))
        propagation = _propagation(req, opts)
        old = await self.registry.get(t.res, t.namespace, t.name)
        self._authorize_objects(t, None, old)
        obj, removed = await self.registry.delete(t.res, t.namespace, t.name, grace_period_seconds=grace,
                                                  preconditions=pre if isinstance(pre, dict) else None, dry_run=dry,
                                                  propagation=propagation)
        if removed and t.res.plural not in ("pods", "namespaces", "services", "nodes"):
            # Upstream answers a Status for kinds without graceful deletion.
            details = {"name": t.name, "kind": t.res.plural, "uid": obj["metadata"].get("uid", "")}
            if t.res.group:
                details["group"] = t.res.group
            return json_response(200, status.success(details))
        return self._render_one(req, t, obj, 200)  # upstream answers 200 for pending deletions too

    async def delete_collection(self, req: Request, t: Target) -> Response:
        listed = await self.registry.list(t.res, t.namespace, selection=self._selection(req, t))
        grace = _int_arg(req, "gracePeriodSeconds")
        dry = _dry_run(req)
        opts = decode_body(req, what="DeleteOptions") if req.body else {}
        propagation = _propagation(req, opts if isinstance(opts, dict) else {})
        items = []
        for obj in listed.items:
            meta = obj["metadata"]
            sub_t = Target(t.res, meta.get("namespace"), meta["name"], None, False)
            self._authorize_objects(sub_t, None, obj)
            try:
                out, _ = await self.registry.delete(t.res, meta.get("namespace"), meta["name"], grace_period_seconds=grace,
                                                    dry_run=dry, propagation=propagation)
                items.append(out)
            except ApiError as exc:
                if exc.code != 404:
                    raise
        return Response(200, [("Content-Type", "application/json")],
                        _list_body(t.res, {"resourceVersion": listed.resource_version}, items))

    async def bind_or_evict(self, req: Request, t: Target) -> Response:
        assert t.name is not None
        body = decode_body(req)
        if not isinstance(body, dict):
            raise status.bad_request("the body must be an object")
        if t.subresource == "eviction":
            old = await self.registry.get(t.res, t.namespace, t.name)
            self._authorize_objects(t, None, old)
            await self.registry.delete(t.res, t.namespace, t.name, dry_run=_dry_run(req))
            return json_response(201, status.success())
        target = (body.get("target") or {}).get("name")
        if not target:
            raise status.invalid("Binding", t.name, [status.Cause("target.name", "Required value", "FieldValueRequired")])

        def mutate(cur: Obj) -> Obj:
            if cur.get("spec", {}).get("nodeName"):
                raise status.conflict(t.res.plural, t.name or "", "", f"pod {t.name} is already assigned to node \"{cur['spec']['nodeName']}\"")
            cur.setdefault("spec", {})["nodeName"] = target
            conds = [c for c in cur.setdefault("status", {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": now_rfc3339()})
            cur["status"]["conditions"] = conds
            self._authorize_objects(t, cur, None)
            return cur

        await self.registry.guaranteed_update(t.res, t.namespace, t.name, mutate, subresource="binding", dry_run=_dry_run(req))
        return json_response(201, status.success())

    # --- the scale subresource (autoscaling/v1 Scale) ------------------------------

    async def _scale(self, req: Request, t: Target) -> tuple[str, Response]:
        """GET/PUT/PATCH ``…/{deployments,replicasets}/NAME/scale``: a Scale view of
        spec.replicas, which is what ``kubectl scale`` reads and writes."""
        assert t.name is not None
        m = req.method
        if m in ("GET", "HEAD"):
            obj = await self.registry.get(t.res, t.namespace, t.name)
            self._authorize_objects(t, None, obj)
            return "get", json_response(200, scale_of(obj))
        if m == "PUT":
            body = decode_body(req)
            if not isinstance(body, dict):
                raise status.bad_request("the body must be a Scale object")

            def from_body(cur: Scale) -> Obj:
                return body
            verb, change = "update", from_body
        elif m == "PATCH":
            ctype = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
            patch_type = PATCH_TYPES.get(ctype)
            if patch_type is None or patch_type == "apply":
                raise ApiError(415, f"the body of the request was in an unknown format - accepted media types include: "
                                    f"{', '.join(k for k, v in PATCH_TYPES.items() if v != 'apply')}", "UnsupportedMediaType")
            patch = decode_body(req, what="patch")

            def from_patch(cur: Scale) -> Obj:
                try:
                    out = apply_patch("scale", patch_type, cur, patch)
                except PatchError as exc:
                    raise ApiError(422 if patch_type == "json" else 400, f"the patch could not be applied: {exc}",
                                   "Invalid" if patch_type == "json" else "BadRequest") from None
                if not isinstance(out, dict):
                    raise status.bad_request("the patched Scale must be a JSON object")
                return out
            verb, change = "patch", from_patch
        else:
            raise status.method_not_allowed()

        def mutate(cur: Obj) -> Obj:
            new = change(scale_of(cur))
            want_rv = (new.get("metadata") or {}).get("resourceVersion") if isinstance(new.get("metadata"), dict) else None
            if want_rv and str(want_rv) != cur["metadata"].get("resourceVersion"):
                raise status.conflict(t.res.plural, t.name or "", t.res.group)
            replicas = (new.get("spec") or {}).get("replicas", 0) if isinstance(new.get("spec"), dict) else None
            if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
                raise status.invalid("Scale", t.name or "", [status.Cause(
                    "spec.replicas", f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0")],
                    "autoscaling")
            cur.setdefault("spec", {})["replicas"] = replicas
            cur["metadata"].pop("resourceVersion", None)
            self._authorize_objects(t, cur, None)
            return cur

        out = await self.registry.guaranteed_update(t.res, t.namespace, t.name, mutate, dry_run=_dry_run(req))
        return verb, json_response(200, scale_of(out))

    # --- node streams (logs, exec, port-forward) ----------------------------------

    async def _node_stream(self, req: Request, t: Target) -> Response:
        assert t.name is not None
        if t.res.plural == "nodes" and t.subresource == "proxy":
            return await self._node_proxy(req, t)
        obj = await self.registry.get(t.res, t.namespace, t.name)
        self._authorize_objects(t, None, obj)
        if t.res.plural != "pods":
            raise ApiError(503, f"{t.res.plural}/{t.subresource} is not available on this server", "ServiceUnavailable")
        node = (obj.get("spec") or {}).get("nodeName")
        if not node:
            raise status.bad_request(f"pod {t.name} does not have a host assigned")
        if self.node_proxy is None:
            raise ApiError(503, f'node tunnel not connected: cannot reach node "{node}" for pods/{t.subresource}',
                           "ServiceUnavailable")
        return await self.node_proxy(req, pod=obj, subresource=t.subresource or "")

    async def _node_proxy(self, req: Request, t: Target) -> Response:
        """nodes/{name}/proxy/{path}: to the node's kubelet, through its tunnel only."""
        assert t.name is not None
        node, port = split_node_name(t.name)
        obj = await self.registry.get(t.res, None, node)  # an unknown node is a 404 Status
        self._authorize_objects(t, None, obj)
        target = node_proxy_target(req.target)
        if self.node_proxy is None:
            raise ApiError(503, f'node tunnel not connected: cannot reach node "{node}" for nodes/proxy',
                           "ServiceUnavailable")
        return await self.node_proxy.node(req, node=node, target=target, port=port)


Scale = Obj


def scale_of(obj: Obj) -> Scale:
    """The autoscaling/v1 Scale of a Deployment or ReplicaSet."""
    meta = obj.get("metadata") or {}
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    selector = tables.format_label_selector(spec.get("selector"))
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta},
        "spec": {"replicas": int(spec.get("replicas", 1))},
        "status": {"replicas": int(st.get("replicas") or 0), "selector": "" if selector == "<none>" else selector},
    }


_PROPAGATION = ("Foreground", "Background", "Orphan")


def _propagation(req: Request, opts: Obj) -> str | None:
    """DeleteOptions.propagationPolicy (body or query), or the legacy orphanDependents."""
    policy = opts.get("propagationPolicy") or req.arg("propagationPolicy")
    orphan = opts.get("orphanDependents")
    if orphan is None and req.arg("orphanDependents") is not None:
        orphan = _bool_arg(req, "orphanDependents")
    if policy is not None and orphan is not None:
        raise status.invalid("DeleteOptions", "", [status.Cause(
            "propagationPolicy", "Invalid value: \"" + str(policy) + "\": orphanDependents and deletionPropagation "
            "cannot be both set", "FieldValueInvalid")])
    if policy is None:
        return None if orphan is None else ("Orphan" if orphan else "Background")
    if policy not in _PROPAGATION:
        raise status.invalid("DeleteOptions", "", [status.Cause(
            "propagationPolicy", f"Unsupported value: {json.dumps(policy)}: supported values: "
            '"Foreground", "Background", "Orphan", "nil"', "FieldValueNotSupported")])
    return str(policy)


def _duplicate_keys(body: bytes) -> list[str]:
    """Keys that appear twice in one JSON object (strict decoding rejects them)."""
    dups: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                dups.append(key)
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=hook)
    except ValueError:
        return []  # YAML bodies: the YAML loader already keeps the last value
    return dups


def _with_ns(obj: Obj, namespace: str | None) -> Obj:
    if namespace and isinstance(obj.get("metadata"), dict) and not obj["metadata"].get("namespace"):
        obj = dict(obj)
        obj["metadata"] = dict(obj["metadata"], namespace=namespace)
    return obj


def _list_body(res: Resource, meta: Obj, items: list[Obj]) -> bytes:
    """Serialise a list without re-encoding each item twice (lists are the hot path)."""
    head = json.dumps({"kind": res.list_kind, "apiVersion": res.api_version, "metadata": meta}, separators=(",", ":"))
    inner = ",".join(json.dumps(o, separators=(",", ":"), ensure_ascii=False) for o in items)
    return (head[:-1] + ',"items":[' + inner + "]}").encode()


def _event_line(kind: str, obj: Obj) -> bytes:
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _bookmark(res: Resource, revision: int, *, initial_end: bool = False) -> Obj:
    meta: Obj = {"resourceVersion": str(revision)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}

