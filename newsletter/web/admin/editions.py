"""The editor's desk, the next edition: each publication's unsent editions, and
one draft's page — its articles in order (up/down, remove, add from the queue),
件名 / 巻頭言 / 編集後記, a preview of every variant with readers (desktop and
phone frames, the text part), the preflight findings, テスト送信 to the signed-in
user, 承認依頼 (an editor asks for approval; withdrawn by any change of the
draft) and 承認 / 予約配信 for approvers.

A page view is cheap whatever the number of readers: the variant list and its
reader counts come from ``creation.reader_counts`` (one GROUP BY over the
subscribers, keyed by the same ``creation.variant_of`` as the delivery rows),
and the text part is one render.  The full preflight — every reader walked,
every variant rendered (``preflight.check_unsent``) — runs only when someone
presses 配信前チェック, and before an approval: an edition with errors is not
approved (the findings are shown instead).

Every change is one call into :mod:`newsletter.editions.state` with the
signed-in user as the actor (interface ``console``), so its checks, its
compare-and-set and its audit row are the CLI's.  A refusal is shown on the
page with the library's words.  Approval sends the content hash of the page the
approver looked at: if the draft changed since, state.approve says what changed.

The preview route answers the rendered HTML with a policy of its own: inline
styles (premailer's) allowed, scripts never (``default-src 'none'`` and a
``sandbox`` without ``allow-scripts``: no forms, popups or top navigation
either), framable only by the console itself.  The sandbox keeps the console's
origin (``allow-same-origin``): with no script in the frame that grants nothing,
and a sandbox with an opaque origin puts each frame in a process of its own in
Chromium (IsolateSandboxedIframes), whose pixels a headless browser's
screenshot of the console left blank.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from ... import preflight
from ...articles import parse_time
from ...editions import creation, preview, state
from ...editions.assemble import VariantKey
from ...errors import InputError
from ...sanitize import ascii_digits
from ...store import articles as article_q
from ...store import editions as q
from ...store.editions import load_content
from ...subscribers import normalize_email
from ..security import CSP
from ..service import service
from .console import render, room, text, words

if TYPE_CHECKING:
    from ..service import Service
    from .auth import Session

PAGE_CSP = CSP + "; frame-src 'self'"
PREVIEW_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; form-action 'none'; "
               "frame-ancestors 'self'; base-uri 'none'; sandbox allow-same-origin")


@room("edit")
async def index(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)

    def load():
        out = []
        with svc.engine.connect() as conn:
            for pub in svc.config.publications:
                rows = [r for r in q.list_editions(conn, pub.slug, limit=20) if r.status in state.UNSENT]
                out.append({"slug": pub.slug, "title": pub.title,
                            "editions": [{"id": r.id, "number": r.number, "status": r.status,
                                          "waiting": r.status == "draft" and r.approval_requested_at is not None,
                                          "articles": len(load_content(r)["articles"])} for r in rows]})
        return out

    pubs = await run_in_threadpool(load)
    forms = {f"new-{p['slug']}": "/admin/editions/new" for p in pubs}
    return render(request, "editions.html.j2", session=session, forms=forms, pubs=pubs,
                  error=request.query_params.get("nothing", ""))


@room("edit")
async def create(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    slug = text(form, "publication")
    if not any(p.slug == slug for p in svc.config.publications):
        raise HTTPException(400, words(svc.lang)["err_publication"])
    pub = svc.config.publication(slug)
    try:
        draft = await run_in_threadpool(state.create_draft, svc.engine, svc.config, pub, session.actor,
                                        now=svc.clock())
    except InputError as exc:
        raise HTTPException(409, str(exc)) from None
    if draft is None:
        return RedirectResponse(f"/admin/editions?nothing={slug}", status_code=303)
    return RedirectResponse(f"/admin/editions/{draft.edition_id}", status_code=303)


def _row(svc: Service, edition_id: int):
    with svc.engine.connect() as conn:
        row = q.get_edition(conn, edition_id)
    if row is None:
        raise HTTPException(404)
    return row


def _when(row):
    return row.scheduled_for or row.created_at


def _page_data(svc: Service, row) -> dict[str, Any]:
    pub = svc.config.publication(row.publication)
    content = load_content(row)
    # What would go out (preflight.plan_send's rule): a draft's content, else the approved one.
    counted = json.loads(row.approved_content) if row.status != "draft" and row.approved_content else content
    with svc.engine.connect() as conn:
        variants = {k: n for k, n in creation.reader_counts(conn, pub, counted).items() if k.fields}
    if not variants:
        variants[VariantKey(tuple(pub.fields), "html", pub.charset)] = 0
    names = {f.slug: f.name for f in svc.config.fields}
    shown = [{"key": k.encode(), "fields": "・".join(names.get(f, f) for f in k.fields), "format": k.format,
              "charset": k.charset, "readers": n} for k, n in sorted(variants.items(), key=lambda kv: -kv[1])]
    first = next(iter(sorted(variants, key=lambda k: -variants[k])))
    text_key = VariantKey(first.fields, "text", first.charset)
    sample_text = preview.sample(svc.config, content, _when(row), text_key)
    with svc.engine.connect() as conn:
        carried = set(q.carried_article_ids(conn, row.publication))
        queue = [a for a in article_q.candidates(conn, fields=pub.fields, now=svc.clock(), exclude_ids=carried)]
    labels = {v["key"]: f"{v['fields']}・{v['format']}・{v['charset']}" for v in shown}
    return {"content": content, "variants": shown, "variant_labels": labels, "text_part": sample_text.text,
            "subject": sample_text.subject, "queue": [{"id": a.id, "title": a.title} for a in queue],
            "hash": state.hash_of(row) if row.status in state.UNSENT else "", "pub": pub,
            "waiting": row.status == "draft" and row.approval_requested_at is not None,
            "requested_at": (row.approval_requested_at.astimezone(pub.tz).strftime("%Y-%m-%d %H:%M")
                             if row.approval_requested_at else ""),
            "history": state.history(svc.engine, row.id)}


async def _page(request: Request, session: Session, row, *, errors: dict[str, str] | None = None,
                status: int = 200, values: dict[str, str] | None = None,
                findings: list[preflight.Finding] | None = None) -> Response:
    svc = service(request)
    data = await run_in_threadpool(_page_data, svc, row)
    base = f"/admin/editions/{row.id}"
    forms = {name: f"{base}/{name}" for name in ACTIONS}
    # Several forms post to /move and /remove: each carries the same path's token.
    content = data["content"]
    current = {"subject": content.get("subject", "") if content.get("subject_custom") else "",
               "lead": content.get("lead", ""), "afterword": content.get("afterword", "")}
    current.update(values or {})
    scheduled = ""
    if row.scheduled_for:
        scheduled = row.scheduled_for.astimezone(data["pub"].tz).strftime("%Y-%m-%d %H:%M")
    response = render(request, "edition.html.j2", session=session, forms=forms, status=status, row=row,
                      errors=errors or {}, values=current, done=request.query_params.get("done", ""),
                      may_approve=session.actor.may("approve"), may_operate=session.actor.may("operate"),
                      scheduled=scheduled, tz=data["pub"].timezone, findings=findings, **data)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


@room("edit")
async def show(request: Request, session: Session, form: FormData | None) -> Response:
    row = await run_in_threadpool(_row, service(request), request.path_params["id"])
    return await _page(request, session, row)


@room("edit")
async def preview_variant(request: Request, session: Session, form: FormData | None) -> Response:
    svc = service(request)
    row = await run_in_threadpool(_row, svc, request.path_params["id"])
    try:
        key = VariantKey.decode(request.query_params.get("v", ""))
    except ValueError:
        raise HTTPException(400) from None
    pub = svc.config.publication(row.publication)
    if (not key.fields or not set(key.fields) <= set(pub.fields) or key.format not in ("html", "text")
            or key.charset not in ("utf-8", "iso-2022-jp")):
        raise HTTPException(400)
    shown = await run_in_threadpool(preview.sample, svc.config, load_content(row), _when(row), key)
    headers = {"Content-Security-Policy": PREVIEW_CSP, "X-Frame-Options": "SAMEORIGIN"}
    if key.format == "text" or not shown.html:
        return PlainTextResponse(shown.text, headers=headers)
    return HTMLResponse(shown.html, headers=headers)


def _action(what: str, call):
    """A POST on one edition: ``call(svc, session, row, form)`` does the one library
    call; an InputError re-renders the page with the message beside ``what``."""

    async def handler(request: Request, session: Session, form: FormData | None) -> Response:
        svc = service(request)
        row = await run_in_threadpool(_row, svc, request.path_params["id"])
        try:
            done = await run_in_threadpool(call, svc, session, row, form)
        except InputError as exc:
            fresh = await run_in_threadpool(_row, svc, row.id)
            values = {k: text(form, k) for k in ("subject", "lead", "afterword") if what == "texts"}
            return await _page(request, session, fresh, errors={what: str(exc)}, status=400, values=values,
                               findings=getattr(exc, "findings", None))
        return RedirectResponse(f"/admin/editions/{row.id}?done={done}#{what}", status_code=303)

    handler.__name__ = f"edition_{what}"
    return handler


def _article_id(form: FormData | None) -> int:
    value = text(form, "article_id")
    if not ascii_digits(value) or len(value) > 12:
        raise InputError("article: choose an article")
    return int(value)


def _texts(svc, session, row, form):
    state.set_texts(svc.engine, svc.config, row.id, session.actor, subject=text(form, "subject"),
                    lead=text(form, "lead"), afterword=text(form, "afterword"), now=svc.clock())
    return "texts"


def _add(svc, session, row, form):
    state.add_article(svc.engine, svc.config, row.id, _article_id(form), session.actor, now=svc.clock())
    return "add"


def _remove(svc, session, row, form):
    state.remove_article(svc.engine, svc.config, row.id, _article_id(form), session.actor, now=svc.clock())
    return "remove"


def _move(svc, session, row, form):
    article_id = _article_id(form)
    ids = [a["id"] for a in load_content(row)["articles"]]
    if article_id not in ids:
        raise InputError(f"{state.label(row)}: article {article_id} is not in it")
    i = ids.index(article_id)
    j = i - 1 if text(form, "direction") == "up" else i + 1
    if 0 <= j < len(ids):
        ids[i], ids[j] = ids[j], ids[i]
        state.reorder(svc.engine, svc.config, row.id, ids, session.actor, now=svc.clock())
    return "move"


def _test(svc, session, row, form):
    pub = svc.config.publication(row.publication)
    try:
        key = VariantKey.decode(text(form, "variant"))
    except ValueError:
        key = VariantKey(tuple(pub.fields), "html", pub.charset)
    if not key.fields or not set(key.fields) <= set(pub.fields) or key.format not in ("html", "text"):
        key = VariantKey(tuple(pub.fields), "html", pub.charset)
    try:
        address = normalize_email(session.email)
    except ValueError as exc:
        raise InputError(f"your address: {exc}") from None
    result = preview.send_test(svc.config, load_content(row), _when(row), key, address, edition=row)
    if result.status != "accepted":
        raise InputError(f"test message to {address}: {result.status} {result.reply}".rstrip())
    return "test"


def _approve(svc, session, row, form):
    try:
        preflight.approve(svc.engine, svc.config, row, session.actor, text(form, "hash"), now=svc.clock())
    except preflight.CheckFailed as exc:  # the page shows the findings, with the console's words
        raise preflight.CheckFailed(words(svc.lang)["err_preflight"], exc.findings) from None
    return "approve"


def _request(svc, session, row, form):
    state.request_approval(svc.engine, svc.config, row.id, session.actor, now=svc.clock())
    return "request"


def _withdraw_request(svc, session, row, form):
    state.withdraw_request(svc.engine, svc.config, row.id, session.actor, now=svc.clock())
    return "withdraw_request"


def _unapprove(svc, session, row, form):
    state.unapprove(svc.engine, svc.config, row.id, session.actor, now=svc.clock())
    return "unapprove"


def _schedule(svc, session, row, form):
    pub = svc.config.publication(row.publication)
    at = text(form, "at")
    try:
        when = parse_time(at, pub.timezone)
    except ValueError:
        when = None
    if when is None:
        raise InputError(f"--at '{at}': expected a date and time such as \"2026-12-03 10:00\"")
    state.schedule(svc.engine, svc.config, row.id, when, session.actor, now=svc.clock())
    return "schedule"


def _unschedule(svc, session, row, form):
    state.unschedule(svc.engine, svc.config, row.id, session.actor, now=svc.clock())
    return "unschedule"


def _cancel(svc, session, row, form):
    state.cancel(svc.engine, svc.config, row.id, session.actor, now=svc.clock())
    return "cancel"


@room("edit")
async def check(request: Request, session: Session, form: FormData | None) -> Response:
    """配信前チェック: the full preflight of this edition, shown on its page (changes nothing)."""
    svc = service(request)
    row = await run_in_threadpool(_row, svc, request.path_params["id"])
    if row.status not in state.UNSENT:
        raise HTTPException(409, words(svc.lang)["err_not_unsent"])
    findings = await run_in_threadpool(preflight.check_unsent, svc.engine, svc.config, row)
    return await _page(request, session, row, findings=findings)


# The POST routes of an edition's page (web/admin/__init__.py routes each one here).
ACTIONS = ("texts", "add", "remove", "move", "test", "check", "request", "withdraw-request", "approve",
           "unapprove", "schedule", "unschedule", "cancel")

texts = room("edit")(_action("texts", _texts))
request_approval = room("edit")(_action("request", _request))
withdraw_request = room("edit")(_action("withdraw-request", _withdraw_request))
add = room("edit")(_action("add", _add))
remove = room("edit")(_action("remove", _remove))
move = room("edit")(_action("move", _move))
test = room("edit")(_action("test", _test))
approve = room("approve")(_action("approve", _approve))
unapprove = room("approve")(_action("unapprove", _unapprove))
schedule = room("operate")(_action("schedule", _schedule))
unschedule = room("operate")(_action("unschedule", _unschedule))
cancel = room("edit")(_action("cancel", _cancel))
