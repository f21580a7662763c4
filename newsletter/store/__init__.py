"""The database: engine set-up, schema migrations, and the queries by noun
(``store.articles``, ``store.subscribers``, ``store.editions``).

SQLite (the default) is opened in WAL mode with foreign keys on and
``synchronous=NORMAL``: the delivery log commits often, and a full fsync per
commit in the default journal mode costs about a millisecond each.  Any other
SQLAlchemy URL (``postgresql+psycopg://...``) works unchanged.

``newsletter init`` on PostgreSQL creates the database itself when the server
lets this user do it (:func:`ensure_database`, through the ``postgres``
maintenance database); otherwise it says, in one line, the ``createdb`` command
to run.  No other command creates a database: they refuse to start instead.

A full disk is a :class:`StoreError` (``database full: <path>``) raised from the
engine itself (:func:`_map_errors`), so every caller — CLI, daemon, web — sees
one line instead of a driver traceback; the transaction it interrupted is
rolled back as any other error would roll it back.
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from ..errors import StoreError

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


SQLITE_FULL = 13  # sqlite3.Error.sqlite_errorcode: "database or disk is full"
PG_DISK_FULL = "53100"


def _map_errors(where: str):
    def handle_error(context) -> None:
        orig = context.original_exception
        full = (getattr(orig, "sqlite_errorcode", None) == SQLITE_FULL
                or getattr(orig, "sqlstate", None) == PG_DISK_FULL)
        if full:
            raise StoreError(f"database full: {where}") from orig
    return handle_error


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"storage.url: not a database URL: '{url}'") from None
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError:
        raise StoreError(f"storage.url: no database driver for '{parsed.drivername}'") from None
    except ModuleNotFoundError as exc:
        raise StoreError(f"storage.url: database driver not installed ({exc.name})") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    where = parsed.database if parsed.get_backend_name() == "sqlite" else parsed.render_as_string(hide_password=True)
    event.listen(engine, "handle_error", _map_errors(where or ":memory:"))
    return engine


def ensure_database(url: str) -> str | None:
    """Create the PostgreSQL database named in ``url`` when it does not exist.

    Returns the name when it was created, None when there was nothing to do (it
    exists, or the URL is not PostgreSQL).  When the server refuses (no CREATEDB
    right, no ``postgres`` database to connect to), StoreError says how to create
    it by hand."""
    engine = make_engine(url)
    parsed = engine.url
    try:
        if parsed.get_backend_name() != "postgresql" or not parsed.database:
            return None
        try:
            with engine.connect():
                return None
        except OperationalError as exc:
            if f'database "{parsed.database}" does not exist' not in str(exc.orig):
                raise StoreError(f"cannot open the database: {_first_line(exc.orig)}") from None
    finally:
        engine.dispose()
    name = parsed.database
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text('CREATE DATABASE "' + name.replace('"', '""') + '"'))
    except DBAPIError as exc:
        command = ["createdb"]
        for flag, value in (("-h", parsed.host), ("-p", parsed.port), ("-U", parsed.username)):
            if value:
                command += [flag, str(value)]
        raise StoreError(f"the database '{name}' does not exist and this user cannot create it "
                         f"({_first_line(exc.orig)}); create it with: {shlex.join([*command, name])}") from None
    finally:
        admin.dispose()
    log.info("created database %s", name)
    return name


def _first_line(exc: BaseException | None) -> str:
    """A driver's message without its DETAIL/HINT lines and server prefix noise."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return re.sub(r"\s+", " ", lines[0]) if lines else type(exc).__name__


def _alembic_config(connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def schema_head() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def schema_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest revision; returns (before, after)."""
    from alembic import command

    before = check_version(engine, allow_empty=True)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "head")
    return before, schema_head()


def check_version(engine: Engine, *, allow_empty: bool = False) -> str | None:
    """The database's schema revision; StoreError when this version cannot use it."""
    try:
        current = schema_revision(engine)
    except OperationalError as exc:
        raise StoreError(f"cannot open the database: {exc.orig}") from None
    script = ScriptDirectory(str(MIGRATIONS))
    if current is None:
        if allow_empty:
            return None
        if inspect(engine).get_table_names():
            raise StoreError("the database has tables but no schema version; it was not made by newsletter")
        raise StoreError("the database is not initialised: run 'newsletter init'")
    try:
        script.get_revision(current)
    except Exception:
        raise StoreError(
            f"the database schema ({current}) is newer than this version of newsletter "
            f"understands ({script.get_current_head()}); upgrade newsletter"
        ) from None
    return current


def open_engine(url: str, *, migrate: bool = True) -> Engine:
    """An engine for a database this version can use.

    A database made by an older version is upgraded in place (and logged); one
    made by a newer version, or not initialised, is refused with StoreError.
    """
    engine = make_engine(url)
    current = check_version(engine)
    if current != schema_head():
        if not migrate:
            raise StoreError(f"the database schema ({current}) is older than {schema_head()}: run 'newsletter init'")
        before, after = upgrade(engine)
        log.info("upgraded database schema from %s to %s", before, after)
    return engine
