"""The edition life cycle: every change of an edition's state, and nothing else.

::

    draft ──approve──► approved ──schedule──► scheduled
      ▲  ◄─unapprove──    │    ◄─unschedule──     │
      │                   └────start_sending──────┴──► sending ──► done
      └─ an article it carries is edited or withdrawn        │ ▲
         (approval dropped)                                 pause resume
    any unsent or sending edition ──cancel──► cancelled      ▼ │
                                                            paused

Rules this module keeps (the CLI, the daemon and the console only call it):

- **One function per transition**, each with its checks and one audit row (who,
  when, what, from which interface: :mod:`store.audit`).  Nothing else writes
  ``editions.status``: the delivery engine marks a finished run ``done``
  (:func:`finish`) and pauses after ``max_errors`` (:func:`pause_for_errors`)
  through this module too, inside its own transaction and with its own audit
  rows (interface ``delivery``).
- **Compare-and-set.**  Every change is ``UPDATE … WHERE status = :expected``
  (and, for content, ``AND revision = :seen``): two people approving or
  scheduling the same edition at once, the database lets one in and the other
  gets :class:`Conflict` saying what happened instead.  No lock is held while a
  person thinks.
- **Only drafts change content.**  A draft's content is rebuilt from the live
  articles on every edit (:func:`creation.draft_content`), and its hash is kept in
  ``content_hash``; every version is kept by hash (``edition_versions``), so
  approving with the hash of an older preview says what changed since.
- **Approval freezes what was previewed**: the content JSON and its hash are
  copied to ``approved_content``/``approved_hash``.  With ``approval =
  "required"`` the approver is a named user with the approver (or admin) role
  who is not the last editor (four-eyes), and editing needs a named user too.
  An edit command on an approved or scheduled edition is refused (unapprove it
  first); an article it carries being edited or withdrawn elsewhere returns it
  to draft and drops the approval (:func:`articles_changed`).
- **The one gate to subscribers** is :func:`start_sending` (and the one-step
  :func:`creation.create_edition`, refused with ``approval = "required"``): the
  delivery engine sends only ``sending`` editions, so an unapproved edition is
  never delivered by any path.  ``--test-to`` sends deliver nothing from the
  log and stay possible in any state.
- **承認依頼 (a request for approval)** is a mark on a draft, not a state: an
  editor who has finished a draft asks for approval (:func:`request_approval`,
  withdrawn with :func:`withdraw_request`); the approvers see it waiting.  It
  speaks of the content as it was when asked, so any change of that content
  (an edit here, an article it carries edited or withdrawn elsewhere) drops it,
  with its own audit row; approving it ends it too.  Approval never needs a
  request (an approver may approve any draft), and a request approves nothing.
- Articles reserved by an unsent edition (``edition_articles``) are not taken by
  another edition of the publication; they are marked published when sending
  starts, and released when an unsent edition is cancelled.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError

from ..config import Config, Publication
from ..errors import InputError
from ..sanitize import header_safe
from ..store import audit as audit_q
from ..store import editions as q
from ..store import schedules as schedule_q
from ..store.tables import utcnow
from ..users import Actor
from . import creation

UNSENT = ("draft", "approved", "scheduled")
SUBJECT_MAX = 200


class Conflict(InputError):
    """Someone else changed the edition first (the compare-and-set lost)."""


def content_hash(content: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a content dict."""
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def hash_of(row: Row) -> str:
    return row.content_hash or content_hash(json.loads(row.content))


def record(conn: Connection, actor: Actor, action: str, publication: str | None, edition_id: int | None,
           now: datetime, detail: str | None = None) -> None:
    audit_q.add(conn, at=now, actor=actor.name, interface=actor.interface, action=action,
                publication=publication, edition_id=edition_id, detail=detail)


def _local(dt: datetime, pub: Publication) -> str:
    return dt.astimezone(pub.tz).strftime("%Y-%m-%d %H:%M %Z")


def label(row: Row) -> str:
    return f"{row.publication} 第{row.number}号"


def check_may_send_unapproved(pub: Publication) -> None:
    if pub.approval == "required":
        raise InputError(f"{pub.slug}: approval = \"required\": an edition goes out only once approved "
                         "(edition create, then edition approve)")


def _require(actor: Actor, what: str, pub: Publication, verb: str) -> None:
    if actor.name is None and pub.approval == "required" and what in ("edit", "approve"):
        raise InputError(f"{pub.slug}: approval = \"required\": {verb} as a named user "
                         "(--as NAME or $NEWSLETTER_USER)")
    if not actor.may(what):
        raise InputError(f"user {actor.name} ({actor.role}) may not {verb}")


