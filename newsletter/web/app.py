"""The ASGI application: routes, error pages; it builds the :class:`.service.Service` the handlers share.

Every failure a client can cause ends as a 4xx page (or a one-line text for
webhooks) that says what was wrong; a 500 would be a bug, and even then the
page says nothing about the server's insides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from ..config import PACKAGED_TEMPLATES, Config
from ..store.tables import utcnow
from ..tokens import signing_keys
from . import admin, archive, pages, tracking, webhooks
from .security import CSRF, AccessLog, BodyLimit, ClientInfo, SecurityHeaders, default_headers
from .service import Service
from .words import table

log = logging.getLogger(__name__)
PACKAGE_TEMPLATES = PACKAGED_TEMPLATES / "web"  # inside the package: found in a wheel install too


def web_templates(config: Config) -> Path:
    """``<templates>/web`` of the project, else the one next to the package (a
    project whose templates folder predates the web service)."""
    own = config.templates_dir / "web"
    if own.is_dir():
        return own
    if PACKAGE_TEMPLATES.is_dir():
        return PACKAGE_TEMPLATES
    from ..errors import ConfigError

    raise ConfigError(f"paths.templates: {own} not found (the web pages' templates)")


def _environment(templates: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2", "atom.j2", "xml"),
                                            default_for_string=True, default=False),
        undefined=jinja2.StrictUndefined,
    )


# The look every page shares, the readers' and the console's (which adds
# /admin/static/console.css): public name → templates/<folder>/<file>.  One copy
# of the Digital Agency design tokens, vendored at a pinned version.
STATIC = {"tokens.css": ("admin", "dads-tokens-1.1.9.css"), "site.css": ("web", "site.css")}


async def stylesheet(request: Request) -> Response:
    found = STATIC.get(request.path_params["name"])
    if found is None:
        raise HTTPException(404)
    svc: Service = request.app.state.svc
    return svc.static_file(*found)


_STATUS_TEXT = {400: "err_bad_request", 404: "err_not_found", 405: "err_method", 413: "err_too_large"}


async def _http_error(request: Request, exc: HTTPException) -> Response:
    svc: Service = request.app.state.svc
    key = _STATUS_TEXT.get(exc.status_code)
    # Starlette's own 404/405 carry English reason phrases; ours carry the page's words.
    detail = exc.detail
    if key and detail in ("Not Found", "Method Not Allowed", "Bad Request", None, ""):
        detail = svc.t[key]
    headers = dict(exc.headers or {})
    if request.url.path.startswith("/webhooks/"):
        return PlainTextResponse(f"error: {detail}\n", status_code=exc.status_code, headers=headers)
    return svc.message(svc.t["error_title"], detail, exc.status_code, headers=headers, error=True)


async def _server_error(request: Request, exc: Exception) -> Response:
    """The last resort, for a bug: the traceback goes to the log (the first path
    segment only: never a token), the client gets the plain error page — no
    traceback, nothing of the server's insides.  No client input should get
    here; tests/test_web_fuzz.py checks that none does."""
    log.error("unhandled error on %s %s: %s", request.method, request.url.path.split("/")[1:2],
              exc.__class__.__name__, exc_info=exc)
    # This response bypasses the middleware (Starlette sends it from the outermost layer).
    headers = default_headers()
    if not request.url.path.startswith("/webhooks/"):
        try:
            svc: Service = request.app.state.svc
            return svc.message(svc.t["error_title"], svc.t["err_internal"], 500, headers=headers, error=True)
        except Exception:  # the page itself cannot be made (a broken template): plain text, still no traceback
            log.exception("the error page cannot be rendered")
    return PlainTextResponse("error: internal error\n", status_code=500, headers=headers)


def create_app(config: Config, engine: Engine | None = None, *, clock: Callable[[], datetime] | None = None,
               send_mail: Callable[..., Any] | None = None) -> Starlette:
    """The subscriber web service for ``config``.  ``send_mail`` replaces the
    provider hand-over (tests); ``clock`` the current time."""
    if engine is None:
        from ..store import open_engine

        engine = open_engine(config.storage_url)
    templates = web_templates(config)
    clients = ClientInfo(config.web.trusted_proxies)
    keys = signing_keys(config)
    svc = Service(config=config, engine=engine, keys=keys, templates=templates, env=_environment(templates),
                  clients=clients, csrf=CSRF(keys, clients), clock=clock or utcnow, send_mail=send_mail)
    routes = [
        Route("/", pages.signup_page, methods=["GET"]),
        Route("/subscribe", pages.signup_submit, methods=["POST"]),
        Route("/confirm/{token}", pages.confirm_page, methods=["GET"]),
        Route("/confirm/{token}", pages.confirm_submit, methods=["POST"]),
        Route("/preferences/{token}", pages.preferences_page, methods=["GET"]),
        Route("/preferences/{token}", pages.preferences_submit, methods=["POST"]),
        Route("/unsubscribe/{token}", pages.unsubscribe_page, methods=["GET"]),
        Route("/unsubscribe/{token}", pages.unsubscribe_submit, methods=["POST"]),
        Route("/static/{name}", stylesheet, methods=["GET"]),
        Route("/archive/", archive.index, methods=["GET"]),
        Route("/archive/feed.atom", archive.feed, methods=["GET"]),
        Route("/archive/{publication}/", archive.index, methods=["GET"]),
        Route("/archive/{publication}/feed.atom", archive.feed, methods=["GET"]),
        Route("/archive/{publication}/{number:int}/", archive.edition, methods=["GET"]),
        Route("/webhooks/{provider}", webhooks.receive, methods=["POST"]),
        *tracking.routes(),  # /r/ and /o/: reading statistics (issue 15)
        Mount("/admin", routes=admin.routes()),  # the console (web/admin/)
    ]
    middleware = [
        Middleware(AccessLog),
        Middleware(SecurityHeaders, hsts=config.site.base_url.startswith("https://")),
        Middleware(BodyLimit, limit=config.web.max_body_bytes, message=table(config.site.language)["err_too_large"]),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=tracking.lifespan,
                    exception_handlers={HTTPException: _http_error, Exception: _server_error})
    app.state.svc = svc
    return app
