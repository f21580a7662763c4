"""The article queue: validation, and importers for JSON, CSV, Markdown with front
matter, and RSS/Atom feeds.

Every item is validated before anything is written.  An import is one
transaction: the valid items go in and the bad ones are reported by file and
line (or item number), or with ``strict`` nothing goes in when anything is bad.
Re-importing an item with the same GUID (else URL) updates it, never duplicates.
A dry run does the same work in a transaction it rolls back, so its report —
one :class:`ImportRow` per item: created, updated, unchanged or refused and
why — is what the real import would do, conflicts with stored articles
included (the console shows it before 取り込む).

What :func:`validate` lets through renders: every text passes
``sanitize.text_problem`` (no NUL, control characters or lone surrogates; line
breaks only in summary and body, and folded to spaces in the one-line title and
author), the URL passes ``sanitize.url_problem``, ``publish_at`` lies in years
1900–2999 and ``priority`` fits the database column.  The same rules are
preflight's per-article check (:func:`render_problem`) for articles stored
before they existed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from .config import Config
from .csvio import decode, read_rows, split_list
from .errors import InputError
from .sanitize import html_to_plain, sanitize_html, text_problem, url_problem
from .store import articles as q

MAX_TITLE = 500
PRIORITY_RANGE = (-(2**31), 2**31 - 1)  # the column is a 32-bit INTEGER on PostgreSQL
YEAR_RANGE = (1900, 2999)
BODY_FORMATS = ("markdown", "html")
INPUT_STATUSES = ("draft", "queued")

CSV_ALIASES = {
    "title": ("タイトル", "題名", "見出し"),
    "url": ("link", "リンク", "アドレス"),
    "summary": ("概要", "要約", "description"),
    "body": ("本文", "content"),
    "body_format": ("format", "形式"),
    "fields": ("field", "分野", "カテゴリ", "category", "categories"),
    "author": ("著者", "執筆者", "筆者"),
    "publish_at": ("公開日時", "掲載日時", "embargo", "published"),
    "guid": ("id",),
    "pinned": ("固定", "pin"),
    "priority": ("優先度",),
    "status": ("状態",),
    "image": ("image_url", "画像", "サムネイル", "thumbnail"),
    "image_alt": ("画像の説明", "代替テキスト", "alt"),
}
KNOWN_KEYS = set(CSV_ALIASES) | {"source"}


_SPACES = re.compile(r"[^\S\u3000]+")


def fold_spaces(text: str) -> str:
    """Runs of white space to one space, except U+3000: the ideographic space is part
    of Japanese text (「素案を公表\u3000県の…」), not layout."""
    return _SPACES.sub(" ", text).strip(" ")


def check_url(value: str) -> str:
    url = value.strip()
    if not url:
        raise ValueError("missing url")
    problem = url_problem(url)
    if problem:
        raise ValueError(f"bad url {_quote(url)} ({problem})")
    return url


def _quote(text: str, n: int = 80) -> str:
    """``'text'`` cut to ``n`` characters, control characters escaped: an error stays one line."""
    text = text[:n]
    return f"'{text}'" if text.isprintable() else repr(text)


def _text(raw: Mapping[str, Any], key: str, *, lines: bool) -> str:
    """The text under ``key`` ("" when absent), or ValueError naming the key.  One-line
    texts have their line breaks and tabs folded to spaces (titles reach mail headers)."""
    value = raw.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"bad {key}: expected text, got {_kind(value)}")
    text = str(value)
    problem = text_problem(text.replace("\r", "\n"))  # positions as the editor typed them
    if problem:
        raise ValueError(f"{key} {problem}")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if lines else fold_spaces(text)


def _kind(value: Any) -> str:
    return {list: "a list", dict: "an object", bool: "true/false"}.get(type(value), type(value).__name__)


def render_problem(article: Mapping[str, Any]) -> str | None:
    """Why a stored (or frozen) article cannot render, or None: the input rules again,
    for rows written before they existed."""
    for key in ("title", "author", "guid"):
        problem = text_problem(str(article.get(key) or ""), lines=False)
        if problem:
            return f"{key} {problem}"
    for key in ("summary", "body", "body_html"):
        problem = text_problem(str(article.get(key) or ""))
        if problem:
            return f"{key} {problem}"
    problem = url_problem(str(article.get("url") or "").strip())
    return f"url {problem}" if problem else None


def parse_time(value: Any, tz: str) -> datetime | None:
    """ISO 8601; a time without an offset is read in the site's time zone."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value).strip().replace("/", "-")
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"bad publish_at '{value}' (expected ISO 8601, e.g. 2026-12-01T09:00+09:00)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(tz))
    try:
        dt = dt.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        dt = None
    if dt is None or not YEAR_RANGE[0] <= dt.year <= YEAR_RANGE[1]:
        raise ValueError(f"bad publish_at '{value}' (expected a year from {YEAR_RANGE[0]} to {YEAR_RANGE[1]})")
    return dt


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "0", "false", "no", "いいえ", "off"):
        return False
    if text in ("1", "true", "yes", "はい", "on", "x", "○"):
        return True
    raise ValueError(f"bad {key} '{value}' (expected true or false)")


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"bad {key} '{value}' (expected a whole number)")
    if value in (None, ""):
        return 0
    if isinstance(value, (list, dict)):
        raise ValueError(f"bad {key}: expected a whole number, got {_kind(value)}")
    text = str(value).strip()
    low, high = PRIORITY_RANGE
    try:
        # The length check first: int() of a 100,000-digit string is slow, and far out of range anyway.
        number = int(text) if len(text) <= 12 else high + 1
    except ValueError:
        raise ValueError(f"bad {key} {_quote(text)} (expected a whole number)") from None
    if not low <= number <= high:
        raise ValueError(f"bad {key} {_quote(text, 30)} (expected a whole number from {low} to {high})")
    return number


