"""Queries on provider events (bounces, complaints, mailed unsubscribes), each
stored once under its (source, event id)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from .tables import deliveries, mail_events


def insert_ignore(conn: Connection, table, values: Mapping[str, Any], keys: list[str]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING; True when the row went in.

    Not a SAVEPOINT around a plain INSERT: the SQLite driver issues no BEGIN
    before a SAVEPOINT, so its RELEASE would commit on its own, outside the
    caller's transaction (a dry run would then keep what it wrote)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        where = [table.c[k] == values[k] for k in keys]
        if conn.execute(select(table.c[keys[0]]).where(*where)).first():
            return False
        conn.execute(table.insert().values(**values))
        return True
    # RETURNING, not rowcount: with PostgreSQL's implicit RETURNING the rowcount is -1.
    stmt = insert(table).values(**values).on_conflict_do_nothing(index_elements=keys).returning(table.c[keys[0]])
    return conn.execute(stmt).first() is not None


def insert_event(conn: Connection, values: Mapping[str, Any]) -> bool:
    """Record one provider event; False when (source, event_id) was seen before."""
    return insert_ignore(conn, mail_events, values, ["source", "event_id"])


def count_events(conn: Connection, subscriber_id: int, kind: str, since: datetime) -> int:
    return conn.execute(
        select(func.count()).where(
            mail_events.c.subscriber_id == subscriber_id, mail_events.c.kind == kind, mail_events.c.at >= since
        )
    ).scalar()


def ever(conn: Connection, subscriber_id: int, kind: str) -> bool:
    """Has this subscriber any event of ``kind`` (e.g. a complaint), however old?"""
    return conn.execute(select(mail_events.c.id).where(mail_events.c.subscriber_id == subscriber_id,
                                                       mail_events.c.kind == kind).limit(1)).first() is not None


def recipients_reporting(conn: Connection, edition_id: int, kinds: tuple[str, ...], since: datetime) -> int:
    """How many people this edition was sent to have an event of ``kinds`` at or
    after ``since`` (the edition's creation): bounces and complaints reported
    after sending, counted once per person."""
    sent_to = select(deliveries.c.subscriber_id).where(deliveries.c.edition_id == edition_id,
                                                        deliveries.c.status == "sent")
    return conn.execute(
        select(func.count(func.distinct(mail_events.c.subscriber_id))).where(
            mail_events.c.kind.in_(kinds), mail_events.c.at >= since, mail_events.c.subscriber_id.in_(sent_to))
    ).scalar() or 0
