"""The subscriber's pages: sign-up (double opt-in), confirmation, the
preference center and unsubscribe (with RFC 8058 one-click).

Links and what they may do:

- ``/confirm/<token>``: expiring (``[web] confirm_expiry``), single-use.  GET
  only shows the page; the POST from its button activates the address (link
  scanners prefetch GETs, and a prefetch must not subscribe anyone).
- ``/preferences/<token>`` and ``/unsubscribe/<token>``: the signed links of
  every mail, valid for ever.  GET never changes anything.
- ``POST /unsubscribe/<token>`` with ``List-Unsubscribe=One-Click``
  (form-urlencoded or multipart): unsubscribes at once and answers 200 — no
  cookies, no CSRF token, never a redirect (RFC 8058 §3.2).  Without that
  field it is the page's own form, which needs its CSRF token.

Every URL here is built by :mod:`newsletter.links` (signed with the current
key); tokens are verified against all of ``tokens.signing_keys`` (``svc.keys``),
so links sent before a key rotation keep working.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .. import links
from .. import subscribers as subs
from ..sanitize import header_safe
from ..store import rate_limits as lq
from ..store import signups as signup_q
from ..store import subscribers as sq
from ..tokens import verify_expiring_token, verify_token
from . import mails
from .security import CSRF_FIELD, user_agent
from .service import service

if TYPE_CHECKING:
    from .service import Service

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
MAX_FORM_FIELDS = 100


async def read_form(request: Request) -> FormData:
    """The POSTed form, or a 4xx: 415 for another content type, 400 for a body
    that cannot be parsed or carries files, 413 past the size limit."""
    svc = service(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in FORM_TYPES:
        raise HTTPException(415, svc.t["err_content_type"])
    try:
        form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    except HTTPException as exc:
        if exc.status_code == 413:
            raise
        raise HTTPException(400, svc.t["err_bad_form"]) from None
    except (ValueError, UnicodeDecodeError, KeyError):
        raise HTTPException(400, svc.t["err_bad_form"]) from None
    return form


def _get(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def mask(email: str) -> str:
    local, _, domain = email.rpartition("@")
    return f"{local[:2]}{'*' * max(3, len(local) - 2)}@{domain}"


def _check_csrf(request: Request, form: FormData) -> None:
    svc = service(request)
    svc.csrf.check(request, form.get(CSRF_FIELD), request.url.path, svc.t["err_csrf"])


def _field_choices(svc: Service, selected: set[str]) -> list[dict[str, Any]]:
    return [{"slug": f.slug, "name": f.name, "checked": f.slug in selected} for f in svc.config.fields]


# -- sign-up ---------------------------------------------------------------------

def _signup_form(request: Request, status: int = 200, values: dict[str, Any] | None = None,
                 errors: dict[str, str] | None = None) -> Response:
    svc = service(request)
    values = values or {}
    selected = set(values.get("fields") or ())
    return svc.form_page(
        request, "signup.html.j2", {"signup": "/subscribe"}, status,
        values=values, errors=errors or {}, fields=_field_choices(svc, selected),
        consent_version=svc.config.web.consent_version,
        # Reading statistics kept per reader must be in the consent wording (issue 15).
        tracked=[p.title for p in svc.config.publications if p.tracking == "per-subscriber"],
    )


async def signup_page(request: Request) -> Response:
    return _signup_form(request)


def validate_signup(svc: Service, form: FormData) -> tuple[dict[str, Any], dict[str, str]]:
    """(values, errors by form field): the errors are the page's words."""
    t = svc.t
    errors: dict[str, str] = {}
    shown: dict[str, Any] = {}
    raw_email = _get(form, "email").strip()
    shown["email"] = raw_email[:320]
    email = ""
    if not raw_email:
        errors["email"] = t["err_email_missing"]
    elif len(raw_email) > 320:
        errors["email"] = t["err_email_invalid"]
    else:
        try:
            email = subs.normalize_email(raw_email)
        except ValueError:
            errors["email"] = t["err_email_invalid"]
    chosen = [v for v in form.getlist("fields") if isinstance(v, str)]
    slugs = []
    for token in chosen:
        slug = svc.config.resolve_field(token)
        if slug is None:
            errors["fields"] = t["err_field_unknown"].format(field=header_safe(token)[:40])
            break
        slugs.append(slug)
    if not chosen:
        errors["fields"] = t["err_fields_missing"]
    shown["fields"] = slugs
    try:
        fmt = subs.parse_format(_get(form, "format") or "html")
    except ValueError:
        errors["format"] = t["err_format"]
        fmt = "html"
    shown["format"] = fmt
    raw_name = _get(form, "name")
    name = header_safe(raw_name)
    if len(name) > 200 or (raw_name and name != raw_name.strip()):
        errors["name"] = t["err_name"]
    shown["name"] = name[:200]
    if _get(form, "agree") not in ("1", "on", "yes"):
        errors["agree"] = t["err_consent"]
    values = {"email": email, "name": name, "fields": ",".join(svc.config.sort_fields(slugs)) if slugs else "",
              "format": fmt, "charset": None, "publications": None}
    return (values if not errors else shown), errors


