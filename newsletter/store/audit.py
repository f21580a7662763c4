"""Queries on the audit log: one row per state change (who, when, what, from where)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Connection, Row

from .tables import audit_log


def add(conn: Connection, *, at: datetime, actor: str | None, interface: str, action: str,
        publication: str | None = None, edition_id: int | None = None, detail: str | None = None) -> None:
    conn.execute(audit_log.insert().values(at=at, actor=actor, interface=interface, action=action,
                                           publication=publication, edition_id=edition_id, detail=detail))


def for_edition(conn: Connection, edition_id: int) -> list[Row]:
    return list(conn.execute(
        select(audit_log).where(audit_log.c.edition_id == edition_id).order_by(audit_log.c.at, audit_log.c.id)
    ))