def _get(conn: Connection, edition_id: int) -> Row:
    row = q.get_edition(conn, edition_id)
    if row is None:
        raise InputError(f"edition id {edition_id}: no such edition")
    return row


def _lost(engine_or_conn, row: Row, verb: str) -> Conflict:
    """The message for the loser of a compare-and-set: what the edition is now."""
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            now_row = _get(conn, row.id)
    else:
        now_row = _get(engine_or_conn, row.id)
    return Conflict(f"{label(row)}: cannot {verb}: someone else acted first; it is now {describe_state(now_row)}")


def describe_state(row: Row) -> str:
    """"approved by kacho at …", "scheduled for …", "sending" — what the edition is now."""
    text = row.status
    if row.status in ("approved", "scheduled") and row.approved_by:
        text += f" by {row.approved_by}"
    elif row.status == "draft" and row.approval_requested_at is not None:
        text += f" waiting for approval (asked by {row.approval_requested_by or 'nobody named'})"
    elif row.status == "draft" and row.edited_by:
        text += f" (last edited by {row.edited_by})"
    if row.status == "scheduled" and row.scheduled_for:
        text += f", to go out at {row.scheduled_for.isoformat(timespec='minutes')}"
    return text


def _not_editable(row: Row, verb: str) -> InputError:
    if row.status in ("approved", "scheduled"):
        return InputError(f"{label(row)} is {row.status}; unapprove it first to {verb} "
                          f"(edition unapprove {row.number})")
    if row.status in ("sending", "paused", "done"):
        return InputError(f"{label(row)} is {row.status}: a sent edition cannot be changed")
    return InputError(f"{label(row)} is {row.status}; cannot {verb} it")


# -- creation ------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    edition_id: int
    number: int
    articles: int
    content_hash: str


def create_draft(engine: Engine, config: Config, pub: Publication, actor: Actor, *,
                 now: datetime | None = None) -> Draft | None:
    """The next edition of ``pub`` as a draft, from the queue by the usual assembly
    rules (None when nothing is new).  It reserves its articles; nothing is sent."""
    _require(actor, "edit", pub, "create a draft")
    now = now or utcnow()
    try:
        with engine.begin() as conn:
            chosen = creation.next_content(conn, config, pub, now)
            if not chosen["articles"]:
                return None
            rows = q.articles_by_id(conn, [a["id"] for a in chosen["articles"]])
            content = creation.draft_content(config, pub, chosen["number"],
                                            [rows[a["id"]]._asdict() for a in chosen["articles"]], now, {})
            digest = content_hash(content)
            edition_id = q.insert_edition(
                conn, publication=pub.slug, number=content["number"], content=content, now=now, status="draft",
                content_hash=digest, revision=0, created_by=actor.name, edited_by=actor.name, edited_at=now,
            )
            q.add_version(conn, edition_id, digest, json.dumps(content, ensure_ascii=False), now)
            record(conn, actor, "created", pub.slug, edition_id, now,
                   f"draft 第{content['number']}号 with {len(content['articles'])} articles")
    except IntegrityError:
        raise Conflict(f"{pub.slug}: an edition was created concurrently; try again") from None
    return Draft(edition_id, content["number"], len(content["articles"]), digest)


# -- content edits (drafts only) -------------------------------------------------------


def _texts(content: Mapping[str, Any]) -> dict[str, Any]:
    return {"subject": content.get("subject") if content.get("subject_custom") else None,
            "lead": content.get("lead", ""), "afterword": content.get("afterword", ""),
            "notice": content.get("notice")}


def _rebuild(conn: Connection, config: Config, pub: Publication, row: Row, ids: Sequence[int],
             texts: Mapping[str, Any]) -> dict[str, Any]:
    live = q.articles_by_id(conn, ids)
    chosen = [live[i]._asdict() for i in ids if i in live and live[i].status != "withdrawn"]
    return creation.draft_content(config, pub, row.number, chosen, row.created_at, texts)


