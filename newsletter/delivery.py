"""The delivery engine: claim due deliveries, compose, send, record.

Rules that keep data safe (see DESIGN.md):
- the delivery rows are the outbox; nothing is sent that has no row;
- rows are *claimed* with a lease (``lease_until``) and the run's random
  ``claim_token``, so two workers or two daemons never send the same row, and a
  crashed worker's rows come back when its lease runs out;
- **fencing**: a result is written only on a row the run still holds — still
  ``pending`` and still carrying its token (``store.editions.record``).  A row
  cancelled while its message was in flight (unsubscribe by CLI, one-click or
  webhook, a bounce, ``edition cancel``) stays ``cancelled``: it is never marked
  ``sent`` nor revived to ``pending`` by a temporary failure.  Such results are
  counted (``RunReport.lost_lease``) and logged.  Why a token and not the exact
  ``lease_until`` claimed: renewal moves ``lease_until``, and two runs reading the
  same clock can compute the same value; a random token per run cannot collide;
- **renewal**: while chunks are in flight (queued for a sending thread or at the
  provider) the recording thread extends all their leases once the oldest is
  half gone, checking at least every ``lease_seconds / 4`` (at most 1 s).  Rows a
  renewal finds no longer ours are not sent;
- **no lapsed claim goes out**: just before a chunk is handed to the provider its
  lease is checked against the clock; if it has lapsed (a forward clock step, a
  stalled process) the rows are given back unsent (``RunReport.given_back``).  The
  one window left: after a forward step larger than the remaining lease, another
  run that claims before the next renewal (at most a tick later) can take the
  chunk that is at the provider at that moment;
- **stopping** (``stop`` set: SIGTERM): no new claims; the chunk a sending
  thread has begun is finished and recorded, the chunks still queued go back
  unsent at once (``Report.released``), and a last fenced UPDATE by the run's
  token releases anything it still holds: another process claims them now
  instead of after the lease;
- each chunk's results are written in their own transaction *immediately*
  after the provider answers, so a crash can duplicate at most the chunks in
  flight (``connections`` × 2 chunks) and never loses a subscriber;
- a temporary failure is a row with ``next_attempt_at`` (exponential backoff
  with jitter), not a sleeping thread: ``edition send`` or the daemon picks it
  up later, after a restart too; after ``retry_for`` it becomes ``failed``;
- an *unknown* outcome (the whole message went out, no answer came) is retried
  once, with the same Message-ID so that a receiving system that got both can
  tell they are one message; a second unknown outcome is ``failed``.  Outside a
  crash this is the only way a reader can get a message twice;
- rendering happens once per variant (cached for the run), never per recipient;
- the engine reads a provider's typed answer (``SendResult.status``,
  ``bad_address``, ``throttled``, ``server_error``, ``retry_after``), never its
  reply text; a ``bad_address`` answer counts towards ``hard_bounce_limit``
  through :func:`newsletter.subscribers.count_bad_addresses`, which suppresses
  the address the one way every other path does.

Provider-wide answers (``SendResult.throttled`` / ``server_error``, set by the
providers; the engine never reads reply text for this) are not delivery attempts:
- a **throttle** (HTTP 429, SMTP 421 "too many connections") pauses every sending
  thread for the window the provider names (``retry_after``; THROTTLE_PAUSE when
  it names none) and the run carries on; the rows go back with ``attempts``
  unchanged.  A window longer than ``max_throttle_wait`` (default 60 s) stops the
  run instead: the rows wait with ``next_attempt_at`` at the window's end, and
  ``RunReport.waiting_until``/``waiting_for`` say when and why;
- a whole-request **server error** (HTTP 5xx, no answer before the request was
  read) pauses 1, 2, then 4 s (SERVER_ERROR_BACKOFF) and tries again; after that
  the rows are deferred like any temporary failure.

Concurrency: the calling thread claims, composes, records and renews (the
database work stays in one thread); ``connections`` worker threads each own one
provider instance (an SMTP session, an HTTP keep-alive connection) and only
send.  The queue between them is bounded, so memory stays flat whatever the
edition's size.

Limits: ``rate`` is a token bucket shared by all connections, on a monotonic
clock (injectable, apart from the wall clock used for leases and
``next_attempt_at``), so a wall-clock step neither stalls nor bursts it; a
rate-limited run waits for tokens and keeps going until nothing is due.
``hourly_quota`` and ``daily_quota`` count what was sent in the last hour/day
across editions (from the delivery log, so a restart does not reset them) plus
every live claim of every process (rows that may be at the provider now), counted
and claimed under one lock (the ``quota`` row of ``shared_limits``), so several
processes together never go over; when reached, they stop the run with
``waiting_until`` set — the edition stays ``sending`` and resumes when the window
reopens; ``domain_limits`` give groups of
recipient domains their own buckets, and rows of a throttled group are simply
not claimed while the others go on.

With ``shared`` (the daemon, ``newsletter worker``, ``edition send``) ``rate`` and
``domain_limits`` are token buckets in the database and a provider throttle pauses
every process (newsletter/workers.py): the limits hold for the sum of all
processes, on one host or many.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from .config import Config, DeliverySettings, Rate
from .editions import state
from .editions.assemble import VariantKey
from .editions.compose import Recipient, Sending, compose
from .editions.render import Rendered, render_variant
from .errors import NewsletterError
from .interfaces import OutgoingMessage, Provider, SendResult
from .links import Tracking
from .providers import open_provider
from .replies import enhanced_status, is_bad_address_code
from .store import editions as q
from .store.editions import load_content
from .store.tables import utcnow
from .subscribers import count_bad_addresses
from .users import Actor

log = logging.getLogger(__name__)

FIRST_RETRY = timedelta(minutes=2)
MAX_BACKOFF = timedelta(hours=6)
# A provider-wide throttle that names no window pauses the run this long (seconds).
THROTTLE_PAUSE = 5.0
# A whole-request server error is tried again in the same run after these pauses, then deferred.
SERVER_ERROR_BACKOFF = (1.0, 2.0, 4.0)
# The shared_limits row whose lock makes counting a quota and claiming under it one step.
QUOTA_ROW = "quota"
# How often a run's claim starts from the edition's first row instead of its cursor
# (see DeliveryRun._claim_rows): the longest a due retry or a lapsed claim of a
# crashed process waits behind rows further on.
FULL_SCAN_EVERY = 30.0


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """2, 4, 8 ... minutes (capped at 6 h), with ±20 % jitter so retries spread out."""
    base = min(FIRST_RETRY * (2 ** max(attempts - 1, 0)), MAX_BACKOFF)
    return base * (rng or random).uniform(0.8, 1.2)


def sending_for(config: Config, edition) -> Sending:
    """What every mail of the edition row shares (sender, site, signed-link key)."""
    return sending(config, edition.publication, edition.id, edition.created_at)


def sending(config: Config, publication: str, edition_id: int, created_at: datetime) -> Sending:
    """The same from plain values (a test send of an edition not created yet: id 0)."""
    pub = config.publication(publication)
    return Sending(
        edition_id=edition_id,
        edition_stamp=int(created_at.timestamp()),
        publication_slug=pub.slug,
        publication_title=pub.title,
        timezone=pub.timezone,
        from_name=config.sender.name,
        from_address=config.sender.address,
        reply_to=config.sender.reply_to,
        envelope_from=config.sender.bounce_address or config.sender.address,
        base_url=config.site.base_url,
        domain=config.site.domain,
        unsubscribe_mailto=config.sender.unsubscribe_mailto,
        key=config.secret(),
        tracking=pub.tracking,
    )


class Variants:
    """Renders each variant the first time it is needed and keeps it for the run.

    Preflight renders through one of these (``preflight.Plan.renders``) and
    ``edition send`` hands it to the engine, which uses it when it is for the
    edition's content and time (:meth:`serves`): a checked send renders once."""

    def __init__(self, config: Config, content: dict[str, Any], when: datetime, *,
                 tracking: Tracking | None = None):
        self.config = config
        self.tracking = tracking  # tracked links (issue 15), for an edition whose publication tracks
        self.content = content
        self.when = when
        self._cache: dict[tuple[tuple[str, ...], str], Rendered] = {}
        self._text_only: dict[tuple, Rendered] = {}
        self.renders = 0

    def serves(self, content: dict[str, Any], when: datetime) -> bool:
        return self.content == content and self.when == when

    def get(self, key: VariantKey) -> Rendered:
        html = key.format == "html"
        base = (key.fields, key.charset)
        rendered = self._cache.get(base)
        if rendered is None or (html and rendered.html is None):
            # First use of these fields, or only the text had been needed so far.
            rendered = render_variant(self.content, key.fields, self.config.templates_dir, when=self.when,
                                      html=html, charset=key.charset, tracking=self.tracking)
            self._cache[base] = rendered
            self.renders += 1
        if not html and rendered.html is not None:
            # A text-only reader gets the same text part as the HTML readers of these fields.
            key_text = (key.fields, key.charset, "text")
            if key_text not in self._text_only:
                self._text_only[key_text] = dataclasses.replace(rendered, html=None)
            return self._text_only[key_text]
        return rendered


