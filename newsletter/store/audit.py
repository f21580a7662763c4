"""Queries on the audit log: one row per state change (who, when, what, from where)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select
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


def search(conn: Connection, *, actor: str | None = None, action: str | None = None, interface: str | None = None,
           publication: str | None = None, since: datetime | None = None, until: datetime | None = None,
           limit: int = 500, actions: Sequence[str] = ()) -> list[Row]:
    """The newest rows first, filtered by exact actor/interface/publication, by a part
    of the action (or one of ``actions``: what a word in another language names), and
    by time (``since`` <= at < ``until``)."""
    q = select(audit_log)
    if since is not None:
        q = q.where(audit_log.c.at >= since)
    if until is not None:
        q = q.where(audit_log.c.at < until)
    if actor:
        q = q.where(audit_log.c.actor == actor)
    if action:
        q = q.where(or_(audit_log.c.action.contains(action, autoescape=True), audit_log.c.action.in_(list(actions))))
    if interface:
        q = q.where(audit_log.c.interface == interface)
    if publication:
        q = q.where(audit_log.c.publication == publication)
    return list(conn.execute(q.order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(limit)))
