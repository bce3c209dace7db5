"""Reconnect delays: exponential backoff with full jitter (AWS architecture blog).

Full jitter spreads a fleet of agents that lost the same server uniformly over
[0, cap], which is what prevents reconnect storms after a server restart.
"""
from __future__ import annotations

import random

BASE = 0.5
CAP = 30.0


def backoff_delay(attempt: int, *, base: float = BASE, cap: float = CAP, rng: random.Random | None = None) -> float:
    """Delay before reconnect attempt number ``attempt`` (0-based)."""
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return (rng or random).uniform(0.0, ceiling)
