"""The public archive: each publication's finished editions, shown as they
were sent, and an Atom feed (RFC 4287).

An edition's page is the mail's own HTML with the site around it
(templates/web/archive_edition.html.j2): a <title> and OpenGraph tags for a
shared link, the site header (publication, back numbers, sign-up) and links
to the previous and next edition.  Its URL is :func:`render.archive_url`, the
same the mail's Web版 link carries.

An edition is rendered from its frozen content (what went out, whatever
happened to the articles since) for all of its fields, with the article
bodies passed through the HTML allow-list once more.  The personal parts of
the digest become neutral: the greeting addresses every reader, and the
preferences/unsubscribe links point at the explanation on the sign-up page —
no token of anyone is ever on these pages.  Those values are filled into the
render's own placeholders with :func:`links.fill`, like a mail's; the
greeting and every path come from :mod:`newsletter.links`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .. import links
from ..editions.render import context, date_texts, environment, render_variant
from ..sanitize import sanitize_html
from ..store import editions as eq
from .security import ARCHIVE_CSP
from .service import service

if TYPE_CHECKING:
    from .service import Service

CACHE_SECONDS = 300
CACHE_ENTRIES = 500


def _remember(svc: Service, key: tuple, value: Any) -> Any:
    """Keep a rendering: an edition's content never changes.  Bounded, so a
    crawler walking every old edition cannot grow the process without end."""
    if len(svc.cache) >= CACHE_ENTRIES:
        svc.cache.clear()
    svc.cache[key] = value
    return value


def _when(row) -> datetime:
    return row.scheduled_for or row.created_at


def _content(row) -> dict[str, Any]:
    content = json.loads(row.content)
    for article in content.get("articles", []):
        if article.get("body_html"):
            article["body_html"] = sanitize_html(article["body_html"])
    return content


def _all_fields(content: dict[str, Any]) -> list[str]:
    return [f["slug"] for f in content["fields"]]


def _summary(svc: Service, row) -> dict[str, Any]:
    """What a list or a feed shows of one edition (cached: content never changes)."""
    key = ("summary", row.id)
    if key not in svc.cache:
        content = _content(row)
        when = _when(row)
        subject_ctx = context(content, _all_fields(content), when)
        subject = " ".join(environment(str(svc.config.templates_dir)).get_template("subject.txt.j2")
                           .render(subject_ctx).split())
        _remember(svc, key, {
            "publication": row.publication,
            "number": row.number,
            "subject": subject,
            "date": date_texts(when, content["timezone"], content["language"])[1],
            "when": when,
            "updated": row.finished_at or when,
            "titles": [a["title"] for a in content["articles"]],
            "path": links.archive_url("", row.publication, row.number),
        })
    return svc.cache[key]


def _publication(svc: Service, slug: str | None):
    if slug is None:
        return None
    for pub in svc.config.publications:
        if pub.slug == slug:
            return pub
    raise HTTPException(404, svc.t["err_not_found"])


def _rows(svc: Service, publication: str | None) -> list:
    with svc.engine.connect() as conn:
        return eq.archived_editions(conn, publication)


async def index(request: Request) -> Response:
    svc = service(request)
    pub = _publication(svc, request.path_params.get("publication"))
    rows = await run_in_threadpool(_rows, svc, pub.slug if pub else None)
    sections = []
    for p in [pub] if pub else svc.config.publications:
        items = [_summary(svc, r) for r in rows if r.publication == p.slug]
        sections.append({"publication": p, "editions": items, "feed": links.feed_url("", p.slug)})
    return svc.page("archive.html.j2", sections=sections, single=pub is not None,
                    headers={"Cache-Control": f"public, max-age={CACHE_SECONDS}"})


def _render_edition(svc: Service, publication: str, number: int) -> str | None:
    key = ("edition", publication, number)
    if key in svc.cache:
        return svc.cache[key]
    with svc.engine.connect() as conn:
        row = eq.archived_edition(conn, publication, number)
        if row is None:
            return None
        numbers = sorted(r.number for r in eq.archived_editions(conn, publication))
    content = _content(row)
    rendered = render_variant(content, _all_fields(content), svc.config.templates_dir, when=_when(row), html=True)
    everyone = rendered.placeholders.values(links.greeting("", content["language"]), "/#manage", "/#manage")
    html = links.fill(rendered.html or "", everyone, escape=True)
    return _remember(svc, key, _with_site(svc, content, _when(row), html, numbers))


def _with_site(svc: Service, content: dict[str, Any], when: datetime, html: str, numbers: list[int]) -> str:
    """The mail's HTML with the site around it (see the module docstring)."""
    slug, number = content["publication"]["slug"], content["number"]
    index_path = f"/archive/{slug}/"
    older = [n for n in numbers if n < number]
    newer = [n for n in numbers if n > number]
    date = date_texts(when, content["timezone"], content["language"])[1]
    label = svc.t["edition_label"].format(number=number)
    titles = [a["title"] for a in content["articles"]]
    ctx = {
        "t": svc.t, "lang": content["language"], "site": svc.config.site,
        "publication": content["publication"], "index_path": index_path,
        "prev": {"number": older[-1], "path": f"{index_path}{older[-1]}/"} if older else None,
        "next": {"number": newer[0], "path": f"{index_path}{newer[0]}/"} if newer else None,
        "edition": {
            "number": number, "date": date,
            "url": links.archive_url(svc.config.site.base_url, slug, number),
            "title": f"{content['publication']['title']} {label}（{date}）",
            "description": " / ".join(titles)[:200],
            "image": (content.get("notice") or {}).get("image") or "",
        },
    }
    # The mail's 「Web版で見る」 row would link the page to itself.
    html = re.sub(r'<tr>\s*<td class="weblink-cell".*?</tr>', "", html, count=1, flags=re.S)
    template = svc.env.get_template("archive_edition.html.j2")
    head, top, bottom = (template.render(part=part, **ctx) for part in ("head", "top", "bottom"))
    start, end = html.find("<title>"), html.find("</title>")
    if start != -1 and end != -1:
        html = html[:start] + head + html[end + len("</title>"):]
    body = html.find("<body")
    body = html.find(">", body) + 1 if body != -1 else 0
    html = html[:body] + "\n" + top + html[body:]
    close = html.rfind("</body>")
    return html[:close] + bottom + "\n" + html[close:] if close != -1 else html + bottom


