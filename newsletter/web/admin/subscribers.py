"""The operator's room, subscribers: search and filters, one subscriber's page
with the full consent history, 配信停止, and the Excel-flavoured export.

Personal data: only operators and admins (``users.CAN["subscribers"]``).
Stopping mail is :func:`subscribers.suppress` — the one way (status, consent row
with the operator's reason, pending deliveries cancelled).  The export is
:func:`subscribers.export_csv` (Japanese headers, BOM, CRLF), written to a
temporary file of our own naming and streamed back; every export is an audit
row.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from ... import subscribers as subs
from ...store import audit as audit_q
from ...store import subscribers as q
from .console import render, room, text, words

if TYPE_CHECKING:
    from ..app import Service
    from .auth import Session

STATUSES = ("active", "pending", "unsubscribed", "bounced", "complained")
SHOWN = 200


def _svc(request: Request) -> Service:
    return request.app.state.svc


@room("subscribers")
async def index(request: Request, session: Session, form: FormData | None) -> Response:
    svc = _svc(request)
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
        return row, q.consent_records(conn, row.id)


async def _page(request: Request, session: Session, subscriber_id: int, *, error: str = "",
                status: int = 200) -> Response:
    svc = _svc(request)
    row, consents = await run_in_threadpool(_load, svc, subscriber_id)
    names = {f.slug: f.name for f in svc.config.fields}
    return render(request, "subscriber.html.j2", session=session, status=status, row=row, consents=consents,
                  names=names, tz=svc.config.site.timezone, error=error, done=request.query_params.get("done", ""),
                  forms={"suppress": f"/admin/subscribers/{row.id}/suppress"})


@room("subscribers")
async def show(request: Request, session: Session, form: FormData | None) -> Response:
    return await _page(request, session, request.path_params["id"])


@room("subscribers")
async def suppress(request: Request, session: Session, form: FormData | None) -> Response:
    svc = _svc(request)
    subscriber_id = request.path_params["id"]
    reason = " ".join(text(form, "reason").split())[:500]
    if not reason:
        return await _page(request, session, subscriber_id, error=words(svc.lang)["err_reason"], status=400)

    def act():
        row, _ = _load(svc, subscriber_id)
        with svc.engine.begin() as conn:
            subs.suppress(conn, [row.id], "unsubscribed", source="console",
                          reason="unsubscribed by an operator",
                          detail=f"by {session.actor.name}: {reason}", ip=svc.clients.ip(request))

    await run_in_threadpool(act)
    return RedirectResponse(f"/admin/subscribers/{subscriber_id}?done=suppress", status_code=303)


@room("subscribers")
async def export(request: Request, session: Session, form: FormData | None) -> Response:
    svc = _svc(request)
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
