"""Preflight: what would reach readers broken, found before an edition is sent.

:func:`check_edition` looks at what ``edition send PUB`` would send now — the
publication's unfinished edition if there is one (its pending deliveries),
else the edition it would start (approved, scheduled, or with ``approval =
"none"`` a draft: editions/state.py ``next_to_send``), else the next edition
as it would be created (the distinct variants of the active subscribers,
keyed by :func:`creation.readers`, the one function :func:`creation.plan` keys
them with) — renders every variant once, as the engine will, and checks it.  It
writes nothing.  The :class:`Plan` keeps the content and the renders: ``edition
send`` freezes that content (or refuses if the queue changed since) and the
engine sends those renders, so what was checked is what is sent.

Severities (``error`` stops ``edition send`` unless ``--force``; ``edition check``
exits 1):

=========  =================================================================
error      the HTML is over Gmail's clipping limit (the footer with the
           unsubscribe link and the sender display the Act on Specified
           Electronic Mail requires would be cut off); a link that goes
           nowhere (empty, relative, ``javascript:``, no host, spaces); no
           unsubscribe link in a part; an empty subject; an untitled article
           or an empty section; a template that does not render; an article
           that cannot render (a control character in its URL or text,
           stored before input was checked), named by id
warning    characters not in ISO-2022-JP (compose sends those mails as UTF-8,
           readable almost everywhere but not on every old phone — which is
           why a reader chose ISO-2022-JP); ``http://`` or non-ASCII links;
           CSS that Gmail or Outlook drops where the layout depends on it
           (:data:`CSS_DROPPED`, from caniemail.com; ``@media`` rules are
           enhancements and not checked);
           text lines over the width that are not a lone URL; a subject
           longer than 40 full-width characters, or one that ISO-2022-JP
           readers see changed (㈱ → (株), an emoji removed); HTML near the clipping
           limit; an article card with neither summary nor body; nobody
           to send to; article text (title, summary, body, URL, author)
           that looks like a personal placeholder (``%%…%%``, ``%%NL_``,
           Mailgun's ``%recipient…%`` and ``%unsubscribe_url%``, also
           once the body's tags are removed): ours go out as written,
           never filled in, but it is worth a look
info       what ISO-2022-JP mapping replaced (① → (1) ×3); sizes and
           counts that are fine
=========  =================================================================
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import lxml.etree
import lxml.html
from sqlalchemy.engine import Engine

from . import japanese
from .articles import render_problem
from .config import Config, Publication
from .delivery import Variants
from .editions.assemble import VariantKey, sections
from .editions.compose import PYTHON_CODECS
from .editions.creation import next_content, readers
from .editions.render import Rendered
from .errors import InputError, NewsletterError
from .links import fill, greeting, preferences_url, unsubscribe_url
from .store import editions as q
from .store import subscribers as sq
from .store.editions import load_content
from .store.tables import utcnow

GMAIL_CLIP_BYTES = 102 * 1024  # Gmail shows "[Message clipped]" past about 102 KB of HTML
HTML_WARN_BYTES = 90 * 1024
SUBJECT_WARN_COLUMNS = 80  # 40 full-width characters: about what a phone's inbox list shows
# Stand-ins for the personal parts, as long as real ones.
_SAMPLE_NAME = "山田 太郎"
_SAMPLE_KEY = b"preflight sample key"
_SAMPLE_ID = 10**9

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One thing preflight noticed.  ``variant`` is the variant's key
    (``fields|format|charset``), ``""`` for the edition as a whole."""

    severity: str  # "error" | "warning" | "info"
    code: str  # html-size, charset-mapped, charset-unmappable, text-width, subject, link, section, ...
    message: str
    variant: str = ""
    # The same finding in Japanese, for the console (written beside the English, so the
    # two are read and changed together); "" where there is none (the console then
    # shows ``message``).  The command line prints ``message``.
    ja: str = ""

    def text(self, language: str) -> str:
        """The message in ``language`` ("ja" or "en")."""
        return self.ja if language == "ja" and self.ja else self.message

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def summary(findings: Iterable[Finding]) -> str:
    counts = Counter(f.severity for f in findings)
    return f"{counts['error']} error(s), {counts['warning']} warning(s)"


