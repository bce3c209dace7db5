"""RFC 3339 timestamps as the API stores them (``2026-11-27T06:00:00Z``) <-> epoch seconds."""
from __future__ import annotations

import datetime as dt
from typing import Any


def parse_time(text: Any) -> float | None:
    """RFC 3339 (with or without fractional seconds) -> epoch seconds; None if absent or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def format_time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
