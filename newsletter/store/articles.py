"""Queries on the article queue."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Connection, Row

from .tables import articles, utcnow

STATUSES = ("draft", "queued", "published", "withdrawn")


def find_existing(conn: Connection, *, guid: str | None, url: str) -> Row | None:
    """The stored article this item re-imports: same GUID, else same URL."""
    if guid:
        row = conn.execute(select(articles).where(articles.c.guid == guid)).first()
        if row:
            return row
    return conn.execute(select(articles).where(articles.c.url == url)).first()


def insert(conn: Connection, values: Mapping[str, Any]) -> int:
    now = utcnow()
    return conn.execute(articles.insert().values(created_at=now, updated_at=now, **values)).inserted_primary_key[0]


def update_article(conn: Connection, article_id: int, values: Mapping[str, Any]) -> None:
    conn.execute(update(articles).where(articles.c.id == article_id).values(updated_at=utcnow(), **values))


def get(conn: Connection, article_id: int) -> Row | None:
    return conn.execute(select(articles).where(articles.c.id == article_id)).first()


def field_filter(column, slug: str):
    """Rows whose comma-separated field list contains ``slug`` (slugs cannot contain commas)."""
    return or_(column == slug, column.like(f"{slug},%"), column.like(f"%,{slug}"), column.like(f"%,{slug},%"))


def list_articles(conn: Connection, *, status: str | None = None, field: str | None = None) -> list[Row]:
    q = select(articles)
    if status:
        q = q.where(articles.c.status == status)
    if field:
        q = q.where(field_filter(articles.c.fields, field))
    return list(conn.execute(q.order_by(articles.c.id)))


def candidates(conn: Connection, *, fields: Iterable[str], now: datetime, exclude_ids: Iterable[int]) -> list[Row]:
    """Queued or published articles in any of ``fields`` whose embargo has passed."""
    q = select(articles).where(
        articles.c.status.in_(("queued", "published")),
        or_(articles.c.publish_at.is_(None), articles.c.publish_at <= now),
        or_(*[field_filter(articles.c.fields, f) for f in fields]),
    )
    excluded = list(exclude_ids)
    if excluded:
        q = q.where(and_(articles.c.id.not_in(excluded)))
    return list(conn.execute(q))
