"""The editorial workflow (issue 13): drafts, approval by another person of exactly
what was previewed, one-off scheduled sends, users and the audit log — through the
CLI on SQLite and PostgreSQL, the scheduler core with an injected clock, two
processes racing on PostgreSQL, and a database from the previous release."""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select, text, update

from newsletter.config import load_config
from newsletter.delivery import deliver
from newsletter.editions import creation, state
from newsletter.errors import InputError
from newsletter.scheduling import SchedulerCore
from newsletter.store import open_engine
from newsletter.store import schedules as schedule_q
from newsletter.store.editions import load_content
from newsletter.store.tables import articles, audit_log, deliveries, editions
from newsletter.users import DAEMON, Actor
from tests.conftest import CLI, ROOT, write_config

REQUIRED = {'schedule = "0 9 * * TUE"': 'schedule = "0 9 * * TUE"\napproval = "required"'}
PASSWORD = "とても長い合言葉-2026\n"


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def one_error_line(res) -> str:
    assert res.exit_code == 1, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


def add_articles(cli: CLI, n: int, field: str = "education", start: int = 1) -> None:
    for i in range(start, start + n):
        cli("article", "add", "--field", field, "--title", f"県立高校の入試日程を公表 その{i}",
            "--url", f"https://news.example.jp/edu/{i}", "--summary", f"令和9年度の入試について（{i}）")


def content_of(cli: CLI, number: int = 1) -> str:
    out = cli("edition", "status", str(number)).stdout
    return re.search(r"^content:\s+([0-9a-f]+)$", out, re.M).group(1)


class Office:
    """A project with three people: an editor, two approvers (課長, 編集長), an operator."""

    def __init__(self, tmp_path: Path, storage_url: str, replace: dict | None = None):
        self.cli = CLI(write_config(tmp_path / "project", storage_url, replace=replace))
        self.cli("init")
        for name, role in (("sato", "editor"), ("kacho", "approver"), ("henshucho", "approver"),
                           ("unyo", "operator")):
            self.cli("user", "add", name, "--email", f"{name}@example.jp", "--role", role, input=PASSWORD)
        self.cli("subscriber", "add", "hanako@example.jp", "--fields", "education", "--name", "佐藤 花子")
        self.cli("subscriber", "add", "taro@example.jp", "--fields", "education,administration")
        self.config = load_config(self.cli.config_path)
        self.engine = open_engine(self.config.storage_url)

    def as_(self, user: str, *args, ok: bool = True):
        return self.cli("--as", user, *args, ok=ok)

    def row(self, number: int = 1):
        with self.engine.connect() as conn:
            return conn.execute(select(editions).where(editions.c.number == number)).first()

    def delivered(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).where(deliveries.c.status == "sent")).scalar()

    def outbox(self) -> list[Path]:
        folder = self.cli.folder / "var" / "outbox"
        return sorted(folder.glob("*.eml")) if folder.exists() else []


@pytest.fixture
def office(tmp_path, storage_url):
    o = Office(tmp_path, storage_url, REQUIRED)
    yield o
    o.engine.dispose()


@pytest.fixture
def open_office(tmp_path, storage_url):  # approval = "none", as today
    o = Office(tmp_path, storage_url)
    yield o
    o.engine.dispose()


# -- transitions through the CLI, approval = "required" -------------------------------------


