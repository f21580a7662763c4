"""One variant of an edition → subject, HTML and plain text, with placeholders
for the personal parts.

The placeholders are made afresh for every render (:class:`links.Placeholders`,
with a random nonce) and travel on the result: text from articles, feeds or
config can never contain one, so personal data goes only where the template
put ``greeting`` and ``links``.  The subject may not hold one (it is the same
for every reader of a variant: an :class:`InputError`).

jinja2 renders the template; premailer inlines the CSS (``allow_network=False``:
by default it would fetch linked stylesheets with no timeout); html2text makes
the plain-text alternative from the same HTML.  This runs once per variant,
never per recipient: :mod:`.compose` fills the placeholders in.

With ``tracking`` (the publication's ``tracking`` is not "off"),
:func:`rewrite_links` is one step between jinja2 and the rest: the frozen
content's links (:func:`links.tracked_links`) become tracked links, once for
the HTML part (plus the open pixel) and once for the text part; the footer's
own links are never among them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cssutils
import html2text
import jinja2
import lxml.html
from premailer import Premailer

from .. import japanese
from ..config import template_search_path
from ..errors import InputError
from ..links import Placeholders, Tracking, click_url, open_url, tracked_links, variant_code
from .assemble import sections

# cssutils logs every property it does not know (-webkit-*, mso-*), which mail CSS
# is full of.  Premailer's own logging options add a handler on *every* instance,
# so the level is set here, once per process.
cssutils.log.setLevel(logging.CRITICAL)

WEEKDAYS_JA = "月火水木金土日"
# Not strftime's %A/%B: those follow the process locale (a server under ja_JP.UTF-8
# would write "火曜日, 12月 1, 2026" into an English mail).
WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS_EN = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
             "October", "November", "December")


def date_texts(when: datetime, tz: str, language: str) -> tuple[str, str]:
    """(long, short) date in the publication's time zone: 2026年12月1日(火), 2026年12月1日."""
    local = when.astimezone(ZoneInfo(tz))
    if language == "en":
        short = f"{MONTHS_EN[local.month - 1]} {local.day}, {local.year}"
        return f"{WEEKDAYS_EN[local.weekday()]}, {short}", short
    short = f"{local.year}年{local.month}月{local.day}日"
    return f"{short}({WEEKDAYS_JA[local.weekday()]})", short