class TokenBucket:
    """``rate`` tokens a second, holding at most a second's worth (at least one).

    Fed with a monotonic clock (seconds, any origin): a wall-clock step must
    neither stall it nor hand out a burst."""

    def __init__(self, rate: Rate, now: float):
        self.per_second = rate.per_second
        self.capacity = max(1.0, self.per_second)
        self.tokens = self.capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.per_second)
            self.stamp = now

    def available(self, now: float) -> int:
        self._refill(now)
        return int(self.tokens + 1e-9)  # 0.9999999 after an exact wait is a whole token

    def take(self, n: int, now: float) -> None:
        self._refill(now)
        self.tokens -= n

    def wait(self, now: float) -> float:
        """Seconds until one token is there (0 when there is one now)."""
        self._refill(now)
        if self.tokens + 1e-9 >= 1:
            return 0.0
        return max((1 - self.tokens) / self.per_second, 0.001)


@dataclass
class RunReport:
    """What one delivery run of an edition did (:func:`deliver` returns it)."""

    edition_id: int
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    bounced: int = 0
    batches: int = 0
    renders: int = 0  # variants rendered for this send (preflight's renders included when it made them)
    throttled: int = 0  # put back unsent by a provider-wide throttle or server error (no attempt counted)
    lost_lease: int = 0  # results not written: the row was no longer this run's (cancelled, or re-claimed)
    given_back: int = 0  # claimed rows handed back unsent because their lease had lapsed
    released: int = 0  # claimed rows handed back unsent because the run was stopping (SIGTERM)
    finished: bool = False
    paused: str | None = None  # why the run stopped with the edition paused
    waiting_until: datetime | None = None  # a quota is full, or the provider throttles, until then
    waiting_for: str | None = None  # which of the two, in words
    failures: list[str] = field(default_factory=list)


@dataclass(eq=False)
class _Chunk:
    messages: list[OutgoingMessage]
    rows: dict[int, Any]
    lease_until: datetime
    results: list[SendResult] | None = None
    error: BaseException | None = None
    # Set under DeliveryRun.lock: rows found no longer ours by a renewal (not to be sent) ...
    dropped: set[int] = field(default_factory=set)
    # ... and, by the sending thread, what it handed over, or why it handed over nothing.
    sent: list[OutgoingMessage] = field(default_factory=list)
    unsent: str | None = None
    blocking: bool = False  # its answer holds the sending threads back until it is recorded