def _write_content(conn: Connection, row: Row, content: dict[str, Any], actor: Actor, now: datetime,
                   *, extra: Mapping[str, Any] | None = None, expected: Sequence[str] = ("draft",)) -> tuple[str, bool]:
    """The new content of an unsent edition: (its hash, whether a request for approval
    was dropped with the old content — the caller then records :func:`_dropped` after
    its own audit row)."""
    digest = content_hash(content)
    values = {"content": json.dumps(content, ensure_ascii=False), "content_hash": digest,
              "revision": row.revision + 1, "edited_by": actor.name, "edited_at": now, **(extra or {})}
    asked = row.approval_requested_at is not None and digest != hash_of(row)
    if asked:  # the request spoke of the content as it was
        values.update(approval_requested_by=None, approval_requested_at=None)
    if not q.compare_and_set(conn, row.id, expected, values, revision=row.revision):
        raise _lost(conn, row, "change it")
    q.set_articles(conn, row.id, [a["id"] for a in content["articles"]])
    q.add_version(conn, row.id, digest, values["content"], now)
    return digest, asked


def _dropped(conn: Connection, row: Row, actor: Actor, now: datetime) -> None:
    record(conn, actor, "request withdrawn", row.publication, row.id, now,
           f"the draft changed after {row.approval_requested_by or 'nobody named'} asked for approval")


def _edit(engine: Engine, config: Config, edition_id: int, actor: Actor, verb: str, action: str,
          change: Callable[[Connection, Row, dict[str, Any]], tuple[list[int], dict[str, Any], str]],
          now: datetime | None = None) -> str:
    now = now or utcnow()
    with engine.begin() as conn:
        row = _get(conn, edition_id)
        pub = config.publication(row.publication)
        _require(actor, "edit", pub, verb)
        if row.status != "draft":
            raise _not_editable(row, verb)
        content = json.loads(row.content)
        ids, texts, detail = change(conn, row, content)
        new = _rebuild(conn, config, pub, row, ids, texts)
        digest, dropped = _write_content(conn, row, new, actor, now)
        record(conn, actor, action, row.publication, row.id, now, f"{detail}; content {digest[:12]}")
        if dropped:
            _dropped(conn, row, actor, now)
    return digest


def add_article(engine: Engine, config: Config, edition_id: int, article_id: int, actor: Actor,
                *, now: datetime | None = None) -> str:
    now = now or utcnow()

    def change(conn, row, content):
        ids = [a["id"] for a in content["articles"]]
        if article_id in ids:
            raise InputError(f"{label(row)}: article {article_id} is already in it")
        art = q.articles_by_id(conn, [article_id]).get(article_id)
        if art is None:
            raise InputError(f"article {article_id}: no such article")
        pub = config.publication(row.publication)
        if art.status not in ("queued", "published"):
            raise InputError(f"article {article_id} is {art.status}; only queued articles go into an edition")
        if not set(art.fields.split(",")) & set(pub.fields):
            raise InputError(f"article {article_id}: none of its fields ({art.fields}) is in {pub.slug}")
        if art.publish_at is not None and art.publish_at > now:
            raise InputError(f"article {article_id} is embargoed until {art.publish_at.isoformat()}")
        if article_id in q.carried_article_ids(conn, row.publication):
            raise InputError(f"article {article_id} is already in another edition of {row.publication}")
        return [*ids, article_id], _texts(content), f"added article {article_id}"

    return _edit(engine, config, edition_id, actor, "add an article", "article added", change, now)


def remove_article(engine: Engine, config: Config, edition_id: int, article_id: int, actor: Actor,
                   *, now: datetime | None = None) -> str:
    def change(conn, row, content):
        ids = [a["id"] for a in content["articles"]]
        if article_id not in ids:
            raise InputError(f"{label(row)}: article {article_id} is not in it")
        return [i for i in ids if i != article_id], _texts(content), f"removed article {article_id}"

    return _edit(engine, config, edition_id, actor, "remove an article", "article removed", change, now)


def reorder(engine: Engine, config: Config, edition_id: int, order: Sequence[int], actor: Actor,
            *, now: datetime | None = None) -> str:
    def change(conn, row, content):
        ids = [a["id"] for a in content["articles"]]
        if len(set(order)) != len(order):
            raise InputError("order: an article id appears twice")
        missing, extra = [i for i in ids if i not in order], [i for i in order if i not in ids]
        if missing or extra:
            parts = ([f"missing {', '.join(map(str, missing))}"] if missing else []) + \
                    ([f"not in the edition: {', '.join(map(str, extra))}"] if extra else [])
            raise InputError(f"order: name every article of {label(row)} once ({'; '.join(parts)})")
        return list(order), _texts(content), f"order {','.join(map(str, order))}"

    return _edit(engine, config, edition_id, actor, "reorder it", "reordered", change, now)


def check_subject(subject: str) -> str:
    if any(c in subject for c in "\r\n"):
        raise InputError("--subject: line breaks are not allowed in a subject")
    cleaned = header_safe(subject)
    if len(cleaned) > SUBJECT_MAX:
        raise InputError(f"--subject: at most {SUBJECT_MAX} characters ({len(cleaned)} given)")
    return cleaned


