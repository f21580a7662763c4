"""Standard five-field cron expressions on top of APScheduler 3.x.

APScheduler's ``CronTrigger.from_crontab`` numbers the days of the week from
Monday = 0, while cron (and every operator who writes ``0 9 * * 2`` meaning
Tuesday) numbers them from Sunday = 0 (7 is Sunday too).  We parse the
day-of-week field ourselves, following cron, and hand APScheduler day *names*,
which it reads unambiguously.

One difference from Vixie cron remains and is documented in the README: when
both day-of-month and day-of-week are restricted, cron fires on either, while
APScheduler fires only on days matching both.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from apscheduler.triggers.cron import CronTrigger

from .sanitize import ascii_digits

_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _day(token: str, expr: str) -> int:
    token = token.strip().lower()
    if token in _NAMES:
        return _NAMES.index(token)
    if ascii_digits(token) and 0 <= int(token) <= 7:
        return int(token) % 7
    raise ValueError(f"invalid day of week '{token}' in '{expr}'")


def _days_of_week(field: str, expr: str) -> str:
    days: set[int] = set()
    for part in field.split(","):
        rng, _, step_s = part.partition("/")
        step = 1
        if step_s:
            if not ascii_digits(step_s) or int(step_s) == 0:
                raise ValueError(f"invalid step '{step_s}' in '{expr}'")
            step = int(step_s)
        if rng == "*":
            lo, hi = 0, 6
        elif "-" in rng:
            a, b = rng.split("-", 1)
            lo, hi = _day(a, expr), _day(b, expr)
            if b.strip() == "7":
                hi = 7  # "5-7" is Friday to Sunday
            if a.strip() == "7":
                lo = 7  # "7-7" is Sunday (not every day); "7-1" is an error, as in cron
            if hi < lo:
                raise ValueError(f"invalid range '{rng}' in '{expr}'")
        else:
            lo = hi = _day(rng, expr)
            if step_s:
                hi = 6
        days.update(d % 7 for d in range(lo, hi + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(_NAMES[d] for d in sorted(days))


def cron_trigger(expr: str, timezone: tzinfo | str) -> CronTrigger:
    """A CronTrigger for a standard crontab line; ValueError with the reason if invalid."""
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(f"'{expr}' has {len(parts)} fields, expected 5 (minute hour day month weekday)")
    minute, hour, day, month, dow = parts
    try:
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month,
            day_of_week=_days_of_week(dow, expr), timezone=timezone,
        )
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def next_fire_times(expr: str, timezone: tzinfo | str, after: datetime, count: int) -> list[datetime]:
    trigger = cron_trigger(expr, timezone)
    out: list[datetime] = []
    prev = None
    now = after
    while len(out) < count:
        nxt = trigger.get_next_fire_time(prev, now)
        if nxt is None:
            break
        out.append(nxt)
        prev = nxt
        now = nxt
    return out