def test_draft_approve_schedule_and_every_refusal(office, tmp_path):
    o = office
    add_articles(o.cli, 3)
    assert one_error_line(o.cli("edition", "create", "weekly", ok=False)).endswith(
        "create a draft as a named user (--as NAME or $NEWSLETTER_USER)")
    out = o.as_("sato", "edition", "create", "weekly").stdout
    assert "weekly 第1号: draft with 3 articles" in out
    row = o.row()
    assert row.status == "draft" and row.created_by == "sato"
    with o.engine.connect() as conn:  # reserved, not published, no deliveries yet
        assert set(conn.execute(select(articles.c.status)).scalars()) == {"queued"}
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar() == 0

    lead = tmp_path / "lead.md"
    lead.write_text("師走に入り、**予算編成**が本格化しています。<script>alert('x')</script>", encoding="utf-8")
    o.as_("sato", "edition", "set", "1", "--lead-file", lead, "--subject", "【週刊 地方行政ニュース】第1号 入試特集")
    previewed = content_of(o.cli)
    preview = o.cli("edition", "preview", "--edition", "1", "--format", "text")
    assert f"approve 1 --hash {previewed}" in preview.stderr
    assert "予算編成が本格化しています" in preview.stdout and "alert" not in preview.stdout

    # The editor cannot approve (role), nor can an approver who made the last change (four-eyes).
    assert one_error_line(o.as_("sato", "edition", "approve", "1", "--hash", previewed, ok=False)) == \
        "error: user sato (editor) may not approve"
    assert [a["id"] for a in load_content(o.row())["articles"]] == [3, 2, 1]  # newest first
    o.as_("kacho", "edition", "order", "1", "1,2,3")
    assert one_error_line(o.as_("kacho", "edition", "approve", "1", "--hash", content_of(o.cli), ok=False)) \
        .endswith("kacho made the last change; approval = \"required\" needs another approver (four-eyes)")
    # The preview the approver saw is stale: refused, saying what changed.
    line = one_error_line(o.as_("henshucho", "edition", "approve", "1", "--hash", previewed, ok=False))
    assert f"changed since the preview {previewed[:12]} (article order changed)" in line
    assert o.row().status == "draft"
    assert one_error_line(o.cli("edition", "approve", "1", "--hash", content_of(o.cli), ok=False)).endswith(
        "approve as a named user (--as NAME or $NEWSLETTER_USER)")

    now_hash = content_of(o.cli)
    assert "approved by henshucho" in o.cli("edition", "approve", "1", "--hash", now_hash, "--by",
                                            "henshucho").stdout
    row = o.row()
    assert row.status == "approved" and row.approved_by == "henshucho"
    assert row.approved_hash.startswith(now_hash) and row.approved_content == row.content

    # Approved content does not change through the edition commands: one line, exit 1, nothing changed.
    for args in (("remove-article", "1", "2"), ("add-article", "1", "9"), ("order", "1", "1,2,3"),
                 ("set", "1", "--subject", "別の件名")):
        assert one_error_line(o.as_("sato", "edition", *args, ok=False)) == \
            "error: weekly 第1号 is approved; unapprove it first to " + {
                "remove-article": "remove an article", "add-article": "add an article", "order": "reorder it",
                "set": "change it"}[args[0]] + " (edition unapprove 1)"
    assert o.row().content == row.content and o.row().revision == row.revision

    # Scheduling: editors may not, the past is refused, a paused schedule is refused.
    assert "may not schedule" in one_error_line(
        o.as_("sato", "edition", "schedule", "1", "--at", "2030-12-03 10:00", ok=False))
    assert one_error_line(o.as_("unyo", "edition", "schedule", "1", "--at", "2020-12-03 10:00", ok=False)) == \
        "error: --at 2020-12-03 10:00 JST: that time has passed"
    assert "expected a date and time" in one_error_line(
        o.as_("unyo", "edition", "schedule", "1", "--at", "来週の火曜", ok=False))
    o.cli("schedule", "pause", "weekly")
    assert "the schedule is paused" in one_error_line(
        o.as_("unyo", "edition", "schedule", "1", "--at", "2030-12-03 10:00", ok=False))
    o.cli("schedule", "resume", "weekly")
    out = o.as_("unyo", "edition", "schedule", "1", "--at", "2030-12-03 10:00").stdout
    assert "scheduled for 2030-12-03 10:00 JST" in out
    assert o.row().scheduled_for == utc(2030, 12, 3, 1, 0)
    assert "already scheduled" in one_error_line(
        o.as_("unyo", "edition", "schedule", "1", "--at", "2030-12-04 10:00", ok=False))
    o.as_("unyo", "edition", "unschedule", "1")
    assert o.row().status == "approved" and o.row().scheduled_for is None
    o.as_("kacho", "edition", "unapprove", "1")
    row = o.row()
    assert row.status == "draft" and row.approved_by is None and row.approved_content is None

    # Discarding a draft frees its articles for the next one.
    o.as_("sato", "edition", "cancel", "1")
    assert "draft with 3 articles" in o.as_("sato", "edition", "create", "weekly").stdout

    history = o.cli("edition", "history", "1").stdout.splitlines()
    actions = [(line.split("\t")[1], line.split("\t")[2], line.split("\t")[3].split("  ")[0]) for line in history]
    assert actions == [
        ("sato", "cli", "created"), ("sato", "cli", "texts set"), ("kacho", "cli", "reordered"),
        ("henshucho", "cli", "approved"), ("unyo", "cli", "scheduled"), ("unyo", "cli", "unscheduled"),
        ("kacho", "cli", "unapproved"), ("sato", "cli", "cancelled"),
    ]
    assert "to go out at 2030-12-03 10:00 JST" in history[4]


