"""One recipient's message: fill the personal parts into a rendered
variant and build the MIME bytes.

The personal parts go where the variant's own placeholders are
(``rendered.placeholders``, see :mod:`newsletter.links`), by the rule of
:func:`links.split`; the reader's URLs and greeting come from
:mod:`newsletter.links`.  Nothing else in the text is ever replaced.

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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from .. import links
from ..interfaces import MessageContent, OutgoingMessage
from ..japanese import map_for_jis, unmappable
from ..sanitize import ascii_domain, header_safe
from .render import Rendered

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
    tracking: str = "off"  # the publication's tracking mode: what the reader part of tracked links holds


@dataclass(frozen=True)
class Recipient:
    delivery_id: int
    subscriber_id: int
    email: str
    name: str


def ascii_address(address: str) -> str:
    """IDN domains in their ASCII (punycode) form, as headers and SMTP need them
    (:func:`sanitize.ascii_domain`: IDNA 2008, UTS #46 non-transitional)."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{ascii_domain(domain)}"


def encoded_words(text: str, charset: str, header_name: str) -> list[str]:
    """``text`` as RFC 2047 "B" encoded words, each holding whole characters (for
    ISO-2022-JP each word is a complete escape sequence ending in ASCII, as RFC 1468
    asks) and each line at most 76 columns: the first shares its line with
    ``Header-Name: ``.  Written here rather than with ``email.header.Header``, which
    costs more than the rest of a message's headers together (this runs for every
    recipient's To)."""
    codec = PYTHON_CODECS[charset]
    prefix = f"=?{charset.upper()}?B?"
    room = 76 - len(header_name) - 2 - len(prefix) - 2  # base64 characters on the first line
    words: list[str] = []
    chunk = ""
    for ch in text:
        candidate = chunk + ch
        if chunk and 4 * -(-len(candidate.encode(codec)) // 3) > room:
            words.append(prefix + base64.b64encode(chunk.encode(codec)).decode("ascii") + "?=")
            chunk = ch
            room = 76 - 1 - len(prefix) - 2  # later lines start with one space
        else:
            chunk = candidate
    if chunk:
        words.append(prefix + base64.b64encode(chunk.encode(codec)).decode("ascii") + "?=")
    return words


def encode_text(value: str, charset: str, header_name: str) -> str:
    value = header_safe(value)
    if value.isascii() and len(value) + len(header_name) + 2 <= 78:
        return value
    return f"{CRLF} ".join(encoded_words(value, charset, header_name))


_SPECIALS = set('()<>[]:;@\\,."')


def encode_address(name: str, address: str, charset: str, header_name: str) -> str:
    address = ascii_address(address)
    name = header_safe(name)
    if not name:
        return address
    if not name.isascii():
        words = encoded_words(name, charset, header_name)
        last = len(words[-1]) + (len(header_name) + 2 if len(words) == 1 else 1)
        # The address goes on the last word's line if it fits in 76 columns, else on its own.
        joiner = " " if last + 3 + len(address) <= 76 else f"{CRLF} "
        return f"{CRLF} ".join(words) + f"{joiner}<{address}>"
    if any(c in _SPECIALS for c in name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def _base64_lines(data: bytes) -> bytes:
    """Base64 in 76-character lines joined by CRLF (no final line break).
    ``encodebytes`` makes the lines in C; slicing them in Python cost more than the encoding."""
    return base64.encodebytes(data).rstrip(b"\n").replace(b"\n", b"\r\n")


def _fold_inside_tags(line: bytes, limit: int) -> list[bytes]:
    """Break an over-long HTML line at spaces *inside* tags (between attributes),
    where a line break changes nothing; text between tags is never touched."""
    out: list[bytes] = []
    while len(line) > limit:
        in_tag = False
        last_safe = -1
        for i in range(min(len(line), limit)):
            c = line[i]
            if c == 0x3C:  # <
                in_tag = True
            elif c == 0x3E:  # >
                in_tag = False
            elif c == 0x20 and in_tag:
                last_safe = i
        cut = last_safe
        if cut <= 0:
            break
        out.append(line[:cut])
        line = line[cut + 1 :]
    out.append(line)
    return out


MAX_LINE = 998
_PERSONAL_MARGIN = 300  # room for a name and two URLs substituted into a line


@dataclass(frozen=True)
class _Part:
    """One body part of a variant: its MIME header and its bytes, split where the
    personal values go (segments alternate: bytes, placeholder, bytes, ...)."""

    header: bytes
    segments: tuple[bytes | str, ...]
    encoding: str  # "base64" | "8bit" | "7bit"
    escape: bool


def _split(template: str, codec: str, placeholders: Sequence[str]) -> tuple[bytes | str, ...]:
    pieces = links.split(template, placeholders)
    return tuple(piece.encode(codec) if i % 2 == 0 else piece for i, piece in enumerate(pieces))


def _prepare_part(content_type: str, charset: str, text: str, *, eight_bit: bool, html_part: bool,
                  placeholders: Sequence[str]) -> _Part:
    codec = PYTHON_CODECS[charset]
    body = text.replace("\r\n", "\n").replace("\n", "\r\n")
    lines = body.encode(codec).split(b"\r\n")
    longest = max((len(line) for line in lines), default=0)
    if html_part and longest > MAX_LINE - _PERSONAL_MARGIN:
        folded = [piece for line in lines for piece in _fold_inside_tags(line, MAX_LINE - _PERSONAL_MARGIN)]
        longest = max(len(line) for line in folded)
        if longest <= MAX_LINE - _PERSONAL_MARGIN:
            body = b"\r\n".join(folded).decode(codec)
    fits = longest <= MAX_LINE - _PERSONAL_MARGIN
    if html_part and "\n." in body:
        # CSS in the <style> block puts ".class {" at the start of lines, and SMTP
        # would have to dot-stuff every copy of every message; a space in front
        # means the same in HTML and CSS, and is done once per variant.
        body = body.replace("\r\n.", "\r\n .")
    if charset == "iso-2022-jp" and fits:
        # ISO-2022-JP is 7-bit by design; clients (and old phones) expect it unencoded.
        encoding = "7bit"
    elif eight_bit and fits:
        encoding = "8bit"
    else:
        encoding = "base64"
    header = (f"Content-Type: {content_type}; charset=\"{charset.upper()}\"{CRLF}"
              f"Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}").encode("ascii")
    return _Part(header, _split(body, codec, placeholders), encoding, html_part)


def _render_part(part: _Part, values: dict[str, tuple[bytes, bytes]]) -> bytes:
    """The part with this recipient's values in (values: placeholder → (plain, escaped))."""
    body = b"".join(seg if isinstance(seg, bytes) else values[seg][1 if part.escape else 0] for seg in part.segments)
    if part.encoding == "base64":
        body = _base64_lines(body)
    return part.header + body


@dataclass(frozen=True)
class _Prepared:
    """Everything about a variant that does not depend on the recipient."""

    charset: str
    codec: str
    fixed_headers_before: bytes  # From
    fixed_headers_after: bytes   # Subject ... MIME-Version, minus the personal ones
    parts: tuple[_Part, ...]
    boundary: str
    content: MessageContent
    variant: str


@lru_cache(maxsize=128)
def _prepare(rendered: Rendered, sending: Sending, charset: str, eight_bit: bool) -> _Prepared:
    html_body = rendered.html
    if html_body is not None and charset != "utf-8":
        html_body = html_body.replace('<meta charset="utf-8">', f'<meta charset="{charset}">', 1)
    from_name, title = _for_charset(sending.from_name, charset), _for_charset(sending.publication_title, charset)
    before = f"From: {encode_address(from_name, sending.from_address, charset, 'From')}{CRLF}"
    after = [f"Subject: {encode_text(rendered.subject, charset, 'Subject')}"]
    if sending.reply_to:
        after.append(f"Reply-To: {ascii_address(sending.reply_to)}")
    after += [
        f"List-Id: {encode_text(title, charset, 'List-Id')} "
        f"<{sending.publication_slug}.{sending.domain}>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "Auto-Submitted: auto-generated",
        "Precedence: bulk",
        "MIME-Version: 1.0",
    ]
    marks = (*rendered.placeholders.all(), rendered.placeholders.reader)
    parts = [_prepare_part("text/plain", charset, rendered.text, eight_bit=eight_bit, html_part=False,
                           placeholders=marks)]
    if html_body is not None:
        parts.append(_prepare_part("text/html", charset, html_body, eight_bit=eight_bit, html_part=True,
                                   placeholders=marks))
    return _Prepared(
        charset=charset,
        codec=PYTHON_CODECS[charset],
        fixed_headers_before=before.encode("ascii"),
        fixed_headers_after=(CRLF.join(after) + CRLF).encode("ascii"),
        parts=tuple(parts),
        boundary=f"=_nl_{secrets.token_hex(12)}",
        content=MessageContent(
            subject=rendered.subject,
            text=rendered.text,
            html=html_body,
            from_name=sending.from_name,
            from_address=sending.from_address,
            reply_to=sending.reply_to,
            headers={
                "List-Id": f"{sending.publication_title} <{sending.publication_slug}.{sending.domain}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "Auto-Submitted": "auto-generated",
                "Precedence": "bulk",
            },
        ),
        variant=f"{sending.edition_id}:{secrets.token_hex(6)}:{charset}",
    )


greeting = links.greeting


def personal_urls(sending: Sending, subscriber_id: int) -> tuple[str, str]:
    """(unsubscribe, preferences) URL of one reader."""
    return (links.unsubscribe_url(sending.base_url, sending.key, subscriber_id),
            links.preferences_url(sending.base_url, sending.key, subscriber_id))


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


@lru_cache(maxsize=4)
def _date_header(epoch: int, timezone: str) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, ZoneInfo(timezone)))


def compose(
    rendered: Rendered,
    recipient: Recipient,
    sending: Sending,
    *,
    charset: str = "utf-8",
    now: datetime,
    msgid: str | None = None,
    eight_bit: bool = False,
) -> OutgoingMessage:
    """The complete message for one recipient (CRLF line endings).

    Everything but the personal parts is prepared once per variant (cached):
    per recipient this is substitution into pre-encoded bytes, the To,
    Message-ID and List-Unsubscribe headers, and base64 where the part needs it.
    ``eight_bit`` allows 8-bit bodies (the server announced 8BITMIME).
    """
    name = recipient.name
    greet = greeting(name, rendered.language)
    unsubscribe, preferences = personal_urls(sending, recipient.subscriber_id)
    if charset == "iso-2022-jp":
        # Only what is the same character at another code point (ﾀﾛｳ → タロウ, NBSP):
        # a person's name is never rewritten (① or 髙 in it → this message goes as UTF-8).
        name, _ = map_for_jis(recipient.name, names=True)
        greet = greeting(name, rendered.language)
    if charset != "utf-8" and not (
        _fits(charset, greet, name) and _variant_fits(rendered, sending, charset)
    ):
        misfits = "".join(unmappable(greet)) if charset == "iso-2022-jp" else ""
        log.warning("delivery %s: %s does not fit %s; sending this message as UTF-8", recipient.delivery_id,
                    f"the name ({misfits})" if misfits else "the edition's text (see 'edition check')", charset)
        charset = "utf-8"
        name = recipient.name
        greet = greeting(name, rendered.language)
    prepared = _prepare(rendered, sending, charset, eight_bit)
    codec = prepared.codec
    reader = links.reader_token(sending.key, sending.tracking, recipient.delivery_id, int(now.timestamp()))
    personal = rendered.placeholders.values(greet, unsubscribe, preferences, reader)
    values = {p: (v.encode(codec), html.escape(v).encode(codec)) for p, v in personal.items()}

    msgid = msgid or message_id(sending, recipient.delivery_id)
    list_unsubscribe = links.list_unsubscribe(unsubscribe, sending.unsubscribe_mailto)
    own_headers = (
        f"To: {encode_address(name, recipient.email, charset, 'To')}{CRLF}"
        f"Date: {_date_header(int(now.timestamp()), sending.timezone)}{CRLF}"
        f"Message-ID: {msgid}{CRLF}"
        f"List-Unsubscribe: {list_unsubscribe}{CRLF}"
    ).encode("ascii")
    head = prepared.fixed_headers_before + own_headers + prepared.fixed_headers_after
    return _Composed(
        delivery_id=recipient.delivery_id,
        sender=ascii_address(sending.envelope_from),
        recipient=ascii_address(recipient.email),
        message_id=msgid,
        data=None,  # built on first use: _Composed
        headers={"Message-ID": msgid, "List-Unsubscribe": list_unsubscribe.replace(CRLF, ""), "Charset": charset},
        variant=prepared.variant,
        content=prepared.content,
        to_name=header_safe(name),
        personal=personal,
    )._build_from(head, prepared, values)


def _mime(head: bytes, prepared: _Prepared, values: dict[str, tuple[bytes, bytes]]) -> bytes:
    if len(prepared.parts) == 1:
        return head + _render_part(prepared.parts[0], values) + b"\r\n"
    b = prepared.boundary.encode("ascii")
    return b"".join([
        head, b'Content-Type: multipart/alternative; boundary="', b, b'"\r\n\r\n',
        b"This is a multi-part message in MIME format.\r\n",
        b"--", b, b"\r\n", _render_part(prepared.parts[0], values), b"\r\n",
        b"--", b, b"\r\n", _render_part(prepared.parts[1], values), b"\r\n",
        b"--", b, b"--\r\n",
    ])


class _Composed(OutgoingMessage):
    """An :class:`OutgoingMessage` whose MIME bytes are built when a provider first
    reads ``data``, not when it is composed.  Providers that build the message
    themselves from ``content`` and ``personal`` (Postmark, SendGrid, Mailgun's
    batch mode) never read it: the base64 of both parts was a quarter of an HTTP
    worker's CPU (bench/scale.py, py-spy).  Everything the bytes depend on is fixed
    at compose time, so when they are built changes nothing in them.

    ``data`` is a property with a setter: the frozen dataclass's ``__init__`` (and
    ``dataclasses.replace``, as the DKIM signer does) stores through it."""

    __slots__ = ("_data", "_parts")

    @property  # type: ignore[override]
    def data(self) -> bytes:
        data = self._data
        if data is None:
            data = _mime(*self._parts)
            object.__setattr__(self, "_data", data)
            object.__setattr__(self, "_parts", None)
        return data

    @data.setter
    def data(self, value: bytes | None) -> None:
        object.__setattr__(self, "_data", value)
        object.__setattr__(self, "_parts", None)

    def _build_from(self, head: bytes, prepared: _Prepared, values: dict[str, tuple[bytes, bytes]]) -> _Composed:
        object.__setattr__(self, "_parts", (head, prepared, values))
        return self


@lru_cache(maxsize=128)
def _variant_fits(rendered: Rendered, sending: Sending, charset: str) -> bool:
    return _fits(charset, rendered.subject, rendered.text, rendered.html or "",
                 _for_charset(sending.from_name, charset), _for_charset(sending.publication_title, charset))


def _for_charset(text: str, charset: str) -> str:
    """The publisher's own names (From, List-Id) get the same ISO-2022-JP mapping as
    the edition's text (render.py), so a ① in the title does not push every
    message to UTF-8; a reader's name is treated more carefully (see compose)."""
    return map_for_jis(text)[0] if charset == "iso-2022-jp" else text