def set_texts(engine: Engine, config: Config, edition_id: int, actor: Actor, *, subject: str | None = None,
              lead: str | None = None, afterword: str | None = None, notice: Mapping[str, str] | None = None,
              now: datetime | None = None) -> str:
    """Subject (``""``: back to the default), lead and afterword (Markdown), the お知らせ
    block (``{}``: none in this edition)."""
    if subject is not None:
        subject = check_subject(subject)

    def change(conn, row, content):
        texts = _texts(content)
        what = []
        if subject is not None:
            texts["subject"] = subject or None
            what.append("subject")
        if lead is not None:
            texts["lead"] = lead
            what.append("lead")
        if afterword is not None:
            texts["afterword"] = afterword
            what.append("afterword")
        if notice is not None:
            texts["notice"] = dict(notice) or None
            what.append("notice")
        return [a["id"] for a in content["articles"]], texts, "set " + ", ".join(what)

    return _edit(engine, config, edition_id, actor, "change it", "texts set", change, now)


def articles_changed(conn: Connection, config: Config, article_ids: Sequence[int], actor: Actor,
                     why: str, now: datetime | None = None) -> list[str]:
    """Articles were edited or withdrawn: every unsent edition carrying them gets the
    new content; an approved or scheduled one returns to draft, its approval dropped.
    Runs in the caller's transaction.  Returns one line per edition touched."""
    now = now or utcnow()
    out = []
    for row in q.unsent_carrying(conn, article_ids):
        try:
            pub = config.publication(row.publication)
        except Exception:  # a publication no longer in config: nothing can send it anyway
            continue
        content = json.loads(row.content)
        new = _rebuild(conn, config, pub, row, [a["id"] for a in content["articles"]], _texts(content))
        if content_hash(new) == hash_of(row):
            continue
        if row.status == "draft":
            _, dropped = _write_content(conn, row, new, actor, now)
            record(conn, actor, "refreshed", row.publication, row.id, now, why)
            if dropped:
                _dropped(conn, row, actor, now)
            out.append(f"{label(row)}: draft updated ({why})"
                       + ("; its request for approval is withdrawn" if dropped else ""))
        else:
            _write_content(conn, row, new, actor, now, expected=(row.status,), extra={
                "status": "draft", "approved_by": None, "approved_at": None, "approved_hash": None,
                "approved_content": None, "scheduled_for": None,
                "note": f"approval dropped: {why}"})
            record(conn, actor, "approval dropped", row.publication, row.id, now, why)
            out.append(f"{label(row)}: back to draft, approval dropped ({why})")
    return out


# -- approval ------------------------------------------------------------------------


_HEX = re.compile(r"^[0-9a-f]{8,64}$")


def approve(engine: Engine, config: Config, edition_id: int, actor: Actor, previewed_hash: str,
            *, now: datetime | None = None, check: Callable[[Row], None] | None = None) -> Row:
    """Approve exactly the content whose hash the approver previewed.

    ``check``: called with the row once every rule here has passed and before the
    change (the revision compare-and-set keeps the checked content the approved one);
    it raises to refuse.  :func:`newsletter.preflight.approve` passes the full
    preflight, which the console and ``edition approve`` both go through."""
    now = now or utcnow()
    previewed_hash = previewed_hash.strip().lower()
    if not _HEX.match(previewed_hash):
        raise InputError(f"--hash: '{previewed_hash}' is not a content hash (8 to 64 hex digits, as "
                         "'edition preview --edition N' prints it)")
    with engine.connect() as conn:
        row = _get(conn, edition_id)
    pub = config.publication(row.publication)
    _require(actor, "approve", pub, "approve")
    if row.status != "draft":
        if row.status in ("approved", "scheduled"):
            raise Conflict(f"{label(row)} is already {describe_state(row)}")
        raise InputError(f"{label(row)} is {row.status}; only a draft can be approved")
    content = json.loads(row.content)
    if not content["articles"]:
        raise InputError(f"{label(row)} has no articles; add some before approving it")
    current = hash_of(row)
    if not current.startswith(previewed_hash):
        with engine.connect() as conn:
            seen = q.find_version(conn, row.id, previewed_hash)
        if seen is None:
            raise InputError(f"{label(row)}: no preview of this edition has hash {previewed_hash}; preview it "
                             "again and approve what you saw")
        raise InputError(f"{label(row)} changed since the preview {previewed_hash[:12]} "
                         f"({changes(json.loads(seen.content), content)}); preview it again "
                         f"(now {current[:12]})")
    if pub.approval == "required":
        if row.edited_by is None:
            raise InputError(f"{label(row)}: the last change was made by nobody named, so four-eyes approval "
                             "cannot be checked; an editor must save it as a named user first")
        if row.edited_by == actor.name:
            raise InputError(f"{label(row)}: {actor.name} made the last change; approval = \"required\" needs "
                             "another approver (four-eyes)")
    if check is not None:
        check(row)
    with engine.begin() as conn:
        ok = q.compare_and_set(conn, row.id, ("draft",), {
            "status": "approved", "approved_by": actor.name, "approved_at": now, "approved_hash": current,
            "approved_content": row.content, "note": None, "approval_requested_by": None,
            "approval_requested_at": None}, revision=row.revision)
        if not ok:
            raise _lost(conn, row, "approve it")
        record(conn, actor, "approved", row.publication, row.id, now, f"content {current[:12]}")
        return _get(conn, row.id)


