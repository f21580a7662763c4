"""One recipient's message, checked as bytes and parsed back with the email package.

Every message is parsed with ``email.message_from_bytes(data, policy=policy.default)``
and the raw bytes are checked too: the things that break in real inboxes
(a folded List-Unsubscribe URL, a header line from data, a lone LF) only show there.
"""

from __future__ import annotations

import base64
import email
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from functools import lru_cache

import pytest

from newsletter.editions.compose import Recipient, Sending, compose
from newsletter.editions.render import Rendered, render_variant
from newsletter.interfaces import OutgoingMessage
from newsletter.links import Placeholders
from newsletter.tokens import verify_token
from tests.test_render import EDU, LG, WHEN, fixed_config, fixed_content

KEY = b"compose-test-key-0123456789abcdef"
NOW = datetime(2026, 12, 1, 0, 3, 27, tzinfo=UTC)
# Long enough that the personal unsubscribe URL is well over 78 characters.
BASE_URL = "https://news.example.jp/mail-magazine/weekly-local-government/subscribers/self-service"
SUBJECT = "【週刊 地方行政ニュース】第12号 【特集】能登半島の復興計画、住民参加で見直しへ"
INJECT = "\r\nBcc: evil@example.com"
EXPECTED_HEADERS = {
    "from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe", "list-unsubscribe-post",
    "auto-submitted", "precedence", "mime-version", "content-type",
}


def sending(**changes) -> Sending:
    values = dict(
        edition_id=7,
        edition_stamp=1796079600,
        publication_slug="weekly",
        publication_title="週刊 地方行政ニュース",
        timezone="Asia/Tokyo",
        from_name="地方行政ニュース編集部",
        from_address="magazine@news.example.jp",
        reply_to=None,
        envelope_from="bounces@news.example.jp",
        base_url=BASE_URL,
        domain="news.example.jp",
        unsubscribe_mailto="unsubscribe@news.example.jp",
        key=KEY,
    )
    values.update(changes)
    return Sending(**values)


@lru_cache(maxsize=4)
def rendered_variant(html: bool = True, title: str | None = None) -> Rendered:
    config = fixed_config()
    content = fixed_content(config)
    if title is not None:
        content["publication"]["title"] = title
    return render_variant(content, (LG, EDU), config.templates_dir, when=WHEN, html=html)


def simple(subject: str = SUBJECT, *, html: bool = True) -> Rendered:
    """A small hand-made variant, for header tests that need a particular subject."""
    ph = Placeholders.new()
    text = f"{ph.greeting}\n\n■ 教育\n\n本文です。\n\n配信停止\n{ph.unsubscribe}\n"
    body = (f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><p>{ph.greeting}</p>'
            f'<p>本文です。</p><a href="{ph.unsubscribe}">配信停止</a> '
            f'<a href="{ph.preferences}">配信設定の変更</a></body></html>')
    return Rendered(subject, body if html else None, text, (101,), "ja", placeholders=ph)


def make(rendered: Rendered | None = None, *, name: str = "山田 太郎", address: str = "yamada@example.jp",
         subscriber_id: int = 42, charset: str = "utf-8", **sending_changes) -> OutgoingMessage:
    return compose(
        rendered or rendered_variant(),
        Recipient(delivery_id=1001, subscriber_id=subscriber_id, email=address, name=name),
        sending(**sending_changes),
        charset=charset,
        now=NOW,
    )


def parse(message: OutgoingMessage) -> EmailMessage:
    return email.message_from_bytes(message.data, policy=policy.default)


