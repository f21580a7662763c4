"""The delivery engine: claim due deliveries, compose, send, record.

Rules that keep data safe (see DESIGN.md):
- the delivery rows are the outbox; nothing is sent that has no row;
- rows are *claimed* with a lease (``lease_until``), so two workers or two
  daemons never send the same row, and a crashed worker's rows come back when
  its lease runs out;
- each chunk's results are written in their own transaction *immediately*
  after the provider answers, so a crash can duplicate at most the chunks in
  flight (``connections`` × the provider's batch) and never loses a subscriber;
- a temporary failure is a row with ``next_attempt_at`` (exponential backoff
  with jitter), not a sleeping thread: ``edition send`` or the daemon picks it
  up later, after a restart too; after ``retry_for`` it becomes ``failed``;
- an *unknown* outcome (the whole message went out, no answer came) is retried
  once, with the same Message-ID so that a receiving system that got both can
  tell they are one message; a second unknown outcome is ``failed``;
- rendering happens once per variant (cached for the run), never per recipient;
- the engine reads a provider's typed answer (``SendResult.status``,
  ``bad_address``, ``retry_after``), never its reply text; a ``bad_address``
  answer counts towards ``hard_bounce_limit`` through
  :func:`newsletter.subscribers.count_bad_addresses`, which suppresses the
  address the one way every other path does.

Concurrency: the calling thread claims, composes and records (the database
work stays in one thread); ``connections`` worker threads each own one provider
instance (an SMTP session, an HTTP keep-alive connection) and only send.  The
queue between them is bounded, so memory stays flat whatever the edition's size.

Limits: ``rate`` is a token bucket shared by all connections; ``hourly_quota``
and ``daily_quota`` count what was sent in the last hour/day across editions
(from the delivery log, so a restart does not reset them) and, when reached,
stop the run with ``waiting_until`` set — the edition stays ``sending`` and
resumes when the window reopens; ``domain_limits`` give groups of recipient
domains their own buckets, and rows of a throttled group are simply not claimed
while the others go on.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from .config import Config, DeliverySettings, Rate
from .editions.assemble import VariantKey
from .editions.compose import Recipient, Sending, compose
from .editions.render import Rendered, render_variant
from .errors import NewsletterError
from .interfaces import OutgoingMessage, Provider, SendResult
from .links import Tracking
from .providers import open_provider
from .publish import load_content
from .replies import enhanced_status, is_bad_address_code
from .store import editions as q
from .store.tables import utcnow
from .subscribers import count_bad_addresses

log = logging.getLogger(__name__)

FIRST_RETRY = timedelta(minutes=2)
MAX_BACKOFF = timedelta(hours=6)


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """2, 4, 8 ... minutes (capped at 6 h), with ±20 % jitter so retries spread out."""
    base = min(FIRST_RETRY * (2 ** max(attempts - 1, 0)), MAX_BACKOFF)
    return base * (rng or random).uniform(0.8, 1.2)


def sending_for(config: Config, edition) -> Sending:
    pub = config.publication(edition.publication)
    return Sending(
        edition_id=edition.id,
        edition_stamp=int(edition.created_at.timestamp()),
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
    """Renders each variant the first time it is needed and keeps it for the run."""

    def __init__(self, config: Config, content: dict[str, Any], when: datetime, *,
                 tracking: Tracking | None = None):
        self.config = config
        self.tracking = tracking  # tracked links (issue 15), for an edition whose publication tracks
        self.content = content
        self.when = when
        self._cache: dict[tuple[tuple[str, ...], str], Rendered] = {}
        self._text_only: dict[tuple, Rendered] = {}
        self.renders = 0

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
    """``rate`` tokens a second, holding at most a second's worth (at least one)."""

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
        """Seconds until one token is there."""
        self._refill(now)
        if self.tokens + 1e-9 >= 1:
            return 0.0
        return max((1 - self.tokens) / self.per_second, 0.001)


@dataclass
class Report:
    edition_id: int
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    bounced: int = 0
    batches: int = 0
    renders: int = 0
    finished: bool = False
    paused: str | None = None  # why the run stopped with the edition paused
    waiting_until: datetime | None = None  # a quota is full until then
    failures: list[str] = field(default_factory=list)


@dataclass
class _Chunk:
    messages: list[OutgoingMessage]
    rows: dict[int, Any]
    results: list[SendResult] | None = None
    error: BaseException | None = None