# --------------------------------------------------------------------------- what the send needs


@dataclass(frozen=True)
class Plan:
    """What ``edition send`` would send: the content and readers per variant, and the
    renders of that content (filled by :func:`check_plan`).  ``edition send`` creates
    or starts exactly this content (``creation.create_edition(checked=…)``,
    ``state.start_sending(checked=…)``) and hands ``renders`` to the engine, so what
    was checked is what is sent, rendered once."""

    content: dict[str, Any]
    when: datetime
    number: int
    resumed: bool  # True: the unfinished edition, False: the next one
    variants: dict[VariantKey, int]  # variant → readers
    # Display names of ISO-2022-JP readers that cannot be written in it (their mail goes as UTF-8).
    names_not_in_jis: tuple[str, ...] = ()
    unsent_status: str | None = None  # an edition not yet sending: draft, approved, scheduled
    renders: Variants | None = None  # the renders of ``content`` at ``when``, for check and send


def _names_not_in_jis(conn, ids: list[int]) -> tuple[str, ...]:
    return tuple(name for name in sq.names(conn, ids, q.CHUNK)
                 if japanese.unmappable(japanese.map_for_jis(name, names=True)[0]))


def plan_send(engine: Engine, config: Config, pub: Publication, *, now: datetime | None = None,
              edition=None) -> Plan | None:
    """The edition ``edition send PUB`` would work on now, or None (nothing new).
    ``edition``: an unsent edition (draft, approved, scheduled) to check instead."""
    from .editions.state import next_to_send

    now = now or utcnow()
    with engine.connect() as conn:
        row = q.unfinished(conn, pub.slug) if edition is None else None
        unsent = edition if edition is not None else (next_to_send(conn, pub) if row is None else None)
        counts: Counter[VariantKey] = Counter()
        jis_ids: list[int] = []

        def count(subscriber_id: int | None, key: VariantKey) -> None:
            counts[key] += 1
            if key.charset == "iso-2022-jp" and subscriber_id is not None:
                jis_ids.append(subscriber_id)

        if row is not None:
            for subscriber_id, variant in q.pending_variants(conn, row.id):
                count(subscriber_id, VariantKey.decode(variant))
            content, when = load_content(row), row.scheduled_for or row.created_at
            return Plan(content, when, row.number, True, dict(counts), _names_not_in_jis(conn, jis_ids),
                        renders=Variants(config, content, when))
        when = now
        if unsent is not None:
            content = load_content(unsent) if unsent.status == "draft" else json.loads(unsent.approved_content)
            when = unsent.scheduled_for or unsent.created_at
        else:
            content = next_content(conn, config, pub, now)
        if not content["articles"]:
            return None
        for sub, key in readers(conn, pub, content):
            if key.fields:
                count(sub.id, key)
        names = _names_not_in_jis(conn, jis_ids)
    return Plan(content, when, content["number"], False, dict(counts), names,
                unsent.status if unsent is not None else None, Variants(config, content, when))


def check(engine: Engine, config: Config, pub: Publication, *, now: datetime | None = None,
          edition=None) -> tuple[Plan | None, list[Finding]]:
    """The plan of what ``edition send PUB`` would send now (None: nothing new) and
    every finding on it.  Changes nothing; the plan carries the renders it checked."""
    plan = plan_send(engine, config, pub, now=now, edition=edition)
    if plan is None:
        return None, [Finding("info", "nothing",
                              f"{pub.slug}: nothing new to send (no queued articles past their embargo)",
                              ja=f"{pub.title}: 送る新しい記事がありません"
                                 "（公開日時を過ぎた掲載待ちの記事がありません）")]
    return plan, check_plan(config, pub, plan) + deliverability(engine, config)


