"""Bad article input is one line naming the item, never a traceback (issue 11 items 7 and 10).

What may reach XML/HTML is decided once (``sanitize.text_problem``/``url_problem``) and
checked at every door: ``article add``/``edit`` and the JSON, CSV, Markdown and feed
importers.  An article stored before the rule existed is a preflight error naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine

from newsletter import articles as arts
from newsletter.config import load_config
from newsletter.errors import InputError
from newsletter.store import make_engine
from newsletter.store.tables import articles, deliveries, editions
from tests.conftest import ROOT
from tests.test_articles import article_count, article_rows, errors, write

GOOD = {"title": "防災訓練のお知らせ", "url": "https://www.city.asagiri.example.jp/bousai", "fields": ["地方自治"],
        "summary": "９月１日、市役所本庁舎で実施します。"}


def one_error(result) -> str:
    assert result.exit_code == 1, result.output
    [line] = errors(result)
    return line


# --- URLs and texts at every door ---------------------------------------------------------------

@pytest.mark.parametrize(("url", "problem"), [
    ("https://www.city.asagiri.example.jp/a\x01b", "url has a control character (U+0001) at character 38"),
    ("https://www.city.asagiri.example.jp/a\x85b", "url has a control character (U+0085) at character 38"),
    ("https://www.city.asagiri.example.jp/a\u200bb", "bad url 'https://www.city.asagiri.example.jp/a\\u200bb'"),
    ("https://www.city.asagiri.example.jp:99999/", "bad url 'https://www.city.asagiri.example.jp:99999/' (malformed"),
    ("https://www.city.asagiri.example.jp/" + "a" * 2000, "bad url 'https://www.city.asagiri.example.jp/aaaa"),
    ("ftp://www.city.asagiri.example.jp/", "bad url 'ftp://www.city.asagiri.example.jp/' (expected http"),
])
def test_article_add_refuses_a_url_that_cannot_render(sqlite_project, url, problem):
    result = sqlite_project("article", "add", "--field", "行政", "--title", "庁舎の休館日", "--url", url, ok=False)
    assert one_error(result).startswith(f"article: {problem}")
    assert article_count(sqlite_project) == 0


def test_an_idn_url_is_accepted(sqlite_project):
    sqlite_project("article", "add", "--field", "行政", "--title", "庁舎の休館日", "--url", "https://朝霧市.jp/休館日")
    assert article_rows(sqlite_project)[0].url == "https://朝霧市.jp/休館日"


def test_article_edit_refuses_control_characters(sqlite_project):
    sqlite_project("article", "add", "--field", "行政", "--title", "庁舎の休館日", "--url",
                   "https://www.city.asagiri.example.jp/kyukan")
    result = sqlite_project("article", "edit", "1", "--url", "https://www.city.asagiri.example.jp/\x01", ok=False)
    assert one_error(result) == "article 1: url has a control character (U+0001) at character 37"
    result = sqlite_project("article", "edit", "1", "--summary", "休館\x0cします", ok=False)
    assert one_error(result) == "article 1: summary has a control character (U+000C) at character 3"
    assert article_rows(sqlite_project)[0].url == "https://www.city.asagiri.example.jp/kyukan"


def test_every_importer_names_the_bad_item_and_takes_the_good_ones(sqlite_project):
    cli = sqlite_project
    bad = dict(GOOD, url="https://www.city.asagiri.example.jp/bousai\x01", title="防災訓練（再掲）")
    path = write(cli.folder, "items.json", json.dumps([GOOD, bad], ensure_ascii=False))
    assert one_error(cli("article", "import", path, ok=False)) == (
        "items.json: item 2: url has a control character (U+0001) at character 43")

    csv_text = ("タイトル,リンク,分野\n"
                "休館日のお知らせ,https://www.city.asagiri.example.jp/kyukan,行政\n"
                "休館日\x1bのお知らせ,https://www.city.asagiri.example.jp/kyukan2,行政\n")
    assert one_error(cli("article", "import", write(cli.folder, "items.csv", csv_text), ok=False)) == (
        "items.csv:3: title has a control character (U+001B) at character 4")

    md = "---\ntitle: 説明会\nurl: https://www.city.asagiri.example.jp/setsumei\nfields: 教育\n---\n本文\x07です。\n"
    assert one_error(cli("article", "import", write(cli.folder, "item.md", md), ok=False)) == (
        "item.md: body has a control character (U+0007) at character 3")

    feed = ("<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>朝霧市</title>"
            "<item><title>入札情報</title><link>https://www.city.asagiri.example.jp/nyusatsu</link>"
            "<category>行政</category></item>"
            "<item><title>入札結果</title><link>https://www.city.asagiri.example.jp/kekka&#x1;</link>"
            "<category>行政</category></item></channel></rss>")
    [line] = errors(cli("article", "import", write(cli.folder, "feed.xml", feed), ok=False))
    assert line == ("feed.xml: entry 2 ('https://www.city.asagiri.example.jp/kekka\\x01'): "
                    "url has a control character (U+0001) at character 42")
    assert sorted(r.title for r in article_rows(cli)) == ["休館日のお知らせ", "入札情報", "防災訓練のお知らせ"]


def test_nul_characters_reject_the_item_not_the_file(project):
    # PostgreSQL cannot store NUL: before, the whole transaction failed, good items included.
    items = [GOOD, dict(GOOD, url="https://www.city.asagiri.example.jp/b2", body="本文\x00"),
             dict(GOOD, url="https://www.city.asagiri.example.jp/b3", guid="a\x00b"),
             dict(GOOD, url="https://www.city.asagiri.example.jp/b4", title="防災訓練（第2回）")]
    result = project("article", "import", write(project.folder, "nul.json", json.dumps(items)), ok=False)
    assert errors(result) == ["nul.json: item 2: body has a NUL character (U+0000) at character 3",
                              "nul.json: item 3: guid has a NUL character (U+0000) at character 2"]
    assert "nul.json: 2 new, 0 updated, 0 unchanged, 2 rejected" in result.stdout
    assert [r.title for r in article_rows(project)] == ["防災訓練のお知らせ", "防災訓練（第2回）"]


def test_a_stored_article_that_cannot_render_is_a_preflight_error_naming_it(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", "preflight-test-secret")
    project("article", "add", "--field", "行政", "--title", "庁舎の休館日", "--url",
            "https://www.city.asagiri.example.jp/kyukan")
    project("subscriber", "add", "sato@example.jp", "--name", "佐藤 花子")
    # Written before input was checked (or by hand): the URL carries a control character.
    engine = make_engine(load_config(project.config_path).storage_url)
    with engine.begin() as conn:
        conn.execute(update(articles).values(url="https://www.city.asagiri.example.jp/kyu\x01kan"))
    result = project("edition", "check", "weekly", ok=False)
    assert result.exit_code == 1
    assert ("ERROR   article 1 '庁舎の休館日': url has white space or a control character (U+0001): "
            "it cannot render") in result.stdout
    result = project("edition", "send", "weekly", ok=False)
    assert result.exit_code == 1
    assert "preflight check found errors" in result.stderr
    with engine.connect() as conn:
        assert conn.execute(select(editions)).first() is None
        assert conn.execute(select(deliveries)).first() is None
    engine.dispose()


# --- numbers, dates, nesting --------------------------------------------------------------------

@pytest.mark.parametrize(("args", "problem"), [
    (("--priority", "1180591620717411303424"),
     "article: bad priority '1180591620717411303424' (expected a whole number from -2147483648 to 2147483647)"),
    (("--priority", "2147483648"), "article: bad priority '2147483648'"),
    (("--publish-at", "0001-01-01T00:00"), "article: bad publish_at '0001-01-01T00:00' (expected a year from 1900"),
    (("--publish-at", "9999-12-31T23:00-05:00"), "article: bad publish_at '9999-12-31T23:00-05:00'"),
])
def test_out_of_range_numbers_and_dates_are_one_line(project, args, problem):
    result = project("article", "add", "--field", "行政", "--title", "庁舎の休館日", "--url",
                     "https://www.city.asagiri.example.jp/kyukan", *args, ok=False)
    assert one_error(result).startswith(problem)
    assert article_count(project) == 0


def test_the_priority_range_is_the_columns(project):
    for i, p in enumerate(("2147483647", "-2147483648")):
        project("article", "add", "--field", "行政", "--title", "庁舎の休館日", "--url",
                f"https://www.city.asagiri.example.jp/{i}", "--priority", p)
    assert sorted(r.priority for r in article_rows(project)) == [-2147483648, 2147483647]


def test_a_huge_priority_in_json_rejects_the_item(project):
    items = [GOOD, dict(GOOD, url="https://www.city.asagiri.example.jp/p", priority="9" * 25)]
    result = project("article", "import", write(project.folder, "p.json", json.dumps(items)), ok=False)
    [line] = errors(result)
    assert line.startswith("p.json: item 2: bad priority '99999")
    assert article_count(project) == 1


def test_deeply_nested_json_and_front_matter_are_one_line(sqlite_project):
    deep = "[" * 100_000 + "]" * 100_000
    assert one_error(sqlite_project("article", "import", write(sqlite_project.folder, "deep.json", deep), ok=False)) \
        == "deep.json: invalid JSON (nested too deeply)"
    md = "---\ntitle: " + "[" * 100_000 + "\n---\n本文\n"
    line = one_error(sqlite_project("article", "import", write(sqlite_project.folder, "deep.md", md), ok=False))
    assert line.startswith("deep.md:2: invalid front matter")


# --- random items -------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from(sorted(arts.KNOWN_KEYS)) | st.text(max_size=8)
_plausible = {
    "title": st.text(min_size=1, max_size=20) | st.sampled_from(["防災訓練のお知らせ", "休館日\x00"]),
    "url": st.sampled_from(["https://www.city.asagiri.example.jp/a", "https://朝霧市.jp/", "http://x/"])
    | st.text(max_size=20).map(lambda t: "https://www.city.asagiri.example.jp/" + t),
    "fields": st.sampled_from(["行政", ["教育", "地方自治"], "education"]),
    "publish_at": st.text(max_size=25) | st.sampled_from(["0001-01-01T00:00", "2026-04-01T09:00+09:00"]),
    "priority": st.integers() | st.text(max_size=40),
    "body_format": st.sampled_from(["html", "markdown", "HTML"]),
}


@st.composite
def article_items(draw):
    item = draw(st.dictionaries(_keys, _json, max_size=4))
    for key, strategy in _plausible.items():
        if draw(st.booleans()):
            item[key] = draw(strategy | _json)
    return item


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item=article_items())
def test_random_json_items_are_stored_renderable_or_refused_in_one_line(item):
    config = load_config(ROOT / "config.toml")
    text = json.dumps([item])
    [(where, raw)] = arts.items_from_json(text, "random.json")
    try:
        values = arts.validate(raw, config)
    except ValueError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert arts.render_problem(values) is None
    assert arts.PRIORITY_RANGE[0] <= values["priority"] <= arts.PRIORITY_RANGE[1]
    assert values["publish_at"] is None or 1900 <= values["publish_at"].year <= 2999


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=60))
def test_random_json_text_is_items_or_one_input_error(text):
    try:
        arts.items_from_json(text, "random.json")
    except InputError as exc:
        assert "\n" not in str(exc)


# --- a full disk --------------------------------------------------------------------------------

@pytest.fixture
def tiny_sqlite():
    """Every SQLite connection opened in the test may grow the file to 40 pages only:
    SQLite's own ``max_page_count`` pragma, so the disk-full path is SQLite's real one."""
    def limit(dbapi_conn, _record):
        if type(dbapi_conn).__module__.startswith("sqlite3"):
            dbapi_conn.execute("PRAGMA max_page_count = 40")
    event.listen(Engine, "connect", limit)
    yield
    event.remove(Engine, "connect", limit)


def test_a_full_sqlite_database_is_one_line_and_nothing_half_written(sqlite_project, tiny_sqlite):
    items = [dict(GOOD, url=f"https://www.city.asagiri.example.jp/{i}", body="本文。" * 400) for i in range(200)]
    path = write(sqlite_project.folder, "many.json", json.dumps(items, ensure_ascii=False))
    result = sqlite_project("article", "import", path, ok=False)
    db = Path(load_config(sqlite_project.config_path).storage_url.removeprefix("sqlite:///"))
    assert one_error(result) == f"database full: {db}"
    assert article_count(sqlite_project) == 0
