"""The operator's room, sending: each edition's progress (sent / pending /
deferred / failed, rate, ETA: :func:`delivery.progress`), its bounces and
complaints (:func:`bounces.edition_bounces`), 一時停止 / 再開 / 中止, and the
failed deliveries with their reasons and 再送 for the retryable ones.

Live figures: without JavaScript the page shows them as of its loading, with a
更新 link.  No ``<meta http-equiv="refresh">``: a reload while the operator is
reading the failures or about to press 配信を中止 would move the page and the
focus under them (and a screen reader would start the page again), and JIS X
8341-3 (WCAG 2.2.1) asks that a page not change by itself.  With JavaScript,
``progress.js`` (a static file of ours: the page's CSP allows ``script-src
'self'`` and nothing inline) polls ``progress.json`` — the same guard, the same
library function — and updates the figures in place; a polite live region says
the state in words when it changes, and at most every half minute while sending.

Pause, resume and cancel are :mod:`editions.state`'s transitions (audit rows
included); which failures may be sent again is :func:`delivery.not_retryable`
and sending them again is :func:`delivery.retry_failed` — the CLI's
``edition failures`` / ``edition retry --failed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ...bounces import edition_bounces
from ...delivery import not_retryable, progress, retry_failed
from ...editions import state
from ...errors import InputError
from ...store import audit as audit_q
from ...store import editions as q
from ..security import CSP
from ..service import service
from .console import render, room

if TYPE_CHECKING:
    from ..service import Service
    from .auth import Session


@room("operate")
async def index(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)

    def load():
        with svc.engine.connect() as conn:
            return [{"row": r, "counts": q.counts(conn, r.id),
                     "title": svc.config.publication(r.publication).title
                     if any(p.slug == r.publication for p in svc.config.publications) else r.publication}
                    for r in q.list_editions(conn, None, limit=50)]

    return render(request, "sending.html.j2", session=session, editions=await run_in_threadpool(load))


def _row(svc: Service, edition_id: int):
    with svc.engine.connect() as conn:
        row = q.get_edition(conn, edition_id)
    if row is None:
        raise HTTPException(404)
    return row


# The sending page runs one script of ours (static/progress.js) and fetches its JSON.
PAGE_CSP = CSP + "; script-src 'self'; connect-src 'self'"


async def _page(request: Request, session: Session, row, *, error: str = "", status: int = 200) -> Response:
    svc = service(request)

    def load():
        with svc.engine.connect() as conn:
            failed = [{"email": f.email, "reason": " ".join((f.last_reply or "-").split()), "attempts": f.attempts,
                       "at": f.updated_at, "why_not": not_retryable(f)} for f in q.failed_deliveries(conn, row.id)]
        return failed, progress(svc.engine, row.id, svc.clock()), edition_bounces(svc.engine, row.id)

    failed, now, bounced = await run_in_threadpool(load)
    base = f"/admin/sending/{row.id}"
    pub = next((p for p in svc.config.publications if p.slug == row.publication), None)
    tz = pub.timezone if pub else svc.config.site.timezone
    response = render(request, "sending_edition.html.j2", session=session, status=status, row=row, p=now,
                      title=pub.title if pub else row.publication, bounced=bounced,
                      failed=failed, tz=tz, error=error, done=request.query_params.get("done", ""),
                      retryable=sum(1 for f in failed if f["why_not"] is None), base=base,
                      forms={n: f"{base}/{n}" for n in ("pause", "resume", "cancel", "retry")})
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


@room("operate")
async def progress_json(request: Request, session: Session, form: FormData | None) -> Response:
    """The live figures of one edition (the page's script polls this)."""
    svc = service(request)
    found = await run_in_threadpool(progress, svc.engine, request.path_params["id"], svc.clock())
    if found is None:
        raise HTTPException(404)
    return JSONResponse(found.as_json(), headers={"Cache-Control": "no-store"})


@room("operate")
async def show(request: Request, session: Session, form: FormData | None) -> Response:
    row = await run_in_threadpool(_row, service(request), request.path_params["id"])
    return await _page(request, session, row)


def _action(name: str, call):
    async def handler(request: Request, session: Session, form: FormData | None) -> Response:
        svc = service(request)
        row = await run_in_threadpool(_row, svc, request.path_params["id"])
        try:
            await run_in_threadpool(call, svc, session, row)
        except InputError as exc:
            fresh = await run_in_threadpool(_row, svc, row.id)
            return await _page(request, session, fresh, error=str(exc), status=400)
        return RedirectResponse(f"/admin/sending/{row.id}?done={name}", status_code=303)

    handler.__name__ = f"sending_{name}"
    return room("operate")(handler)


def _retry(svc: Service, session: Session, row) -> None:
    done = retry_failed(svc.engine, row.id, now=svc.clock())
    with svc.engine.begin() as conn:  # retry_failed keeps no audit row of its own (yet): say who did it
        audit_q.add(conn, at=svc.clock(), actor=session.actor.name, interface="console", action="retried",
                    publication=row.publication, edition_id=row.id,
                    detail=f"{done.requeued} failed deliveries back to pending")


pause = _action("pause", lambda svc, s, row: state.pause(svc.engine, svc.config, row.id, s.actor, now=svc.clock()))
resume = _action("resume", lambda svc, s, row: state.resume(svc.engine, svc.config, row.id, s.actor, now=svc.clock()))
cancel = _action("cancel", lambda svc, s, row: state.cancel(svc.engine, svc.config, row.id, s.actor, now=svc.clock()))
retry = _action("retry", _retry)
