"""``newsletter schedule …``: the publications' schedules and their runtime state.

The schedule itself (cron, time zone, ``on_holiday``) is config.toml; pause,
resume and run-now write to the database, where a running ``newsletter run``
sees them within its poll interval (10 s by default).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import click

from ..errors import InputError
from ..scheduling import SchedulerCore, Slot, next_slot, next_slots, overview, set_paused
from ..store.tables import utcnow
from . import App, main, pass_app


@main.group()
def schedule() -> None:
    """Publication schedules: list, pause, resume, next, run-now."""


def _when(app: App, dt: datetime, tz: str) -> str:
    return f"{app.local_time(dt, tz)} ({dt.astimezone(ZoneInfo(tz)):%a})"


def slot_text(app: App, slot: Slot, tz: str) -> str:
    text = _when(app, slot.at, tz)
    if slot.action == "skip":
        return f"{text}  skipped: {slot.reason}"
    if slot.shifted:
        return f"{text}  moved from {_when(app, slot.planned, tz)}: {slot.reason}"
    return text


def scheduler_text(app: App, rows) -> str:
    """Who fires the schedules now, from the process registry (``rows``: workers.list_workers)."""
    holder = next((w for w in rows if w.scheduler and not w.lost), None)
    if holder is None:
        return "scheduler: none (no 'newsletter run' is running: no slot fires)"
    return f"scheduler: {holder.host} pid {holder.pid} since {app.local_time(holder.started_at)}"


@schedule.command("list")
@pass_app
def schedule_list(app: App):
    """Each publication's schedule, state, next run (local time) and last run."""
    now = utcnow()
    for view in overview(app.engine, app.config, now, 1):
        pub = view.publication
        nxt = next((s for s in view.slots if s.action == "send"), None)
        next_text = slot_text(app, nxt, pub.timezone) if nxt else "-"
        last = "-"
        if view.last_slot is not None:
            last = f"{app.local_time(view.last_slot, pub.timezone)}: {view.last_result}"
        click.echo(f"{pub.slug}\t{'paused' if view.paused else 'active'}\tnext {next_text}\t"
                   f"{pub.schedule} ({pub.timezone}, on_holiday={pub.on_holiday})\tlast {last}")
    from ..workers import list_workers

    click.echo(scheduler_text(app, list_workers(app.engine, now)))


def _parse_from(value: str | None, tz: str) -> datetime:
    if not value:
        return utcnow()
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"--from: expected a date or date and time (2027-01-01 or 2027-01-01T08:00), "
                         f"got '{value}'") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(tz))
    return dt


@schedule.command("next")
@click.argument("publication")
@click.option("--count", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--from", "start", metavar="WHEN", help="Start after this date/time (publication's time zone).")
@pass_app
def schedule_next(app: App, publication, count, start):
    """The next COUNT runs of PUBLICATION, with holiday moves and skips shown."""
    pub = app.config.publication(publication)
    after = _parse_from(start, pub.timezone)
    for slot in next_slots(pub, app.config.calendar, after, count, with_skipped=True):
        click.echo(slot_text(app, slot, pub.timezone))


def _set_paused(app: App, publication: str, paused: bool) -> None:
    pub = app.config.publication(publication)
    now = utcnow()
    changed = set_paused(app.engine, app.config, pub.slug, paused, app.actor, now=now)
    if not changed:
        click.echo(f"{pub.slug}: already {'paused' if paused else 'active'}")
    elif paused:
        click.echo(f"{pub.slug}: paused; its slots are skipped until 'newsletter schedule resume {pub.slug}'")
    else:
        nxt = next_slot(pub, app.config.calendar, now)
        click.echo(f"{pub.slug}: resumed; next run {slot_text(app, nxt, pub.timezone) if nxt else '-'}")


@schedule.command("pause")
@click.argument("publication")
@pass_app
def schedule_pause(app: App, publication):
    """Stop creating editions of PUBLICATION on its schedule (a running send goes on)."""
    _set_paused(app, publication, True)


@schedule.command("resume")
@click.argument("publication")
@pass_app
def schedule_resume(app: App, publication):
    """Create editions on schedule again, from the next slot (missed ones are not caught up)."""
    _set_paused(app, publication, False)


@schedule.command("run-now")
@click.argument("publication")
@pass_app
def schedule_run_now(app: App, publication):
    """Create PUBLICATION's next edition now, as if a slot fired; the daemon sends it."""
    pub = app.config.publication(publication)
    run = SchedulerCore(app.engine, app.config).run_now(pub, utcnow())
    if run.outcome == "nothing-new":
        click.echo(f"{pub.slug}: nothing new to send (no queued articles past their embargo)")
        return
    if run.outcome == "exists":
        click.echo(f"{pub.slug}: 第{run.number}号 was already created for this moment")
        return
    if run.outcome == "skipped":  # nothing approved, or the preflight check found errors: nothing sent
        raise InputError(f"{pub.slug}: {run.describe()}")
    click.echo(f"{pub.slug} 第{run.number}号 created: {run.articles} articles, {run.pending} to send, "
               f"{run.skipped} skipped (nothing in their fields)")
    from ..workers import list_workers

    live = [w for w in list_workers(app.engine) if not w.lost and w.state == "running"]
    if live:
        d = live[0]
        click.echo(f"the running daemon ({d.host}, pid {d.pid}, {d.role}) sends it within seconds; "
                   f"follow it with 'newsletter status'")
    else:
        click.echo(f"no daemon is running: start 'newsletter run', or send it now with "
                   f"'newsletter edition send --edition {run.number} --publication {pub.slug}'")
