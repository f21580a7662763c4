"""The users page (admins only): every user with role and state, adding a user,
disabling one, and ending a user's sessions — :mod:`newsletter.users`' functions,
with its messages beside the fields."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ... import users
from ...errors import InputError
from ...store import audit as audit_q
from ..service import service
from .console import render, room, text

if TYPE_CHECKING:
    from .auth import Session


def _field_of(message: str) -> str:
    """The form field a users.py message is about (its messages start with the option)."""
    for prefix, key in (("--email", "email"), ("--role", "role"), ("password", "password")):
        if message.startswith(prefix):
            return key
    return "name"


async def _page(request: Request, session: Session, *, values=None, errors=None, status=200) -> Response:
    svc = service(request)
    rows = await run_in_threadpool(users.list_users, svc.engine)
    forms = {"add": "/admin/users"}
    for r in rows:
        if not r.disabled and r.name != session.actor.name:
            forms[f"disable-{r.name}"] = f"/admin/users/{r.name}/disable"
        forms[f"logout-{r.name}"] = f"/admin/users/{r.name}/logout"
    return render(request, "users.html.j2", session=session, rows=rows, roles=users.ROLES, forms=forms,
                  values=values or {"name": "", "email": "", "role": "editor"}, errors=errors or {}, status=status,
                  done=request.query_params.get("done", ""))


@room("users")
async def index(request: Request, session: Session, form: FormData | None) -> Response:
    return await _page(request, session)


def _audit(svc, session: Session, action: str, detail: str) -> None:
    with svc.engine.begin() as conn:
        audit_q.add(conn, at=svc.clock(), actor=session.actor.name, interface="console", action=action,
                    detail=detail)


@room("users")
async def add(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    values = {"name": text(form, "name").strip(), "email": text(form, "email").strip(), "role": text(form, "role")}
    try:
        await run_in_threadpool(users.add_user, svc.engine, values["name"], values["email"], values["role"],
                                text(form, "password"))
    except InputError as exc:
        return await _page(request, session, values=values, errors={_field_of(str(exc)): str(exc)}, status=400)
    await run_in_threadpool(_audit, svc, session, "user added", f"{values['name']} ({values['role']})")
    return RedirectResponse("/admin/users?done=user_add", status_code=303)


@room("users")
async def disable(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    name = request.path_params["name"]
    if name == session.actor.name:
        return await _page(request, session, errors={"table": f"user {name}: you cannot disable yourself"},
                           status=400)
    try:
        await run_in_threadpool(users.disable, svc.engine, name)
    except InputError as exc:
        return await _page(request, session, errors={"table": str(exc)}, status=404)
    await run_in_threadpool(_audit, svc, session, "user disabled", name)
    return RedirectResponse("/admin/users?done=user_disable", status_code=303)


@room("users")
async def logout(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    name = request.path_params["name"]
    try:
        count = await run_in_threadpool(users.logout_all, svc.engine, name)
    except InputError as exc:
        return await _page(request, session, errors={"table": str(exc)}, status=404)
    await run_in_threadpool(_audit, svc, session, "sessions ended", f"{name}: {count}")
    return RedirectResponse("/admin/users?done=user_logout", status_code=303)
