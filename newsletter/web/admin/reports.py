"""The operator's room, reading statistics of one edition (閲読の統計): the
figures of ``newsletter edition report N`` — :func:`stats.edition_report`, the
same function — the 48-hour chart (:func:`stats.hours_svg`, served as an image
of its own so the page keeps its strict CSP) and the per-article CSV
(:func:`stats.report_csv_rows`, written by :func:`csvio.write_csv` like the CLI's
``--csv``; every download is an audit row).

Aggregates only: the report holds counts per edition, article, field, variant
and hour, never a subscriber.  Role: operate (operators, approvers, admins)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ... import stats
from ...csvio import write_csv
from ...store import audit as audit_q
from ...store import editions as q
from ..service import service
from .console import render, room

if TYPE_CHECKING:
    from ..service import Service
    from .auth import Session

def _report(svc: Service, edition_id: int):
    with svc.engine.connect() as conn:
        row = q.get_edition(conn, edition_id)
    if row is None:
        raise HTTPException(404)
    return row, stats.edition_report(svc.engine, svc.config, row)


def _title(svc: Service, row) -> str:
    return next((p.title for p in svc.config.publications if p.slug == row.publication), row.publication)


@room("operate")
async def show(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    row, rep = await run_in_threadpool(_report, svc, request.path_params["id"])
    base = f"/admin/sending/{row.id}"
    return render(request, "report.html.j2", session=session, row=row, rep=rep, title=_title(svc, row), base=base,
                  forms={"csv": f"{base}/report/csv"})


@room("operate")
async def hours(request: Request, session: Session, form: FormData | None) -> Response:
    """The 48-hour chart as image/svg+xml (no script, no external resource)."""
    svc = service(request)
    _row, rep = await run_in_threadpool(_report, svc, request.path_params["id"])
    svg = stats.hours_svg(rep) if svc.lang != "en" else stats.hours_svg(rep, title="The first 48 hours (people)")
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@room("operate")
async def csv(request: Request, session: Session, form: FormData | None) -> Response:
    """The per-article clicks as Excel CSV (BOM, CRLF); an audit row says who took it."""
    svc = service(request)

    def write() -> tuple[bytes, str]:
        row, rep = _report(svc, request.path_params["id"])
        with tempfile.TemporaryDirectory(prefix="nl-report-") as folder:
            path = Path(folder) / "report.csv"
            n = write_csv(path, stats.CSV_HEADER, stats.report_csv_rows(rep), excel=True)
            body = path.read_bytes()
        with svc.engine.begin() as conn:
            audit_q.add(conn, at=svc.clock(), actor=session.actor.name, interface="console",
                        action="report exported", publication=row.publication, edition_id=row.id,
                        detail=f"{n} articles, Excel CSV")
        return body, f"report-{row.publication}-{row.number}.csv"

    body, name = await run_in_threadpool(write)
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
