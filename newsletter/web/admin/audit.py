"""The audit log page: who did what, when, through which interface, with a filter
by user, action, interface and publication.  Reads store/audit.py only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from ...store import audit as audit_q
from ...users import INTERFACES
from ..service import service
from .console import render, room

if TYPE_CHECKING:
    from .auth import Session

SHOWN = 500


@room("audit")
async def index(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    p = request.query_params
    filters = {"actor": p.get("actor", "").strip()[:64], "action": p.get("action", "").strip()[:32],
               "interface": p.get("interface", "") if p.get("interface", "") in INTERFACES else "",
               "publication": p.get("publication", "")
               if any(x.slug == p.get("publication") for x in svc.config.publications) else ""}

    def load():
        with svc.engine.connect() as conn:
            return audit_q.search(conn, limit=SHOWN, **{k: v or None for k, v in filters.items()})

    rows = await run_in_threadpool(load)
    return render(request, "audit.html.j2", session=session, rows=rows, filters=filters, interfaces=INTERFACES,
                  publications=svc.config.publications, tz=svc.config.site.timezone, shown=SHOWN)