def resolve_fields(config: Config, values: Iterable[str]) -> str:
    """Field slugs or names → the stored comma-separated slugs in config order."""
    return config.read_fields(values)


def validate(raw: Mapping[str, Any], config: Config, *, default_fields: Sequence[str] = ()) -> dict[str, Any]:
    """A raw item → the values to store; ValueError naming the problem."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"expected an object with title, url, fields; got {type(raw).__name__}")
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise ValueError(f"unknown key {_quote(unknown[0])}")
    # Titles and authors end up in mail headers: no line breaks, no control characters
    # (NUL would also fail the whole transaction on PostgreSQL, which cannot store it).
    title = _text(raw, "title", lines=False)
    if not title:
        raise ValueError("missing title")
    if len(title) > MAX_TITLE:
        raise ValueError(f"title longer than {MAX_TITLE} characters")
    url = check_url(_text(raw, "url", lines=False))
    fields_value = raw.get("fields")
    if isinstance(fields_value, str):
        tokens = split_list(fields_value)
    elif isinstance(fields_value, list):
        if not all(isinstance(t, str) for t in fields_value):
            raise ValueError("fields must be a list of field names")
        tokens = list(fields_value)
    elif fields_value is None:
        tokens = list(default_fields)
    else:
        raise ValueError("fields must be a list or a string")
    if not tokens:
        tokens = list(default_fields)
    body_format = (_text(raw, "body_format", lines=False) or "markdown").lower()
    if body_format not in BODY_FORMATS:
        raise ValueError(f"bad body_format {_quote(body_format)} (expected markdown or html)")
    body = _text(raw, "body", lines=True)
    if body_format == "html":
        body = sanitize_html(body)
    status = (_text(raw, "status", lines=False) or "queued").lower()
    if status not in INPUT_STATUSES:
        raise ValueError(f"bad status {_quote(status)} (expected draft or queued)")
    guid = _text(raw, "guid", lines=False) or None
    author = _text(raw, "author", lines=False)
    return {
        "title": title,
        "url": url,
        "summary": _text(raw, "summary", lines=True).strip(),
        "body": body,
        "body_format": body_format,
        "author": author[:200],
        "fields": resolve_fields(config, tokens),
        "publish_at": parse_time(raw.get("publish_at"), config.site.timezone),
        "priority": _int(raw.get("priority"), "priority"),
        "pinned": _bool(raw.get("pinned", False), "pinned"),
        "guid": guid[:500] if guid else None,
        "status": status,
        "source": _text(raw, "source", lines=False)[:500],
        # A thumbnail (shown with width/height; the alt text is what a reader with images blocked sees).
        "image_url": check_url(str(raw["image"])) if raw.get("image") else "",
        "image_alt": _text(raw, "image_alt", lines=False)[:500],
    }


@dataclass(frozen=True)
class ImportRow:
    """What an import did (or, dry, would do) with one item: ``action`` is created,
    updated, unchanged or refused; ``where`` names the file and line or item."""

    where: str
    action: str
    title: str = ""
    article_id: int | None = None
    problem: str = ""


@dataclass
class ImportReport:
    source: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    rows: list[ImportRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def save(conn, values: dict[str, Any]) -> tuple[str, int]:
    """Insert, or update the article with the same GUID/URL. Returns (action, id)."""
    existing = q.find_existing(conn, guid=values["guid"], url=values["url"])
    if existing is None:
        return "created", q.insert(conn, values)
    if existing.url != values["url"]:
        other = q.find_existing(conn, guid=None, url=values["url"])
        if other is not None and other.id != existing.id:
            # The GUID names one article and the URL another: updating would break the unique URL.
            raise ValueError(f"url '{values['url'][:80]}' already belongs to article {other.id}")
    changes = {k: v for k, v in values.items() if k not in ("status",) and getattr(existing, k) != v}
    # A re-import must not resurrect a withdrawn article or re-queue a published one.
    if existing.status == "draft" and values["status"] == "queued":
        changes["status"] = "queued"
    if not changes:
        return "unchanged", existing.id
    q.update_article(conn, existing.id, changes)
    return "updated", existing.id


def import_items(
    engine: Engine,
    config: Config,
    items: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    source: str,
    strict: bool = False,
    default_fields: Sequence[str] = (),
    dry_run: bool = False,
) -> ImportReport:
    report = ImportReport(source=source)
    updated: list[int] = []
    valid: list[tuple[int, str, dict[str, Any]]] = []
    seen: dict[str, str] = {}
    placed: list[tuple[int, ImportRow]] = []  # the report's rows, put back in file order at the end

    def refuse(pos: int, where: str, problem: str, title: str = "") -> None:
        report.errors.append(f"{where}: {problem}")
        placed.append((pos, ImportRow(where, "refused", title, None, problem)))

    for pos, (where, raw) in enumerate(items):
        try:
            values = validate(raw, config, default_fields=default_fields)
        except ValueError as exc:
            title = raw.get("title") if isinstance(raw, Mapping) else None
            refuse(pos, where, str(exc), title if isinstance(title, str) else "")
            continue
        key = values["guid"] or values["url"]
        if key in seen:
            refuse(pos, where, f"same item as {seen[key]} (guid/url '{key[:80]}')", values["title"])
            continue
        seen[key] = where
        values["source"] = values["source"] or source
        valid.append((pos, where, values))
    if not (strict and report.errors):
        # A dry run does the very same writes in a transaction it then rolls back.
        with engine.connect() as conn, conn.begin() as transaction:
            for pos, where, values in valid:
                try:
                    action, article_id = save(conn, values)  # refuses before it writes
                except ValueError as exc:  # a conflict with stored articles, seen only now
                    if strict and not dry_run:
                        raise InputError(f"{where}: {exc}; nothing imported (--strict)") from None
                    refuse(pos, where, str(exc), values["title"])
                    continue
                setattr(report, action, getattr(report, action) + 1)
                report.ids.append(article_id)
                placed.append((pos, ImportRow(where, action, values["title"], article_id)))
                if action == "updated":
                    updated.append(article_id)
            if updated:  # unsent editions carrying them follow (an approved one goes back to draft)
                from .editions.state import articles_changed
                from .users import Actor

                articles_changed(conn, config, updated, Actor(None), f"re-imported from {source}")
            if dry_run or (strict and report.errors):
                transaction.rollback()
    report.rows = [row for _, row in sorted(placed, key=lambda p: p[0])]
    return report


# --- one article at a time (the CLI's article add/edit/withdraw and the console call these)

EDITABLE = ("title", "url", "summary", "body", "body_format", "author", "priority", "pinned", "guid", "status",
            "source")


def add(engine: Engine, config: Config, raw: Mapping[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """Validate and save one item: (created|updated|unchanged, id, values); ValueError
    naming the problem, nothing written."""
    values = validate(raw, config)
    with engine.begin() as conn:
        action, article_id = save(conn, values)
    return action, article_id, values


def edit(engine: Engine, config: Config, article_id: int, change: Mapping[str, Any],
         actor: Any) -> tuple[list[str], list[str]]:
    """Change an article not yet published: ``change`` holds raw values by key (as
    :func:`validate` reads them; ``publish_at`` None clears the embargo).  Unsent
    editions carrying it follow (an approved one goes back to draft).  Returns
    (changed keys, lines about the editions touched); ValueError for a bad value,
    InputError when the article cannot be edited; nothing written then."""
    from .editions.state import articles_changed

    with engine.begin() as conn:
        row = q.get(conn, article_id)
        if row is None:
            raise InputError(f"article {article_id}: no such article")
        if row.status in ("published", "withdrawn"):
            raise InputError(f"article {article_id}: is {row.status}; it can no longer be edited")
        raw: dict[str, Any] = {k: getattr(row, k) for k in EDITABLE}
        raw["fields"] = row.fields.split(",")
        raw["publish_at"] = row.publish_at
        raw.update(change)
        values = validate(raw, config)
        changes = {k: v for k, v in values.items() if getattr(row, k) != v}
        if changes.get("url") and q.find_existing(conn, guid=None, url=changes["url"]):
            raise InputError(f"article {article_id}: another article already has url {changes['url']}")
        touched: list[str] = []
        if changes:
            q.update_article(conn, article_id, changes)
            touched = articles_changed(conn, config, [article_id], actor,
                                       f"article {article_id} edited ({', '.join(sorted(changes))})")
    return sorted(changes), touched


def withdraw(engine: Engine, config: Config, article_id: int, actor: Any) -> tuple[str, list[str]]:
    """Take an article out of the queue (it stays in editions already sent): (the
    status it had, lines about the unsent editions that dropped it)."""
    from .editions.state import articles_changed

    with engine.begin() as conn:
        row = q.get(conn, article_id)
        if row is None:
            raise InputError(f"article {article_id}: no such article")
        touched: list[str] = []
        if row.status != "withdrawn":
            q.update_article(conn, article_id, {"status": "withdrawn"})
            touched = articles_changed(conn, config, [article_id], actor, f"article {article_id} withdrawn")
    return row.status, touched


# --- readers: each yields (where, raw item) and raises InputError for a whole-file problem


def items_from_json(text: str, where: str) -> list[tuple[str, Mapping[str, Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise InputError(f"{where}: invalid JSON (nested too deeply)") from None
    if isinstance(data, dict) and isinstance(data.get("articles"), list):
        data = data["articles"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InputError(f"{where}: expected a JSON array of articles")
    out = []
    for i, item in enumerate(data, 1):
        out.append((f"{where}: item {i}", item))
    return out


def items_from_csv(text: str, where: str) -> list[tuple[str, Mapping[str, Any]]]:
    return [(f"{where}:{line}", row) for line, row in read_rows(text, where, CSV_ALIASES, ("title", "url"))]


_FRONT_MATTER_RE = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)(.*)\Z", re.S)


def items_from_markdown(text: str, where: str) -> list[tuple[str, Mapping[str, Any]]]:
    import yaml

    m = _FRONT_MATTER_RE.match(text.lstrip("\ufeff"))
    if not m:
        raise InputError(f"{where}:1: no front matter (the file must start with a '---' block of title, url, fields)")
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = (mark.line + 2) if mark else 1
        raise InputError(f"{where}:{line}: invalid front matter ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:
        raise InputError(f"{where}:2: invalid front matter (nested too deeply)") from None
    if not isinstance(meta, dict):
        raise InputError(f"{where}:2: front matter must be key: value pairs")
    item = {str(k): v for k, v in meta.items()}
    item.setdefault("body", m.group(2).strip())
    return [(where, item)]


def items_from_feed(data: bytes, where: str) -> list[tuple[str, Mapping[str, Any]]]:
    import feedparser

    parsed = feedparser.parse(data)
    if parsed.bozo and not parsed.entries:
        raise InputError(f"{where}: not a readable RSS/Atom feed ({parsed.get('bozo_exception')})")
    out = []
    for i, entry in enumerate(parsed.entries, 1):
        link = entry.get("link", "")
        content = ""
        if entry.get("content"):
            content = entry.content[0].get("value", "")
        summary_html = entry.get("summary", "")
        published = entry.get("published_parsed") or entry.get("updated_parsed")
        item: dict[str, Any] = {
            "title": html_to_plain(entry.get("title", "")),
            "url": link,
            "summary": html_to_plain(summary_html)[:1000],
            "body": content or summary_html,
            "body_format": "html",
            "author": entry.get("author", ""),
            "guid": entry.get("id") or link,
        }
        image = _feed_image(entry)
        if image:
            item["image"], item["image_alt"] = image
        tags = [t.get("term", "") for t in entry.get("tags", []) if t.get("term")]
        if tags:
            item["fields"] = tags
        if published:
            item["publish_at"] = datetime(*published[:6], tzinfo=UTC)
        shown = (link if link.isprintable() else repr(link)) or "no link"
        out.append((f"{where}: entry {i} ({shown})", item))
    return out


def _feed_image(entry) -> tuple[str, str] | None:
    """(url, alt) of an entry's picture: Media RSS ``media:thumbnail`` or
    ``media:content`` of an image type, else an image ``<enclosure>``.  Feeds
    carry no alt text we can trust: "" (the mail then uses the headline)."""
    for thumb in entry.get("media_thumbnail") or []:
        if thumb.get("url"):
            return thumb["url"], ""
    for media in entry.get("media_content") or []:
        if media.get("url") and (media.get("medium") == "image" or media.get("type", "").startswith("image/")):
            return media["url"], ""
    for link in entry.get("links") or []:
        if link.get("rel") == "enclosure" and link.get("type", "").startswith("image/") and link.get("href"):
            return link["href"], ""
    return None


def _fields_from_tags(items, config: Config):
    # Feed categories are free text: keep the ones that name our fields, drop the rest,
    # so that a feed tagged "地方自治, 防災" lands in 地方自治.
    for where, item in items:
        if isinstance(item.get("fields"), list):
            known = [t for t in item["fields"] if config.resolve_field(t)]
            item = dict(item)
            if known:
                item["fields"] = known
            else:
                item.pop("fields")
        yield where, item


EXTENSIONS = {".json": "json", ".csv": "csv", ".md": "markdown", ".markdown": "markdown",
              ".xml": "feed", ".rss": "feed", ".atom": "feed"}
KINDS = ("json", "csv", "markdown", "feed")


def kind_of(data: bytes, name: str) -> str:
    """json, csv, markdown or feed: by the name's extension, else by the content."""
    return EXTENSIONS.get(Path(name).suffix.lower()) or _sniff(data, name)