def test_nothing_unapproved_reaches_a_subscriber_but_test_sends_do(office, smtp_server):
    o = office
    add_articles(o.cli, 2)
    o.as_("sato", "edition", "create", "weekly")
    # No path sends the draft: edition send, edition send --edition, the engine itself.
    assert one_error_line(o.cli("edition", "send", "weekly", ok=False)).startswith(
        "error: weekly: nothing approved to send")
    assert one_error_line(o.cli("edition", "send", "--edition", "1", ok=False)) == \
        "error: weekly 第1号 is not approved; approval = \"required\" (edition approve 1)"
    with pytest.raises(InputError, match="approval = \"required\""):
        creation.create_edition(o.engine, o.config, o.config.publication("weekly"))
    report = deliver(o.engine, o.config, o.row().id)
    assert report.sent == 0 and o.outbox() == []
    # A test send to oneself works at any state and logs nothing.
    config = write_config(o.cli.folder, o.config.storage_url, replace=REQUIRED, provider=(
        f'[provider]\nkind = "smtp"\nhost = "{smtp_server.host}"\nport = {smtp_server.port}\nsecurity = "none"\n'))
    out = CLI(config)("edition", "send", "--edition", "1", "--test-to", "henshu@example.jp").stdout
    assert "test message to henshu@example.jp: accepted" in out
    assert [list(m.rcpt_tos) for m in smtp_server.messages] == [["henshu@example.jp"]]
    assert o.delivered() == 0 and o.row().status == "draft"

    o.as_("kacho", "edition", "approve", "1", "--hash", content_of(o.cli))
    out = o.as_("unyo", "edition", "send", "weekly").stdout
    assert "sending weekly 第1号 (approved): 2 to send" in out
    assert len(smtp_server.messages) == 3 and o.delivered() == 2
    assert o.row().status == "done"
    with o.engine.connect() as conn:
        assert set(conn.execute(select(articles.c.status)).scalars()) == {"published"}


def test_approve_on_the_command_line_runs_the_preflight_and_an_error_refuses_it(office):
    """The console's rule (no approval over a preflight error) is the CLI's too: one
    function, preflight.approve."""
    o = office
    add_articles(o.cli, 1)
    o.as_("sato", "edition", "create", "weekly")
    # A draft frozen from an article stored before input was checked (or by hand).
    bad = o.row().content.replace("https://news.example.jp/edu/1", "https://news.example.jp/edu/\\u0001")
    with o.engine.begin() as conn:
        conn.execute(update(editions).values(content=bad))
    res = o.as_("kacho", "edition", "approve", "1", "--hash", content_of(o.cli), ok=False)
    assert res.exit_code == 1
    assert "ERROR" in res.stderr and "it cannot render" in res.stderr
    assert res.stderr.splitlines()[-1].endswith(
        "weekly 第1号: the preflight check found errors, so it was not approved; fix them and approve again")
    assert o.row().status == "draft"
    assert "approved" not in o.cli("edition", "history", "1").stdout


def test_an_article_changed_after_approval_returns_the_edition_to_draft(office):
    o = office
    add_articles(o.cli, 2)
    o.as_("sato", "edition", "create", "weekly")
    o.as_("kacho", "edition", "approve", "1", "--hash", content_of(o.cli))
    o.as_("unyo", "edition", "schedule", "1", "--at", "2030-12-03 10:00")
    out = o.as_("sato", "article", "edit", "1", "--title", "県立高校の入試日程を公表（訂正）").stdout
    assert "weekly 第1号: back to draft, approval dropped (article 1 edited (title))" in out
    row = o.row()
    assert row.status == "draft" and row.approved_by is None and row.scheduled_for is None
    assert "県立高校の入試日程を公表（訂正）" in row.content
    assert "approval dropped" in o.cli("edition", "history", "1").stdout
    # A withdrawn article leaves the draft.
    out = o.as_("sato", "article", "withdraw", "2").stdout
    assert "weekly 第1号: draft updated (article 2 withdrawn)" in out
    assert len(load_content(o.row())["articles"]) == 1


def test_articles_reserved_by_a_draft_are_not_taken_by_another_edition(open_office):
    o = open_office
    add_articles(o.cli, 2)
    o.cli("edition", "create", "weekly")
    assert "nothing new to send" in o.cli("edition", "create", "weekly").stdout
    add_articles(o.cli, 1, start=3)
    o.cli("edition", "create", "weekly")
    assert [a["id"] for a in load_content(o.row(2))["articles"]] == [3]
    one_error_line(o.cli("edition", "add-article", "2", "1", ok=False))
    assert "already in another edition of weekly" in o.cli("edition", "add-article", "2", "1", ok=False).stderr
    o.cli("edition", "remove-article", "1", "1")
    o.cli("edition", "add-article", "2", "1")
    assert [a["id"] for a in load_content(o.row(2))["articles"]] == [3, 1]


