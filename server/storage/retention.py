"""Which revision to compact to: a pure decision, tested without a database.

History is kept when EITHER rule wants it: the newest ``keep_revisions``
revisions, and every revision younger than ``keep_seconds``. The log stores no
timestamps, so the compactor records ``(time, revision)`` marks as it runs; a
mark says "every revision <= rev existed at time ts". After a restart there is
no old mark yet, so nothing is compacted until ``keep_seconds`` have passed,
which errs on the side of keeping history.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    keep_revisions: int = 1000
    keep_seconds: float = 300.0


def compaction_target(
    *, current: int, compact_revision: int, marks: Sequence[tuple[float, int]], now: float, retention: Retention
) -> int:
    """The revision to compact to, or ``compact_revision`` when nothing is due."""
    by_count = current - retention.keep_revisions
    old_enough = [rev for ts, rev in marks if ts <= now - retention.keep_seconds]
    by_age = max(old_enough, default=0)
    target = min(by_count, by_age, current)
    return target if target > compact_revision else compact_revision


def prune_marks(marks: list[tuple[float, int]], *, now: float, retention: Retention) -> list[tuple[float, int]]:
    """Drop marks no longer needed: keep the newest old-enough one and all younger."""
    cutoff = now - retention.keep_seconds
    old = [m for m in marks if m[0] <= cutoff]
    young = [m for m in marks if m[0] > cutoff]
    return ([max(old, key=lambda m: m[1])] if old else []) + young
