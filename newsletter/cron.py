"""Standard five-field cron expressions on top of APScheduler 3.x.

APScheduler's ``CronTrigger.from_crontab`` numbers the days of the week from
Monday = 0, while cron (and every operator who writes ``0 9 * * 2`` meaning
Tuesday) numbers them from Sunday = 0 (7 is Sunday too).  We parse the
day-of-week field ourselves, following cron, and hand APScheduler day *names*,
which it reads unambiguously.

One difference from Vixie cron remains and is documented in the README: when
both day-of-month and day-of-week are restricted, cron fires on either, while
APScheduler fires only on days matching both.

:func:`describe` says an expression in words (毎週火曜 9:00, 毎月第1月曜 9:00) — what
the trigger above really does — and gives the expression back when it cannot.
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


# -- in words ------------------------------------------------------------------------

_JA_DAYS = ("日", "月", "火", "水", "木", "金", "土")
_EN_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_EN_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December")
_EN_NTH = ("first", "second", "third", "fourth")
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def _numbers(field: str, lo: int, hi: int, names: tuple[str, ...] = ()) -> list[int] | None:
    """The values of a plain list/range field (no step), or None when it is not one."""
    out: set[int] = set()
    for part in field.split(","):
        bounds = part.split("-")
        if len(bounds) > 2:
            return None
        values = []
        for b in bounds:
            b = b.strip().lower()
            if b in names:
                values.append(names.index(b) + lo)
            elif b.isdigit():
                values.append(int(b))
            else:
                return None
        a, z = values[0], values[-1]
        if not lo <= a <= z <= hi:
            return None
        out.update(range(a, z + 1))
    return sorted(out)


def _ja_list(items: list[str]) -> str:
    return "・".join(items)


def _en_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def describe(expr: str, lang: str = "ja") -> str:
    """A cron expression in the words of a public office: ``0 9 * * 2`` →
    「毎週火曜 9:00」 ("Every Tuesday at 9:00" with ``lang="en"``).

    Says what :func:`cron_trigger` makes of it: the days of the week counted
    from Sunday as cron does, and day-of-month *and* day-of-week both restricted
    meaning days matching both (so ``0 9 1-7 * 1`` is 毎月第1月曜).  What it
    cannot say plainly (steps, minute lists, ranges of hours…) comes back as the
    expression itself, so a caller can always show the result."""
    try:
        cron_trigger(expr, "UTC")
    except ValueError:
        return expr
    minute, hour, dom, month, dow = expr.split()
    minutes = _numbers(minute, 0, 59)
    hours = _numbers(hour, 0, 23)
    if not minutes or len(minutes) != 1 or not hours or len(hours) > 4 or ("-" in hour and len(hours) > 1):
        return expr
    times = [f"{h}:{minutes[0]:02d}" for h in hours]
    if "/" in dow or "/" in dom or "/" in month:
        return expr
    named = _days_of_week(dow, expr)
    days = None if named == "*" else [_NAMES.index(d) for d in named.split(",")]
    months = None
    if month != "*":
        months = _numbers(month, 1, 12, _MONTH_NAMES)
        if months is None:
            return expr
        if len(months) == 12:
            months = None
    last = dom.strip().lower() == "last"
    dom_days = None
    if dom != "*" and not last:
        dom_days = _numbers(dom, 1, 31)
        if dom_days is None:
            return expr
    nth = None
    if dom_days is not None and days is not None:
        # Both restricted: APScheduler fires on days matching both — a week of the month.
        if len(days) != 1 or dom_days[0] not in (1, 8, 15, 22) or dom_days != list(range(dom_days[0],
                                                                                         dom_days[0] + 7)):
            return expr
        nth = dom_days[0] // 7 + 1
    if (last and days is not None) or (dom_days is not None and nth is None and len(dom_days) > 4):
        return expr
    return (_describe_en if lang == "en" else _describe_ja)(times, days, dom_days, last, nth, months)


def _describe_ja(times, days, dom_days, last, nth, months) -> str:
    at = "・".join(times)
    month_part = _ja_list([f"{m}月" for m in months]) if months else ""
    if nth is not None:
        day_part = f"第{nth}{_JA_DAYS[days[0]]}曜"
    elif last:
        day_part = "末日"
    elif dom_days is not None:
        day_part = _ja_list([f"{d}日" for d in dom_days])
    elif days is None:
        day_part = "毎日"
    elif days == [1, 2, 3, 4, 5]:
        day_part = "平日"
    elif days == [0, 6]:
        day_part = "土日"
    else:
        day_part = "毎週" + _ja_list([_JA_DAYS[d] for d in days]) + "曜"
    if months:
        if len(months) == 1 and dom_days is not None and nth is None:
            return f"毎年{month_part}{day_part} {at}"
        return f"{month_part}の{day_part} {at}"
    if nth is not None or last or dom_days is not None:
        return f"毎月{day_part} {at}"
    return f"{day_part} {at}"


def _describe_en(times, days, dom_days, last, nth, months) -> str:
    at = "at " + _en_list(times)
    of = "of " + _en_list([_EN_MONTHS[m - 1] for m in months]) if months else "of the month"
    if nth is not None:
        text = f"on the {_EN_NTH[nth - 1]} {_EN_DAYS[days[0]]} {of} {at}"
    elif last:
        text = f"on the last day {of} {at}"
    elif dom_days is not None:
        text = "on the " + _en_list([_ordinal(d) for d in dom_days]) + f" {of} {at}"
    else:
        if days is None:
            what = "every day"
        elif days == [1, 2, 3, 4, 5]:
            what = "weekdays"
        elif days == [0, 6]:
            what = "Saturdays and Sundays"
        else:
            what = "every " + _en_list([_EN_DAYS[d] for d in days])
        if months:
            what += " in " + _en_list([_EN_MONTHS[m - 1] for m in months])
        text = f"{what} {at}"
    return text[0].upper() + text[1:]
