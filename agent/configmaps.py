"""ConfigMaps for container env, read through the agent's API client.

The PodManager asks for a ConfigMap each time a container that references one
starts (kubelet's "Get" strategy: no cache, so a retry after the ConfigMap was
created sees it). Nodes may read ConfigMaps; Secrets they may not.
"""
from __future__ import annotations

from typing import Mapping
from urllib.parse import quote

from .client import ApiClient, ApiError, ApiUnavailable
from .runtime.envsources import ConfigMapLookupError


class ApiConfigMaps:
    """Implements :class:`edgectl.agent.runtime.envsources.ConfigMapSource`."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    async def get(self, namespace: str, name: str) -> Mapping[str, str] | None:
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/configmaps/{quote(name, safe='')}"
        try:
            obj = await self.client.get(path)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise ConfigMapLookupError(f"reading configmap {namespace}/{name}: {exc}") from None
        except ApiUnavailable as exc:
            raise ConfigMapLookupError(f"reading configmap {namespace}/{name}: {exc}") from None
        data = obj.get("data") if isinstance(obj, dict) else None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
