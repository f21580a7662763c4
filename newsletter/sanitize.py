"""HTML that is safe to put in a mail or a web page, and text that is safe in a header.

Article bodies arrive as Markdown or HTML from editors and feeds; both end up as
HTML filtered through an allow-list (nh3, the Rust ``ammonia`` sanitizer): no
scripts, no event handlers, no styles, only http(s)/mailto links.

What may reach XML/HTML at all is decided here, once, for every input path
(article add/edit/import, config): :func:`text_problem` refuses NUL and other
C0/C1 control characters (tab and line feed allowed where a text has lines),
lone surrogates and the XML non-characters U+FFFE/U+FFFF — lxml refuses them
mid-render, naming nothing; :func:`url_problem` holds a link to http(s), a
host name (IDN allowed), no white space or control/format characters, and
at most ``MAX_URL`` characters.
"""

from __future__ import annotations

import html
import re
import unicodedata
from urllib.parse import urlsplit

import idna
import markdown as _markdown
import nh3

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "dl", "dt", "em", "h2", "h3",
    "h4", "h5", "h6", "hr", "i", "li", "ol", "p", "pre", "s", "small", "strong", "sub", "sup",
    "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul", "ruby", "rt", "rp",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
}
URL_SCHEMES = {"http", "https", "mailto"}


def sanitize_html(source: str) -> str:
    return nh3.clean(
        source,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener",
    ).strip()


def markdown_to_html(source: str) -> str:
    return sanitize_html(_markdown.markdown(source, extensions=["sane_lists", "tables"]))


def body_html(body: str, body_format: str) -> str:
    if not body.strip():
        return ""
    if body_format == "html":
        return sanitize_html(body)
    return markdown_to_html(body)


_TAG_RE = re.compile(r"<[^>]+>")
_WS_RE = re.compile(r"[ \t\r\n\u3000]+")


def html_to_plain(source: str) -> str:
    """Tags removed, entities decoded, white space folded: for feed summaries."""
    text = re.sub(r"(?i)<br\s*/?>|</p>", " ", source)
    return _WS_RE.sub(" ", html.unescape(_TAG_RE.sub("", text))).strip()


def ascii_domain(domain: str) -> str:
    """``domain`` as DNS, SMTP and headers carry it: IDNA 2008 with the UTS #46
    mapping, non-transitional — the rule browsers and mail services follow, and the
    one every domain we encode goes through (addresses, the DKIM ``d=``, link hosts).
    ``ß`` stays ``ß`` (``faß.de`` → ``xn--fa-hia.de``; Python's own ``idna`` codec is
    IDNA 2003 and gave ``fass.de``, someone else's domain); full-width letters and
    dots map to ASCII.  An ASCII domain is returned as it is.  Raises
    :class:`UnicodeError` (``idna.IDNAError``) for a name IDNA 2008 does not allow."""
    if domain.isascii():
        return domain
    return idna.encode(domain, uts46=True, transitional=False).decode("ascii")


def ascii_digits(value: str) -> bool:
    """True when ``value`` is one or more ASCII digits: what ``int()`` of a number
    someone else wrote (a header, a form field, a cron field) may be given.
    ``str.isdigit()`` is not that: ``'²'.isdigit()`` is true and ``int('²')`` fails."""
    return value.isascii() and value.isdigit()


def header_safe(value: str) -> str:
    """No CR, LF or other control characters: nothing from data may start a header."""
    return "".join(" " if (ord(c) < 32 or ord(c) == 127) else c for c in value).strip()


MAX_URL = 2000
_NOT_XML = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_NOT_XML_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def text_problem(value: str, *, lines: bool = True) -> str | None:
    """Why ``value`` cannot go into a mail or a page, or None.  ``lines``: tab and line
    feed are allowed (bodies, summaries); else they are refused too."""
    m = (_NOT_XML if lines else _NOT_XML_LINE).search(value)
    if m is None:
        return None
    ch = m.group()
    what = "a control character"
    if ch == "\x00":
        what = "a NUL character"
    elif "\ud800" <= ch <= "\udfff":
        what = "a lone surrogate"
    elif ch in "\ufffe\uffff":
        what = "a non-character"
    return f"has {what} (U+{ord(ch):04X}) at character {m.start() + 1}"


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a link a reader can follow, or None."""
    if not url:
        return "missing url"
    if len(url) > MAX_URL:
        return f"longer than {MAX_URL} characters"
    bad = next((c for c in url if c.isspace() or c in "\ufffe\uffff"
                or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")), None)
    if bad is not None:
        return f"has white space or a control character (U+{ord(bad):04X})"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        return f"malformed ({exc})"
    if parts.scheme not in ("http", "https") or not host or "." not in host.strip("."):
        return "expected http:// or https:// with a host name"
    try:
        ascii_domain(host)
    except UnicodeError:
        return f"bad host name '{host[:80]}'"
    return None
