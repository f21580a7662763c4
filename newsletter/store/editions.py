"""Queries on editions and the delivery log (the outbox).

Claims are fenced: :func:`claim` stamps each row with the run's ``claim_token``
and a lease; :func:`record` and :func:`renew` touch only rows that are still
``pending`` with that token.  A row cancelled meanwhile (unsubscribe, bounce,
``edition cancel``) or claimed by another run after the lease lapsed is not
written: the caller learns which ids were, and the rest are "lost leases".

Failed deliveries go back to ``pending`` only through :func:`requeue_failed`,
fenced in the statement itself: a row that is no longer ``failed``, or whose
subscriber is no longer ``active`` (unsubscribed, bounced, erased meanwhile), is
left alone whatever the caller decided.  Which failures may be retried at all is
the delivery engine's rule (``delivery.retry_failed``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, Text, and_, bindparam, cast, column, func, literal, or_, select, update, values
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine, Row

from ..errors import InputError
from .articles import field_filter
from .tables import articles, deliveries, edition_articles, editions, subscribers, utcnow

if TYPE_CHECKING:
    from ..config import Config

EDITION_STATUSES = ("draft", "approved", "scheduled", "sending", "paused", "done", "cancelled")
DELIVERY_STATUSES = ("pending", "sent", "failed", "skipped", "cancelled")
CHUNK = 1000


def next_number(conn: Connection, publication: str) -> int:
    current = conn.execute(select(func.max(editions.c.number)).where(editions.c.publication == publication)).scalar()
    return (current or 0) + 1


def carried_article_ids(conn: Connection, publication: str) -> list[int]:
    q = (
        select(edition_articles.c.article_id)
        .join(editions, editions.c.id == edition_articles.c.edition_id)
        .where(editions.c.publication == publication)
    )
    return list(conn.execute(q).scalars())


def insert_edition(
    conn: Connection, *, publication: str, number: int, content: Mapping[str, Any], now: datetime,
    scheduled_for: datetime | None = None, status: str = "sending", **extra: Any,
) -> int:
    """A new edition with its articles.  A ``draft`` only reserves its articles; they
    are marked published when it starts sending."""
    edition_id = conn.execute(
        editions.insert().values(
            publication=publication, number=number, status=status, scheduled_for=scheduled_for,
            created_at=now, content=json.dumps(content, ensure_ascii=False), **extra,
        )
    ).inserted_primary_key[0]
    ids = [a["id"] for a in content["articles"]]
    set_articles(conn, edition_id, ids)
    if status == "sending":
        mark_published(conn, ids, now)
    return edition_id


def _readers_of(fields: Sequence[str]):
    """Active subscribers with at least one of ``fields``."""
    return and_(subscribers.c.status == "active", or_(*[field_filter(subscribers.c.fields, f) for f in fields]))


def subscribers_for(conn: Connection, fields: Sequence[str]) -> Iterable[Row]:
    """Active subscribers with at least one of ``fields``, streamed in id order."""
    q = (
        select(subscribers.c.id, subscribers.c.email, subscribers.c.fields, subscribers.c.format,
               subscribers.c.charset, subscribers.c.publications)
        .where(_readers_of(fields))
        .order_by(subscribers.c.id)
    )
    return conn.execute(q.execution_options(yield_per=CHUNK))


def subscriber_profiles(conn: Connection, fields: Sequence[str]) -> list[Row]:
    """The same subscribers as :func:`subscribers_for`, counted by what keys them to a
    variant (fields, format, charset, publications): one GROUP BY, a row per distinct
    profile with its ``readers``, however many subscribers there are."""
    cols = (subscribers.c.fields, subscribers.c.format, subscribers.c.charset, subscribers.c.publications)
    return list(conn.execute(select(*cols, func.count().label("readers")).where(_readers_of(fields))
                             .group_by(*cols)))


def recipient_domain(email: str) -> str:
    """A delivery's ``domain`` (what per-domain limits claim by): after the last ``@``."""
    return email.rpartition("@")[2]


