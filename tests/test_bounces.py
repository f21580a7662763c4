"""``newsletter bounces process PATH``: RFC 3464 delivery status notifications,
RFC 5965 complaint reports and mailed unsubscribe requests (the RFC 2369
mailto of every mail) from a Maildir, an mbox or one .eml file."""

from __future__ import annotations

import email
import mailbox
from datetime import timedelta
from email import policy
from pathlib import Path
from urllib.parse import unquote

import pytest
from sqlalchemy import func, select

from newsletter.bounces import MailEvent, apply_events, parse_report
from newsletter.store.tables import consents, mail_events, utcnow
from tests.test_web import Site, make_site

ADDRESSES = ("hard@example.jp", "soft@example.jp", "spam@example.jp", "late@example.jp")


def dsn(message_id: str, recipients: list[tuple[str, str, str, str]]) -> bytes:
    """A Postfix-style bounce: (address, action, status, diagnostic) per recipient."""
    groups = "\n".join(
        f"Final-Recipient: rfc822; {a}\nOriginal-Recipient: rfc822;{a}\nAction: {action}\nStatus: {status}\n"
        f"Remote-MTA: dns; mx.example.jp\nDiagnostic-Code: smtp; {diag}\n"
        for a, action, status, diag in recipients
    )
    return f"""Return-Path: <>
From: MAILER-DAEMON@mta.news.example.jp (Mail Delivery System)
To: magazine@news.example.jp
Subject: Undelivered Mail Returned to Sender
Date: Tue, 01 Dec 2026 09:00:10 +0900 (JST)
Message-ID: {message_id}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="BOUNDARY.1"

--BOUNDARY.1
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mta.news.example.jp.
I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--BOUNDARY.1
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mta.news.example.jp
X-Postfix-Queue-ID: 4Q2Xyz1abc
Arrival-Date: Tue,  1 Dec 2026 09:00:01 +0900 (JST)

{groups}
--BOUNDARY.1
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: magazine@news.example.jp
Subject: =?UTF-8?B?44CQ6YCx5YiKIOWcsOaWueihjOaUv+ODi+ODpeODvOOCueOAkQ==?=
Message-ID: <nl.1.1.1@news.example.jp>

--BOUNDARY.1--
""".replace("\n", "\r\n").encode()


def arf(message_id: str, address: str) -> bytes:
    return f"""From: feedback@fbl.example.net
To: abuse@news.example.jp
Subject: FW: complaint
Message-ID: {message_id}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"

--ARF
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received on 1 Dec 2026.

--ARF
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Rcpt-To: <{address}>

--ARF
Content-Type: message/rfc822

From: magazine@news.example.jp
To: {address}
Subject: newsletter
Message-ID: <nl.1.1.3@news.example.jp>

body
--ARF--
""".replace("\n", "\r\n").encode()


def plain(message_id: str) -> bytes:
    return (f"From: someone@example.jp\r\nTo: magazine@news.example.jp\r\nSubject: thanks\r\n"
            f"Message-ID: {message_id}\r\n\r\nThank you for the newsletter!\r\n").encode()


def bounce_site(tmp_path, storage_url: str) -> Site:
    site = make_site(tmp_path, storage_url, extra='\n[bounces]\nsoft_limit = 2\nsoft_window = "30d"\n')
    for address in ADDRESSES:
        site.cli("subscriber", "add", address, "--fields", "education")
    return site


@pytest.fixture
def site(tmp_path) -> Site:
    return bounce_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}")


def statuses(site: Site) -> dict[str, str]:
    return {a: site.subscriber(a).status for a in ADDRESSES}


def counts(site: Site) -> tuple[int, int]:
    with site.engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(mail_events)).scalar(),
                conn.execute(select(func.count()).select_from(consents)).scalar())


def mailbox_messages() -> list[bytes]:
    return [
        dsn("<dsn-1@mta.news.example.jp>", [
            ("hard@example.jp", "failed", "5.1.1",
             "550 5.1.1 <hard@example.jp>: Recipient address rejected: User unknown"),
            ("soft@example.jp", "failed", "4.2.2", "452 4.2.2 Mailbox full"),
        ]),
        dsn("<dsn-2@mta.news.example.jp>", [("late@example.jp", "delayed", "4.4.1", "connect timed out")]),
        dsn("<dsn-3@mta.news.example.jp>", [("soft@example.jp", "failed", "4.2.2", "452 4.2.2 Mailbox full")]),
        arf("<arf-1@fbl.example.net>", "spam@example.jp"),
        plain("<hello@example.jp>"),
        dsn("<dsn-4@mta.news.example.jp>", [("stranger@example.com", "failed", "5.1.1", "550 no such user")]),
    ]


