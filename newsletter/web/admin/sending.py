"""The operator's room, sending: each edition's progress (sent / pending /
failed), 一時停止 / 再開 / 中止, and the failed deliveries with their reasons and
再送 for the retryable ones.

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
from starlette.responses import RedirectResponse, Response

from ...delivery import edition_eta, not_retryable, retry_failed
from ...editions import state
from ...errors import InputError
from ...store import audit as audit_q
from ...store import editions as q
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


async def _page(request: Request, session: Session, row, *, error: str = "", status: int = 200) -> Response:
    svc = service(request)

    def load():
        with svc.engine.connect() as conn:
            counts = q.counts(conn, row.id)
            failed = [{"email": f.email, "reason": " ".join((f.last_reply or "-").split()), "attempts": f.attempts,
                       "at": f.updated_at, "why_not": not_retryable(f)} for f in q.failed_deliveries(conn, row.id)]
        rate, eta = edition_eta(svc.engine, row.id, svc.clock())
        return counts, failed, rate, eta

    counts, failed, rate, eta = await run_in_threadpool(load)
    base = f"/admin/sending/{row.id}"
    pub = next((p for p in svc.config.publications if p.slug == row.publication), None)
    tz = pub.tz if pub else None
    return render(request, "sending_edition.html.j2", session=session, status=status, row=row, counts=counts,
                  title=pub.title if pub else row.publication,
                  failed=failed, rate=rate, eta=eta, tz=tz, error=error, done=request.query_params.get("done", ""),
                  retryable=sum(1 for f in failed if f["why_not"] is None),
                  forms={n: f"{base}/{n}" for n in ("pause", "resume", "cancel", "retry")})


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
