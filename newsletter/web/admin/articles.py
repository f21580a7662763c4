"""The editor's desk, articles: the list with filters, the article form, 取り下げ,
and the import of a file by upload.

Handlers only translate between the form and :mod:`newsletter.articles`
(``add``, ``edit``, ``withdraw``, ``read_data``, ``import_items`` — the rules and
the messages of the CLI); an error is shown beside the field it names, with the
user's input kept.

The form's buttons: 保存; プレビュー (the body rendered by the project's one
rule, ``sanitize.body_html``, on the server, nothing saved: it works without
JavaScript); 承認依頼; 取り下げ.  **承認依頼 on an article** means "save,
then ask for approval of the draft that carries it"
(``state.request_for_article``; the 承認を依頼 button of the edition page asks
for that edition directly): in a Japanese office an approval (決裁) is
given to the whole document that goes out — here the edition (号), approved by
the hash of exactly what the approver saw — never to one article alone, and an
editor who presses 承認依頼 after fixing an article expects the 課長 to be asked
about the issue carrying the fixed text.  When the article is in no draft yet
there is nothing to approve: the article is still saved (typing is never lost)
and the page says so and where to go (次号の編集), instead of silently creating
the next edition — choosing what goes into an edition is a separate act.

Import by upload takes exactly what ``newsletter article import`` takes (CSV,
JSON, RSS/Atom, Markdown with front matter; the format by the file's extension,
else its content; 分野 for items that name none, the CLI's ``--field``).  First a
dry run (``import_items(dry_run=True)``: the real import in a transaction rolled
back) shows per item whether it would be added, updated, left unchanged or
refused and why; 取り込む then imports it in one transaction.  Between the two
the file waits in ``var/console-uploads/`` under a random name
(``articles-<token>.<kind>``, never the user's file name; a day at most), and is
at most ``[web] max_body_bytes`` like every form.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ... import articles as arts
from ...editions import state
from ...errors import InputError
from ...sanitize import body_html
from ...store import articles as q
from ...store import audit as audit_q
from ...store import editions as editions_q
from ..service import service
from .console import render, room, text, words
from .subscribers import UPLOAD_KEPT_SECONDS, _uploads

if TYPE_CHECKING:
    from ..service import Service
    from .auth import Session

FORM_KEYS = ("title", "url", "summary", "body", "publish_at", "priority")
# Which form field a library message is about (its first key word wins).
_FIELD_OF = re.compile(r"\b(title|url|summary|body|fields?|publish_at|priority|pinned|status)\b")
STATUSES = q.STATUSES


def field_of(message: str) -> str:
    m = _FIELD_OF.search(message)
    if not m:
        return "form"
    return "fields" if m.group(1) == "field" else m.group(1)


def _local_input(dt: datetime | None, tz: str) -> str:
    """A stored UTC time as a datetime-local value in the site's zone."""
    return "" if dt is None else dt.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%dT%H:%M")


def _local(dt: datetime | None, tz: str) -> str:
    return "" if dt is None else dt.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def _field_choices(svc: Service, selected: set[str]) -> list[dict[str, Any]]:
    return [{"slug": f.slug, "name": f.name, "checked": f.slug in selected} for f in svc.config.fields]