# -- 承認依頼: asking for approval ---------------------------------------------------------


def request_approval(engine: Engine, config: Config, edition_id: int, actor: Actor,
                     *, now: datetime | None = None) -> Row:
    """An editor asks for approval of a finished draft: it waits for an approver
    (``edition request-approval N``, the console's 承認を依頼).  Changes nothing
    else; any later change of the draft's content withdraws the request."""
    now = now or utcnow()
    with engine.connect() as conn:
        row = _get(conn, edition_id)
    pub = config.publication(row.publication)
    _require(actor, "edit", pub, "ask for approval")
    if row.status != "draft":
        if row.status in ("approved", "scheduled"):
            raise Conflict(f"{label(row)} is already {describe_state(row)}")
        raise InputError(f"{label(row)} is {row.status}; only a draft waits for approval")
    if row.approval_requested_at is not None:
        raise Conflict(f"{label(row)} is already waiting for approval (asked by "
                       f"{row.approval_requested_by or 'nobody named'} at {_local(row.approval_requested_at, pub)})")
    if not json.loads(row.content)["articles"]:
        raise InputError(f"{label(row)} has no articles; add some before asking for approval")
    with engine.begin() as conn:
        if not q.compare_and_set(conn, row.id, ("draft",), {"approval_requested_by": actor.name,
                                                            "approval_requested_at": now}, revision=row.revision):
            raise _lost(conn, row, "ask for approval")
        record(conn, actor, "approval requested", row.publication, row.id, now, f"content {hash_of(row)[:12]}")
        return _get(conn, row.id)


def withdraw_request(engine: Engine, config: Config, edition_id: int, actor: Actor,
                     *, now: datetime | None = None) -> Row:
    """Take back a request for approval (``edition withdraw-request N``): the draft
    no longer waits for an approver."""
    now = now or utcnow()
    with engine.connect() as conn:
        row = _get(conn, edition_id)
    pub = config.publication(row.publication)
    _require(actor, "edit", pub, "withdraw the request for approval")
    if row.status != "draft" or row.approval_requested_at is None:
        raise InputError(f"{label(row)} is {describe_state(row)}; it is not waiting for approval")
    with engine.begin() as conn:
        if not q.compare_and_set(conn, row.id, ("draft",), {"approval_requested_by": None,
                                                            "approval_requested_at": None}, revision=row.revision):
            raise _lost(conn, row, "withdraw the request")
        record(conn, actor, "request withdrawn", row.publication, row.id, now,
               f"asked by {row.approval_requested_by or 'nobody named'}")
        return _get(conn, row.id)


def request_for_article(engine: Engine, config: Config, article_id: int, actor: Actor,
                        *, now: datetime | None = None) -> list[tuple[Row, str]]:
    """承認依頼 from an article (the console's article form): ask for approval of every
    unsent edition that carries the article.  One pair per such edition: the row as
    it is now and what happened — ``requested``, ``waiting`` (already asked),
    ``approved`` or ``scheduled`` (nothing to ask), or the refusal's words.  An empty
    list: the article is in no unsent edition, so there is nothing to approve yet
    (approval is given to an edition, never to an article alone)."""
    out: list[tuple[Row, str]] = []
    with engine.connect() as conn:
        rows = q.unsent_carrying(conn, [article_id])
    for row in rows:
        if row.status != "draft":
            out.append((row, row.status))
        elif row.approval_requested_at is not None:
            out.append((row, "waiting"))
        else:
            try:
                out.append((request_approval(engine, config, row.id, actor, now=now), "requested"))
            except InputError as exc:
                out.append((row, str(exc)))
    return out