async def edition(request: Request) -> Response:
    svc = service(request)
    pub = _publication(svc, request.path_params["publication"])
    number = request.path_params["number"]
    if not 0 < number < 2**31:  # the column is a 32-bit integer on PostgreSQL
        raise HTTPException(404, svc.t["err_not_found"])
    html = await run_in_threadpool(_render_edition, svc, pub.slug, number)
    if html is None:
        raise HTTPException(404, svc.t["err_not_found"])
    return HTMLResponse(html, headers={"Content-Security-Policy": ARCHIVE_CSP,
                                       "Cache-Control": f"public, max-age={CACHE_SECONDS}"})


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def feed(request: Request) -> Response:
    svc = service(request)
    pub = _publication(svc, request.path_params.get("publication"))
    rows = await run_in_threadpool(_rows, svc, pub.slug if pub else None)
    entries = [_summary(svc, r) for r in rows[:50]]
    base = svc.config.site.base_url
    path = links.archive_url("", pub.slug if pub else None)
    title = pub.title if pub else svc.config.site.name
    updated = max((e["updated"] for e in entries), default=datetime(2000, 1, 1, tzinfo=UTC))
    xml = svc.env.get_template("feed.atom.j2").render(
        base=base, path=path, title=title, updated=_iso(updated), domain=svc.config.site.domain,
        author=svc.config.sender.name, language=svc.config.site.language,
        entries=[{**e, "updated_iso": _iso(e["updated"]), "published_iso": _iso(e["when"])} for e in entries],
    )
    return Response(xml, media_type="application/atom+xml; charset=utf-8",
                    headers={"Cache-Control": f"public, max-age={CACHE_SECONDS}"})