_STOP = object()


class _Worker(threading.Thread):
    def __init__(self, provider: Provider, inbox: queue.Queue, outbox: queue.Queue, name: str,
                 gate: Callable[[_Chunk], list[OutgoingMessage]], sent: Callable[[_Chunk], None]):
        super().__init__(name=name, daemon=True)
        self.provider = provider
        self.inbox = inbox
        self.outbox = outbox
        self.gate = gate
        self.sent = sent

    def run(self) -> None:
        while True:
            chunk = self.inbox.get()
            if chunk is _STOP:
                return
            try:
                messages = self.gate(chunk)
                chunk.results = self.provider.send(messages) if messages else []
                self.sent(chunk)
            except BaseException as exc:  # noqa: BLE001 - handed to the recording thread
                chunk.error = exc
            self.outbox.put(chunk)


class DeliveryRun:
    """One edition, sent until nothing is due (or a stop, a pause, a quota, a long throttle)."""

    def __init__(
        self,
        engine: Engine,
        config: Config,
        edition_id: int,
        providers: list[Provider],
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
        batch_size: int | None = None,
        on_batch: Callable[[RunReport], None] | None = None,
        variants: Variants | None = None,
        shared: bool = False,
        slice_seconds: float | None = None,
    ):
        self.seed = variants
        self.engine = engine
        self.config = config
        self.settings: DeliverySettings = config.delivery
        self.edition_id = edition_id
        self.providers = providers
        self.clock = clock
        self.sleep = sleep
        self.monotonic = monotonic
        self.stop = stop or threading.Event()
        self.on_batch = on_batch
        max_batch = min(p.max_batch for p in providers)
        self.chunk_size = max(1, min(batch_size or self.settings.batch_size, max_batch))
        self.report = RunReport(edition_id)
        # Fair sharing: after this long (monotonic) no new claims; what is in flight is
        # sent and recorded as usual, and the caller turns to the next edition.
        self.slice_end = self.monotonic() + slice_seconds if slice_seconds else float("inf")
        self.consecutive_errors = 0
        self.server_errors = 0  # whole-request server errors since the last accepted message
        self.token = secrets.token_hex(16)  # marks the rows this run claims (store.editions: fencing)
        self.lease = timedelta(seconds=self.settings.lease_seconds)
        # How long the recording thread may block before it looks at the leases again.
        self.tick = min(1.0, self.settings.lease_seconds / 4)
        mono = self.monotonic()
        # shared: limits kept in the database for every sending process (workers.py);
        # else this process's own buckets, on the injectable monotonic clock.
        self.shared = shared
        if shared:
            from .workers import SharedBucket, domain_key

            self.bucket = SharedBucket(engine, "rate", self.settings.rate, mono) if self.settings.rate else None
            self.domain_buckets = [(lim.domains, SharedBucket(engine, domain_key(lim.domains), lim.rate, mono))
                                   for lim in self.settings.domain_limits]
        else:
            self.bucket = TokenBucket(self.settings.rate, mono) if self.settings.rate else None
            self.domain_buckets = [(lim.domains, TokenBucket(lim.rate, mono))
                                   for lim in self.settings.domain_limits]
        self.limited_domains = [d for lim in self.settings.domain_limits for d in lim.domains]
        self.quotas = [(quota, period) for quota, period in ((self.settings.hourly_quota, timedelta(hours=1)),
                                                             (self.settings.daily_quota, timedelta(days=1)))
                       if quota is not None]
        self.inbox: queue.Queue = queue.Queue(maxsize=len(providers) * 2)
        self.outbox: queue.Queue = queue.Queue()
        self.in_flight = 0
        self.held: list[_Chunk] = []  # claimed and not yet recorded: their leases are renewed
        self.lock = threading.Lock()
        self.pause_until = float("-inf")  # monotonic: no chunk goes to the provider before then
        self.blocked = 0  # chunks answered with a throttle or server error that are not recorded yet
        self.resume_at: datetime | None = None  # rows given back during a long throttle are due then
        # The highest id this run has claimed, per claim (domain group or the rest): the
        # next claim's scan starts after it (_claim_rows).
        self.cursors: dict[tuple[str, ...] | None, int] = {}
        self.full_scan_at = mono  # monotonic: the next claim that starts from the first row

    # -- the run --------------------------------------------------------------------

    def run(self) -> RunReport:
        with self.engine.connect() as conn:
            edition = q.get_edition(conn, self.edition_id)
        if edition is None:
            raise ValueError(f"no edition {self.edition_id}")
        if edition.status != "sending":
            return self.report
        content, when = load_content(edition), edition.scheduled_for or edition.created_at
        self.sending = sending_for(self.config, edition)
        tracking = (Tracking(self.config.site.base_url, self.sending.key, edition.id)
                    if self.sending.tracking != "off" else None)
        # Preflight's renders are reused when they are this edition's content and time.  Not
        # with tracking: tracked links name the edition's id, which the check did not have yet
        # (the same content, rendered once more with its links rewritten).
        seeded = tracking is None and self.seed is not None and self.seed.serves(content, when)
        self.variants = self.seed if seeded else Variants(self.config, content, when, tracking=tracking)
        self.eight_bit = all(bool(getattr(p, "accepts_8bit", False)) for p in self.providers)
        workers = [_Worker(p, self.inbox, self.outbox, f"send-{i}", self._gate, self._sent)
                   for i, p in enumerate(self.providers)]
        for w in workers:
            w.start()
        error: BaseException | None = None
        # The sending threads spend their time waiting for the server; when its reply
        # comes they need the GIL back at once, not after the default 5 ms slice of the
        # thread that composes.  (Process-wide, so restored afterwards.)
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, 0.0005))
        try:
            self._loop()
        except BaseException as exc:
            error = exc
        finally:
            sys.setswitchinterval(switch)
            # Whatever happened, every message handed over gets its result recorded,
            # and the leases of what is still out are kept alive meanwhile.
            while self.in_flight:
                try:
                    chunk = self.outbox.get(timeout=self.tick)
                except queue.Empty:
                    self._renew()
                    continue
                try:
                    self._record(chunk)
                except BaseException as exc:
                    error = error or exc
            for _ in workers:
                self.inbox.put(_STOP)
            for w in workers:
                w.join()
            self._release_all()
        if error is not None:
            raise error
        if not self.report.paused:
            with self.engine.begin() as conn:
                self.report.finished = state.finish(conn, self.edition_id, self.clock())
        self.report.renders = self.variants.renders
        return self.report

    def _loop(self) -> None:
        last_status_check = float("-inf")
        while not self.stop.is_set() and self.monotonic() < self.slice_end:
            self._drain(block=False)
            if self.report.paused or self.report.waiting_until:
                return
            self._renew()
            mono = self.monotonic()
            if mono - last_status_check >= 1.0:
                last_status_check = mono
                if not self._still_sending():
                    return
                if self.shared and mono >= self.pause_until:
                    self._shared_pause(mono)
            if self.in_flight >= len(self.providers) * 2:
                self._drain(block=True)
                continue
            pause = self.pause_until - mono
            if pause > 0:  # the provider asked for a break: hold back, keep the leases
                if self.in_flight:
                    self._drain(block=True)
                else:
                    self.sleep(min(pause, self.tick))
                continue
            budget = self._budget()
            if budget == 0:  # the rate bucket is empty: wait for a token, then go on
                if self.in_flight:
                    self._drain(block=True)
                else:
                    wait = self.bucket.wait(self.monotonic()) if self.bucket is not None else 0.0
                    if wait:
                        self.sleep(min(wait, self.tick))
                continue
            claimed = self._claim(budget)
            if claimed is None:  # a quota is full
                return
            rows, lease_until, throttled_wait = claimed
            if not rows:
                if self.in_flight:
                    self._drain(block=True)
                    continue
                if throttled_wait:
                    self.sleep(min(throttled_wait, self.tick))
                    continue
                return
            self._dispatch(rows, lease_until)

    def _shared_pause(self, mono: float) -> None:
        """A throttle another process met holds this one back too (workers.py)."""
        from .workers import pause_left

        left, reason = pause_left(self.engine)
        if left > 0 and mono + left > self.pause_until:
            with self.lock:
                self.pause_until = max(self.pause_until, mono + left)
            log.info("edition %s: another process met a provider throttle (%s): pausing %.1f s",
                     self.edition_id, (reason or "")[:200], left)

    def _release_all(self) -> None:
        """Whatever this run still holds goes back at once (fenced by its token), so
        another process need not wait for the lease to lapse."""
        try:
            with self.engine.begin() as conn:
                n = q.release(conn, self.edition_id, self.token)
        except Exception:  # noqa: BLE001 - the leases lapse anyway
            log.warning("edition %s: could not release the claims of this run", self.edition_id, exc_info=True)
            return
        if n:
            self.report.released += n
            log.info("edition %s: %d claimed deliveries released unsent", self.edition_id, n)

    def _still_sending(self) -> bool:
        with self.engine.connect() as conn:
            edition = q.get_edition(conn, self.edition_id)
        if edition.status == "sending":
            return True
        log.info("edition %s is %s: stopping", self.edition_id, edition.status)
        return False

    def _budget(self) -> int:
        """How many messages the rate allows now (0: wait for a token)."""
        budget = self.chunk_size
        if self.bucket is not None:
            budget = min(budget, self.bucket.available(self.monotonic()))
        return max(budget, 0)

    def _quota_room(self, conn, now_dt: datetime) -> int | None:
        """How many more messages the quotas allow now, or None when one is full.

        Called in the claim's transaction with the ``quota`` row locked: what counts
        as used is what was sent in the period *and* every live claim of every process
        (:func:`store.editions.claimed_now`: rows that may be at the provider now), and
        no other process claims between this count and the claim it limits.  A claim
        becomes ``sent`` in the statement that ends it, so a message is counted once,
        from its claim until its period is over; the processes together never go over."""
        room: int | None = None
        for quota, period in self.quotas:
            used = q.sent_since(conn, now_dt - period) + q.claimed_now(conn, now_dt)
            if used >= quota:
                # The oldest sent message whose period must end before one more fits (the
                # claims count until they are sent: their period starts later).
                oldest = q.nth_sent_since(conn, now_dt - period, used - quota) or now_dt
                self.report.waiting_until = oldest + period
                self.report.waiting_for = "quota reached"
                note = (f"quota of {quota} per {'hour' if period.days == 0 else 'day'} reached; "
                        f"resumes after {self.report.waiting_until.isoformat(timespec='seconds')}")
                log.info("edition %s: %s", self.edition_id, note)
                q.set_note(conn, self.edition_id, note)
                return None
            room = quota - used if room is None else min(room, quota - used)
        return room

    def _claim(self, budget: int) -> tuple[list, datetime, float] | None:
        """Rows to send now, their lease, and how long to wait when only throttled
        domains have due rows; None when a quota is full."""
        now_dt = self.clock()
        mono = self.monotonic()
        lease = now_dt + self.lease
        rows: list = []
        wait = 0.0
        # Asked before the transaction: a shared bucket fetches its grant on a connection
        # of its own, which must not wait for the quota lock this transaction takes (on
        # SQLite, the database's one write lock, held by this very process).
        room = [bucket.available(mono) for _, bucket in self.domain_buckets]
        with self.engine.begin() as conn:
            if self.quotas:
                # One process at a time counts and claims (workers.py: the quota row).
                from .store import workers as shared_q

                shared_q.hold(conn, QUOTA_ROW)
                allowed = self._quota_room(conn, now_dt)
                if allowed is None:
                    return None
                budget = min(budget, allowed)
            for (domains, bucket), available in zip(self.domain_buckets, room, strict=True):
                n = min(budget - len(rows), available)
                if n > 0:
                    got = self._claim_rows(conn, tuple(domains), now_dt, n, lease, domains=domains)
                    bucket.take(len(got), mono)
                    rows += got
                elif budget > len(rows) and self._has_due(conn, tuple(domains), now_dt, domains):
                    w = bucket.wait(mono)
                    wait = w if not wait else min(wait, w)
            if budget > len(rows):
                rows += self._claim_rows(conn, None, now_dt, budget - len(rows), lease,
                                         exclude_domains=self.limited_domains)
        if mono >= self.full_scan_at:
            self.full_scan_at = mono + FULL_SCAN_EVERY
        if self.bucket is not None and rows:
            self.bucket.take(len(rows), mono)
        return rows, lease, wait

    def _claim_rows(self, conn, key: tuple[str, ...] | None, now_dt: datetime, n: int, lease: datetime,
                    **where) -> list:
        """Claim up to ``n`` rows, the scan starting after this run's cursor.

        Rows are claimed in id order, so the rows before the cursor were sent, are in
        flight or wait for a retry.  Without the cursor every claim walked them all:
        when the statistics still said "all pending" (an edition just created, as
        ANALYZE last saw it) PostgreSQL scanned the primary key from the first row
        and read every sent row again, 27 ms a claim by the end of 100,000
        (bench/scale.py: 54 of its 58 CPU seconds).  Rows that become due behind the
        cursor (a retry, a claim given back or lapsed) are found when the rows after
        it run out, and by the claim that starts from the first row every
        FULL_SCAN_EVERY seconds: oldest first, within that."""
        after = 0 if self.monotonic() >= self.full_scan_at else self.cursors.get(key, 0)
        rows = q.claim(conn, self.edition_id, now_dt, n, lease, token=self.token, after=after, **where)
        if len(rows) < n and after:
            rows += q.claim(conn, self.edition_id, now_dt, n - len(rows), lease, token=self.token, **where)
        if rows:
            self.cursors[key] = max(self.cursors.get(key, 0), max(r.id for r in rows))
        return sorted(rows, key=lambda r: r.id)

    def _has_due(self, conn, key: tuple[str, ...], now_dt: datetime, domains: Sequence[str]) -> bool:
        """Whether ``domains`` have a due row: after the cursor first (cheap), else from the first row."""
        after = self.cursors.get(key, 0)
        return (bool(after) and q.has_due(conn, self.edition_id, now_dt, domains, after=after)) or \
            q.has_due(conn, self.edition_id, now_dt, domains)

    def _dispatch(self, rows: list, lease_until: datetime) -> None:
        now = self.clock()
        messages: list[OutgoingMessage] = []
        updates: list[dict[str, Any]] = []
        for row in rows:
            try:
                key = VariantKey.decode(row.variant)
                rendered = self.variants.get(key)
                messages.append(compose(
                    rendered,
                    Recipient(row.id, row.subscriber_id or 0, row.email, row.name or ""),
                    self.sending, charset=key.charset, now=now, msgid=row.message_id, eight_bit=self.eight_bit,
                ))
            except Exception as exc:  # a message we cannot build must not stop the others
                # Our own errors (a template that does not render) are one line; a bug keeps its traceback.
                log.error("delivery %s: cannot compose: %s", row.id, exc,
                          exc_info=not isinstance(exc, NewsletterError))
                updates.append({"id": row.id, "status": "failed", "attempts": row.attempts + 1,
                                "last_reply": f"compose error: {exc}"[:1000], "lease_until": None})
        if updates:
            with self.engine.begin() as conn:
                written = q.record(conn, updates, now, token=self.token)
            self.report.failed += len(written)
            self.report.lost_lease += len(updates) - len(written)
            emails = {r.id: r.email for r in rows}
            self.report.failures += [f"{emails[u['id']]}: {u['last_reply']}" for u in updates if u["id"] in written]
        if messages:
            composed = {m.delivery_id for m in messages}
            chunk = _Chunk(messages, {r.id: r for r in rows if r.id in composed}, lease_until)
            self.held.append(chunk)
            self.inbox.put(chunk)
            self.in_flight += 1

    # -- leases -----------------------------------------------------------------------

    def _gate(self, chunk: _Chunk) -> list[OutgoingMessage]:
        """Called by a sending thread just before it hands ``chunk`` to the provider:
        what it may send.  Nothing while the provider asked for a pause, nothing once
        the chunk's lease has lapsed by the clock (another run may hold those rows
        now: they go back unsent), never a row a renewal found no longer ours."""
        with self.lock:
            if self.stop.is_set():  # stopping (SIGTERM): what has not started goes back at once
                chunk.unsent = "released"
            elif self.blocked or self.monotonic() < self.pause_until:
                chunk.unsent = "paused"
            elif self.clock() >= chunk.lease_until:
                chunk.unsent = "lease lapsed"
            else:
                chunk.sent = [m for m in chunk.messages if m.delivery_id not in chunk.dropped]
            return chunk.sent

    def _sent(self, chunk: _Chunk) -> None:
        """Called by a sending thread when the provider has answered: a throttle or a
        server error holds every sending thread back at once, until the recording
        thread has read the answer and set the pause."""
        if any(r.throttled or r.server_error for r in chunk.results or ()):
            with self.lock:
                chunk.blocking = True
                self.blocked += 1

    def _renew(self) -> None:
        """Keep the leases of every chunk in flight: once the oldest is half gone,
        extend them all (fenced by the run's token).  Rows that are no longer ours
        (cancelled meanwhile, or re-claimed after a lapse) are marked not to be sent."""
        if not self.held:
            return
        now = self.clock()
        if min(c.lease_until for c in self.held) - now > self.lease / 2:
            return
        until = now + self.lease
        ids = [i for c in self.held for i in c.rows]
        with self.engine.begin() as conn:
            kept = q.renew(conn, ids, self.token, until)
        lost = [i for i in ids if i not in kept]
        with self.lock:
            for c in self.held:
                c.lease_until = until
                c.dropped.update(i for i in c.rows if i not in kept)
        if lost:
            log.warning("edition %s: %d claimed deliveries are no longer this run's (cancelled, or claimed "
                        "by another run after their lease lapsed); they will not be sent from here: ids %s",
                        self.edition_id, len(lost), _ids(lost))

    # -- results ----------------------------------------------------------------------

    def _drain(self, *, block: bool) -> None:
        while self.in_flight:
            try:
                chunk = self.outbox.get(block=block, timeout=self.tick if block else None)
            except queue.Empty:
                return
            self._record(chunk)
            block = False

    def _record(self, chunk: _Chunk) -> None:
        self.in_flight -= 1
        self.held.remove(chunk)
        now = self.clock()
        updates: list[tuple[dict[str, Any], str]] = []  # (columns, what it counts as)
        if chunk.unsent is not None:
            # Handed back unsent: not an attempt; due again at once (or when a long throttle ends).
            kind = {"paused": "throttled", "released": "released"}.get(chunk.unsent, "given_back")
            until = self.resume_at if kind == "throttled" else None
            updates = [({"id": i, "next_attempt_at": until}, kind) for i in chunk.rows]
            if kind == "given_back":
                log.warning("edition %s: %d claimed deliveries not sent: their lease lapsed before they could "
                            "be handed over (a clock step?); given back", self.edition_id, len(chunk.rows))
        else:
            results = chunk.results or []
            if chunk.error is not None:
                log.error("provider failed on a batch of %d: %s", len(chunk.sent), chunk.error)
                results = []
            by_id = {r.delivery_id: r for r in results}
            wide: list[tuple[Any, SendResult]] = []
            for message in chunk.sent:
                result = by_id.get(message.delivery_id) or SendResult(
                    message.delivery_id, "transient",
                    reply=f"provider error: {chunk.error}" if chunk.error else "provider returned no result",
                )
                row = chunk.rows[message.delivery_id]
                if result.status == "transient" and (result.throttled or result.server_error):
                    wide.append((row, result))
                else:
                    updates.append(self._outcome(row, message, result, now))
            if wide:
                updates += self._provider_wide(wide, chunk, now)
        if chunk.blocking:  # the pause its answer calls for is set now
            with self.lock:
                self.blocked -= 1
        with self.engine.begin() as conn:
            written = q.record(conn, [u for u, _ in updates], now, token=self.token)
            hard_bounces: dict[int, str] = {}  # subscriber id -> reason
            lost = []
            for update, kind in updates:
                if update["id"] not in written:
                    if kind not in ("throttled", "given_back", "released"):  # unsent: nothing was lost
                        lost.append(update["id"])
                    continue
                if kind == "bounce":
                    kind = "failed"
                    row = chunk.rows[update["id"]]
                    if row.subscriber_id:
                        hard_bounces[row.subscriber_id] = f"hard bounce: {update['last_reply']}"
                setattr(self.report, kind, getattr(self.report, kind) + 1)
                if kind == "failed":
                    self.report.failures.append(f"{chunk.rows[update['id']].email}: {update['last_reply']}")
            if hard_bounces:
                suppressed = count_bad_addresses(conn, hard_bounces, limit=self.settings.hard_bounce_limit,
                                                 source="delivery")
                self.report.bounced += len(suppressed)
            if self.consecutive_errors >= self.settings.max_errors and not self.report.paused:
                last = next((u.get("last_reply", "") for u, k in reversed(updates) if k in ("failed", "bounce")), "")
                reason = (f"paused after {self.consecutive_errors} permanent failures in a row "
                          f"(last: {last[:200]}); check the provider, then "
                          f"'newsletter edition resume'")
                if state.pause_for_errors(conn, self.edition_id, reason, now):
                    self.report.paused = reason
                    log.error("edition %s %s", self.edition_id, reason)
            if self.report.waiting_for and self.report.waiting_until and self.resume_at:
                q.set_note(conn, self.edition_id, f"{self.report.waiting_for}; resumes after "
                                                  f"{self.report.waiting_until.isoformat(timespec='seconds')}")
        if lost:
            self.report.lost_lease += len(lost)
            log.warning("edition %s: %d results not recorded: the deliveries were no longer this run's "
                        "(cancelled meanwhile, or claimed by another run after their lease lapsed): ids %s",
                        self.edition_id, len(lost), _ids(lost))
        self.report.batches += 1
        if chunk.error is not None and not isinstance(chunk.error, Exception):
            raise chunk.error
        if self.on_batch:
            self.on_batch(self.report)
        if chunk.error is not None and _is_config_error(chunk.error):
            raise chunk.error

    def _provider_wide(self, items: list[tuple[Any, SendResult]], chunk: _Chunk,
                       now: datetime) -> list[tuple[dict[str, Any], str]]:
        """Results that are about the provider, not the recipients: a throttle pauses
        the run for the window the provider named (or THROTTLE_PAUSE), a server error
        for 1, 2, 4 s; the rows go back without counting an attempt.  A throttle longer
        than ``max_throttle_wait`` stops the run instead, the rows due when it ends.
        Server errors past SERVER_ERROR_BACKOFF are deferred like any temporary failure."""
        throttles = [r for _, r in items if r.throttled]
        if throttles:
            named = [r.retry_after for r in throttles if r.retry_after is not None]
            wait = max(named) if named else THROTTLE_PAUSE
            what = "throttled"
        elif self.server_errors < len(SERVER_ERROR_BACKOFF):
            wait = SERVER_ERROR_BACKOFF[self.server_errors]
            self.server_errors += 1
            what = "server error"
        else:
            return [self._outcome(row, _message_for(chunk, row.id), result, now) for row, result in items]
        reply = items[0][1].reply
        with self.lock:
            self.pause_until = max(self.pause_until, self.monotonic() + wait)
        if self.shared and throttles:  # the provider throttles us all, not this process
            from .workers import pause_everyone

            pause_everyone(self.engine, wait, reply)
        if wait > self.settings.max_throttle_wait_seconds:
            until = now + timedelta(seconds=wait)
            if self.resume_at is None or until > self.resume_at:
                self.resume_at = until
            self.report.waiting_until = self.resume_at
            self.report.waiting_for = f"the provider throttles sending for {wait:.0f} s ({reply[:200]})"
            log.warning("edition %s: %s: stopping until %s", self.edition_id, self.report.waiting_for,
                        self.resume_at.isoformat(timespec="seconds"))
        else:
            log.info("edition %s: %s (%s): pausing %.1f s", self.edition_id, what, reply[:200], wait)
        return [({"id": row.id, "last_reply": result.reply[:1000], "next_attempt_at": self.resume_at}, "throttled")
                for row, result in items]

    def _outcome(self, row, message: OutgoingMessage, result: SendResult,
                 now: datetime) -> tuple[dict[str, Any], str]:
        attempts = row.attempts + 1
        base = {"id": row.id, "attempts": attempts, "message_id": message.message_id,
                "last_reply": result.reply[:1000], "lease_until": None}
        if result.status == "accepted":
            self.consecutive_errors = 0
            self.server_errors = 0
            return {**base, "status": "sent", "provider_id": result.provider_id, "next_attempt_at": None}, "sent"
        if result.status == "permanent":
            self.consecutive_errors += 1
            return self._failed(base, result.reply), "bounce" if result.bad_address else "failed"
        self.consecutive_errors = 0
        if now - row.created_at >= timedelta(seconds=self.settings.retry_for_seconds):
            return self._failed(base, f"gave up after {attempts} attempts: {result.reply}"), "failed"
        if result.status == "unknown":
            if row.unknown_outcomes >= 1:
                return self._failed(base, f"outcome unknown twice: {result.reply}"), "failed"
            return {**base, "status": "pending", "unknown_outcomes": row.unknown_outcomes + 1,
                    "next_attempt_at": now + backoff(attempts)}, "unknown"
        delay = backoff(attempts)
        if result.retry_after is not None:
            delay = max(delay, timedelta(seconds=result.retry_after))
        return {**base, "status": "pending", "next_attempt_at": now + delay}, "deferred"

    @staticmethod
    def _failed(base: dict[str, Any], reply: str) -> dict[str, Any]:
        return {**base, "status": "failed", "last_reply": reply[:1000], "next_attempt_at": None}


