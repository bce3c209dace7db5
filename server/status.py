"""API errors as ``Status`` objects, and the one place storage errors map to them.

Handlers raise :class:`ApiError`; the router turns it into the JSON body
kubectl parses (reason and code drive its messages and retries).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .storage import base as storage

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(frozen=True)
class Cause:
    field: str
    message: str
    type: str = "FieldValueInvalid"

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.type, "message": self.message, "field": self.field}


@dataclass
class ApiError(Exception):
    code: int
    message: str
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if not self.reason:
            self.reason = REASONS.get(self.code, "Unknown")

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            doc["details"] = self.details
        return doc


def _details(kind: str, name: str | None, group: str = "") -> dict[str, Any]:
    details: dict[str, Any] = {"kind": kind}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return details


def _qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, name: str, group: str = "") -> ApiError:
    return ApiError(404, f'{_qualified(plural, group)} "{name}" not found', "NotFound", _details(plural, name, group))


def already_exists(plural: str, name: str, group: str = "") -> ApiError:
    return ApiError(409, f'{_qualified(plural, group)} "{name}" already exists', "AlreadyExists", _details(plural, name, group))


def conflict(plural: str, name: str, group: str = "", why: str = "the object has been modified; please apply your changes to the latest version and try again") -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {_qualified(plural, group)} "{name}": {why}', "Conflict", _details(plural, name, group))


def invalid(kind: str, name: str, causes: list[Cause], group: str = "") -> ApiError:
    summary = ", ".join(f"{c.field}: {c.message}" for c in causes)
    details = _details(kind, name, group)
    details["causes"] = [c.to_dict() for c in causes]
    shown = f'{kind}.{group} "{name}"' if group else f'{kind} "{name}"'
    return ApiError(422, f"{shown} is invalid: {summary}", "Invalid", details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def forbidden(message: str, plural: str = "", name: str = "", group: str = "") -> ApiError:
    return ApiError(403, message, "Forbidden", _details(plural, name, group) if plural else {})


def gone(message: str = "too old resource version") -> ApiError:
    return ApiError(410, message, "Expired")


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> ApiError:
    return ApiError(405, message, "MethodNotAllowed")


def from_storage(exc: storage.StorageError, *, plural: str, name: str = "", group: str = "") -> ApiError:
    """The single mapping of storage errors to API errors."""
    if isinstance(exc, storage.KeyExists):
        return already_exists(plural, name, group)
    if isinstance(exc, storage.NotFound):
        return not_found(plural, name, group)
    if isinstance(exc, storage.Conflict):
        return conflict(plural, name, group)
    if isinstance(exc, storage.Compacted):
        return gone(f"too old resource version: {exc.requested} ({exc.compact_revision + 1})")
    if isinstance(exc, storage.FutureRevision):
        return ApiError(504, "Too large resource version", "Timeout")
    return ApiError(500, f"storage error: {exc}", "InternalError")


def success(details: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        doc["details"] = details
    return doc
