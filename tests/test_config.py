"""config.toml loading and validation (newsletter/config.py) and cron reading (newsletter/cron.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
            "config.toml: publications[0].max_articles: must be an integer, not a string ('15')", id="wrong-type-int",
        ),
        pytest.param(
            'name = "市町村DXだより"', "name = 2026",
            "config.toml: site.name: must be a string, not an integer (2026)", id="wrong-type-str",
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
            "config.toml: publications[0].charset: must be one of 'utf-8', 'iso-2022-jp', not 'shift_jis'",
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
    assert load_error(tmp_path, text).startswith("config.toml: site: must be a table")


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


# --- whatever TOML holds: ConfigError naming the key, never another exception (issue 11 item 10) ---

FULL = BASE + """
[calendar]
closure = ["12-29", "01-03"]
closed_dates = ["2026-08-13"]

[web]
consent_version = "1"
confirm_expiry = "72h"
signup_limit_ip = "10/h"
signup_limit_address = "3/d"
max_body_bytes = 65536
trusted_proxies = ["127.0.0.1"]

[web.webhooks]
max_age = "1d"
mailgun_signing_key_env = "MAILGUN_WEBHOOK_SIGNING_KEY"
postmark_username = "postmark"
postmark_password_env = "POSTMARK_WEBHOOK_PASSWORD"
ses_certificates = "var/sns-certs"
ses_fetch_certificates = false
ses_topic_arns = ["arn:aws:sns:ap-northeast-1:123456789012:ses-bounces"]

[bounces]
soft_limit = 3
soft_window = "30d"
"""


def _key_paths(table, prefix=()):
    """(path, value) of every leaf key of a parsed TOML document."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _key_paths(value, (*prefix, key))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                yield from _key_paths(item, (*prefix, key, i))
        else:
            yield (*prefix, key), value


def _with(doc, path, value):
    import copy

    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return doc


def _full_doc():
    import tomllib

    doc = tomllib.loads(FULL)
    doc["provider"].update({"rate": "50/s", "retry_for": "3d", "lease_seconds": 120, "connections": 2,
                            "batch_size": 100, "hourly_quota": 1000, "daily_quota": 10000, "max_errors": 50,
                            "hard_bounce_limit": 1,
                            "domain_limits": [{"domains": ["docomo.ne.jp"], "rate": "10/s"}]})
    doc["publications"][0].update({"misfire_grace": "6h", "on_holiday": "send", "full_text": False,
                                   "language": "ja", "description": "説明", "text_width": 70})
    return doc


KEY_PATHS = sorted(_key_paths(_full_doc()), key=str)

