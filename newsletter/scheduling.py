"""When each publication fires, and the APScheduler 3.x wiring that makes it happen.

Three layers, so that the rules can be tested with a made-up clock:

1. **Pure** — :func:`iter_slots` / :func:`due_runs`: cron + time zone + Japanese
   calendar + the persisted state + *now* → which slot to send now, which ones
   passed without sending and why, and the next one.  No I/O, no clock.
2. **Core** — :class:`SchedulerCore`: ``tick(now)`` reads each publication's state
   (``store.schedules``), asks :func:`due_runs`, creates the edition with
   ``scheduled_for = slot`` and writes the state back.  ``now`` is a parameter:
   the daemon passes the wall clock, the tests any time they like.
3. **Wiring** — :class:`ScheduleRunner`: an APScheduler ``BackgroundScheduler``
   whose jobs only call ``tick``: one job per publication on a
   :class:`CalendarTrigger` (wakes up on the slot, holiday-shifted), plus one
   interval job that re-reads config.toml and the schedule table (CLI actions
   from other processes, missed slots after a suspend).  ``tick`` is idempotent,
   so a redundant call costs two SELECTs and nothing else.

Policy (also in the README):

- *Exactly one edition per (publication, slot)*: the slot is the edition's
  ``scheduled_for``, under the UNIQUE (publication, scheduled_for) key of the
  editions table.  Two schedulers on one database, or a retry after a crash, may
  both try; the database lets one in and the other sees the edition is there.
- *Missed slots*: ``handled_until`` (persisted) says up to when every slot was dealt
  with.  A tick handles the slots in (handled_until, now]: the latest sendable one
  is sent if it is at most ``misfire_grace`` old, else logged as missed; earlier
  ones are logged as superseded (several missed runs coalesce into one, the
  latest).  A schedule seen for the first time starts at now.
- *Holidays*: a slot on a public holiday, in the year-end closure or on a closed
  date is sent anyway (``on_holiday = "send"``), skipped and logged (``"skip"``) or
  moved to the next business day at the same local time (``"next_business_day"``;
  a moved slot that lands on another slot is one slot).
- *Pause*: slots passing while paused are logged as skipped; resume counts from
  then.  :func:`set_paused` is the one way to pause or resume (``schedule
  pause/resume``, the console's 一時停止 / 再開), with its audit row.
  ``run-now`` works while paused: it is an operator's explicit request.
- *Approval* (editions/state.py): at a slot the oldest ``approved`` edition
  without a time of its own goes out (it takes the slot as ``scheduled_for``);
  without one, an edition is created from the queue when ``approval = "none"``,
  and the slot is skipped ("slot skipped: nothing approved", logged and kept as
  the schedule's last result for ``newsletter status``) when ``"required"``.
- *One-off times* (予約配信, ``edition schedule N --at``): every tick starts the
  ``scheduled`` editions whose time has come, within ``misfire_grace``; one later
  than that goes back to ``approved`` with a note.  A paused schedule holds them.

Why our own ``schedules`` table and not APScheduler's ``SQLAlchemyJobStore``: the
job store pickles each job (callable reference + trigger) into a BLOB, so the
state cannot be read by ``schedule list``/``status`` or by SQL, and a renamed
function breaks unpickling; APScheduler 3 does not support two schedulers sharing
one job store (both would run every job) and keeps no "handled until" cursor, so
catch-up after downtime, coalescing within a grace window and holiday rules would
have been ours anyway.  Our table is five timestamps and a flag, migrated by
Alembic like the rest, and the scheduler core is testable without threads.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import Engine

from .calendar_jp import closed_reason, first_day_that_can_shift_onto, next_business_day
from .config import CalendarSettings, Config, Publication
from .cron import cron_trigger
from .editions import creation, state
from .errors import InputError
from .store import audit as audit_q
from .store import editions as edition_q
from .store import schedules as store
from .users import DAEMON, Actor

log = logging.getLogger(__name__)

_TICK = timedelta(microseconds=1)
# How many skipped slots in a row mean "this schedule never sends" (every day closed).
_MAX_SKIPPED = 1000


# -- 1. pure: slots ------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One firing of a schedule.  ``at`` (UTC) is when it happens after the calendar
    acted and is the edition's ``scheduled_for``; ``planned`` is the cron time."""

    at: datetime
    planned: datetime
    action: str = "send"  # "send" | "skip"
    reason: str | None = None  # the holiday or closure that skipped or moved it

    @property
    def shifted(self) -> bool:
        return self.at != self.planned


