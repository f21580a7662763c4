"""config.toml loading and validation (newsletter/config.py) and cron reading (newsletter/cron.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import main
from newsletter.config import load_config
from newsletter.cron import cron_trigger, next_fire_times
from newsletter.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

# A complete, valid configuration of our own, so that these tests do not depend on
# the comments and spacing of the shipped config.toml.
BASE = """\
[site]
name = "市町村DXだより"
base_url = "https://dx.example.jp/"
language = "ja"
timezone = "Asia/Tokyo"

[sender]
name = "市町村DXだより編集室"
address = "dayori@dx.example.jp"
reply_to = "henshu@dx.example.jp"
postal_address = "〒980-0011 宮城県仙台市青葉区上杉1-2-3"
contact = "henshu@dx.example.jp"

[storage]
url = "sqlite:///var/dayori.db"

[provider]
kind = "file"
path = "var/outbox"

[[fields]]
slug = "local-government"
name = "地方自治"

[[fields]]
slug = "education"
name = "教育"

[[publications]]
slug = "weekly"
title = "週刊 市町村DXだより"
fields = ["local-government", "education"]
schedule = "30 8 * * MON"
timezone = "Asia/Tokyo"
max_articles = 15
charset = "utf-8"
"""


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    return message


def changed(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def test_the_shipped_config_loads(monkeypatch):
    monkeypatch.delenv("NEWSLETTER_STORAGE_URL", raising=False)
    config = load_config(ROOT / "config.toml")
    assert config.field_slugs == ("local-government", "administration", "education")
    assert config.field("education").name == "教育"
    weekly = config.publication("weekly")
    assert weekly.schedule == "0 9 * * TUE"
    assert weekly.timezone == "Asia/Tokyo"
    assert weekly.charset == "utf-8"
    assert config.provider.kind == "file"
    assert config.storage_url == f"sqlite:///{ROOT / 'var' / 'newsletter.db'}"
    assert config.sender.postal_address.startswith("〒")


def test_our_base_config_loads(tmp_path):
    config = load_config(write(tmp_path, BASE))
    assert config.site.base_url == "https://dx.example.jp"  # trailing slash dropped
    assert config.publications[0].fields == ("local-government", "education")
    assert config.publications[0].max_articles == 15
    assert config.resolve_field("教育") == "education"
    assert config.resolve_field("スポーツ") is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            'schedule = "30 8 * * MON"', 'schedule = "0 25 * * *"',
            "config.toml: publications[0].schedule: invalid cron expression '0 25 * * *': ",
            id="cron-hour",
        ),
        pytest.param(
            'schedule = "30 8 * * MON"', 'schedule = "30 8 * * 8"',
            "config.toml: publications[0].schedule: invalid cron expression '30 8 * * 8': ",
            id="cron-weekday",
        ),
        pytest.param(
            'schedule = "30 8 * * MON"', 'schedule = "30 8 * *"',
            "config.toml: publications[0].schedule: invalid cron expression '30 8 * *': ",
            id="cron-four-fields",
        ),
        pytest.param(
            'name = "市町村DXだより編集室"\n', "",
            "config.toml: sender.name: missing required key", id="missing-sender-name",
        ),
        pytest.param(
            'schedule = "30 8 * * MON"\n', "",
            "config.toml: publications[0].schedule: missing required key", id="missing-schedule",
        ),
        pytest.param(
            "max_articles = 15", 'max_articles = "15"',
            "config.toml: publications[0].max_articles: expected an integer, got '15'", id="wrong-type-int",
        ),
        pytest.param(
            'name = "市町村DXだより"', "name = 2026",
            "config.toml: site.name: expected a string, got 2026", id="wrong-type-str",
        ),
        pytest.param(
            'language = "ja"', 'language = "ja"\ncolour = "blue"',
            "config.toml: site.colour: unknown key", id="unknown-key-site",
        ),
        pytest.param(
            'charset = "utf-8"', 'charset = "utf-8"\nfooter = "よろしくお願いします"',
            "config.toml: publications[0].footer: unknown key", id="unknown-key-publication",
        ),
        pytest.param(
            'fields = ["local-government", "education"]', 'fields = ["local-government", "sports"]',
            "config.toml: publications[0].fields: unknown field 'sports'", id="unknown-field-publication",
        ),
        pytest.param(
            'timezone = "Asia/Tokyo"\nmax_articles', 'timezone = "Asia/Tokio"\nmax_articles',
            "config.toml: publications[0].timezone: unknown time zone 'Asia/Tokio'", id="bad-timezone",
        ),
        pytest.param(
            'timezone = "Asia/Tokyo"\n\n[sender]', 'timezone = "Japan/Osaka"\n\n[sender]',
            "config.toml: site.timezone: unknown time zone 'Japan/Osaka'", id="bad-site-timezone",
        ),
        pytest.param(
            'charset = "utf-8"', 'charset = "shift_jis"',
            "config.toml: publications[0].charset: expected one of utf-8, iso-2022-jp, got 'shift_jis'",
            id="bad-charset",
        ),
        pytest.param(
            'address = "dayori@dx.example.jp"', 'address = "dayori@@dx.example.jp"',
            "config.toml: sender.address: invalid email address 'dayori@@dx.example.jp'", id="bad-address",
        ),
        pytest.param(
            'base_url = "https://dx.example.jp/"', 'base_url = "dx.example.jp"',
            "config.toml: site.base_url: expected an http(s) URL, got 'dx.example.jp'", id="bad-base-url",
        ),
        pytest.param(
            'slug = "education"', 'slug = "Education"',
            "config.toml: fields[1].slug: invalid slug 'Education'", id="bad-field-slug",
        ),
        pytest.param(
            'title = "週刊 市町村DXだより"', 'title = "週刊\\nBcc: x@example.jp"',
            "config.toml: publications[0].title: line breaks are not allowed here", id="newline-in-title",
        ),
        pytest.param(
            "[[publications]]", "[unknown]\nx = 1\n\n[[publications]]",
            "config.toml: unknown: unknown key", id="unknown-table",
        ),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, old, new, expected):
    assert load_error(tmp_path, changed(old, new)).startswith(expected)


def test_missing_table(tmp_path):
    start = BASE.index("[sender]")
    text = BASE[:start] + BASE[BASE.index("[storage]"):]
    assert load_error(tmp_path, text) == "config.toml: sender: missing required table"


def test_missing_publications(tmp_path):
    text = BASE[: BASE.index("[[publications]]")]
    assert load_error(tmp_path, text).startswith("config.toml: publications: at least one [[publications]]")


def test_table_of_the_wrong_type(tmp_path):
    text = changed("[site]\n", 'site = "地方行政"\n[site_]\n')
    assert load_error(tmp_path, text).startswith("config.toml: site: expected a table")


def test_toml_syntax_error_names_the_file_and_line(tmp_path):
    message = load_error(tmp_path, changed("max_articles = 15", "max_articles = = 15"))
    assert message.startswith("config.toml: ")
    assert "line 35" in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nowhere" / "config.toml")


def test_relative_sqlite_path_resolves_against_the_config_folder(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("NEWSLETTER_STORAGE_URL", raising=False)
    folder = tmp_path / "project"
    config = load_config(write(folder, BASE))
    assert config.storage_url == f"sqlite:///{folder.resolve() / 'var' / 'dayori.db'}"
    # and through the CLI: the database appears next to config.toml, not in the cwd
    result = CliRunner().invoke(main, ["--config", str(folder / "config.toml"), "init"])
    assert result.exit_code == 0, result.output
    assert (folder / "var" / "dayori.db").exists()
    assert not (elsewhere / "var").exists()


def test_absolute_and_memory_urls_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_STORAGE_URL", raising=False)
    absolute = f"sqlite:///{tmp_path / 'abs.db'}"
    config = load_config(write(tmp_path, changed('url = "sqlite:///var/dayori.db"', f'url = "{absolute}"')))
    assert config.storage_url == absolute
    pg = "postgresql+psycopg://postgres@127.0.0.1:5432/dayori"
    config = load_config(write(tmp_path, changed('url = "sqlite:///var/dayori.db"', f'url = "{pg}"')))
    assert config.storage_url == pg


def test_environment_storage_url_overrides_the_file(tmp_path, monkeypatch):
    override = f"sqlite:///{tmp_path / 'override.db'}"
    monkeypatch.setenv("NEWSLETTER_STORAGE_URL", override)
    assert load_config(write(tmp_path, BASE)).storage_url == override


def test_environment_config_is_used_when_no_option(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    path = write(folder, BASE)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    write(cwd, changed("https://dx.example.jp/", "https://cwd.example.jp/"))  # ./config.toml must lose
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("NEWSLETTER_STORAGE_URL", raising=False)
    monkeypatch.delenv("NEWSLETTER_CONFIG", raising=False)
    runner = CliRunner()
    result = runner.invoke(main, ["init"], env={"NEWSLETTER_CONFIG": str(path)})
    assert result.exit_code == 0, result.output
    assert (folder / "var" / "dayori.db").exists()
    assert not (cwd / "var").exists()
    # --config wins over the environment
    other = write(tmp_path / "other", BASE)
    result = runner.invoke(main, ["--config", str(other), "init"], env={"NEWSLETTER_CONFIG": str(path)})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "other" / "var" / "dayori.db").exists()
    # without either, ./config.toml
    result = runner.invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    assert (cwd / "var" / "dayori.db").exists()


@pytest.mark.parametrize(
    ("old", "new", "start"),
    [
        ('schedule = "30 8 * * MON"', 'schedule = "0 25 * * *"',
         "error: config.toml: publications[0].schedule: invalid cron expression '0 25 * * *': "),
        ('name = "市町村DXだより編集室"\n', "", "error: config.toml: sender.name: missing required key"),
        ("[site]", "[site", "error: config.toml: "),
        ('charset = "utf-8"', 'charset = "euc-jp"', "error: config.toml: publications[0].charset: "),
    ],
)
def test_cli_reports_a_broken_config_in_one_line(tmp_path, old, new, start):
    path = write(tmp_path, changed(old, new))
    result = CliRunner().invoke(main, ["--config", str(path), "subscriber", "list"])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(start)


def test_cli_reports_a_missing_config_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEWSLETTER_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["article", "list"])
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ") and "config file not found" in result.stderr


# --- cron: day-of-week numbering follows cron (0 and 7 = Sunday), not APScheduler (0 = Monday)

AFTER = datetime(2026, 6, 1, tzinfo=UTC)  # a Monday


def weekdays(expr: str, count: int = 7) -> list[str]:
    return [d.strftime("%a") for d in next_fire_times(expr, "Asia/Tokyo", AFTER, count)]


@pytest.mark.parametrize(
    ("dow", "days"),
    [
        ("0", {"Sun"}),
        ("7", {"Sun"}),
        ("7-7", {"Sun"}),
        ("2", {"Tue"}),
        ("TUE", {"Tue"}),
        ("tue", {"Tue"}),
        ("1-5", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("mon-fri", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("5-7", {"Fri", "Sat", "Sun"}),
        ("0,6", {"Sat", "Sun"}),
        ("*/2", {"Sun", "Tue", "Thu", "Sat"}),
        ("1-5/2", {"Mon", "Wed", "Fri"}),
        ("*", {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}),
    ],
)
def test_cron_day_of_week_follows_cron(dow, days):
    assert set(weekdays(f"0 9 * * {dow}", 14)) == days


def test_cron_fires_in_the_publication_time_zone():
    times = next_fire_times("0 9 * * 2", "Asia/Tokyo", AFTER, 3)
    assert [t.isoformat() for t in times] == [
        "2026-06-02T09:00:00+09:00",
        "2026-06-09T09:00:00+09:00",
        "2026-06-16T09:00:00+09:00",
    ]
    assert times[0].astimezone(UTC).hour == 0


@pytest.mark.parametrize("expr", ["0 9 * * 8", "0 9 * * 5-2", "0 9 * * */0", "0 9 * * 7-1", "0 25 * * *", "0 9 * *"])
def test_cron_rejects(expr):
    with pytest.raises(ValueError):
        cron_trigger(expr, "Asia/Tokyo")
