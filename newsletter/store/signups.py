"""Queries on pending sign-ups (double opt-in): one row per confirmation mail sent."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Row

from .tables import signups


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