def _raw_times(pub: Publication, start: datetime) -> Iterator[datetime]:
    """The cron's fire times at or after ``start``."""
    trigger = cron_trigger(pub.schedule, pub.timezone)
    prev = None
    now = start
    while True:
        t = trigger.get_next_fire_time(prev, now)
        if t is None:
            return
        yield t.astimezone(UTC)
        prev = now = t


def place(pub: Publication, calendar: CalendarSettings, planned: datetime) -> Slot:
    """Apply ``on_holiday`` to one cron time."""
    if pub.on_holiday == "send":
        return Slot(planned, planned)
    local = planned.astimezone(pub.tz)
    reason = closed_reason(local.date(), calendar)
    if reason is None:
        return Slot(planned, planned)
    if pub.on_holiday == "skip":
        return Slot(planned, planned, "skip", reason)
    day = next_business_day(local.date(), calendar)
    moved = datetime.combine(day, local.time(), tzinfo=pub.tz).astimezone(UTC)
    return Slot(moved, planned, "send", reason)


def iter_slots(pub: Publication, calendar: CalendarSettings, after: datetime) -> Iterator[Slot]:
    """Every slot with ``at > after``, in time order (an endless iterator)."""
    start = after + _TICK
    if pub.on_holiday == "next_business_day":
        # A cron time on a closed day before ``after`` may be moved past it.
        first = first_day_that_can_shift_onto(after.astimezone(pub.tz).date(), calendar)
        start = min(start, datetime.combine(first, time(0), tzinfo=pub.tz).astimezone(UTC))
    # Moving can reorder slots, so hold them in a heap and let one go once the cron
    # has passed its time: a later cron time can only produce a later slot.
    heap: list[tuple[datetime, int, Slot]] = []
    held: dict[datetime, Slot] = {}
    order = itertools.count()
    for planned in _raw_times(pub, start):
        # Strictly before: a slot at exactly this time may still meet this cron time's own.
        while heap and heap[0][0] < planned:
            at, _, slot = heapq.heappop(heap)
            yield held.pop(at)
        slot = place(pub, calendar, planned)
        if slot.at <= after:
            continue
        if slot.at in held:  # a moved slot landed on another: one slot (the unmoved one if any)
            if held[slot.at].shifted and not slot.shifted:
                held[slot.at] = slot
            continue
        held[slot.at] = slot
        heapq.heappush(heap, (slot.at, next(order), slot))
    while heap:
        at, _, _slot = heapq.heappop(heap)
        yield held.pop(at)


def slots_between(pub: Publication, calendar: CalendarSettings, after: datetime, until: datetime) -> list[Slot]:
    """Slots with ``after < at <= until``."""
    out = []
    for slot in iter_slots(pub, calendar, after):
        if slot.at > until:
            break
        out.append(slot)
    return out


def next_slots(pub: Publication, calendar: CalendarSettings, after: datetime, count: int,
               *, with_skipped: bool = False) -> list[Slot]:
    """The next ``count`` slots that send (and, with ``with_skipped``, the skipped
    ones in between, which do not count)."""
    out: list[Slot] = []
    sending = skipped = 0
    for slot in iter_slots(pub, calendar, after):
        if slot.action == "send":
            sending += 1
            skipped = 0
            out.append(slot)
            if sending >= count:
                break
        else:
            skipped += 1
            if with_skipped:
                out.append(slot)
            if skipped >= _MAX_SKIPPED:
                break
    return out


def next_slot(pub: Publication, calendar: CalendarSettings, after: datetime) -> Slot | None:
    found = next_slots(pub, calendar, after, 1)
    return found[0] if found else None


@dataclass(frozen=True)
class Due:
    """What a tick does for one publication."""

    fire: Slot | None  # send this one now
    passed: tuple[tuple[Slot, str], ...]  # dealt with without sending, and why
    handled_until: datetime
    next: Slot | None  # the next slot that will send


