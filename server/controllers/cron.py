"""Standard 5-field cron schedules, as CronJob's ``spec.schedule`` takes them.

Pure: ``parse(text)`` -> ``Schedule`` (or ``CronError`` with a message that
fits after ``spec.schedule: Invalid value: "<text>": ``), and
``Schedule.next_after(when, tz)`` -> the first fire time strictly after
``when``. The syntax is what upstream accepts (robfig/cron's standard parser):
``*``, ``?`` (day fields), ``a``, ``a-b``, ``*/n``, ``a-b/n``, ``a/n`` (from a to
the field's end), comma lists, month and weekday names (JAN, MON; case
insensitive), and the macros @yearly/@annually, @monthly, @weekly,
@daily/@midnight and @hourly. Day-of-month and day-of-week combine as in cron:
if either starts with ``*`` or ``?`` both must match, otherwise either may.

Time zones are walked in wall-clock time: a time that does not exist (the
spring-forward gap) is skipped, and one that happens twice (fall back) fires
twice, which is what upstream's scheduler does.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

MONTHS = {n: i + 1 for i, n in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"))}
WEEKDAYS = {n: i for i, n in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
# (name, low, high, names) per field, in order.
_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, MONTHS),
           ("day of week", 0, 6, WEEKDAYS))
SEARCH_YEARS = 5  # like upstream, a schedule with no fire in 5 years never fires ("0 0 30 2 *")


class CronError(ValueError):
    """An invalid schedule; the message says what is wrong."""


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_star: bool  # day of month given as * or ?
    weekdays_star: bool

    def day_matches(self, day: dt.date) -> bool:
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def next_wall(self, wall: dt.datetime) -> dt.datetime | None:
        """The first matching wall-clock minute at or after naive ``wall``."""
        t = wall.replace(second=0, microsecond=0)
        if t < wall:
            t += dt.timedelta(minutes=1)
        limit = t.year + SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
            elif not self.day_matches(t.date()):
                t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
            elif t.minute not in self.minutes:
                later = [m for m in self.minutes if m > t.minute]
                t = t.replace(minute=min(later)) if later else t.replace(minute=0) + dt.timedelta(hours=1)
            else:
                return t
        return None

    def next_after(self, when: dt.datetime, tz: dt.tzinfo = dt.timezone.utc) -> dt.datetime | None:
        """The first fire time strictly after aware ``when`` (in ``tz``'s wall
        clock), as an aware UTC datetime; None if there is none within 5 years."""
        after = when.astimezone(dt.timezone.utc)
        # Wall clocks repeat an hour when clocks go back: near such a change,
        # start an hour early and take the earliest real instant after ``when``
        # among the nearby matches. Elsewhere wall order is real-time order.
        wall = when.astimezone(tz).replace(tzinfo=None)
        if not _steady(tz, after - _WINDOW, after + _WINDOW):
            wall -= _WINDOW
        best: dt.datetime | None = None
        horizon: dt.datetime | None = None
        while True:
            found = self.next_wall(wall)
            if found is None or (horizon is not None and found > horizon):
                return best
            for instant in _instants(found, tz):
                if instant > after and (best is None or instant < best):
                    best = instant
            if best is not None and horizon is None:
                # A later wall time can name an earlier instant only across a
                # clock change close to this match.
                if _steady(tz, max(after, best - 2 * _WINDOW), best + 3 * _WINDOW):
                    return best
                horizon = found + 3 * _WINDOW
            wall = found + dt.timedelta(minutes=1)


_WINDOW = dt.timedelta(hours=1)  # longer than any clock change in the tz database (1 h; Lord Howe 30 min)


def _steady(tz: dt.tzinfo, start: dt.datetime, end: dt.datetime) -> bool:
    """No change of UTC offset between the two instants (checked at both ends
    and every 15 min, finer than any clock change is short)."""
    t = start
    offset = start.astimezone(tz).utcoffset()
    while t < end:
        t = min(end, t + dt.timedelta(minutes=15))
        if t.astimezone(tz).utcoffset() != offset:
            return False
    return True


def _instants(wall: dt.datetime, tz: dt.tzinfo) -> list[dt.datetime]:
    """The real instants a wall-clock time names in ``tz``: none in a gap, two in a fold."""
    out = []
    for fold in (0, 1):
        aware = wall.replace(tzinfo=tz, fold=fold)
        utc = aware.astimezone(dt.timezone.utc)
        if utc.astimezone(tz).replace(tzinfo=None) == wall and utc not in out:
            out.append(utc)
    return sorted(out)


def _number(text: str, names: dict[str, int], field: str) -> int:
    upper = text.upper()
    if upper in names:
        return names[upper]
    if not text.isdigit():
        raise CronError(f"failed to parse int from {text}: invalid {field} value")
    return int(text)


def _field(text: str, index: int) -> tuple[frozenset[int], bool]:
    name, low, high, names = _FIELDS[index]
    values: set[int] = set()
    star = False
    for part in text.split(","):
        if not part:
            raise CronError(f"empty list element in {name} field")
        rng, slash, step_text = part.partition("/")
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"invalid step {step_text!r} in {name} field")
            step = int(step_text)
        else:
            step = 1
        if rng in ("*", "?"):
            if rng == "?" and index not in (2, 4):
                raise CronError(f"'?' is only allowed in the day of month and day of week fields, not {name}")
            start, end = low, high
            star = star or step == 1
        else:
            first, dash, last = rng.partition("-")
            start = _number(first, names, name)
            end = _number(last, names, name) if dash else (high if slash else start)
        if start < low or end > high:
            raise CronError(f"{name} value out of range ({low}-{high}): {part}")
        if start > end:
            raise CronError(f"beginning of range ({start}) beyond end of range ({end}): {part}")
        values.update(range(start, end + 1, step))
    return frozenset(values), star


def parse(text: str) -> Schedule:
    if not isinstance(text, str) or not text.strip():
        raise CronError("empty spec string")
    spec = text.strip()
    if spec.startswith(("TZ=", "CRON_TZ=")):
        raise CronError("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
    if spec.startswith("@"):
        macro = MACROS.get(spec.lower())
        if macro is None:
            raise CronError(f"unrecognized descriptor: {spec}")
        spec = macro
    parts = spec.split()
    if len(parts) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(parts)}: [{' '.join(parts)}]")
    fields = [_field(p, i) for i, p in enumerate(parts)]
    return Schedule(minutes=fields[0][0], hours=fields[1][0], days=fields[2][0], months=fields[3][0],
                    weekdays=fields[4][0], days_star=fields[2][1], weekdays_star=fields[4][1])


def unix_minutes(when: dt.datetime) -> int:
    """Upstream's Job name suffix for a scheduled time: minutes since the epoch."""
    return int(when.timestamp()) // 60