def check_unsent(engine: Engine, config: Config, row) -> list[Finding]:
    """Every finding on one unsent edition (draft, approved, scheduled) as it would go
    out: every reader walked, every variant rendered, as ``edition send --edition N``
    checks it (the DNS checks of :func:`deliverability` aside).  The console runs it
    on its 配信前チェック button and before an approval, never on a page view."""
    pub = config.publication(row.publication)
    plan = plan_send(engine, config, pub, edition=row)
    if plan is None:
        return [Finding("error", "nothing", f"{pub.slug} 第{row.number}号 has no articles; nothing to send",
                        ja=f"{pub.title} 第{row.number}号に記事がありません。送るものがありません")]
    return check_plan(config, pub, plan)


class CheckFailed(InputError):
    """An approval refused because the edition's preflight found errors; ``findings``
    are all of them (the console shows them on the edition's page, the CLI prints them)."""

    def __init__(self, message: str, findings: list[Finding]):
        super().__init__(message)
        self.findings = findings


def approve(engine: Engine, config: Config, row, actor, digest: str, *, now: datetime | None = None):
    """Approve draft ``row`` exactly as previewed (``digest``), only when its preflight
    (:func:`check_unsent`) finds no error — the one rule for the console's 承認 and
    ``edition approve``.  The check runs after state.approve's own rules (role, state,
    hash, four eyes), so a refusal for those never waits for a render; an error
    raises :class:`CheckFailed` and nothing changes."""
    from .editions import state

    def no_errors(current) -> None:
        findings = check_unsent(engine, config, current)
        if has_errors(findings):
            raise CheckFailed(f"{current.publication} 第{current.number}号: the preflight check found errors, so "
                              "it was not approved; fix them and approve again", findings)

    return state.approve(engine, config, row.id, actor, digest, now=now, check=no_errors)


def check_edition(engine: Engine, config: Config, pub: Publication, *, now: datetime | None = None,
                  edition=None) -> list[Finding]:
    """Every finding for what ``edition send PUB`` would send now (changes nothing).

    ``edition send`` calls :func:`check` first and refuses to start when
    :func:`has_errors` is true, unless ``--force``."""
    return check(engine, config, pub, now=now, edition=edition)[1]


def deliverability(engine: Engine, config: Config) -> list[Finding]:
    """``newsletter doctor``'s failing checks, when DNS answers (see :func:`doctor.preflight_findings`)."""
    from . import doctor

    with engine.connect() as conn:
        big = sq.count_active_at(conn, doctor.BULK_RULE_DOMAINS)
    return [Finding(*f) for f in doctor.preflight_findings(config, big)]


def check_plan(config: Config, pub: Publication, plan: Plan) -> list[Finding]:
    """The checks themselves: pure, given the plan (no database)."""
    findings: list[Finding] = []
    if not plan.variants:
        findings.append(Finding("warning", "readers", "no active subscriber would receive this edition",
                                ja="この号を受け取る購読者がいません"))
    if any(k.charset == "iso-2022-jp" for k in plan.variants):
        for what, value in (("sender name", config.sender.name), ("publication title", pub.title)):
            rest = japanese.unmappable(value)
            if rest:
                findings.append(Finding(
                    "warning", "charset-unmappable",
                    f"{what} '{value}' has {_chars(rest)}, not in ISO-2022-JP: every ISO-2022-JP reader "
                    "gets UTF-8 (From/List-Id headers are not mapped)",
                    ja=f"{_JA_WHAT[what]}「{value}」の {_chars(rest)} は ISO-2022-JP にない文字です。ISO-2022-JP の"
                       "購読者全員に UTF-8 で送ります（差出人・List-Id のヘッダーは置き換えません）"))
    if plan.names_not_in_jis:
        shown = "、".join(plan.names_not_in_jis[:5]) + ("…" if len(plan.names_not_in_jis) > 5 else "")
        findings.append(Finding(
            "warning", "charset-unmappable",
            f"{len(plan.names_not_in_jis)} ISO-2022-JP reader(s) have a name that cannot be written in it "
            f"({shown}): their mail goes out as UTF-8",
            ja=f"ISO-2022-JP の購読者 {len(plan.names_not_in_jis)} 人の名前に ISO-2022-JP で書けない文字があります"
               f"（{shown}）。この人たちには UTF-8 で送ります"))
    findings += placeholder_lookalikes(plan.content)
    for art in plan.content.get("articles", []):
        problem = render_problem(art)
        if problem:
            title = _short(art.get("title"))
            title = title if title.isprintable() else repr(title)[1:-1]
            findings.append(Finding("error", "article", f"article {art.get('id')} '{title}': {problem}: "
                                    "it cannot render (fix it with 'article edit' or withdraw it)",
                                    ja=f"記事 {art.get('id')}「{title}」: {problem}。この記事は表示できません"
                                       "（記事を直すか、取り下げてください）"))
    # Rendered as the engine renders (the content's own text width, HTML only for HTML
    # readers; html sorts before text, so each field set is rendered once) and kept for it.
    renders = plan.renders if plan.renders is not None else Variants(config, plan.content, plan.when)
    width = plan.content.get("text_width") or pub.text_width
    for key in sorted(plan.variants, key=VariantKey.encode):
        label = key.encode()
        readers = plan.variants[key]
        findings.append(Finding("info", "readers", f"{readers} reader(s)", label, ja=f"購読者 {readers} 人"))
        try:
            rendered = renders.get(key)
        except (NewsletterError, ValueError) as exc:  # ValueError: lxml refusing a character
            findings.append(Finding("error", "render", f"does not render: {exc}", label,
                                    ja=f"この版を作れません: {exc}"))
            continue
        findings += [Finding(f.severity, f.code, f.message, label, f.ja)
                     for f in check_variant(rendered, key, readers, plan.content, config, width)]
    return findings


