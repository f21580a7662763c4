"""One recipient's message: substitute the personal parts into a rendered
variant and build the MIME bytes.

We write the headers ourselves instead of serialising an ``EmailMessage``:
- with ``policy.SMTP`` the email package turns a List-Unsubscribe URL longer
  than 78 characters into RFC 2047 encoded words, which breaks one-click
  unsubscribe (RFC 8058 needs the URL as it is);
- the Python on these machines predates the fix for CVE-2024-6923 (header
  injection through folded values), so nothing from data reaches a header
  without :func:`header_safe`;
- it chooses quoted-printable for Japanese HTML (about 9 bytes a character).
Non-ASCII header text is encoded with :class:`email.header.Header`, which folds
between whole characters (never inside a multibyte sequence); its default line
length is 78, which makes 76-character encoded words: RFC 2047 allows 75 (and
76 columns per line), hence ``maxlinelen=76``.
"""

from __future__ import annotations

import base64
import html
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

from ..interfaces import OutgoingMessage
from ..sanitize import header_safe
from ..tokens import make_token
from .render import GREETING, PREFERENCES_URL, UNSUBSCRIBE_URL, Rendered

log = logging.getLogger(__name__)
CRLF = "\r\n"
PYTHON_CODECS = {"utf-8": "utf-8", "iso-2022-jp": "iso2022_jp"}


@dataclass(frozen=True)
class Sending:
    """What every message of one edition shares (from config and the edition row)."""

    edition_id: int
    edition_stamp: int  # the edition's creation time (epoch seconds): keeps Message-IDs unique across databases
    publication_slug: str
    publication_title: str
    timezone: str
    from_name: str
    from_address: str
    reply_to: str | None
    envelope_from: str
    base_url: str
    domain: str
    unsubscribe_mailto: str | None
    key: bytes


@dataclass(frozen=True)
class Recipient:
    delivery_id: int
    subscriber_id: int
    email: str
    name: str


def ascii_address(address: str) -> str:
    """IDN domains in their ASCII (punycode) form, as headers and SMTP need them."""
    local, _, domain = address.rpartition("@")
    try:
        domain.encode("ascii")
    except UnicodeEncodeError:
        domain = domain.encode("idna").decode("ascii")
    return f"{local}@{domain}"


def encode_text(value: str, charset: str, header_name: str) -> str:
    value = header_safe(value)
    try:
        value.encode("ascii")
        if len(value) + len(header_name) + 2 <= 78:
            return value
    except UnicodeEncodeError:
        pass
    return Header(value, charset, maxlinelen=76, header_name=header_name).encode(linesep=CRLF)


_SPECIALS = set('()<>[]:;@\\,."')


