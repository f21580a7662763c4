"""Shared fixtures: a project folder with its own config.toml, a database per test
(SQLite always; PostgreSQL too when the server is reachable), and a CLI runner."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from tests.smtp_fixtures import smtp_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("NEWSLETTER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


PG_AVAILABLE = _pg_available()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request, tmp_path):
    """A fresh, empty database URL: SQLite in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'var' / 'newsletter.db'}"
        return
    if not PG_AVAILABLE:
        if os.environ.get("NEWSLETTER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but not reachable at {PG_ADMIN_URL}")
        pytest.skip("PostgreSQL not reachable")
    name = f"nl_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = re.sub(r"/[^/]*$", f"/{name}", PG_ADMIN_URL)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def write_config(
    folder: Path, storage_url: str, *, provider: str | None = None, extra: str = "", replace: dict | None = None
) -> Path:
    """Copy the project's config.toml into ``folder`` with another storage URL/provider."""
    source = (ROOT / "config.toml").read_text(encoding="utf-8")
    source = re.sub(r'(?m)^url = "sqlite:///var/newsletter.db"$', f'url = "{storage_url}"', source)
    if provider is not None:
        source = re.sub(r"(?ms)^\[provider\]\n.*?(?=^\[\[fields\]\])", provider.strip() + "\n\n", source)
    for old, new in (replace or {}).items():
        assert old in source, old
        source = source.replace(old, new)
    source += extra
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(source, encoding="utf-8")
    if not (folder / "templates").exists():
        shutil.copytree(ROOT / "templates", folder / "templates")
    return path


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class CLI:
    """Runs ``newsletter --config <project>/config.toml ARGS`` in-process."""

    def __init__(self, config_path: Path):
        self.config_path = config_path
        self.folder = config_path.parent

    def __call__(self, *args: str, input: str | None = None, ok: bool = True) -> Result:
        from newsletter.cli import main

        runner = CliRunner()
        res = runner.invoke(main, ["--config", str(self.config_path), *map(str, args)], input=input,
                            catch_exceptions=True)
        exc = res.exception if res.exception and not isinstance(res.exception, SystemExit) else None
        result = Result(res.exit_code, res.stdout, res.stderr, exc)
        if ok and (res.exit_code != 0 or exc):
            raise AssertionError(f"newsletter {' '.join(map(str, args))} -> {res.exit_code}\n{result.output}\n{exc!r}")
        if exc is not None:
            raise AssertionError(f"newsletter {' '.join(map(str, args))} raised {exc!r}") from exc
        return result


@pytest.fixture
def project(tmp_path, storage_url):
    """A project folder with config.toml on the parametrised database, initialised."""
    config = write_config(tmp_path / "project", storage_url)
    cli = CLI(config)
    cli("init")
    return cli


@pytest.fixture
def sqlite_project(tmp_path):
    """The same, SQLite only (for tests about files and formats, not the database)."""
    config = write_config(tmp_path / "project", f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}")
    cli = CLI(config)
    cli("init")
    return cli