# --------------------------------------------------------------------------- one variant


def check_variant(rendered: Rendered, key: VariantKey, readers: int, content: Mapping[str, Any], config: Config,
                  width: int) -> list[Finding]:
    out: list[Finding] = []
    html = rendered.html if key.format == "html" else None
    base = config.site.base_url
    marks = rendered.placeholders
    personal = marks.values(greeting(_SAMPLE_NAME, rendered.language), unsubscribe_url(base, _SAMPLE_KEY, _SAMPLE_ID),
                            preferences_url(base, _SAMPLE_KEY, _SAMPLE_ID))

    # Charset: what was mapped, what cannot be.
    if key.charset == "iso-2022-jp":
        if rendered.replacements:
            mapped = japanese.describe(rendered.replacements)
            out.append(Finding("info", "charset-mapped", f"mapped: {mapped}",
                               ja=f"ISO-2022-JP 用に置き換えた文字: {mapped}"))
        rest = japanese.unmappable(rendered.subject + rendered.text + (html or ""))
        if rest:
            out.append(Finding("warning", "charset-unmappable",
                               f"{_chars(rest)} not in ISO-2022-JP: these {readers} mail(s) go out as UTF-8",
                               ja=f"{_chars(rest)} は ISO-2022-JP にない文字です。"
                                  f"この {readers} 通は UTF-8 で送ります"))
    codec = PYTHON_CODECS[key.charset] if key.charset == "utf-8" or japanese.fits_jis(html or "") else "utf-8"

    # HTML size, as Gmail counts it: the bytes of the HTML part.
    if html is not None:
        size = len(fill(html, personal, escape=True).encode(codec, errors="replace"))
        kb = f"{size / 1024:.1f} KB"
        if size > GMAIL_CLIP_BYTES:
            out.append(Finding("error", "html-size",
                               f"HTML is {kb}: Gmail clips mail over 102 KB, hiding the footer and the "
                               "unsubscribe link — carry fewer articles or no full text",
                               ja=f"HTML が {kb} あります。Gmail は 102 KB を超えるメールを途中で切り、末尾の"
                                  "配信停止リンクが隠れます。記事を減らすか、全文掲載をやめてください"))
        elif size > HTML_WARN_BYTES:
            out.append(Finding("warning", "html-size", f"HTML is {kb}, close to Gmail's 102 KB clipping limit",
                               ja=f"HTML が {kb} あり、Gmail が途中で切る 102 KB に近づいています"))
        else:
            out.append(Finding("info", "html-size", f"HTML {kb} (Gmail clips at 102 KB)",
                               ja=f"HTML {kb}（Gmail は 102 KB を超えると途中で切ります）"))

    # CSS that Gmail or Outlook would drop.
    if html is not None:
        for problem, problem_ja in css_findings(html):
            out.append(Finding("warning", "css", problem, ja=problem_ja))

    # Subject.
    columns = japanese.display_width(rendered.subject)
    if not rendered.subject.strip():
        out.append(Finding("error", "subject", "the subject is empty", ja="件名が空です"))
    elif columns > SUBJECT_WARN_COLUMNS:
        out.append(Finding("warning", "subject", f"subject is {columns / 2:g} full-width characters long; "
                                                 f"phones show about {SUBJECT_WARN_COLUMNS // 2}",
                           ja=f"件名が全角 {columns / 2:g} 文字あります。スマートフォンに見えるのは"
                              f"全角 {SUBJECT_WARN_COLUMNS // 2} 文字ほどです"))
    else:
        out.append(Finding("info", "subject", f"subject {columns / 2:g} full-width characters",
                           ja=f"件名 全角 {columns / 2:g} 文字"))
    if rendered.subject_replacements:
        changed = japanese.describe(rendered.subject_replacements)
        out.append(Finding("warning", "subject", f"ISO-2022-JP readers see the subject changed: {changed}",
                           ja=f"ISO-2022-JP の購読者には件名の文字が置き換わって見えます: {changed}"))

    # Text lines.
    over = [line for line in rendered.text.splitlines()
            if japanese.display_width(line) > width and len(japanese.wrap_line(line.strip(), width)) > 1]
    if over:
        out.append(Finding("warning", "text-width", f"{len(over)} text line(s) over {width} columns, "
                                                    f"e.g. '{over[0][:40]}…'",
                           ja=f"テキスト版に {width} 桁を超える行が {len(over)} 行あります（例:「{over[0][:40]}…」）"))
    else:
        out.append(Finding("info", "text-width", f"text lines within {width} columns (long URLs alone on a line)",
                           ja=f"テキスト版の行は {width} 桁以内（長い URL は 1 行に単独で置いています）"))

    # The opt-out the law requires, in every part the reader may see.
    for part, body in (("text", rendered.text), ("HTML", html)):
        if body is not None and marks.unsubscribe not in body:
            out.append(Finding("error", "unsubscribe", f"the {part} part has no unsubscribe link",
                               ja=f"{'テキスト' if part == 'text' else 'HTML'}版に配信停止のリンクがありません"))

    # Sections and articles.
    secs = sections(content, key.fields)
    if not secs:
        out.append(Finding("error", "section", "no article at all: the digest would be empty",
                           ja="記事が 1 件もなく、空のメールになります"))
    for sec in secs:
        if not sec["articles"]:
            out.append(Finding("error", "section", f"section '{sec['field']['name']}' is empty",
                               ja=f"分野「{sec['field']['name']}」に記事がありません"))
        for art in sec["articles"]:
            if not (art.get("title") or "").strip():
                out.append(Finding("error", "section", f"article {art['id']} has no title",
                                   ja=f"記事 {art['id']} にタイトルがありません"))
            body = art.get("body_html") if content.get("full_text") else art.get("summary")
            if not (body or "").strip():
                what = "body" if content.get("full_text") else "summary"
                out.append(Finding("warning", "section", f"'{_short(art.get('title'))}' has no {what}: "
                                                         "its card shows only the title",
                                   ja=f"「{_short(art.get('title'))}」に{'本文' if what == 'body' else '概要'}が"
                                      "ありません。タイトルだけが載ります"))

    # Links.
    links: dict[str, str] = {}
    for sec in secs:
        for art in sec["articles"]:
            links.setdefault(art.get("url") or "", _short(art.get("title")))
    if html is not None:
        doc = lxml.html.document_fromstring(html)
        anchors = {el.get("id") for el in doc.iter() if el.get("id")} | \
            {el.get("name") for el in doc.iter("a") if el.get("name")}
        for el in doc.iter("a", "img"):
            attr = "href" if el.tag == "a" else "src"
            url = (el.get(attr) or "").strip()
            if el.tag == "a" and url.startswith("#") and len(url) > 1:  # the 目次: a place in this mail
                if url[1:] not in anchors:
                    label = _short(el.text_content())
                    out.append(Finding("error", "link", f"link '{label}': {url} — no element of the mail has that id",
                                       ja=f"リンク「{label}」: {url} — メールの中にその行き先（id）がありません"))
                continue
            links.setdefault(url, _short(el.text_content()) or el.tag)
    for url, label in links.items():
        problem = None if url in marks.all() else link_problem(url)
        if problem:
            severity, why, why_ja = problem
            out.append(Finding(severity, "link", f"link '{label}': {url or '(empty)'} — {why}",
                               ja=f"リンク「{label}」: {url or '（空）'} — {why_ja}"))
    return out


