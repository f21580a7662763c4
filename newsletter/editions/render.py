"""One variant of an edition → subject, HTML and plain text, with placeholders
for the personal parts.

The placeholders are made afresh for every render (:class:`links.Placeholders`,
with a random nonce) and travel on the result: text from articles, feeds or
config can never contain one, so personal data goes only where the template
put ``greeting`` and ``links``.  The subject may not hold one (it is the same
for every reader of a variant: an :class:`InputError`).

jinja2 renders the templates; premailer inlines the CSS (``allow_network=False``:
by default it would fetch linked stylesheets with no timeout).  The text part
comes from ``digest.txt.j2`` when the templates folder has one (the designed
メルマガ layout: rules, ■ sections, ◆ headlines, the URL on its own line);
a custom HTML-only template falls back to html2text on the same HTML.  This
runs once per variant, never per recipient: :mod:`.compose` fills the
placeholders in.

Rules kept here:
- headlines and summaries reach the HTML template already escaped, with a
  ``<wbr>`` between BudouX phrases (``title_html``/``summary_html``): the
  template's ``word-break: keep-all`` then breaks lines only there;
- the text template gets the same words unmarked (``title``/``summary``);
  :func:`japanese.wrap` does its line breaking, after the charset mapping;
- the Web版 and back-number URLs come from :func:`links.archive_url`, the one
  place that knows the archive's paths.

With ``tracking`` (the publication's ``tracking`` is not "off"),
:func:`rewrite_links` is one step between jinja2 and the rest: the frozen
content's links (:func:`links.tracked_links`) become tracked links, once for
the HTML part (plus the open pixel) and once for the text part; the footer's
own links are never among them.
"""

from __future__ import annotations

import html as htmllib
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
from markupsafe import Markup, escape
from premailer import Premailer

from .. import japanese
from ..config import template_search_path
from ..errors import InputError
from ..links import Placeholders, Tracking, archive_url, click_url, open_url, tracked_links, variant_code
from .assemble import sections

TEST_MARK = "【テスト】"  # starts the subject of a test send (content["test"])

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


SUBJECT_COLUMNS = 80  # ~40 full-width characters: what a phone's inbox shows


def subject_prefix(content: Mapping[str, Any]) -> str:
    """【{title}】第{n}号 (English: [{title}] No. {n}): how every default subject starts."""
    title, number = content["publication"]["title"], content["number"]
    return f"[{title}] No. {number}" if content["language"] == "en" else f"【{title}】第{number}号"


def subject_line(prefix: str, headline: str, columns: int = SUBJECT_COLUMNS) -> str:
    """``prefix`` and the edition's first headline, the headline cut at a BudouX
    phrase boundary (and marked …) when the whole would pass ``columns``."""
    if not headline:
        return prefix
    room = columns - japanese.display_width(prefix) - 1
    if japanese.display_width(headline) <= room:
        return f"{prefix} {headline}"
    kept = ""
    for phrase in line_phrases(headline):
        if japanese.display_width(kept + phrase) + 2 > room:
            break
        kept += phrase
    if not kept:  # one phrase longer than the room (a long katakana compound): cut it anyway
        for cluster in japanese.clusters(headline):
            if japanese.display_width(kept + cluster) + 2 > room:
                break
            kept += cluster
    # A headline in two parts (「…を公表\u3000県の…」): end with the first part
    # rather than a scrap of the second, when that keeps most of the room.
    space = max(kept.rfind(" "), kept.rfind("\u3000"))
    if space > 0 and japanese.display_width(kept[:space]) * 5 >= room * 3:
        kept = kept[:space]
    return f"{prefix} {kept.rstrip(' 、,　')}…" if kept else prefix


