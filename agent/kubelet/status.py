"""Kubernetes ``Status`` error responses, the shape kubectl prints."""
from __future__ import annotations

from edgectl.httpd import Response, json_response

REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "Timeout",
}


def status_response(code: int, message: str) -> Response:
    return json_response(code, {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": REASONS.get(code, "Unknown"), "code": code,
    })