def encode_address(name: str, address: str, charset: str, header_name: str) -> str:
    address = ascii_address(address)
    name = header_safe(name)
    if not name:
        return address
    try:
        name.encode("ascii")
    except UnicodeEncodeError:
        return f"{Header(name, charset, maxlinelen=76, header_name=header_name).encode(linesep=CRLF)} <{address}>"
    if any(c in _SPECIALS for c in name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def _base64_body(data: bytes) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return CRLF.join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


def _part(content_type: str, charset: str, text: str) -> str:
    codec = PYTHON_CODECS[charset]
    data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode(codec)
    if charset == "iso-2022-jp" and all(len(line) <= 998 for line in data.split(b"\r\n")):
        # ISO-2022-JP is 7-bit by design; clients (and old phones) expect it unencoded.
        return (
            f"Content-Type: {content_type}; charset=\"ISO-2022-JP\"{CRLF}"
            f"Content-Transfer-Encoding: 7bit{CRLF}{CRLF}" + data.decode("ascii")
        )
    return (
        f"Content-Type: {content_type}; charset=\"{charset.upper()}\"{CRLF}"
        f"Content-Transfer-Encoding: base64{CRLF}{CRLF}" + _base64_body(data)
    )


def greeting(name: str, language: str) -> str:
    name = header_safe(name)
    if language == "en":
        return f"Dear {name}," if name else "Dear reader,"
    return f"{name} 様" if name else "読者の皆さま"


def personal_urls(sending: Sending, subscriber_id: int) -> tuple[str, str]:
    unsubscribe = f"{sending.base_url}/unsubscribe/{make_token(sending.key, 'unsubscribe', subscriber_id)}"
    preferences = f"{sending.base_url}/preferences/{make_token(sending.key, 'preferences', subscriber_id)}"
    return unsubscribe, preferences


def substitute(template: str, greeting_text: str, unsubscribe: str, preferences: str, *, escape: bool) -> str:
    if escape:
        greeting_text = html.escape(greeting_text)
        unsubscribe, preferences = html.escape(unsubscribe), html.escape(preferences)
    return (
        template.replace(GREETING, greeting_text)
        .replace(UNSUBSCRIBE_URL, unsubscribe)
        .replace(PREFERENCES_URL, preferences)
    )


def _fits(charset: str, *texts: str) -> bool:
    codec = PYTHON_CODECS[charset]
    try:
        for t in texts:
            t.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def message_id(sending: Sending, delivery_id: int) -> str:
    return f"<nl.{sending.edition_stamp}.{sending.edition_id}.{delivery_id}@{sending.domain}>"


def compose(
    rendered: Rendered,
    recipient: Recipient,
    sending: Sending,
    *,
    charset: str = "utf-8",
    now: datetime,
    msgid: str | None = None,
) -> OutgoingMessage:
    """The complete message for one recipient (CRLF line endings)."""
    greet = greeting(recipient.name, rendered.language)
    unsubscribe, preferences = personal_urls(sending, recipient.subscriber_id)
    text = substitute(rendered.text, greet, unsubscribe, preferences, escape=False)
    html_body = substitute(rendered.html, greet, unsubscribe, preferences, escape=True) if rendered.html else None

    if charset != "utf-8" and not _fits(charset, rendered.subject, text, html_body or "", recipient.name,
                                        sending.from_name, sending.publication_title):
        log.warning("delivery %s: text does not fit %s; sending this message as UTF-8", recipient.delivery_id, charset)
        charset = "utf-8"
    if html_body is not None and charset != "utf-8":
        html_body = html_body.replace('<meta charset="utf-8">', f'<meta charset="{charset}">', 1)

    msgid = msgid or message_id(sending, recipient.delivery_id)
    list_unsubscribe = f"<{unsubscribe}>"
    if sending.unsubscribe_mailto:
        subject = quote(f"unsubscribe {make_token(sending.key, 'unsubscribe', recipient.subscriber_id)}")
        # Folding between the two list items is allowed (RFC 2369); the URL itself is never folded.
        list_unsubscribe += f",{CRLF} <mailto:{sending.unsubscribe_mailto}?subject={subject}>"
    headers = [
        ("From", encode_address(sending.from_name, sending.from_address, charset, "From")),
        ("To", encode_address(recipient.name, recipient.email, charset, "To")),
        ("Subject", encode_text(rendered.subject, charset, "Subject")),
        ("Date", format_datetime(now.astimezone(ZoneInfo(sending.timezone)))),
        ("Message-ID", msgid),
    ]
    if sending.reply_to:
        headers.append(("Reply-To", ascii_address(sending.reply_to)))
    headers += [
        ("List-Id", f"{encode_text(sending.publication_title, charset, 'List-Id')} "
                    f"<{sending.publication_slug}.{sending.domain}>"),
        ("List-Unsubscribe", list_unsubscribe),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("Auto-Submitted", "auto-generated"),
        ("Precedence", "bulk"),
        ("MIME-Version", "1.0"),
    ]
    head = CRLF.join(f"{k}: {v}" for k, v in headers)
    if html_body is None:
        body = _part("text/plain", charset, text)
        message = f"{head}{CRLF}{body}{CRLF}"
    else:
        boundary = f"=_nl_{secrets.token_hex(12)}"
        message = (
            f"{head}{CRLF}Content-Type: multipart/alternative; boundary=\"{boundary}\"{CRLF}{CRLF}"
            f"This is a multi-part message in MIME format.{CRLF}"
            f"--{boundary}{CRLF}{_part('text/plain', charset, text)}{CRLF}"
            f"--{boundary}{CRLF}{_part('text/html', charset, html_body)}{CRLF}"
            f"--{boundary}--{CRLF}"
        )
    return OutgoingMessage(
        delivery_id=recipient.delivery_id,
        sender=ascii_address(sending.envelope_from),
        recipient=ascii_address(recipient.email),
        message_id=msgid,
        data=message.encode("ascii"),
        headers={"Subject": rendered.subject, "List-Unsubscribe": f"<{unsubscribe}>", "Charset": charset},
    )