def awaiting_approval(engine: Engine) -> list[Row]:
    """Drafts whose editors asked for approval, oldest request first."""
    with engine.connect() as conn:
        return q.awaiting_approval(conn)


def unapprove(engine: Engine, config: Config, edition_id: int, actor: Actor, *, now: datetime | None = None) -> Row:
    now = now or utcnow()
    with engine.connect() as conn:
        row = _get(conn, edition_id)
    pub = config.publication(row.publication)
    _require(actor, "approve", pub, "unapprove")
    if row.status not in ("approved", "scheduled"):
        raise InputError(f"{label(row)} is {row.status}; only an approved or scheduled edition can be unapproved")
    with engine.begin() as conn:
        ok = q.compare_and_set(conn, row.id, (row.status,), {
            "status": "draft", "approved_by": None, "approved_at": None, "approved_hash": None,
            "approved_content": None, "scheduled_for": None, "note": None}, revision=row.revision)
        if not ok:
            raise _lost(conn, row, "unapprove it")
        record(conn, actor, "unapproved", row.publication, row.id, now,
               f"was {row.status}, approved by {row.approved_by or 'nobody named'}")
        return _get(conn, row.id)


# -- one-off scheduled sends (予約配信) ---------------------------------------------------


def schedule(engine: Engine, config: Config, edition_id: int, at: datetime, actor: Actor,
             *, now: datetime | None = None) -> Row:
    """Send the approved edition at ``at`` (aware; the daemon sends it)."""
    now = now or utcnow()
    with engine.connect() as conn:
        row = _get(conn, edition_id)
        state = schedule_q.get(conn, row.publication)
    pub = config.publication(row.publication)
    _require(actor, "operate", pub, "schedule")
    if row.status == "draft":
        raise InputError(f"{label(row)} is a draft; approve it before scheduling it")
    if row.status == "scheduled":
        raise Conflict(f"{label(row)} is already {describe_state(row)}; unschedule it first")
    if row.status != "approved":
        raise InputError(f"{label(row)} is {row.status}; only an approved edition can be scheduled")
    if at <= now:
        raise InputError(f"--at {_local(at, pub)}: that time has passed")
    if state is not None and state.paused:
        raise InputError(f"{pub.slug}: the schedule is paused; resume it (schedule resume {pub.slug}) before "
                         "scheduling an edition")
    try:
        with engine.begin() as conn:
            ok = q.compare_and_set(conn, row.id, ("approved",), {"status": "scheduled", "scheduled_for": at},
                                   revision=row.revision)
            if not ok:
                raise _lost(conn, row, "schedule it")
            record(conn, actor, "scheduled", row.publication, row.id, now, f"to go out at {_local(at, pub)}")
            return _get(conn, row.id)
    except IntegrityError:
        raise InputError(f"{pub.slug}: another edition already goes out at {_local(at, pub)}") from None


def unschedule(engine: Engine, config: Config, edition_id: int, actor: Actor, *, now: datetime | None = None) -> Row:
    now = now or utcnow()
    with engine.connect() as conn:
        row = _get(conn, edition_id)
    _require(actor, "operate", config.publication(row.publication), "unschedule")
    if row.status != "scheduled":
        raise InputError(f"{label(row)} is {row.status}; it is not scheduled")
    with engine.begin() as conn:
        if not q.compare_and_set(conn, row.id, ("scheduled",), {"status": "approved", "scheduled_for": None},
                                 revision=row.revision):
            raise _lost(conn, row, "unschedule it")
        record(conn, actor, "unscheduled", row.publication, row.id, now,
               f"was to go out at {_local(row.scheduled_for, config.publication(row.publication))}")
        return _get(conn, row.id)


def missed(engine: Engine, row: Row, late: timedelta, actor: Actor, *, now: datetime | None = None) -> bool:
    """A scheduled edition whose time passed more than misfire_grace ago: back to
    approved, with a note, for a person to reschedule or send."""
    now = now or utcnow()
    why = f"missed its time {row.scheduled_for.isoformat()} by {int(late.total_seconds() // 60)} min; not sent"
    with engine.begin() as conn:
        if not q.compare_and_set(conn, row.id, ("scheduled",), {"status": "approved", "scheduled_for": None,
                                                               "note": why}, revision=row.revision):
            return False
        record(conn, actor, "schedule missed", row.publication, row.id, now, why)
    return True