_STOP = object()


class _Worker(threading.Thread):
    def __init__(self, provider: Provider, inbox: queue.Queue, outbox: queue.Queue, name: str):
        super().__init__(name=name, daemon=True)
        self.provider = provider
        self.inbox = inbox
        self.outbox = outbox

    def run(self) -> None:
        while True:
            chunk = self.inbox.get()
            if chunk is _STOP:
                return
            try:
                chunk.results = self.provider.send(chunk.messages)
            except BaseException as exc:  # noqa: BLE001 - handed to the recording thread
                chunk.error = exc
            self.outbox.put(chunk)


class DeliveryRun:
    """One edition, sent until nothing is due (or a stop, a pause, a quota)."""

    def __init__(
        self,
        engine: Engine,
        config: Config,
        edition_id: int,
        providers: list[Provider],
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
        batch_size: int | None = None,
        on_batch: Callable[[Report], None] | None = None,
    ):
        self.engine = engine
        self.config = config
        self.settings: DeliverySettings = config.delivery
        self.edition_id = edition_id
        self.providers = providers
        self.clock = clock
        self.sleep = sleep
        self.stop = stop or threading.Event()
        self.on_batch = on_batch
        max_batch = min(p.max_batch for p in providers)
        self.chunk_size = max(1, min(batch_size or self.settings.batch_size, max_batch))
        self.report = Report(edition_id)
        self.consecutive_errors = 0
        now = self._now()
        self.bucket = TokenBucket(self.settings.rate, now) if self.settings.rate else None
        self.domain_buckets = [(lim.domains, TokenBucket(lim.rate, now)) for lim in self.settings.domain_limits]
        self.limited_domains = [d for lim in self.settings.domain_limits for d in lim.domains]
        self.inbox: queue.Queue = queue.Queue(maxsize=len(providers) * 2)
        self.outbox: queue.Queue = queue.Queue()
        self.in_flight = 0

    def _now(self) -> float:
        return self.clock().timestamp()

    # -- the run --------------------------------------------------------------------

    def run(self) -> Report:
        with self.engine.connect() as conn:
            edition = q.get_edition(conn, self.edition_id)
        if edition is None:
            raise ValueError(f"no edition {self.edition_id}")
        if edition.status != "sending":
            return self.report
        self.sending = sending_for(self.config, edition)
        tracking = (Tracking(self.config.site.base_url, self.sending.key, edition.id)
                    if self.sending.tracking != "off" else None)
        self.variants = Variants(self.config, load_content(edition), edition.scheduled_for or edition.created_at,
                                 tracking=tracking)
        self.eight_bit = all(bool(getattr(p, "accepts_8bit", False)) for p in self.providers)
        workers = [_Worker(p, self.inbox, self.outbox, f"send-{i}") for i, p in enumerate(self.providers)]
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
            # Whatever happened, every message handed over gets its result recorded.
            while self.in_flight:
                self._record(self.outbox.get())
            for _ in workers:
                self.inbox.put(_STOP)
            for w in workers:
                w.join()
        if error is not None:
            raise error
        with self.engine.begin() as conn:
            if q.pending_count(conn, self.edition_id) == 0 and not self.report.paused:
                current = q.get_edition(conn, self.edition_id)
                if current.status == "sending":
                    q.set_status(conn, self.edition_id, "done", finished=self.clock())
                    self.report.finished = True
        self.report.renders = self.variants.renders
        return self.report

    def _loop(self) -> None:
        last_status_check = 0.0
        while not self.stop.is_set():
            self._drain(block=False)
            if self.report.paused:
                return
            now = self._now()
            if now - last_status_check >= 1.0:
                last_status_check = now
                if not self._still_sending():
                    return
            if self.in_flight >= len(self.providers) * 2:
                self._drain(block=True)
                continue
            budget = self._budget()
            if budget is None:  # a quota is full
                return
            rows, throttled_wait = self._claim(budget)
            if not rows:
                if self.in_flight:
                    self._drain(block=True)
                    continue
                wait = throttled_wait
                if budget == 0 and self.bucket is not None:
                    wait = self.bucket.wait(self._now())
                if wait:
                    self.sleep(min(wait, 1.0))
                    continue
                return
            self._dispatch(rows)

    def _still_sending(self) -> bool:
        with self.engine.connect() as conn:
            edition = q.get_edition(conn, self.edition_id)
        if edition.status == "sending":
            return True
        log.info("edition %s is %s: stopping", self.edition_id, edition.status)
        return False

    def _budget(self) -> int | None:
        """How many messages may be claimed now (0: wait for the rate), or None when a quota is full."""
        budget = self.chunk_size
        now_dt = self.clock()
        for quota, period in ((self.settings.hourly_quota, timedelta(hours=1)),
                              (self.settings.daily_quota, timedelta(days=1))):
            if quota is None:
                continue
            with self.engine.connect() as conn:
                used = q.sent_since(conn, now_dt - period) + self._in_flight_messages()
                if used >= quota:
                    oldest = q.nth_sent_since(conn, now_dt - period, used - quota) or now_dt
                    self.report.waiting_until = oldest + period
                    note = (f"quota of {quota} per {'hour' if period.days == 0 else 'day'} reached; "
                            f"resumes after {self.report.waiting_until.isoformat(timespec='seconds')}")
                    log.info("edition %s: %s", self.edition_id, note)
                    with self.engine.begin() as wconn:
                        q.set_note(wconn, self.edition_id, note)
                    return None
            budget = min(budget, quota - used)
        if self.bucket is not None:
            budget = min(budget, self.bucket.available(self._now()))
        return max(budget, 0)

    def _in_flight_messages(self) -> int:
        return self.in_flight * self.chunk_size

    def _claim(self, budget: int) -> tuple[list, float]:
        """Rows to send now, and how long to wait when only throttled domains have due rows."""
        now_dt = self.clock()
        now = now_dt.timestamp()
        lease = now_dt + timedelta(seconds=self.settings.lease_seconds)
        rows: list = []
        wait = 0.0
        with self.engine.begin() as conn:
            for domains, bucket in self.domain_buckets:
                n = min(budget - len(rows), bucket.available(now))
                if n > 0:
                    got = q.claim(conn, self.edition_id, now_dt, n, lease, domains=domains)
                    bucket.take(len(got), now)
                    rows += got
                elif budget > len(rows) and q.has_due(conn, self.edition_id, now_dt, domains):
                    w = bucket.wait(now)
                    wait = w if not wait else min(wait, w)
            if budget > len(rows):
                rows += q.claim(conn, self.edition_id, now_dt, budget - len(rows), lease,
                                exclude_domains=self.limited_domains)
        if self.bucket is not None and rows:
            self.bucket.take(len(rows), now)
        return rows, wait

    def _dispatch(self, rows: list) -> None:
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
                self.report.failed += 1
                self.report.failures.append(f"{row.email}: compose error: {exc}")
        if updates:
            with self.engine.begin() as conn:
                q.record(conn, updates, now)
        if messages:
            self.inbox.put(_Chunk(messages, {r.id: r for r in rows}))
            self.in_flight += 1

    def _drain(self, *, block: bool) -> None:
        while self.in_flight:
            try:
                chunk = self.outbox.get(block=block, timeout=1.0 if block else None)
            except queue.Empty:
                return
            self._record(chunk)
            block = False

    def _record(self, chunk: _Chunk) -> None:
        self.in_flight -= 1
        now = self.clock()
        results = chunk.results or []
        if chunk.error is not None:
            log.error("provider failed on a batch of %d: %s", len(chunk.messages), chunk.error)
            results = []
        by_id = {r.delivery_id: r for r in results}
        updates = []
        hard_bounces: dict[int, str] = {}  # subscriber id -> reason
        for message in chunk.messages:
            result = by_id.get(message.delivery_id) or SendResult(
                message.delivery_id, "transient",
                reply=f"provider error: {chunk.error}" if chunk.error else "provider returned no result",
            )
            row = chunk.rows[message.delivery_id]
            update = self._outcome(row, message, result, now)
            updates.append(update)
            if update["status"] == "failed" and result.status == "permanent" and result.bad_address:
                if row.subscriber_id:
                    hard_bounces[row.subscriber_id] = f"hard bounce: {result.reply}"
        with self.engine.begin() as conn:
            q.record(conn, updates, now)
            if hard_bounces:
                suppressed = count_bad_addresses(conn, hard_bounces, limit=self.settings.hard_bounce_limit,
                                                 source="delivery")
                self.report.bounced += len(suppressed)
            if self.consecutive_errors >= self.settings.max_errors and not self.report.paused:
                reason = (f"paused after {self.consecutive_errors} permanent failures in a row "
                          f"(last: {updates[-1].get('last_reply', '')[:200]}); check the provider, then "
                          f"'newsletter edition resume'")
                q.set_status(conn, self.edition_id, "paused", note=reason)
                self.report.paused = reason
                log.error("edition %s %s", self.edition_id, reason)
        self.report.batches += 1
        if chunk.error is not None and not isinstance(chunk.error, Exception):
            raise chunk.error
        if self.on_batch:
            self.on_batch(self.report)
        if chunk.error is not None and _is_config_error(chunk.error):
            raise chunk.error

    def _outcome(self, row, message: OutgoingMessage, result: SendResult, now: datetime) -> dict[str, Any]:
        attempts = row.attempts + 1
        base = {"id": row.id, "attempts": attempts, "message_id": message.message_id,
                "last_reply": result.reply[:1000], "lease_until": None}
        if result.status == "accepted":
            self.report.sent += 1
            self.consecutive_errors = 0
            return {**base, "status": "sent", "provider_id": result.provider_id, "next_attempt_at": None}
        if result.status == "permanent":
            self.consecutive_errors += 1
            return self._failed(row, base, result.reply)
        self.consecutive_errors = 0
        if now - row.created_at >= timedelta(seconds=self.settings.retry_for_seconds):
            return self._failed(row, base, f"gave up after {attempts} attempts: {result.reply}")
        if result.status == "unknown":
            if row.unknown_outcomes >= 1:
                return self._failed(row, base, f"outcome unknown twice: {result.reply}")
            self.report.unknown += 1
            return {**base, "status": "pending", "unknown_outcomes": row.unknown_outcomes + 1,
                    "next_attempt_at": now + backoff(attempts)}
        delay = backoff(attempts)
        if result.retry_after is not None:
            delay = max(delay, timedelta(seconds=result.retry_after))
        self.report.deferred += 1
        return {**base, "status": "pending", "next_attempt_at": now + delay}

    def _failed(self, row, base: dict[str, Any], reply: str) -> dict[str, Any]:
        self.report.failed += 1
        self.report.failures.append(f"{row.email}: {reply}")
        return {**base, "status": "failed", "last_reply": reply[:1000], "next_attempt_at": None}