_toml_values = st.recursive(
    st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.floats()
    | st.text(max_size=20) | st.dates() | st.datetimes() | st.times()
    | st.sampled_from(["nan", "inf", "1e300", "1e300s", "99999999999999999999d", "0", "-1", "0/s",
                       "9" * 400 + "/s", "", " ", "\x01", "a\nb", float("nan"), float("inf"), 1e300, 2**70,
                       [{"a": 1}], [["x"]], {"a": 1}]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


def test_the_full_document_used_below_loads(tmp_path):
    load_config_doc(_full_doc(), tmp_path)


def load_config_doc(doc, folder: Path):
    from newsletter.config import parse_config
    from newsletter.providers import load_provider

    config = parse_config(doc, folder / "config.toml")
    load_provider(config.provider.kind, config.provider.options, folder)
    return config


HOSTILE = ["nan", "inf", "1e300", "1e300s", "99999999999999999999d", "-1", "0/s", "9" * 400 + "/s", "", " ",
           "\x01", "a\nb", float("nan"), float("inf"), 1e300, -1, 0, 2**70, True, [{"a": 1}], [["x"]], [1], {"a": 1}]


def test_hostile_values_in_every_key_are_config_errors_or_sane(tmp_path):
    for path, _ in KEY_PATHS:
        for value in HOSTILE:
            try:
                _check_one(tmp_path, path, value)
            except AssertionError:
                raise
            except Exception as exc:
                raise AssertionError(f"{path} = {value!r:.60}: {exc!r}") from exc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_values_in_every_key_are_config_errors(tmp_path, data):
    path, _ = data.draw(st.sampled_from(KEY_PATHS), label="key")
    value = data.draw(_toml_values, label="value")
    _check_one(tmp_path, path, value)


def _check_one(tmp_path, path, value):
    doc = _with(_full_doc(), path, value)
    try:
        config = load_config_doc(doc, tmp_path)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    # What was accepted is usable: every duration and rate finite and bounded.
    import dataclasses
    import math

    MAX_DURATION, MAX_RATE = 3650 * 86400, 1e6  # ten years; a million a second

    d = config.delivery
    seconds = [d.retry_for_seconds, d.lease_seconds, config.web.confirm_expiry_seconds,
               config.web.webhooks.max_age_seconds, config.bounces.soft_window_seconds,
               *(p.misfire_grace for p in config.publications)]
    assert all(math.isfinite(x) and 0 <= x <= MAX_DURATION for x in seconds), (path, value, seconds)
    rates = [r for r in (d.rate, *(lim.rate for lim in d.domain_limits)) if r is not None]
    assert all(0 < r.per_second <= MAX_RATE for r in rates), (path, value, rates)
    assert all(isinstance(f, str) for p in config.publications for f in p.fields)
    # Counts that size threads, batches and SQL limits are bounded too.
    assert d.connections <= 100 and d.batch_size <= 100_000, (path, value)
    assert all(p.max_articles <= 1000 and p.text_width <= 1000 for p in config.publications), (path, value)
    assert dataclasses.is_dataclass(config)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("misfire_grace", "nan", "publications[0].misfire_grace: must be a finite duration, not nan"),
    ("misfire_grace", "inf", "publications[0].misfire_grace: must be a finite duration, not inf"),
    ("misfire_grace", "1e300", "publications[0].misfire_grace: must be at most 3650 days"),
    ("misfire_grace", '"99999999999999d"', "publications[0].misfire_grace: must be at most 3650 days"),
    ("misfire_grace", '"1e300s"', "publications[0].misfire_grace: invalid duration '1e300s'"),
    ("fields", "[{a=1}]", "publications[0].fields: must be a list of field slugs, not a list with a table"),
    ("max_articles", "1180591620717411303424", "publications[0].max_articles: must be at most 1000"),
])
def test_nan_inf_huge_and_wrong_types_in_a_publication(tmp_path, key, value, expected):
    text = changed('charset = "utf-8"', f'charset = "utf-8"\n{key} = {value}')
    if key in ("fields", "max_articles"):
        text = BASE.replace(f"\n{key} = ", f"\n{key}_old = ").replace(
            'charset = "utf-8"', f'charset = "utf-8"\n{key} = {value}').replace(f"\n{key}_old = ", "\n# ")
    assert load_error(tmp_path, text).startswith(f"config.toml: {expected}")


@pytest.mark.parametrize(("line", "expected"), [
    ("lease_seconds = nan", "provider.lease_seconds: must be a finite duration, not nan"),
    ("lease_seconds = inf", "provider.lease_seconds: must be a finite duration, not inf"),
    ("retry_for = 1e300", "provider.retry_for: must be at most 3650 days"),
    ('rate = "1e300/s"', "provider.rate: invalid rate '1e300/s'"),
    ('rate = "' + "9" * 400 + '/s"', "provider.rate: invalid rate"),
    ("domain_limits = [{a=1}]", "provider.domain_limits[0].domains: missing required key"),
])
def test_nan_inf_and_huge_engine_settings(tmp_path, line, expected):
    assert load_error(tmp_path, changed('path = "var/outbox"', f'path = "var/outbox"\n{line}')).startswith(
        f"config.toml: {expected}")


