"""The operator's room, subscribers: search and filters, one subscriber's page
with the full consent history, 配信停止, and the Excel-flavoured export.

Personal data: only operators and admins (``users.CAN["subscribers"]``).
Stopping mail is :func:`subscribers.suppress` — the one way (status, consent row
with the operator's reason, pending deliveries cancelled); 配信再開 is
:func:`subscribers.reactivate` (reason required, never after a complaint).  The export is
:func:`subscribers.export_csv` (Japanese headers, BOM, CRLF), written to a
temporary file of our own naming and streamed back; every export is an audit
row.
CSV import by upload is :func:`subscribers.import_csv`: a dry run first (the
per-row report), then 取り込む.  The upload is kept under a random name in
``var/console-uploads/`` (never the user's file name) until then (a day at
most), and is at most
``[web] max_body_bytes`` (the body limit of every form).
"""

from __future__ import annotations

import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from ... import subscribers as subs
from ...errors import InputError
from ...store import audit as audit_q
from ...store import subscribers as q
from ..service import service
from .console import render, room, text, words

if TYPE_CHECKING:
    from ..service import Service
    from .auth import Session

STATUSES = ("active", "pending", "unsubscribed", "bounced", "complained")
SHOWN = 200


@room("subscribers")
async def index(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    p = request.query_params
    status = p.get("status", "") if p.get("status", "") in STATUSES else ""
    field = p.get("field", "") if any(f.slug == p.get("field") for f in svc.config.fields) else ""
    fmt = p.get("format", "") if p.get("format", "") in ("html", "text") else ""
    needle = p.get("q", "").strip().lower()[:200]

    def load():
        out, total = [], 0
        with svc.engine.connect() as conn:
            for row in q.list_subscribers(conn, status=status or None, field=field or None):
                if fmt and row.format != fmt:
                    continue
                if needle and needle not in f"{row.email}\n{row.name or ''}".lower():
                    continue
                total += 1
                if len(out) < SHOWN:
                    out.append(row)
        return out, total

    rows, total = await run_in_threadpool(load)
    names = {f.slug: f.name for f in svc.config.fields}
    return render(request, "subscribers.html.j2", session=session, rows=rows, total=total, shown=SHOWN,
                  names=names, statuses=STATUSES, fields=svc.config.fields,
                  filters={"status": status, "field": field, "format": fmt, "q": needle},
                  forms={"export": "/admin/subscribers/export"})


def _load(svc: Service, subscriber_id: int):
    with svc.engine.connect() as conn:
        row = q.get_by_id(conn, subscriber_id)
        if row is None:
            raise HTTPException(404)
        return row, q.consent_records(conn, row.id), subs.has_complained(conn, row)


async def _page(request: Request, session: Session, subscriber_id: int, *, error: str = "",
                status: int = 200, reactivate_error: str = "") -> Response:
    svc = service(request)
    row, consents, complained = await run_in_threadpool(_load, svc, subscriber_id)
    names = {f.slug: f.name for f in svc.config.fields}
    return render(request, "subscriber.html.j2", session=session, status=status, row=row, consents=consents,
                  names=names, tz=svc.config.site.timezone, error=error, done=request.query_params.get("done", ""),
                  reactivate_error=reactivate_error,
                  complained=complained,
                  forms={"suppress": f"/admin/subscribers/{row.id}/suppress",
                         "reactivate": f"/admin/subscribers/{row.id}/reactivate"})


@room("subscribers")
async def show(request: Request, session: Session, form: FormData | None) -> Response:
    return await _page(request, session, request.path_params["id"])


@room("subscribers")
async def suppress(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    subscriber_id = request.path_params["id"]
    reason = " ".join(text(form, "reason").split())[:500]
    if not reason:
        return await _page(request, session, subscriber_id, error=words(svc.lang)["err_reason"], status=400)

    def act():
        row, _, _ = _load(svc, subscriber_id)
        with svc.engine.begin() as conn:
            subs.suppress(conn, [row.id], "unsubscribed", source="console",
                          reason="unsubscribed by an operator",
                          detail=f"by {session.actor.name}: {reason}", ip=svc.clients.ip(request))

    await run_in_threadpool(act)
    return RedirectResponse(f"/admin/subscribers/{subscriber_id}?done=suppress", status_code=303)


@room("subscribers")
async def reactivate(request: Request, session: Session, form: FormData | None) -> Response:
    """配信再開: :func:`subscribers.reactivate` (reason required, never after a complaint)."""
    svc = service(request)
    t = words(svc.lang)
    subscriber_id = request.path_params["id"]
    reason = text(form, "reason")
    if not " ".join(reason.split()):
        return await _page(request, session, subscriber_id, reactivate_error=t["err_reactivate_reason"], status=400)
    await run_in_threadpool(_load, svc, subscriber_id)  # 404 for no such subscriber
    try:
        await run_in_threadpool(lambda: subs.reactivate(svc.engine, subscriber_id, reason, session.actor,
                                                        ip=svc.clients.ip(request), now=svc.clock()))
    except subs.ReactivationRefused as exc:
        message = t["reactivate_refused_complaint" if exc.why == "complaint" else "reactivate_not_needed"]
        return await _page(request, session, subscriber_id, reactivate_error=message, status=400)
    return RedirectResponse(f"/admin/subscribers/{subscriber_id}?done=reactivate", status_code=303)


@room("subscribers")
async def export(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    status = text(form, "status") if text(form, "status") in STATUSES else None
    handle = tempfile.NamedTemporaryFile(prefix="nl-export-", suffix=".csv", delete=False)
    handle.close()
    path = Path(handle.name)

    def write() -> int:
        count = subs.export_csv(svc.engine, svc.config, path, excel=True, status=status)
        with svc.engine.begin() as conn:
            audit_q.add(conn, at=svc.clock(), actor=session.actor.name, interface="console", action="exported",
                        detail=f"{count} subscribers" + (f" ({status})" if status else "") + ", Excel CSV")
        return count

    try:
        await run_in_threadpool(write)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    stamp = svc.clock().astimezone().strftime("%Y%m%d-%H%M")
    return FileResponse(path, media_type="text/csv; charset=utf-8", filename=f"subscribers-{stamp}.csv",
                        background=BackgroundTask(path.unlink, missing_ok=True))


# -- CSV import by upload: a dry run first, then 取り込む --------------------------------

UPLOAD_KEPT_SECONDS = 24 * 3600
_UPLOAD_RE = re.compile(r"^[A-Za-z0-9_-]{32}$")


def _uploads(svc: Service) -> Path:
    """Where uploaded files wait between the dry run and 取り込む: the project's
    ``var/console-uploads``, named by a random token (never by the user)."""
    folder = svc.config.base_dir / "var" / "console-uploads"
    folder.mkdir(parents=True, exist_ok=True)
    stale = time.time() - UPLOAD_KEPT_SECONDS
    for old in folder.glob("*.csv"):  # checked but never imported
        if old.stat().st_mtime < stale:
            old.unlink(missing_ok=True)
    return folder


def _shown(report: subs.ImportReport, stored: str, name: str) -> dict:
    def fix(lines):
        return [line.replace(stored, name) for line in lines]

    return {"rows": report.rows, "created": report.created, "updated": report.updated,
            "rejected": report.rejected, "problems": fix(report.problems)[:200],
            "warnings": fix(report.warnings + report.normalised)[:200]}


def _display_name(value: str) -> str:
    name = Path(value.replace("\\", "/")).name
    return "".join(c for c in name if c.isprintable())[:100] or "upload.csv"


@room("subscribers")
async def import_page(request: Request, session: Session, form: FormData | None) -> Response:
    return render(request, "subscribers_import.html.j2", session=session, report=None, error="", token="",
                  name="", done=None, forms={"check": "/admin/subscribers/import"})


@room("subscribers", upload=True)
async def import_check(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    t = words(svc.lang)
    upload = form.get("file") if form is not None else None
    forms = {"check": "/admin/subscribers/import", "commit": "/admin/subscribers/import/commit"}
    if not isinstance(upload, UploadFile) or not upload.filename:
        return render(request, "subscribers_import.html.j2", session=session, report=None, status=400,
                      error=t["err_upload"], token="", name="", done=None, forms=forms)
    token = secrets.token_urlsafe(24)
    path = _uploads(svc) / f"{token}.csv"
    data = await upload.read()
    path.write_bytes(data)
    name = _display_name(upload.filename)
    try:
        report = await run_in_threadpool(subs.import_csv, svc.engine, svc.config, path, dry_run=True)
    except InputError as exc:
        path.unlink(missing_ok=True)
        return render(request, "subscribers_import.html.j2", session=session, report=None, status=400,
                      error=str(exc).replace(path.name, name), token="", name=name, done=None, forms=forms)
    return render(request, "subscribers_import.html.j2", session=session, report=_shown(report, path.name, name),
                  error="", token=token, name=name, done=None, forms=forms)


@room("subscribers")
async def import_commit(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    t = words(svc.lang)
    token = text(form, "upload")
    name = _display_name(text(form, "name"))
    forms = {"check": "/admin/subscribers/import"}
    path = _uploads(svc) / f"{token}.csv" if _UPLOAD_RE.match(token) else None
    if path is None or not path.is_file():
        return render(request, "subscribers_import.html.j2", session=session, report=None, status=400,
                      error=t["import_expired"], token="", name="", done=None, forms=forms)

    def run():
        try:
            report = subs.import_csv(svc.engine, svc.config, path)
        finally:
            path.unlink(missing_ok=True)
        with svc.engine.begin() as conn:
            audit_q.add(conn, at=svc.clock(), actor=session.actor.name, interface="console", action="imported",
                        detail=f"{name}: {report.created} new, {report.updated} updated, "
                               f"{report.rejected} rows refused")
        return report

    try:
        report = await run_in_threadpool(run)
    except InputError as exc:
        return render(request, "subscribers_import.html.j2", session=session, report=None, status=400,
                      error=str(exc).replace(path.name, name), token="", name="", done=None, forms=forms)
    return render(request, "subscribers_import.html.j2", session=session, report=_shown(report, path.name, name),
                  error="", token="", name=name, done=True, forms=forms)
