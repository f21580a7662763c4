"""A fresh install that works anywhere: the default templates ship inside the
package (a wheel, not only the source tree), a project overrides them file by
file, ``init`` copies them and creates a missing PostgreSQL database, and log
lines say their time zone."""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import uuid
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from newsletter.config import PACKAGED_TEMPLATES, load_config, template_search_path
from tests.conftest import CLI, PG_ADMIN_URL, PG_AVAILABLE, ROOT, write_config

SUBJECT_OVERRIDE = ("{% autoescape false %}【特報】{{ publication.title }} 第{{ edition.number }}号"
                    " — 令和の地方行政を読む{% endautoescape %}\n")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that points at a source tree or a config."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "NEWSLETTER_CONFIG", "NEWSLETTER_STORAGE_URL", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def project_without_templates(folder: Path) -> Path:
    """config.toml and the samples, but no templates/ folder beside them."""
    config = write_config(folder, "sqlite:///var/newsletter.db")
    shutil.rmtree(folder / "templates")
    shutil.copytree(ROOT / "subscribers", folder / "subscribers")
    shutil.copytree(ROOT / "articles", folder / "articles")
    return config


# -- item 12: packaged templates --------------------------------------------------------


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_sends_with_its_packaged_templates(tmp_path):
    """pip install of a wheel (not editable), a config.toml alone in another folder
    (no templates/, no samples), run from a third folder: the demo's mails are in the outbox."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("newsletter", "templates", "subscribers", "articles"):  # newsletter/ links into the others
        shutil.copytree(ROOT / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                            "--disable-pip-version-check", "-w", str(wheels), str(src)],
                           capture_output=True, text=True, timeout=240, env=clean_env(), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    [wheel] = wheels.glob("newsletter-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                                "--disable-pip-version-check", str(wheel)],
                               capture_output=True, text=True, timeout=240, env=clean_env())
    assert installed.returncode == 0, installed.stderr

    elsewhere = tmp_path / "elsewhere"
    config = write_config(elsewhere, "sqlite:///var/newsletter.db")
    shutil.rmtree(elsewhere / "templates")  # config.toml alone: templates and samples come from the wheel
    assert [p.name for p in elsewhere.iterdir()] == ["config.toml"]
    cwd = tmp_path / "somewhere-else"
    cwd.mkdir()
    where = subprocess.run([str(python), "-c", "import newsletter; print(newsletter.__file__)"],
                           capture_output=True, text=True, env=clean_env(), cwd=cwd, timeout=60)
    assert where.stdout.strip().startswith(str(venv)), where  # the wheel's copy, not a source tree

    done = subprocess.run([str(venv / "bin" / "newsletter"), "--config", str(config), "demo"],
                          capture_output=True, text=True, env=clean_env(), cwd=cwd, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "12 mails sent" in done.stdout and "Traceback" not in done.stderr
    emls = sorted((elsewhere / "var" / "outbox").glob("*.eml"))
    assert len(emls) == 12
    msg = email.message_from_bytes(emls[0].read_bytes(), policy=policy.default)
    assert "第1号" in msg["Subject"] and "配信停止" in msg.get_body(("plain",)).get_content()
    assert not (cwd / "var").exists()


def test_templates_are_looked_up_file_by_file_then_in_the_package(tmp_path):
    """A project folder with only its own subject template: the subject is its own,
    the digest is the packaged one."""
    cli = CLI(project_without_templates(tmp_path / "p"))
    (cli.folder / "templates").mkdir()
    (cli.folder / "templates" / "subject.txt.j2").write_text(SUBJECT_OVERRIDE, encoding="utf-8")
    cli("init")
    cli("subscriber", "import", cli.folder / "subscribers" / "sample.csv")
    cli("article", "import", cli.folder / "articles" / "sample.json")
    out = cli("edition", "preview", "weekly", "--format", "text").stdout
    assert out.startswith("Subject: 【特報】週刊 地方行政ニュース 第1号 — 令和の地方行政を読む")
    assert "配信停止" in out  # the packaged digest's footer


def test_paths_templates_wins_over_the_folder_beside_the_config(tmp_path):
    config = project_without_templates(tmp_path / "p")
    cli = CLI(config)
    (cli.folder / "templates").mkdir()
    (cli.folder / "templates" / "subject.txt.j2").write_text("横の フォルダ\n", encoding="utf-8")
    (cli.folder / "編集用").mkdir()
    (cli.folder / "編集用" / "subject.txt.j2").write_text(SUBJECT_OVERRIDE, encoding="utf-8")
    config.write_text(config.read_text(encoding="utf-8") + '\n[paths]\ntemplates = "編集用"\n', encoding="utf-8")
    loaded = load_config(config)
    assert template_search_path(loaded.templates_dir) == (str(cli.folder / "編集用"), str(PACKAGED_TEMPLATES))
    cli("init")
    cli("subscriber", "add", "hanako@example.jp", "--fields", "education", "--name", "佐藤 花子")
    cli("article", "add", "--field", "education", "--title", "県立高校の入試日程を公表",
        "--url", "https://news.example.jp/edu/123")
    out = cli("edition", "preview", "weekly", "--format", "text").stdout
    assert out.startswith("Subject: 【特報】") and "横の" not in out


def test_init_templates_copies_the_defaults_and_never_overwrites_without_force(sqlite_project, tmp_path):
    cli = sqlite_project
    dest = tmp_path / "テンプレート"
    out = cli("init", "--templates", dest).stdout
    packaged = sorted(p.relative_to(PACKAGED_TEMPLATES.resolve()) for p in PACKAGED_TEMPLATES.resolve().rglob("*")
                      if p.is_file())
    copied = sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file())
    assert copied == packaged and Path("digest.html.j2") in copied and Path("web/site.css") in copied
    assert f"copied {len(packaged)} template files" in out
    assert (dest / "digest.html.j2").read_bytes() == (PACKAGED_TEMPLATES / "digest.html.j2").read_bytes()

    (dest / "subject.txt.j2").write_text(SUBJECT_OVERRIDE, encoding="utf-8")
    (dest / "web" / "site.css").unlink()
    res = cli("init", "--templates", dest, ok=False)
    assert res.exit_code == 1 and "already exists" in res.stderr and "--force" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert (dest / "subject.txt.j2").read_text(encoding="utf-8") == SUBJECT_OVERRIDE  # untouched
    assert not (dest / "web" / "site.css").exists()  # nothing half-copied either

    cli("init", "--templates", dest, "--force")
    assert (dest / "subject.txt.j2").read_bytes() == (PACKAGED_TEMPLATES / "subject.txt.j2").read_bytes()
    assert (dest / "web" / "site.css").exists()
    assert cli("init", "--force", ok=False).exit_code == 2


def test_the_package_templates_are_the_repository_templates():
    """One copy in the repository: the package's folder is the top-level one."""
    assert PACKAGED_TEMPLATES.resolve() == (ROOT / "templates").resolve()
    assert (PACKAGED_TEMPLATES / "digest.html.j2").is_file() and (PACKAGED_TEMPLATES / "web" / "base.html.j2").is_file()