# %%anything%% without spaces, %%NL_ however it goes on, Mailgun's %recipient.key% / %recipient_x% and
# its own unsubscribe variables (filled by Mailgun when the domain tracks unsubscribes).
_LOOKALIKE = re.compile(r"%%[^%\s]{1,80}%%|%%\s*NL[_\uff3f]|%recipient[._%]|%\w{0,20}unsubscribe_url%",
                        re.IGNORECASE)


def placeholder_lookalikes(content: Mapping[str, Any]) -> list[Finding]:
    """A warning for each article whose text looks like a personal placeholder.
    Nothing in an article is ever filled in (the real placeholders carry a random
    nonce, see :mod:`newsletter.links`); an author who wrote one probably meant
    something else, and someone may be probing."""
    out: list[Finding] = []
    for art in content.get("articles", []):
        texts = [(name, str(art.get(name) or "")) for name in ("title", "summary", "url", "author", "body_html")]
        body = str(art.get("body_html") or "")
        if body:
            try:
                texts.append(("body text", lxml.html.fragment_fromstring(body, create_parent="div").text_content()))
            except (ValueError, lxml.etree.ParserError):
                pass
        for name, text in texts:
            m = _LOOKALIKE.search(text)
            if m:
                where = "body" if name.startswith("body") else name
                out.append(Finding(
                    "warning", "placeholder",
                    f"article {art.get('id')} '{_short(art.get('title'))}': its {where} has "
                    f"'{_short(m.group(0), 40)}', which looks like a personal placeholder; it is sent as "
                    "written (never filled in) — check the article",
                    ja=f"記事 {art.get('id')}「{_short(art.get('title'))}」の{_JA_PART.get(where, where)}に"
                       f"「{_short(m.group(0), 40)}」があり、個人ごとの差し込み記号に見えます。書かれたとおりに"
                       "送ります（差し込みはしません）。記事を確かめてください"))
                break
    return out


