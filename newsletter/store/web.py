"""Queries of the subscriber web service: pending sign-ups, bounce/complaint
events, rate-limit counters and the public archive."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Row

from .tables import editions, mail_events, rate_limits, signups, subscribers


def get_subscriber(conn: Connection, subscriber_id: int) -> Row | None:
    return conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()


# -- sign-ups -------------------------------------------------------------------

def insert_signup(conn: Connection, values: Mapping[str, Any]) -> int:
    return conn.execute(signups.insert().values(**values)).inserted_primary_key[0]


def get_signup(conn: Connection, signup_id: int) -> Row | None:
    return conn.execute(select(signups).where(signups.c.id == signup_id)).first()


def mark_confirmed(conn: Connection, signup_id: int, now: datetime) -> bool:
    """Claim the sign-up for confirmation; False when it was already used (a
    double click, two tabs): only one request wins the UPDATE."""
    result = conn.execute(
        update(signups).where(signups.c.id == signup_id, signups.c.confirmed_at.is_(None)).values(confirmed_at=now)
    )
    return result.rowcount == 1


# -- bounce / complaint / unsubscribe events --------------------------------------

def _insert_ignore(conn: Connection, table, values: Mapping[str, Any], keys: list[str]) -> bool:
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
    return _insert_ignore(conn, mail_events, values, ["source", "event_id"])


def count_events(conn: Connection, subscriber_id: int, kind: str, since: datetime) -> int:
    return conn.execute(
        select(func.count()).where(
            mail_events.c.subscriber_id == subscriber_id, mail_events.c.kind == kind, mail_events.c.at >= since
        )
    ).scalar()


def events_for(conn: Connection, subscriber_id: int) -> list[Row]:
    return list(conn.execute(select(mail_events).where(mail_events.c.subscriber_id == subscriber_id)
                             .order_by(mail_events.c.id)))


# -- rate limits ----------------------------------------------------------------

def hit(conn: Connection, key: str, now: datetime, window_seconds: float) -> int:
    """Count one more event under ``key`` in its current fixed window; returns
    the count including this one."""
    _insert_ignore(conn, rate_limits, {"key": key, "window_start": now, "count": 0}, ["key"])
    q = select(rate_limits).where(rate_limits.c.key == key)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()  # two requests at once must not both read the same count
    row = conn.execute(q).one()
    if now - row.window_start >= timedelta(seconds=window_seconds):
        conn.execute(update(rate_limits).where(rate_limits.c.key == key).values(window_start=now, count=1))
        return 1
    conn.execute(update(rate_limits).where(rate_limits.c.key == key).values(count=rate_limits.c.count + 1))
    return row.count + 1


def window_left(conn: Connection, key: str, now: datetime, window_seconds: float) -> float:
    row = conn.execute(select(rate_limits.c.window_start).where(rate_limits.c.key == key)).first()
    if row is None:
        return 0.0
    return max(0.0, window_seconds - (now - row.window_start).total_seconds())


def forget_old_limits(conn: Connection, before: datetime) -> None:
    conn.execute(rate_limits.delete().where(rate_limits.c.window_start < before))


# -- archive --------------------------------------------------------------------

def archived_editions(conn: Connection, publication: str | None = None, limit: int = 200) -> list[Row]:
    """Finished editions, newest first."""
    q = select(editions).where(editions.c.status == "done")
    if publication:
        q = q.where(editions.c.publication == publication)
    return list(conn.execute(q.order_by(editions.c.created_at.desc(), editions.c.id.desc()).limit(limit)))


def archived_edition(conn: Connection, publication: str, number: int) -> Row | None:
    return conn.execute(
        select(editions).where(
            editions.c.publication == publication, editions.c.number == number, editions.c.status == "done"
        )
    ).first()
