"""Manifest auto-deploy, as k3s does it: files in ``<data-dir>/manifests/`` are
applied at start and again whenever their content changes.

- ``*.yaml``, ``*.yml`` and ``*.json``, found recursively; dotfiles are skipped.
- ``foo.yaml.skip`` next to ``foo.yaml`` disables it.
- A file is re-applied only when its sha256 changes (checked every
  ``interval`` seconds; mtime and size gate the hashing).
- Apply creates missing objects and overwrites the fields a file sets on
  existing ones (labels and annotations are merged, status is left alone).
  Objects are marked with the ``edgectl.io/manifest`` annotation; an object
  that disappears from its file is deleted on the next apply of that file
  (within one server run; after a restart the old contents are not known).
- A bad file (syntax, unknown kind, invalid object) is logged with the reason
  and never stops the others or the server; it is retried when it changes, and
  objects that failed for a transient reason are retried every scan.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgectl.log import fields

from .bodyshape import BodyShapeError, check_shape
from .registry import Registry
from .resources import Resource
from .status import ApiError

log = logging.getLogger(__name__)
Obj = dict[str, Any]

SUFFIXES = (".yaml", ".yml", ".json")
ANNOTATION = "edgectl.io/manifest"
MAX_FILE_BYTES = 4 << 20
SCAN_INTERVAL = 15.0


class ManifestError(Exception):
    """A file that cannot be applied as written (the message names the problem)."""


def discover(directory: Path) -> list[Path]:
    """Manifest files under ``directory`` in a stable order, minus dotfiles and skipped ones."""
    if not directory.is_dir():
        return []
    out = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() not in SUFFIXES or not path.is_file():
            continue
        if path.with_name(path.name + ".skip").exists():
            continue
        out.append(path)
    return out


def parse_manifest(data: bytes, *, name: str) -> list[Obj]:
    """Every object in a file: YAML documents (JSON is accepted as YAML too),
    with ``kind: List`` expanded. Raises ManifestError naming what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        if name.endswith(".json"):
            docs: list[Any] = [json.loads(text)]
        else:
            docs = list(yaml.safe_load_all(text))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"{name}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ManifestError(f"{name}: nested too deeply to be a Kubernetes object") from None
    objects: list[Obj] = []
    for i, doc in enumerate(docs):
        if doc is None:
            continue  # empty document (a trailing ---)
        try:  # the same bounds as API bodies: no recursive aliases, alias bombs or absurd depth
            check_shape(doc, body_size=len(data))
        except BodyShapeError as exc:
            raise ManifestError(f"{name}: document {i + 1}: {exc}") from None
        if not isinstance(doc, dict):
            raise ManifestError(f"{name}: document {i + 1} is a {type(doc).__name__}, not an object")
        items = doc.get("items") if str(doc.get("kind", "")).endswith("List") else None
        for obj in items if isinstance(items, list) else [doc]:
            if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
                raise ManifestError(f"{name}: document {i + 1} has no apiVersion/kind")
            if not isinstance(obj.get("metadata"), dict) or obj["metadata"].get("name") in (None, ""):
                raise ManifestError(f"{name}: {obj['kind']} in document {i + 1} has no metadata.name")
            if not isinstance(obj["metadata"]["name"], str):
                # e.g. `name: off` or `name: 0123` that YAML read as a bool or number
                raise ManifestError(f"{name}: {obj['kind']} in document {i + 1}: metadata.name"
                                    f" {obj['metadata']['name']!r} is not a string; quote it")
            objects.append(obj)
    # Namespaces first, so the rest of the file can live in them.
    return sorted(objects, key=lambda o: 0 if o["kind"] == "Namespace" else 1)


def merged(live: Obj, desired: Obj) -> Obj | None:
    """``live`` with every field the manifest sets, or None if nothing differs."""
    out = copy.deepcopy(live)
    for key, value in desired.items():
        if key in ("apiVersion", "kind", "status"):
            continue
        if key == "metadata":
            meta = out.setdefault("metadata", {})
            for sub in ("labels", "annotations"):
                if value.get(sub):
                    meta[sub] = {**(meta.get(sub) or {}), **value[sub]}
            for sub in ("finalizers", "ownerReferences"):
                if sub in value:
                    meta[sub] = value[sub]
            continue
        out[key] = copy.deepcopy(value)
    return None if out == live else out


@dataclass
class _FileState:
    signature: tuple[int, int] = (0, 0)  # (mtime_ns, size): cheap change check
    checksum: str = ""
    applied: bool = False  # every object in this checksum went in
    objects: set[tuple[str, str, str | None, str]] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class ScanResult:
    applied: list[str]
    failed: list[str]
    unchanged: list[str]