def _is_config_error(exc: BaseException) -> bool:
    from .errors import ConfigError

    return isinstance(exc, ConfigError)


def deliver(
    engine: Engine,
    config: Config,
    edition_id: int,
    provider: Provider | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
    batch_size: int | None = None,
    on_batch: Callable[[Report], None] | None = None,
) -> Report:
    """Send every due delivery of the edition; returns what happened.

    ``provider`` is used for the first connection (the caller closes it); the
    engine opens and closes the other ``connections - 1`` itself.
    """
    own: list[Provider] = []
    providers: list[Provider] = []
    if provider is not None:
        providers.append(provider)
    try:
        while len(providers) < config.delivery.connections:
            p = open_provider(config)
            own.append(p)
            providers.append(p)
        return DeliveryRun(
            engine, config, edition_id, providers, clock=clock, sleep=sleep, stop=stop,
            batch_size=batch_size, on_batch=on_batch,
        ).run()
    finally:
        for p in own:
            try:
                p.close()
            except Exception:  # noqa: BLE001 - closing must not hide the run's own outcome
                log.warning("closing a provider failed", exc_info=True)


def edition_eta(engine: Engine, edition_id: int, now: datetime | None = None) -> tuple[float, datetime | None]:
    """(messages per second over the last minute, estimated finish) from the delivery log."""
    now = now or datetime.now(UTC)
    with engine.connect() as conn:
        recent = q.rate_since(conn, edition_id, now - timedelta(minutes=1))
        pending = q.pending_count(conn, edition_id)
    rate = recent / 60.0
    if not pending or not rate:
        return rate, None
    return rate, now + timedelta(seconds=pending / rate)


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
                 now: datetime | None = None) -> Requeue:
    """Put the edition's retryable failed deliveries (:func:`not_retryable`) back to
    pending, due at once; a ``done`` edition becomes ``sending`` again so that
    ``edition send --edition N`` or the daemon delivers them.  One transaction."""
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
            # TODO(editions/state.py): this transition belongs with the others once that module exists.
            q.set_status(conn, edition_id, "sending",
                         note=f"{out.requeued} failed deliveries put back to pending by an operator")
            out.reopened = True
    return out