def due_runs(pub: Publication, calendar: CalendarSettings, handled_until: datetime, now: datetime,
             *, paused: bool = False) -> Due:
    """The scheduling rules, pure: see the module docstring for the policy."""
    slots = slots_between(pub, calendar, handled_until, now) if now > handled_until else []
    passed: list[tuple[Slot, str]] = [(s, f"skipped: {s.reason}") for s in slots if s.action == "skip"]
    sendable = [s for s in slots if s.action == "send"]
    fire = None
    if paused:
        passed += [(s, "skipped: schedule paused") for s in sendable]
    elif sendable:
        latest = sendable[-1]
        passed += [(s, f"superseded by the slot of {latest.at.isoformat()}") for s in sendable[:-1]]
        late = now - latest.at
        if late <= timedelta(seconds=pub.misfire_grace):
            fire = latest
        else:
            passed.append((latest, f"missed by {_human(late)}, more than misfire_grace "
                                   f"({_human(timedelta(seconds=pub.misfire_grace))}): not sent"))
    passed.sort(key=lambda p: p[0].at)
    return Due(fire, tuple(passed), max(handled_until, now), next_slot(pub, calendar, max(handled_until, now)))


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h".replace(".0h", "h")
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def signature(pub: Publication) -> str:
    return f"{pub.schedule} | {pub.timezone} | on_holiday={pub.on_holiday}"


# -- 2. core: state + editions -------------------------------------------------------


def set_paused(engine: Engine, config: Config, publication: str, paused: bool, actor: Actor,
               *, now: datetime | None = None) -> bool:
    """Pause or resume a publication's schedule (``schedule pause/resume``, the
    console's 一時停止 / 再開): slots passing while paused are skipped, resuming
    counts from now.  One audit row when it changed; False when it already was so.
    A named actor needs the operate role (users.CAN)."""
    pub = config.publication(publication)
    if not actor.may("operate"):
        raise InputError(f"user {actor.name} ({actor.role}) may not {'pause' if paused else 'resume'} a schedule")
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        store.ensure(conn, pub.slug, now, signature(pub))
        changed = store.set_paused(conn, pub.slug, paused, now)
        if changed:
            audit_q.add(conn, at=now, actor=actor.name, interface=actor.interface,
                        action="schedule paused" if paused else "schedule resumed", publication=pub.slug,
                        detail=pub.schedule)
    return changed


@dataclass(frozen=True)
class ScheduleView:
    """One publication's schedule as ``schedule list`` and the console show it."""

    publication: Publication
    paused: bool
    paused_at: datetime | None
    slots: list[Slot]  # the next ones, skipped ones included
    last_slot: datetime | None
    last_run_at: datetime | None
    last_result: str | None


def overview(engine: Engine, config: Config, now: datetime, count: int = 5) -> list[ScheduleView]:
    """Every publication's schedule: paused or not, the next ``count`` sending slots
    (with the skipped ones between, :func:`next_slots`), the last run."""
    with engine.connect() as conn:
        states = store.all_states(conn)
    out = []
    for pub in config.publications:
        st = states.get(pub.slug)
        out.append(ScheduleView(pub, bool(st and st.paused), st.paused_at if st else None,
                                next_slots(pub, config.calendar, now, count, with_skipped=True),
                                st.last_slot if st else None, st.last_run_at if st else None,
                                st.last_result if st else None))
    return out


@dataclass(frozen=True)
class Run:
    """The outcome of firing one slot."""

    publication: str
    slot: datetime
    outcome: str  # "created" | "approved" (an approved edition sent) | "exists" | "nothing-new" | "skipped"
    edition_id: int | None = None
    number: int | None = None
    pending: int = 0
    skipped: int = 0
    articles: int = 0
    reason: str | None = None  # why a slot was skipped, when it was not "nothing approved"

    def describe(self) -> str:
        if self.outcome == "created":
            return f"created 第{self.number}号 ({self.articles} articles, {self.pending} to send)"
        if self.outcome == "approved":
            return f"sent approved 第{self.number}号 ({self.pending} to send)"
        if self.outcome == "exists":
            return f"第{self.number}号 already created for this slot"
        if self.outcome == "skipped":
            return f"slot skipped: {self.reason or 'nothing approved'}"
        return "nothing new to send"


