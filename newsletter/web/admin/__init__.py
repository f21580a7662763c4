"""The web console for editors and operators, served under ``/admin/`` (issue 14).

One module per room; each handler validates its input, calls one library
function and renders the result — the rules live in the library
(editions/state.py, articles.py, subscribers.py, delivery.py, users.py), never
here.  console.py holds the frame every route goes through (session, role,
CSRF); auth.py the sign-in and sessions.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..service import service
from . import articles, audit, auth, editions, reports, schedules, sending, subscribers, users

# The static files of the console (templates/admin/), by public name.  The look it
# shares with the readers' pages is /static/tokens.css and /static/site.css (app.py).
STATIC = {"console.css": "console.css", "progress.js": "progress.js"}


async def static(request: Request) -> Response:
    name = STATIC.get(request.path_params["name"])
    if name is None:
        from starlette.exceptions import HTTPException

        raise HTTPException(404)
    return service(request).static_file("admin", name)


def routes() -> list[Route]:
    """The console's routes, relative to ``/admin``."""
    return [
        Route("/", auth.home, methods=["GET"]),
        Route("/login", auth.login_page, methods=["GET"]),
        Route("/login", auth.login_submit, methods=["POST"]),
        Route("/logout", auth.logout, methods=["POST"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/articles", articles.index, methods=["GET"]),
        Route("/articles/new", articles.new_page, methods=["GET"]),
        Route("/articles/new", articles.create, methods=["POST"]),
        Route("/articles/import", articles.import_page, methods=["GET"]),
        Route("/articles/import", articles.import_check, methods=["POST"]),
        Route("/articles/import/commit", articles.import_commit, methods=["POST"]),
        Route("/articles/{id:int}", articles.edit_page, methods=["GET"]),
        Route("/articles/{id:int}", articles.update, methods=["POST"]),
        Route("/articles/{id:int}/withdraw", articles.withdraw, methods=["POST"]),
        Route("/editions", editions.index, methods=["GET"]),
        Route("/editions/new", editions.create, methods=["POST"]),
        Route("/editions/{id:int}", editions.show, methods=["GET"]),
        Route("/editions/{id:int}/preview", editions.preview_variant, methods=["GET"]),
        *[Route(f"/editions/{{id:int}}/{name}", getattr(editions, name), methods=["POST"])
          for name in ("texts", "add", "remove", "move", "test", "check", "approve", "unapprove", "schedule",
                       "unschedule", "cancel")],
        Route("/editions/{id:int}/request", editions.request_approval, methods=["POST"]),
        Route("/editions/{id:int}/withdraw-request", editions.withdraw_request, methods=["POST"]),
        Route("/subscribers", subscribers.index, methods=["GET"]),
        Route("/subscribers/export", subscribers.export, methods=["POST"]),
        Route("/subscribers/import", subscribers.import_page, methods=["GET"]),
        Route("/subscribers/import", subscribers.import_check, methods=["POST"]),
        Route("/subscribers/import/commit", subscribers.import_commit, methods=["POST"]),
        Route("/subscribers/{id:int}", subscribers.show, methods=["GET"]),
        Route("/subscribers/{id:int}/suppress", subscribers.suppress, methods=["POST"]),
        Route("/subscribers/{id:int}/reactivate", subscribers.reactivate, methods=["POST"]),
        Route("/sending", sending.index, methods=["GET"]),
        Route("/sending/{id:int}", sending.show, methods=["GET"]),
        Route("/sending/{id:int}/progress.json", sending.progress_json, methods=["GET"]),
        Route("/sending/{id:int}/report", reports.show, methods=["GET"]),
        Route("/sending/{id:int}/report/hours.svg", reports.hours, methods=["GET"]),
        Route("/sending/{id:int}/report/csv", reports.csv, methods=["POST"]),
        *[Route(f"/sending/{{id:int}}/{name}", getattr(sending, name), methods=["POST"])
          for name in ("pause", "resume", "cancel", "retry")],
        Route("/schedules", schedules.index, methods=["GET"]),
        Route("/schedules/{slug}/pause", schedules.pause, methods=["POST"]),
        Route("/schedules/{slug}/resume", schedules.resume, methods=["POST"]),
        Route("/audit", audit.index, methods=["GET"]),
        Route("/users", users.index, methods=["GET"]),
        Route("/users", users.add, methods=["POST"]),
        Route("/users/{name}/disable", users.disable, methods=["POST"]),
        Route("/users/{name}/logout", users.logout, methods=["POST"]),
    ]