def recipient_domain_sql(email):
    """:func:`recipient_domain` as a PostgreSQL expression (what follows the last ``@``;
    the whole address without one, as ``rpartition``); tests/test_creation.py holds
    the two equal."""
    return func.coalesce(func.substring(email, literal("@([^@]*)$", Text)), email)


def insert_deliveries(conn: Connection, rows: Sequence[Mapping[str, Any]], now: datetime) -> None:
    if rows:
        conn.execute(deliveries.insert(), [
            {"attempts": 0, "created_at": now, "updated_at": now, "domain": recipient_domain(r["email"]), **r}
            for r in rows
        ])


_COMBINATION = ("fields", "format", "charset", "publications")


def insert_deliveries_by_combination(
    conn: Connection, edition_id: int, fields: Sequence[str], variants: Sequence[Mapping[str, Any]], now: datetime,
) -> tuple[int, int]:
    """One delivery row per subscriber of :func:`subscribers_for` whose combination
    of :data:`_COMBINATION` columns is in ``variants`` (each mapping: those four,
    plus the row's ``variant``, ``status`` and ``last_reply``), in one
    ``INSERT … SELECT`` in subscriber order (PostgreSQL).  Returns (pending, skipped)."""
    if variants:
        cols = (*_COMBINATION, "variant", "status", "last_reply")
        m = values(*(column(c, Text) for c in cols), name="m").data([tuple(v[c] for c in cols) for v in variants])
        s = subscribers.c
        join = and_(s.fields == m.c.fields, s.format == m.c.format, s.charset.is_not_distinct_from(m.c.charset),
                    s.publications.is_not_distinct_from(m.c.publications))
        stamp = literal(now, deliveries.c.created_at.type)
        rows = (
            select(literal(edition_id), s.id, s.email, m.c.variant, m.c.status, m.c.last_reply, literal(0), stamp,
                   stamp, recipient_domain_sql(s.email))
            .select_from(subscribers.join(m, join))
            .where(_readers_of(fields))
            .order_by(s.id)
        )
        conn.execute(deliveries.insert().from_select(
            ["edition_id", "subscriber_id", "email", "variant", "status", "last_reply", "attempts", "created_at",
             "updated_at", "domain"], rows))
    counts = dict(conn.execute(select(deliveries.c.status, func.count()).where(deliveries.c.edition_id == edition_id)
                               .group_by(deliveries.c.status)).all())
    return counts.get("pending", 0), counts.get("skipped", 0)


def get_edition(conn: Connection, edition_id: int) -> Row | None:
    return conn.execute(select(editions).where(editions.c.id == edition_id)).first()


def find_edition(conn: Connection, publication: str | None, number: int) -> list[Row]:
    q = select(editions).where(editions.c.number == number)
    if publication:
        q = q.where(editions.c.publication == publication)
    return list(conn.execute(q))


def unfinished(conn: Connection, publication: str) -> Row | None:
    """The oldest edition of ``publication`` that is still sending."""
    return conn.execute(
        select(editions)
        .where(editions.c.publication == publication, editions.c.status == "sending")
        .order_by(editions.c.number)
        .limit(1)
    ).first()


def list_editions(conn: Connection, publication: str | None = None, limit: int = 50) -> list[Row]:
    q = select(editions)
    if publication:
        q = q.where(editions.c.publication == publication)
    return list(conn.execute(q.order_by(editions.c.created_at.desc(), editions.c.id.desc()).limit(limit)))


def counts(conn: Connection, edition_id: int) -> dict[str, int]:
    out = dict.fromkeys(DELIVERY_STATUSES, 0)
    q = (select(deliveries.c.status, func.count())
         .where(deliveries.c.edition_id == edition_id).group_by(deliveries.c.status))
    for status, n in conn.execute(q):
        out[status] = n
    return out


def _due(edition_id: int, now: datetime):
    return and_(
        deliveries.c.edition_id == edition_id,
        deliveries.c.status == "pending",
        or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
        or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < now),
    )


