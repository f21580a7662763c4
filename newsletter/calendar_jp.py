"""Japan's calendar for schedules: public holidays, the year-end closure, business days.

Public holidays come from ``jpholiday`` (pure Python, no data files, no network):
it computes the holidays of the Act on National Holidays, including the
substitute holidays (振替休日), the 国民の休日 between two holidays and the
equinoxes, so future years work without updates.  The year-end closure
(年末年始, default 12/29–1/3) and extra closed dates come from ``[calendar]``
in config.toml (:class:`newsletter.config.CalendarSettings`).

Vocabulary used by the scheduler:

- a *closed* day is a public holiday, a day of the closure, or a closed date;
  a slot on a closed day is what ``on_holiday`` acts on.  Weekends are not
  closed days: the cron expression already says which weekdays to send on;
- a *business day* is Monday–Friday and not closed; ``next_business_day``
  moves a slot to the first business day after its date, same local time.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import cache

from .config import CalendarSettings

# No run of closed days and weekends is anywhere near this long; a guard against a
# configuration that closes every day (closure = ["01-01", "12-31"]).
MAX_SHIFT_DAYS = 366


@cache
def _jpholiday():
    # Imported on first use: only the scheduler needs it, not every CLI command.
    try:
        import jpholiday
    except ImportError:  # pragma: no cover - a dependency of the package
        from .errors import NewsletterError

        raise NewsletterError("the jpholiday package is missing: pip install 'jpholiday>=1.0'") from None
    return jpholiday


def holiday_name(day: date) -> str | None:
    """The public holiday's Japanese name (成人の日, 振替休日 …), or None."""
    return _jpholiday().is_holiday_name(day)


def in_closure(day: date, settings: CalendarSettings) -> bool:
    if settings.closure is None:
        return False
    start, end = settings.closure
    key = (day.month, day.day)
    if start <= end:
        return start <= key <= end
    return key >= start or key <= end  # wraps over the new year (12-29 … 01-03)


def closed_reason(day: date, settings: CalendarSettings) -> str | None:
    """Why nothing goes out on ``day`` ("成人の日", "年末年始 12/29–1/3"), or None."""
    name = holiday_name(day)
    if name:
        return name
    if in_closure(day, settings):
        (m1, d1), (m2, d2) = settings.closure  # type: ignore[misc]
        return f"年末年始 {m1}/{d1}–{m2}/{d2}"
    if day in settings.closed_dates:
        return "closed (calendar.closed_dates)"
    return None


def is_business_day(day: date, settings: CalendarSettings) -> bool:
    return day.weekday() < 5 and closed_reason(day, settings) is None


def next_business_day(day: date, settings: CalendarSettings) -> date:
    """The first business day strictly after ``day``."""
    for n in range(1, MAX_SHIFT_DAYS + 1):
        candidate = day + timedelta(days=n)
        if is_business_day(candidate, settings):
            return candidate
    raise ValueError(f"no business day within a year after {day} (check [calendar])")


def first_day_that_can_shift_onto(day: date, settings: CalendarSettings) -> date:
    """The earliest date whose slots, moved to the next business day, can land on or
    after ``day``: walk back over the non-business days just before it."""
    start = day
    for _ in range(MAX_SHIFT_DAYS):
        previous = start - timedelta(days=1)
        if is_business_day(previous, settings):
            break
        start = previous
    return start