def test_maildir_of_bounces_and_complaints(tmp_path, storage_url):
    site = bounce_site(tmp_path, storage_url)
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    for raw in mailbox_messages():
        box.add(raw)
    out = site.cli("bounces", "process", tmp_path / "bounces").stdout
    assert "processed 6 messages" in out
    assert "2 hard bounces, 2 soft bounces, 1 complaints" in out and "1 unknown addresses" in out
    assert "suppressed hard@example.jp" in out
    # Hard → bounced; two soft bounces reach soft_limit = 2 → bounced; the ARF report → complained;
    # a delay warning ("delayed") changes nothing.
    assert statuses(site) == {"hard@example.jp": "bounced", "soft@example.jp": "bounced",
                              "spam@example.jp": "complained", "late@example.jp": "active"}
    hard = site.consents("hard@example.jp")[-1]
    assert (hard.event, hard.source) == ("bounced", "dsn") and "5.1.1" in hard.detail

    before = counts(site)
    again = site.cli("bounces", "process", tmp_path / "bounces").stdout
    assert "5 already seen" in again and "0 addresses suppressed" in again
    assert counts(site) == before


def test_mbox_and_single_file(site, tmp_path):
    box = mailbox.mbox(tmp_path / "bounces.mbox", create=True)
    for raw in mailbox_messages()[:2]:
        box.add(raw)
    box.flush()
    out = site.cli("bounces", "process", tmp_path / "bounces.mbox").stdout
    assert "processed 2 messages" in out
    assert site.subscriber("hard@example.jp").status == "bounced"
    assert site.subscriber("soft@example.jp").status == "active"  # one soft bounce of two
    (tmp_path / "one.eml").write_bytes(mailbox_messages()[2])
    site.cli("bounces", "process", tmp_path / "one.eml")
    assert site.subscriber("soft@example.jp").status == "bounced"


def test_dry_run_changes_nothing(site, tmp_path):
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    for raw in mailbox_messages():
        box.add(raw)
    before = counts(site)
    out = site.cli("bounces", "process", "--dry-run", tmp_path / "bounces").stdout
    assert "would suppress hard@example.jp" in out and "would process 6 messages" in out
    assert counts(site) == before and set(statuses(site).values()) == {"active"}


def test_bad_paths_are_one_line_errors(site, tmp_path):
    res = site.cli("bounces", "process", tmp_path / "nothing-here", ok=False)
    assert res.exit_code == 1 and "no such file or folder" in res.stderr
    (tmp_path / "folder").mkdir()
    res = site.cli("bounces", "process", tmp_path / "folder", ok=False)
    assert res.exit_code == 1 and "not a Maildir" in res.stderr


def test_soft_bounces_count_only_within_the_window(site):
    now = utcnow()
    old = [MailEvent("test", f"old-{i}", "soft", email="soft@example.jp", at=now - timedelta(days=40))
           for i in range(3)]
    apply_events(site.engine, site.config, old)
    assert site.subscriber("soft@example.jp").status == "active"
    apply_events(site.engine, site.config, [MailEvent("test", "new-1", "soft", email="soft@example.jp")])
    assert site.subscriber("soft@example.jp").status == "active"
    apply_events(site.engine, site.config, [MailEvent("test", "new-2", "soft", email="soft@example.jp")])
    assert site.subscriber("soft@example.jp").status == "bounced"


def test_parse_report_reads_each_recipient():
    msg = email.message_from_bytes(mailbox_messages()[0], policy=policy.compat32)
    events = parse_report(msg)
    assert [(e.email, e.kind) for e in events] == [("hard@example.jp", "hard"), ("soft@example.jp", "soft")]
    assert events[0].event_id == "<dsn-1@mta.news.example.jp>:hard@example.jp"
    assert parse_report(email.message_from_bytes(plain("<x@y>"), policy=policy.compat32)) == []


def test_mailto_unsubscribe_from_a_sent_edition(site, tmp_path):
    """The List-Unsubscribe mailto of a delivered message, used as a mail
    client does: a mail to that address with that subject."""
    site.cli("article", "add", "--field", "education", "--title", "県立高校の入試日程を公表",
             "--url", "https://news.example.jp/edu/1")
    site.cli("edition", "send", "weekly")
    sent = next((site.folder / "var" / "outbox").glob("*late@example.jp.eml"))
    msg = email.message_from_bytes(sent.read_bytes(), policy=policy.default)
    mailto = str(msg["List-Unsubscribe"]).split("<mailto:")[1].split(">")[0]
    to, _, query = mailto.partition("?")
    subject = unquote(query.removeprefix("subject="))
    assert to == "unsubscribe@news.example.jp" and subject.startswith("unsubscribe ")

    request = (f"From: Late Reader <late@example.jp>\r\nTo: {to}\r\nSubject: {subject}\r\n"
               f"Message-ID: <req-1@example.jp>\r\n\r\n").encode()
    forged = (f"From: attacker@example.com\r\nTo: {to}\r\nSubject: unsubscribe 2.AAAAAAAAAAAAAAAAAAAAAA\r\n"
              f"Message-ID: <req-2@example.com>\r\n\r\n").encode()
    elsewhere = (f"From: late@example.jp\r\nTo: henshu@news.example.jp\r\nSubject: {subject}\r\n"
                 f"Message-ID: <req-3@example.jp>\r\n\r\n").encode()
    box = mailbox.Maildir(tmp_path / "inbox", create=True)
    for raw in (forged, elsewhere, request):
        box.add(raw)
    out = site.cli("bounces", "process", tmp_path / "inbox").stdout
    assert "1 unsubscribe requests" in out and "suppressed late@example.jp" in out
    assert statuses(site) == {**dict.fromkeys(ADDRESSES, "active"), "late@example.jp": "unsubscribed"}
    consent = site.consents("late@example.jp")[-1]
    assert (consent.event, consent.source) == ("unsubscribed", "mailto")
    before = counts(site)
    site.cli("bounces", "process", tmp_path / "inbox")
    assert counts(site) == before


