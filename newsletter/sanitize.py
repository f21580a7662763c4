"""HTML that is safe to put in a mail or a web page, and text that is safe in a header.

Article bodies arrive as Markdown or HTML from editors and feeds; both end up as
HTML filtered through an allow-list (nh3, the Rust ``ammonia`` sanitizer): no
scripts, no event handlers, no styles, only http(s)/mailto links.
"""

from __future__ import annotations

import html
import re

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


def header_safe(value: str) -> str:
    """No CR, LF or other control characters: nothing from data may start a header."""
    return "".join(" " if (ord(c) < 32 or ord(c) == 127) else c for c in value).strip()
