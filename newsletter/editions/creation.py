"""Creating an edition: its content (from the queue, or a draft's) and its delivery rows.

Everything happens in one transaction: the edition row with its frozen content,
the articles it carries (marked published), and one delivery row per active
subscriber of the publication — ``pending`` with its variant key, or
``skipped`` when nothing in the edition is in that subscriber's fields.  The
delivery rows are the outbox: sending only ever works through them.

Rules it keeps:

- a subscriber is keyed to a variant in one place, :func:`variant_of`
  (:func:`readers` streams it, preflight counts the same keys this module writes;
  :func:`reader_counts`, the console's variant list, applies it to one GROUP BY);
- on PostgreSQL the delivery rows are written by one ``INSERT … SELECT``
  (a million rows in seconds, nothing per row in Python): :func:`variant_of` is
  applied in Python once per distinct (fields, format, charset, publications)
  of the readers, and the statement only joins each subscriber to the variant
  computed for its combination — the rule is not written twice.  A property
  test (tests/test_creation.py) holds the rows equal to :func:`readers`';
  SQLite writes them from :func:`readers` in chunks;
- checked = sent: given the content preflight checked (``checked``),
  :func:`create_edition` freezes exactly that, or refuses when the queue
  changed since the check (:func:`changed_since_check`); nothing unchecked
  goes out silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError

from ..config import Config, Publication
from ..errors import InputError
from ..sanitize import markdown_to_html
from ..store import articles as article_q
from ..store import editions as q
from ..store.tables import utcnow
from ..users import Actor
from .assemble import VariantKey, freeze, select_articles, variant_fields

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Created:
    edition_id: int
    number: int
    articles: int
    pending: int
    skipped: int


def next_content(
    conn: Connection, config: Config, pub: Publication, now: datetime, number: int | None = None
) -> dict[str, Any]:
    """What the next edition of ``pub`` would carry if created at ``now``."""
    carried = q.carried_article_ids(conn, pub.slug)
    rows = [r._asdict() for r in article_q.candidates(conn, fields=pub.fields, now=now, exclude_ids=carried)]
    chosen = select_articles(rows, pub.max_articles)
    return freeze(config, pub, number or q.next_number(conn, pub.slug), chosen, now)


def default_subject(content: Mapping[str, Any]) -> str:
    """The edition's default subject: :func:`editions.render.subject_line` on its top
    headline, the same rule a variant's template subject follows."""
    from .render import subject_line, subject_prefix

    return subject_line(subject_prefix(content), content["articles"][0]["title"] if content["articles"] else "")


def draft_content(
    config: Config, pub: Publication, number: int, article_rows: Sequence[Mapping[str, Any]], created: datetime,
    texts: Mapping[str, Any],
) -> dict[str, Any]:
    """A draft's content: the articles frozen as :func:`freeze` does, plus the editor's
    subject (None: the default, which follows the top headline), lead and afterword
    (Markdown, sanitized like article bodies)."""
    content = freeze(config, pub, number, article_rows, created)
    lead, afterword, subject = texts.get("lead") or "", texts.get("afterword") or "", texts.get("subject")
    content.update({
        "subject": subject or default_subject(content),
        "subject_custom": bool(subject),
        "lead": lead,
        "lead_html": markdown_to_html(lead) if lead.strip() else "",
        "afterword": afterword,
        "afterword_html": markdown_to_html(afterword) if afterword.strip() else "",
    })
    if "notice" in texts:  # the edition's own お知らせ (`edition set --notice-file`), else the publication's
        content["notice"] = texts["notice"] or None
    return content


def receives(pub: Publication, row) -> bool:
    return row.publications is None or pub.slug in row.publications.split(",")


def variant_of(pub: Publication, content: Mapping[str, Any], row) -> VariantKey | None:
    """The variant of ``content`` a subscriber gets, from the four columns that decide
    it (``row.fields``, ``format``, ``charset``, ``publications``); None when the
    subscriber does not read ``pub``.  ``key.fields`` empty: nothing in the edition
    is in their fields.  The one place that keys a subscriber to a variant."""
    if not receives(pub, row):
        return None
    return VariantKey(variant_fields(content, row.fields.split(",")), row.format, row.charset or pub.charset)


def readers(conn: Connection, pub: Publication, content: Mapping[str, Any]) -> Iterator[tuple[Row, VariantKey]]:
    """Every active subscriber of ``pub`` with the variant of ``content`` they get
    (:func:`variant_of`), streamed in id order.  Preflight counts from it."""
    for row in q.subscribers_for(conn, pub.fields):
        key = variant_of(pub, content, row)
        if key is not None:
            yield row, key


def reader_counts(conn: Connection, pub: Publication, content: Mapping[str, Any]) -> dict[VariantKey, int]:
    """How many readers of ``pub`` get each variant of ``content`` (those with
    nothing in their fields under a key with empty ``fields``), as :func:`readers`
    keys them, from one GROUP BY over the subscribers (a row per distinct profile)."""
    counts: dict[VariantKey, int] = {}
    for profile in q.subscriber_profiles(conn, pub.fields):
        key = variant_of(pub, content, profile)
        if key is not None:
            counts[key] = counts.get(key, 0) + profile.readers
    return counts