def test_without_approval_create_then_send_works_as_before(open_office):
    o = open_office
    add_articles(o.cli, 2)
    o.cli("edition", "create", "weekly")
    out = o.cli("edition", "send", "weekly").stdout
    assert "sending weekly 第1号 (draft): 2 to send" in out
    assert o.delivered() == 2 and o.row().status == "done"
    # and the one-step send of today still creates and sends
    add_articles(o.cli, 1, start=3)
    assert "created weekly 第2号: 1 articles, 2 to send" in o.cli("edition", "send", "weekly").stdout
    assert o.delivered() == 4
    assert [line.split("\t")[3].split("  ")[0] for line in o.cli("edition", "history", "2").stdout.splitlines()] \
        == ["created", "finished"]  # the engine's own transition is audited too


def test_a_draft_changed_between_check_and_start_is_not_sent_unchecked(open_office):
    from newsletter import preflight

    o = open_office
    add_articles(o.cli, 1)
    o.cli("edition", "create", "weekly")
    pub = o.config.publication("weekly")
    plan = preflight.plan_send(o.engine, o.config, pub, edition=o.row())
    state.set_texts(o.engine, o.config, o.row().id, Actor(None), subject="差し替えた件名（未確認）")
    with pytest.raises(InputError, match="changed since the check \\(subject changed\\)"):
        state.start_sending(o.engine, o.config, o.row().id, Actor(None), checked=plan.content)
    assert o.row().status == "draft" and o.delivered() == 0
    fresh = preflight.plan_send(o.engine, o.config, pub, edition=o.row())
    assert state.start_sending(o.engine, o.config, o.row().id, Actor(None), checked=fresh.content).pending == 2


def test_lead_and_afterword_appear_in_both_parts(open_office, tmp_path):
    o = open_office
    add_articles(o.cli, 1)
    o.cli("edition", "create", "weekly")
    (tmp_path / "lead.md").write_text("# ごあいさつ\n\n寒さが**厳しく**なってまいりました。%%NL_UNSUBSCRIBE_URL%%",
                                      encoding="utf-8")
    (tmp_path / "after.md").write_text(
        "編集部の[山田](https://news.example.jp/staff)です。<img src=x onerror=alert(1)>", encoding="utf-8")
    o.cli("edition", "set", "1", "--lead-file", tmp_path / "lead.md", "--afterword-file", tmp_path / "after.md")
    assert "most 200 characters" in one_error_line(o.cli("edition", "set", "1", "--subject", "長" * 201, ok=False))
    assert "no such file" in one_error_line(o.cli("edition", "set", "1", "--lead-file", tmp_path / "x.md", ok=False))
    o.cli("edition", "send", "weekly")
    [first, *_] = o.outbox()
    msg = email.message_from_bytes(first.read_bytes(), policy=policy.default)
    assert msg["Subject"] == "【週刊 地方行政ニュース】第1号 県立高校の入試日程を公表 その1"
    html = msg.get_body(("html",)).get_content()
    plain = msg.get_body(("plain",)).get_content()
    for part in (html, plain):
        # The lead's look-alike placeholder stays literal text: personal data goes only
        # where the template puts it (the markers are unguessable, newsletter/links.py).
        assert "寒さが" in part and "編集後記" in part and "%%NL_UNSUBSCRIBE_URL%%" in part
        assert part.count("/unsubscribe/") == 1  # the real link, once, from the footer
    assert "<strong>厳しく</strong>" in html and "onerror" not in html and "<img" not in html
    assert html.index("寒さが") < html.index("続きを読む") < html.index("編集後記")


@settings(max_examples=60, deadline=None)
@given(lead=st.text(alphabet=st.sampled_from("師走予算<>&\"'*_#[]()%NL:/ \n\tabcjavascript"), max_size=80),
       subject=st.text(max_size=40))
def test_draft_texts_are_sanitized_for_any_input(lead, subject):
    config = load_config(ROOT / "config.toml")
    pub = config.publications[0]
    row = {"id": 1, "title": "東雲県が素案を公表", "url": "https://news.example.jp/a/1", "summary": "概要",
           "body": "", "body_format": "markdown", "author": "", "fields": "education", "priority": 0,
           "pinned": False, "created_at": utc(2026, 11, 27), "publish_at": None}
    content = creation.draft_content(config, pub, 1, [row], utc(2026, 11, 27), {"lead": lead})
    assert "<script" not in content["lead_html"].lower() and "%%NL_" not in content["lead_html"]
    assert "javascript:" not in content["lead_html"].lower()
    try:
        cleaned = state.check_subject(subject)
    except InputError as exc:
        assert ("\n" in subject or "\r" in subject) and "line breaks" in str(exc)
    else:
        assert not any(ord(c) < 32 for c in cleaned)


