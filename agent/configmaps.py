"""ConfigMaps and Secrets for container env and volumes, read through the agent's API client.

The PodManager asks for an object each time a container that references one
starts (kubelet's "Get" strategy: no cache, so a retry after the object was
created sees it). A node may read a ConfigMap or Secret only while one of its
pods references it, and only one object per request (the server's
NodeAuthorizer rule), so the agent asks as the node with single-object GETs
-- never a list or watch -- and a 403 is reported, not retried around. Volumes use
:meth:`ApiObjectData.get_files` (bytes, ``binaryData`` included); the
PodManager re-reads them every ``volume_refresh_interval`` (10 s) for updates.
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

    async def _object(self, namespace: str, name: str) -> dict | None:
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
        return obj if isinstance(obj, dict) else {}

    async def get_files(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        """Volume contents (``volumes.ObjectFiles``): a ConfigMap's ``data``
        (UTF-8) and ``binaryData``, or a Secret's ``data``, base64-decoded."""
        what = f"{self.kind.word} {namespace}/{name}"
        obj = await self._object(namespace, name)
        if obj is None:
            return None
        encoded = {"binaryData"} if self.kind is not SECRET else {"data"}
        files: dict[str, bytes] = {}
        for section in ("data", "binaryData") if self.kind is not SECRET else ("data",):
            values = obj.get(section)
            for k, v in (values.items() if isinstance(values, dict) else ()):
                if section in encoded:
                    files.setdefault(str(k), _decode(what, str(k), v).encode("utf-8", "surrogateescape"))
                else:
                    files.setdefault(str(k), str(v).encode())
        return files

    async def get(self, namespace: str, name: str) -> Mapping[str, str] | None:
        what = f"{self.kind.word} {namespace}/{name}"
        obj = await self._object(namespace, name)
        if obj is None:
            return None
        data = obj.get("data")
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
