"""What every web handler shares: the config, the engine, the signing keys, the
page templates, the CSRF guard.  One :class:`Service` is made by
:func:`..app.create_app`; a handler gets it with :func:`service` (and never
imports the app that assembles it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..config import PACKAGED_TEMPLATES, Config
from ..store.tables import utcnow
from .security import CSRF, ClientInfo
from .words import table


@dataclass
class Service:
    """What the handlers share (on ``request.app.state.svc``)."""

    config: Config
    engine: Engine
    keys: list[bytes]
    templates: Path
    env: jinja2.Environment
    clients: ClientInfo
    csrf: CSRF
    clock: Callable[[], datetime] = utcnow
    send_mail: Callable[..., Any] | None = None
    cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def lang(self) -> str:
        return self.config.site.language

    @property
    def t(self) -> dict[str, str]:
        return table(self.lang)

    def page(self, name: str, status: int = 200, headers: dict[str, str] | None = None, **ctx: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(
            t=self.t, lang=self.lang, site=self.config.site, sender=self.config.sender, **ctx)
        return HTMLResponse(html, status_code=status, headers=headers)

    def form_page(self, request: Request, name: str, actions: dict[str, str], status: int = 200,
                  **ctx: Any) -> HTMLResponse:
        """A page with forms (``actions``: name → path): each form's CSRF token
        is ``csrf[name]``, and the CSRF cookie is set when the browser has none."""
        tokens, new_cookie = self.csrf.tokens(request, *actions.values())
        response = self.page(name, status, actions=actions, csrf=dict(zip(actions, tokens, strict=True)), **ctx)
        self.csrf.set_cookie(request, response, new_cookie)
        return response

    def message(self, title: str, text: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        return self.page("message.html.j2", status, title=title, text=text, **ctx)

    def static_file(self, folder: str, name: str) -> Response:
        """``templates/<folder>/<name>`` (CSS, or the console's one script): the
        project's copy, else the packaged one; read once.  Styles and scripts are
        files because the Content-Security-Policy allows nothing inline."""
        key = ("static", folder, name)
        body = self.cache.get(key)
        if body is None:
            own = self.config.templates_dir / folder / name
            path = own if own.is_file() else PACKAGED_TEMPLATES / folder / name
            body = self.cache[key] = path.read_text(encoding="utf-8")
        media = "text/javascript; charset=utf-8" if name.endswith(".js") else "text/css; charset=utf-8"
        return Response(body, media_type=media, headers={"Cache-Control": "public, max-age=3600"})


def service(request: Request) -> Service:
    """The application's :class:`Service`, for a handler."""
    return request.app.state.svc