def hold_back(engine: Engine, row: Row, reason: str, actor: Actor, *, now: datetime | None = None) -> bool:
    """An edition whose time came but which must not go out (the daemon's preflight
    found errors): nothing is sent; a scheduled edition goes back to approved (its
    time has passed) and an approved one stays approved, either way with ``reason``
    as its note and an audit row.  A person fixes it (``article edit`` returns it to
    draft: approve it again) and sends or schedules it again.  True when this call
    did it (someone else acting first wins)."""
    now = now or utcnow()
    with engine.begin() as conn:
        if not q.compare_and_set(conn, row.id, (row.status,), {"status": "approved", "scheduled_for": None,
                                                               "note": reason[:1000]}, revision=row.revision):
            return False
        record(conn, actor, "held back", row.publication, row.id, now,
               (f"was scheduled for {row.scheduled_for.isoformat()}; " if row.status == "scheduled" else "")
               + reason)
    return True


# -- sending -------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    edition_id: int
    number: int
    pending: int
    skipped: int


def start_sending(engine: Engine, config: Config, edition_id: int, actor: Actor, *, now: datetime | None = None,
                  slot: datetime | None = None, checked: Mapping[str, Any] | None = None) -> Started:
    """The gate to subscribers: an approved or scheduled edition (or, with ``approval =
    "none"``, a draft) becomes ``sending`` and gets its delivery rows.  ``slot``: the
    cron slot it goes out for (kept as ``scheduled_for``, one edition per slot).
    ``checked``: the content preflight checked; a draft refreshed since (an article
    it carries edited) is refused rather than sent unchecked."""
    now = now or utcnow()
    with engine.connect() as conn:
        row = _get(conn, edition_id)
    pub = config.publication(row.publication)
    _require(actor, "operate", pub, "send")
    if row.status not in UNSENT:
        raise InputError(f"{label(row)} is {row.status}; it cannot start sending")
    if row.status == "draft" and pub.approval == "required":
        raise InputError(f"{label(row)} is not approved; approval = \"required\" (edition approve {row.number})")
    content_json = row.approved_content if row.status != "draft" else row.content
    if pub.approval == "required" and (not content_json or row.approved_hash != hash_of(row)):
        raise InputError(f"{label(row)}: the approved content is not the current content; approve it again")
    content = json.loads(content_json)
    if checked is not None and content != checked:
        raise creation.changed_since_check(label(row), checked, content)
    if not content["articles"]:
        raise InputError(f"{label(row)} has no articles; nothing to send")
    values: dict[str, Any] = {"status": "sending", "note": None}
    if slot is not None:
        values["scheduled_for"] = slot
    try:
        with engine.begin() as conn:
            if not q.compare_and_set(conn, row.id, (row.status,), values, revision=row.revision):
                raise _lost(conn, row, "send it")
            q.mark_published(conn, [a["id"] for a in content["articles"]], now)
            pending, skipped = creation.plan(conn, pub, content, row.id, now)
            how = {"draft": "draft sent without approval (approval = \"none\")",
                   "approved": f"approved by {row.approved_by or 'nobody named'}",
                   "scheduled": f"at its scheduled time {row.scheduled_for and row.scheduled_for.isoformat()}"}
            record(conn, actor, "sending", row.publication, row.id, now,
                   f"{how[row.status]}; {pending} to send, {skipped} skipped")
    except IntegrityError:
        raise Conflict(f"{label(row)}: another edition already went out for this slot") from None
    return Started(row.id, row.number, pending, skipped)


def pause(engine: Engine, config: Config, edition_id: int, actor: Actor, *, now: datetime | None = None) -> Row:
    return _operate(engine, config, edition_id, actor, ("sending",), "paused", "pause", now)[0]


def resume(engine: Engine, config: Config, edition_id: int, actor: Actor, *, now: datetime | None = None) -> Row:
    return _operate(engine, config, edition_id, actor, ("paused",), "sending", "resume", now)[0]


def cancel(engine: Engine, config: Config, edition_id: int, actor: Actor,
           *, now: datetime | None = None) -> tuple[Row, int]:
    """A sending or paused edition: its pending deliveries are never sent.  An unsent
    one is discarded and its articles are free for the next edition."""
    now = now or utcnow()
    return _operate(engine, config, edition_id, actor, ("sending", "paused", *UNSENT), "cancelled", "cancel", now)