@lru_cache(maxsize=8)
def environment(templates_dir: str) -> jinja2.Environment:
    env = jinja2.Environment(
        # Per file: the project's folder, then the packaged defaults (config.template_search_path).
        loader=jinja2.FileSystemLoader(template_search_path(templates_dir)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )
    return env


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
    # ... of which in the subject: what an ISO-2022-JP reader sees changed in the inbox.
    subject_replacements: tuple[japanese.Replacement, ...] = ()


def line_phrases(text: str) -> list[str]:
    """BudouX's phrases of one line, joined where a break between them would
    break kinsoku (a line ending in 【 or 「, one starting with 」 or 。) or
    a no-break space: the units a line of the HTML may end between."""
    out: list[str] = []
    for p in japanese.phrases(text):
        if out:
            # Spaces (U+3000 too) end a phrase: a line never starts with one.
            stripped = p.lstrip(" \u3000")
            out[-1] += p[:len(p) - len(stripped)]
            p = stripped
            if not p:
                continue
        if out and (out[-1][-1] in japanese.NO_END or p[0] in japanese.NO_START
                    or out[-1][-1] == "\xa0" or p[0] == "\xa0"):
            out[-1] += p
        else:
            out.append(p)
    return out


# A headline's phrase up to this long is also held together with white-space:
# nowrap: keep-all alone still lets Chromium break before 「 or around ・ inside
# a phrase.  A longer phrase (a long katakana compound) may need breaking on a
# phone, which nowrap would forbid: keep-all/overflow-wrap handle it.
HOLD_CHARS = 12


def phrased(text: str, *, hold: bool = False, mark: str = "") -> Markup:
    """``text`` escaped, with ``<wbr>`` between its phrases (:func:`line_phrases`)
    and a ``<br>`` for each line break: where a line of a headline or summary may
    end.  ``hold``: each phrase of at most :data:`HOLD_CHARS` characters in a
    ``<span class="ph">`` (white-space: nowrap), for headlines.  ``mark`` (a
    bullet) is held to the first character: never alone on a line."""
    def one(phrase: str) -> Markup:
        if hold and 1 < len(phrase) <= HOLD_CHARS:
            return Markup('<span class="ph">%s</span>') % phrase
        return escape(phrase)

    lines = text.replace("\r\n", "\n").split("\n")
    parts = [[one(p) for p in line_phrases(line)] for line in lines]
    if mark:
        first = line_phrases(lines[0])
        if not first:
            parts[0] = [escape(mark)]
        elif hold and 1 < len(first[0]) <= HOLD_CHARS:
            parts[0][0] = Markup('<span class="ph">%s</span>') % (mark + first[0])
        else:
            parts[0][0] = Markup('<span class="ph">%s</span>%s') % (mark + first[0][0], first[0][1:])
    return Markup("<br>").join(Markup("<wbr>").join(line) for line in parts)


_TEXT_RUN = re.compile(r">([^<]+)<")


def phrased_fragment(fragment: str) -> Markup:
    """Sanitized HTML (the lead, the afterword) with ``<wbr>`` between the phrases
    of each text run; the tags stay as they are."""
    def run(m: re.Match) -> str:
        text = htmllib.unescape(m.group(1))
        return ">" + "<wbr>".join(str(escape(p)) for p in line_phrases(text)) + "<"

    return Markup(_TEXT_RUN.sub(run, f">{fragment}<")[1:-1]) if fragment else Markup("")


def _article(a: Mapping[str, Any], section_name: str, full_text: bool) -> dict[str, Any]:
    return {
        **a,
        "anchor": f"a{a['id']}",
        "title_html": phrased(a["title"], hold=True),
        "toc_html": phrased(a["title"], hold=True, mark="・"),
        "summary_html": phrased(a["summary"]) if a.get("summary") else Markup(""),
        # The section heading already names this field: a chip repeats only the others.
        "other_fields": [n for n in a["field_names"] if n != section_name],
        "body_text": html_to_text(a["body_html"]).strip() if full_text and a.get("body_html") else "",
        "image": a.get("image") or None,
    }


def context(content: Mapping[str, Any], fields: Sequence[str], when: datetime,
            placeholders: Placeholders | None = None) -> dict[str, Any]:
    """The template's variables; ``greeting`` and ``links`` hold ``placeholders``
    (new ones if not given)."""
    ph = placeholders or Placeholders.new()
    long_date, short_date = date_texts(when, content["timezone"], content["language"])
    secs = [{**s, "articles": [_article(a, s["field"]["name"], content["full_text"]) for a in s["articles"]]}
            for s in sections(content, fields)]
    titles = [a["title"] for s in secs for a in s["articles"]]
    base, slug = content["site"]["base_url"], content["publication"]["slug"]
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
        "first_title": titles[0] if titles else "",
        "default_subject": subject_line(subject_prefix(content), titles[0] if titles else ""),
        "lead_html": phrased_fragment(content.get("lead_html") or ""),
        "afterword_html": phrased_fragment(content.get("afterword_html") or ""),
        "lead_text": _fragment_text(content.get("lead_html") or ""),
        "afterword_text": _fragment_text(content.get("afterword_html") or ""),
        "notice": notice(content.get("notice")),
        "test": bool(content.get("test")),
        "text_width": content.get("text_width") or japanese.DEFAULT_WIDTH,
        "links": {"unsubscribe": ph.unsubscribe, "preferences": ph.preferences,
                  "archive": archive_url(base, slug, content["number"]), "back_numbers": archive_url(base, slug)},
    }


