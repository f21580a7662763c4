"""Delivery rows of a new edition: the set-based INSERT … SELECT on PostgreSQL writes
exactly the rows that the one rule (creation.variant_of, streamed by readers())
gives, over many subscriber and content combinations (hypothesis)."""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, insert, literal, select, text

from newsletter.config import load_config
from newsletter.editions import creation
from newsletter.store import editions as q
from newsletter.store import make_engine, upgrade
from newsletter.store.tables import deliveries, editions, subscribers
from tests.conftest import PG_ADMIN_URL, PG_AVAILABLE, write_config

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)
FIELDS = ["local-government", "administration", "education"]  # the stock config's, in config order
SLUGS = [*FIELDS, "retired-field"]  # a subscriber may still carry a field the config dropped


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    if not PG_AVAILABLE:
        if os.environ.get("NEWSLETTER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but not reachable at {PG_ADMIN_URL}")
        pytest.skip("PostgreSQL not reachable")
    name = f"nl_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = re.sub(r"/[^/]*$", f"/{name}", PG_ADMIN_URL)
    config = load_config(write_config(tmp_path_factory.mktemp("creation"), url))
    engine = make_engine(url)
    upgrade(engine)
    try:
        yield engine, config
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


field_lists = st.lists(st.sampled_from(SLUGS), min_size=1, max_size=5)  # any order, repeats too
# Few distinct values each, so that readers share combinations and differ in one column
# (the join must tell them apart), plus any list of fields now and then.
common_fields = st.sampled_from(["education", "local-government,education", "retired-field,administration"])
subscriber = st.fixed_dictionaries({
    "fields": st.one_of(common_fields, common_fields, field_lists.map(",".join)),
    "format": st.sampled_from(["html", "text"]),
    "charset": st.sampled_from([None, "utf-8", "iso-2022-jp"]),
    "publications": st.sampled_from([None, "", "weekly", "other", "weekly,other", "other,weekly", "weeklyx"]),
    "status": st.sampled_from(["active", "active", "active", "unsubscribed", "pending", "bounced"]),
    "domain": st.sampled_from(["example.jp", "Mail.Example.JP", "例え.jp", "city.chiyoda.lg.jp", "x"]),
})
content_fields = st.lists(st.lists(st.sampled_from(SLUGS), min_size=0, max_size=3), min_size=0, max_size=6)


def _content(article_fields: list[list[str]]) -> dict:
    """What variant_of reads of an edition's content: its fields and each article's."""
    return {"fields": [{"slug": f, "name": f} for f in FIELDS],
            "articles": [{"id": i, "fields": [f for f in fs if f in FIELDS]} for i, fs in enumerate(article_fields)]}


def _rows(conn, edition_id: int) -> list[tuple]:
    d = deliveries.c
    return [tuple(r) for r in conn.execute(
        select(d.subscriber_id, d.email, d.variant, d.status, d.last_reply, d.domain, d.attempts, d.created_at,
               d.lease_until, d.claim_token).where(d.edition_id == edition_id).order_by(d.id))]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=st.lists(subscriber, min_size=0, max_size=60), article_fields=content_fields,
       charset=st.sampled_from(["utf-8", "iso-2022-jp"]))
def test_set_based_rows_equal_the_rule_row_by_row(pg, people, article_fields, charset):
    engine, config = pg
    pub = dataclasses.replace(config.publication("weekly"), charset=charset)
    content = _content(article_fields)
    with engine.connect() as conn, conn.begin() as tx:
        if people:
            conn.execute(insert(subscribers), [
                {"email": f"r{i}@{p['domain']}", "name": "", "fields": p["fields"], "format": p["format"],
                 "charset": p["charset"], "publications": p["publications"], "status": p["status"],
                 "created_at": NOW, "updated_at": NOW} for i, p in enumerate(people)])
        ids = [conn.execute(insert(editions).values(publication="weekly", number=n, status="sending",
                                                    created_at=NOW, content="{}")).inserted_primary_key[0]
               for n in (1, 2)]
        by_set = creation.plan_set_based(conn, pub, content, ids[0], NOW)
        by_row = creation.plan_streamed(conn, pub, content, ids[1], NOW)
        assert by_set == by_row
        assert _rows(conn, ids[0]) == _rows(conn, ids[1])
        # and both are what the rule says, reader by reader
        expected = [(row.id, row.email, key.encode()) for row, key in creation.readers(conn, pub, content)]
        assert [r[:3] for r in _rows(conn, ids[0])] == expected
        tx.rollback()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from("ab@.例-_\n%\\'\"x"), max_size=12))
def test_recipient_domain_in_sql_equals_python(pg, email):
    engine, _ = pg
    with engine.connect() as conn:
        got = conn.execute(select(q.recipient_domain_sql(literal(email)))).scalar()
    assert got == q.recipient_domain(email)


def test_plan_on_postgresql_is_set_based_and_counts(pg, monkeypatch):
    """plan() takes the one-statement path on PostgreSQL (never the per-row insert)."""
    engine, config = pg
    pub = config.publication("weekly")
    monkeypatch.setattr(q, "insert_deliveries", lambda *a, **k: pytest.fail("row-by-row insert on PostgreSQL"))
    with engine.connect() as conn, conn.begin() as tx:
        conn.execute(insert(subscribers), [
            {"email": f"p{i}@example.jp", "name": "", "fields": f, "format": "html", "status": "active",
             "created_at": NOW, "updated_at": NOW}
            for i, f in enumerate(["education", "administration", "education,local-government"] * 5)])
        eid = conn.execute(insert(editions).values(publication="weekly", number=1, status="sending", created_at=NOW,
                                                   content="{}")).inserted_primary_key[0]
        pending, skipped = creation.plan(conn, pub, _content([["education"]]), eid, NOW)
        assert (pending, skipped) == (10, 5)
        assert conn.execute(select(func.count()).where(deliveries.c.edition_id == eid,
                                                       deliveries.c.status == "skipped",
                                                       deliveries.c.last_reply == creation.SKIPPED_REPLY)).scalar() == 5
        tx.rollback()
