"""The object layer: Kubernetes semantics on top of the revisioned key/value store.

What lives here (and only here): defaulting on create (uid, timestamps,
generation, generateName, per-kind defaults), compare-and-swap updates,
status subresource rules, graceful deletion and finalizers, namespace
lifecycle (no content in missing or terminating namespaces, cascade on
delete), selector filtering, consistent paging, and watch decoding.

Everything raises :class:`~edgectl.server.status.ApiError`; storage errors map
to it in ``status.from_storage``. Controllers use this class directly, so it has
no HTTP in it.

Objects are plain dicts. Stored bytes never carry ``resourceVersion``: it is the
key's mod_revision, stamped in on every read.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import ipaddress
import json
import logging
import secrets
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from edgectl.aio import wait_event
from edgectl.log import fields

from . import defaults, status, validation
from .resources import TABLE, Resource, ResourceTable
from .selectors import EVERYTHING, FieldSelector, LabelSelector
from .storage import base as storage

log = logging.getLogger(__name__)

Obj = dict[str, Any]
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")
_GENERATE_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"  # upstream's alphabet: no vowels, no lookalikes
_RETRIES = 16
_DECODE_CACHE_MAX = 50_000
# Events one watch stream holds for its HTTP client. A client that leaves it
# full for WATCH_SLOW_SECONDS has its stream ended (as upstream ends a
# too-slow watcher): it re-watches from the last resourceVersion it received,
# so nothing is lost and a stuck client cannot grow the server's memory. The
# grace lets a reading client take a replay larger than the buffer.
WATCH_BUFFER = 2000
WATCH_SLOW_SECONDS = 5.0


MAX_GRACE_SECONDS = 2**31 - 1
ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"
# DeleteOptions.propagationPolicy -> the finalizer that makes the collector act first.
GC_FINALIZERS = {"Orphan": ORPHAN_FINALIZER, "Foreground": FOREGROUND_FINALIZER}


def now_rfc3339(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def encode(obj: Obj) -> bytes:
    meta = obj.get("metadata") or {}
    if "resourceVersion" in meta:
        obj = dict(obj)
        obj["metadata"] = {k: v for k, v in meta.items() if k != "resourceVersion"}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def decode(kv: storage.KeyValue) -> Obj:
    obj: Obj = json.loads(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    return obj


def _parse_rv(text: str | None, what: str = "resourceVersion") -> int:
    if text in (None, ""):
        return 0
    try:
        value = int(text)  # type: ignore[arg-type]
    except ValueError:
        raise status.bad_request(f"invalid {what}: {text!r}") from None
    if value < 0:
        raise status.bad_request(f"invalid {what}: {text!r}")
    return value


@dataclass(frozen=True)
class ObjectList:
    items: list[Obj]
    resource_version: str
    continue_token: str = ""
    remaining: int | None = None


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK, ERROR
    object: Obj
    revision: int = 0


@dataclass(frozen=True)
class Selection:
    labels: LabelSelector = EVERYTHING
    fields: FieldSelector = field(default_factory=FieldSelector)

    def matches(self, obj: Obj) -> bool:
        if not self.labels.empty and not self.labels.matches(obj.get("metadata", {}).get("labels")):
            return False
        return self.fields.empty or self.fields.matches(obj)


ALL = Selection()


def _encode_continue(revision: int, key: str) -> str:
    raw = json.dumps({"v": 1, "rv": revision, "start": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = json.loads(raw)
        return int(doc["rv"]), str(doc["start"])
    except Exception:
        raise status.bad_request("continue key is not valid: illegal base64 data or format") from None


class Registry:
    def __init__(
        self,
        store: storage.Backend,
        *,
        table: ResourceTable = TABLE,
        service_cidr: str = "10.43.0.0/16",
        node_port_range: tuple[int, int] = (30000, 32767),
        watch_buffer: int = WATCH_BUFFER,
        watch_slow_seconds: float = WATCH_SLOW_SECONDS,
    ) -> None:
        self.store = store
        self.watch_buffer = watch_buffer
        self.watch_slow_seconds = watch_slow_seconds
        self.table = table
        self.service_net = ipaddress.ip_network(service_cidr)
        self.node_port_range = node_port_range
        self._tasks: set[asyncio.Task[None]] = set()
        self._alloc_lock = asyncio.Lock()
        # key -> (mod_revision, decoded object) for read-only use by list and
        # watch serialisation: decoding JSON is most of a large list's cost.
        self._decoded: dict[str, tuple[int, Obj]] = {}
        self._decoded_prev: dict[str, tuple[int, Obj]] = {}
        # Called after every successful write (metrics, tests); never raises into us.
        self.on_write: list[Callable[[str, Resource], None]] = []

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Create the default namespaces and resume interrupted namespace deletions."""
        ns = self.table.get("namespaces")
        for name in DEFAULT_NAMESPACES:
            try:
                await self.create(ns, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            except status.ApiError as exc:
                if exc.code != 409:
                    raise
        for obj in (await self.list(ns)).items:
            if obj["metadata"].get("deletionTimestamp"):
                self._spawn(self._finish_namespace(obj["metadata"]["name"]))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def decode_shared(self, kv: storage.KeyValue) -> Obj:
        """A decoded object that callers must not mutate (cached per revision)."""
        return self._cached(self._decoded, kv)

    def decode_shared_prev(self, kv: storage.KeyValue) -> Obj:
        """Like decode_shared, for the previous value carried by watch events
        (a separate slot, so current and previous do not evict each other)."""
        return self._cached(self._decoded_prev, kv)

    @staticmethod
    def _cached(cache: dict[str, tuple[int, Obj]], kv: storage.KeyValue) -> Obj:
        hit = cache.get(kv.key)
        if hit is not None and hit[0] == kv.mod_revision:
            return hit[1]
        obj = decode(kv)
        if len(cache) >= _DECODE_CACHE_MAX:
            cache.clear()
        cache[kv.key] = (kv.mod_revision, obj)
        return obj

    def resource(self, plural: str, group: str = "") -> Resource:
        return self.table.get(plural, group)

    # --- reads -----------------------------------------------------------------

    async def get(self, res: Resource, namespace: str | None, name: str) -> Obj:
        kv = await self._get_kv(res, namespace, name)
        return decode(kv)

    async def _get_kv(self, res: Resource, namespace: str | None, name: str) -> storage.KeyValue:
        try:
            kv = await self.store.get(res.key(namespace, name))
        except storage.StorageError as exc:
            raise status.from_storage(exc, plural=res.plural, name=name, group=res.group) from None
        if kv is None:
            raise status.not_found(res.plural, name, res.group)
        return kv

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        selection: Selection = ALL,
        limit: int = 0,
        continue_token: str | None = None,
        resource_version: str | None = None,
        exact: bool = False,
        shared: bool = False,
    ) -> ObjectList:
        """List, consistent at one revision. With ``limit``, pages carry a
        continue token that pins the revision (410 once it is compacted).
        ``shared`` returns cached objects that the caller must not mutate."""
        load = self.decode_shared if shared else decode
        prefix = res.prefix(namespace)
        start_after = ""
        revision = 0
        if continue_token:
            revision, start_after = _decode_continue(continue_token)
            if not start_after.startswith(prefix):
                raise status.bad_request("continue key is not valid: it does not belong to this list")
        elif resource_version not in (None, "", "0"):
            wanted = _parse_rv(resource_version)
            if exact:
                revision = wanted  # served from history while it is kept (410 after compaction)
            elif wanted > await self.store.current_revision():
                # "Not older than" a revision we have not reached: upstream waits, then says this.
                raise status.ApiError(504, "Too large resource version", "Timeout",
                                      {"causes": [{"reason": "ResourceVersionTooLarge",
                                                   "message": f"Too large resource version: {wanted}"}],
                                       "retryAfterSeconds": 1})
        # Narrow a metadata.name field selector to one key (kubectl delete --wait does this).
        exact_name = selection.fields.exact("metadata.name")
        if exact_name is not None and (not res.namespaced or namespace):
            prefix_key = res.key(namespace, exact_name)
        else:
            prefix_key = ""
        items: list[Obj] = []
        more = False
        last_key = start_after
        try:
            while True:
                want = max(limit - len(items), 0) if limit else 0
                # Over-fetch a little when filtering, so selective lists take fewer rounds.
                batch = want * 2 if (want and selection is not ALL) else want
                if prefix_key:
                    kv = await self.store.get(prefix_key, revision=revision)
                    rev = revision or await self.store.current_revision()
                    result = storage.ListResult([kv] if kv and kv.key > start_after else [], rev, False)
                else:
                    result = await self.store.list(prefix, revision=revision, start_after=last_key, limit=batch)
                revision = result.revision
                for kv in result.items:
                    obj = load(kv)
                    last_key = kv.key
                    if selection is ALL or selection.matches(obj):
                        items.append(obj)
                        if limit and len(items) >= limit:
                            break
                if limit and len(items) >= limit:
                    more = result.more or kv is not result.items[-1]
                    break
                if not result.more:
                    break
        except storage.StorageError as exc:
            if isinstance(exc, storage.Compacted) and continue_token:
                raise status.gone("The provided continue parameter is too old to display a consistent list result. "
                                  "You can start a new list without the continue parameter.") from None
            raise status.from_storage(exc, plural=res.plural, group=res.group) from None
        token = _encode_continue(revision, last_key) if more else ""
        return ObjectList(items, str(revision), token)

    # --- create ----------------------------------------------------------------

    async def create(self, res: Resource, obj: Obj, *, namespace: str | None = None, dry_run: bool = False) -> Obj:
        if not isinstance(obj, dict):
            raise status.bad_request("the object must be a JSON object")
        self._check_type(res, obj)
        obj = copy.deepcopy(obj)
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise status.bad_request("metadata must be an object")
        if meta.get("resourceVersion"):
            raise status.bad_request("resourceVersion should not be set on objects to be created")
        if res.namespaced:
            body_ns = meta.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise status.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            namespace = namespace or body_ns or "default"
            meta["namespace"] = namespace
            await self._check_namespace_open(res, namespace, meta.get("name") or meta.get("generateName") or "")
        else:
            meta.pop("namespace", None)
            namespace = None
        generate = not meta.get("name") and meta.get("generateName")
        for key in ("uid", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        await self._default(res, obj, None)
        for attempt in range(_RETRIES if generate else 1):
            if generate:
                meta["name"] = meta["generateName"] + "".join(secrets.choice(_GENERATE_SUFFIX) for _ in range(5))
            causes = validation.validate(res, obj, None)
            if causes:
                raise status.invalid(res.kind, meta.get("name") or meta.get("generateName") or "", causes, res.group)
            if dry_run:
                if await self.store.get(res.key(namespace, meta["name"])) is not None:
                    raise status.already_exists(res.plural, meta["name"], res.group)
                return obj
            try:
                kv = await self.store.create(res.key(namespace, meta["name"]), encode(obj))
            except storage.KeyExists:
                if generate and attempt < _RETRIES - 1:
                    continue
                raise status.already_exists(res.plural, meta["name"], res.group) from None
            except storage.StorageError as exc:
                raise status.from_storage(exc, plural=res.plural, name=meta["name"], group=res.group) from None
            self._notify("create", res)
            meta["resourceVersion"] = str(kv.mod_revision)
            return obj
        raise AssertionError("unreachable")

    def _check_type(self, res: Resource, obj: Obj) -> None:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if kind and kind != res.kind:
            raise status.bad_request(f"the kind of the object ({kind}) does not match the resource ({res.plural}, expected kind {res.kind})")
        if api_version and api_version != res.api_version:
            raise status.bad_request(f"the API version in the data ({api_version}) does not match the expected API version ({res.api_version})")

    async def _check_namespace_open(self, res: Resource, namespace: str, name: str) -> None:
        ns = await self.store.get(self.table.get("namespaces").key(None, namespace))
        if ns is None:
            raise status.not_found("namespaces", namespace)
        nsobj = json.loads(ns.value)
        if nsobj.get("metadata", {}).get("deletionTimestamp"):
            qualified = f"{res.plural}.{res.group}" if res.group else res.plural
            raise status.forbidden(
                f'{qualified} "{name}" is forbidden: unable to create new content in namespace {namespace} '
                f"because it is being terminated", res.plural, name, res.group)

    # --- update ----------------------------------------------------------------

    async def update(
        self, res: Resource, namespace: str | None, name: str, obj: Obj, *, subresource: str | None = None, dry_run: bool = False
    ) -> Obj:
        """PUT: replace the object; a resourceVersion in the body is a precondition."""
        if not isinstance(obj, dict):
            raise status.bad_request("the object must be a JSON object")
        self._check_type(res, obj)
        meta = obj.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise status.bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if res.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise status.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        want_rv = _parse_rv(meta.get("resourceVersion"))
        for _ in range(_RETRIES):
            kv = await self._get_kv(res, namespace, name)
            if want_rv and want_rv != kv.mod_revision:
                raise status.conflict(res.plural, name, res.group)
            try:
                return await self._write_update(res, namespace, name, kv, copy.deepcopy(obj), subresource, dry_run)
            except status.ApiError as exc:
                if exc.reason == "Conflict" and not want_rv:
                    continue  # unconditional update raced another writer: re-read and retry
                raise
        raise status.conflict(res.plural, name, res.group)

    async def guaranteed_update(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        mutate: Callable[[Obj], Obj | None] | Callable[[Obj], Awaitable[Obj | None]],
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Read-modify-write with retry on conflict. ``mutate`` gets a private copy
        of the live object and returns the new one (None = no change)."""
        for _ in range(_RETRIES):
            kv = await self._get_kv(res, namespace, name)
            current = decode(kv)
            new = mutate(copy.deepcopy(current))
            if asyncio.iscoroutine(new):
                new = await new
            if new is None:
                return current
            if not isinstance(new, dict):
                raise status.bad_request("the patched object must be a JSON object")
            self._check_type(res, new)
            new_meta = new.get("metadata") or {}
            if new_meta.get("name", name) != name:
                raise status.bad_request(f"the name of the object ({new_meta.get('name')}) does not match the name on the URL ({name})")
            want_rv = _parse_rv(new_meta.get("resourceVersion"))
            if want_rv and want_rv != kv.mod_revision:
                # The mutation pinned an older version (a patch carrying resourceVersion).
                raise status.conflict(res.plural, name, res.group)
            try:
                return await self._write_update(res, namespace, name, kv, new, subresource, dry_run)
            except status.ApiError as exc:
                # Lost a race: re-read and mutate again. A resourceVersion the
                # caller pinned no longer matches then, and fails above.
                if exc.reason == "Conflict":
                    continue
                raise
        raise status.conflict(res.plural, name, res.group)

    async def _write_update(
        self, res: Resource, namespace: str | None, name: str, kv: storage.KeyValue, new: Obj, subresource: str | None, dry_run: bool
    ) -> Obj:
        old = decode(kv)
        old_meta = old["metadata"]
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        if subresource == "status":
            # Only status (and, as upstream, nothing of metadata but labels/annotations) changes.
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status", {})
            new, meta = merged, merged["metadata"]
        elif res.has_status and "status" in old:
            new["status"] = old["status"]
        elif res.has_status:
            new.pop("status", None)
        # Fields the client cannot change.
        meta["name"] = name
        if res.namespaced:
            meta["namespace"] = namespace
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta.pop("resourceVersion", None)
        meta.pop("managedFields", None)
        if "generateName" in old_meta and "generateName" not in meta:
            meta["generateName"] = old_meta["generateName"]
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        await self._default(res, new, old)
        if _spec_of(new) != _spec_of(old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        else:
            meta["generation"] = old_meta.get("generation", 1)
        causes = validation.validate(res, new, old, subresource=subresource)
        if causes:
            raise status.invalid(res.kind, name, causes, res.group)
        # A terminating object whose last finalizer went away is removed now.
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and self._finalizers_release(res, new):
            if dry_run:
                return new
            return await self._remove(res, namespace, name, kv.mod_revision)
        body = encode(new)
        if body == kv.value:
            return old  # a no-op write keeps the resourceVersion, as upstream
        if dry_run:
            meta["resourceVersion"] = str(kv.mod_revision)
            return new
        try:
            out = await self.store.update(kv.key, body, expected_revision=kv.mod_revision)
        except storage.StorageError as exc:
            raise status.from_storage(exc, plural=res.plural, name=name, group=res.group) from None
        self._notify("update", res)
        meta["resourceVersion"] = str(out.mod_revision)
        return new

    async def _default(self, res: Resource, obj: Obj, old: Obj | None) -> None:
        await defaults.apply_defaults(self, res, obj, old)

    def _finalizers_release(self, res: Resource, obj: Obj) -> bool:
        """Pods waiting on graceful termination stay until the kubelet deletes them."""
        if res.plural == "pods" and obj.get("spec", {}).get("nodeName"):
            return int(obj["metadata"].get("deletionGracePeriodSeconds") or 0) == 0
        return res.plural != "namespaces"

    # --- delete ----------------------------------------------------------------

    async def delete(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        *,
        grace_period_seconds: int | None = None,
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
        propagation: str | None = None,
    ) -> tuple[Obj, bool]:
        """Returns (object, removed). ``removed`` is False when deletion is now
        pending (finalizers, graceful pod termination, namespace cascade).

        ``propagation`` Orphan or Foreground adds the garbage collector's
        finalizer (``orphan`` / ``foregroundDeletion``), which holds the object
        until controllers/garbagecollector.py has orphaned or deleted its
        dependents; Background (the default) removes it now and the collector
        deletes the dependents afterwards."""
        gc_finalizer = GC_FINALIZERS.get(propagation or "")
        for _ in range(_RETRIES):
            kv = await self._get_kv(res, namespace, name)
            obj = decode(kv)
            meta = obj["metadata"]
            self._check_preconditions(res, name, meta, preconditions)
            if gc_finalizer and res.plural not in ("pods", "namespaces") and not meta.get("deletionTimestamp"):
                # Pods own nothing here; their finalizer would only race the kubelet's final delete.
                fins = [f for f in meta.get("finalizers") or [] if f not in GC_FINALIZERS.values()]
                meta["finalizers"] = [*fins, gc_finalizer]
            try:
                if res.plural == "namespaces":
                    return await self._delete_namespace(obj, kv, dry_run)
                grace = self._grace(res, obj, grace_period_seconds)
                if meta.get("finalizers") or grace:
                    if meta.get("deletionTimestamp") and (not grace or grace >= int(meta.get("deletionGracePeriodSeconds") or 0)):
                        if not meta.get("finalizers") and grace == 0:
                            if dry_run:
                                return obj, True
                            return await self._remove(res, namespace, name, kv.mod_revision), True
                        return obj, False  # already terminating; a longer grace never extends it
                    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=grace)
                    meta["deletionTimestamp"] = now_rfc3339(when)
                    meta["deletionGracePeriodSeconds"] = grace
                    if dry_run:
                        return obj, False
                    out = await self.store.update(kv.key, encode(obj), expected_revision=kv.mod_revision)
                    self._notify("update", res)
                    meta["resourceVersion"] = str(out.mod_revision)
                    return obj, False
                if dry_run:
                    return obj, True
                return await self._remove(res, namespace, name, kv.mod_revision), True
            except storage.Conflict:
                continue
            except status.ApiError as exc:
                # _remove lost a race with a concurrent write (a controller's status
                # update right after create): re-read and decide again, as update does.
                if exc.reason == "Conflict":
                    continue
                raise
            except storage.StorageError as exc:
                raise status.from_storage(exc, plural=res.plural, name=name, group=res.group) from None
        raise status.conflict(res.plural, name, res.group)

    def _check_preconditions(self, res: Resource, name: str, meta: Obj, pre: dict[str, Any] | None) -> None:
        if not pre:
            return
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise status.conflict(res.plural, name, res.group,
                                  f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise status.conflict(res.plural, name, res.group,
                                  f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                                  f"ResourceVersion in object meta: {meta.get('resourceVersion')}")

    def _grace(self, res: Resource, obj: Obj, requested: int | None) -> int:
        """Only pods bound to a node that is still running them get a grace period."""
        if res.plural != "pods":
            return 0
        spec = obj.get("spec", {})
        if not spec.get("nodeName") or obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        # Capped so that now + grace stays a datetime (int64 values overflowed: a 500,
        # and a pod that could never be deleted); ~68 years is "never" enough.
        if requested is not None:
            return min(max(int(requested), 0), MAX_GRACE_SECONDS)
        return min(int(spec.get("terminationGracePeriodSeconds", 30)), MAX_GRACE_SECONDS)

    async def _remove(self, res: Resource, namespace: str | None, name: str, expected: int) -> Obj:
        try:
            kv = await self.store.delete(res.key(namespace, name), expected_revision=expected)
        except storage.StorageError as exc:
            raise status.from_storage(exc, plural=res.plural, name=name, group=res.group) from None
        self._notify("delete", res)
        return decode(kv)

    async def _delete_namespace(self, obj: Obj, kv: storage.KeyValue, dry_run: bool) -> tuple[Obj, bool]:
        name = obj["metadata"]["name"]
        if name in PROTECTED_NAMESPACES:
            raise status.forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted', "namespaces", name)
        if dry_run:
            return obj, False
        if not obj["metadata"].get("deletionTimestamp"):
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            obj.setdefault("status", {})["phase"] = "Terminating"
            out = await self.store.update(kv.key, encode(obj), expected_revision=kv.mod_revision)
            self._notify("update", self.table.get("namespaces"))
            obj["metadata"]["resourceVersion"] = str(out.mod_revision)
            self._spawn(self._finish_namespace(name))
        return obj, False

    async def _finish_namespace(self, name: str) -> None:
        """Remove everything in a terminating namespace, then the namespace."""
        ns_res = self.table.get("namespaces")
        try:
            for res in self.table.resources:
                if not res.namespaced:
                    continue
                for _ in range(3):
                    listed = await self.store.list(res.prefix(name))
                    if not listed.items:
                        break
                    for kv in listed.items:
                        try:
                            await self.store.delete(kv.key)
                            self._notify("delete", res)
                        except storage.NotFound:
                            pass
            kv = await self.store.get(ns_res.key(None, name))
            if kv is not None:
                await self.store.delete(kv.key)
                self._notify("delete", ns_res)
            log.info("namespace deleted", extra=fields(namespace=name))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("namespace cleanup failed; it resumes at next start", extra=fields(namespace=name))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self, verb: str, res: Resource) -> None:
        for cb in self.on_write:
            try:
                cb(verb, res)
            except Exception:  # observers must never fail a write
                log.exception("write observer failed")

    # --- watch -----------------------------------------------------------------

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        selection: Selection = ALL,
        send_initial: bool | None = None,
    ) -> "WatchStream":
        """Start a watch. RV unset or "0" sends the current objects as ADDED first."""
        initial: list[WatchEvent] = []
        if send_initial is None:
            send_initial = resource_version in (None, "", "0")
        if send_initial:
            listed = await self.list(res, namespace, selection=selection)
            start = int(listed.resource_version)
            initial = [WatchEvent("ADDED", obj, int(obj["metadata"]["resourceVersion"])) for obj in listed.items]
        elif resource_version in (None, "", "0"):
            start = await self.store.current_revision()  # sendInitialEvents=false: from now on
        else:
            start = _parse_rv(resource_version)
        prefix = res.prefix(namespace)
        try:
            watcher = self.store.watch(prefix, start_revision=start)
        except storage.Compacted as exc:
            return WatchStream.failed(status.gone(f"too old resource version: {exc.requested} ({exc.compact_revision + 1})"), start)
        return WatchStream(watcher, initial, start, selection, decoder=self.decode_shared,
                           prev_decoder=self.decode_shared_prev, buffer=self.watch_buffer,
                           slow_seconds=self.watch_slow_seconds, name=prefix)


class WatchStream:
    """Decoded, filtered watch events, pulled with a timeout so the HTTP layer
    can interleave bookmarks and end at ``timeoutSeconds``.

    Event objects are decoded once per revision and shared by every watcher
    (a pod change seen by fifty node agents is parsed once): do not mutate them.

    Events from storage wait in a buffer of at most ``buffer`` events; while
    it is full the pump waits for the client (back-pressure, so a replay of
    history larger than the buffer still flows to a reading client). A client
    that leaves it full for ``slow_seconds`` is too slow: the stream drops what
    it buffered, closes its storage watcher and ends once the initial events
    are out (the client resumes from the last resourceVersion it received;
    ending amid the initial list would lose the objects not yet sent).
    ``ended`` says why a stream ended.
    """

    def __init__(self, watcher: storage.Watcher | None, initial: list[WatchEvent], start: int, selection: Selection,
                 *, decoder: Callable[[storage.KeyValue], Obj] = decode,
                 prev_decoder: Callable[[storage.KeyValue], Obj] = decode,
                 buffer: int = WATCH_BUFFER, slow_seconds: float = WATCH_SLOW_SECONDS, name: str = "") -> None:
        self._decode = decoder
        self._decode_prev = prev_decoder
        self._watcher = watcher
        self.name = name  # the watched key prefix, for logs
        # The initial list is already in memory; only live events are bounded.
        self._initial: deque[WatchEvent] = deque(initial)
        self._live: deque[WatchEvent] = deque()
        self.buffer = max(1, buffer)
        self.slow_seconds = slow_seconds
        self._wakeup = asyncio.Event()  # set when events or the end arrive
        self._room = asyncio.Event()  # set when the client takes a live event
        self.revision = start  # the newest revision delivered (bookmarks carry it)
        self._selection = selection
        self.ended: str | None = None if watcher is not None else "failed"
        self.closed = False
        self._pump: asyncio.Task[None] | None = asyncio.ensure_future(self._run()) if watcher is not None else None

    @classmethod
    def failed(cls, error: status.ApiError, start: int) -> "WatchStream":
        return cls(None, [WatchEvent("ERROR", error.status())], start, ALL)

    @property
    def pending(self) -> int:
        """Live events buffered for the client."""
        return len(self._live)

    @property
    def initial_sent(self) -> bool:
        return not self._initial

    async def _run(self) -> None:
        assert self._watcher is not None
        reason = "closed"
        try:
            async for batch in self._watcher:
                for ev in batch:
                    out = self._convert(ev)
                    if out is None:
                        continue
                    while len(self._live) >= self.buffer:
                        self._wakeup.set()
                        self._room.clear()
                        if not await wait_event(self._room, self.slow_seconds):
                            await self._too_slow()
                            return
                    self._live.append(out)
                self._wakeup.set()
            reason = getattr(self._watcher, "ended", None) or "closed"
        except storage.Compacted as exc:
            err = status.gone(f"too old resource version: {exc.requested} ({exc.compact_revision + 1})")
            self._live.append(WatchEvent("ERROR", err.status()))
            reason = "compacted"
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("watch failed", extra=fields(prefix=self.name))
            reason = "error"
        self._finish(reason)

    async def _too_slow(self) -> None:
        dropped = len(self._live)
        self._live.clear()
        assert self._watcher is not None
        try:
            await self._watcher.close()
        except Exception:
            log.debug("closing a storage watcher failed", exc_info=True)
        log.warning("watch client too slow, ending its stream; it re-watches from its last resourceVersion",
                    extra=fields(prefix=self.name, buffered=dropped, full_seconds=self.slow_seconds,
                                 delivered_revision=self.revision))
        self._finish("slow", logged=True)

    def _finish(self, reason: str, *, logged: bool = False) -> None:
        self.ended = reason
        if not logged:
            log.info("watch stream ended", extra=fields(prefix=self.name, reason=reason, delivered_revision=self.revision))
        self._wakeup.set()

    def _convert(self, ev: storage.Event) -> WatchEvent | None:
        obj = self._decode(ev.kv)
        rev = ev.kv.mod_revision
        sel = self._selection
        if ev.type == "CREATE":
            return WatchEvent("ADDED", obj, rev) if sel is ALL or sel.matches(obj) else None
        if ev.type == "DELETE":
            return WatchEvent("DELETED", obj, rev) if sel is ALL or sel.matches(obj) else None
        if sel is ALL:
            return WatchEvent("MODIFIED", obj, rev)
        now = sel.matches(obj)
        before = ev.prev is not None and sel.matches(self._decode_prev(ev.prev))
        if now and before:
            return WatchEvent("MODIFIED", obj, rev)
        if now:
            return WatchEvent("ADDED", obj, rev)
        if before:
            return WatchEvent("DELETED", obj, rev)
        return None

    async def next(self, timeout: float | None = None) -> WatchEvent | None:
        """The next event; None at the end of the stream. Raises TimeoutError."""
        while not self.closed:
            if self._initial:
                ev = self._initial.popleft()
            elif self._live:
                ev = self._live.popleft()
                self._room.set()
            elif self.ended is not None:
                self.closed = True
                return None
            else:
                self._wakeup.clear()
                if not await wait_event(self._wakeup, timeout):
                    raise TimeoutError
                continue
            if ev.revision > self.revision:
                self.revision = ev.revision
            return ev
        return None

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[WatchEvent]:
        while (ev := await self.next()) is not None:
            yield ev

    async def close(self) -> None:
        self.closed = True
        if self._pump is not None:
            self._pump.cancel()
            try:
                await self._pump
            except BaseException:
                pass
        if self._watcher is not None:
            try:
                await self._watcher.close()
            except Exception:
                pass


def _spec_of(obj: Obj) -> Obj:
    """What counts toward ``generation``: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
