"""Queries on console sessions (newsletter/web/admin/auth.py keeps the rules:
timeouts, rotation, what the cookie holds)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Row

from .tables import console_sessions as s


def insert(conn: Connection, token_hash: str, user_name: str, now: datetime, ip: str | None) -> None:
    conn.execute(s.insert().values(token_hash=token_hash, user_name=user_name, created_at=now,
                                   last_seen_at=now, ip=ip))


def get(conn: Connection, token_hash: str) -> Row | None:
    return conn.execute(select(s).where(s.c.token_hash == token_hash)).first()


def touch(conn: Connection, token_hash: str, now: datetime) -> None:
    conn.execute(update(s).where(s.c.token_hash == token_hash).values(last_seen_at=now))


def delete(conn: Connection, token_hash: str) -> None:
    conn.execute(s.delete().where(s.c.token_hash == token_hash))


def delete_for_user(conn: Connection, user_name: str) -> int:
    return conn.execute(s.delete().where(s.c.user_name == user_name)).rowcount


def forget_old(conn: Connection, idle_before: datetime, created_before: datetime) -> None:
    conn.execute(s.delete().where((s.c.last_seen_at < idle_before) | (s.c.created_at < created_before)))
