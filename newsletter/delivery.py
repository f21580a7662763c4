"""The delivery engine: claim a batch of due deliveries, compose, send, record.

Rules that keep data safe (see DESIGN.md):
- the delivery rows are the outbox; nothing is sent that has no row;
- each batch's results are written in their own transaction *immediately*
  after the provider answers, so a crash can duplicate at most the batch in
  flight and never loses a subscriber;
- a transient failure is a row with ``next_attempt_at`` (exponential backoff
  with jitter), not a sleeping thread: ``edition send`` or the daemon picks it
  up later, after a restart too; after ``RETRY_FOR`` it becomes ``failed``;
- rendering happens once per variant (cached for the run), never per recipient.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from .config import Config
from .editions.assemble import VariantKey
from .editions.compose import Recipient, Sending, compose
from .editions.render import Rendered, render_variant
from .interfaces import OutgoingMessage, Provider, SendResult
from .publish import load_content
from .store import editions as q
from .store.tables import utcnow

log = logging.getLogger(__name__)

RETRY_FOR = timedelta(days=3)
FIRST_RETRY = timedelta(minutes=2)
MAX_BACKOFF = timedelta(hours=6)


def backoff(attempts: int, rng: random.Random = random) -> timedelta:  # type: ignore[assignment]
    """2, 4, 8 ... minutes (capped at 6 h), with ±20 % jitter so retries spread out."""
    base = min(FIRST_RETRY * (2 ** max(attempts - 1, 0)), MAX_BACKOFF)
    return base * rng.uniform(0.8, 1.2)


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
    )


class Variants:
    """Renders each variant the first time it is needed and keeps it for the run."""

    def __init__(self, config: Config, content: dict[str, Any], when: datetime):
        self.config = config
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
                                      html=html, charset=key.charset)
            self._cache[base] = rendered
            self.renders += 1
        if not html and rendered.html is not None:
            # A text-only reader gets the same text part as the HTML readers of these fields.
            key_text = (key.fields, key.charset, "text")
            if key_text not in self._text_only:
                self._text_only[key_text] = Rendered(
                    rendered.subject, None, rendered.text, rendered.article_ids, rendered.language)
            return self._text_only[key_text]
        return rendered


@dataclass
class Report:
    edition_id: int
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    batches: int = 0
    renders: int = 0
    finished: bool = False
    failures: list[str] = field(default_factory=list)


def deliver(
    engine: Engine,
    config: Config,
    edition_id: int,
    provider: Provider,
    *,
    clock: Callable[[], datetime] = utcnow,
    batch_size: int | None = None,
    on_batch: Callable[[Report], None] | None = None,
) -> Report:
    """Send every due delivery of the edition; returns what happened."""
    with engine.connect() as conn:
        edition = q.get_edition(conn, edition_id)
    if edition is None:
        raise ValueError(f"no edition {edition_id}")
    report = Report(edition_id)
    if edition.status != "sending":
        return report
    content = load_content(edition)
    variants = Variants(config, content, edition.scheduled_for or edition.created_at)
    sending = sending_for(config, edition)
    size = min(batch_size or provider.max_batch, provider.max_batch)

    while True:
        now = clock()
        with engine.connect() as conn:
            rows = q.due(conn, edition_id, now, size)
        if not rows:
            break
        messages: list[OutgoingMessage] = []
        updates: list[dict[str, Any]] = []
        for row in rows:
            try:
                key = VariantKey.decode(row.variant)
                rendered = variants.get(key)
                messages.append(compose(
                    rendered,
                    Recipient(row.id, row.subscriber_id or 0, row.email, row.name or ""),
                    sending, charset=key.charset, now=now, msgid=row.message_id,
                ))
            except Exception as exc:  # a message we cannot build must not stop the others
                log.exception("delivery %s: cannot compose", row.id)
                updates.append({"id": row.id, "status": "failed", "attempts": row.attempts + 1,
                                "last_reply": f"compose error: {exc}"[:1000]})
                report.failed += 1
        results = provider.send(messages) if messages else []
        by_id = {r.delivery_id: r for r in results}
        rows_by_id = {r.id: r for r in rows}
        for message in messages:
            result = by_id.get(message.delivery_id) or SendResult(
                message.delivery_id, "transient", reply="provider returned no result for this message"
            )
            updates.append(_outcome(rows_by_id[message.delivery_id], message, result, now, report))
        with engine.begin() as conn:
            q.record(conn, updates)
        report.batches += 1
        report.renders = variants.renders
        if on_batch:
            on_batch(report)

    with engine.begin() as conn:
        if q.pending_count(conn, edition_id) == 0:
            q.set_status(conn, edition_id, "done", finished=clock())
            report.finished = True
    return report


def _outcome(row, message: OutgoingMessage, result: SendResult, now: datetime, report: Report) -> dict[str, Any]:
    attempts = row.attempts + 1
    base = {"id": row.id, "attempts": attempts, "message_id": message.message_id, "last_reply": result.reply[:1000]}
    if result.status == "accepted":
        report.sent += 1
        return {**base, "status": "sent", "provider_id": result.provider_id, "next_attempt_at": None}
    if result.status == "transient" and now - row.created_at < RETRY_FOR:
        delay = backoff(attempts)
        if result.retry_after is not None:
            delay = max(delay, timedelta(seconds=result.retry_after))
        report.deferred += 1
        return {**base, "status": "pending", "next_attempt_at": now + delay}
    report.failed += 1
    report.failures.append(f"{row.email}: {result.reply}")
    return {**base, "status": "failed", "next_attempt_at": None}
