"""Editions end to end: the queue becomes a numbered edition, every subscriber
gets the articles of their fields through a real SMTP server, and the delivery
log makes a second send harmless."""

from __future__ import annotations

import csv
import email
import json
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import select, update

from newsletter.config import load_config
from newsletter.delivery import deliver
from newsletter.editions import creation
from newsletter.store import open_engine
from newsletter.store.tables import articles, deliveries, editions
from newsletter.tokens import verify_token
from tests.conftest import CLI, ROOT, write_config

SAMPLE_ARTICLES = json.loads((ROOT / "articles" / "sample.json").read_text(encoding="utf-8"))
FIELD_NAMES = {"地方自治": "local-government", "行政": "administration", "教育": "education"}


def sample_subscribers() -> dict[str, dict]:
    with open(ROOT / "subscribers" / "sample.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for r in rows:
        fields = {FIELD_NAMES[t] for t in r["分野"].replace("、", ";").split(";")}
        out[r["メールアドレス"].lower()] = {"name": r["氏名"], "fields": fields, "format": r["形式"]}
    return out


def smtp_provider(server) -> str:
    return f'[provider]\nkind = "smtp"\nhost = "{server.host}"\nport = {server.port}\nsecurity = "none"\ntimeout = 10\n'


@pytest.fixture
def smtp_project(tmp_path, storage_url, smtp_server):
    cli = CLI(write_config(tmp_path / "project", storage_url, provider=smtp_provider(smtp_server)))
    cli("init")
    return cli


def load_samples(cli: CLI) -> None:
    cli("subscriber", "import", ROOT / "subscribers" / "sample.csv")
    cli("article", "import", ROOT / "articles" / "sample.json")


def body_text(msg) -> str:
    return msg.get_body(("plain",)).get_content()


def test_edition_reaches_every_subscriber_with_exactly_their_fields(smtp_project, smtp_server):
    cli = smtp_project
    load_samples(cli)
    out = cli("edition", "send", "weekly").stdout
    assert "created weekly 第1号: 12 articles" in out

    subs = sample_subscribers()
    received = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    assert sorted(received) == sorted(subs)
    assert len(smtp_server.messages) == len(subs)  # exactly once each
    assert smtp_server.connections == 1  # one connection reused for the whole edition

    config = load_config(cli.config_path)
    for address, sub in subs.items():
        raw = received[address].data
        msg = email.message_from_bytes(raw, policy=policy.default)
        assert msg["Subject"].startswith("【週刊 地方行政ニュース】第1号 ")
        assert str(msg["From"]) == "地方行政ニュース編集部 <magazine@news.example.jp>"
        assert msg["To"].addresses[0].addr_spec == address
        assert msg["To"].addresses[0].display_name == sub["name"]
        assert msg["Message-ID"].endswith("@news.example.jp>")
        assert msg["List-Id"].endswith("<weekly.news.example.jp>")
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["Auto-Submitted"] == "auto-generated"
        assert msg["MIME-Version"] == "1.0"
        assert received[address].mail_from == "magazine@news.example.jp"
        # The one-click URL is in the raw bytes as it is, never RFC 2047-encoded.
        unsub = [line for line in raw.split(b"\r\n") if line.startswith(b"List-Unsubscribe:")][0].decode()
        url = unsub.split("<", 1)[1].split(">", 1)[0]
        assert url.startswith("https://news.example.jp/unsubscribe/")
        assert verify_token([config.secret()], "unsubscribe", url.rsplit("/", 1)[1]) is not None

        if sub["format"] == "html":
            assert msg.get_content_type() == "multipart/alternative"
            parts = [p.get_content_type() for p in msg.iter_parts()]
            assert parts == ["text/plain", "text/html"]
            html = msg.get_body(("html",)).get_content()
            assert f"{sub['name']} 様" in html
            assert 'style="' in html  # premailer inlined the CSS
        else:
            assert msg.get_content_type() == "text/plain"
        text = body_text(msg)
        assert f"{sub['name']} 様" in text
        assert "配信停止" in text and url in text
        assert "〒100-0013 東京都千代田区霞が関1-2-3 地方行政会館5階" in text  # sender display
        for art in SAMPLE_ARTICLES:
            expected = bool(set(art["fields"]) & sub["fields"])
            assert (art["url"] in text) == expected, (address, art["title"])
            if expected:  # long titles are wrapped (70 columns): compare with the line breaks taken out
                flat = "".join(line.lstrip(" ") for line in text.splitlines())
                assert " ".join(art["title"].split()) in flat.replace("\u3000", " ")

    status = cli("edition", "status", "1").stdout
    assert "status:      done" in status
    assert "sent:        12" in status


def test_sending_twice_mails_nobody_twice(smtp_project, smtp_server):
    cli = smtp_project
    load_samples(cli)
    cli("edition", "send", "weekly")
    first = len(smtp_server.messages)
    again = cli("edition", "send", "weekly").stdout
    assert "nothing new to send" in again
    resend = cli("edition", "send", "--edition", "1").stdout
    assert "is done; nothing to send" in resend
    assert len(smtp_server.messages) == first

    # An interrupted edition: reset three deliveries to pending as a crash after
    # sending would leave them unrecorded; resuming sends those three only.
    engine = open_engine(load_config(cli.config_path).storage_url)
    with engine.begin() as conn:
        ids = conn.execute(select(deliveries.c.id).order_by(deliveries.c.id).limit(3)).scalars().all()
        conn.execute(update(deliveries).where(deliveries.c.id.in_(ids)).values(status="pending"))
        conn.execute(update(editions).values(status="sending"))
    smtp_server.clear()
    out = cli("edition", "send", "weekly").stdout
    assert "resuming weekly 第1号" in out
    assert len(smtp_server.messages) == 3
    cli("edition", "send", "weekly")
    assert len(smtp_server.messages) == 3


def test_550_fails_one_delivery_and_the_rest_go_out(smtp_project, smtp_server):
    cli = smtp_project
    load_samples(cli)
    smtp_server.reply_to_rcpt("ito.yui@example.com", "550 5.1.1 <ito.yui@example.com>: Recipient address rejected")
    res = cli("edition", "send", "weekly", ok=False)
    assert res.exit_code == 1  # a failed message is something to look at, not a success
    assert "failed 1" in res.stdout
    assert "ito.yui@example.com: 550 5.1.1" in res.stderr
    got = sorted(m.rcpt_tos[0] for m in smtp_server.messages)
    assert "ito.yui@example.com" not in got and len(got) == 11
    engine = open_engine(load_config(cli.config_path).storage_url)
    with engine.connect() as conn:
        row = conn.execute(select(deliveries).where(deliveries.c.email == "ito.yui@example.com")).one()
    assert row.status == "failed" and row.last_reply.startswith("550 5.1.1")
    status = cli("edition", "status", "1").stdout
    assert "failed:      1" in status and "sent:        11" in status and "status:      done" in status


def test_temporary_failure_is_retried_later_not_now(smtp_project, smtp_server):
    cli = smtp_project
    load_samples(cli)
    smtp_server.reply_to_data("kato.hiroshi@example.jp", "451 4.3.0 Try again later", times=1)
    out = cli("edition", "send", "weekly").stdout
    assert "deferred 1" in out and "1 pending; next retry at" in out
    assert len(smtp_server.messages) == 11
    cli("edition", "send", "weekly")  # too early: nothing is sent again
    assert len(smtp_server.messages) == 11

    config = load_config(cli.config_path)
    engine = open_engine(config.storage_url)
    with engine.connect() as conn:
        row = conn.execute(select(deliveries).where(deliveries.c.status == "pending")).one()
    assert row.email == "kato.hiroshi@example.jp" and row.attempts == 1
    assert timedelta(minutes=1) < row.next_attempt_at - row.updated_at < timedelta(minutes=3)
    later = row.next_attempt_at + timedelta(seconds=1)
    report = deliver(engine, config, row.edition_id, clock=lambda: later)
    assert report.sent == 1 and report.finished
    assert [m.rcpt_tos[0] for m in smtp_server.messages].count("kato.hiroshi@example.jp") == 1
    # The retry keeps the Message-ID it was first sent with.
    with engine.connect() as conn:
        sent = conn.execute(select(deliveries.c.message_id).where(deliveries.c.id == row.id)).scalar()
    assert smtp_server.messages[-1].message["Message-ID"] == sent == row.message_id


def test_assembly_rules(project):
    """Embargo, drafts, withdrawn, order (pinned, priority, newest), max_articles,
    one edition per article per publication, frozen content."""
    cli = project
    cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    cli("article", "add", "--field", "education", "--title", "古い記事", "--url", "https://news.example.jp/e/1")
    cli("article", "add", "--field", "education", "--title", "新しい記事", "--url", "https://news.example.jp/e/2")
    cli("article", "add", "--field", "education", "--title", "優先記事", "--url", "https://news.example.jp/e/3",
        "--priority", "5")
    cli("article", "add", "--field", "education", "--title", "固定記事", "--url", "https://news.example.jp/e/4",
        "--pin")
    cli("article", "add", "--field", "education", "--title", "解禁前", "--url", "https://news.example.jp/e/5",
        "--publish-at", future)
    cli("article", "add", "--field", "education", "--title", "下書き", "--url", "https://news.example.jp/e/6",
        "--draft")
    cli("article", "add", "--field", "education", "--title", "取り下げ", "--url", "https://news.example.jp/e/7")
    cli("article", "withdraw", "7")

    config = load_config(cli.config_path)
    engine = open_engine(config.storage_url)
    # Distinct creation times so "newest" is well defined on every backend.
    with engine.begin() as conn:
        for i in range(1, 8):
            conn.execute(update(articles).where(articles.c.id == i).values(
                created_at=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=i)))
    pub = config.publication("weekly")
    small = type(pub)(**{**pub.__dict__, "max_articles": 3})
    created = creation.create_edition(engine, config, small)
    with engine.connect() as conn:
        content = json.loads(conn.execute(select(editions.c.content)).scalar())
        statuses = dict(conn.execute(select(articles.c.title, articles.c.status)).all())
    assert [a["title"] for a in content["articles"]] == ["固定記事", "優先記事", "新しい記事"]
    assert created.number == 1 and created.pending == 1
    assert statuses["固定記事"] == "published" and statuses["古い記事"] == "queued"
    assert statuses["解禁前"] == "queued" and statuses["下書き"] == "draft"

    # The next edition carries only what the first did not; the embargoed one once its time comes.
    second = creation.create_edition(engine, config, pub, now=datetime.now(UTC) + timedelta(days=2))
    with engine.connect() as conn:
        rows = conn.execute(select(editions.c.number, editions.c.content).order_by(editions.c.number)).all()
    assert second.number == 2
    assert [a["title"] for a in json.loads(rows[1].content)["articles"]] == ["解禁前", "古い記事"]
    assert creation.create_edition(engine, config, pub, now=datetime.now(UTC) + timedelta(days=3)) is None

    # Frozen: changing the article row afterwards does not change what edition 1 says.
    with engine.begin() as conn:
        conn.execute(update(articles).where(articles.c.title == "固定記事").values(title="書き換え後"))
    preview = cli("edition", "preview", "--edition", "1", "--format", "text").stdout
    assert "固定記事" in preview and "書き換え後" not in preview


