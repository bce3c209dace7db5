"""Authentication helpers for the standalone tunnel server and tests.

In the product the API server authenticates agents (node client certificate
-> node name) and admins, then calls ``TunnelServer.accept``/``stats_handler``.
Until then, and for tests, a shared bootstrap token admits agents: the agent
sends ``Authorization: Bearer <token>`` and its name in ``X-Edge-Node``.
"""
from __future__ import annotations

import hmac
import re

from ..httpd import Handler, Request, Response, plain_error

NODE_HEADER = "X-Edge-Node"
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def valid_node_name(name: str) -> bool:
    return bool(_NODE_NAME.match(name))


class BootstrapTokenAuth:
    """Admit agents holding the bootstrap token; the node name comes from a header."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("bootstrap token must not be empty")
        self._token = token.encode()

    def authenticate(self, request: Request) -> str | None:
        """The node name, or None when the token is missing or wrong."""
        token = bearer(request)
        if token is None or not hmac.compare_digest(token.encode(), self._token):
            return None
        node = request.headers.get(NODE_HEADER.lower()) or ""
        return node if valid_node_name(node) else None


def require_token(token: str, handler: Handler) -> Handler:
    """Wrap an admin handler (e.g. ``stats_handler``) with a bearer-token check."""
    expected = token.encode()

    async def guarded(request: Request) -> Response:
        got = bearer(request)
        if got is None or not hmac.compare_digest(got.encode(), expected):
            return plain_error(401, "unauthorized: admin token required")
        return await handler(request)

    return guarded
