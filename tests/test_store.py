"""The database: schema creation and migration, version checks, UTC times, SQLite settings.

Every test here runs on SQLite and on PostgreSQL (``storage_url``), except the SQLite PRAGMAs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, insert, inspect, select, table, text
from sqlalchemy.exc import IntegrityError, StatementError

from newsletter.store import _alembic_config, make_engine, schema_head, schema_revision
from newsletter.store.tables import UTCDateTime, articles, consents, metadata, subscribers
from tests.conftest import CLI, write_config


@pytest.fixture
def engine(storage_url):
    eng = make_engine(storage_url)
    yield eng
    eng.dispose()


@pytest.fixture
def cli(tmp_path, storage_url):
    """A project on the parametrised database, NOT initialised."""
    return CLI(write_config(tmp_path / "project", storage_url))


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_init_creates_the_schema_at_head(cli, engine):
    result = cli("init")
    assert result.stdout.startswith("initialised ")
    assert f"(schema {schema_head()})" in result.stdout
    assert schema_revision(engine) == schema_head()
    tables = set(inspect(engine).get_table_names())
    assert set(metadata.tables) <= tables
    assert "alembic_version" in tables
    # and the commands can use it right away
    assert cli("subscriber", "list").stdout == ""


def test_second_init_says_up_to_date(cli, engine):
    cli("init")
    result = cli("init")
    assert result.stdout.strip() == f"database is up to date (schema {schema_head()})"
    assert schema_revision(engine) == schema_head()


def test_an_older_database_is_upgraded_when_a_command_opens_it(cli, engine):
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0001")
    assert schema_revision(engine) == "0001"
    assert "editions" not in inspect(engine).get_table_names()
    now = datetime(2026, 5, 12, 1, 30, tzinfo=UTC)
    # the subscribers table as revision 0001 made it (tables.py describes the newest one)
    subscribers_0001 = table(
        "subscribers", column("email"), column("name"), column("fields"), column("format"), column("status"),
        column("created_at", UTCDateTime), column("updated_at", UTCDateTime),
    )
    with engine.begin() as conn:  # data written by the older version survives
        conn.execute(
            insert(subscribers_0001).values(
                email="kimura.sachiko@example.jp", name="木村 幸子", fields="education", format="html",
                status="active", created_at=now, updated_at=now,
            )
        )
    result = cli("subscriber", "list")
    assert result.stdout.splitlines() == ["kimura.sachiko@example.jp\tactive\teducation\thtml\t木村 幸子"]
    assert schema_revision(engine) == schema_head()
    assert {"editions", "edition_articles", "deliveries"} <= set(inspect(engine).get_table_names())


def test_init_upgrades_an_older_database(cli, engine):
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0001")
    result = cli("init")
    assert result.stdout.startswith("upgraded ")
    assert f"from schema 0001 to {schema_head()}" in result.stdout


def test_a_newer_database_is_refused(cli, engine):
    cli("init")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    for args in (("subscriber", "list"), ("article", "list"), ("init",)):
        line = one_error_line(cli(*args, ok=False))
        assert "newer than this version" in line and "ffff" in line
    with engine.connect() as conn:  # nothing was touched
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "ffff"


def test_an_uninitialised_database_asks_for_init(cli, engine):
    for args in (("subscriber", "list"), ("article", "list"), ("subscriber", "add", "a@example.jp")):
        line = one_error_line(cli(*args, ok=False))
        assert "run 'newsletter init'" in line
    assert inspect(engine).get_table_names() == []


def test_a_foreign_database_is_refused(cli, engine):
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kintai (id INTEGER PRIMARY KEY)"))
    line = one_error_line(cli("article", "list", ok=False))
    assert "no schema version" in line


def test_migrations_build_exactly_the_tables_module(cli, engine):
    cli("init")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []


def test_times_round_trip_as_utc(cli, engine):
    cli("init")
    tokyo = datetime(2026, 4, 1, 9, 0, 30, 123456, tzinfo=ZoneInfo("Asia/Tokyo"))
    new_york = datetime(2026, 3, 8, 3, 30, tzinfo=ZoneInfo("America/New_York"))  # just after the DST change
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET TIME ZONE 'America/Los_Angeles'"))  # the session's zone must not matter
        for i, when in enumerate((tokyo, new_york)):
            conn.execute(
                insert(articles).values(
                    url=f"https://example.jp/news/{i}", title="年度初めの人事異動", summary="", body="",
                    body_format="markdown", author="", fields="administration", status="queued",
                    publish_at=when, priority=0, pinned=False, source="", created_at=when, updated_at=when,
                )
            )
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET TIME ZONE 'Asia/Kolkata'"))
        got = conn.execute(select(articles.c.publish_at).order_by(articles.c.id)).scalars().all()
    assert got == [tokyo, new_york]
    assert [g.utcoffset() for g in got] == [timedelta(0), timedelta(0)]
    assert got[0].replace(tzinfo=None) == datetime(2026, 4, 1, 0, 0, 30, 123456)
    assert got[1].replace(tzinfo=None) == datetime(2026, 3, 8, 7, 30)
    # ordering and comparison happen on the instant
    with engine.connect() as conn:
        later = conn.execute(
            select(articles.c.url).where(articles.c.publish_at > datetime(2026, 3, 31, 23, 59, tzinfo=UTC))
        ).scalars().all()
    assert later == ["https://example.jp/news/0"]


def test_naive_datetimes_are_refused(cli, engine):
    cli("init")
    with engine.begin() as conn, pytest.raises(StatementError, match="naive datetime"):
        conn.execute(
            insert(subscribers).values(
                email="naive@example.jp", name="", fields="education", format="html", status="active",
                created_at=datetime(2026, 1, 1, 9, 0), updated_at=datetime(2026, 1, 1, 9, 0, tzinfo=UTC),
            )
        )


def test_foreign_keys_are_enforced(cli, engine):
    cli("init")
    with engine.begin() as conn, pytest.raises(IntegrityError):
        conn.execute(insert(consents).values(subscriber_id=999, event="import", at=datetime.now(UTC), source="x"))


def test_sqlite_pragmas(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 'var' / 'pragmas.db'}")
    try:
        with eng.connect() as conn:
            assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar_one() == 1  # NORMAL
    finally:
        eng.dispose()
    assert (tmp_path / "var" / "pragmas.db").exists()  # the folder was created


def test_a_bad_storage_url_is_one_line(tmp_path):
    cli = CLI(write_config(tmp_path / "project", "nosuchdb+driver://x/y"))
    line = one_error_line(cli("init", ok=False))
    assert "storage.url" in line