def _operate(engine: Engine, config: Config, edition_id: int, actor: Actor, allowed: tuple[str, ...], new: str,
             verb: str, now: datetime | None) -> tuple[Row, int]:
    now = now or utcnow()
    with engine.connect() as conn:
        row = _get(conn, edition_id)
    pub = config.publication(row.publication)
    _require(actor, "edit" if row.status in UNSENT else "operate", pub, verb)
    if row.status not in allowed:
        raise InputError(f"{label(row)} is {row.status}; cannot {verb} it")
    values: dict[str, Any] = {"status": new, "note": None if new == "sending" else f"{new} by {actor}"}
    if new == "cancelled":
        values["finished_at"] = now
    with engine.begin() as conn:
        if not q.compare_and_set(conn, row.id, (row.status,), values):
            raise _lost(conn, row, verb)
        cancelled = 0
        if new == "cancelled":
            cancelled = q.cancel_pending(conn, row.id, "edition cancelled")
            if row.status in UNSENT:
                q.release_articles(conn, row.id)
        record(conn, actor, {"paused": "paused", "sending": "resumed", "cancelled": "cancelled"}[new],
               row.publication, row.id, now, f"was {row.status}" + (f"; {cancelled} pending dropped"
                                                                    if cancelled else ""))
        return _get(conn, row.id), cancelled


# -- the delivery engine's transitions (called inside its transaction) ---------------

ENGINE = Actor(None, "delivery")


def finish(conn: Connection, edition_id: int, now: datetime) -> bool:
    """``sending`` → ``done`` when no delivery is pending; True when this call did it.
    Compare-and-set: an edition paused or cancelled meanwhile stays so."""
    if q.pending_count(conn, edition_id):
        return False
    if not q.compare_and_set(conn, edition_id, ("sending",), {"status": "done", "finished_at": now, "note": None}):
        return False
    row = _get(conn, edition_id)
    counts = q.counts(conn, edition_id)
    record(conn, ENGINE, "finished", row.publication, edition_id, now,
           " ".join(f"{k}={v}" for k, v in counts.items() if v))
    return True


def pause_for_errors(conn: Connection, edition_id: int, reason: str, now: datetime) -> bool:
    """``sending`` → ``paused`` after ``max_errors`` permanent failures in a row, with
    ``reason`` as the note; True when this call did it (an edition cancelled or
    paused by an operator meanwhile keeps that state)."""
    if not q.compare_and_set(conn, edition_id, ("sending",), {"status": "paused", "note": reason}):
        return False
    row = _get(conn, edition_id)
    record(conn, ENGINE, "paused", row.publication, edition_id, now, reason)
    return True


def reopen(conn: Connection, edition_id: int, requeued: int, actor: Actor, now: datetime) -> bool:
    """``done`` → ``sending`` because ``requeued`` failed deliveries went back to
    pending (``edition retry --failed``); True when this call did it."""
    note = f"{requeued} failed deliveries put back to pending by {actor}"
    if not q.compare_and_set(conn, edition_id, ("done",), {"status": "sending", "note": note,
                                                           "finished_at": None}):
        return False
    row = _get(conn, edition_id)
    record(conn, actor, "reopened", row.publication, edition_id, now, note)
    return True


# -- reading -------------------------------------------------------------------------


def history(engine: Engine, edition_id: int) -> list[Row]:
    with engine.connect() as conn:
        return audit_q.for_edition(conn, edition_id)


def next_to_send(conn: Connection, pub: Publication) -> Row | None:
    """What ``edition send PUB`` sends when nothing is unfinished: the oldest approved
    or scheduled edition, else (``approval = "none"``) the oldest draft."""
    row = q.oldest_in(conn, pub.slug, ("approved", "scheduled"))
    if row is None and pub.approval == "none":
        row = q.oldest_in(conn, pub.slug, ("draft",))
    return row


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """What changed between two contents, in a few words."""
    out = []
    for key, name in (("subject", "subject"), ("lead", "lead"), ("afterword", "afterword")):
        if old.get(key) != new.get(key):
            out.append(f"{name} changed")
    old_arts = {a["id"]: a for a in old["articles"]}
    new_arts = {a["id"]: a for a in new["articles"]}
    added = [f"{i} 「{new_arts[i]['title']}」" for i in new_arts if i not in old_arts]
    removed = [f"{i} 「{old_arts[i]['title']}」" for i in old_arts if i not in new_arts]
    if added:
        out.append("articles added: " + ", ".join(added))
    if removed:
        out.append("articles removed: " + ", ".join(removed))
    edited = [str(i) for i in new_arts if i in old_arts and new_arts[i] != old_arts[i]]
    if edited:
        out.append("articles edited: " + ", ".join(edited))
    if not added and not removed and list(old_arts) != list(new_arts):
        out.append("article order changed")
    return "; ".join(out) or "settings changed (sender, site or fields)"
