"""Queries on users (newsletter/users.py keeps the rules: roles, hashing)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Row

from .tables import users


def get(conn: Connection, name: str) -> Row | None:
    return conn.execute(select(users).where(users.c.name == name)).first()


def insert(conn: Connection, values: Mapping[str, Any], now: datetime) -> int:
    return conn.execute(
        users.insert().values(created_at=now, updated_at=now, **values)
    ).inserted_primary_key[0]


def change(conn: Connection, name: str, values: Mapping[str, Any], now: datetime) -> bool:
    return bool(conn.execute(update(users).where(users.c.name == name).values(updated_at=now, **values)).rowcount)


def list_users(conn: Connection) -> list[Row]:
    return list(conn.execute(select(users).order_by(users.c.name)))
