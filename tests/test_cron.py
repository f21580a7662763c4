"""cron.describe: a publication's cron in the words of a public office, and the
raw expression whenever it cannot say it plainly.  Each description is checked
against the times the trigger really fires (the words must not lie)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from newsletter.cron import describe, next_fire_times

JST = "Asia/Tokyo"


def _at(h, m=0):
    return lambda t: (t.hour, t.minute) == (h, m)


CASES = [
    # expression, Japanese, English, what every fire time must satisfy (local time)
    ("0 9 * * TUE", "毎週火曜 9:00", "Every Tuesday at 9:00", lambda t: t.weekday() == 1 and _at(9)(t)),
    ("0 9 * * 2", "毎週火曜 9:00", "Every Tuesday at 9:00", lambda t: t.weekday() == 1),
    ("0 9 * * 0", "毎週日曜 9:00", "Every Sunday at 9:00", lambda t: t.weekday() == 6),
    ("0 9 * * 7", "毎週日曜 9:00", "Every Sunday at 9:00", lambda t: t.weekday() == 6),
    ("30 8 * * 1-5", "平日 8:30", "Weekdays at 8:30", lambda t: t.weekday() < 5 and _at(8, 30)(t)),
    ("30 8 * * mon-fri", "平日 8:30", "Weekdays at 8:30", lambda t: t.weekday() < 5),
    ("0 10 * * 6,0", "土日 10:00", "Saturdays and Sundays at 10:00", lambda t: t.weekday() >= 5),
    ("0 9 * * 1,3,5", "毎週月・水・金曜 9:00", "Every Monday, Wednesday and Friday at 9:00",
     lambda t: t.weekday() in (0, 2, 4)),
    ("0 9 * * *", "毎日 9:00", "Every day at 9:00", _at(9)),
    ("0 9 * * 0-6", "毎日 9:00", "Every day at 9:00", _at(9)),
    ("5 7 * * *", "毎日 7:05", "Every day at 7:05", _at(7, 5)),
    ("0 9,17 * * *", "毎日 9:00・17:00", "Every day at 9:00 and 17:00", lambda t: t.hour in (9, 17)),
    ("0 9 1-7 * 1", "毎月第1月曜 9:00", "On the first Monday of the month at 9:00",
     lambda t: t.weekday() == 0 and t.day <= 7),
    ("0 9 8-14 * fri", "毎月第2金曜 9:00", "On the second Friday of the month at 9:00",
     lambda t: t.weekday() == 4 and 8 <= t.day <= 14),
    ("0 15 15-21 * 3", "毎月第3水曜 15:00", "On the third Wednesday of the month at 15:00",
     lambda t: t.weekday() == 2 and 15 <= t.day <= 21),
    ("0 9 22-28 * 4", "毎月第4木曜 9:00", "On the fourth Thursday of the month at 9:00",
     lambda t: t.weekday() == 3 and 22 <= t.day <= 28),
    ("0 9 1 * *", "毎月1日 9:00", "On the 1st of the month at 9:00", lambda t: t.day == 1),
    ("0 9 1,15 * *", "毎月1日・15日 9:00", "On the 1st and 15th of the month at 9:00", lambda t: t.day in (1, 15)),
    ("0 9 last * *", "毎月末日 9:00", "On the last day of the month at 9:00",
     lambda t: (t + timedelta(days=1)).day == 1),
    ("0 9 1 1 *", "毎年1月1日 9:00", "On the 1st of January at 9:00", lambda t: (t.month, t.day) == (1, 1)),
    ("0 9 1 1,4,7,10 *", "1月・4月・7月・10月の1日 9:00", "On the 1st of January, April, July and October at 9:00",
     lambda t: t.day == 1 and t.month in (1, 4, 7, 10)),
    ("0 9 * jan-mar mon", "1月・2月・3月の毎週月曜 9:00", "Every Monday in January, February and March at 9:00",
     lambda t: t.weekday() == 0 and t.month <= 3),
    ("0 9 * 1-12 *", "毎日 9:00", "Every day at 9:00", _at(9)),
]


@pytest.mark.parametrize("expr,ja,en,check", CASES, ids=[c[0] for c in CASES])
def test_cron_in_words_says_what_the_trigger_does(expr, ja, en, check):
    assert describe(expr) == ja
    assert describe(expr, "en") == en
    times = next_fire_times(expr, JST, datetime(2026, 11, 27, tzinfo=UTC), 30)
    assert len(times) == 30 and all(check(t) for t in times), [t.isoformat() for t in times if not check(t)]


@pytest.mark.parametrize("expr", [
    "*/15 * * * *",      # a step of minutes
    "0 */2 * * *",       # a step of hours
    "0 9-17 * * *",      # a range of hours
    "0,30 9 * * *",      # a list of minutes
    "0 9 * * */2",       # a step of weekdays
    "0 9 1-10 * *",      # a long range of days
    "0 9 2-8 * 1",       # days and a weekday that are not a week of the month
    "0 9 1-7 * 1,2",     # two weekdays in the first week
    "0 9 last * 1",      # the last day and a weekday
    "0 8,9,10,11,12 * * *",  # too many times to read
    "0 9 * * MON extra", # not five fields
    "61 9 * * *",        # not a time
    "",
])
def test_what_cannot_be_said_plainly_is_the_expression_itself(expr):
    assert describe(expr) == expr
    assert describe(expr, "en") == expr
