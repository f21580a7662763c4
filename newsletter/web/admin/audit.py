"""The audit log page: who did what, when, through which interface, with a filter
by user, action, interface, publication and a date range (days in the site's
time zone, both ends included; a malformed date is said beside its field and
that end is not applied).  Reads store/audit.py only."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from ...store import audit as audit_q
from ...users import INTERFACES, list_users
from ..service import service
from .console import render, room, words

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

    t = words(svc.lang)
    tz = ZoneInfo(svc.config.site.timezone)
    errors: dict[str, str] = {}
    days: dict[str, date] = {}
    for key in ("from", "to"):
        value = p.get(key, "").strip()[:10]
        filters[key] = value
        if value:
            try:
                days[key] = date.fromisoformat(value)
            except ValueError:
                errors[key] = t["err_date"]
    if "from" in days and "to" in days and days["to"] < days["from"]:
        errors["to"] = t["err_date_order"]
        del days["to"]
    since = datetime.combine(days["from"], time(0), tz) if "from" in days else None
    until = datetime.combine(days["to"] + timedelta(days=1), time(0), tz) if "to" in days else None

    # The actions are stored in English; a word of the page's own (承認) finds the ones it names.
    named = [key.removeprefix("audit_") for key, label in t.items()
             if key.startswith("audit_") and filters["action"] and filters["action"] in label]

    def load():
        with svc.engine.connect() as conn:
            return audit_q.search(conn, limit=SHOWN, since=since, until=until, actions=named,
                                  **{k: filters[k] or None for k in ("actor", "action", "interface", "publication")})

    rows = await run_in_threadpool(load)
    names = [u.name for u in await run_in_threadpool(list_users, svc.engine)]
    return render(request, "audit.html.j2", session=session, rows=rows, filters=filters, interfaces=INTERFACES,
                  publications=svc.config.publications, tz=svc.config.site.timezone, shown=SHOWN, errors=errors,
                  users=names,
                  status=400 if errors else 200)