def _fragment_text(fragment: str) -> str:
    """Sanitized HTML of the editor (lead, afterword, notice) as text for the text part."""
    return html_to_text(fragment).strip() if fragment.strip() else ""


def notice(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The お知らせ block (title, text, link, image, image_alt), or None when it says nothing."""
    if not value or not (value.get("title") or value.get("text")):
        return None
    return {
        "title": value.get("title") or "",
        "text": value.get("text") or "",
        "text_html": phrased(value.get("text") or ""),
        "link": value.get("link") or "",
        "link_label": value.get("link_label") or "",
        "image": value.get("image") or "",
        "image_alt": value.get("image_alt") or "",
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


_URL_TOKEN = re.compile(r"https?://[^\s<>\"'）」』】]+")


def rewrite_text_links(text: str, content: Mapping[str, Any], fields: Sequence[str], tracking: Tracking,
                       placeholders: Placeholders) -> str:
    """The designed text part (``digest.txt.j2``) with every URL that is one of the
    frozen content's links — a whole URL, never part of one — pointing at its
    tracked URL for the text part; the footer's links are not among them."""
    index = {url: i for i, (url, _article) in enumerate(tracked_links(content))}
    code = variant_code(content, fields, "t")

    def swap(m: re.Match) -> str:
        i = index.get(m.group(0))
        return m.group(0) if i is None else click_url(tracking, i, code, placeholders.reader)

    return _URL_TOKEN.sub(swap, text)


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
        subject = content.get("subject") or env.get_template("subject.txt.j2").render(ctx).strip()
        raw_html = env.get_template("digest.html.j2").render(ctx)
        try:
            text_template = env.get_template("digest.txt.j2")
        except jinja2.TemplateNotFound:
            text_template = None
        if tracking is not None:
            html_for_text = rewrite_links(raw_html, content, fields, "t", tracking, placeholders)
            raw_html = rewrite_links(raw_html, content, fields, "h", tracking, placeholders)
        if text_template:
            # Blank-line runs from the template's conditionals collapse to one.
            text = re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text_template.render(ctx)).strip() + "\n"
            if tracking is not None:
                text = rewrite_text_links(text, content, fields, tracking, placeholders)
        else:
            text = html_to_text(html_for_text if tracking is not None else raw_html)
    except jinja2.TemplateNotFound as exc:
        raise InputError(f"{templates_dir}: template '{exc.name}' not found") from None
    except jinja2.TemplateError as exc:
        raise InputError(f"{templates_dir}: template error: {exc}") from None
    subject = " ".join(subject.split())
    if any(p in subject for p in placeholders.all()):
        raise InputError(f"{templates_dir}/subject.txt.j2: the subject is the same for every reader of a "
                         "variant and cannot hold the greeting or a personal link")
    if ctx["test"] and not subject.startswith(TEST_MARK):
        subject = TEST_MARK + subject
    # premailer writes &nbsp; as U+00A0, which ISO-2022-JP cannot carry: every
    # iso-2022-jp message would fall back to UTF-8.  The entity means the same.
    # lxml (under premailer) knows no <wbr> and closes it at its parent's end;
    # browsers ignore the stray </wbr>, but it is noise in the source.
    body = inline_css(raw_html).replace("\xa0", "&nbsp;").replace("</wbr>", "") if html else None
    replacements: tuple[japanese.Replacement, ...] = ()
    in_subject: tuple[japanese.Replacement, ...] = ()
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
        subject_replacements=in_subject,
    )
