"""ConfigMaps and Secrets for container env, read through the agent's API client.

The PodManager asks for an object each time a container that references one
starts (kubelet's "Get" strategy: no cache, so a retry after the object was
created sees it). Nodes may read ConfigMaps; a Secret only while one of the
node's pods references it (the server's NodeAuthorizer rule), so the agent
asks as the node and a 403 is reported, not retried around.
"""
from __future__ import annotations

import base64
import binascii
from typing import Mapping
from urllib.parse import quote

from .client import ApiClient, ApiError, ApiUnavailable
from .runtime.envsources import CONFIGMAP, SECRET, ConfigMapLookupError, DataKind


class ApiObjectData:
    """Implements :class:`edgectl.agent.runtime.envsources.ConfigMapSource` for one kind."""

    def __init__(self, client: ApiClient, *, kind: DataKind) -> None:
        self.client = client
        self.kind = kind

    async def get(self, namespace: str, name: str) -> Mapping[str, str] | None:
        what = f"{self.kind.word} {namespace}/{name}"
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/{self.kind.word}s/{quote(name, safe='')}"
        try:
            obj = await self.client.get(path)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise ConfigMapLookupError(f"reading {what}: {exc}") from None
        except ApiUnavailable as exc:
            raise ConfigMapLookupError(f"reading {what}: {exc}") from None
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(data, dict):
            return {}
        if self.kind is not SECRET:
            return {str(k): str(v) for k, v in data.items()}
        return {str(k): _decode(what, str(k), v) for k, v in data.items()}


def _decode(what: str, key: str, value: object) -> str:
    """Secret data is base64 on the wire; surrogateescape keeps non-UTF-8
    bytes intact when the value reaches a process environment."""
    try:
        return base64.b64decode(str(value), validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        raise ConfigMapLookupError(f"reading {what}: data[{key!r}] is not base64") from None


class ApiConfigMaps(ApiObjectData):
    def __init__(self, client: ApiClient) -> None:
        super().__init__(client, kind=CONFIGMAP)


class ApiSecrets(ApiObjectData):
    def __init__(self, client: ApiClient) -> None:
        super().__init__(client, kind=SECRET)