def _message_for(chunk: _Chunk, delivery_id: int) -> OutgoingMessage:
    return next(m for m in chunk.sent if m.delivery_id == delivery_id)


def _ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:20]))
    return shown + (f" … ({len(ids) - 20} more)" if len(ids) > 20 else "")


def _is_config_error(exc: BaseException) -> bool:
    from .errors import ConfigError

    return isinstance(exc, ConfigError)


def deliver(
    engine: Engine,
    config: Config,
    edition_id: int,
    *,
    opener: Callable[[], Provider] | None = None,
    variants: Variants | None = None,
    clock: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    stop: threading.Event | None = None,
    batch_size: int | None = None,
    on_batch: Callable[[RunReport], None] | None = None,
    shared: bool = False,
    slice_seconds: float | None = None,
) -> RunReport:
    """Send every due delivery of the edition; returns what happened.

    The engine opens its ``connections`` providers (``opener``, default
    :func:`open_provider` of ``config``) and closes every one of them: whoever
    opens a provider closes it.  ``variants``: renders made already (preflight's,
    ``preflight.Plan.renders``), used when they are for this edition's content.
    ``shared``: the limits are kept in the database for every sending process
    (workers.py).  ``slice_seconds``: claim no more after this long (the daemon's
    turn between editions sending at once); the edition stays ``sending``.
    """
    opener = opener or (lambda: open_provider(config))
    providers: list[Provider] = []
    try:
        while len(providers) < config.delivery.connections:
            providers.append(opener())
        return DeliveryRun(
            engine, config, edition_id, providers, clock=clock, sleep=sleep, monotonic=monotonic, stop=stop,
            batch_size=batch_size, on_batch=on_batch, variants=variants, shared=shared,
            slice_seconds=slice_seconds,
        ).run()
    finally:
        for p in providers:
            try:
                p.close()
            except Exception:  # noqa: BLE001 - closing must not hide the run's own outcome
                log.warning("closing a provider failed", exc_info=True)


