"""Queries on subscribers and their consent records.

The rule for stopping mail to an address is not here but in
:func:`newsletter.subscribers.suppress`, which strings these queries together
in one transaction; nothing else should call :func:`mark_suppressed` or
:func:`cancel_pending_deliveries`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection, Row

from .articles import field_filter
from .tables import consents, deliveries, subscribers, utcnow

STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
# An import or an operator's "add" never brings these back: the person said no,
# or the address does not work.
SUPPRESSED = ("unsubscribed", "bounced", "complained")
CHUNK = 500


def get_by_email(conn: Connection, email: str) -> Row | None:
    return conn.execute(select(subscribers).where(subscribers.c.email == email)).first()


def by_emails(conn: Connection, emails: Sequence[str]) -> dict[str, Row]:
    out: dict[str, Row] = {}
    for i in range(0, len(emails), CHUNK):
        chunk = emails[i : i + CHUNK]
        for row in conn.execute(select(subscribers).where(subscribers.c.email.in_(chunk))):
            out[row.email] = row
    return out


def insert_many(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    now = utcnow()
    for i in range(0, len(rows), CHUNK):
        conn.execute(subscribers.insert(), [{**r, "created_at": now, "updated_at": now} for r in rows[i : i + CHUNK]])


def update_subscriber(conn: Connection, subscriber_id: int, values: Mapping[str, Any]) -> None:
    conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(updated_at=utcnow(), **values))


def add_consents(conn: Connection, emails: Sequence[str], event: str, **values: Any) -> None:
    """One consent row per address (looked up by email, so it works right after a bulk insert)."""
    now = utcnow()
    for i in range(0, len(emails), CHUNK):
        chunk = emails[i : i + CHUNK]
        ids = conn.execute(select(subscribers.c.id).where(subscribers.c.email.in_(chunk))).scalars().all()
        if ids:
            rows = [{"subscriber_id": sid, "event": event, "at": now, **values} for sid in ids]
            conn.execute(consents.insert(), rows)


def list_subscribers(conn: Connection, *, status: str | None = None, field: str | None = None) -> Iterable[Row]:
    q = select(subscribers)
    if status:
        q = q.where(subscribers.c.status == status)
    if field:
        q = q.where(field_filter(subscribers.c.fields, field))
    return conn.execute(q.order_by(subscribers.c.email)).yield_per(1000)


def consent_records(conn: Connection, subscriber_id: int) -> list[Row]:
    return list(conn.execute(select(consents).where(consents.c.subscriber_id == subscriber_id).order_by(consents.c.id)))


def mark_suppressed(conn: Connection, subscriber_ids: Sequence[int], status: str) -> list[int]:
    """Set ``status`` on those of the subscribers not suppressed yet; the ids changed.
    One UPDATE with the condition in its WHERE, so two concurrent requests change
    (and report) a subscriber once."""
    changed: list[int] = []
    ids = list(subscriber_ids)
    for i in range(0, len(ids), CHUNK):
        changed += conn.execute(
            update(subscribers)
            .where(subscribers.c.id.in_(ids[i : i + CHUNK]), subscribers.c.status.not_in(SUPPRESSED))
            .values(status=status, updated_at=utcnow())
            .returning(subscribers.c.id)
        ).scalars().all()
    return changed


def mark_reactivated(conn: Connection, subscriber_id: int, was: str) -> bool:
    """Back to ``active`` (bounce count 0) if the status is still ``was``: a
    compare-and-set, so a complaint arriving meanwhile wins."""
    return bool(conn.execute(
        update(subscribers).where(subscribers.c.id == subscriber_id, subscribers.c.status == was)
        .values(status="active", bounce_count=0, updated_at=utcnow())
    ).rowcount)


def cancel_pending_deliveries(conn: Connection, subscriber_ids: Sequence[int], reason: str) -> int:
    """Cancel every pending delivery of the subscribers, in every edition, with
    ``reason`` in the log; the lease is cleared so no run may still write to the row."""
    ids = list(subscriber_ids)
    cancelled = 0
    for i in range(0, len(ids), CHUNK):
        cancelled += conn.execute(
            update(deliveries)
            .where(deliveries.c.subscriber_id.in_(ids[i : i + CHUNK]), deliveries.c.status == "pending")
            .values(status="cancelled", last_reply=reason[:1000], lease_until=None, updated_at=utcnow())
        ).rowcount
    return cancelled


def count_bounce(conn: Connection, subscriber_ids: Sequence[int], limit: int,
                 at_once: Sequence[str] = ()) -> list[int]:
    """One more bad-address bounce each; the ids whose count reached ``limit``, and
    any at one of the ``at_once`` domains whatever its count."""
    from sqlalchemy import or_

    ids = list(subscriber_ids)
    if not ids:
        return []
    conn.execute(
        update(subscribers).where(subscribers.c.id.in_(ids)).values(bounce_count=subscribers.c.bounce_count + 1)
    )
    reached = or_(subscribers.c.bounce_count >= limit, *(subscribers.c.email.like(f"%@{d}") for d in at_once))
    return list(conn.execute(select(subscribers.c.id).where(subscribers.c.id.in_(ids), reached)).scalars())


ERASED = "(erased)"


def erase_from_deliveries(conn: Connection, subscriber_id: int) -> int:
    """Take an erased subscriber's address out of the delivery log: the rows stay
    (an edition's counts do not change) with no address, domain or server words
    (a reply may quote the address)."""
    return conn.execute(
        update(deliveries)
        .where(deliveries.c.subscriber_id == subscriber_id)
        .values(email=ERASED, domain="", last_reply="erased", updated_at=utcnow())
    ).rowcount


def delete_subscriber(conn: Connection, subscriber_id: int) -> None:
    conn.execute(delete(subscribers).where(subscribers.c.id == subscriber_id))


def add_consent(conn: Connection, subscriber_id: int, event: str, **values: Any) -> None:
    """One consent row for one subscriber (by id), e.g. from the web service."""
    at = values.pop("at", None) or utcnow()
    conn.execute(consents.insert().values(subscriber_id=subscriber_id, event=event, at=at, **values))


def get_by_id(conn: Connection, subscriber_id: int) -> Row | None:
    return conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()


def count_active_at(conn: Connection, domains: Iterable[str]) -> int:
    """Active subscribers whose address is at one of ``domains`` (exact domain, lower case)."""
    from sqlalchemy import func, or_

    clauses = [subscribers.c.email.like(f"%@{d}") for d in domains]
    return conn.execute(
        select(func.count()).select_from(subscribers).where(subscribers.c.status == "active", or_(*clauses))
    ).scalar_one()


def names(conn: Connection, subscriber_ids: Sequence[int], chunk: int = 1000) -> Iterable[str]:
    """The display names of these subscribers (empty ones left out), read in chunks."""
    for start in range(0, len(subscriber_ids), chunk):
        part = subscriber_ids[start : start + chunk]
        for (name,) in conn.execute(select(subscribers.c.name).where(subscribers.c.id.in_(part))):
            if name:
                yield name