def test_only_active_subscribers_and_skips(project):
    cli = project
    cli("subscriber", "add", "active@example.jp", "--fields", "education")
    cli("subscriber", "add", "gone@example.jp", "--fields", "education")
    cli("subscriber", "unsubscribe", "gone@example.jp")
    cli("subscriber", "add", "later@example.jp", "--fields", "education", "--pending")
    cli("subscriber", "add", "admin@example.jp", "--fields", "administration")
    cli("article", "add", "--field", "education", "--title", "教育の記事", "--url", "https://news.example.jp/e/1")
    out = cli("edition", "send", "weekly").stdout
    assert "1 to send, 1 skipped" in out
    engine = open_engine(load_config(cli.config_path).storage_url)
    with engine.connect() as conn:
        rows = dict(conn.execute(select(deliveries.c.email, deliveries.c.status)).all())
    assert rows == {"active@example.jp": "sent", "admin@example.jp": "skipped"}
    outbox = cli.folder / "var" / "outbox"
    assert [p.name for p in outbox.iterdir()] == ["00000001-active@example.jp.eml"]


def test_preview_and_test_send_change_nothing(smtp_project, smtp_server):
    cli = smtp_project
    load_samples(cli)
    text = cli("edition", "preview", "weekly", "--fields", "教育", "--format", "text").stdout
    assert text.startswith("Subject: 【週刊 地方行政ニュース】第1号")
    edu = [a for a in SAMPLE_ARTICLES if "education" in a["fields"]]
    assert all(a["url"] in text for a in edu)
    assert not any(a["url"] in text for a in SAMPLE_ARTICLES if "education" not in a["fields"])
    out_file = cli.folder / "preview.html"
    res = cli("edition", "preview", "weekly", "--out", out_file)
    assert "wrote" in res.stdout and "<html" in out_file.read_text(encoding="utf-8")

    res = cli("edition", "send", "weekly", "--test-to", "editor@example.jp", "--fields", "education")
    assert "accepted" in res.stdout
    [msg] = smtp_server.messages
    assert msg.rcpt_tos == ("editor@example.jp",)
    engine = open_engine(load_config(cli.config_path).storage_url)
    with engine.connect() as conn:
        assert conn.execute(select(editions)).first() is None
        assert set(conn.execute(select(articles.c.status)).scalars()) == {"queued"}
    assert cli("edition", "list").stdout == ""


