"""``/r/<token>/<reader>`` (a tracked click) and ``/o/<token>/<reader>.gif`` (the open pixel).

Rules these handlers keep:

- The redirect goes only to a URL of the edition's frozen content, found by
  the signed link index (:func:`newsletter.links.read_click`), never to
  anything taken from the request: a forged, truncated or foreign token gets
  the "link cannot be opened" page (404) with a link to the archive.  A forged
  or truncated open token, or reader part, gets 404 (no pixel).  Nothing here answers 5xx.
- The edition's links are read once and kept in memory (``svc.cache``), so the
  redirect answers 302 with the database down for every edition already seen
  (editions sent within their retention are loaded at start-up, best effort).
  An edition never seen while the database is down gets a "try again later"
  page (200), not an error.
- Counting never slows the answer: the event goes to the in-memory
  :class:`newsletter.stats.EventBuffer`, whose thread writes it (a clean stop
  writes everything: :func:`lifespan`).  What is stored, and whether the
  request is a machine's, is :mod:`newsletter.stats`'s business.  A bad
  reader part (the per-message key) does not stop the redirect; the click is
  counted without a reader.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .. import stats
from ..links import archive_url, decode_variant, read_click, read_open, read_reader, tracked_links
from ..store import stats as sq
from ..store.editions import load_content
from ..store.tables import editions
from .security import user_agent
from .service import service

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger(__name__)

# The smallest transparent GIF (1×1).
PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
NO_STORE = {"Cache-Control": "no-store, private"}


class _Edition:
    __slots__ = ("content", "links", "publication")

    def __init__(self, row):
        self.publication = row.publication
        self.content = load_content(row)
        self.links = tracked_links(self.content)


def buffer(svc: Service) -> stats.EventBuffer:
    """The service's event buffer (made on first use)."""
    buf = svc.cache.get("stats_buffer")
    if buf is None:
        buf = svc.cache["stats_buffer"] = stats.EventBuffer(lambda events: sq.write_events(svc.engine, events))
    return buf


def _load(svc: Service, edition_id: int) -> _Edition | None:
    with svc.engine.connect() as conn:
        row = conn.execute(select(editions).where(editions.c.id == edition_id)).first()
    return _Edition(row) if row is not None else None


async def _edition(svc: Service, edition_id: int) -> _Edition | None | str:
    """The edition's links (cached), None when there is no such edition,
    ``"unavailable"`` when the database cannot be asked."""
    key = ("tracked", edition_id)
    if key in svc.cache:
        return svc.cache[key]
    try:
        found = await run_in_threadpool(_load, svc, edition_id)
    except SQLAlchemyError as exc:
        log.warning("tracking: edition %s cannot be read (%s)", edition_id, exc.__class__.__name__)
        return "unavailable"
    if found is not None:
        svc.cache[key] = found
    return found


def _mode(svc: Service, publication: str) -> str:
    for p in svc.config.publications:
        if p.slug == publication:
            return p.tracking
    return "off"  # a publication no longer in config: count nothing


def _count(svc: Service, request: Request, kind: str, edition_id: int, ed: _Edition, variant: str,
           link: int | None) -> None:
    mode = _mode(svc, ed.publication)
    if mode == "off":
        return
    verdict = stats.classify(kind, request.method, svc.clients.ip(request), user_agent(request))
    reader = read_reader(svc.keys, request.path_params.get("reader", ""))
    decoded = decode_variant(ed.content, variant)
    part, fields = decoded if decoded else (None, ())
    event: dict[str, Any] = {
        "edition_id": edition_id, "kind": kind, "link": link,
        "article_id": ed.links[link][1] if link is not None else None,
        "part": part if kind == "click" else "html", "fields": ",".join(fields),
        "reader": reader[0] if reader else None, "machine": verdict.machine, "reason": verdict.reason,
        "via_proxy": verdict.via_proxy, "source": "web", "at": svc.clock(),
        "sent_at": datetime.fromtimestamp(reader[1], UTC) if reader else None,
    }
    stored = stats.intake(mode, event)
    if stored is not None:
        buffer(svc).add(stored)


def _landing(svc: Service, text_key: str, status: int) -> Response:
    return svc.message(svc.t["link_invalid_title"], svc.t[text_key], status, error=True,
                       link=archive_url(""), link_text=svc.t["archive_link"])


async def click(request: Request) -> Response:
    svc = service(request)
    # One route for everything under /r/, so that any path there gets this page.
    token, _, reader = request.path_params["rest"].partition("/")
    request.path_params["reader"] = reader
    got = read_click(svc.keys, token)
    if got is None:
        return _landing(svc, "link_invalid_text", 404)
    edition_id, index, variant = got
    ed = await _edition(svc, edition_id)
    if ed == "unavailable":
        return _landing(svc, "link_later_text", 200)
    if ed is None or index >= len(ed.links):
        return _landing(svc, "link_invalid_text", 404)
    try:
        _count(svc, request, "click", edition_id, ed, variant, index)
    except Exception:  # counting must never cost the reader the redirect
        log.exception("tracking: a click could not be counted")
    return RedirectResponse(ed.links[index][0], status_code=302, headers=NO_STORE)


async def pixel(request: Request) -> Response:
    svc = service(request)
    got = read_open(svc.keys, request.path_params["token"])
    if got is None or read_reader(svc.keys, request.path_params["reader"]) is None:
        return Response(b"", status_code=404, headers=NO_STORE)
    edition_id, variant = got
    ed = await _edition(svc, edition_id)
    if ed is None:
        return Response(b"", status_code=404, headers=NO_STORE)
    if ed != "unavailable":
        try:
            _count(svc, request, "open", edition_id, ed, variant, None)
        except Exception:
            log.exception("tracking: an open could not be counted")
    # The pixel is shown inside webmail pages of other origins (the app's default is same-origin).
    return Response(PIXEL, media_type="image/gif", headers={**NO_STORE, "Cross-Origin-Resource-Policy": "cross-origin"})


def routes() -> list[Route]:
    return [
        Route("/r/{rest:path}", click, methods=["GET"]),
        Route("/o/{token}/{reader}.gif", pixel, methods=["GET"]),
    ]


def _warm(svc: Service) -> None:
    """Load the links of the editions still within their retention (best effort)."""
    tracked = [p for p in svc.config.publications if p.tracking != "off"]
    if not tracked:
        return
    oldest = svc.clock() - timedelta(seconds=max(p.tracking_retention for p in tracked))
    try:
        with svc.engine.connect() as conn:
            rows = list(conn.execute(select(editions).where(
                editions.c.publication.in_([p.slug for p in tracked]), editions.c.created_at >= oldest)))
    except SQLAlchemyError as exc:
        log.warning("tracking: editions not preloaded (%s)", exc.__class__.__name__)
        return
    for row in rows:
        svc.cache[("tracked", row.id)] = _Edition(row)


@contextlib.asynccontextmanager
async def lifespan(app):
    """Preload the tracked editions at start; write every buffered event at stop."""
    svc: Service = app.state.svc
    await run_in_threadpool(_warm, svc)
    try:
        yield
    finally:
        buf = svc.cache.get("stats_buffer")
        if buf is not None:
            await run_in_threadpool(buf.close)