@pytest.mark.parametrize(("text", "expected"), [
    ("\n[web]\nconfirm_expiry = nan\n", "web.confirm_expiry: must be a finite duration, not nan"),
    ("\n[bounces]\nsoft_window = inf\n", "bounces.soft_window: must be a finite duration, not inf"),
    ('\n[web]\nsignup_limit_ip = "99999999999999999999/h"\n', "web.signup_limit_ip: invalid limit"),
    ("\n[calendar]\nclosed_dates = [{a=1}]\n", "calendar.closed_dates: invalid date {'a': 1}"),
    ('\n[web.webhooks]\nses_topic_arns = [{a=1}]\n', "web.webhooks.ses_topic_arns: must be a list of non-empty"),
    ('\n[site2]\n', "site2: unknown key"),
])
def test_nan_inf_and_wrong_types_in_other_tables(tmp_path, text, expected):
    assert load_error(tmp_path, BASE + text).startswith(f"config.toml: {expected}")


def test_provider_timeouts_are_finite(tmp_path):
    from newsletter.providers import load_provider

    with pytest.raises(ConfigError, match=r"^provider.timeout: must be a finite number, not nan$"):
        load_provider("smtp", {"timeout": float("nan")}, tmp_path)


# --- the link-signing key: made by init, never by reading config (issue 12) ---------------------

def test_reading_the_secret_creates_nothing_and_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    config = load_config(write(tmp_path, BASE))
    with pytest.raises(ConfigError) as info:
        config.secret()
    assert str(info.value) == (f"no link-signing key: set $NEWSLETTER_SECRET, or run 'newsletter init' "
                               f"to make {tmp_path / 'var' / 'secret.key'}")
    assert not (tmp_path / "var").exists()
    monkeypatch.setenv("NEWSLETTER_SECRET", "from-the-environment")
    assert config.secret() == b"from-the-environment"
    assert config.create_secret() is None  # the variable is set: nothing to make
    assert not (tmp_path / "var").exists()


def test_init_makes_the_key_once(tmp_path, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    path = write(tmp_path, BASE)
    result = CliRunner().invoke(main, ["--config", str(path), "init"])
    assert result.exit_code == 0, result.output
    key_file = tmp_path / "var" / "secret.key"
    assert f"made a link-signing key in {key_file}" in result.output
    assert (key_file.stat().st_mode & 0o777) == 0o600
    key = load_config(path).secret()
    assert len(key) == 64
    result = CliRunner().invoke(main, ["--config", str(path), "init"])
    assert "link-signing key" not in result.output
    assert load_config(path).secret() == key


def test_a_command_needing_the_key_without_one_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    import shutil

    path = write(tmp_path, BASE)
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    assert CliRunner().invoke(main, ["--config", str(path), "init"]).exit_code == 0
    (tmp_path / "var" / "secret.key").unlink()
    for args in (["article", "add", "--title", "窓口の受付時間を延長", "--url", "https://dx.example.jp/a/1",
                  "--field", "教育"], ["subscriber", "add", "sato@example.jp"]):
        assert CliRunner().invoke(main, ["--config", str(path), *args]).exit_code == 0
    result = CliRunner().invoke(main, ["--config", str(path), "edition", "send", "weekly"])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        "error: no link-signing key: set $NEWSLETTER_SECRET, or run 'newsletter init' "
        f"to make {tmp_path}/var/secret.key"]
    assert not (tmp_path / "var" / "secret.key").exists()
    listing = CliRunner().invoke(main, ["--config", str(path), "edition", "list"])
    assert listing.exit_code == 0 and "weekly" not in listing.stdout, listing.output  # nothing created


def test_the_demo_makes_the_key_it_needs(tmp_path, monkeypatch):
    import shutil

    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    for name in ("config.toml", "templates", "subscribers", "articles"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "config.toml"), "demo"])
    assert result.exit_code == 0, result.output
    assert "12 mails sent" in result.stdout
    assert len((tmp_path / "var" / "secret.key").read_text()) == 64
