"""The editor's desk, articles: the list with filters, the article form, 取り下げ.

Handlers only translate between the form and :mod:`newsletter.articles`
(``add``, ``edit``, ``withdraw`` — the rules and the messages of the CLI); an
error is shown beside the field it names, with the user's input kept.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ... import articles as arts
from ...errors import InputError
from ...sanitize import body_html
from ...store import articles as q
from ..service import service
from .console import render, room, text

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
        if needle and needle.lower() not in f"{row.title}\n{row.summary}\n{row.url}".lower():
            continue
        names = [f.name for f in svc.config.fields if f.slug in row.fields.split(",")]
        shown.append({"id": row.id, "title": row.title, "status": row.status, "fields": "、".join(names),
                      "publish_at": _local(row.publish_at, tz), "waiting": waiting, "pinned": row.pinned,
                      "priority": row.priority})
    return render(request, "articles.html.j2", session=session, articles=shown,
                  filters={"status": status, "field": field, "embargo": embargo, "q": needle},
                  statuses=STATUSES, fields=svc.config.fields)


def _form_page(request: Request, session: Session, *, article_id: int | None, values: dict[str, Any],
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
    return _form_page(request, session, article_id=None, errors={},
                      values={"title": "", "url": "", "summary": "", "body": "", "publish_at": "", "priority": "0",
                              "fields": [], "pinned": False, "draft": False})


@room("edit")
async def create(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    values = _values_from(form)
    raw = {**_raw(values), "source": "console"}
    try:
        _, article_id, _ = await run_in_threadpool(arts.add, svc.engine, svc.config, raw)
    except (ValueError, InputError) as exc:
        return _form_page(request, session, article_id=None, values=values,
                          errors={field_of(str(exc)): str(exc)}, status=400)
    return RedirectResponse(f"/admin/articles/{article_id}?saved=1", status_code=303)


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
    if request.query_params.get("saved"):
        notice = "saved"
    elif request.query_params.get("withdrawn"):
        notice = "withdrawn"
    return _form_page(request, session, article_id=row.id, values=_values_of(svc, row), errors={},
                      notice=notice, row=row)


@room("edit")
async def update(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    row = await run_in_threadpool(_get, svc, request.path_params["id"])
    values = _values_from(form)
    change = _raw(values)
    if row.status not in ("draft", "queued"):
        change.pop("status")  # the form's 下書き box speaks only of unsent articles
    try:
        await run_in_threadpool(arts.edit, svc.engine, svc.config, row.id, change, session.actor)
    except (ValueError, InputError) as exc:
        values["body_format"] = row.body_format
        return _form_page(request, session, article_id=row.id, values=values, row=row,
                          errors={field_of(str(exc)): str(exc)}, status=400)
    return RedirectResponse(f"/admin/articles/{row.id}?saved=1", status_code=303)


@room("edit")
async def withdraw(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    row = await run_in_threadpool(_get, svc, request.path_params["id"])
    await run_in_threadpool(arts.withdraw, svc.engine, svc.config, row.id, session.actor)
    return RedirectResponse(f"/admin/articles/{row.id}?withdrawn=1", status_code=303)