# -- init on PostgreSQL ------------------------------------------------------------------


def _pg_url(name: str, user: str = "postgres") -> str:
    return re.sub(r"//[^@/]*@", f"//{user}@", re.sub(r"/[^/]*$", f"/{name}", PG_ADMIN_URL))


@pytest.fixture
def pg_admin():
    if not PG_AVAILABLE:
        if os.environ.get("NEWSLETTER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but not reachable at {PG_ADMIN_URL}")
        pytest.skip("PostgreSQL not reachable")
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    made: list[tuple[str, str]] = []
    yield admin, made
    with admin.connect() as conn:
        for kind, name in reversed(made):
            if kind == "database":
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
    admin.dispose()


def _database_exists(admin, name: str) -> bool:
    with admin.connect() as conn:
        return conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is not None


@pytest.mark.postgres
def test_init_creates_a_missing_postgresql_database(tmp_path, pg_admin):
    admin, made = pg_admin
    name = f"nl_test_新規_{uuid.uuid4().hex[:8]}"
    made.append(("database", name))
    cli = CLI(write_config(tmp_path / "p", _pg_url(name)))
    out = cli("init").stdout
    assert f"created the PostgreSQL database '{name}'" in out and "initialised" in out
    assert _database_exists(admin, name)
    again = cli("init").stdout
    assert "created" not in again and "up to date" in again
    cli("subscriber", "add", "hanako@example.jp", "--fields", "education", "--name", "佐藤 花子")


@pytest.mark.postgres
def test_init_says_how_when_the_server_will_not_create_the_database(tmp_path, pg_admin):
    admin, made = pg_admin
    role = f"nl_nocreate_{uuid.uuid4().hex[:8]}"
    name = f"nl_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN NOCREATEDB'))
    made.append(("role", role))
    made.append(("database", name))
    cli = CLI(write_config(tmp_path / "p", _pg_url(name, role)))
    res = cli("init", ok=False)
    assert res.exit_code == 1 and res.stdout == ""
    [line] = res.stderr.strip().splitlines()
    assert line.startswith(f"error: the database '{name}' does not exist and this user cannot create it")
    assert line.endswith(f"create it with: createdb -h 127.0.0.1 -p 5432 -U {role} {name}")
    assert not _database_exists(admin, name)


# -- log lines and time zones ------------------------------------------------------------


def test_text_log_lines_carry_their_utc_offset(tmp_path):
    code = ("import logging\nfrom newsletter.logs import configure\nconfigure('text')\n"
            "logging.getLogger('newsletter').warning('第1号 の 配信を 開始')\n")
    for tz, offset in (("Asia/Tokyo", r"\+09:00"), ("UTC", r"\+00:00"), ("America/New_York", "-0[45]:00")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "TZ": tz, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
        stamp = rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}{offset}"
        assert re.match(rf"^{stamp} WARNING newsletter: 第1号 の 配信を 開始$", done.stderr.strip()), (tz, done.stderr)
