"""Queries on the worker registry, named leases and shared limits (newsletter/workers.py).

Rules kept here:
- every time that decides who may do something (a lease's end, a bucket's refill,
  a throttle's end) is the *database's* clock (:func:`db_now`) on PostgreSQL, so
  hosts whose clocks disagree by a few seconds still agree on the lease; on SQLite
  every process is on one host and its clock is the one clock;
- a read-then-write (a bucket's refill) first locks its row: ``SELECT … FOR
  UPDATE`` on PostgreSQL, a no-op UPDATE (the database write lock) on SQLite, so
  two processes never both spend the same tokens;
- a lease is taken only when free or lapsed, and renewed only by its holder, in
  one UPDATE … WHERE: the statement is the check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from .tables import leases, shared_limits, utcnow, workers


def db_now(conn: Connection) -> datetime:
    """The database server's clock on PostgreSQL (one clock for every host), ours on SQLite."""
    if conn.dialect.name == "postgresql":
        return conn.execute(select(func.clock_timestamp())).scalar()
    return utcnow()


def _insert_ignore(conn: Connection, table, values: Mapping[str, Any]) -> bool:
    """INSERT, or nothing when the primary key exists (two processes may both try)."""
    try:
        with conn.begin_nested():
            conn.execute(table.insert().values(**values))
        return True
    except IntegrityError:
        return False


# -- the registry ------------------------------------------------------------------


def heartbeat(conn: Connection, values: Mapping[str, Any]) -> datetime:
    """Insert or refresh a worker's row (``values`` has every column but ``seen_at``)."""
    now = utcnow()
    done = conn.execute(update(workers).where(workers.c.id == values["id"])
                        .values(seen_at=now, state=values["state"])).rowcount
    if not done:
        _insert_ignore(conn, workers, {**values, "seen_at": now})
    return now


def forget(conn: Connection, worker_id: str) -> None:
    conn.execute(workers.delete().where(workers.c.id == worker_id))


def all_workers(conn: Connection) -> list[Row]:
    return list(conn.execute(select(workers).order_by(workers.c.role, workers.c.host, workers.c.started_at)))


def prune(conn: Connection, before: datetime) -> None:
    """Rows of processes killed without a goodbye, long ago."""
    conn.execute(workers.delete().where(workers.c.seen_at < before))


# -- named leases --------------------------------------------------------------------


def acquire(conn: Connection, name: str, holder: str, seconds: float) -> bool:
    """Take or renew the lease ``name`` for ``seconds``; True when ``holder`` has it now."""
    now = db_now(conn)
    until = now + timedelta(seconds=seconds)
    mine = conn.execute(
        update(leases)
        .where(leases.c.name == name, or_(leases.c.holder == holder, leases.c.holder.is_(None),
                                          leases.c.until < now))
        .values(holder=holder, until=until,
                acquired_at=case((leases.c.holder == holder, leases.c.acquired_at), else_=now))
    ).rowcount
    if mine:
        return True
    return _insert_ignore(conn, leases, {"name": name, "holder": holder, "until": until, "acquired_at": now})


def release(conn: Connection, name: str, holder: str) -> None:
    """Give the lease up at once (a clean stop): a standby need not wait for it to lapse."""
    conn.execute(update(leases).where(leases.c.name == name, leases.c.holder == holder)
                 .values(holder=None, until=db_now(conn), acquired_at=None))


def lease_holder(conn: Connection, name: str) -> Row | None:
    """(holder, until, acquired_at, now) of a lease, holder None when free or lapsed."""
    row = conn.execute(select(leases).where(leases.c.name == name)).first()
    if row is None or row.holder is None or row.until < db_now(conn):
        return None
    return row


# -- shared limits ----------------------------------------------------------------------


def _locked(conn: Connection, key: str) -> Row | None:
    if conn.dialect.name == "sqlite":
        # Take the database's write lock before reading: no other process can read
        # the same tokens and spend them too.
        conn.execute(update(shared_limits).where(shared_limits.c.key == key).values(key=shared_limits.c.key))
        return conn.execute(select(shared_limits).where(shared_limits.c.key == key)).first()
    return conn.execute(select(shared_limits).where(shared_limits.c.key == key).with_for_update()).first()


def hold(conn: Connection, key: str) -> None:
    """Lock the limit row ``key`` (created when missing) until the caller's transaction
    ends: whoever holds it may read a shared count and act on it (a quota's claims,
    delivery.py) while every other process waits its turn."""
    if _locked(conn, key) is None:
        _insert_ignore(conn, shared_limits, {"key": key, "tokens": 0.0, "stamp": db_now(conn)})
        _locked(conn, key)


def take_tokens(conn: Connection, key: str, per_second: float, capacity: float, want: int) -> tuple[int, float]:
    """Take up to ``want`` whole tokens from the bucket ``key`` (``per_second`` refill,
    at most ``capacity`` held; a new bucket starts full).  Returns (tokens granted,
    seconds until one more is there when none was granted, else 0)."""
    now = db_now(conn)
    row = _locked(conn, key)
    if row is None:
        _insert_ignore(conn, shared_limits, {"key": key, "tokens": capacity, "stamp": now})
        row = _locked(conn, key)
    tokens = row.tokens
    if now > row.stamp:
        tokens = min(capacity, tokens + (now - row.stamp).total_seconds() * per_second)
    tokens = min(tokens, capacity)  # the configured rate went down since
    got = max(0, min(want, math.floor(tokens + 1e-9)))
    tokens -= got
    conn.execute(update(shared_limits).where(shared_limits.c.key == key)
                 .values(tokens=tokens, stamp=max(now, row.stamp)))
    wait = 0.0 if got else max((min(want, capacity) - tokens) / per_second, 0.001)
    return got, wait


def pause(conn: Connection, key: str, seconds: float, reason: str) -> datetime:
    """No process sends under ``key`` for ``seconds`` from now (a longer pause already set stays)."""
    now = db_now(conn)
    until = now + timedelta(seconds=seconds)
    row = _locked(conn, key)
    if row is None:
        if _insert_ignore(conn, shared_limits, {"key": key, "tokens": 0.0, "stamp": now, "until": until,
                                                "reason": reason[:1000]}):
            return until
        row = _locked(conn, key)
    if row.until is None or row.until < until:
        conn.execute(update(shared_limits).where(shared_limits.c.key == key)
                     .values(until=until, reason=reason[:1000]))
        return until
    return row.until


def paused_for(conn: Connection, key: str) -> tuple[float, str | None]:
    """(seconds the pause ``key`` still lasts, 0 when none; its reason)."""
    row = conn.execute(select(shared_limits.c.until, shared_limits.c.reason)
                       .where(shared_limits.c.key == key)).first()
    if row is None or row.until is None:
        return 0.0, None
    left = (row.until - db_now(conn)).total_seconds()
    return (left, row.reason) if left > 0 else (0.0, None)


def all_limits(conn: Connection) -> list[Row]:
    return list(conn.execute(select(shared_limits).order_by(shared_limits.c.key)))
