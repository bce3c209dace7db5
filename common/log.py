"""Structured logging: one line per event, with a level and key=value fields.

Use ``log.info("tunnel connected", extra=fields(node="a", rtt_ms=3))``; the
fields render as ``key=value`` in text mode and as keys in JSON mode.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_FIELDS = "edgectl_fields"


def fields(**kv: Any) -> dict[str, Any]:
    """Wrap key/value pairs for the ``extra=`` argument of a log call."""
    return {_FIELDS: kv}


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "='):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{ts}.{int(record.msecs):03d}Z {record.levelname:<5} {record.name}: {record.getMessage()}"
        for key, value in getattr(record, _FIELDS, {}).items():
            line += f" {key}={_quote(value)}"
        if record.exc_info:
            line += " error=" + _quote(repr(record.exc_info[1]))
        return line


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            doc["error"] = repr(record.exc_info[1])
        return json.dumps(doc, default=str)


def setup(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger once for a process (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