@lru_cache(maxsize=8)
def environment(templates_dir: str) -> jinja2.Environment:
    return jinja2.Environment(
        # Per file: the project's folder, then the packaged defaults (config.template_search_path).
        loader=jinja2.FileSystemLoader(template_search_path(templates_dir)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )


@dataclass(frozen=True)
class Rendered:
    """A variant, ready for :func:`compose.compose`; placeholders still in it."""

    subject: str
    html: str | None  # None for a text-only variant
    text: str
    article_ids: tuple[int, ...]
    language: str
    # What was rewritten to fit the charset (ISO-2022-JP): ① → (1) ×3 ...
    replacements: tuple[japanese.Replacement, ...] = ()
    # This render's markers for the personal parts (see the module docstring).
    placeholders: Placeholders = field(default_factory=Placeholders.new)


def context(content: Mapping[str, Any], fields: Sequence[str], when: datetime,
            placeholders: Placeholders | None = None) -> dict[str, Any]:
    """The template's variables; ``greeting`` and ``links`` hold ``placeholders``
    (new ones if not given)."""
    ph = placeholders or Placeholders.new()
    long_date, short_date = date_texts(when, content["timezone"], content["language"])
    secs = sections(content, fields)
    titles = [a["title"] for s in secs for a in s["articles"]]
    return {
        "language": content["language"],
        "site": content["site"],
        "sender": content["sender"],
        "publication": content["publication"],
        "edition": {"number": content["number"], "date_text": long_date, "short_date": short_date},
        "preheader": " / ".join(titles)[:140],
        "greeting": ph.greeting,
        "sections": secs,
        "full_text": content["full_text"],
        "links": {"unsubscribe": ph.unsubscribe, "preferences": ph.preferences, "archive": ""},
    }


def _html_for_text(source: str) -> str:
    """Prepare the HTML for html2text, in the way Japanese mail magazines are laid
    out as text: no hidden preheader, headings marked with ■ and ◆ instead of
    Markdown's #, field labels in 【】, and each link as its title followed by the
    URL on a line of its own (the "read more" links only repeat the title's URL)."""
    doc = lxml.html.document_fromstring(source)
    for cls in ("preheader", "read-more"):
        for el in doc.find_class(cls):
            el.drop_tree()
    for el in doc.find_class("label"):
        el.text, el.tail = f"【{el.text_content().strip()}】", ""
    # h4-h6 come from full-text article bodies; html2text would make them "####".
    for tag, mark in (("h1", ""), ("h2", "■ "), ("h3", "◆ "), ("h4", ""), ("h5", ""), ("h6", "")):
        for el in doc.iter(tag):
            el.tag = "p"
            el.text = mark + (el.text or "")
    for a in list(doc.iter("a")):
        href = (a.get("href") or "").strip()
        label = a.text_content().strip()
        if a.tail and not a.tail.replace("|", "").replace("\xa0", "").strip():
            a.tail = None  # the " | " between footer links
        if not href or href == label:
            continue
        a.clear(keep_tail=True)  # clear() drops the tail too: "…の資料を参照。" lost "を参照。"
        a.text = label
        first, second = lxml.html.Element("br"), lxml.html.Element("br")
        first.tail = href
        a.append(first)
        a.append(second)
    return lxml.html.tostring(doc, encoding="unicode")


# Whitespace html2text may collapse: all of Python's \s except U+3000.
_COLLAPSE = re.compile(r"[^\S\u3000]+")


class _PlainText(html2text.HTML2Text):
    """html2text without Markdown escapes: a summary line "1. 概要" or "- 項目" would
    otherwise reach the reader as "1\\. 概要" / "\\- 項目".  (``entity_char=True`` is
    the only switch html2text has that skips ``escape_md_section``.)

    And without eating the ideographic space: html2text collapses text with
    ``re.sub(r"\\s+", " ")``, and for ``str`` patterns ``\\s`` matches U+3000, so
    "素案を公表\\u3000県の…" lost its full-width space.  U+3000 is a character of
    Japanese text (a separator in titles, the paragraph indent), not layout."""

    def handle_data(self, data: str, entity_char: bool = False) -> None:
        super().handle_data(data, entity_char=True)

    def o(self, data: str, puredata: bool = False, force: bool | str = False) -> None:
        if puredata and not self.pre:
            # What html2text.o() does for puredata, with U+3000 kept.
            data = _COLLAPSE.sub(" ", data)
            if data and data[0] == " ":
                self.space = True
                data = data[1:]
        super().o(data, False, force)


def html_to_text(source: str) -> str:
    conv = _PlainText()
    conv.body_width = 0  # our own wrapper does the wrapping (display-width aware)
    conv.ignore_links = True  # links were written out above
    conv.ignore_images = True
    conv.ignore_emphasis = True  # "**" around Japanese text reads as noise
    conv.ignore_tables = True  # layout tables, not data
    conv.unicode_snob = True
    conv.single_line_break = False
    text = conv.handle(_html_for_text(source))
    lines = [line.rstrip() for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    return "\n".join(out).strip() + "\n"


def inline_css(source: str) -> str:
    return Premailer(
        source,
        allow_network=False,
        keep_style_tags=True,  # the @media rules for phones cannot be inlined
        strip_important=False,
        disable_validation=True,
    ).transform()


_HREF = re.compile(r'(<a\b[^>]*?\shref=")([^"]*)(")', re.IGNORECASE)


def rewrite_links(source: str, content: Mapping[str, Any], fields: Sequence[str], part: str,
                  tracking: Tracking, placeholders: Placeholders) -> str:
    """``source`` with every link of the frozen content (articles, their bodies,
    the lead and afterword texts) pointing at its tracked URL for this variant
    and ``part`` ("h" or "t"); the reader's part is ``placeholders.reader``.  The
    HTML part also gets the open pixel at the end of its body."""
    import html as html_lib

    index = {url: i for i, (url, _article) in enumerate(tracked_links(content))}
    code = variant_code(content, fields, part)

    def swap(m: re.Match) -> str:
        i = index.get(html_lib.unescape(m.group(2)).strip())
        if i is None:
            return m.group(0)
        return m.group(1) + html_lib.escape(click_url(tracking, i, code, placeholders.reader)) + m.group(3)

    out = _HREF.sub(swap, source)
    if part == "h":
        pixel = (f'<img src="{html_lib.escape(open_url(tracking, code, placeholders.reader))}" width="1" '
                 'height="1" alt="" style="display:block;border:0;width:1px;height:1px;">')
        at = out.lower().rfind("</body>")
        out = out[:at] + pixel + out[at:] if at >= 0 else out + pixel
    return out


def render_variant(
    content: Mapping[str, Any],
    fields: Sequence[str],
    templates_dir: Path,
    *,
    when: datetime,
    html: bool = True,
    charset: str = "utf-8",
    width: int | None = None,
    tracking: Tracking | None = None,
) -> Rendered:
    """Render the digest for one set of fields. ``html=False`` skips premailer.

    ``charset`` is the one the variant will be sent in (a variant is rendered
    once per charset: text that must change to fit it changes here, once).
    For ISO-2022-JP the subject, text and HTML go through
    :func:`japanese.map_for_jis` (① → (1) ...); what was replaced is recorded
    on the result, what cannot be mapped is left for compose's UTF-8 fallback.

    The text part is wrapped to ``width`` display columns (default: the
    content's ``text_width``, else 70) with kinsoku (:func:`japanese.wrap`),
    after the mapping, which can change widths (ｱ → ア, ① → (1))."""
    env = environment(str(templates_dir))
    placeholders = Placeholders.new()
    ctx = context(content, fields, when, placeholders)
    try:
        subject = env.get_template("subject.txt.j2").render(ctx).strip()
        raw_html = env.get_template("digest.html.j2").render(ctx)
        try:
            text_template = env.get_template("digest.txt.j2")
        except jinja2.TemplateNotFound:
            text_template = None
        text_source = raw_html
        if tracking is not None:
            text_source = rewrite_links(raw_html, content, fields, "t", tracking, placeholders)
            raw_html = rewrite_links(raw_html, content, fields, "h", tracking, placeholders)
        text = text_template.render(ctx) if text_template else html_to_text(text_source)
    except jinja2.TemplateNotFound as exc:
        raise InputError(f"{templates_dir}: template '{exc.name}' not found") from None
    except jinja2.TemplateError as exc:
        raise InputError(f"{templates_dir}: template error: {exc}") from None
    subject = " ".join(subject.split())
    if any(p in subject for p in placeholders.all()):
        raise InputError(f"{templates_dir}/subject.txt.j2: the subject is the same for every reader of a "
                         "variant and cannot hold the greeting or a personal link")
    # premailer writes &nbsp; as U+00A0, which ISO-2022-JP cannot carry: every
    # iso-2022-jp message would fall back to UTF-8.  The entity means the same.
    body = inline_css(raw_html).replace("\xa0", "&nbsp;") if html else None
    replacements: tuple[japanese.Replacement, ...] = ()
    if charset == "iso-2022-jp":
        subject, in_subject = japanese.map_for_jis(subject)
        text, in_text = japanese.map_for_jis(text)
        in_html: tuple[japanese.Replacement, ...] = ()
        if body is not None:
            body, in_html = japanese.map_for_jis(body)
        # The HTML repeats the text's words (and more: the preheader): count a
        # character once per part the reader sees it in, the larger count.
        per_part = {(r.original, r.replacement): r.count for r in in_text}
        for r in in_html:
            key = (r.original, r.replacement)
            per_part[key] = max(per_part.get(key, 0), r.count)
        replacements = japanese.merge_replacements(
            in_subject, (japanese.Replacement(o, n, c) for (o, n), c in per_part.items()))
    width = width or content.get("text_width") or japanese.DEFAULT_WIDTH
    text = japanese.wrap(text, width, ambiguous=1 if content["language"] == "en" else 2)
    return Rendered(
        subject=subject,
        html=body,
        text=text,
        article_ids=tuple(a["id"] for s in ctx["sections"] for a in s["articles"]),
        language=content["language"],
        replacements=replacements,
        placeholders=placeholders,
    )