SKIPPED_REPLY = "nothing new in the subscriber's fields"


def _outcome(key: VariantKey) -> tuple[str, str | None]:
    """A delivery row's status and reply for a reader keyed to ``key``."""
    return ("pending", None) if key.fields else ("skipped", SKIPPED_REPLY)


def plan(
    conn: Connection, pub: Publication, content: dict[str, Any], edition_id: int, now: datetime
) -> tuple[int, int]:
    """Create the delivery rows; returns (pending, skipped)."""
    if conn.dialect.name == "postgresql":
        return plan_set_based(conn, pub, content, edition_id, now)
    return plan_streamed(conn, pub, content, edition_id, now)


def plan_set_based(
    conn: Connection, pub: Publication, content: dict[str, Any], edition_id: int, now: datetime
) -> tuple[int, int]:
    """:func:`plan` in one statement: :func:`variant_of` once per distinct combination
    of the deciding columns among the readers, then ``INSERT … SELECT`` joining each
    subscriber to its combination's variant (PostgreSQL)."""
    variants = []
    for combo in q.subscriber_profiles(conn, pub.fields):
        key = variant_of(pub, content, combo)
        if key is not None:
            status, reply = _outcome(key)
            variants.append({"fields": combo.fields, "format": combo.format, "charset": combo.charset,
                             "publications": combo.publications, "variant": key.encode(), "status": status,
                             "last_reply": reply})
    return q.insert_deliveries_by_combination(conn, edition_id, pub.fields, variants, now)


def plan_streamed(
    conn: Connection, pub: Publication, content: dict[str, Any], edition_id: int, now: datetime
) -> tuple[int, int]:
    """:func:`plan` row by row from :func:`readers`, inserted in chunks (SQLite)."""
    pending = skipped = 0
    batch: list[dict[str, Any]] = []
    for row, key in readers(conn, pub, content):
        status, reply = _outcome(key)
        if status == "pending":
            pending += 1
        else:
            skipped += 1
        batch.append({"edition_id": edition_id, "subscriber_id": row.id, "email": row.email,
                      "variant": key.encode(), "status": status, "last_reply": reply})
        if len(batch) >= q.CHUNK:
            q.insert_deliveries(conn, batch, now)
            batch = []
    q.insert_deliveries(conn, batch, now)
    return pending, skipped


def create_edition(
    engine: Engine, config: Config, pub: Publication, *, now: datetime | None = None,
    scheduled_for: datetime | None = None, actor: Actor | None = None, checked: Mapping[str, Any] | None = None,
) -> Created | None:
    """The next edition of ``pub``, created and ready to send in one step, or None when
    there is nothing new to carry.  Only for ``approval = "none"``: with ``"required"``
    an edition is a draft first (:func:`newsletter.editions.state.create_draft`).

    ``checked``: the content preflight checked (``preflight.Plan.content``, with
    ``now`` its ``when``).  What is frozen is exactly that content; if the queue
    changed since the check (an article added, edited or withdrawn, another edition
    created) nothing is created and an :class:`InputError` says what changed."""
    from . import state

    now = now or utcnow()
    actor = actor or Actor(None)
    state.check_may_send_unapproved(pub)
    try:
        with engine.begin() as conn:
            content = next_content(conn, config, pub, now)
            if checked is not None and content != checked:
                raise changed_since_check(pub.slug, checked, content)
            if not content["articles"]:
                return None
            edition_id = q.insert_edition(
                conn, publication=pub.slug, number=content["number"], content=content, now=now,
                scheduled_for=scheduled_for, created_by=actor.name,
            )
            pending, skipped = plan(conn, pub, content, edition_id, now)
            state.record(conn, actor, "created", pub.slug, edition_id, now,
                         f"第{content['number']}号, {len(content['articles'])} articles, sending at once "
                         f"({pending} to send)")
    except IntegrityError:
        # Another process created this number (or this scheduled slot) at the same time.
        raise InputError(f"{pub.slug}: an edition was created concurrently; try again") from None
    log.info("edition %s 第%d号 created: %d articles, %d to send, %d skipped",
             pub.slug, content["number"], len(content["articles"]), pending, skipped)
    return Created(edition_id, content["number"], len(content["articles"]), pending, skipped)


def changed_since_check(what: str, checked: Mapping[str, Any], now: Mapping[str, Any]) -> InputError:
    """The refusal when what would be sent is not what preflight checked."""
    from .state import changes

    if checked.get("number") != now.get("number"):
        why = f"another edition was created meanwhile (第{checked.get('number')}号 → 第{now.get('number')}号)"
    else:
        why = changes(checked, now)
    return InputError(f"{what}: the content changed since the check ({why}); nothing was sent — run "
                      "'edition send' again to check what would go out now")