def test_no_inbound_mailbox_configured_means_no_mailto_processing(tmp_path):
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}",
                     replace={'unsubscribe_mailto = "unsubscribe@news.example.jp"': ""})
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    token = site.token("unsubscribe", "reader@example.jp")
    path = Path(tmp_path / "req.eml")
    path.write_bytes(f"To: unsubscribe@news.example.jp\r\nSubject: unsubscribe {token}\r\n\r\n".encode())
    assert "1 ignored" in site.cli("bounces", "process", path).stdout
    assert site.subscriber("reader@example.jp").status == "active"


def deliveries_of(site: Site) -> dict[str, tuple[str, str | None]]:
    from newsletter.store.tables import deliveries

    with site.engine.connect() as conn:
        return {r.email: (r.status, r.last_reply) for r in conn.execute(select(deliveries))}


def edition_for_everyone(site: Site) -> None:
    site.cli("article", "add", "--field", "education", "--title", "学校給食の無償化、来春から",
             "--url", "https://news.example.jp/e/kyushoku", "--summary", "給食費の概要です。")
    from newsletter.editions import creation

    # Created and planned as the one-step send does it (``edition create`` makes a draft, with no deliveries yet).
    assert creation.create_edition(site.engine, site.config, site.config.publication("weekly")).pending == 4


def test_the_delivery_log_says_why_a_delivery_was_cancelled(tmp_path, storage_url):
    """A bounce, a complaint and a soft-bounce limit cancel the edition's pending
    deliveries with their own reason, not "subscriber unsubscribed"."""
    site = bounce_site(tmp_path, storage_url)
    edition_for_everyone(site)
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    for raw in mailbox_messages():
        box.add(raw)
    site.cli("bounces", "process", tmp_path / "bounces")
    log = deliveries_of(site)
    assert log["hard@example.jp"][0] == "cancelled"
    assert log["hard@example.jp"][1].startswith("hard bounce: failed 5.1.1 smtp; 550 5.1.1")
    assert log["spam@example.jp"] == ("cancelled", "complaint")
    assert log["soft@example.jp"][0] == "cancelled"
    assert log["soft@example.jp"][1].startswith("2 soft bounces in 30 days")
    assert log["late@example.jp"] == ("pending", None)


def test_reports_follow_the_one_hard_bounce_rule(tmp_path):
    """5.1.x is a hard bounce, counted against [provider] hard_bounce_limit (as the
    engine counts); a 5.7.1 policy refusal says nothing about the address: soft."""
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}",
                     extra='\n[bounces]\nsoft_limit = 5\nsoft_window = "30d"\n',
                     replace={'path = "var/outbox"': 'hard_bounce_limit = 2\npath = "var/outbox"'})
    for address in ADDRESSES:
        site.cli("subscriber", "add", address, "--fields", "education")
    policy_refusal = dsn("<dsn-policy@mta.news.example.jp>", [
        ("spam@example.jp", "failed", "5.7.1", "554 5.7.1 Message rejected as spam by Content Filtering")])
    first = dsn("<dsn-a@mta.news.example.jp>", [("hard@example.jp", "failed", "5.1.1", "550 5.1.1 User unknown")])
    second = dsn("<dsn-b@mta.news.example.jp>", [("hard@example.jp", "failed", "5.1.1", "550 5.1.1 User unknown")])
    for i, raw in enumerate((policy_refusal, first)):
        (tmp_path / f"{i}.eml").write_bytes(raw)
        site.cli("bounces", "process", tmp_path / f"{i}.eml")
    assert site.subscriber("spam@example.jp").status == "active"
    assert site.subscriber("hard@example.jp").status == "active"
    assert site.subscriber("hard@example.jp").bounce_count == 1
    (tmp_path / "2.eml").write_bytes(second)
    out = site.cli("bounces", "process", tmp_path / "2.eml").stdout
    assert "suppressed hard@example.jp" in out
    assert site.subscriber("hard@example.jp").status == "bounced"
    with site.engine.connect() as conn:
        kinds = dict(conn.execute(select(mail_events.c.event_id, mail_events.c.kind)).all())
    assert kinds["<dsn-policy@mta.news.example.jp>:spam@example.jp"] == "soft"