def test_bad_provider_config_creates_nothing(tmp_path):
    cli = CLI(write_config(tmp_path / "p", f"sqlite:///{tmp_path / 'p' / 'db.sqlite'}",
                           provider='[provider]\nkind = "smtp"\nport = "twenty-five"\n'))
    cli("init")
    cli("subscriber", "add", "a@example.jp", "--fields", "education")
    cli("article", "add", "--field", "education", "--title", "記事", "--url", "https://news.example.jp/x")
    res = cli("edition", "send", "weekly", ok=False)
    assert res.exit_code == 1 and res.stderr.startswith("error: ") and "provider.port" in res.stderr
    assert cli("edition", "list").stdout == ""


def test_demo_from_a_copy_of_the_repository(tmp_path):
    """The README's main command: works in a fresh tree, twice."""
    import shutil

    for name in ("config.toml", "templates", "subscribers", "articles"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    cli = CLI(tmp_path / "config.toml")
    out = cli("demo").stdout
    assert "12 mails sent" in out
    emls = sorted((tmp_path / "var" / "outbox").glob("*.eml"))
    assert len(emls) == 12
    for path in emls:
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        assert "第1号" in msg["Subject"]
    again = cli("demo").stdout
    assert "nothing new to send" in again
    console = "console:     http://127.0.0.1:8000/admin/  (newsletter serve; first admin: newsletter user add NAME"
    assert console in out and console in again  # where the console is, both times
    assert len(list((tmp_path / "var" / "outbox").glob("*.eml"))) == 12


def test_status_of_unknown_edition_is_a_clear_error(project):
    res = project("edition", "status", "99", ok=False)
    assert res.exit_code == 1
    assert res.stderr.strip() == "error: edition 99 of weekly: no such edition"


def test_files_are_in_place():
    assert Path(ROOT / "templates" / "digest.html.j2").exists()


def test_article_text_cannot_smuggle_a_personal_placeholder(project):
    """An article that quotes the pipeline's old placeholder spelling must not
    become each reader's own unsubscribe link: it stays as the author wrote it."""
    cli = project
    cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    cli("article", "add", "--field", "education", "--title", "配信停止は %%NL_UNSUBSCRIBE_URL%% から",
        "--url", "https://news.example.jp/e/x", "--summary", "解説: %%NL_GREETING%% の仕組み")
    cli("edition", "send", "weekly")
    [path] = (cli.folder / "var" / "outbox").glob("*.eml")
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    text = msg.get_body(("plain",)).get_content()
    assert "%%NL_UNSUBSCRIBE_URL%%" in text and "%%NL_GREETING%%" in text
    assert text.count("/unsubscribe/") == 1  # only the footer's link