class ManifestDeployer:
    def __init__(self, registry: Registry, directory: Path, *, interval: float = SCAN_INTERVAL) -> None:
        self.registry = registry
        self.directory = Path(directory)
        self.interval = interval
        self._files: dict[Path, _FileState] = {}

    async def run(self) -> None:
        """Apply now, then re-scan every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.scan_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let a surprise stop auto-deploy
                log.exception("manifest scan failed", extra=fields(directory=str(self.directory)))
            await asyncio.sleep(self.interval)

    async def scan_once(self) -> ScanResult:
        applied, failed, unchanged = [], [], []
        paths = await asyncio.to_thread(discover, self.directory)
        for path in paths:
            name = str(path.relative_to(self.directory))
            state = self._files.setdefault(path, _FileState())
            try:
                outcome = await self._scan_file(path, name, state)
            except Exception as exc:  # a bug or an I/O error on one file
                log.error("manifest not applied", extra=fields(file=name, error=str(exc) or repr(exc)))
                outcome = "failed"
            {"applied": applied, "failed": failed, "unchanged": unchanged}[outcome].append(name)
        for gone in set(self._files) - set(paths):
            del self._files[gone]  # deleting a file does not delete its objects (as k3s)
        return ScanResult(applied, failed, unchanged)

    async def _scan_file(self, path: Path, name: str, state: _FileState) -> str:
        st = path.stat()
        signature = (st.st_mtime_ns, st.st_size)
        if signature == state.signature and state.applied:
            return "unchanged"
        if st.st_size > MAX_FILE_BYTES:
            raise ManifestError(f"{name}: {st.st_size} bytes is over the {MAX_FILE_BYTES}-byte limit")
        data = await asyncio.to_thread(path.read_bytes)
        checksum = hashlib.sha256(data).hexdigest()
        first_try = checksum != state.checksum
        state.signature = signature
        if not first_try and state.applied:
            return "unchanged"  # touched, same content
        state.checksum = checksum
        try:
            objects = parse_manifest(data, name=name)
        except ManifestError as exc:
            state.applied = True  # permanent until the file changes: do not retry or re-log
            log.error("manifest invalid", extra=fields(file=name, error=str(exc)))
            return "failed"
        ok, done = await self._apply_all(name, objects, log_errors=first_try)
        if ok:
            await self._prune(name, state.objects - done)
            state.objects = done
        else:
            state.objects |= done
        state.applied = ok
        if ok:
            log.info("manifest applied", extra=fields(file=name, objects=len(objects), sha256=checksum[:12]))
        return "applied" if ok else "failed"

    async def _apply_all(self, name: str, objects: list[Obj], *, log_errors: bool) -> tuple[bool, set[tuple[str, str, str | None, str]]]:
        ok = True
        done: set[tuple[str, str, str | None, str]] = set()
        for obj in objects:
            ident = "/".join(filter(None, (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])))
            try:
                res, ns = self._resource(obj)
                await self._apply_one(res, ns, obj, name)
                done.add((res.plural, res.group, ns, obj["metadata"]["name"]))
            except (ApiError, ManifestError) as exc:
                ok = False
                level = logging.ERROR if log_errors else logging.DEBUG
                log.log(level, "manifest object not applied", extra=fields(
                    file=name, object=ident, error=str(exc), reason=getattr(exc, "reason", "Invalid")))
        return ok, done

    def _resource(self, obj: Obj) -> tuple[Resource, str | None]:
        res = self.registry.table.by_kind(str(obj["apiVersion"]), str(obj["kind"]))
        if res is None:
            raise ManifestError(f"unknown kind {obj['kind']} in {obj['apiVersion']}")
        ns = (obj["metadata"].get("namespace") or "default") if res.namespaced else None
        return res, ns

    async def _apply_one(self, res: Resource, ns: str | None, obj: Obj, name: str) -> None:
        desired = copy.deepcopy(obj)
        meta = desired["metadata"]
        meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION: name}
        if res.namespaced:
            meta["namespace"] = ns
        try:
            await self.registry.guaranteed_update(res, ns, meta["name"], lambda live: merged(live, desired))
        except ApiError as exc:
            if exc.code != 404:
                raise
            await self.registry.create(res, desired, namespace=ns)

    async def _prune(self, name: str, removed: set[tuple[str, str, str | None, str]]) -> None:
        for plural, group, ns, obj_name in sorted(removed, key=str):
            res = self.registry.resource(plural, group)
            try:
                live = await self.registry.get(res, ns, obj_name)
                if (live["metadata"].get("annotations") or {}).get(ANNOTATION) != name:
                    continue  # someone else owns it now
                await self.registry.delete(res, ns, obj_name)
                log.info("manifest object pruned", extra=fields(file=name, object=f"{plural}/{obj_name}"))
            except ApiError as exc:
                if exc.code != 404:
                    log.warning("manifest prune failed", extra=fields(file=name, object=obj_name, error=str(exc)))

