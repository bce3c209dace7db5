"""Discovery documents (legacy format), /version, and a stub OpenAPI.

kubectl asks for aggregated discovery first; answering with plain JSON makes it
parse the legacy ``APIVersions``/``APIGroupList`` and fetch each group-version.

The OpenAPI stub exists only so ``kubectl apply``/``create`` with the default
``--validate=strict`` find out that the server validates fields itself
(``fieldValidation`` on PATCH). ``kubectl explain`` needs real schemas; we do
not serve them.
"""
from __future__ import annotations

import hashlib
import json
import platform
from typing import Any

from edgectl import __version__

from .resources import SUBRESOURCE_GROUP_VERSION, SUBRESOURCE_KIND, SUBRESOURCE_VERBS, Resource, ResourceTable

KUBE_VERSION = (1, 31, 0)  # the API level we emulate; kubectl warns only beyond +-1 minor of skew


def version_info() -> dict[str, str]:
    major, minor, patch = KUBE_VERSION
    return {
        "major": str(major),
        "minor": str(minor),
        "gitVersion": f"v{major}.{minor}.{patch}+edgectl-{__version__}",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": f"python{platform.python_version()}",
        "compiler": "cpython",
        "platform": f"linux/{platform.machine().replace('x86_64', 'amd64').replace('aarch64', 'arm64')}",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def api_groups(table: ResourceTable) -> dict[str, Any]:
    groups: dict[str, list[str]] = {}
    for res in table.resources:
        if res.group:
            versions = groups.setdefault(res.group, [])
            if res.version not in versions:
                versions.append(res.version)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g, v) for g, v in groups.items()]}


def api_group(table: ResourceTable, group: str) -> dict[str, Any] | None:
    versions = [r.version for r in table.resources if r.group == group]
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, list(dict.fromkeys(versions)))}


def _entry(res: Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": res.plural,
        "singularName": res.singular,
        "namespaced": res.namespaced,
        "kind": res.kind,
        "verbs": list(res.verbs),
        "storageVersionHash": hashlib.sha256(f"{res.api_version}/{res.kind}".encode()).digest()[:8].hex(),
    }
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    return entry


def resource_list(table: ResourceTable, group_version: str) -> dict[str, Any] | None:
    resources = table.group_versions().get(group_version)
    if resources is None:
        return None
    out = []
    for res in resources:
        out.append(_entry(res))
        for sub in res.subresources:
            entry = {
                "name": f"{res.plural}/{sub}",
                "singularName": "",
                "namespaced": res.namespaced,
                "kind": SUBRESOURCE_KIND.get(sub, res.kind),
                "verbs": list(SUBRESOURCE_VERBS.get(sub, ("get",))),
            }
            if sub in SUBRESOURCE_GROUP_VERSION:
                entry["group"], entry["version"] = SUBRESOURCE_GROUP_VERSION[sub]
            out.append(entry)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": out}


# --- OpenAPI v3 stub -------------------------------------------------------------------


def _openapi_path(table: ResourceTable, group_version: str) -> str:
    return "api/v1" if group_version == "v1" else f"apis/{group_version}"


def openapi_index(table: ResourceTable) -> dict[str, Any]:
    paths = {}
    for gv in table.group_versions():
        doc = openapi_document(table, gv)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16].upper()
        rel = _openapi_path(table, gv)
        paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={digest}"}
    return {"paths": paths}


def openapi_document(table: ResourceTable, group_version: str) -> dict[str, Any] | None:
    """Per group-version: one PATCH operation per resource that declares the
    ``fieldValidation`` parameter and the GVK. That is all kubectl's query-param
    verifier reads; its schema lookups then find nothing and fall back to the
    built-in types."""
    resources = table.group_versions().get(group_version)
    if resources is None:
        return None
    paths: dict[str, Any] = {}
    for res in resources:
        gvk = {"group": res.group, "version": res.version, "kind": res.kind}
        patch = {
            "operationId": f"patch{res.kind}",
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
            ],
            "requestBody": {"content": {
                "application/json-patch+json": {"schema": {"type": "object"}},
                "application/merge-patch+json": {"schema": {"type": "object"}},
            }},
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
        }
        post = {
            "operationId": f"create{res.kind}",
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
            ],
            "responses": {"201": {"description": "Created"}},
            "x-kubernetes-action": "post",
            "x-kubernetes-group-version-kind": gvk,
        }
        base = "/" + _openapi_path(table, group_version)
        coll = f"{base}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{base}/{res.plural}"
        paths[coll] = {"post": post}
        paths[f"{coll}/{{name}}"] = {"patch": patch, "put": dict(post, operationId=f"replace{res.kind}", **{"x-kubernetes-action": "put"})}
    return {
        "openapi": "3.0.0",
        "info": {"title": "edgectl", "version": "v" + ".".join(map(str, KUBE_VERSION))},
        "paths": paths,
        "components": {"schemas": {}},
    }
