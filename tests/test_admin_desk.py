"""The editor's desk of the console over HTTP (issue 14, the parts after the first cut):
article import by upload with a per-item report before anything is written, the
article form's プレビュー and 承認依頼, 承認依頼 on the edition page and
承認待ち for the approvers, and an edition page that does not walk every
subscriber on each view (配信前チェック runs only when asked and on approval).

The route × role × CSRF walk over these routes is tests/test_admin.py's."""

from __future__ import annotations

import html
import json
import random
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter import preflight
from newsletter.editions import creation
from newsletter.store import editions as editions_q
from newsletter.store.tables import articles, audit_log, editions, subscribers, utcnow
from tests.test_admin import Console, article_form, csrf_of, post_form, write_article
from tests.test_web import make_site


@pytest.fixture
def console(tmp_path) -> Console:
    c = Console(make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}"))
    for name, role in (("suzuki", "editor"), ("kacho", "approver"), ("unyo", "operator")):
        c.add_user(name, role)
    return c


def uploads(console: Console) -> list[Path]:
    folder = console.site.folder / "var" / "console-uploads"
    return sorted(folder.iterdir()) if folder.exists() else []


def article_rows(console: Console) -> list[tuple]:
    with console.site.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(articles).order_by(articles.c.id))]


def upload(client, name: str, data: bytes, fields=()) -> object:
    page = client.get("/admin/articles/import")
    assert page.status_code == 200
    return client.post("/admin/articles/import",
                       data={"csrf": csrf_of(page.text, "/admin/articles/import"), "fields": list(fields)},
                       files={"file": (name, data, "application/octet-stream")})


def report_rows(page: str) -> list[tuple[str, str, str, str]]:
    """(where, result, title, reason) of each row of the report table."""
    body = page[page.index("<tbody>"):page.index("</tbody>")]
    return [tuple(html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
                  for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S))
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


# -- 1. article import by upload -------------------------------------------------------------


def test_editor_imports_a_csv_after_a_per_item_report_that_writes_nothing(tmp_path, storage_url):
    console = Console(make_site(tmp_path, storage_url))
    console.add_user("suzuki", "editor")
    site = console.site
    site.cli("article", "add", "--title", "防災訓練のお知らせ", "--url", "https://www.example.lg.jp/bousai",
             "--field", "education")
    editor = console.sign_in("suzuki")
    csv = ("タイトル,URL,分野,概要\r\n"
           "給食費の無償化について,https://www.example.lg.jp/kyushoku,教育,来年度から無償化します。\r\n"
           "防災訓練のお知らせ（日程変更）,https://www.example.lg.jp/bousai,教育,\r\n"
           "リンクが壊れた記事,javascript:alert(1),教育,\r\n"
           "分野が違う記事,https://www.example.lg.jp/x,観光,\r\n"
           "給食費の無償化について,https://www.example.lg.jp/kyushoku,教育,\r\n").encode()
    before = article_rows(console)
    res = upload(editor, "../../etc/記事一覧.csv", csv)
    assert res.status_code == 200, res.text
    assert "5 件: 新規 1 件、更新 1 件、変更なし 0 件、取り込めない 3 件" in res.text
    rows = report_rows(res.text)
    assert rows[0] == ("2", "新規", "給食費の無償化について", "")  # the line of the file (its name is the heading)
    assert rows[1][:3] == ("3", "更新（番号 1）", "防災訓練のお知らせ（日程変更）")
    assert rows[2][0] == "4" and rows[2][1] == "取り込めない" and "bad url" in rows[2][3]
    assert rows[3][1] == "取り込めない" and "unknown field '観光'" in rows[3][3]
    assert rows[4][1] == "取り込めない" and "same item as 記事一覧.csv:2" in rows[4][3]
    assert "etc/" not in res.text  # the user's file name is shown, never its path
    # The report wrote nothing; the file waits under a random name of ours.
    assert article_rows(console) == before
    [kept] = uploads(console)
    assert re.fullmatch(r"articles-[A-Za-z0-9_-]{32}\.csv", kept.name)

    token = re.search(r'name="upload" value="([^"]+)"', res.text).group(1)
    commit_csrf = csrf_of(res.text, "/admin/articles/import/commit")
    res = editor.post("/admin/articles/import/commit", data={"csrf": commit_csrf, "upload": token,
                                                             "name": "記事一覧.csv"})
    assert res.status_code == 200, res.text
    assert "取り込みました: 新規 1 件、更新 1 件。" in res.text
    listing = site.cli("article", "list").output
    assert "給食費の無償化について" in listing and "防災訓練のお知らせ（日程変更）" in listing
    assert len(article_rows(console)) == 2 and uploads(console) == []
    with site.engine.connect() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.action == "imported")).one()
    assert (row.actor, row.interface) == ("suzuki", "console")
    assert row.detail == "articles from 記事一覧.csv: 1 new, 1 updated, 0 unchanged, 3 refused"
    # The same token again, or one that is not ours: nothing to import, nothing read.
    after = article_rows(console)
    for bad in (token, "../../config", "x" * 32):
        res = editor.post("/admin/articles/import/commit", data={"csrf": commit_csrf, "upload": bad})
        assert res.status_code == 400 and "確認したファイルが見つかりません" in res.text
    assert article_rows(console) == after


RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>県のお知らせ</title><link>https://www.pref.example.lg.jp/</link>
<item><title>県立図書館の開館時間を延長します</title><link>https://www.pref.example.lg.jp/news/1</link>
<description>12月から平日は午後8時まで開館します。</description><guid>news-1</guid></item>
</channel></rss>"""


@pytest.mark.parametrize("name,data", [
    ("feed.xml", RSS.encode()),
    ("articles.json", json.dumps([{"title": "県立図書館の開館時間を延長します",
                                   "url": "https://www.pref.example.lg.jp/news/1"}], ensure_ascii=False).encode()),
    ("news.md", "---\ntitle: 県立図書館の開館時間を延長します\nurl: https://www.pref.example.lg.jp/news/1\n---\n"
                "## お知らせ\n\n平日は午後8時まで。\n".encode()),
    ("no-extension", "title,url\n県立図書館の開館時間を延長します,https://www.pref.example.lg.jp/news/1\n".encode()),
])
def test_every_format_of_the_cli_with_fields_for_items_that_name_none(console, name, data):
    editor = console.sign_in("suzuki")
    # No field named anywhere: refused, as 'article import' without --field refuses it.
    res = upload(editor, name, data)
    assert res.status_code == 200, res.text
    assert report_rows(res.text)[0][1] == "取り込めない" and "no field given" in report_rows(res.text)[0][3]
    assert 'name="upload"' not in res.text and uploads(console) == []  # nothing to import: nothing kept
    res = upload(editor, name, data, fields=["education"])
    assert report_rows(res.text)[0][1:3] == ("新規", "県立図書館の開館時間を延長します")
    assert 'name="fields" value="education"' in res.text[res.text.index("/admin/articles/import/commit"):]
    token = re.search(r'name="upload" value="([^"]+)"', res.text).group(1)
    res = editor.post("/admin/articles/import/commit", data={
        "csrf": csrf_of(res.text, "/admin/articles/import/commit"), "upload": token, "name": name,
        "fields": ["education"]})
    assert "取り込みました: 新規 1 件" in res.text
    assert "\teducation\t" in console.site.cli("article", "list").output


def test_an_office_with_many_fields_can_tick_them_all_on_the_upload(tmp_path):
    """The upload form's field limit grows with the configured fields (it was 10 in all:
    an office with 9 fields ticking every one got a 400)."""
    more = {"[[fields]]\nslug = \"education\"\nname = \"教育\"\n": "[[fields]]\nslug = \"education\"\nname = \"教育\"\n"
            + "".join(f"\n[[fields]]\nslug = \"extra-{i}\"\nname = \"分野{i}\"\n" for i in range(9))}
    c = Console(make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}", replace=more))
    c.add_user("suzuki", "editor")
    assert len(c.site.config.fields) == 12
    editor = c.sign_in("suzuki")
    data = json.dumps([{"title": "県立図書館の開館時間を延長します", "url": "https://www.example.lg.jp/toshokan"}]).encode()
    res = upload(editor, "news.json", data, fields=[f.slug for f in c.site.config.fields])
    assert res.status_code == 200, res.text
    assert report_rows(res.text)[0][1] == "新規"


@pytest.mark.parametrize("name,data,message", [
    ("broken.json", b'[{"title": "x",', "broken.json:1: invalid JSON"),
    ("notes.md", "本文だけのメモ".encode(), "notes.md:1: no front matter"),
    ("sjis.json", b"[]" + "日本語".encode("shift_jis"), "sjis.json:1: not valid UTF-8"),
    ("mystery", b"just some words", "mystery: cannot tell the format"),
])
def test_a_file_that_cannot_be_read_is_named_beside_the_file_input_and_nothing_is_kept(console, name, data, message):
    editor = console.sign_in("suzuki")
    before = article_rows(console)
    res = upload(editor, name, data)
    assert res.status_code == 400
    assert re.search(rf'<p class="error" id="file-error">{re.escape(message)}', res.text), res.text
    assert re.search(r'<input id="file"[^>]*aria-describedby="file-hint file-error"[^>]*aria-invalid="true"',
                     res.text)
    assert uploads(console) == [] and article_rows(console) == before


def test_an_upload_past_the_body_limit_is_refused_and_nothing_is_kept(console):
    editor = console.sign_in("suzuki")
    limit = console.site.config.web.max_body_bytes
    big = ("title,url,fields\n" + "\n".join(f"記事{i},https://www.example.lg.jp/{i},education"
                                              for i in range(limit // 30))).encode()
    assert len(big) > limit
    res = upload(editor, "big.csv", big)
    assert res.status_code == 413
    assert uploads(console) == [] and article_rows(console) == []


def test_who_may_import_and_that_a_refused_commit_changes_nothing(console):
    """Editors (and approvers, admins) import; an operator gets 403 with a valid
    token too, and the waiting file is neither read nor removed."""
    editor = console.sign_in("suzuki")
    res = upload(editor, "one.csv", "title,url,fields\n道路工事,https://www.example.lg.jp/road,行政\n".encode())
    token = re.search(r'name="upload" value="([^"]+)"', res.text).group(1)
    operator = console.sign_in("unyo")
    page = operator.get("/admin/")
    assert operator.get("/admin/articles/import").status_code == 403
    res = operator.post("/admin/articles/import/commit", data={"csrf": csrf_of(page.text, "/admin/logout"),
                                                               "upload": token})
    assert res.status_code == 403 and "この操作を行う権限がありません。" in res.text
    assert article_rows(console) == [] and len(uploads(console)) == 1


# -- 3. the article form: プレビュー without saving, errors beside the field ---------------------


def test_preview_renders_the_body_on_the_server_and_saves_nothing(console):
    editor = console.sign_in("suzuki")
    data = article_form(editor, title="子育て支援金", url="https://www.example.lg.jp/kosodate",
                        body="## 対象\n\n- 市内在住の方\n\n<script>alert(1)</script>", fields=["education"],
                        publish_at="2026-12-01T09:00", priority="3", pinned="1", action="preview")
    res = editor.post("/admin/articles/new", data=data)
    assert res.status_code == 200
    assert "プレビューを表示しています。まだ保存していません。" in res.text
    assert "<h2>対象</h2>" in res.text and "<li>市内在住の方</li>" in res.text
    assert "<script" not in res.text  # the project's sanitize rule, and escaped in the textarea
    # Every value kept as typed.
    for kept in ('value="子育て支援金"', 'value="2026-12-01T09:00"', 'value="3"', 'name="pinned" value="1" checked',
                 'name="fields" value="education" checked'):
        assert kept in res.text.replace("\n", " "), kept
    assert article_rows(console) == []
    # The same on an existing article: nothing changes until 保存.
    article_id = write_article(editor, "図書館の休館日", "https://www.example.lg.jp/toshokan")
    before = article_rows(console)
    path = f"/admin/articles/{article_id}"
    res = editor.post(path, data=article_form(editor, path, title="図書館の休館日（変更）",
                                              url="https://www.example.lg.jp/toshokan", body="**太字**",
                                              fields=["education"], action="preview"))
    assert res.status_code == 200 and "<strong>太字</strong>" in res.text
    assert 'value="図書館の休館日（変更）"' in res.text
    assert article_rows(console) == before


def test_a_bad_embargo_is_shown_beside_its_field_with_the_cli_message(console):
    editor = console.sign_in("suzuki")
    res = editor.post("/admin/articles/new", data=article_form(
        editor, title="見出し", url="https://www.example.lg.jp/a", fields=["education"], publish_at="来週の月曜"))
    assert res.status_code == 400
    cli = console.site.cli("article", "add", "--title", "見出し", "--url", "https://www.example.lg.jp/a",
                           "--field", "education", "--publish-at", "来週の月曜", ok=False)
    message = cli.stderr.strip().removeprefix("error: article: ")
    assert message.startswith("bad publish_at '来週の月曜'")
    assert f'<p class="error" id="publish_at-error">{message}</p>' in res.text.replace("&#39;", "'")
    assert re.search(r'<input id="publish_at"[^>]*aria-describedby="publish_at-hint publish_at-error"'
                     r'[^>]*aria-invalid="true"', res.text)
    assert 'value="来週の月曜"' in res.text and article_rows(console) == []


# -- 2. 承認依頼 ------------------------------------------------------------------------------


def new_draft(console: Console, client) -> str:
    slug = console.site.config.publications[0].slug
    res = post_form(client, "/admin/editions", "/admin/editions/new", publication=slug)
    assert res.status_code == 303, res.text
    return res.headers["location"]


def edition_row(console: Console, path: str):
    with console.site.engine.connect() as conn:
        return editions_q.get_edition(conn, int(path.rsplit("/", 1)[1]))


def test_editor_asks_for_approval_the_approver_sees_it_and_a_change_withdraws_it(console):
    editor = console.sign_in("suzuki")
    write_article(editor, "給食費の無償化について", "https://www.example.lg.jp/kyushoku")
    page_path = new_draft(console, editor)
    page = editor.get(page_path)
    assert "承認を依頼</button>" in page.text
    res = editor.post(f"{page_path}/request", data={"csrf": csrf_of(page.text, f"{page_path}/request")})
    assert res.status_code == 303
    page = editor.get(res.headers["location"])
    assert "承認を依頼しました。" in page.text and "（下書き・承認待ち）" in page.text
    assert "承認待ち: suzuki が" in page.text and "この号を変更すると依頼は取り下げられます" in page.text
    assert "承認依頼を取り下げる</button>" in page.text
    assert "・<strong>承認待ち</strong>・" in editor.get("/admin/editions").text

    approver = console.sign_in("kacho")
    home = approver.get("/admin/")
    assert "承認待ちの号" in home.text
    assert re.search(rf'<a href="{page_path}">週刊 地方行政ニュース 第1号（suzuki が [0-9-]+ [0-9:]+ に依頼）</a>',
                     home.text)
    assert "承認待ちの号" not in editor.get("/admin/").text  # the list is the approvers'

    # The editor changes the draft: the request is withdrawn, and the page says so.
    res = post_form(editor, page_path, f"{page_path}/texts", subject="", lead="寒くなりました。", afterword="")
    assert res.status_code == 303
    page = editor.get(page_path)
    assert "承認待ち" not in page.text.split("<h1>")[1].split("</h1>")[0]
    assert "承認を依頼</button>" in page.text
    assert "承認待ちの号はありません。" in approver.get("/admin/").text
    history = console.site.cli("edition", "history", "1").output
    assert "suzuki\tconsole\tapproval requested" in history
    assert "suzuki\tconsole\trequest withdrawn  the draft changed after suzuki asked for approval" in history

    # Asked again, then taken back with the button.
    post_form(editor, page_path, f"{page_path}/request")
    res = post_form(editor, page_path, f"{page_path}/withdraw-request")
    assert res.status_code == 303 and "承認依頼を取り下げました。" in editor.get(res.headers["location"]).text
    assert edition_row(console, page_path).approval_requested_at is None
    # Twice: the library's refusal beside the button, nothing changed.
    post_form(editor, page_path, f"{page_path}/request")
    page = editor.get(page_path)
    stale = csrf_of(page.text, f"{page_path}/withdraw-request")
    editor.post(f"{page_path}/withdraw-request", data={"csrf": stale})
    res = editor.post(f"{page_path}/withdraw-request", data={"csrf": stale})
    assert res.status_code == 400 and "it is not waiting for approval" in res.text


def test_approval_by_the_approver_ends_the_request(console):
    editor = console.sign_in("suzuki")
    write_article(editor, "図書館の開館時間が延びます", "https://www.example.lg.jp/toshokan")
    page_path = new_draft(console, editor)
    post_form(editor, page_path, f"{page_path}/request")
    approver = console.sign_in("kacho")
    page = approver.get(page_path)
    res = approver.post(f"{page_path}/approve", data={"csrf": csrf_of(page.text, f"{page_path}/approve"),
                                                      "hash": re.search(r'name="hash" value="([0-9a-f]+)"',
                                                                        page.text).group(1)})
    assert res.status_code == 303, res.text
    row = edition_row(console, page_path)
    assert row.status == "approved" and row.approval_requested_at is None
    assert "承認待ちの号はありません。" in approver.get("/admin/").text


def test_request_on_the_article_form_saves_then_asks_for_the_draft_that_carries_it(console):
    editor = console.sign_in("suzuki")
    # In no draft: saved, and the page says why nothing was asked and where to go.
    res = editor.post("/admin/articles/new", data=article_form(
        editor, title="道路工事のお知らせ", url="https://www.example.lg.jp/road", fields=["administration"],
        action="request"))
    assert res.status_code == 303 and res.headers["location"].endswith("?requested=1")
    page = editor.get(res.headers["location"])
    assert "保存しました。この記事はまだどの号の下書きにも入っていないため、承認依頼はしていません。" in page.text
    assert "「次号の編集」で下書きを作るか" in page.text
    assert "この記事はまだどの号の下書きにも入っていません。" in page.text
    article_id = int(res.headers["location"].split("?")[0].rsplit("/", 1)[1])

    page_path = new_draft(console, editor)
    path = f"/admin/articles/{article_id}"
    page = editor.get(path)
    assert "この記事を載せる号（下の「掲載予定の号」）の承認を依頼します" in page.text
    assert f'<a href="{page_path}">週刊 地方行政ニュース 第1号</a>（下書き）' in page.text
    res = editor.post(path, data=article_form(editor, path, title="道路工事のお知らせ（期間延長）",
                                              url="https://www.example.lg.jp/road", fields=["administration"],
                                              action="request"))
    assert res.status_code == 303
    page = editor.get(res.headers["location"])
    assert "保存して、次の号の承認を依頼しました。" in page.text
    assert f'<a href="{page_path}">週刊 地方行政ニュース 第1号</a>（承認待ち）' in page.text
    row = edition_row(console, page_path)
    assert row.approval_requested_by == "suzuki" and "道路工事のお知らせ（期間延長）" in row.content

    # A plain 保存 that changes the article changes the draft: the request is withdrawn.
    res = editor.post(path, data=article_form(editor, path, title="道路工事のお知らせ（期間再延長）",
                                              url="https://www.example.lg.jp/road", fields=["administration"]))
    assert res.status_code == 303
    assert edition_row(console, page_path).approval_requested_at is None
    assert "週刊 地方行政ニュース 第1号</a>（下書き）" in editor.get(path).text


# -- 4. the edition page does not walk the subscribers on a view --------------------------------


def add_readers(console: Console, n: int, seed: int = 14) -> None:
    """``n`` subscribers of every profile that keys a variant: fields, format, charset,
    publications, status."""
    rnd = random.Random(seed)
    slugs = [f.slug for f in console.site.config.fields]
    now = utcnow()
    rows = []
    for i in range(n):
        chosen = [s for s in slugs if rnd.random() < 0.5] or [rnd.choice(slugs)]
        rows.append({"email": f"reader{i}@example.jp", "name": "", "fields": ",".join(chosen),
                     "format": rnd.choice(("html", "html", "text")),
                     "charset": rnd.choice((None, None, "utf-8", "iso-2022-jp")),
                     "publications": rnd.choice((None, None, "weekly", "other", "other,weekly")),
                     "status": rnd.choice(("active", "active", "active", "unsubscribed", "pending")),
                     "created_at": now, "updated_at": now})
    with console.site.engine.begin() as conn:
        conn.execute(subscribers.insert(), rows)


def test_reader_counts_of_one_group_by_equal_the_full_plans(tmp_path, storage_url):
    console = Console(make_site(tmp_path, storage_url))
    console.add_user("suzuki", "editor")
    add_readers(console, 600)
    editor = console.sign_in("suzuki")
    write_article(editor, "給食費の無償化について", "https://www.example.lg.jp/kyushoku", fields=("education",))
    write_article(editor, "窓口の受付時間", "https://www.example.lg.jp/madoguchi", fields=("administration",))
    page_path = new_draft(console, editor)
    row = edition_row(console, page_path)
    config = console.site.config
    pub = config.publication(row.publication)
    plan = preflight.plan_send(console.site.engine, config, pub, edition=row)
    with console.site.engine.connect() as conn:
        counts = {k: n for k, n in creation.reader_counts(conn, pub, json.loads(row.content)).items() if k.fields}
        # Every subscriber it counts is one the walk keys, skipped ones (nothing in their fields) included.
        walked: dict = {}
        for _, key in creation.readers(conn, pub, json.loads(row.content)):
            walked[key] = walked.get(key, 0) + 1
        assert creation.reader_counts(conn, pub, json.loads(row.content)) == walked
    assert counts == plan.variants and len(counts) > 6 and sum(counts.values()) > 100
    page = editor.get(page_path)
    for key, n in counts.items():
        names = "・".join(f.name for f in config.fields if f.slug in key.fields)
        assert f"{names}・{key.format}・{key.charset}（読者 {n} 人）" in page.text, (key, n)


def test_a_page_view_runs_no_full_plan_and_the_check_button_does(console, monkeypatch):
    add_readers(console, 50)
    editor = console.sign_in("suzuki")
    write_article(editor, "給食費の無償化について", "https://www.example.lg.jp/kyushoku")
    page_path = new_draft(console, editor)
    calls = {"plan_send": 0, "subscribers_for": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(preflight, "plan_send", counted("plan_send", preflight.plan_send))
    monkeypatch.setattr(editions_q, "subscribers_for", counted("subscribers_for", editions_q.subscribers_for))
    page = editor.get(page_path)
    assert page.status_code == 200 and "（読者 " in page.text
    assert calls == {"plan_send": 0, "subscribers_for": 0}  # no walk over the readers, no render of every variant
    assert "まだ実行していません。" in page.text and "配信前チェック</button>" in page.text

    res = editor.post(f"{page_path}/check", data={"csrf": csrf_of(page.text, f"{page_path}/check")})
    assert res.status_code == 200
    assert calls["plan_send"] == 1 and calls["subscribers_for"] == 1
    assert "まだ実行していません。" not in res.text
    assert re.search(r'<ul class="findings">|問題は見つかりませんでした。', res.text)
    # In Japanese, each variant named by its fields as on the previews (not its key).
    findings = res.text.split('<ul class="findings">')[1].split("</ul>")[0]
    assert "購読者 " in findings and "件名 全角" in findings and "テキスト版の行は" in findings
    for english in ("reader(s)", "full-width characters", "text lines within", "Gmail clips", "|html|"):
        assert english not in findings, english


def test_approval_runs_the_full_check_and_an_error_refuses_it_with_the_findings(console, monkeypatch):
    add_readers(console, 20)
    editor = console.sign_in("suzuki")
    write_article(editor, "給食費の無償化について", "https://www.example.lg.jp/kyushoku")
    page_path = new_draft(console, editor)
    approver = console.sign_in("kacho")
    page = approver.get(page_path)
    data = {"csrf": csrf_of(page.text, f"{page_path}/approve"),
            "hash": re.search(r'name="hash" value="([0-9a-f]+)"', page.text).group(1)}
    real = preflight.check_plan

    def with_an_error(config, pub, plan):
        return [*real(config, pub, plan), preflight.Finding("error", "link", "a link that goes nowhere: 'javascript:'")]

    monkeypatch.setattr(preflight, "check_plan", with_an_error)
    res = approver.post(f"{page_path}/approve", data=data)
    assert res.status_code == 400
    assert "配信前チェックでエラーが見つかったため、承認していません。" in res.text
    assert "<strong>エラー</strong>: a link that goes nowhere" in res.text
    assert edition_row(console, page_path).status == "draft"
    monkeypatch.setattr(preflight, "check_plan", real)
    res = approver.post(f"{page_path}/approve", data=data)
    assert res.status_code == 303 and edition_row(console, page_path).status == "approved"


def test_an_edition_that_is_sending_has_no_check_button(console):
    console.site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    console.site.cli("article", "add", "--title", "防災の日", "--url", "https://www.example.lg.jp/bousai",
                     "--field", "education")
    console.site.cli("edition", "send", "weekly")
    with console.site.engine.connect() as conn:
        edition_id = conn.execute(select(func.max(editions.c.id))).scalar()
    editor = console.sign_in("suzuki")
    page = editor.get(f"/admin/editions/{edition_id}")
    assert page.status_code == 200 and "配信前チェック</button>" not in page.text
    assert f'action="/admin/editions/{edition_id}/check"' not in page.text