def claim(
    conn: Connection,
    edition_id: int,
    now: datetime,
    limit: int,
    lease_until: datetime,
    *,
    token: str | None = None,
    domains: Sequence[str] | None = None,
    exclude_domains: Sequence[str] = (),
    after: int = 0,
) -> list[Row]:
    """Lease up to ``limit`` due deliveries (oldest first) and return them with the
    subscriber's name.

    ``after``: only rows with a greater id (the claiming run's cursor, see
    ``DeliveryRun._claim_rows``): the scan starts there instead of walking every row
    the edition has already sent.

    One UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING: atomic on SQLite (the
    statement holds the write lock) and, with FOR UPDATE SKIP LOCKED, on
    PostgreSQL, so two workers or two daemons never claim the same row.  ``token``
    marks the rows as this run's (see the module docstring).
    """
    if limit <= 0:
        return []
    sub = select(deliveries.c.id).where(_due(edition_id, now))
    if after:
        sub = sub.where(deliveries.c.id > after)
    if domains is not None:
        sub = sub.where(deliveries.c.domain.in_(list(domains)))
    if exclude_domains:
        sub = sub.where(deliveries.c.domain.not_in(list(exclude_domains)))
    sub = sub.order_by(deliveries.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        sub = sub.with_for_update(skip_locked=True)
    # Only what sending needs (every datetime column costs a conversion per row), returned
    # by the claiming statement itself: one round trip less per chunk than a SELECT after it.
    name = select(subscribers.c.name).where(subscribers.c.id == deliveries.c.subscriber_id).scalar_subquery()
    rows = conn.execute(
        update(deliveries).where(deliveries.c.id.in_(sub))
        .values(lease_until=lease_until, claim_token=token)
        .returning(deliveries.c.id, deliveries.c.subscriber_id, deliveries.c.email, deliveries.c.variant,
                   deliveries.c.attempts, deliveries.c.message_id, deliveries.c.unknown_outcomes,
                   deliveries.c.created_at, name.label("name"))
    ).all()
    return sorted(rows, key=lambda r: r.id)  # RETURNING promises no order


def has_due(conn: Connection, edition_id: int, now: datetime, domains: Sequence[str], after: int = 0) -> bool:
    """Whether a row of ``domains`` is due (``after``: among those with a greater id, as :func:`claim`)."""
    q = select(deliveries.c.id).where(_due(edition_id, now), deliveries.c.domain.in_(list(domains)))
    if after:
        q = q.where(deliveries.c.id > after)
    return conn.execute(q.limit(1)).first() is not None


def sent_since(conn: Connection, since: datetime) -> int:
    """Messages handed to the provider since ``since``, all editions (for quotas)."""
    return conn.execute(
        select(func.count()).where(deliveries.c.status == "sent", deliveries.c.updated_at > since)
    ).scalar()


def claimed_now(conn: Connection, now: datetime) -> int:
    """Deliveries some run holds a live claim on at ``now``, all editions: they may be
    at the provider this moment (for quotas, with :func:`sent_since`)."""
    return conn.execute(
        select(func.count()).where(deliveries.c.lease_until > now, deliveries.c.status == "pending",
                                   deliveries.c.claim_token.is_not(None))
    ).scalar()


def nth_sent_since(conn: Connection, since: datetime, n: int) -> datetime | None:
    """The time of the n-th (0-based) message sent since ``since``, oldest first."""
    return conn.execute(
        select(deliveries.c.updated_at)
        .where(deliveries.c.status == "sent", deliveries.c.updated_at > since)
        .order_by(deliveries.c.updated_at)
        .offset(n)
        .limit(1)
    ).scalar()


def _held(ids: Sequence[int], token: str):
    return and_(deliveries.c.id.in_(list(ids)), deliveries.c.status == "pending", deliveries.c.claim_token == token)


def renew(conn: Connection, ids: Sequence[int], token: str, lease_until: datetime) -> set[int]:
    """Extend the lease of the rows this run still holds; returns their ids."""
    if not ids:
        return set()
    return set(conn.execute(
        update(deliveries).where(_held(ids, token)).values(lease_until=lease_until).returning(deliveries.c.id)
    ).scalars())


def release(conn: Connection, edition_id: int, token: str) -> int:
    """Give back every row a run still holds, unsent (a stopping worker): one fenced
    UPDATE by its token, so another run may claim them now, not after the lease."""
    return conn.execute(
        update(deliveries).where(deliveries.c.edition_id == edition_id, deliveries.c.status == "pending",
                                 deliveries.c.claim_token == token)
        .values(lease_until=None, claim_token=None)
    ).rowcount


def cancel_pending(conn: Connection, edition_id: int, reason: str) -> int:
    return conn.execute(
        update(deliveries)
        .where(deliveries.c.edition_id == edition_id, deliveries.c.status == "pending")
        .values(status="cancelled", last_reply=reason, lease_until=None, updated_at=utcnow())
    ).rowcount


def results_since(conn: Connection, edition_id: int, since: datetime) -> tuple[int, datetime | None]:
    """Results (sent or failed) written after ``since``: how many, and the first one's time."""
    n, first = conn.execute(
        select(func.count(), func.min(deliveries.c.updated_at)).where(
            deliveries.c.edition_id == edition_id,
            deliveries.c.status.in_(("sent", "failed")),
            deliveries.c.updated_at > since,
        )
    ).one()
    return n, first


def deferred_count(conn: Connection, edition_id: int, now: datetime) -> int:
    """Pending deliveries waiting for a retry later than ``now`` (a temporary failure)."""
    return conn.execute(
        select(func.count()).where(deliveries.c.edition_id == edition_id, deliveries.c.status == "pending",
                                   deliveries.c.next_attempt_at > now)
    ).scalar()


def next_retry(conn: Connection, edition_id: int) -> datetime | None:
    return conn.execute(
        select(func.min(deliveries.c.next_attempt_at)).where(
            deliveries.c.edition_id == edition_id, deliveries.c.status == "pending"
        )
    ).scalar()


def record(conn: Connection, updates: Sequence[Mapping[str, Any]], now: datetime | None = None, *,
           token: str | None = None) -> set[int]:
    """Write delivery results: each mapping has ``id`` plus the columns to set.

    With ``token``, only rows still pending under that claim are written (their
    lease and token cleared first, in the same statement that locks them: the
    write lock on SQLite, the row locks on PostgreSQL, so nothing can change
    them between the check and the write).  Returns the ids written."""
    now = now or utcnow()
    if token is not None and updates and conn.dialect.name == "postgresql":
        return _record_fenced_set_based(conn, updates, now, token)
    if token is not None and updates:
        held = set(conn.execute(
            update(deliveries).where(_held([u["id"] for u in updates], token))
            .values(lease_until=None, claim_token=None, updated_at=now).returning(deliveries.c.id)
        ).scalars())
        updates = [u for u in updates if u["id"] in held]
    else:
        held = {u["id"] for u in updates}
    by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for u in updates:
        by_keys.setdefault(tuple(sorted(u)), []).append(dict(u))
    for keys, rows in by_keys.items():
        cols = [k for k in keys if k != "id"]
        stmt = (
            update(deliveries)
            .where(deliveries.c.id == bindparam("_id"))
            .values(updated_at=now, **{c: bindparam(f"_{c}") for c in cols})
        )
        conn.execute(stmt, [{f"_{k}": v for k, v in r.items()} for r in rows])
    return held


def _record_fenced_set_based(conn: Connection, updates: Sequence[Mapping[str, Any]], now: datetime,
                             token: str) -> set[int]:
    """:func:`record` with a token on PostgreSQL: one ``UPDATE … FROM
    jsonb_to_recordset(…)`` per set of columns, fenced in its own WHERE (the row
    locks it takes are the check).  A chunk's results are one statement with one
    parameter, compiled once: one UPDATE per row took ~100 ms for a chunk of 100
    on a loaded 2-core machine and bounded a worker, whose one database thread
    claims, composes and records."""
    written: set[int] = set()
    by_keys: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for u in updates:
        by_keys.setdefault(tuple(sorted(k for k in u if k != "id")), []).append(u)
    for cols, rows in by_keys.items():
        given = func.jsonb_to_recordset(cast(bindparam("rows"), JSONB)).table_valued(
            column("id", Integer), *(column(c, deliveries.c[c].type) for c in cols)
        ).render_derived(name="v", with_types=True)
        stmt = (
            update(deliveries)
            .where(deliveries.c.id == given.c.id, deliveries.c.status == "pending",
                   deliveries.c.claim_token == token)
            .values({"lease_until": None, "claim_token": None, "updated_at": now, **{c: given.c[c] for c in cols}})
            .returning(deliveries.c.id)
        )
        payload = json.dumps([{"id": r["id"], **{c: _json_value(r[c]) for c in cols}} for r in rows],
                             ensure_ascii=False)
        written.update(conn.execute(stmt, {"rows": payload}).scalars())
    return written


def _json_value(value: Any) -> Any:
    """A result's value as jsonb_to_recordset reads it back (times: ISO 8601 in UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC")
        return value.astimezone(UTC).isoformat()
    return value


def failed_deliveries(conn: Connection, edition_id: int) -> list[Row]:
    """The edition's failed deliveries by address, with what retrying needs to know:
    ``subscriber_status`` (None when the subscriber was erased) and ``unknown_outcomes``."""
    q = (
        select(deliveries.c.id, deliveries.c.email, deliveries.c.last_reply, deliveries.c.attempts,
               deliveries.c.updated_at, deliveries.c.unknown_outcomes, deliveries.c.subscriber_id,
               subscribers.c.status.label("subscriber_status"))
        .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id, isouter=True)
        .where(deliveries.c.edition_id == edition_id, deliveries.c.status == "failed")
        .order_by(deliveries.c.email, deliveries.c.id)
    )
    return list(conn.execute(q))


def requeue_failed(conn: Connection, ids: Sequence[int], now: datetime) -> int:
    """Failed rows back to ``pending``, due at once; only rows still ``failed`` whose
    subscriber is still ``active``.  Attempts are kept (the history stays true)."""
    active = select(subscribers.c.id).where(subscribers.c.status == "active")
    done = 0
    ids = list(ids)
    for i in range(0, len(ids), CHUNK):
        done += conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids[i:i + CHUNK]), deliveries.c.status == "failed",
                   deliveries.c.subscriber_id.in_(active))
            .values(status="pending", next_attempt_at=None, lease_until=None, updated_at=now)
        ).rowcount
    return done


def set_note(conn: Connection, edition_id: int, note: str | None) -> None:
    conn.execute(update(editions).where(editions.c.id == edition_id).values(note=note))


def pending_variants(conn: Connection, edition_id: int) -> Iterable[tuple[int | None, str]]:
    """(subscriber id, variant key) of each pending delivery of the edition, streamed."""
    q = (select(deliveries.c.subscriber_id, deliveries.c.variant)
         .where(deliveries.c.edition_id == edition_id, deliveries.c.status == "pending"))
    return conn.execute(q.execution_options(yield_per=CHUNK))


def pending_count(conn: Connection, edition_id: int) -> int:
    return conn.execute(
        select(func.count()).where(and_(deliveries.c.edition_id == edition_id, deliveries.c.status == "pending"))
    ).scalar()


def delivery_recipient(conn: Connection, delivery_id: int) -> Row | None:
    """(subscriber_id, email) of one delivery: a provider event carrying our
    ``nl_delivery_id`` finds its subscriber by it (bounces.py)."""
    if not 0 < delivery_id < 2**31:  # the column is a 32-bit integer on PostgreSQL
        return None
    return conn.execute(select(deliveries.c.subscriber_id, deliveries.c.email)
                        .where(deliveries.c.id == delivery_id)).first()


# -- the editorial workflow (editions/state.py is the only caller that writes) --------

WORKFLOW_STATUSES = ("draft", "approved", "scheduled")


def compare_and_set(conn: Connection, edition_id: int, expected: Sequence[str], values: Mapping[str, Any],
                    *, revision: int | None = None, content_hash: str | None = None) -> bool:
    """UPDATE … WHERE status IN expected [AND revision/hash match]: True when this call
    made the change.  Two people acting at once: the database lets exactly one in."""
    q = update(editions).where(editions.c.id == edition_id, editions.c.status.in_(list(expected)))
    if revision is not None:
        q = q.where(editions.c.revision == revision)
    if content_hash is not None:
        q = q.where(editions.c.content_hash == content_hash)
    return conn.execute(q.values(**values)).rowcount == 1


def awaiting_approval(conn: Connection) -> list[Row]:
    """Drafts with a request for approval (承認待ち), oldest request first."""
    return list(conn.execute(
        select(editions).where(editions.c.status == "draft", editions.c.approval_requested_at.is_not(None))
        .order_by(editions.c.approval_requested_at, editions.c.id)))


def set_articles(conn: Connection, edition_id: int, article_ids: Sequence[int]) -> None:
    """The articles an unsent edition reserves, in order."""
    conn.execute(edition_articles.delete().where(edition_articles.c.edition_id == edition_id))
    if article_ids:
        conn.execute(edition_articles.insert(),
                     [{"edition_id": edition_id, "article_id": a, "position": i} for i, a in enumerate(article_ids)])


def release_articles(conn: Connection, edition_id: int) -> None:
    conn.execute(edition_articles.delete().where(edition_articles.c.edition_id == edition_id))


def mark_published(conn: Connection, article_ids: Sequence[int], now: datetime) -> None:
    if article_ids:
        conn.execute(update(articles).where(articles.c.id.in_(list(article_ids))).values(status="published",
                                                                                          updated_at=now))


def articles_by_id(conn: Connection, ids: Sequence[int]) -> dict[int, Row]:
    if not ids:
        return {}
    return {r.id: r for r in conn.execute(select(articles).where(articles.c.id.in_(list(ids))))}


def unsent_carrying(conn: Connection, article_ids: Sequence[int]) -> list[Row]:
    """Drafts, approved and scheduled editions that carry any of ``article_ids``."""
    if not article_ids:
        return []
    q = (
        select(editions).distinct()
        .join(edition_articles, edition_articles.c.edition_id == editions.c.id)
        .where(edition_articles.c.article_id.in_(list(article_ids)), editions.c.status.in_(WORKFLOW_STATUSES))
        .order_by(editions.c.id)
    )
    return list(conn.execute(q))


def oldest_in(conn: Connection, publication: str, statuses: Sequence[str], *, unscheduled: bool = False) -> Row | None:
    q = select(editions).where(editions.c.publication == publication, editions.c.status.in_(list(statuses)))
    if unscheduled:
        q = q.where(editions.c.scheduled_for.is_(None))
    return conn.execute(q.order_by(editions.c.number).limit(1)).first()


def scheduled_due(conn: Connection, publication: str, now: datetime) -> list[Row]:
    return list(conn.execute(
        select(editions).where(editions.c.publication == publication, editions.c.status == "scheduled",
                               editions.c.scheduled_for <= now).order_by(editions.c.scheduled_for)
    ))


def add_version(conn: Connection, edition_id: int, digest: str, content_json: str, now: datetime) -> None:
    from .tables import edition_versions

    exists = conn.execute(select(edition_versions.c.id).where(
        edition_versions.c.edition_id == edition_id, edition_versions.c.hash == digest)).first()
    if exists is None:
        conn.execute(edition_versions.insert().values(edition_id=edition_id, hash=digest, content=content_json,
                                                      created_at=now))


def find_version(conn: Connection, edition_id: int, digest_prefix: str) -> Row | None:
    from .tables import edition_versions

    return conn.execute(select(edition_versions).where(
        edition_versions.c.edition_id == edition_id, edition_versions.c.hash.like(f"{digest_prefix}%"))
        .order_by(edition_versions.c.id.desc()).limit(1)).first()


# -- the public archive ------------------------------------------------------------

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


def load_content(row) -> dict[str, Any]:
    return json.loads(row.content)


def resolve_edition(engine: Engine, config: Config, number: int, publication: str | None):
    """An edition row from its number (and publication, needed only when ambiguous)."""
    if publication is None and len(config.publications) == 1:
        publication = config.publications[0].slug
    if publication:
        config.publication(publication)
    with engine.connect() as conn:
        rows = find_edition(conn, publication, number)
    if not rows:
        where = f" of {publication}" if publication else ""
        raise InputError(f"edition {number}{where}: no such edition")
    if len(rows) > 1:
        pubs = ", ".join(r.publication for r in rows)
        raise InputError(f"edition {number} exists in {pubs}; name the publication with --publication")
    return rows[0]
