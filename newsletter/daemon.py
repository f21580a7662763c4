"""``newsletter run``: the scheduler and the delivery worker in one process.

Threads:

- main: signals, the heartbeat of the process, and the orderly stop;
- APScheduler's one executor thread (:class:`newsletter.scheduling.ScheduleRunner`):
  ``tick`` on each publication's slot, and ``sync`` every ``poll`` seconds, which
  re-reads config.toml when its mtime changed and ticks every publication (so a
  CLI action from another process — ``schedule pause/resume/run-now`` — is seen,
  and an edition scheduled for a one-off time starts within ``poll`` seconds of
  it).  Editions become ``sending`` only through ``editions/state.py``, which
  checks the approval;
- ``delivery``: sends every edition that has due work (``store.schedules.due_editions``),
  one at a time (several due: FAIR_SLICE seconds each, in turn), through
  :func:`newsletter.delivery.deliver`, then sleeps until
  woken (a new edition) or ``poll`` seconds pass.  ``edition pause/cancel`` reach
  a running send through ``deliver``'s own status check (every second); a resumed
  edition is picked up on the next poll.

Start-up checks, before anything runs: config.toml loads, the provider can be
built (its options valid, its secrets in the environment — nothing is sent) and
the database opens.  Any of them failing is one line naming the file and key,
and exit 1: a daemon that starts happily and fails at the next slot is worse
than one that does not start.

Crash recovery is the store's: the delivery rows are the outbox and claims are
leases.  At start every edition still ``sending`` is simply due again; rows a
killed process had claimed come back when their lease (``[provider]
lease_seconds``) runs out.  A crash can therefore duplicate at most the messages
in flight (``connections`` × 2 chunks of ``max_batch``, see delivery.py) and
lose none.

SIGTERM/SIGINT: no new claims, no new ticks; what is in flight is sent and
recorded (bounded by ``stop_timeout``), then exit 0.  If the timeout passes, exit
1: the unrecorded rows are still leased and will be sent again after a restart.
A second signal exits at once (same guarantee).

Several processes (newsletter/workers.py): every daemon registers in ``workers``
and beats every ``lease_seconds / 3`` (at most 5 s) from the main thread.  Role
``run`` ticks the schedule only while it holds the ``scheduler`` lease (taken or
renewed at each beat; on taking it, a catch-up tick at once); role ``worker``
(``newsletter worker``) never schedules, it only delivers.  Limits are the
shared ones (``deliver(shared=True)``).  On SIGTERM the process is shown as
``draining``, releases the scheduler lease and, through the delivery run, the
claims it had not begun sending.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from .config import Config, find_config_path, load_config
from .delivery import RunReport, counts_text, deliver, edition_eta, summarize
from .errors import ConfigError
from .providers import check_provider
from .scheduling import SchedulerCore, ScheduleRunner
from .store import editions as edition_q
from .store import open_engine
from .store import schedules as store
from .store.tables import utcnow
from .workers import FORGET_LOST_AFTER, Registry, SchedulerLease, forget_lost, heartbeat_every

log = logging.getLogger(__name__)

PROGRESS_EVERY = 10.0  # seconds between progress lines of a running send
FAIR_SLICE = 10.0  # seconds one edition sends before the next sending edition's turn
RETRY_AFTER_ERROR = timedelta(seconds=60)


class Daemon:
    def __init__(
        self,
        config_path: str | os.PathLike | None = None,
        *,
        poll_seconds: float = 10.0,
        stop_timeout: float = 60.0,
        clock: Callable[[], datetime] = utcnow,
        role: str = "run",
    ):
        self.config_path = find_config_path(config_path).absolute()
        self.config: Config = load_config(self.config_path)
        # A provider that cannot be built (unknown kind, a missing secret) would only
        # fail at the next slot, maybe days later: refuse to start instead.
        check_provider(self.config)
        self._config_stamp = self._stamp()
        self.engine = open_engine(self.config.storage_url)
        self.poll_seconds = poll_seconds
        self.stop_timeout = stop_timeout
        self.clock = clock
        self.stop = threading.Event()
        self.wake = threading.Event()
        self._run_stop = threading.Event()  # the current delivery run's; replaced per run
        self._tick_lock = threading.Lock()
        self._not_before: dict[int, datetime] = {}
        self.core = SchedulerCore(self.engine, self.config, on_created=lambda _id: self.wake.set())
        self.runner = ScheduleRunner(self.tick, self.sync, poll_seconds)
        self.started_at = clock()
        # -- several processes (workers.py) --
        self.role = role
        self.registry = Registry(self.engine, role, self.config.delivery.lease_seconds, started_at=self.started_at)
        self.scheduler = SchedulerLease(self.engine, self.registry.id, self.config.delivery.lease_seconds)
        self._next_beat = float("-inf")
        self.fair_slice = FAIR_SLICE
        self._last_served = 0

    # -- config and schedule ---------------------------------------------------------

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.config_path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload_config(self) -> bool:
        """Load config.toml again if it changed; a broken file is logged and ignored."""
        stamp = self._stamp()
        if stamp == self._config_stamp:
            return False
        self._config_stamp = stamp
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("config not reloaded, keeping the running one: %s", exc, extra={"event": "config.error"})
            return False
        old = self.config
        if new.storage_url != old.storage_url:
            log.warning("storage.url changed: restart the daemon to use the new database; keeping %s",
                        old.storage_url, extra={"event": "config.storage_changed"})
            new = _replace_storage(new, old.storage_url)
        self.config = new
        self.core.config = new
        self.runner.apply(new)
        log.info("config reloaded from %s", self.config_path, extra={"event": "config.reloaded"})
        sending_changed = (new.provider, new.delivery, new.sender, new.site, new.templates_dir) != (
            old.provider, old.delivery, old.sender, old.site, old.templates_dir)
        if sending_changed:
            self._run_stop.set()  # the running send starts again with the new settings
        self.wake.set()
        return True

    def tick(self, only: str | None = None) -> None:
        with self._tick_lock:
            if self.stop.is_set() or self.role != "run" or not self.scheduler.held:
                return
            try:
                self.core.tick(self.clock(), only=only)
            except Exception:  # the next tick tries again; the slot stays due within its grace
                log.exception("schedule tick failed", extra={"event": "schedule.error"})

    def beat(self, *, catch_up: bool = True) -> None:
        """The registry heartbeat and, for role ``run``, the scheduler lease; on taking
        the lease, a catch-up tick in its own thread (the main thread keeps beating)."""
        self._next_beat = time.monotonic() + heartbeat_every(self.config.delivery.lease_seconds)
        try:
            self.registry.beat()
        except Exception:
            log.warning("worker heartbeat failed", exc_info=True)
        if self.role != "run" or self.stop.is_set():
            return
        had = self.scheduler.held
        try:
            holds = self.scheduler.hold()
        except Exception:
            log.warning("scheduler lease: the database did not answer", exc_info=True)
            holds = self.scheduler.held
        if holds and not had:
            log.info("this process is the scheduler now", extra={"event": "scheduler.acquired"})
            if catch_up:
                threading.Thread(target=self.tick, name="catch-up", daemon=True).start()
        elif had and not holds:
            log.warning("another process holds the scheduler lease now; standing by",
                        extra={"event": "scheduler.lost"})

    def sync(self) -> None:
        try:
            self.reload_config()
        except Exception:
            log.exception("config reload failed")
        self.tick()

    # -- delivery --------------------------------------------------------------------

    def deliver_due(self) -> bool:
        """One pass over the editions with due work; True when something was sent."""
        now = self.clock()
        with self.engine.connect() as conn:
            due = store.due_editions(conn, now)
        busy = False
        # Fair sharing: with several editions due, each gets FAIR_SLICE seconds in turn
        # (round-robin, starting after the one served last) instead of the first one
        # starving the others until it is done.
        slice_seconds = self.fair_slice if len(due) > 1 else None
        if len(due) > 1:
            later = [i for i in due if i > self._last_served]
            due = later + [i for i in due if i <= self._last_served]
        for edition_id in due:
            if self.stop.is_set() or self._run_stop.is_set():
                break
            not_before = self._not_before.get(edition_id)
            if not_before is not None and not_before > now:
                continue
            self._last_served = edition_id
            busy = self.deliver_one(edition_id, slice_seconds) or busy
        return busy

    def deliver_one(self, edition_id: int, slice_seconds: float | None = None) -> bool:
        config = self.config
        with self.engine.connect() as conn:
            row = edition_q.get_edition(conn, edition_id)
            counts = edition_q.counts(conn, edition_id)
        label = f"{row.publication} 第{row.number}号"
        fields = {"publication": row.publication, "edition": edition_id, "number": row.number}
        verb = "resuming" if counts["sent"] or counts["failed"] else "sending"
        log.info("%s: %s, %d pending", label, verb, counts["pending"],
                 extra={"event": "delivery.started", **fields, "counts": counts})
        last = [time.monotonic()]

        def on_batch(report: RunReport) -> None:
            if time.monotonic() - last[0] < PROGRESS_EVERY:
                return
            last[0] = time.monotonic()
            rate, eta = edition_eta(self.engine, edition_id, self.clock())
            with self.engine.connect() as c:
                now_counts = edition_q.counts(c, edition_id)
            log.info("%s: %s, %.1f/s", label, counts_text(now_counts), rate,
                     extra={"event": "delivery.progress", **fields, "counts": now_counts, "rate": round(rate, 1),
                            "eta": eta.isoformat() if eta else None})

        try:
            report = deliver(self.engine, config, edition_id, stop=self._run_stop, clock=self.clock,
                             on_batch=on_batch, shared=True, slice_seconds=slice_seconds)
        except ConfigError as exc:
            log.error("%s: %s; trying again in a minute", label, exc, extra={"event": "delivery.error", **fields})
            self._not_before[edition_id] = self.clock() + RETRY_AFTER_ERROR
            return False
        except Exception:
            log.exception("%s: delivery failed; trying again in a minute", label,
                          extra={"event": "delivery.error", **fields})
            self._not_before[edition_id] = self.clock() + RETRY_AFTER_ERROR
            return False
        done = summarize(self.engine, edition_id, report)
        counts, retry, status = done.counts, done.next_retry, done.status
        if report.finished:
            how, event = "finished", "delivery.finished"
        elif report.paused:
            how, event = f"paused: {report.paused}", "delivery.paused"
        elif status in ("paused", "cancelled"):
            how, event = f"{status} by an operator", f"delivery.{status}"
        elif report.waiting_until:
            how, event = (f"{report.waiting_for or 'quota reached'}; waiting until "
                          f"{report.waiting_until.isoformat()}", "delivery.waiting")
            self._not_before[edition_id] = report.waiting_until
        elif self.stop.is_set():
            how, event = "stopped (daemon stopping)", "delivery.stopped"
        elif slice_seconds and counts["pending"]:
            how, event = "turn over (another edition is sending too)", "delivery.turn"
        elif counts["pending"] and retry:
            how, event = f"{counts['pending']} waiting to retry from {retry.isoformat()}", "delivery.deferred"
        else:
            how, event = "run ended", "delivery.ended"
        log.info("%s: %s; %s", label, how, done.text, extra={"event": event, **fields, "counts": counts})
        return bool(report.sent or report.failed or report.deferred or report.unknown or report.finished)

    def _worker(self) -> None:
        while not self.stop.is_set():
            self.wake.clear()
            self._run_stop = threading.Event()
            if self.stop.is_set():  # a signal between the loop test and the new event
                break
            busy = False
            try:
                busy = self.deliver_due()
            except Exception:
                log.exception("delivery pass failed", extra={"event": "delivery.error"})
            if not busy:
                self.wake.wait(self.poll_seconds)

    # -- the process -----------------------------------------------------------------

    def _on_signal(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set():
            log.error("%s again: exiting now; unrecorded messages go again after their lease", name,
                      extra={"event": "daemon.killed"})
            os._exit(1)
        log.info("%s: stopping (no new claims; finishing what is in flight)", name, extra={"event": "daemon.stopping"})
        self.stop.set()
        self._run_stop.set()
        self.wake.set()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            forget_lost(self.engine, self.clock() - FORGET_LOST_AFTER)
        except Exception:
            log.warning("could not remove the rows of long-lost processes", exc_info=True)
        with self.engine.connect() as conn:
            unfinished = store.in_progress(conn)
            resumable = [(r, edition_q.pending_count(conn, r.id)) for r in unfinished if r.status == "sending"]
        self.beat(catch_up=False)  # the tick below is the catch-up
        log.info("daemon started (pid %d, poll %gs, %s%s): %d publications, %d editions to resume", os.getpid(),
                 self.poll_seconds, self.role, ", scheduler" if self.scheduler.held else "",
                 len(self.config.publications), len(resumable),
                 extra={"event": "daemon.started", "pid": os.getpid(), "role": self.role,
                        "scheduler": self.scheduler.held})
        for row, pending in resumable:
            log.info("%s 第%d号: %d pending deliveries to resume", row.publication, row.number, pending,
                     extra={"event": "delivery.resume", "publication": row.publication, "edition": row.id,
                            "number": row.number, "counts": {"pending": pending}})
        self.tick()  # slots missed while the daemon was down
        if self.role == "run":
            self.runner.start(self.config)
        worker = threading.Thread(target=self._worker, name="delivery", daemon=True)
        worker.start()
        code = 0
        while not self.stop.wait(0.5):
            if time.monotonic() >= self._next_beat:
                self.beat()
            # A SIGTERM handled during this loop's body lets an idle worker thread end at
            # once: that is the stop, not a crash (test_workers saw exit 1 from it).
            if not worker.is_alive() and not self.stop.is_set():
                log.error("the delivery worker stopped unexpectedly", extra={"event": "daemon.error"})
                self.stop.set()
                code = 1
        deadline = time.monotonic() + self.stop_timeout
        self._draining()
        self.runner.shutdown()
        self._run_stop.set()
        self.wake.set()
        worker.join(max(0.0, deadline - time.monotonic()))
        tick_done = self._tick_lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
        if worker.is_alive() or not tick_done:
            log.error("messages still in flight after %gs; exiting anyway (they are leased and go again "
                      "after a restart)", self.stop_timeout, extra={"event": "daemon.stop_timeout"})
            code = 1
        try:
            self.registry.forget()
        except Exception:
            log.warning("could not remove the heartbeat row", exc_info=True)
        log.info("daemon stopped", extra={"event": "daemon.stopped", "pid": os.getpid()})
        return code


    def _draining(self) -> None:
        """Stopping: shown as draining, and the scheduler role goes to a standby now."""
        self.registry.state = "draining"
        try:
            self.registry.beat()
            if self.scheduler.held:
                # A tick still in progress is harmless: editions are unique per (publication, slot).
                self.scheduler.release()
                log.info("scheduler lease released", extra={"event": "scheduler.released"})
        except Exception:
            log.warning("could not release the scheduler lease; it lapses by itself", exc_info=True)


def _replace_storage(config: Config, url: str) -> Config:
    from dataclasses import replace

    return replace(config, storage_url=url)