def _rate_limited(svc: Service, ip: str, email: str) -> tuple[str, float] | None:
    """Count this sign-up against the per-IP and per-address limits; the
    message key and seconds to wait when one is exceeded."""
    web = svc.config.web
    now = svc.clock()
    address_key = "signup-address:" + hashlib.sha256(email.encode()).hexdigest()
    longest = max(web.signup_limit_ip.seconds, web.signup_limit_address.seconds)
    with svc.engine.begin() as conn:
        lq.forget_old_limits(conn, now - timedelta(seconds=longest))
        for key, limit, message in ((f"signup-ip:{ip}", web.signup_limit_ip, "err_rate_ip"),
                                    (address_key, web.signup_limit_address, "err_rate_address")):
            if lq.hit(conn, key, now, limit.seconds) > limit.count:
                return message, lq.window_left(conn, key, now, limit.seconds)
    return None


async def signup_submit(request: Request) -> Response:
    svc = service(request)
    form = await read_form(request)
    _check_csrf(request, form)
    values, errors = validate_signup(svc, form)
    if errors:
        return _signup_form(request, 400, values, errors)
    ip = svc.clients.ip(request)
    limited = await run_in_threadpool(_rate_limited, svc, ip, values["email"])
    if limited:
        key, wait = limited
        return svc.message(svc.t["error_title"], svc.t[key], 429, headers={"Retry-After": str(int(wait) + 1)},
                           error=True)
    now = svc.clock()
    expires = now + timedelta(seconds=svc.config.web.confirm_expiry_seconds)
    hours = round(svc.config.web.confirm_expiry_seconds / 3600)
    requested = await run_in_threadpool(
        subs.request_signup, svc.engine, values, ip=ip, user_agent=user_agent(request),
        wording_version=svc.config.web.consent_version, now=now, expires=expires,
    )
    base = svc.config.site.base_url
    if requested.already:
        url = links.preferences_url(base, svc.keys[0], requested.subscriber_id)
        mail = mails.notice_mail(svc.config, svc.templates, requested.email, url)
    else:
        url = links.confirm_url(base, svc.keys[0], requested.signup_id, int(expires.timestamp()))
        mail = mails.confirmation_mail(svc.config, svc.templates, requested.email, url, hours)
    message = mails.outgoing(svc.config, mail, now)
    result = await run_in_threadpool(svc.send_mail or mails.send, svc.config, message)
    if result.status != "accepted":
        return svc.message(svc.t["error_title"], svc.t["err_send"], 503, error=True)
    return svc.message(svc.t["sent_title"], svc.t["sent_text"].format(hours=hours))


# -- confirmation ----------------------------------------------------------------

def _signup_for(svc: Service, token: str):
    checked = verify_expiring_token(svc.keys, "confirm", token, svc.clock().timestamp())
    if checked is None:
        raise HTTPException(400, svc.t["err_link_invalid"])
    if checked.expired:
        raise HTTPException(410, svc.t["err_link_expired"])
    with svc.engine.connect() as conn:
        signup = signup_q.get_signup(conn, checked.ident)
        if signup is None:
            raise HTTPException(410, svc.t["err_gone"])
        if signup.confirmed_at is not None:
            raise HTTPException(409, svc.t["err_link_used"])
        return signup, sq.get_by_id(conn, signup.subscriber_id)


async def confirm_page(request: Request) -> Response:
    svc = service(request)
    token = request.path_params["token"]
    signup, row = await run_in_threadpool(_signup_for, svc, token)
    names = [f.name for f in svc.config.fields if f.slug in signup.fields.split(",")]
    return svc.form_page(request, "confirm.html.j2", {"confirm": request.url.path},
                         email=mask(row.email), field_names=names, format=signup.format)


async def confirm_submit(request: Request) -> Response:
    svc = service(request)
    token = request.path_params["token"]
    form = await read_form(request)
    _check_csrf(request, form)
    signup, _ = await run_in_threadpool(_signup_for, svc, token)
    done = await run_in_threadpool(subs.confirm_signup, svc.engine, signup.id, ip=svc.clients.ip(request),
                                   user_agent=user_agent(request), now=svc.clock())
    if done == "used":
        raise HTTPException(409, svc.t["err_link_used"])
    if done == "gone":
        raise HTTPException(410, svc.t["err_gone"])
    preferences = links.preferences_url("", svc.keys[0], done.subscriber_id)
    return svc.message(svc.t["confirmed_title"], svc.t["confirmed_text"], link=preferences,
                       link_text=svc.t["preferences_link"])


