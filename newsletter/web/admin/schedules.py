"""The operator's room, schedules: each publication's cron in words
(:func:`cron.describe`: 毎週火曜 9:00), the next slots with their holiday moves and
skips (:func:`scheduling.overview`, what ``schedule list`` / ``schedule next``
print), paused or not, the last run; 一時停止 / 再開 are
:func:`scheduling.set_paused`, the CLI's ``schedule pause/resume`` (audit row
included).  Role: operate."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...cron import describe
from ...errors import InputError
from ...scheduling import overview, set_paused
from ..service import service
from .console import render, room

if TYPE_CHECKING:
    from .auth import Session

SLOTS = 5
_JA_WEEKDAYS = "月火水木金土日"


def when(dt: datetime | None, tz: str, lang: str) -> str:
    """A local date and time as an official reads it: 2026年12月1日（火）9:00."""
    if dt is None:
        return "-"
    local = dt.astimezone(ZoneInfo(tz))
    if lang == "en":
        return f"{local:%a} {local.day} {local:%b %Y} {local.hour}:{local:%M}"
    return f"{local.year}年{local.month}月{local.day}日（{_JA_WEEKDAYS[local.weekday()]}）{local.hour}:{local:%M}"


async def _page(request: Request, session: Session, *, error: str = "", status: int = 200) -> Response:
    svc = service(request)
    views = await run_in_threadpool(overview, svc.engine, svc.config, svc.clock(), SLOTS)
    forms = {}
    for v in views:
        slug = v.publication.slug
        forms[f"toggle-{slug}"] = f"/admin/schedules/{slug}/{'resume' if v.paused else 'pause'}"
    return render(request, "schedules.html.j2", session=session, status=status, views=views, forms=forms,
                  words_of=lambda expr: describe(expr, svc.lang), when=lambda dt, tz: when(dt, tz, svc.lang),
                  error=error, done=request.query_params.get("done", ""))


@room("operate")
async def index(request: Request, session: Session, form: FormData | None) -> Response:
    return await _page(request, session)


def _toggle(paused: bool):
    async def handler(request: Request, session: Session, form: FormData | None) -> Response:
        svc = service(request)
        slug = request.path_params["slug"]
        if not any(p.slug == slug for p in svc.config.publications):
            raise HTTPException(404)
        try:
            await run_in_threadpool(set_paused, svc.engine, svc.config, slug, paused, session.actor,
                                    now=svc.clock())
        except InputError as exc:
            return await _page(request, session, error=str(exc), status=400)
        return RedirectResponse(f"/admin/schedules?done={'schedule_pause' if paused else 'schedule_resume'}",
                                status_code=303)

    handler.__name__ = "schedule_pause" if paused else "schedule_resume"
    return room("operate")(handler)


pause = _toggle(True)
resume = _toggle(False)