class SchedulerCore:
    """``tick(now)``: fire what is due, by the rules of :func:`due_runs`, once per slot.

    ``create`` is :func:`newsletter.creation.create_edition` (tests wrap it to line
    two schedulers up on the same slot); ``on_created`` is called with each new
    edition's id (the daemon wakes its delivery worker).
    """

    def __init__(self, engine: Engine, config: Config, *, create: Callable = creation.create_edition,
                 on_created: Callable[[int], None] | None = None):
        self.engine = engine
        self.config = config
        self.create = create
        self.on_created = on_created

    def tick(self, now: datetime, only: str | None = None) -> list[Run]:
        runs = []
        for pub in self.config.publications:
            if only is not None and pub.slug != only:
                continue
            self.send_scheduled(pub, now)
            run = self.tick_publication(pub, now)
            if run is not None:
                runs.append(run)
        return runs

    def send_scheduled(self, pub: Publication, now: datetime) -> list[int]:
        """Start the editions scheduled for a one-off time that has come (予約配信),
        within the publication's misfire_grace; a later one goes back to approved,
        for a person to decide.  A paused schedule holds them.  Returns their ids."""
        with self.engine.connect() as conn:
            due = edition_q.scheduled_due(conn, pub.slug, now)
            paused = bool(due) and bool(getattr(store.get(conn, pub.slug), "paused", False))
        started = []
        for row in due if not paused else ():
            fields = {"publication": pub.slug, "edition": row.id, "number": row.number,
                      "slot": row.scheduled_for.isoformat()}
            late = now - row.scheduled_for
            if late > timedelta(seconds=pub.misfire_grace):
                if state.missed(self.engine, row, late, DAEMON, now=now):
                    log.warning("%s 第%d号: its time %s passed %s ago, more than misfire_grace: not sent; back to "
                                "approved", pub.slug, row.number, _local(row.scheduled_for, pub), _human(late),
                                extra={"event": "edition.schedule_missed", **fields})
                continue
            plan, refused = self.preflight(pub, now, row)
            if refused is not None:
                if state.hold_back(self.engine, row, f"not sent at its time {_local(row.scheduled_for, pub)}: "
                                   f"{refused}", DAEMON, now=now):
                    log.error("%s 第%d号: not sent at its scheduled time %s: %s; back to approved",
                              pub.slug, row.number, _local(row.scheduled_for, pub), refused,
                              extra={"event": "edition.held_back", **fields})
                continue
            try:
                result = state.start_sending(self.engine, self.config, row.id, DAEMON, now=now,
                                             checked=plan.content if plan is not None else None)
            except InputError as exc:  # unapproved meanwhile, or another daemon was first
                log.info("%s 第%d号: not started: %s", pub.slug, row.number, exc,
                         extra={"event": "edition.not_started", **fields})
                continue
            log.info("%s 第%d号: its scheduled time %s has come: sending, %d to send", pub.slug, row.number,
                     _local(row.scheduled_for, pub), result.pending,
                     extra={"event": "edition.scheduled_send", **fields, "counts": {"pending": result.pending}})
            started.append(row.id)
            if self.on_created is not None:
                self.on_created(row.id)
        return started

    def tick_publication(self, pub: Publication, now: datetime) -> Run | None:
        sig = signature(pub)
        with self.engine.begin() as conn:
            state = store.ensure(conn, pub.slug, now, sig)
            if state.signature != sig:
                log.info("schedule %s changed: %s (was %s)", pub.slug, sig, state.signature or "-",
                         extra={"event": "schedule.changed", "publication": pub.slug})
                store.change_signature(conn, pub.slug, sig, now)
        due = due_runs(pub, self.config.calendar, state.handled_until, now, paused=state.paused)
        for slot, why in due.passed:
            # A holiday or a pause is the plan; a slot lost to downtime is worth a warning.
            level = logging.INFO if slot.action == "skip" or state.paused else logging.WARNING
            log.log(level, "schedule %s: slot %s %s", pub.slug, _local(slot.planned, pub), why,
                    extra={"event": "schedule.slot_passed", "publication": pub.slug,
                           "slot": slot.at.isoformat(), "reason": why})
        run = self.fire(pub, due.fire, now) if due.fire is not None else None
        with self.engine.begin() as conn:
            store.advance(conn, pub.slug, due.handled_until, due.next.at if due.next else None, now)
            if run is not None:
                store.record_run(conn, pub.slug, run.slot, run.describe(), now)
            elif due.passed:
                slot, why = due.passed[-1]
                store.record_run(conn, pub.slug, slot.at, why, now)
        return run

    def fire(self, pub: Publication, slot: Slot, now: datetime) -> Run:
        """Create the edition of ``slot`` unless it exists; the unique key decides races."""
        moved = f" (moved from {_local(slot.planned, pub)}: {slot.reason})" if slot.shifted else ""
        for _attempt in range(3):
            with self.engine.connect() as conn:
                existing = store.edition_for_slot(conn, pub.slug, slot.at)
            if existing is not None:
                log.info("schedule %s: slot %s already has 第%d号; not creating another", pub.slug,
                         _local(slot.at, pub), existing.number,
                         extra={"event": "schedule.slot_exists", "publication": pub.slug,
                                "edition": existing.id, "number": existing.number, "slot": slot.at.isoformat()})
                return Run(pub.slug, slot.at, "exists", existing.id, existing.number)
            run = self.send_approved(pub, slot, now)
            if run == "again":
                continue
            if run is not None:
                return run
            plan, refused = self.preflight(pub, now)
            if refused is not None:
                with self.engine.begin() as conn:
                    state.record(conn, DAEMON, "not created", pub.slug, None, now,
                                 f"slot {_local(slot.at, pub)}: {refused}")
                log.error("schedule %s: slot %s%s: no edition created: %s", pub.slug, _local(slot.at, pub), moved,
                          refused, extra={"event": "schedule.preflight_failed", "publication": pub.slug,
                                          "slot": slot.at.isoformat()})
                return Run(pub.slug, slot.at, "skipped", reason=f"no edition created: {refused}")
            try:
                created = self.create(self.engine, self.config, pub, now=plan.when if plan else now,
                                      scheduled_for=slot.at, checked=plan.content if plan else None)
            except InputError:
                # Another scheduler created this slot's edition (or `edition send` took the
                # number) at the same moment: look again.
                continue
            if created is None:
                # Nothing new — possibly because another scheduler just took the articles
                # for this very slot: then say so.
                with self.engine.connect() as conn:
                    if store.edition_for_slot(conn, pub.slug, slot.at) is not None:
                        continue
                log.info("schedule %s: slot %s%s: nothing new to send", pub.slug, _local(slot.at, pub), moved,
                         extra={"event": "schedule.nothing_new", "publication": pub.slug,
                                "slot": slot.at.isoformat()})
                return Run(pub.slug, slot.at, "nothing-new")
            log.info("schedule %s: slot %s%s: created 第%d号, %d articles, %d to send, %d skipped",
                     pub.slug, _local(slot.at, pub), moved, created.number, created.articles, created.pending,
                     created.skipped,
                     extra={"event": "edition.created", "publication": pub.slug, "edition": created.edition_id,
                            "number": created.number, "slot": slot.at.isoformat(),
                            "counts": {"articles": created.articles, "pending": created.pending,
                                       "skipped": created.skipped}})
            if self.on_created is not None:
                self.on_created(created.edition_id)
            return Run(pub.slug, slot.at, "created", created.edition_id, created.number, created.pending,
                       created.skipped, created.articles)
        raise InputError(f"{pub.slug}: could not create the edition of {slot.at.isoformat()} (kept colliding)")

    def preflight(self, pub: Publication, now: datetime, edition=None):
        """The check ``edition send`` runs (:func:`newsletter.preflight.check`), on the
        edition about to start (or, without one, the next edition as it would be
        created): (the plan it checked, None) when it may go out, (plan, one line
        naming the errors) when it must not."""
        from .preflight import check

        plan, findings = check(self.engine, self.config, pub, now=now, edition=edition)
        errors = [f for f in findings if f.severity == "error"]
        if not errors:
            return plan, None
        shown = "; ".join(dict.fromkeys(f.message for f in errors[:5]))
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return plan, (f"the preflight check found {len(errors)} error(s): {shown}{more}; 'newsletter edition check "
                      f"{pub.slug}' shows them")

    def send_approved(self, pub: Publication, slot: Slot, now: datetime) -> Run | str | None:
        """At a slot: the oldest approved edition without a time of its own goes out;
        with ``approval = "required"`` and none, the slot is skipped.  None: create
        one from the queue as before; "again": another scheduler was first, look again."""
        with self.engine.connect() as conn:
            ready = edition_q.oldest_in(conn, pub.slug, ("approved",), unscheduled=True)
        fields = {"publication": pub.slug, "slot": slot.at.isoformat()}
        if ready is None:
            if pub.approval != "required":
                return None
            log.warning("schedule %s: slot %s skipped: nothing approved", pub.slug, _local(slot.at, pub),
                        extra={"event": "schedule.slot_skipped", **fields})
            return Run(pub.slug, slot.at, "skipped")
        plan, refused = self.preflight(pub, now, ready)
        if refused is not None:
            why = f"第{ready.number}号 not sent: {refused}"
            if state.hold_back(self.engine, ready, f"not sent at the slot {_local(slot.at, pub)}: {refused}",
                               DAEMON, now=now):
                log.error("schedule %s: slot %s: %s", pub.slug, _local(slot.at, pub), why,
                          extra={"event": "edition.held_back", **fields, "edition": ready.id,
                                 "number": ready.number})
            return Run(pub.slug, slot.at, "skipped", ready.id, ready.number, reason=why)
        try:
            started = state.start_sending(self.engine, self.config, ready.id, DAEMON, now=now, slot=slot.at,
                                          checked=plan.content if plan is not None else None)
        except state.Conflict:
            return "again"
        except InputError as exc:
            log.error("schedule %s: slot %s: 第%d号 not sent: %s", pub.slug, _local(slot.at, pub), ready.number, exc,
                      extra={"event": "schedule.error", **fields})
            return Run(pub.slug, slot.at, "skipped")
        log.info("schedule %s: slot %s: sending approved 第%d号, %d to send", pub.slug, _local(slot.at, pub),
                 ready.number, started.pending,
                 extra={"event": "edition.approved_send", **fields, "edition": ready.id, "number": ready.number,
                        "counts": {"pending": started.pending, "skipped": started.skipped}})
        if self.on_created is not None:
            self.on_created(ready.id)
        return Run(pub.slug, slot.at, "approved", ready.id, ready.number, started.pending, started.skipped)

    def run_now(self, pub: Publication, now: datetime) -> Run:
        """Fire an extra slot at ``now`` (to the second), whatever the schedule says."""
        at = now.replace(microsecond=0)
        run = self.fire(pub, Slot(at, at), now)
        with self.engine.begin() as conn:
            store.ensure(conn, pub.slug, now, signature(pub))
            store.record_run(conn, pub.slug, at, f"run-now: {run.describe()}", now)
        return run


