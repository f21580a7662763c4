"""The scheduler, driven by an injected clock: cron in Asia/Tokyo, Japanese holidays
and the year-end closure, pause/resume, missed runs inside and outside the grace
window, and one edition per slot even with two schedulers on one database."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from newsletter.calendar_jp import closed_reason, is_business_day, next_business_day
from newsletter.config import CalendarSettings, Publication, load_config
from newsletter.daemon import Daemon
from newsletter.editions import creation
from newsletter.logs import JsonFormatter
from newsletter.scheduling import (
    CalendarTrigger,
    SchedulerCore,
    Slot,
    due_runs,
    next_slot,
    next_slots,
    slots_between,
)
from newsletter.store import open_engine
from newsletter.store import schedules as store
from newsletter.store.tables import deliveries, editions, utcnow
from tests.conftest import CLI, write_config

JST = "Asia/Tokyo"
CAL = CalendarSettings()
SCHEDULE_LINE = 'schedule = "0 9 * * TUE"     # cron, in timezone below: every Tuesday 09:00'


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def pub(schedule="0 9 * * TUE", on_holiday="send", grace=6 * 3600.0, tz=JST) -> Publication:
    return Publication(slug="weekly", title="週刊", fields=("education",), schedule=schedule, timezone=tz,
                       on_holiday=on_holiday, misfire_grace=grace)


# -- the calendar ----------------------------------------------------------------------


def test_japanese_holidays_and_the_year_end_closure():
    assert closed_reason(date(2027, 1, 11), CAL) == "成人の日"  # second Monday of January
    assert closed_reason(date(2026, 5, 6), CAL) == "憲法記念日 振替休日"
    assert closed_reason(date(2026, 9, 22), CAL) == "国民の休日"
    assert closed_reason(date(2026, 12, 29), CAL) == "年末年始 12/29–1/3"
    assert closed_reason(date(2027, 1, 3), CAL) == "年末年始 12/29–1/3"
    assert closed_reason(date(2027, 1, 4), CAL) is None
    assert closed_reason(date(2026, 12, 28), CAL) is None
    assert closed_reason(date(2026, 12, 29), CalendarSettings(closure=None)) is None
    assert not is_business_day(date(2026, 5, 9), CAL)  # a Saturday
    assert next_business_day(date(2026, 12, 28), CAL) == date(2027, 1, 4)
    assert next_business_day(date(2026, 5, 1), CAL) == date(2026, 5, 7)  # over Golden Week
    extra = CalendarSettings(closed_dates=(date(2026, 8, 14),))
    assert closed_reason(date(2026, 8, 14), extra) == "closed (calendar.closed_dates)"


# -- slots (pure) -----------------------------------------------------------------------


def test_cron_fires_at_0900_tokyo_which_is_midnight_utc():
    p = pub("0 9 * * TUE")
    slot = next_slot(p, CAL, utc(2026, 5, 11, 0, 0))
    assert slot == Slot(utc(2026, 5, 12, 0, 0), utc(2026, 5, 12, 0, 0))
    # the APScheduler trigger gives the same time
    assert CalendarTrigger(p, CAL).get_next_fire_time(None, utc(2026, 5, 11, 0, 0)) == utc(2026, 5, 12, 0, 0)
    assert CalendarTrigger(p, CAL).get_next_fire_time(utc(2026, 5, 12), utc(2026, 5, 12)) == utc(2026, 5, 19)
    # cron weekday numbers: 2 is Tuesday
    assert next_slot(pub("0 9 * * 2"), CAL, utc(2026, 5, 11)).at == utc(2026, 5, 12, 0, 0)


def test_on_holiday_skip_and_next_business_day_on_seijin_no_hi_2027():
    after = utc(2027, 1, 5)
    skip = next_slots(pub("0 9 * * MON", "skip"), CAL, after, 2, with_skipped=True)
    assert [(s.at, s.action, s.reason) for s in skip] == [
        (utc(2027, 1, 11, 0), "skip", "成人の日"),
        (utc(2027, 1, 18, 0), "send", None),
        (utc(2027, 1, 25, 0), "send", None),
    ]
    moved = next_slots(pub("0 9 * * MON", "next_business_day"), CAL, after, 2)
    assert moved[0] == Slot(utc(2027, 1, 12, 0), utc(2027, 1, 11, 0), "send", "成人の日")
    assert moved[1].at == utc(2027, 1, 18, 0) and not moved[1].shifted
    sent = next_slots(pub("0 9 * * MON", "send"), CAL, after, 1)
    assert sent[0].at == utc(2027, 1, 11, 0)


def test_year_end_closure_moves_to_the_first_business_day_of_january():
    slots = next_slots(pub("0 9 * * TUE", "next_business_day"), CAL, utc(2026, 12, 20), 3)
    assert [(s.at, s.planned) for s in slots] == [
        (utc(2026, 12, 22, 0), utc(2026, 12, 22, 0)),
        (utc(2027, 1, 4, 0), utc(2026, 12, 29, 0)),  # Mon 1/4: 12/30–1/3 closed, 1/2–3 a weekend too
        (utc(2027, 1, 5, 0), utc(2027, 1, 5, 0)),
    ]
    no_closure = CalendarSettings(closure=None)
    assert next_slots(pub("0 9 * * TUE", "next_business_day"), no_closure, utc(2026, 12, 23), 1)[0].at == utc(
        2026, 12, 29, 0)


def test_moved_slots_landing_on_one_time_are_one_slot():
    # Golden Week 2026: 5/3 (Sun) … 5/6 (振替休日) all move to Thu 5/7 09:00, which has its own slot.
    p = pub("0 9 * * *", "next_business_day")
    slots = slots_between(p, CAL, utc(2026, 5, 1, 1), utc(2026, 5, 8, 1))
    assert [s.at.astimezone(p.tz).strftime("%m-%d") for s in slots] == ["05-02", "05-07", "05-08"]
    assert not slots[1].shifted  # the day's own slot stands for the moved ones
    # Monday 2027-01-11 moves onto Tuesday's own 09:00
    both = next_slots(pub("0 9 * * MON,TUE", "next_business_day"), CAL, utc(2027, 1, 10), 3)
    assert [s.at for s in both] == [utc(2027, 1, 12, 0), utc(2027, 1, 18, 0), utc(2027, 1, 19, 0)]


def test_a_slot_moved_past_the_cursor_is_still_seen():
    # Cursor on Tue 1/12 00:00 JST: Monday's 09:00 (a holiday) lands after it.
    p = pub("0 9 * * MON", "next_business_day")
    due = due_runs(p, CAL, utc(2027, 1, 11, 15), utc(2027, 1, 12, 0, 0, 5))
    assert due.fire is not None and due.fire.at == utc(2027, 1, 12, 0) and due.fire.reason == "成人の日"


def test_due_runs_policy():
    p = pub("0 9 * * TUE")
    slot = utc(2026, 5, 12, 0)
    assert due_runs(p, CAL, utc(2026, 5, 11), slot - timedelta(seconds=1)).fire is None
    due = due_runs(p, CAL, utc(2026, 5, 11), slot)
    assert due.fire.at == slot and due.passed == () and due.next.at == utc(2026, 5, 19)
    assert due.handled_until == slot
    # three weeks down, big grace: the latest slot only
    wide = replace(p, misfire_grace=30 * 86400)
    due = due_runs(wide, CAL, utc(2026, 4, 20), utc(2026, 5, 12, 3))
    assert due.fire.at == slot
    assert [s.at for s, _ in due.passed] == [utc(2026, 4, 21), utc(2026, 4, 28), utc(2026, 5, 5)]
    assert all(why.startswith("superseded") for _, why in due.passed)
    # outside the grace window
    due = due_runs(p, CAL, utc(2026, 5, 11), slot + timedelta(hours=7))
    assert due.fire is None and "more than misfire_grace (6h)" in due.passed[0][1]
    # paused
    due = due_runs(p, CAL, utc(2026, 5, 11), slot, paused=True)
    assert due.fire is None and due.passed[0][1] == "skipped: schedule paused"


# -- the core against a database --------------------------------------------------------


class Bench:
    """A project on a database, a scheduler core on it, and helpers."""

    def __init__(self, tmp_path, storage_url, **config_kw):
        self.cli = CLI(write_config(tmp_path / "project", storage_url, **config_kw))
        self.cli("init")
        self.cli("subscriber", "add", "hanako@example.jp", "--fields", "education")
        self.config = load_config(self.cli.config_path)
        self.engine = open_engine(self.config.storage_url)
        self.articles = 0

    def add_article(self):
        self.articles += 1
        n = self.articles
        self.cli("article", "add", "--field", "education", "--title", f"記事 {n}",
                 "--url", f"https://news.example.jp/{n}", "--summary", "概要")

    def core(self, **kw) -> SchedulerCore:
        return SchedulerCore(self.engine, self.config, **kw)

    def editions(self):
        with self.engine.connect() as conn:
            return list(conn.execute(select(editions.c.number, editions.c.scheduled_for).order_by(editions.c.id)))

    def state(self):
        with self.engine.connect() as conn:
            return store.get(conn, "weekly")


@pytest.fixture
def bench(tmp_path):
    b = Bench(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}")
    yield b
    b.engine.dispose()


def bench_with(tmp_path, replace_map):
    return Bench(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}", replace=replace_map)


def test_tick_creates_the_edition_at_the_slot_and_only_once(bench):
    bench.add_article()
    core = bench.core()
    assert core.tick(utc(2026, 5, 11, 0)) == []  # first sight: starts counting from now
    assert core.tick(utc(2026, 5, 11, 23, 59, 59)) == []
    [run] = core.tick(utc(2026, 5, 12, 0, 0, 0))  # Tue 09:00 JST
    assert run.outcome == "created" and run.number == 1 and run.pending == 1
    assert core.tick(utc(2026, 5, 12, 0, 0, 30)) == []
    assert bench.editions() == [(1, utc(2026, 5, 12, 0))]
    state = bench.state()
    assert state.last_slot == utc(2026, 5, 12, 0) and state.last_result.startswith("created 第1号")
    assert state.next_run_at == utc(2026, 5, 19, 0)
    assert state.handled_until == utc(2026, 5, 12, 0, 0, 30)


def test_nothing_new_creates_nothing(bench):
    core = bench.core()
    core.tick(utc(2026, 5, 11))
    [run] = core.tick(utc(2026, 5, 12, 0, 0, 1))
    assert run.outcome == "nothing-new" and bench.editions() == []
    assert bench.state().last_result == "nothing new to send"


def test_pause_skips_slots_and_resume_counts_from_then(bench, caplog):
    bench.add_article()
    core = bench.core()
    core.tick(utc(2026, 5, 11))
    with bench.engine.begin() as conn:
        assert store.set_paused(conn, "weekly", True, utc(2026, 5, 11, 12))
        assert not store.set_paused(conn, "weekly", True, utc(2026, 5, 11, 12))
    with caplog.at_level(logging.INFO, logger="newsletter"):
        assert core.tick(utc(2026, 5, 12, 0, 0, 5)) == []
    assert "skipped: schedule paused" in caplog.text
    assert bench.state().last_result == "skipped: schedule paused"
    # resumed an hour after the slot: within the grace, but slots passed while paused stay skipped
    with bench.engine.begin() as conn:
        store.set_paused(conn, "weekly", False, utc(2026, 5, 12, 1))
    assert core.tick(utc(2026, 5, 12, 1, 0, 5)) == []
    [run] = core.tick(utc(2026, 5, 19, 0, 0, 2))
    assert run.outcome == "created"
    assert bench.editions() == [(1, utc(2026, 5, 19, 0))]


def test_missed_slot_within_grace_is_sent_once_at_start(bench):
    bench.add_article()
    core = bench.core()
    core.tick(utc(2026, 5, 11, 12))  # the daemon was running on Monday, then went down
    # a new process (new core) starts Tuesday 11:00 JST, two hours after the slot
    [run] = bench.core().tick(utc(2026, 5, 12, 2))
    assert run.outcome == "created" and run.slot == utc(2026, 5, 12, 0)
    assert bench.core().tick(utc(2026, 5, 12, 2, 0, 10)) == []
    assert bench.editions() == [(1, utc(2026, 5, 12, 0))]


def test_several_missed_slots_coalesce_into_the_latest(tmp_path, caplog):
    b = bench_with(tmp_path, {SCHEDULE_LINE: SCHEDULE_LINE + '\nmisfire_grace = "30d"'})
    assert b.config.publications[0].misfire_grace == 30 * 86400
    b.add_article()
    b.core().tick(utc(2026, 4, 20))
    with caplog.at_level(logging.INFO, logger="newsletter"):
        [run] = b.core().tick(utc(2026, 5, 12, 3))
    assert run.slot == utc(2026, 5, 12, 0)
    assert b.editions() == [(1, utc(2026, 5, 12, 0))]
    assert caplog.text.count("superseded by the slot of 2026-05-12T00:00:00+00:00") == 3


def test_missed_slot_outside_grace_is_logged_and_skipped(bench, caplog):
    bench.add_article()
    bench.core().tick(utc(2026, 5, 11, 12))
    with caplog.at_level(logging.INFO, logger="newsletter"):
        assert bench.core().tick(utc(2026, 5, 12, 7)) == []  # 7 h late, grace 6 h
    assert "slot 2026-05-12 09:00 JST missed by 7h, more than misfire_grace (6h): not sent" in caplog.text
    assert bench.editions() == []
    assert "missed" in bench.state().last_result
    [run] = bench.core().tick(utc(2026, 5, 19, 0, 1))  # the next slot goes out as usual
    assert run.outcome == "created"


def test_holiday_skip_in_the_core(tmp_path, caplog):
    b = bench_with(tmp_path, {SCHEDULE_LINE: 'schedule = "0 9 * * MON"\non_holiday = "skip"'})
    b.add_article()
    core = b.core()
    core.tick(utc(2027, 1, 10))
    with caplog.at_level(logging.INFO, logger="newsletter"):
        assert core.tick(utc(2027, 1, 11, 0, 0, 1)) == []
    assert "slot 2027-01-11 09:00 JST skipped: 成人の日" in caplog.text
    assert b.state().last_result == "skipped: 成人の日"
    assert b.state().next_run_at == utc(2027, 1, 18, 0)
    [run] = core.tick(utc(2027, 1, 18, 0, 0, 1))
    assert run.outcome == "created"


def test_holiday_shift_in_the_core(tmp_path):
    b = bench_with(tmp_path, {SCHEDULE_LINE: 'schedule = "0 9 * * MON"\non_holiday = "next_business_day"'})
    b.add_article()
    core = b.core()
    core.tick(utc(2027, 1, 10))
    assert core.tick(utc(2027, 1, 11, 0, 0, 1)) == []
    assert b.state().next_run_at == utc(2027, 1, 12, 0)
    [run] = core.tick(utc(2027, 1, 12, 0, 0, 1))
    assert run.outcome == "created"
    assert b.editions() == [(1, utc(2027, 1, 12, 0))]


def test_a_crash_after_creating_before_recording_does_not_create_twice(bench):
    bench.add_article()
    bench.core().tick(utc(2026, 5, 11))
    # the edition of the slot exists but the state was never advanced (killed in between)
    pub_ = bench.config.publications[0]
    creation.create_edition(bench.engine, bench.config, pub_, now=utc(2026, 5, 12, 0, 0, 1),
                           scheduled_for=utc(2026, 5, 12, 0))
    bench.add_article()
    [run] = bench.core().tick(utc(2026, 5, 12, 0, 5))
    assert run.outcome == "exists" and run.number == 1
    assert len(bench.editions()) == 1


@pytest.mark.parametrize("n", [2, 3])
def test_schedulers_on_one_database_create_one_edition_per_slot(tmp_path, storage_url, n):
    b = Bench(tmp_path, storage_url)
    b.add_article()
    slot = utc(2026, 5, 12, 0)
    b.core().tick(utc(2026, 5, 11))
    barrier = threading.Barrier(n)

    def lined_up(*args, **kw):  # every scheduler has checked "no edition yet" before any creates
        barrier.wait(timeout=30)
        return creation.create_edition(*args, **kw)

    engines = [open_engine(b.config.storage_url) for _ in range(n)]
    results: list = []
    errors: list = []

    def run(engine):
        try:
            results.extend(SchedulerCore(engine, b.config, create=lined_up).tick(slot + timedelta(seconds=1)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(r.outcome for r in results) == ["created"] + ["exists"] * (n - 1)
    assert b.editions() == [(1, slot)]
    with b.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar() == 1
    for e in engines:
        e.dispose()
    b.engine.dispose()


# -- config ------------------------------------------------------------------------------


def test_config_keys(tmp_path):
    path = write_config(tmp_path / "a", "sqlite:///x.db", replace={
        SCHEDULE_LINE: SCHEDULE_LINE + '\non_holiday = "next_business_day"\nmisfire_grace = "90m"'},
        extra='\n[calendar]\nclosure = ["12-28", "01-04"]\nclosed_dates = ["2026-08-14", 2026-08-13]\n')
    config = load_config(path)
    p = config.publications[0]
    assert (p.on_holiday, p.misfire_grace) == ("next_business_day", 5400.0)
    assert config.calendar == CalendarSettings(((12, 28), (1, 4)), (date(2026, 8, 13), date(2026, 8, 14)))
    defaults = load_config(write_config(tmp_path / "b", "sqlite:///x.db"))
    assert (defaults.publications[0].on_holiday, defaults.publications[0].misfire_grace) == ("send", 21600.0)
    assert defaults.calendar.closure == ((12, 29), (1, 3))
    none = load_config(write_config(tmp_path / "c", "sqlite:///x.db", extra="\n[calendar]\nclosure = []\n"))
    assert none.calendar.closure is None


@pytest.mark.parametrize("replace_map, extra, message", [
    ({SCHEDULE_LINE: SCHEDULE_LINE + '\non_holiday = "monday"'}, "",
     "publications[0].on_holiday: must be one of 'send', 'skip', 'next_business_day'"),
    ({SCHEDULE_LINE: SCHEDULE_LINE + '\nmisfire_grace = "6 hours"'}, "", "publications[0].misfire_grace: invalid"),
    ({}, '\n[calendar]\nclosure = ["12-32", "01-03"]\n', "calendar.closure: invalid day '12-32'"),
    ({}, '\n[calendar]\nclosure = ["12-29"]\n', "calendar.closure: expected"),
    ({}, '\n[calendar]\nclosed = []\n', "calendar.closed: unknown key"),
])
def test_config_errors_name_the_key(tmp_path, replace_map, extra, message):
    from newsletter.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        load_config(write_config(tmp_path / "p", "sqlite:///x.db", replace=replace_map, extra=extra))


# -- CLI ---------------------------------------------------------------------------------


def test_schedule_next_shows_moved_and_skipped_dates(tmp_path):
    b = bench_with(tmp_path, {SCHEDULE_LINE: 'schedule = "0 9 * * MON"\non_holiday = "next_business_day"'})
    out = b.cli("schedule", "next", "weekly", "--count", "3", "--from", "2027-01-05").stdout.splitlines()
    assert out == [
        "2027-01-12 09:00 JST (Tue)  moved from 2027-01-11 09:00 JST (Mon): 成人の日",
        "2027-01-18 09:00 JST (Mon)",
        "2027-01-25 09:00 JST (Mon)",
    ]
    b.config = replace(b.config)
    skip = bench_with(tmp_path / "s", {SCHEDULE_LINE: 'schedule = "0 9 * * MON"\non_holiday = "skip"'})
    out = skip.cli("schedule", "next", "weekly", "--count", "1", "--from", "2027-01-05").stdout.splitlines()
    assert out == ["2027-01-11 09:00 JST (Mon)  skipped: 成人の日", "2027-01-18 09:00 JST (Mon)"]
    bad = b.cli("schedule", "next", "weekly", "--from", "next week", ok=False)
    assert bad.exit_code == 1 and "--from" in bad.stderr


def test_schedule_cli_pause_resume_run_now_list_and_status(bench):
    cli = bench.cli
    assert cli("schedule", "pause", "weekly").stdout.startswith("weekly: paused")
    assert cli("schedule", "pause", "weekly").stdout.strip() == "weekly: already paused"
    assert bench.state().paused
    assert "\tpaused\t" in cli("schedule", "list").stdout
    assert "weekly\tpaused" in cli("status").stdout.replace("  weekly", "weekly")
    out = cli("schedule", "resume", "weekly").stdout
    assert out.startswith("weekly: resumed; next run ") and "JST (Tue)" in out
    assert not bench.state().paused
    assert bench.state().handled_until > utcnow() - timedelta(minutes=1)

    assert "nothing new to send" in cli("schedule", "run-now", "weekly").stdout
    bench.add_article()
    out = cli("schedule", "run-now", "weekly").stdout
    assert "weekly 第1号 created: 1 articles, 1 to send" in out and "no daemon is running" in out
    listing = cli("schedule", "list").stdout
    assert listing.startswith("weekly\tactive\tnext ") and "run-now: created 第1号" in listing
    status = cli("status").stdout
    assert "daemon:   not running" in status
    assert "weekly 第1号\tsending\tsent=0 pending=1 failed=0 skipped=0" in status
    assert cli("schedule", "pause", "nope", ok=False).exit_code == 1


# -- the daemon's pieces, in process -----------------------------------------------------


def test_daemon_reloads_a_changed_config_and_keeps_a_broken_one(bench, caplog):
    daemon = Daemon(bench.cli.config_path, poll_seconds=1)
    path = bench.cli.config_path
    text = path.read_text(encoding="utf-8")
    assert not daemon.reload_config()
    path.write_text(text.replace(SCHEDULE_LINE, 'schedule = "30 7 * * FRI"'), encoding="utf-8")
    assert daemon.reload_config()
    assert daemon.core.config.publications[0].schedule == "30 7 * * FRI"
    assert daemon.runner._applied["weekly"].startswith("30 7 * * FRI")
    daemon.core.tick(utc(2026, 5, 11))
    assert bench.state().next_run_at == utc(2026, 5, 14, 22, 30)  # Fri 07:30 JST
    path.write_text(text.replace(SCHEDULE_LINE, 'schedule = "0 25 * * *"'), encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="newsletter"):
        assert not daemon.reload_config()
    assert "config not reloaded" in caplog.text and "publications[0].schedule" in caplog.text
    assert daemon.config.publications[0].schedule == "30 7 * * FRI"
    daemon.engine.dispose()


def test_due_editions_follow_leases_and_retries(bench):
    bench.add_article()
    created = creation.create_edition(bench.engine, bench.config, bench.config.publications[0])
    now = utcnow()
    with bench.engine.begin() as conn:
        assert store.due_editions(conn, now) == [created.edition_id]
        conn.execute(deliveries.update().values(lease_until=now + timedelta(seconds=30)))
        assert store.due_editions(conn, now) == []
        assert store.due_editions(conn, now + timedelta(seconds=31)) == [created.edition_id]
        conn.execute(deliveries.update().values(lease_until=None, next_attempt_at=now + timedelta(minutes=2)))
        assert store.due_editions(conn, now) == []
        conn.execute(deliveries.update().values(status="sent"))  # all done, not marked done yet
        assert store.due_editions(conn, now) == [created.edition_id]


def test_json_log_lines():
    record = logging.LogRecord("newsletter.daemon", logging.INFO, __file__, 1, "weekly 第%d号: finished\nok", (3,),
                               None)
    record.edition = 7
    record.counts = {"sent": 10, "failed": 0}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "INFO" and data["edition"] == 7 and data["counts"] == {"sent": 10, "failed": 0}
    assert data["msg"] == "weekly 第3号: finished\nok" and data["ts"].endswith("Z")
    assert "第3号" in line  # not \u-escaped


def test_apscheduler_wiring_installs_one_job_per_publication_and_the_sync(bench):
    from newsletter.scheduling import ScheduleRunner

    synced = threading.Event()
    ticks: list = []
    runner = ScheduleRunner(ticks.append, synced.set, poll_seconds=0.2)
    runner.start(bench.config)
    try:
        assert synced.wait(10)  # the interval job runs
        [(slug, when)] = runner.next_run_times().items()
        assert slug == "weekly"
        assert when == next_slot(bench.config.publications[0], bench.config.calendar, utcnow()).at
        runner.apply(bench.config)  # unchanged: left alone
        changed = replace(bench.config, publications=(replace(bench.config.publications[0], schedule="0 7 * * *"),))
        runner.apply(changed)
        assert runner.next_run_times()["weekly"] == next_slot(changed.publications[0], CAL, utcnow()).at
        runner.apply(replace(bench.config, publications=()))
        assert runner.next_run_times() == {}
    finally:
        runner.shutdown()