# -- preference center -----------------------------------------------------------

def _subscriber_for(svc: Service, purpose: str, token: str):
    sid = verify_token(svc.keys, purpose, token)
    if sid is None:
        raise HTTPException(400, svc.t["err_link_invalid"])
    with svc.engine.connect() as conn:
        row = sq.get_by_id(conn, sid)
    if row is None:
        raise HTTPException(410, svc.t["err_gone"])
    return row


def _not_active(svc: Service, row, status: int = 200) -> Response:
    return svc.message(svc.t["preferences_title"],
                       svc.t["not_active_text"].format(status=svc.t[f"status_{row.status}"]), status,
                       link="/", link_text=svc.t["signup_again"])


def _preferences_form(request: Request, row, status: int = 200, *, fields: set[str] | None = None,
                      fmt: str | None = None, errors: dict[str, str] | None = None, saved: bool = False) -> Response:
    svc = service(request)
    unsubscribe = links.unsubscribe_url("", svc.keys[0], row.id)
    return svc.form_page(
        request, "preferences.html.j2", {"preferences": request.url.path, "unsubscribe": unsubscribe}, status,
        email=mask(row.email), status_text=svc.t[f"status_{row.status}"],
        fields=_field_choices(svc, fields if fields is not None else set(row.fields.split(","))),
        format=fmt or row.format, errors=errors or {}, saved=saved,
    )


async def preferences_page(request: Request) -> Response:
    svc = service(request)
    row = await run_in_threadpool(_subscriber_for, svc, "preferences", request.path_params["token"])
    if row.status in sq.SUPPRESSED:
        return _not_active(svc, row)
    return _preferences_form(request, row, saved=request.query_params.get("saved") == "1")


async def preferences_submit(request: Request) -> Response:
    svc = service(request)
    row = await run_in_threadpool(_subscriber_for, svc, "preferences", request.path_params["token"])
    form = await read_form(request)
    _check_csrf(request, form)
    if row.status in sq.SUPPRESSED:
        raise HTTPException(409, svc.t["err_not_active"])
    chosen = [v for v in form.getlist("fields") if isinstance(v, str)]
    unknown = [v for v in chosen if svc.config.resolve_field(v) is None]
    fmt = _get(form, "format") or row.format
    errors = {}  # by the form field it is about: the page shows it there
    if not chosen:
        errors["fields"] = svc.t["err_fields_missing"]
    elif unknown:
        errors["fields"] = svc.t["err_field_unknown"].format(field=header_safe(unknown[0])[:40])
    else:
        try:
            subs.parse_format(fmt)
        except ValueError:
            errors["format"] = svc.t["err_format"]
    if errors:
        shown = {svc.config.resolve_field(v) for v in chosen} - {None}
        return _preferences_form(request, row, 400, fields=shown, fmt=row.format, errors=errors)
    await run_in_threadpool(subs.set_preferences, svc.engine, svc.config, row.id, chosen, fmt,
                            ip=svc.clients.ip(request), user_agent=user_agent(request))
    # Post/Redirect/Get: a reload of the result page does not post again.
    return RedirectResponse(f"{request.url.path}?saved=1", status_code=303)


# -- unsubscribe -----------------------------------------------------------------

async def unsubscribe_page(request: Request) -> Response:
    svc = service(request)
    row = await run_in_threadpool(_subscriber_for, svc, "unsubscribe", request.path_params["token"])
    if row.status in sq.SUPPRESSED:
        return svc.message(svc.t["unsubscribe_title"], svc.t["already_unsubscribed"], link="/",
                           link_text=svc.t["back_home"])
    return svc.form_page(request, "unsubscribe.html.j2", {"unsubscribe": request.url.path}, email=mask(row.email))


async def unsubscribe_submit(request: Request) -> Response:
    svc = service(request)
    sid = verify_token(svc.keys, "unsubscribe", request.path_params["token"])
    if sid is None:
        raise HTTPException(400, svc.t["err_link_invalid"])
    form = await read_form(request)
    one_click = form.get("List-Unsubscribe")
    if one_click is not None:
        if not isinstance(one_click, str) or one_click.strip() != "One-Click":
            raise HTTPException(400, svc.t["err_one_click"])
        source, detail = "one-click", "RFC 8058 one-click POST"
    else:
        _check_csrf(request, form)
        source, detail = "web", None
    await run_in_threadpool(subs.unsubscribe_id, svc.engine, sid, source=source, ip=svc.clients.ip(request),
                            user_agent=user_agent(request), detail=detail)
    # 200 whatever the state before: a repeated one-click POST is harmless.
    return svc.message(svc.t["unsubscribed_title"], svc.t["unsubscribed_text"])