def _local(dt: datetime, pub: Publication) -> str:
    return dt.astimezone(pub.tz).strftime("%Y-%m-%d %H:%M %Z")


# -- 3. APScheduler wiring -----------------------------------------------------------


class CalendarTrigger(BaseTrigger):
    """A publication's cron with its ``on_holiday`` rule, as an APScheduler trigger."""

    def __init__(self, pub: Publication, calendar: CalendarSettings):
        self.pub = pub
        self.calendar = calendar

    def get_next_fire_time(self, previous_fire_time, now):
        after = previous_fire_time if previous_fire_time is not None else now - _TICK
        slot = next_slot(self.pub, self.calendar, after)
        return slot.at if slot else None

    def __str__(self) -> str:
        return f"calendar[{signature(self.pub)}]"


class ScheduleRunner:
    """APScheduler 3 ``BackgroundScheduler``: one job per publication on its
    :class:`CalendarTrigger` calling ``tick(slug)``, and ``sync`` every
    ``poll_seconds``.  One executor thread: ticks never overlap each other."""

    def __init__(self, tick: Callable[[str | None], None], sync: Callable[[], None], poll_seconds: float):
        self._tick = tick
        self._sync = sync
        self.poll_seconds = poll_seconds
        self._applied: dict[str, str] = {}
        self._lock = threading.Lock()
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(1)},
            # Lateness is judged by the core (misfire_grace per publication), not here.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    def apply(self, config: Config) -> None:
        """(Re)install the publications' jobs whose schedule changed."""
        with self._lock:
            wanted = {p.slug: p for p in config.publications}
            for slug in list(self._applied):
                if slug not in wanted:
                    self.scheduler.remove_job(f"publication:{slug}")
                    del self._applied[slug]
            for slug, pub in wanted.items():
                key = f"{signature(pub)} | {config.calendar}"
                if self._applied.get(slug) == key:
                    continue
                self.scheduler.add_job(self._tick, CalendarTrigger(pub, config.calendar), args=[slug],
                                       id=f"publication:{slug}", name=f"publication {slug}", replace_existing=True)
                self._applied[slug] = key

    def start(self, config: Config) -> None:
        self.apply(config)
        self.scheduler.add_job(self._sync, IntervalTrigger(seconds=self.poll_seconds), id="sync", name="sync")
        self.scheduler.start()

    def next_run_times(self) -> dict[str, datetime | None]:
        return {job.id.split(":", 1)[1]: job.next_run_time
                for job in self.scheduler.get_jobs() if job.id.startswith("publication:")}

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