def raw_head(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def raw_header(data: bytes, name: str) -> bytes:
    """One header's raw value, folded lines and all."""
    m = re.search(rb"(?im)^" + re.escape(name.encode()) + rb": ([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", raw_head(data))
    assert m, f"no {name} header"
    return m.group(1)


def bodies(msg: EmailMessage) -> tuple[str, str | None]:
    if msg.is_multipart():
        text, html = list(msg.iter_parts())
        return text.get_content(), html.get_content()
    return msg.get_content(), None


def assert_wire_format(data: bytes) -> None:
    data.decode("ascii")  # raises if a single byte is 8-bit
    assert data.endswith(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    for line in data.split(b"\r\n"):
        assert len(line) <= 998, line[:80]


# --------------------------------------------------------------------------- headers


def test_headers():
    message = make()
    msg = parse(message)
    assert_wire_format(message.data)

    sender = msg["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("地方行政ニュース編集部", "magazine@news.example.jp")
    assert b"=?utf-8?b?" in raw_header(message.data, "From").lower()
    to = msg["To"].addresses[0]
    assert (to.display_name, to.addr_spec) == ("山田 太郎", "yamada@example.jp")
    assert msg["Subject"] == SUBJECT
    assert raw_header(message.data, "Subject").lower().startswith(b"=?utf-8?b?")
    assert msg["Date"].datetime == NOW
    assert msg["Date"].datetime.utcoffset().total_seconds() == 9 * 3600  # shown in Tokyo time
    assert msg["Message-ID"] == message.message_id
    assert re.fullmatch(r"<[^@<>\s]+@news\.example\.jp>", msg["Message-ID"])
    assert msg["List-Id"] == "週刊 地方行政ニュース <weekly.news.example.jp>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in message.data
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["MIME-Version"] == "1.0"
    assert {k.lower() for k in msg.keys()} == EXPECTED_HEADERS
    assert (message.sender, message.recipient) == ("bounces@news.example.jp", "yamada@example.jp")


def test_list_unsubscribe_url_is_never_encoded_or_folded():
    message = make(subscriber_id=987654)
    raw = raw_header(message.data, "List-Unsubscribe")
    urls = re.findall(rb"<([^>]*)>", raw)
    assert len(urls) == 2
    https, mailto = (u.decode("ascii") for u in urls)
    assert https.startswith(BASE_URL + "/unsubscribe/") and len(https) > 78
    assert b"=?" not in raw
    # Whole, on the header's first line: a fold inside <...> would break one-click unsubscribe.
    assert f"\r\nList-Unsubscribe: <{https}>".encode() in message.data
    assert verify_token([KEY], "unsubscribe", https.rsplit("/", 1)[1]) == 987654
    m = re.fullmatch(r"mailto:unsubscribe@news\.example\.jp\?subject=unsubscribe%20(\S+)", mailto)
    assert m and verify_token([KEY], "unsubscribe", m.group(1)) == 987654
    assert message.headers["List-Unsubscribe"].split(",")[0] == f"<{https}>"
    # What the email package makes of it: the same URL.
    assert f"<{https}>" in str(parse(message)["List-Unsubscribe"])


# --------------------------------------------------------------------------- MIME structure and bodies


def test_html_format_is_multipart_alternative_text_first():
    msg = parse(make())
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)


def test_text_only_subscriber_gets_a_single_text_plain():
    message = make(rendered_variant(html=False))
    msg = parse(message)
    assert not msg.is_multipart()
    assert msg.get_content_type() == "text/plain"
    assert b"multipart" not in message.data and b"text/html" not in message.data
    text = msg.get_content()
    assert "山田 太郎 様" in text and "■ 地方自治" in text
    assert_wire_format(message.data)


def test_bodies_carry_the_escaped_name_and_verified_personal_links():
    name = "<b>田中</b> & 佐藤"
    message = make(name=name, subscriber_id=314)
    msg = parse(message)
    text, html = bodies(msg)
    assert f"{name} 様" in text.splitlines()
    assert "&lt;b&gt;田中&lt;/b&gt; &amp; 佐藤 様" in html
    assert "<b>田中</b>" not in html
    assert msg["To"].addresses[0].display_name == name
    for body in (text, html):
        assert "%%NL_" not in body
        for purpose in ("unsubscribe", "preferences"):
            tokens = re.findall(re.escape(BASE_URL) + f"/{purpose}/([A-Za-z0-9_.-]+)", body)
            assert tokens, f"no {purpose} link"
            assert all(verify_token([KEY], purpose, t) == 314 for t in tokens)
            assert all(verify_token([b"another key"], purpose, t) is None for t in tokens)
    assert f'href="{BASE_URL}/unsubscribe/' in html
    lines = text.splitlines()
    assert lines[lines.index("▼配信停止") + 1].startswith(BASE_URL + "/unsubscribe/314.")
    # The articles themselves arrive intact.
    assert "◆ 教員の働き方改革 <速報> 勤務時間調査の結果 & 今後の対応" in lines
    assert "教員の働き方改革 &lt;速報&gt; 勤務時間調査の結果 &amp; 今後の対応" in html.replace("<wbr>", "")


def test_nameless_subscriber_is_greeted_generically():
    text, html = bodies(parse(make(name="")))
    assert "読者の皆さま" in text and "読者の皆さま" in html
    assert parse(make(name=""))["To"] == "yamada@example.jp"


# --------------------------------------------------------------------------- header injection


@pytest.mark.parametrize("charset", ["utf-8", "iso-2022-jp"])
@pytest.mark.parametrize("name", ["田中" + INJECT, "Tanaka" + INJECT, INJECT])
def test_no_header_injection_from_data(name, charset):
    title = "週刊 地方行政ニュース" + INJECT
    rendered = rendered_variant(title=title)
    assert "\r" not in rendered.subject and "\n" not in rendered.subject
    for variant in (rendered, simple("【号外】" + INJECT)):
        message = make(variant, name=name, charset=charset, publication_title=title, from_name="編集部" + INJECT)
        msg = parse(message)
        assert msg["Bcc"] is None and msg.get_all("Bcc") is None
        assert {k.lower() for k in msg.keys()} == EXPECTED_HEADERS
        head_lines = raw_head(message.data).split(b"\r\n")
        names = [line.split(b":", 1)[0].lower().decode() for line in head_lines if line[:1] not in (b" ", b"\t")]
        assert set(names) == EXPECTED_HEADERS and len(names) == len(EXPECTED_HEADERS)
        assert not re.search(rb"(?im)^bcc:", raw_head(message.data))
        for part in msg.iter_parts():  # (in a body, a line "Bcc: ..." is only text)
            assert {k.lower() for k in part.keys()} == {"content-type", "content-transfer-encoding"}
        assert msg.defects == [] and all(p.defects == [] for p in msg.walk())
        assert_wire_format(message.data)


# --------------------------------------------------------------------------- ISO-2022-JP


def test_iso_2022_jp_message():
    message = make(charset="iso-2022-jp")
    assert message.headers["Charset"] == "iso-2022-jp"
    assert_wire_format(message.data)
    msg = parse(message)
    assert raw_header(message.data, "Subject").lower().startswith(b"=?iso-2022-jp?b?")
    assert msg["Subject"] == SUBJECT
    assert raw_header(message.data, "From").lower().startswith(b"=?iso-2022-jp?b?")
    assert msg["From"].addresses[0].display_name == "地方行政ニュース編集部"
    text_part, html_part = msg.iter_parts()
    assert text_part.get_content_charset() == "iso-2022-jp"
    assert text_part["Content-Transfer-Encoding"] == "7bit"
    text = text_part.get_content()
    assert "山田 太郎 様" in text
    assert "◆ 人口減少下の公共施設再編、総務省が新たな指針を公表" in text
    assert "お問い合わせ: henshu@news.example.jp / 03-1234-5678（平日9時〜17時）" in text
    assert html_part.get_content_charset() == "iso-2022-jp"
    html = html_part.get_content()
    assert '<meta charset="iso-2022-jp">' in html
    assert "給食費の無償化を中学校まで広げる" in html.replace("<wbr>", "")  # <wbr> between phrases
    # The text part as it travels: 7-bit, with JIS escape sequences, not base64.
    assert b"\x1b$B" in message.data


@pytest.mark.parametrize("where", ["name", "subject"])
@pytest.mark.parametrize("odd", ["①", "🎉", "髙"])
def test_character_outside_jis_x_0208_falls_back_to_utf8_for_that_message(where, odd):
    subject = f"【号外】{odd} 臨時号のお知らせ"
    name = f"山田 太郎{odd}" if where == "name" else "山田 太郎"
    message = make(simple(subject if where == "subject" else SUBJECT), name=name, charset="iso-2022-jp")
    assert message.headers["Charset"] == "utf-8"
    assert_wire_format(message.data)
    msg = parse(message)
    assert msg["Subject"] == (subject if where == "subject" else SUBJECT)
    assert msg["To"].addresses[0].display_name == name
    text, html = bodies(msg)
    assert f"{name} 様" in text and f"{name} 様" in html
    assert all(p.get_content_charset() == "utf-8" for p in msg.iter_parts())
    # The next subscriber of the same variant still gets ISO-2022-JP.
    assert make(simple(), name="鈴木 花子", charset="iso-2022-jp").headers["Charset"] == "iso-2022-jp"


# --------------------------------------------------------------------------- IDN


def test_idn_recipient_is_punycoded_in_to_and_envelope():
    message = make(address="user@例え.jp", name="")
    ascii_domain = "例え.jp".encode("idna").decode("ascii")
    assert ascii_domain.startswith("xn--")
    assert message.recipient == f"user@{ascii_domain}"
    assert raw_header(message.data, "To") == f"user@{ascii_domain}".encode()
    assert parse(message)["To"].addresses[0].domain == ascii_domain
    named = make(address="user@例え.jp", name="例 太郎")
    assert raw_header(named.data, "To").endswith(f"<user@{ascii_domain}>".encode())
    assert_wire_format(named.data)


@pytest.mark.parametrize(("address", "wire"), [
    ("info@faß.de", "info@xn--fa-hia.de"),          # IDNA 2003 (Python's codec) gave fass.de: another domain
    ("info@Straße.DE", "info@xn--strae-oqa.de"),
    ("user@ｅｘａｍｐｌｅ．ｊｐ", "user@example.jp"),  # UTS #46 maps full-width letters and dots
])
def test_idn_domains_follow_idna_2008_with_uts46_non_transitional(address, wire):
    from newsletter.dkim_signer import DkimKey, Signer, generate_key
    from newsletter.sanitize import url_problem

    message = make(address=address, name="")
    assert message.recipient == wire and raw_header(message.data, "To") == wire.encode()
    # One rule wherever a domain is encoded: the DKIM d= and a link's host too.
    domain = address.split("@")[1]
    key = generate_key("ed25519-sha256")
    signed = Signer(domain, [DkimKey("s1", "ed25519-sha256", key)]).sign(b"To: x@example.jp\r\n\r\nbody\r\n")
    assert f"d={wire.split('@')[1]};".encode() in signed.replace(b"\r\n ", b" ")
    if "." in domain:  # (a link's host must have an ASCII dot: url_problem's own rule)
        assert url_problem(f"https://{domain}/page") is None
    assert url_problem("https://☃.example.jp/page") == "bad host name '☃.example.jp'"  # not in IDNA 2008


# --------------------------------------------------------------------------- long subjects

LONG_SUBJECT = (
    "【週刊 地方行政ニュース】第12号 2026年12月1日 特集：人口減少時代の公共施設再編と広域連携、"
    "教育現場の働き方改革の最新動向を詳しく解説します"
)
ENCODED_WORD = re.compile(rb"=\?([^?]+)\?([bBqQ])\?([^?]*)\?=")


@pytest.mark.parametrize("charset", ["utf-8", "iso-2022-jp"])
def test_long_japanese_subject_is_folded_between_whole_characters(charset):
    assert len(LONG_SUBJECT) >= 60
    message = make(simple(LONG_SUBJECT), charset=charset)
    assert message.headers["Charset"] == charset
    assert_wire_format(message.data)
    raw = raw_header(message.data, "Subject")
    lines = (b"Subject: " + raw).split(b"\r\n")
    assert len(lines) > 1
    for line in lines:
        assert len(line) <= 76, line
    words = ENCODED_WORD.findall(raw)
    assert b"".join(ENCODED_WORD.sub(b"", raw).split()) == b""  # nothing but encoded words
    decoded = []
    for word_charset, encoding, payload in words:
        assert word_charset.decode().lower() == charset and encoding.lower() == b"b"
        assert len(b"=?%s?%s?%s?=" % (word_charset, encoding, payload)) <= 75
        data = base64.b64decode(payload)
        if charset == "iso-2022-jp":
            # Each word must leave JIS mode again, or the next word starts mid-sequence.
            assert data.rfind(b"\x1b$B") < data.rfind(b"\x1b(B") or b"\x1b$B" not in data
        decoded.append(data.decode({"utf-8": "utf-8", "iso-2022-jp": "iso2022_jp"}[charset]))
    assert "".join(decoded) == LONG_SUBJECT
    assert parse(message)["Subject"] == LONG_SUBJECT


def test_long_ascii_subject_decodes_right():
    subject = "Weekly Local Government News No. 12: regional cooperation, school reform and disaster planning"
    msg = parse(make(simple(subject)))
    assert msg["Subject"] == subject
