"""Sign-in, sign-out and server-side sessions of the console.

Rules kept here:

- A session is a database row (store/sessions.py) keyed by the sha256 of a
  random 256-bit token; the browser's cookie ``nl_admin`` holds the token
  (HttpOnly, SameSite=Lax, path /admin, Secure when ``site.base_url`` is https).
- **Rotated at sign-in**: a successful sign-in always makes a new token and
  deletes the row of the cookie the browser came with, so a token planted before
  sign-in (session fixation) never becomes a signed-in session.
- **Timeouts**: a session ends after :data:`IDLE` without a request and
  :data:`ABSOLUTE` after sign-in, whichever comes first; a disabled user's
  sessions end at once (users.disable), and ``newsletter user logout-all NAME``
  ends all of a user's sessions.
- **Throttled** per account and per client address (the rate-limit counters of
  the sign-up form, store/rate_limits.py), counted before the password is checked; an
  unknown user and a wrong password get the same words and the same work
  (users.verify_password hashes either way).
- Every sign-in and sign-out is an audit row (interface ``console``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ... import users
from ...editions.state import awaiting_approval
from ...store import audit as audit_q
from ...store import rate_limits as lq
from ...store import sessions as q
from ...store import users as users_q
from ...users import Actor
from ..pages import read_form
from ..security import CSRF_FIELD
from ..service import service
from .console import LOGIN, LOGOUT, _localtime, render, room, text, words

if TYPE_CHECKING:
    from ..service import Service

COOKIE = "nl_admin"
IDLE = timedelta(minutes=30)
ABSOLUTE = timedelta(hours=12)
# Sign-in attempts allowed per window: per account, and per client address.
WINDOW_SECONDS = 15 * 60
LIMIT_ACCOUNT = 10
LIMIT_IP = 30
_TOUCH_EVERY = timedelta(seconds=30)  # last_seen_at is written at most this often


@dataclass(frozen=True)
class Session:
    actor: Actor
    email: str
    token_hash: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def current_session(svc: Service, request: Request) -> Session | None:
    """The live session of the request's cookie, else None (an ended one is deleted)."""
    token = request.cookies.get(COOKIE, "")
    if not token or len(token) > 100:
        return None
    digest = _hash(token)
    now = svc.clock()
    with svc.engine.begin() as conn:
        row = q.get(conn, digest)
        if row is None:
            return None
        user = users_q.get(conn, row.user_name)
        if (now - row.last_seen_at > IDLE or now - row.created_at > ABSOLUTE or user is None
                or user.disabled or user.password_hash is None):
            q.delete(conn, digest)
            return None
        if now - row.last_seen_at > _TOUCH_EVERY:
            q.touch(conn, digest, now)
    return Session(Actor(user.name, "console", user.role), user.email, digest)


def _throttled(svc: Service, ip: str, name: str) -> bool:
    now = svc.clock()
    account = "console-login-user:" + hashlib.sha256(name.encode()).hexdigest()
    with svc.engine.begin() as conn:
        over = False
        for key, limit in ((f"console-login-ip:{ip}", LIMIT_IP), (account, LIMIT_ACCOUNT)):
            if lq.hit(conn, key, now, WINDOW_SECONDS) > limit:
                over = True
    return over


def _sign_in(svc: Service, request: Request, name: str) -> str:
    token = secrets.token_urlsafe(32)
    now = svc.clock()
    with svc.engine.begin() as conn:
        old = request.cookies.get(COOKIE)
        if old:
            q.delete(conn, _hash(old))
        q.forget_old(conn, now - IDLE, now - ABSOLUTE)
        q.insert(conn, _hash(token), name, now, svc.clients.ip(request))
        audit_q.add(conn, at=now, actor=name, interface="console", action="signed in",
                    detail=f"from {svc.clients.ip(request)}")
    return token


def _set_cookie(svc: Service, response: Response, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="lax", path="/admin",
                        secure=svc.config.site.base_url.startswith("https://"))


def _login_form(request: Request, status: int = 200, *, name: str = "", error: str | None = None) -> Response:
    return render(request, "login.html.j2", session=None, forms={"login": LOGIN}, status=status,
                  name=name, error=error)


async def login_page(request: Request) -> Response:
    # Always the form, even with a live session: signing in replaces it (rotation).
    return _login_form(request)


async def login_submit(request: Request) -> Response:
    svc = service(request)
    t = words(svc.lang)
    form: FormData = await read_form(request)
    svc.csrf.check(request, form.get(CSRF_FIELD), LOGIN, t["err_csrf"])
    name = text(form, "username").strip()[:64]
    password = text(form, "password")[:1024]
    if await run_in_threadpool(_throttled, svc, svc.clients.ip(request), name):
        return _login_form(request, 429, name=name, error=t["login_throttled"])
    if not name or not password or not await run_in_threadpool(users.verify_password, svc.engine, name, password):
        return _login_form(request, 401, name=name, error=t["login_failed"])
    token = await run_in_threadpool(_sign_in, svc, request, name)
    response = RedirectResponse("/admin/", status_code=303)
    _set_cookie(svc, response, token)
    return response


@room(None)
async def logout(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)

    def end() -> None:
        now = svc.clock()
        with svc.engine.begin() as conn:
            q.delete(conn, session.token_hash)
            audit_q.add(conn, at=now, actor=session.actor.name, interface="console", action="signed out")

    await run_in_threadpool(end)
    response = RedirectResponse(LOGIN, status_code=303)
    response.delete_cookie(COOKIE, path="/admin", httponly=True, samesite="lax",
                           secure=svc.config.site.base_url.startswith("https://"))
    return response


@room(None)
async def home(request: Request, session: Session, form: FormData | None) -> Response:
    awaiting = None  # approvers see the drafts waiting for them (承認待ち)
    if session.actor.may("approve"):
        svc = service(request)
        titles = {p.slug: p.title for p in svc.config.publications}
        rows = await run_in_threadpool(awaiting_approval, svc.engine)
        tz = svc.config.site.timezone
        awaiting = [{"id": r.id, "pub": titles.get(r.publication, r.publication), "number": r.number,
                     "who": r.approval_requested_by or "-", "at": _localtime(r.approval_requested_at, tz)}
                    for r in rows]
    return render(request, "home.html.j2", session=session, awaiting=awaiting)


__all__ = ["COOKIE", "LOGOUT", "Session", "current_session", "home", "login_page", "login_submit", "logout"]
