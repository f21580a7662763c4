"""``newsletter run`` (the daemon) and ``newsletter status`` (what it is doing)."""

from __future__ import annotations

import click

from ..delivery import edition_eta
from ..scheduling import next_slot
from ..store import editions as edition_q
from ..store import schedules as store
from ..store.tables import utcnow
from . import App, main, pass_app
from .schedule import scheduler_text, slot_text


@main.command("run")
@click.option("--poll", type=click.FloatRange(0.2, 60), default=10.0, show_default=True,
              help="Seconds between looks at config.toml, the schedule table and due deliveries.")
@click.option("--stop-timeout", type=click.FloatRange(0, 3600), default=60.0, show_default=True,
              help="On SIGTERM/SIGINT, how long messages in flight may take to finish.")
@pass_app
def run_daemon(app: App, poll, stop_timeout):
    """Run the scheduler and the delivery worker until SIGTERM or SIGINT.

    Editions go out on their publication's schedule; unfinished ones are resumed
    at start; config.toml changes and CLI actions apply within POLL seconds.
    """
    from ..daemon import Daemon

    app.config.secret()  # a missing link-signing key is an error now, not at the first slot
    daemon = Daemon(app.config_path, poll_seconds=poll, stop_timeout=stop_timeout)
    raise SystemExit(daemon.run())


@main.command("worker")
@click.option("--poll", type=click.FloatRange(0.2, 60), default=10.0, show_default=True,
              help="Seconds between looks for due deliveries when idle.")
@click.option("--stop-timeout", type=click.FloatRange(0, 3600), default=60.0, show_default=True,
              help="On SIGTERM/SIGINT, how long the chunk being sent may take to finish.")
@pass_app
def run_worker(app: App, poll, stop_timeout):
    """Deliver editions that are sending, with no scheduler, until SIGTERM or SIGINT.

    Run any number of these, on this host or others, next to one or more
    'newsletter run' on the same database: they share the deliveries and the
    limits (rate, quotas, domain limits, provider throttles). On SIGTERM the
    chunk being sent is finished and the rest of the claims are released at once.
    A worker reads config.toml at start only: restart it after a change.
    """
    from ..daemon import Daemon

    daemon = Daemon(app.config_path, poll_seconds=poll, stop_timeout=stop_timeout, role="worker")
    raise SystemExit(daemon.run())


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={counts[k]}" for k in ("sent", "pending", "failed", "skipped", "cancelled")
                    if counts[k] or k != "cancelled")


def _workers(app: App, now) -> None:
    """The processes (workers registry): a summary line, then one line each."""
    from ..workers import list_workers

    rows = list_workers(app.engine, now)
    live = [w for w in rows if not w.lost]
    if not live:
        click.echo("daemon:   not running (no 'newsletter run' or 'newsletter worker' has a heartbeat)")
    else:
        draining = sum(w.state == "draining" for w in live)
        click.echo(f"daemon:   {len(live) - draining} running" + (f", {draining} draining" if draining else "")
                   + f"; {scheduler_text(app, rows)}")
    if not rows:
        return
    click.echo("workers:")
    for w in rows:
        ago = int((now - w.seen_at).total_seconds())
        state = "LOST" if w.lost else w.state
        role = w.role + (" (scheduler)" if w.scheduler else "")
        click.echo(f"  {w.host}\tpid {w.pid}\t{role}\t{state}\tv{w.version}\t"
                   f"since {app.local_time(w.started_at)}\tseen {ago}s ago")


@main.command("status")
@click.option("--finished", type=click.IntRange(0, 100), default=5, show_default=True,
              help="How many finished editions to show.")
@pass_app
def status(app: App, finished):
    """The processes (role, host, pid, version, started, last heartbeat; LOST when
    the heartbeat is older than their lease), next scheduled runs, editions in
    progress, editions held back for an operator, and the last finished ones."""
    now = utcnow()
    _workers(app, now)
    with app.engine.connect() as conn:
        states = store.all_states(conn)
        progress = [(row, edition_q.counts(conn, row.id)) for row in store.in_progress(conn)]
        done = [(row, edition_q.counts(conn, row.id)) for row in store.last_finished(conn, finished)]
        held = store.held_back(conn)

    click.echo("\nnext runs:")
    for pub in app.config.publications:
        state = states.get(pub.slug)
        if state is not None and state.paused:
            nxt = "paused"
        else:
            slot = next_slot(pub, app.config.calendar, now)
            nxt = slot_text(app, slot, pub.timezone) if slot else "-"
        last = ""
        if state is not None and state.last_slot is not None:
            last = f"  (last {app.local_time(state.last_slot, pub.timezone)}: {state.last_result})"
        click.echo(f"  {pub.slug}\t{nxt}{last}")

    click.echo("\nin progress:")
    if not progress:
        click.echo("  -")
    for row, counts in progress:
        line = f"  {row.publication} 第{row.number}号\t{row.status}\t{_counts(counts)}"
        if row.status == "sending" and counts["pending"]:
            rate, eta = edition_eta(app.engine, row.id, now)
            line += f"\t{rate:.1f}/s\teta {app.local_time(eta) if eta else '-'}"
        if row.note:
            line += f"\t({row.note})"
        click.echo(line)

    if held:
        click.echo("\nheld back (not sent; fix, then send or schedule again):")
        for row in held:
            click.echo(f"  {row.publication} 第{row.number}号\t{row.status}\t{row.note}")

    click.echo("\nlast finished:")
    if not done:
        click.echo("  -")
    for row, counts in done:
        click.echo(f"  {row.publication} 第{row.number}号\t{row.status} {app.local_time(row.finished_at)}\t"
                   f"{_counts(counts)}")