@room("edit")
async def index(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    status = request.query_params.get("status", "")
    field = request.query_params.get("field", "")
    embargo = request.query_params.get("embargo", "")
    needle = request.query_params.get("q", "").strip()[:200]
    status = status if status in STATUSES else ""
    field = field if any(f.slug == field for f in svc.config.fields) else ""
    embargo = embargo if embargo in ("waiting", "open") else ""

    def load():
        with svc.engine.connect() as conn:
            return q.list_articles(conn, status=status or None, field=field or None)

    rows = await run_in_threadpool(load)
    now = svc.clock()
    tz = svc.config.site.timezone
    shown = []
    for row in reversed(rows):  # newest first
        waiting = row.publish_at is not None and row.publish_at > now
        if (embargo == "waiting" and not waiting) or (embargo == "open" and waiting):
            continue
        if needle and needle.lower() not in f"{row.title}\n{row.summary}\n{row.url}\n{row.body}".lower():
            continue
        names = [f.name for f in svc.config.fields if f.slug in row.fields.split(",")]
        shown.append({"id": row.id, "title": row.title, "status": row.status, "fields": "、".join(names),
                      "publish_at": _local(row.publish_at, tz), "waiting": waiting, "pinned": row.pinned,
                      "priority": row.priority})
    return render(request, "articles.html.j2", session=session, articles=shown,
                  filters={"status": status, "field": field, "embargo": embargo, "q": needle},
                  statuses=STATUSES, fields=svc.config.fields)


def _carriers(svc: Service, article_id: int | None) -> list[dict[str, Any]]:
    """The unsent editions carrying the article, as the form shows them."""
    if article_id is None:
        return []
    titles = {p.slug: p.title for p in svc.config.publications}
    with svc.engine.connect() as conn:
        rows = editions_q.unsent_carrying(conn, [article_id])
    return [{"id": r.id, "pub": titles.get(r.publication, r.publication), "number": r.number, "status": r.status,
             "waiting": r.status == "draft" and r.approval_requested_at is not None} for r in rows]


async def _form_page(request: Request, session: Session, *, article_id: int | None, values: dict[str, Any],
                     errors: dict[str, str], status: int = 200, notice: str = "", row=None) -> Response:
    svc = service(request)
    action = "/admin/articles/new" if article_id is None else f"/admin/articles/{article_id}"
    forms = {"article": action}
    if article_id is not None and row is not None and row.status != "withdrawn":
        forms["withdraw"] = f"/admin/articles/{article_id}/withdraw"
    editable = row is None or row.status not in ("published", "withdrawn")
    preview = body_html(values.get("body", ""), values.get("body_format", "markdown")) if values.get("body") else ""
    return render(request, "article_form.html.j2", session=session, forms=forms, status=status,
                  article_id=article_id, values=values, errors=errors, notice=notice, row=row,
                  editable=editable, preview=preview,
                  carriers=await run_in_threadpool(_carriers, svc, article_id),
                  fields=_field_choices(svc, set(values.get("fields") or ())))


def _values_from(form: FormData) -> dict[str, Any]:
    values: dict[str, Any] = {k: text(form, k) for k in FORM_KEYS}
    values["fields"] = [v for v in form.getlist("fields") if isinstance(v, str)]
    values["pinned"] = text(form, "pinned") == "1"
    values["draft"] = text(form, "draft") == "1"
    return values


def _raw(values: dict[str, Any]) -> dict[str, Any]:
    """The form's values as :func:`articles.validate` reads them."""
    return {"title": values["title"], "url": values["url"], "summary": values["summary"], "body": values["body"],
            "fields": values["fields"], "publish_at": values["publish_at"] or None,
            "priority": values["priority"], "pinned": values["pinned"],
            "status": "draft" if values["draft"] else "queued"}


@room("edit")
async def new_page(request: Request, session: Session, form: FormData | None) -> Response:
    return await _form_page(request, session, article_id=None, errors={},
                            values={"title": "", "url": "", "summary": "", "body": "", "publish_at": "",
                                    "priority": "0", "fields": [], "pinned": False, "draft": False})


def _button(form: FormData | None) -> str:
    """Which of the form's buttons was pressed: save (also Enter), preview, request."""
    pressed = text(form, "action")
    return pressed if pressed in ("preview", "request") else "save"


async def _saved(svc: Service, session: Session, article_id: int, pressed: str) -> Response:
    """After a save: 承認依頼 asks for approval of the drafts carrying it."""
    if pressed == "request":
        await run_in_threadpool(state.request_for_article, svc.engine, svc.config, article_id, session.actor,
                                now=svc.clock())
        return RedirectResponse(f"/admin/articles/{article_id}?requested=1", status_code=303)
    return RedirectResponse(f"/admin/articles/{article_id}?saved=1", status_code=303)


@room("edit")
async def create(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    values = _values_from(form)
    pressed = _button(form)
    if pressed == "preview":  # nothing is written
        return await _form_page(request, session, article_id=None, values=values, errors={}, notice="preview")
    raw = {**_raw(values), "source": "console"}
    try:
        _, article_id, _ = await run_in_threadpool(arts.add, svc.engine, svc.config, raw)
    except (ValueError, InputError) as exc:
        return await _form_page(request, session, article_id=None, values=values,
                                errors={field_of(str(exc)): str(exc)}, status=400)
    return await _saved(svc, session, article_id, pressed)


def _get(svc: Service, article_id: int):
    with svc.engine.connect() as conn:
        row = q.get(conn, article_id)
    if row is None:
        raise HTTPException(404)
    return row


def _values_of(svc: Service, row) -> dict[str, Any]:
    return {"title": row.title, "url": row.url, "summary": row.summary, "body": row.body,
            "body_format": row.body_format, "publish_at": _local_input(row.publish_at, svc.config.site.timezone),
            "priority": str(row.priority), "fields": row.fields.split(","), "pinned": row.pinned,
            "draft": row.status == "draft"}


@room("edit")
async def edit_page(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    row = await run_in_threadpool(_get, svc, request.path_params["id"])
    notice = ""
    for key in ("saved", "withdrawn", "requested"):
        if request.query_params.get(key):
            notice = key
    return await _form_page(request, session, article_id=row.id, values=_values_of(svc, row), errors={},
                            notice=notice, row=row)


@room("edit")
async def update(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    row = await run_in_threadpool(_get, svc, request.path_params["id"])
    values = _values_from(form)
    values["body_format"] = row.body_format
    pressed = _button(form)
    if pressed == "preview":  # nothing is written
        return await _form_page(request, session, article_id=row.id, values=values, errors={}, row=row,
                                notice="preview")
    change = _raw(values)
    if row.status not in ("draft", "queued"):
        change.pop("status")  # the form's 下書き box speaks only of unsent articles
    try:
        await run_in_threadpool(arts.edit, svc.engine, svc.config, row.id, change, session.actor)
    except (ValueError, InputError) as exc:
        return await _form_page(request, session, article_id=row.id, values=values, row=row,
                                errors={field_of(str(exc)): str(exc)}, status=400)
    return await _saved(svc, session, row.id, pressed)


@room("edit")
async def withdraw(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    row = await run_in_threadpool(_get, svc, request.path_params["id"])
    await run_in_threadpool(arts.withdraw, svc.engine, svc.config, row.id, session.actor)
    return RedirectResponse(f"/admin/articles/{row.id}?withdrawn=1", status_code=303)


# -- import by upload: the per-item report of a dry run first, then 取り込む --------------

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32}$")
UPLOAD_PREFIX = "articles-"
SHOWN_ROWS = 500  # rows of the report shown; the counts are of every item


def _folder(svc: Service) -> Path:
    folder = _uploads(svc)
    stale = time.time() - UPLOAD_KEPT_SECONDS
    for old in folder.glob(f"{UPLOAD_PREFIX}*"):  # checked but never imported
        if old.stat().st_mtime < stale:
            old.unlink(missing_ok=True)
    return folder


def _display_name(value: str) -> str:
    """The user's file name, for messages only: no folders, printable, short."""
    name = Path(value.replace("\\", "/")).name
    return "".join(c for c in name if c.isprintable())[:100] or "upload"


def _import_fields(svc: Service, form: FormData | None) -> list[str]:
    """The 分野 for items that name none (the CLI's --field): known slugs only."""
    chosen = [v for v in (form.getlist("fields") if form is not None else []) if isinstance(v, str)]
    for value in chosen:
        if svc.config.resolve_field(value) is None:
            raise InputError(f"--field: unknown field '{value[:40]}'")
    return chosen


def _import_page(request: Request, session: Session, *, status: int = 200, report=None, error: str = "",
                 token: str = "", name: str = "", chosen: list[str] | None = None, done: bool = False) -> Response:
    svc = service(request)
    forms = {"check": "/admin/articles/import"}
    if token:
        forms["commit"] = "/admin/articles/import/commit"
    shown = None
    if report is not None:
        # The file's name is the report's heading: each row says only where in it (line 2, item 3).
        rows = [{"where": r.where.removeprefix(name).lstrip(":").strip() or "1", "action": r.action,
                 "title": r.title, "article_id": r.article_id, "problem": r.problem}
                for r in report.rows[:SHOWN_ROWS]]
        shown = {"created": report.created, "updated": report.updated, "unchanged": report.unchanged,
                 "refused": len(report.errors), "total": len(report.rows), "rows": rows}
    return render(request, "articles_import.html.j2", session=session, status=status, forms=forms, report=shown,
                  error=error, token=token, name=name, done=done, shown_rows=SHOWN_ROWS,
                  fields=_field_choices(svc, set(chosen or ())))


@room("edit")
async def import_page(request: Request, session: Session, form: FormData | None) -> Response:
    return _import_page(request, session)


@room("edit", upload=True)
async def import_check(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    t = words(svc.lang)
    upload = form.get("file") if form is not None else None
    try:
        chosen = _import_fields(svc, form)
    except InputError as exc:
        return _import_page(request, session, status=400, error=str(exc))
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _import_page(request, session, status=400, error=t["err_article_upload"], chosen=chosen)
    name = _display_name(upload.filename)
    data = await upload.read()

    def check():
        kind = arts.kind_of(data, name)
        items = arts.read_data(data, name, svc.config, kind)
        report = arts.import_items(svc.engine, svc.config, items, source=name, default_fields=chosen, dry_run=True)
        return kind, report

    try:
        kind, report = await run_in_threadpool(check)
    except InputError as exc:  # a whole-file problem: nothing kept
        return _import_page(request, session, status=400, error=str(exc), name=name, chosen=chosen)
    token = ""
    if report.created or report.updated:  # something to import: keep the file for 取り込む
        token = secrets.token_urlsafe(24)
        (_folder(svc) / f"{UPLOAD_PREFIX}{token}.{kind}").write_bytes(data)
    return _import_page(request, session, report=report, token=token, name=name, chosen=chosen)


@room("edit")
async def import_commit(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    t = words(svc.lang)
    token = text(form, "upload")
    name = _display_name(text(form, "name"))
    try:
        chosen = _import_fields(svc, form)
    except InputError as exc:
        return _import_page(request, session, status=400, error=str(exc))
    path = None
    if _TOKEN_RE.match(token):
        path = next((p for kind in arts.KINDS if (p := _folder(svc) / f"{UPLOAD_PREFIX}{token}.{kind}").is_file()),
                    None)
    if path is None:
        return _import_page(request, session, status=400, error=t["import_expired"], chosen=chosen)

    def run():
        try:
            data = path.read_bytes()
        finally:
            path.unlink(missing_ok=True)  # one import per check
        items = arts.read_data(data, name, svc.config, path.suffix[1:])
        report = arts.import_items(svc.engine, svc.config, items, source=name, default_fields=chosen)
        with svc.engine.begin() as conn:
            audit_q.add(conn, at=svc.clock(), actor=session.actor.name, interface="console", action="imported",
                        detail=f"articles from {name}: {report.created} new, {report.updated} updated, "
                               f"{report.unchanged} unchanged, {len(report.errors)} refused")
        return report

    try:
        report = await run_in_threadpool(run)
    except InputError as exc:
        return _import_page(request, session, status=400, error=str(exc), chosen=chosen)
    return _import_page(request, session, report=report, name=name, chosen=chosen, done=True)