def read_source(source: str, config: Config) -> list[tuple[str, Mapping[str, Any]]]:
    """Items from a file path or an http(s) URL, by extension or content."""
    if re.match(r"^https?://", source):
        data = _fetch(source)
        return read_data(data, source, config, _sniff(data, source))
    path = Path(source)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{source}: is a folder, not a file") from None
    return read_data(data, path.name, config, kind_of(data, source))


def read_data(data: bytes, where: str, config: Config, kind: str) -> list[tuple[str, Mapping[str, Any]]]:
    """Items from the bytes of a file of ``kind`` (:data:`KINDS`); ``where`` names it
    in every message (the console passes the name the user's file had)."""
    if kind == "feed":
        return list(_fields_from_tags(items_from_feed(data, where), config))
    if kind == "csv":
        return items_from_csv(decode(data, "auto", where), where)
    text = read_text_bytes(data, where)
    if kind == "json":
        return items_from_json(text, where)
    return items_from_markdown(text, where)


def read_text_bytes(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{where}:{line}: not valid UTF-8") from None


def _sniff(data: bytes, where: str) -> str:
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:200]
    if head.startswith((b"[", b"{")):
        return "json"
    if head.startswith(b"<"):
        return "feed"
    if head.startswith(b"---"):
        return "markdown"
    if b"," in head:
        return "csv"
    raise InputError(f"{where}: cannot tell the format (use a .json, .csv, .md, .xml/.rss/.atom file)")


def _fetch(url: str) -> bytes:
    import requests

    try:
        resp = requests.get(url, timeout=30, headers={"User-Agent": "newsletter-importer"})
    except requests.RequestException as exc:
        raise InputError(f"{url}: cannot fetch ({exc.__class__.__name__}: {exc})") from None
    if resp.status_code != 200:
        raise InputError(f"{url}: cannot fetch (HTTP {resp.status_code})")
    return resp.content