def counts_text(counts: dict[str, int]) -> str:
    """``pending=3 sent=10 failed=0 skipped=0 …``: the four always, the rest when not 0."""
    return " ".join(f"{k}={v}" for k, v in counts.items() if v or k in ("pending", "sent", "failed", "skipped"))


@dataclass(frozen=True)
class RunSummary:
    """After a run: the edition's counts, status and next retry, and the words the
    CLI prints and the daemon logs (``label``: 第N号 of which publication; ``text``:
    what this run did and the totals)."""

    counts: dict[str, int]
    status: str
    next_retry: datetime | None
    label: str
    text: str


def summarize(engine: Engine, edition_id: int, report: RunReport) -> RunSummary:
    with engine.connect() as conn:
        counts = q.counts(conn, edition_id)
        retry = q.next_retry(conn, edition_id)
        row = q.get_edition(conn, edition_id)
    text = (f"this run sent {report.sent}, failed {report.failed}, deferred {report.deferred + report.unknown}; "
            f"total {counts_text(counts)}")
    return RunSummary(counts, row.status, retry, f"{row.publication} 第{row.number}号", text)


PROGRESS_WINDOW = timedelta(minutes=5)
_MIN_ELAPSED = timedelta(seconds=10)  # a rate over less than this is noise


@dataclass(frozen=True)
class Progress:
    """Where one edition's sending stands (the console's live figures).

    ``pending`` is what can go now (or is in flight); ``deferred`` waits for a
    retry after a temporary failure (``next_retry``: the first of them); the
    rate counts results (sent or failed) over the last ``window`` — or since the
    first result in it, when sending began later — and ``eta`` is the pending
    and deferred rows at that rate, not before the next retry (None while
    nothing moves)."""

    edition_id: int
    status: str
    sent: int
    pending: int
    deferred: int
    failed: int
    skipped: int
    cancelled: int
    per_minute: float
    window_minutes: float
    eta: datetime | None
    next_retry: datetime | None
    at: datetime

    def as_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["per_minute"] = round(self.per_minute, 1)
        for key in ("eta", "next_retry", "at"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


def progress(engine: Engine, edition_id: int, now: datetime | None = None,
             window: timedelta = PROGRESS_WINDOW) -> Progress | None:
    """The edition's :class:`Progress` at ``now``; None when there is no such edition."""
    now = now or datetime.now(UTC)
    since = now - window
    with engine.connect() as conn:
        row = q.get_edition(conn, edition_id)
        if row is None:
            return None
        counts = q.counts(conn, edition_id)
        deferred = q.deferred_count(conn, edition_id, now)
        recent, first = q.results_since(conn, edition_id, since)
        retry = q.next_retry(conn, edition_id) if deferred else None
    elapsed = max(now - max(since, first or since), _MIN_ELAPSED)
    per_minute = recent / (elapsed.total_seconds() / 60) if recent else 0.0
    left = counts["pending"]
    eta = now + timedelta(minutes=left / per_minute) if left and per_minute else None
    if eta is not None and retry is not None:
        eta = max(eta, retry)  # the deferred ones go no sooner than their retry
    return Progress(edition_id, row.status, counts["sent"], left - deferred, deferred, counts["failed"],
                    counts["skipped"], counts["cancelled"], per_minute, window.total_seconds() / 60, eta, retry, now)


def edition_eta(engine: Engine, edition_id: int, now: datetime | None = None) -> tuple[float, datetime | None]:
    """(messages per second over the last minute, estimated finish): :func:`progress`
    over one minute, for the daemon's log and ``edition status``."""
    p = progress(engine, edition_id, now, timedelta(minutes=1))
    if p is None:
        return 0.0, None
    return p.per_minute / 60.0, p.eta


# -- failures: which may be sent again ------------------------------------------------


def not_retryable(row) -> str | None:
    """Why a failed delivery must not be sent again, or None when it may.

    Not retried: a bad address (a 5.1.x reply: the mailbox or domain does not
    exist), a subscriber who is no longer active (unsubscribed, bounced,
    complained, erased since), and a message whose outcome was ever unknown (it
    may have arrived; sending it again would break the promise that this is the
    only duplicate).  Everything else is: policy and other 5xx replies, a
    provider or outbox error, a compose error, retries that ran out of time."""
    if is_bad_address_code(enhanced_status(row.last_reply or "")):
        return "bad address (5.1.x)"
    if row.subscriber_status is None:
        return "subscriber erased"
    if row.subscriber_status != "active":
        return f"subscriber {row.subscriber_status}"
    if row.unknown_outcomes:
        return "may have been delivered (no answer after sending)"
    return None


@dataclass
class Requeue:
    """What :func:`retry_failed` did (or, with ``dry_run``, would do)."""

    requeued: int = 0
    kept: dict[str, int] = field(default_factory=dict)  # reason -> how many stay failed
    reopened: bool = False  # the edition was done and is sending again


def retry_failed(engine: Engine, edition_id: int, *, dry_run: bool = False,
                 now: datetime | None = None, actor: Actor | None = None) -> Requeue:
    """Put the edition's retryable failed deliveries (:func:`not_retryable`) back to
    pending, due at once; a ``done`` edition becomes ``sending`` again
    (:func:`editions.state.reopen`, by ``actor``) so that ``edition send --edition N``
    or the daemon delivers them.  One transaction."""
    from .errors import InputError

    now = now or utcnow()
    out = Requeue()
    with engine.begin() as conn:
        edition = q.get_edition(conn, edition_id)
        if edition.status == "cancelled":
            raise InputError(f"{edition.publication} 第{edition.number}号 is cancelled; its deliveries are not "
                             "sent again")
        ids = []
        for row in q.failed_deliveries(conn, edition_id):
            reason = not_retryable(row)
            if reason is None:
                ids.append(row.id)
            else:
                out.kept[reason] = out.kept.get(reason, 0) + 1
        if dry_run:
            out.requeued = len(ids)
            return out
        out.requeued = q.requeue_failed(conn, ids, now)
        if out.requeued and edition.status == "done":
            out.reopened = state.reopen(conn, edition_id, out.requeued, actor or Actor(None, "cli"), now)
    return out
