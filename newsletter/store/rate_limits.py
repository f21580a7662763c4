"""Queries on the rate-limit counters of the web service (sign-ups, console sign-ins):
fixed windows kept in the database, so every process counts together."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from .mail_events import insert_ignore
from .tables import rate_limits


def hit(conn: Connection, key: str, now: datetime, window_seconds: float) -> int:
    """Count one more event under ``key`` in its current fixed window; returns
    the count including this one."""
    insert_ignore(conn, rate_limits, {"key": key, "window_start": now, "count": 0}, ["key"])
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
