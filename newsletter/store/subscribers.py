"""Queries on subscribers and their consent records."""

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


def change_status(conn: Connection, subscriber_id: int, status: str, *, unless: Sequence[str]) -> bool:
    """Compare-and-set: give the subscriber ``status`` unless theirs is already
    one of ``unless``; True when this call changed it.  Requests racing to make
    the same change all read the old status, but only one UPDATE matches
    (PostgreSQL re-checks the WHERE once the row lock is free; SQLite has one
    writer at a time), so only that caller writes the consent row."""
    result = conn.execute(
        update(subscribers).where(subscribers.c.id == subscriber_id, subscribers.c.status.not_in(unless))
        .values(status=status, updated_at=utcnow())
    )
    return result.rowcount == 1


def cancel_pending_deliveries(conn: Connection, subscriber_id: int) -> int:
    result = conn.execute(
        update(deliveries)
        .where(deliveries.c.subscriber_id == subscriber_id, deliveries.c.status == "pending")
        .values(status="cancelled", last_reply="subscriber unsubscribed", updated_at=utcnow())
    )
    return result.rowcount


def delete_subscriber(conn: Connection, subscriber_id: int) -> None:
    conn.execute(delete(subscribers).where(subscribers.c.id == subscriber_id))


def add_consent(conn: Connection, subscriber_id: int, event: str, **values: Any) -> None:
    """One consent row for one subscriber (by id), e.g. from the web service."""
    at = values.pop("at", None) or utcnow()
    conn.execute(consents.insert().values(subscriber_id=subscriber_id, event=event, at=at, **values))


def get_by_id(conn: Connection, subscriber_id: int) -> Row | None:
    return conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