# -- races: two processes on PostgreSQL -------------------------------------------------------


def _race(o: Office, args_a: list[str], args_b: list[str]) -> list[subprocess.CompletedProcess]:
    """Run two CLI processes that both pass their checks and then meet at the UPDATE:
    the test holds the edition row locked until both wait on it, then lets go."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    admin = create_engine(o.config.storage_url)
    with admin.connect() as conn:
        tx = conn.begin()
        conn.execute(select(editions.c.id).where(editions.c.number == 1).with_for_update())
        procs = [subprocess.Popen([sys.executable, "-m", "newsletter", "--config", str(o.cli.config_path), *args],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for args in (args_a, args_b)]
        deadline = time.monotonic() + 120

        def waiting() -> int:  # a new transaction each time: pg_stat_activity is a per-transaction snapshot
            with admin.connect() as watch:
                return watch.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                          "AND datname = current_database()")).scalar()

        try:
            while waiting() < 2:
                assert time.monotonic() < deadline, [p.poll() for p in procs]
                assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
                time.sleep(0.05)
        except BaseException:
            for p in procs:
                p.kill()
            raise
        finally:
            tx.rollback()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    admin.dispose()
    return out


@pytest.mark.parametrize("storage_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_two_approvers_at_once_one_wins(office):
    o = office
    add_articles(o.cli, 1)
    o.as_("sato", "edition", "create", "weekly")
    digest = content_of(o.cli)
    a, b = _race(o, ["--as", "kacho", "edition", "approve", "1", "--hash", digest],
                 ["--as", "henshucho", "edition", "approve", "1", "--hash", digest])
    assert sorted([a.returncode, b.returncode]) == [0, 1], (a, b)
    winner, loser = (a, b) if a.returncode == 0 else (b, a)
    name = "kacho" if winner is a else "henshucho"
    assert f"approved by {name}" in winner.stdout
    assert loser.stderr.strip() == (f"error: weekly 第1号: cannot approve it: someone else acted first; "
                                    f"it is now approved by {name}")
    with o.engine.connect() as conn:
        assert conn.execute(select(func.count()).where(audit_log.c.action == "approved")).scalar() == 1
    assert o.row().approved_by == name

    c, d = _race(o, ["--as", "unyo", "edition", "schedule", "1", "--at", "2030-12-03 10:00"],
                 ["--as", "kacho", "edition", "schedule", "1", "--at", "2030-12-04 10:00"])
    assert sorted([c.returncode, d.returncode]) == [0, 1], (c, d)
    loser = c if c.returncode else d
    assert "cannot schedule it: someone else acted first; it is now scheduled by" in loser.stderr
    with o.engine.connect() as conn:
        assert conn.execute(select(func.count()).where(audit_log.c.action == "scheduled")).scalar() == 1


# -- the daemon's side, with an injected clock ------------------------------------------------


def test_scheduled_edition_goes_out_at_its_time_and_a_slot_without_approval_is_skipped(office, caplog):
    o = office
    core = SchedulerCore(o.engine, o.config)
    core.tick(utc(2026, 11, 30))  # the schedule starts counting (Tuesdays 09:00 JST)
    add_articles(o.cli, 2)
    o.as_("sato", "edition", "create", "weekly")
    draft_id = o.row().id

    # Tuesday 2026-12-01 09:00 JST: only a draft → the slot is skipped, nothing is created or sent.
    assert [r.outcome for r in core.tick(utc(2026, 12, 1, 0, 0, 5))] == ["skipped"]
    assert "slot 2026-12-01 09:00 JST skipped: nothing approved" in caplog.text
    with o.engine.connect() as conn:
        assert schedule_q.get(conn, "weekly").last_result == "slot skipped: nothing approved"
        assert conn.execute(select(func.count()).select_from(editions)).scalar() == 1
    assert "slot skipped: nothing approved" in o.cli("status").stdout
    assert deliver(o.engine, o.config, draft_id).sent == 0 and o.delivered() == 0

    # Approved and scheduled for Thursday 10:00 JST (予約配信).
    o.as_("kacho", "edition", "approve", "1", "--hash", content_of(o.cli))
    o.cli("--as", "unyo", "edition", "schedule", "1", "--at", "2030-12-05 10:00")
    with o.engine.begin() as conn:  # bring it into the test's calendar
        conn.execute(update(editions).where(editions.c.id == draft_id).values(scheduled_for=utc(2026, 12, 3, 1)))
    core.tick(utc(2026, 12, 3, 0, 59))
    assert o.row().status == "scheduled"
    core.tick(utc(2026, 12, 3, 1, 0, 30))
    assert o.row().status == "sending" and o.row().scheduled_for == utc(2026, 12, 3, 1)
    assert deliver(o.engine, o.config, draft_id, clock=lambda: utc(2026, 12, 3, 1, 1)).sent == 2
    history = o.cli("edition", "history", "1").stdout.splitlines()
    assert history[-2].split("\t")[1:3] == ["-", "daemon"] and "sending" in history[-2]
    assert history[-1].split("\t")[1:4:2] == ["-", "finished  sent=2"]

    # An approved edition without a time of its own goes out at the next slot.
    add_articles(o.cli, 1, start=3)
    o.as_("sato", "edition", "create", "weekly")
    o.as_("henshucho", "edition", "approve", "2", "--hash", content_of(o.cli, 2))
    [run] = core.tick(utc(2026, 12, 8, 0, 0, 5))
    assert run.outcome == "approved" and run.number == 2
    assert o.row(2).status == "sending" and o.row(2).scheduled_for == utc(2026, 12, 8, 0)


def test_a_scheduled_time_missed_beyond_the_grace_goes_back_to_approved(office, caplog):
    o = office
    add_articles(o.cli, 1)
    o.as_("sato", "edition", "create", "weekly")
    o.as_("kacho", "edition", "approve", "1", "--hash", content_of(o.cli))
    row = state.schedule(o.engine, o.config, o.row().id, utc(2026, 12, 3, 1), DAEMON, now=utc(2026, 12, 1))
    SchedulerCore(o.engine, o.config).tick(utc(2026, 12, 3, 8))  # 7 h late, grace 6 h
    row = o.row()
    assert row.status == "approved" and row.scheduled_for is None and "missed its time" in row.note
    assert "more than misfire_grace: not sent" in caplog.text
    assert o.delivered() == 0


def test_an_unapproved_edition_is_never_delivered_by_the_daemon(office):
    """Ticks across several slots, the daemon's delivery pass and a retry pass: the
    draft stays a draft and nobody gets a mail."""
    from newsletter.daemon import Daemon

    o = office
    add_articles(o.cli, 2)
    o.as_("sato", "edition", "create", "weekly")
    clock = [utc(2026, 11, 30)]
    daemon = Daemon(o.cli.config_path, clock=lambda: clock[0])
    try:
        for day in (1, 8, 15):
            clock[0] = utc(2026, 12, day, 0, 0, 5)
            daemon.tick()
            daemon.deliver_due()
        clock[0] += timedelta(days=3)  # retries would be due by now
        daemon.deliver_due()
    finally:
        daemon.engine.dispose()
    assert o.row().status == "draft" and o.delivered() == 0 and o.outbox() == []


def test_state_functions_refuse_what_the_state_does_not_allow(office):
    o = office
    add_articles(o.cli, 1)
    o.as_("sato", "edition", "create", "weekly")
    sato, kacho = Actor("sato", "cli", "editor"), Actor("kacho", "console", "approver")
    eid = o.row().id
    with pytest.raises(InputError, match="is a draft; approve it before scheduling it"):
        state.schedule(o.engine, o.config, eid, utc(2030, 1, 1), kacho)
    with pytest.raises(InputError, match="cannot pause it"):
        state.pause(o.engine, o.config, eid, kacho)
    with pytest.raises(InputError, match="not a content hash"):
        state.approve(o.engine, o.config, eid, kacho, "zzzz")
    with pytest.raises(InputError, match="no preview of this edition has hash"):
        state.approve(o.engine, o.config, eid, kacho, "0123456789abcdef")
    state.approve(o.engine, o.config, eid, kacho, state.hash_of(o.row()))
    state.start_sending(o.engine, o.config, eid, Actor("unyo", "cli", "operator"))
    for call in (lambda: state.unapprove(o.engine, o.config, eid, kacho),
                 lambda: state.set_texts(o.engine, o.config, eid, sato, lead="後から"),
                 lambda: state.start_sending(o.engine, o.config, eid, kacho)):
        with pytest.raises(InputError):
            call()
    assert "a sent edition cannot be changed" in str(pytest.raises(
        InputError, state.remove_article, o.engine, o.config, eid, 1, sato).value)
    with o.engine.connect() as conn:
        interfaces = [r.interface for r in conn.execute(select(audit_log).order_by(audit_log.c.id))]
    assert interfaces == ["cli", "console", "cli"]


# -- users -------------------------------------------------------------------------------------


def test_users_add_list_disable_passwd(project):
    cli = project
    cli("user", "add", "sato", "--email", "Sato@Example.JP", "--role", "editor", input="十分に長いパスワード\n")
    assert one_error_line(cli("user", "add", "sato", "--email", "s@example.jp", "--role", "editor",
                              input="十分に長いパスワード\n", ok=False)) == "error: user sato: already exists"
    assert "at least 10 characters" in one_error_line(
        cli("user", "add", "kato", "--email", "k@example.jp", "--role", "editor", input="短い\n", ok=False))
    assert "--email" in one_error_line(
        cli("user", "add", "kato", "--email", "not-an-address", "--role", "editor", input="x" * 12 + "\n", ok=False))
    assert cli("user", "add", "kato", "--email", "k@example.jp", "--role", "chief", ok=False).exit_code == 2
    assert cli("user", "list").stdout == "sato\tsato@example.jp\teditor\tactive\tpassword\n"

    from newsletter.users import verify_password

    engine = open_engine(load_config(cli.config_path).storage_url)
    try:
        assert verify_password(engine, "sato", "十分に長いパスワード")
        assert not verify_password(engine, "sato", "違うパスワードです")
        assert not verify_password(engine, "nobody", "十分に長いパスワード")
        cli("user", "passwd", "sato", input="新しい十分に長い合言葉\n")
        assert verify_password(engine, "sato", "新しい十分に長い合言葉")
        cli("user", "disable", "sato")
        assert not verify_password(engine, "sato", "新しい十分に長い合言葉")
    finally:
        engine.dispose()
    assert "disabled" in cli("user", "list").stdout
    assert one_error_line(cli("--as", "sato", "edition", "create", "weekly", ok=False)) == \
        "error: --as sato: this user is disabled"
    assert "no such user" in one_error_line(cli("--as", "ghost", "edition", "create", "weekly", ok=False))
    # NEWSLETTER_USER works like --as
    from click.testing import CliRunner

    from newsletter.cli import main

    res = CliRunner().invoke(main, ["--config", str(cli.config_path), "edition", "create", "weekly"],
                             env={"NEWSLETTER_USER": "ghost"})
    assert res.exit_code == 1 and "--as ghost: no such user" in res.stderr


def test_the_approval_key_is_checked(tmp_path):
    cli = CLI(write_config(tmp_path / "p", f"sqlite:///{tmp_path / 'p.db'}",
                           replace={'schedule = "0 9 * * TUE"': 'schedule = "0 9 * * TUE"\napproval = "maybe"'}))
    line = one_error_line(cli("init", ok=False))
    assert "publications[0].approval" in line and "'none', 'required'" in line


# -- a database from the previous release ---------------------------------------------------


def test_a_database_at_0005_upgrades_and_its_editions_keep_working(tmp_path, storage_url):
    """Built with the migrations up to 0005 and rows of the previous release's shape:
    one edition done, one half sent.  'newsletter init' upgrades; the half-sent one is
    resumed by 'edition send' as before, and the next edition is made the new way."""
    import json

    from alembic import command

    from newsletter.store import _alembic_config, make_engine

    cli = CLI(write_config(tmp_path / "project", storage_url))
    config = load_config(cli.config_path)
    engine = make_engine(storage_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0005")
    t = utc(2026, 11, 20)
    with engine.begin() as conn:
        # Plain SQL with the 0005 columns: today's table object has columns the old schema lacks.
        conn.execute(text(
            "INSERT INTO articles (id, url, title, summary, body, body_format, author, fields, status, priority, "
            "pinned, source, created_at, updated_at) VALUES (:id, :url, :title, '概要', '', 'markdown', '', "
            "'education', :status, 0, :pinned, '', :created, :t)"), [
            {"id": i, "url": f"https://news.example.jp/edu/{i}", "title": title, "status": status, "pinned": False,
             "created": t + timedelta(minutes=i), "t": t}
            for i, title, status in ((1, "旧版で送った記事", "published"), (2, "まだ送っていない記事", "queued"))])
        conn.execute(text(
            "INSERT INTO subscribers (id, email, name, fields, format, status, created_at, updated_at, bounce_count) "
            "VALUES (1, 'hanako@example.jp', '佐藤 花子', 'education', 'html', 'active', :t, :t, 0), "
            "(2, 'taro@example.jp', '', 'education', 'text', 'active', :t, :t, 0)"), {"t": t})
        old = creation.freeze(config, config.publication("weekly"), 1,
                             [dict(conn.execute(text("SELECT * FROM articles WHERE id = 1")).first()._mapping)], t)
        for number, status in ((1, "done"), (2, "sending")):
            conn.execute(text(
                "INSERT INTO editions (id, publication, number, status, created_at, content) "
                "VALUES (:i, 'weekly', :i, :s, :t, :c)"),
                {"i": number, "s": status, "t": t, "c": json.dumps({**old, "number": number}, ensure_ascii=False)})
            conn.execute(text("INSERT INTO edition_articles (edition_id, article_id, position) VALUES (:i, 1, 0)"),
                         {"i": number})
        conn.execute(text(
            "INSERT INTO deliveries (edition_id, subscriber_id, email, variant, status, attempts, created_at, "
            "updated_at, domain, unknown_outcomes) VALUES "
            "(1, 1, 'hanako@example.jp', 'education|html|utf-8', 'sent', 1, :t, :t, 'example.jp', 0), "
            "(2, 1, 'hanako@example.jp', 'education|html|utf-8', 'sent', 1, :t, :t, 'example.jp', 0), "
            "(2, 2, 'taro@example.jp', 'education|text|utf-8', 'pending', 0, :t, :t, 'example.jp', 0)"), {"t": t})
        if conn.dialect.name == "postgresql":  # the ids above were given, not drawn from the sequences
            for table in ("articles", "subscribers", "editions"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))
    engine.dispose()
    from newsletter.store import schema_head

    assert f"from schema 0005 to {schema_head()}" in cli("init").stdout
    out = cli("edition", "send", "--edition", "2").stdout
    assert "this run sent 1, failed 0" in out
    listing = cli("edition", "list").stdout
    assert re.search(r"第1号\t.*\tdone\t.*sent=1", listing) and re.search(r"第2号\t.*\tdone\t.*sent=2", listing)
    assert "weekly 第3号: draft with 1 articles" in cli("edition", "create", "weekly").stdout
    out = cli("edition", "send", "weekly").stdout
    assert "sending weekly 第3号 (draft): 2 to send" in out and "this run sent 2" in out


# -- 承認依頼: an editor asks for approval (issue 14, desk) ----------------------------------


def test_request_for_approval_waits_until_approved_and_any_change_withdraws_it(office):
    o = office
    add_articles(o.cli, 2)
    o.as_("sato", "edition", "create", "weekly")
    assert "may not ask for approval" in one_error_line(
        o.as_("unyo", "edition", "request-approval", "1", ok=False))
    out = o.as_("sato", "edition", "request-approval", "1").stdout
    assert out.startswith("weekly 第1号: waiting for approval, asked by sato (content ")
    row = o.row()
    assert (row.status, row.approval_requested_by) == ("draft", "sato") and row.approval_requested_at
    assert [r.id for r in state.awaiting_approval(o.engine)] == [row.id]
    assert "requested:   approval asked by sato" in o.cli("edition", "status", "1").stdout
    assert "already waiting for approval (asked by sato" in one_error_line(
        o.as_("sato", "edition", "request-approval", "1", ok=False))

    # The editor changes the draft: the request spoke of the old content, so it is withdrawn.
    o.as_("sato", "edition", "order", "1", "1,2")
    assert o.row().approval_requested_at is None and state.awaiting_approval(o.engine) == []
    o.as_("sato", "edition", "request-approval", "1")
    # An article it carries edited elsewhere withdraws it too; an edit that changes nothing does not.
    o.as_("sato", "edition", "order", "1", "1,2")
    assert o.row().approval_requested_by == "sato"
    o.as_("sato", "article", "edit", "2", "--summary", "日程を訂正しました")
    assert o.row().approval_requested_at is None
    o.as_("sato", "edition", "request-approval", "1")
    o.as_("sato", "edition", "withdraw-request", "1")
    assert o.row().approval_requested_at is None
    assert "is draft (last edited by sato); it is not waiting for approval" in one_error_line(
        o.as_("sato", "edition", "withdraw-request", "1", ok=False))

    # Approval ends the request; an approved edition cannot be asked for again.
    o.as_("sato", "edition", "request-approval", "1")
    o.as_("kacho", "edition", "approve", "1", "--hash", content_of(o.cli))
    assert o.row().approval_requested_at is None and state.awaiting_approval(o.engine) == []
    assert "is already approved by kacho" in one_error_line(
        o.as_("sato", "edition", "request-approval", "1", ok=False))

    history = [line.split("\t")[1:4] for line in o.cli("edition", "history", "1").stdout.splitlines()]
    assert [h[2].split("  ")[0] for h in history] == [
        "created", "approval requested", "reordered", "request withdrawn", "approval requested",
        "reordered", "refreshed", "request withdrawn", "approval requested", "request withdrawn", "approval requested",
        "approved"]
    assert all(h[1] == "cli" for h in history)