# CSS that a major client drops (caniemail.com, 2025), where the layout depends
# on it.  pattern (on "property:value" without spaces) → (clients, what to do).
# Left out on purpose: border-radius, inline-block, overflow-wrap, word-break
# (a client without them degrades, the mail still reads).
CSS_DROPPED: tuple[tuple[str, str, str, str], ...] = (
    (r"^position:", "Gmail, Outlook (Windows)", "use tables for placement", "配置には表を使ってください"),
    (r"^display:(inline-)?(flex|grid)", "Outlook (Windows)", "use a table layout", "表でレイアウトしてください"),
    (r"^float:", "Outlook (Windows)", "use align= on a table", "表の align= を使ってください"),
    (r"^box-shadow:", "Outlook (Windows)", "use a border", "枠線（border）を使ってください"),
    (r"^(background(-image)?:.*url\(|background-image:)", "Outlook (Windows)", "use bgcolor, or VML",
     "bgcolor か VML を使ってください"),
    (r"var\(--", "Gmail, Outlook (Windows)", "write the value itself", "値をそのまま書いてください"),
    (r"^(transform|animation|transition)", "Gmail, Outlook (Windows)", "drop it", "使わないでください"),
    (r"^object-fit:", "Gmail, Outlook (Windows)", "size the image itself", "画像そのものの大きさを合わせてください"),
)
_MEDIA = re.compile(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", re.S)


def css_problems(html: str) -> list[str]:
    """Which of :data:`CSS_DROPPED` the mail relies on (inline styles and the
    ``<style>`` rules outside ``@media``); ``max-width`` only without the
    ``<!--[if mso]>`` fixed-width table that stands in for it in Outlook."""
    return [en for en, _ in css_findings(html)]


def css_findings(html: str) -> list[tuple[str, str]]:
    """:func:`css_problems`, each in English and in Japanese."""
    doc = lxml.html.document_fromstring(html)
    declarations = [d for el in doc.iter() if isinstance(el.tag, str) and el.get("style")
                    for d in el.get("style").split(";")]
    for style in doc.iter("style"):
        rules = _MEDIA.sub("", style.text or "")
        declarations += [d for block in re.findall(r"\{([^{}]*)\}", rules) for d in block.split(";")]
    found: dict[str, tuple[str, str]] = {}
    for d in declarations:
        d = re.sub(r"\s+", "", d).lower()
        for pattern, clients, fix, fix_ja in CSS_DROPPED:
            if d and re.search(pattern, d):
                found.setdefault(d.split(":")[0], (f"'{d[:40]}' is dropped by {clients}: {fix}",
                                                   f"「{d[:40]}」は {clients} で無視されます。{fix_ja}"))
        if d.startswith("max-width:") and "<!--[if mso]>" not in html:
            found.setdefault("max-width", ("'max-width' is dropped by Outlook (Windows): add a fixed-width "
                                           "<!--[if mso]> table around the container",
                                           "「max-width」は Outlook (Windows) で無視されます。本体を幅固定の "
                                           "<!--[if mso]> の表で囲んでください"))
    return list(found.values())


def link_problem(url: str) -> tuple[str, str, str] | None:
    """(severity, why, why in Japanese) when a link in a mail would not work (or only
    over plain HTTP)."""
    url = url.strip()
    if not url:
        return "error", "empty link", "リンク先が空です"
    if any(c.isspace() for c in url) or any(ord(c) < 32 for c in url):
        return "error", "has spaces or control characters", "空白か制御文字が入っています"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        return "error", f"malformed ({exc})", f"URL の形が正しくありません（{exc}）"
    scheme = parts.scheme.lower()
    if scheme == "mailto":
        return None if "@" in parts.path else ("error", "mailto: without an address", "mailto: に宛先がありません")
    if scheme == "tel":
        return None
    if not scheme:
        return ("error", "no scheme: a relative link goes nowhere in a mail",
                "https:// などがありません。相対リンクはメールの中ではどこにも行きません")
    if scheme not in ("http", "https"):
        return "error", f"'{scheme}:' is not a web link", f"「{scheme}:」はウェブのリンクではありません"
    host = parts.hostname or ""
    if not host or "." not in host or host.startswith(".") or host.endswith("."):
        return "error", "no valid host name", "正しいホスト名がありません"
    if not url.isascii():
        return ("warning", "not ASCII: some clients break it; percent-encode it",
                "ASCII 以外の文字があり、壊れるメールソフトがあります。パーセントエンコードしてください")
    if scheme == "http":
        return "warning", "not https", "https ではありません"
    return None


_JA_WHAT = {"sender name": "差出人名", "publication title": "メールマガジン名"}
_JA_PART = {"title": "タイトル", "summary": "概要", "url": "URL", "author": "著者", "body": "本文"}


def _chars(chars: Iterable[str]) -> str:
    return ", ".join(f"{c} (U+{ord(c):04X})" for c in chars)


def _short(text: str | None, n: int = 30) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def format_findings(findings: Iterable[Finding], *, verbose: bool = True) -> list[str]:
    """Lines for a terminal, grouped by variant (``verbose=False``: errors and warnings only)."""
    lines: list[str] = []
    current = None
    for f in findings:
        if not verbose and f.severity == "info":
            continue
        if f.variant != current:
            current = f.variant
            if current:
                fields, fmt, charset = current.split("|")
                lines.append(f"variant {fields or '-'} | {fmt} | {charset}")
        mark = {"error": "ERROR  ", "warning": "warning", "info": "info   "}[f.severity]
        lines.append(f"  {mark} {f.message}" if f.variant else f"{mark} {f.message}")
    return lines
