"""Queries on the schedules' runtime state and the editions the daemon looks at
(those due for delivery, in progress, held back, last finished).  Which processes
run is the ``workers`` registry's (store/workers.py), not this module's."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, exists, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql import Insert

from .tables import deliveries, editions, schedules


def _insert_ignore(conn: Connection, table, values: Mapping[str, Any]) -> None:
    """INSERT, or nothing when the primary key exists (two daemons may both try)."""
    stmt: Insert
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(table).values(**values).on_conflict_do_nothing()
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - the two supported databases are handled above
        pk = list(table.primary_key.columns)[0]
        if conn.execute(select(pk).where(pk == values[pk.name])).first():
            return
        stmt = table.insert().values(**values)
    conn.execute(stmt)


# -- schedules -----------------------------------------------------------------------


def get(conn: Connection, publication: str) -> Row | None:
    return conn.execute(select(schedules).where(schedules.c.publication == publication)).first()


def all_states(conn: Connection) -> dict[str, Row]:
    return {r.publication: r for r in conn.execute(select(schedules))}


def ensure(conn: Connection, publication: str, now: datetime, signature: str) -> Row:
    """The state row, created on first sight with nothing handled before ``now``
    (a new schedule starts from now; it does not send for slots before it existed)."""
    row = get(conn, publication)
    if row is not None:
        return row
    _insert_ignore(conn, schedules, {
        "publication": publication, "paused": False, "handled_until": now, "signature": signature,
        "updated_at": now,
    })
    return get(conn, publication)  # type: ignore[return-value]


def change_signature(conn: Connection, publication: str, signature: str, now: datetime) -> None:
    """A changed schedule counts from now: slots of the new schedule before now were
    never promised, so they are not caught up."""
    conn.execute(
        update(schedules).where(schedules.c.publication == publication)
        .values(signature=signature, updated_at=now,
                handled_until=_later(schedules.c.handled_until, now))
    )


def _later(column, value: datetime):
    # max(column, value) that works on SQLite and PostgreSQL alike (no GREATEST on SQLite).
    return case((column > value, column), else_=value)


def advance(conn: Connection, publication: str, handled_until: datetime, next_run_at: datetime | None,
            now: datetime) -> None:
    """Move the catch-up cursor forward (never back: another daemon may be ahead)."""
    conn.execute(
        update(schedules).where(schedules.c.publication == publication)
        .values(handled_until=_later(schedules.c.handled_until, handled_until), next_run_at=next_run_at,
                updated_at=now)
    )


def record_run(conn: Connection, publication: str, slot: datetime, result: str, now: datetime) -> None:
    conn.execute(
        update(schedules).where(schedules.c.publication == publication)
        .values(last_slot=slot, last_run_at=now, last_result=result[:1000], updated_at=now)
    )


def set_paused(conn: Connection, publication: str, paused: bool, now: datetime) -> bool:
    """Pause or resume; returns False when it already was.  Resuming counts from now:
    slots that passed while paused are not caught up."""
    row = get(conn, publication)
    if row is not None and row.paused == paused:
        return False
    values: dict[str, Any] = {"paused": paused, "paused_at": now if paused else None, "updated_at": now}
    if not paused:
        values["handled_until"] = _later(schedules.c.handled_until, now)
    conn.execute(update(schedules).where(schedules.c.publication == publication).values(**values))
    return True


# -- editions, as the scheduler and the daemon see them ------------------------------


def edition_for_slot(conn: Connection, publication: str, slot: datetime) -> Row | None:
    return conn.execute(
        select(editions.c.id, editions.c.number, editions.c.status)
        .where(editions.c.publication == publication, editions.c.scheduled_for == slot)
    ).first()


def due_editions(conn: Connection, now: datetime) -> list[int]:
    """Editions being sent that have work now: a pending delivery that is due and not
    leased, or no pending delivery left (the run that finished them died before
    marking them done)."""
    pending = and_(deliveries.c.edition_id == editions.c.id, deliveries.c.status == "pending")
    due = and_(
        pending,
        or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
        or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < now),
    )
    q = (
        select(editions.c.id)
        .where(editions.c.status == "sending", or_(exists().where(due), ~exists().where(pending)))
        .order_by(editions.c.id)
    )
    return list(conn.execute(q).scalars())


def in_progress(conn: Connection) -> list[Row]:
    return list(conn.execute(
        select(editions).where(editions.c.status.in_(("sending", "paused"))).order_by(editions.c.id)
    ))


def held_back(conn: Connection) -> list[Row]:
    """Approved editions the daemon did not send, with why (their note): a failed
    preflight check (editions/state.py ``hold_back``) or a missed one-off time."""
    return list(conn.execute(
        select(editions).where(editions.c.status == "approved", editions.c.note.is_not(None))
        .order_by(editions.c.id)
    ))


def last_finished(conn: Connection, limit: int = 5) -> list[Row]:
    return list(conn.execute(
        select(editions).where(editions.c.status.in_(("done", "cancelled")))
        .order_by(editions.c.finished_at.desc(), editions.c.id.desc()).limit(limit)
    ))
