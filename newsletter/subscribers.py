"""Subscribers: validation, CSV import/export, status changes and consent.

Addresses are validated and normalised with email-validator (IDN domains are
accepted and kept in Unicode form) and stored lower-cased, so that
``Taro@Example.JP`` and ``taro@example.jp`` are one subscriber.

Stopping mail to an address has one home here, :func:`suppress`: every path
(``subscriber unsubscribe``, the signed unsubscribe link and one-click POST, a
mailed unsubscribe, a complaint or bounce from a webhook or a mailbox, a hard
bounce seen by the delivery engine, ``subscriber delete``) calls it, inside the
caller's transaction.  It changes the status (first reason wins: an address
already unsubscribed, bounced or complained stays as it is), writes one consent
row per subscriber that changed, and cancels that subscriber's pending
deliveries in every edition with the real reason ("unsubscribed",
"complaint", "hard bounce: 550 5.1.1 …", "erased"), clearing their lease.  The
hard-bounce count (after how many bad-address answers) is :func:`count_bad_addresses`;
which answers count is :mod:`newsletter.replies`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.engine import Engine

from .config import CHARSETS, Config
from .csvio import ENCODINGS, decode, read_rows, split_list, write_csv
from .errors import InputError
from .sanitize import header_safe
from .store import subscribers as q
from .store.stats import delete_subscriber_events

CSV_ALIASES = {
    "email": ("mail", "e-mail", "emailaddress", "address", "メールアドレス", "メール", "アドレス", "電子メール"),
    "name": ("氏名", "名前", "お名前", "fullname"),
    "fields": ("field", "分野", "配信分野", "topics"),
    "format": ("形式", "配信形式", "mailformat"),
    "charset": ("文字コード", "encoding"),
    "publications": ("publication", "購読", "配信誌"),
}
FORMAT_WORDS = {"html": "html", "text": "text", "テキスト": "text", "txt": "text", "plain": "text", "HTML": "html"}


def normalize_email(value: str) -> str:
    """The canonical form of an address, or ValueError naming it."""
    raw = value.strip()
    if not raw:
        raise ValueError("missing email address")
    if any(c in raw for c in "\r\n\t\x00"):
        raise ValueError(f"invalid email address {raw!r}: control characters")
    try:
        result = validate_email(raw, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"invalid email address '{raw}': {exc}") from None
    return result.normalized.lower()


def parse_format(value: str | None) -> str:
    if not value:
        return "html"
    fmt = FORMAT_WORDS.get(value.strip(), FORMAT_WORDS.get(value.strip().lower()))
    if fmt is None:
        raise ValueError(f"bad format '{value}' (expected html or text)")
    return fmt


def parse_charset(value: str | None) -> str | None:
    if not value:
        return None
    cs = value.strip().lower().replace("_", "-")
    if cs not in CHARSETS:
        raise ValueError(f"bad charset '{value}' (expected {' or '.join(CHARSETS)})")
    return cs


def parse_fields(config: Config, value: str | Iterable[str] | None) -> str:
    tokens = split_list(value) if isinstance(value, str) else list(value or [])
    if not tokens:
        raise ValueError("no fields given")
    slugs = []
    for token in tokens:
        slug = config.resolve_field(token)
        if slug is None:
            known = ", ".join(f"{f.slug} ({f.name})" for f in config.fields)
            raise ValueError(f"unknown field '{token}' (known: {known})")
        slugs.append(slug)
    return ",".join(config.sort_fields(slugs))


def parse_publications(config: Config, value: str | Iterable[str] | None) -> str | None:
    tokens = split_list(value) if isinstance(value, str) else list(value or [])
    if not tokens:
        return None
    known = {p.slug for p in config.publications}
    for token in tokens:
        if token not in known:
            raise ValueError(f"unknown publication '{token}' (known: {', '.join(sorted(known))})")
    return ",".join(sorted(set(tokens)))


def validate(config: Config, raw: dict[str, Any]) -> dict[str, Any]:
    email = normalize_email(raw.get("email") or "")
    name = header_safe(raw.get("name") or "")
    if len(name) > 200:
        raise ValueError("name longer than 200 characters")
    fields_value = raw.get("fields")
    if fields_value in (None, ""):
        fields_value = list(config.field_slugs)  # no preference given: everything
    return {
        "email": email,
        "name": name,
        "fields": parse_fields(config, fields_value),
        "format": parse_format(raw.get("format")),
        "charset": parse_charset(raw.get("charset")),
        "publications": parse_publications(config, raw.get("publications")),
    }


def _merge_fields(config: Config, a: str, b: str) -> str:
    return ",".join(config.sort_fields([*a.split(","), *b.split(",")]))


def add(
    engine: Engine, config: Config, raw: dict[str, Any], *, status: str = "active", source: str = "cli", **consent
) -> tuple[str, dict[str, Any]]:
    """Add one subscriber. Returns ('created'|'updated', values).

    An existing active/pending address has its fields merged and other values
    replaced; one that unsubscribed, bounced or complained is refused: bringing
    it back needs the person's own new consent (the sign-up form), not an operator.
    """
    try:
        values = validate(config, raw)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    with engine.begin() as conn:
        existing = q.get_by_email(conn, values["email"])
        if existing is None:
            q.insert_many(conn, [{**values, "status": status}])
            event = "subscribe" if status == "active" else status
            q.add_consents(conn, [values["email"]], event, source=source, **consent)
            return "created", values
        if existing.status in q.SUPPRESSED:
            raise InputError(
                f"{values['email']}: is {existing.status}; an operator cannot re-activate it "
                "(the person must sign up again)"
            )
        values["fields"] = _merge_fields(config, existing.fields, values["fields"])
        q.update_subscriber(conn, existing.id, {k: v for k, v in values.items() if k != "email"})
        q.add_consents(conn, [values["email"]], "change", source=source, **consent)
        return "updated", values


@dataclass
class ImportReport:
    path: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    merged_in_file: int = 0
    suppressed: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    written: bool = False


def import_csv(
    engine: Engine,
    config: Config,
    path: Path,
    *,
    encoding: str = "auto",
    dry_run: bool = False,
    strict: bool = False,
    status: str = "active",
) -> ImportReport:
    """Import a CSV of subscribers in one transaction (see module doc for the rules)."""
    if encoding not in ENCODINGS:
        raise InputError(f"--encoding: expected one of {', '.join(ENCODINGS)}")
    where = path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a file") from None
    text = decode(data, encoding, where)
    report = ImportReport(path=str(path))
    wanted: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    for line, row in read_rows(text, where, CSV_ALIASES, ("email",)):
        report.rows += 1
        try:
            values = validate(config, row)
        except ValueError as exc:
            # row number, address, problem (the address only when the message lacks it)
            address = row.get("email", "")
            who = f"{address}: " if address and address not in str(exc) else ""
            report.problems.append(f"{where}:{line}: {who}{exc}")
            continue
        email = values["email"]
        if email in wanted:
            # The same person twice in one file (common when lists are concatenated):
            # one subscriber, with the union of the fields.
            prev = wanted[email]
            prev["fields"] = _merge_fields(config, prev["fields"], values["fields"])
            for key in ("name", "charset", "publications"):
                prev[key] = values[key] or prev[key]
            prev["format"] = values["format"]
            report.merged_in_file += 1
            report.notes.append(f"{where}:{line}: {email}: merged with line {first_line[email]}")
            continue
        wanted[email] = values
        first_line[email] = line
    if strict and report.problems:
        return report

    new_rows: list[dict[str, Any]] = []
    with engine.begin() as conn:
        existing = q.by_emails(conn, list(wanted))
        changed: list[str] = []
        for email, values in wanted.items():
            row = existing.get(email)
            if row is None:
                new_rows.append({**values, "status": status})
                continue
            if row.status in q.SUPPRESSED:
                report.suppressed += 1
                report.notes.append(f"{where}:{first_line[email]}: {email}: is {row.status}; left as it is")
                continue
            merged = {
                "name": values["name"] or row.name,
                "fields": _merge_fields(config, row.fields, values["fields"]),
                "format": values["format"],
                "charset": values["charset"] or row.charset,
                "publications": values["publications"] or row.publications,
            }
            if any(getattr(row, k) != v for k, v in merged.items()):
                if not dry_run:
                    q.update_subscriber(conn, row.id, merged)
                changed.append(email)
        report.created = len(new_rows)
        report.updated = len(changed)
        if dry_run:
            return report  # nothing was written: updates above are skipped in a dry run
        q.insert_many(conn, new_rows)
        source = f"import:{path.name}"
        q.add_consents(conn, [r["email"] for r in new_rows], "import", source=source)
        if changed:
            q.add_consents(conn, changed, "change", source=source)
    report.written = True
    return report


EXPORT_HEADER = ("email", "name", "fields", "format", "charset", "status", "publications", "created_at")


def export_csv(engine: Engine, path: Path, *, excel: bool = False, status: str | None = None) -> int:
    with engine.connect() as conn:
        rows = (
            (r.email, r.name, ";".join(r.fields.split(",")), r.format, r.charset or "", r.status,
             r.publications or "", r.created_at.isoformat(timespec="seconds"))
            for r in q.list_subscribers(conn, status=status)
        )
        return write_csv(path, EXPORT_HEADER, rows, excel=excel)


@dataclass(frozen=True)
class Suppression:
    """What :func:`suppress` did: the subscribers whose status changed (one consent
    row each) and how many pending deliveries it cancelled."""

    changed: list[int]
    cancelled: int


# The delivery-log reason for each suppressed status (a bounce passes its own: "hard bounce: <reply>").
REASONS = {"unsubscribed": "unsubscribed", "complained": "complaint", "bounced": "hard bounce"}


def suppress(
    conn, subscriber_ids: Iterable[int], status: str, source: str, reason: str | None = None, *,
    detail: str | None = None, ip: str | None = None, user_agent: str | None = None,
) -> Suppression:
    """Stop mailing these subscribers (the one way to do it; see the module doc).

    ``status`` is ``unsubscribed``, ``bounced`` or ``complained``; ``reason`` goes
    into the delivery log of every cancelled delivery (default: the status's word
    in :data:`REASONS`); the consent row gets ``source``, ``ip``, ``user_agent`` and
    ``detail`` (default: the ``reason`` given).  A subscriber already suppressed keeps its
    status and gets no new consent row (a repeated request changes nothing in the
    record), but its pending deliveries are cancelled all the same."""
    if status not in q.SUPPRESSED:
        raise ValueError(f"cannot suppress as {status!r}")
    ids = list(dict.fromkeys(subscriber_ids))
    if detail is None:
        detail = reason
    changed = q.mark_suppressed(conn, ids, status)
    for sid in changed:
        q.add_consent(conn, sid, status, source=source, ip=ip, user_agent=user_agent, detail=detail)
    return Suppression(changed, q.cancel_pending_deliveries(conn, ids, reason or REASONS[status]))


def count_bad_addresses(conn, reasons: Mapping[int, str], *, limit: int, source: str) -> list[int]:
    """The hard-bounce rule, "after how many": each subscriber in ``reasons``
    (id → "hard bounce: <the answer>") had one more bad-address answer
    (:mod:`newsletter.replies` says which answers are); those that have had
    ``limit`` of them (``[provider] hard_bounce_limit``, default 1) are suppressed
    as ``bounced`` with that reason.  The count is ``subscribers.bounce_count``
    (reset when the person confirms a new sign-up).  Returns the ids whose status
    changed now."""
    reached = q.count_bounce(conn, list(reasons), limit)
    changed: list[int] = []
    for sid in reached:
        changed += suppress(conn, [sid], "bounced", source, reasons[sid]).changed
    return changed


def set_status(
    engine: Engine, email: str, status: str, *, source: str = "cli", detail: str | None = None
) -> tuple[str, int]:
    """Unsubscribe (or bounce, or mark complained) one address by :func:`suppress`.

    Returns (previous status, number of deliveries cancelled); an address already
    suppressed keeps its status."""
    try:
        email = normalize_email(email)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    with engine.begin() as conn:
        row = q.get_by_email(conn, email)
        if row is None:
            raise InputError(f"{email}: no such subscriber")
        done = suppress(conn, [row.id], status, source, detail=detail)
        return row.status, done.cancelled


def update(engine: Engine, config: Config, email: str, changes: dict[str, Any]) -> dict[str, Any]:
    """``subscriber set``: replace fields/format/charset/name/publications (no merge)."""
    try:
        email = normalize_email(email)
        values: dict[str, Any] = {}
        if "fields" in changes:
            values["fields"] = parse_fields(config, changes["fields"])
        if "format" in changes:
            values["format"] = parse_format(changes["format"])
        if "charset" in changes:
            values["charset"] = parse_charset(changes["charset"]) if changes["charset"] != "default" else None
        if "name" in changes:
            values["name"] = header_safe(changes["name"])
        if "publications" in changes:
            values["publications"] = (
                None if changes["publications"] == "all" else parse_publications(config, changes["publications"])
            )
    except ValueError as exc:
        raise InputError(f"{email}: {exc}") from None
    with engine.begin() as conn:
        row = q.get_by_email(conn, email)
        if row is None:
            raise InputError(f"{email}: no such subscriber")
        if values:
            q.update_subscriber(conn, row.id, values)
            q.add_consents(conn, [email], "change", source="cli", detail=", ".join(sorted(values)))
    return values


def delete(engine: Engine, email: str) -> int:
    """Erase the subscriber (a data-erasure request), in one transaction: their
    pending deliveries in every edition, however old, are cancelled ("erased");
    their consent records, sign-ups, bounce events and reading-statistics events go with the subscriber row
    (ON DELETE CASCADE); the delivery log keeps its rows (so an edition's counts
    stay true) without the address, its domain or the server's words.  Returns
    the number of deliveries cancelled."""
    try:
        email = normalize_email(email)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    with engine.begin() as conn:
        row = q.get_by_email(conn, email)
        if row is None:
            raise InputError(f"{email}: no such subscriber")
        done = suppress(conn, [row.id], "unsubscribed", "erasure", "erased")
        q.erase_from_deliveries(conn, row.id)
        delete_subscriber_events(conn, row.id)  # reading statistics (also ON DELETE CASCADE)
        q.delete_subscriber(conn, row.id)
        return done.cancelled


def show(engine: Engine, email: str) -> tuple[Any, list[Any]]:
    try:
        email = normalize_email(email)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    with engine.connect() as conn:
        row = q.get_by_email(conn, email)
        if row is None:
            raise InputError(f"{email}: no such subscriber")
        return row, q.consent_records(conn, row.id)


def publications_of(config: Config, row) -> Sequence[str]:
    """The publications a subscriber receives: named ones, else every publication sharing a field."""
    mine = set(row.fields.split(","))
    named = set(row.publications.split(",")) if row.publications else None
    return [p.slug for p in config.publications if (named is None or p.slug in named) and mine & set(p.fields)]


# -- The subscriber web service (double opt-in, preference center, unsubscribe) ----

@dataclass(frozen=True)
class SignupRequested:
    """What a sign-up form submission led to.  ``already`` is True when the
    address is active: it gets a notice instead of a confirmation link, and the
    page shown is the same (no address enumeration)."""

    subscriber_id: int
    signup_id: int | None
    email: str
    already: bool


def request_signup(
    engine: Engine, values: dict[str, Any], *, ip: str | None, user_agent: str | None, wording_version: str,
    now, expires,
) -> SignupRequested:
    """Record a sign-up waiting for confirmation (``values`` already validated).

    A new address becomes a ``pending`` subscriber; an existing one keeps its
    status (an unsubscribed address comes back only through the link). The
    requested fields/format/name wait in ``signups`` until confirmation."""
    from sqlalchemy.exc import IntegrityError

    try:
        return _request_signup(engine, values, ip=ip, user_agent=user_agent, wording_version=wording_version,
                               now=now, expires=expires)
    except IntegrityError:  # the same new address signed up twice at the same moment: the other one won
        return _request_signup(engine, values, ip=ip, user_agent=user_agent, wording_version=wording_version,
                               now=now, expires=expires)


def _request_signup(engine: Engine, values: dict[str, Any], *, ip, user_agent, wording_version, now,
                    expires) -> SignupRequested:
    from .store import web as wq

    with engine.begin() as conn:
        row = q.get_by_email(conn, values["email"])
        if row is None:
            q.insert_many(conn, [{**values, "status": "pending"}])
            row = q.get_by_email(conn, values["email"])
        if row.status == "active":
            return SignupRequested(row.id, None, row.email, already=True)
        q.add_consent(conn, row.id, "signup", at=now, source="web", ip=ip, user_agent=user_agent,
                      wording_version=wording_version)
        signup_id = wq.insert_signup(conn, {
            "subscriber_id": row.id, "name": values.get("name") or "", "fields": values["fields"],
            "format": values["format"], "ip": ip, "user_agent": user_agent, "wording_version": wording_version,
            "created_at": now, "expires_at": expires,
        })
        return SignupRequested(row.id, signup_id, row.email, already=False)


@dataclass(frozen=True)
class Confirmed:
    subscriber_id: int
    email: str
    fields: str
    format: str


def confirm_signup(engine: Engine, signup_id: int, *, ip: str | None, user_agent: str | None, now) -> Confirmed | str:
    """Activate the subscriber of a sign-up; "used" if it was confirmed before,
    "gone" if the sign-up no longer exists (the subscriber was erased)."""
    from .store import web as wq

    with engine.begin() as conn:
        signup = wq.get_signup(conn, signup_id)
        if signup is None:
            return "gone"
        if not wq.mark_confirmed(conn, signup_id, now):
            return "used"
        row = q.get_by_id(conn, signup.subscriber_id)
        changes = {"fields": signup.fields, "format": signup.format, "status": "active", "bounce_count": 0}
        if signup.name:
            changes["name"] = signup.name
        q.update_subscriber(conn, row.id, changes)
        q.add_consent(
            conn, row.id, "confirm", at=now, source="web", ip=ip, user_agent=user_agent,
            wording_version=signup.wording_version,
            detail=f"signed up {signup.created_at.isoformat(timespec='seconds')} from {signup.ip or '-'}",
        )
        return Confirmed(row.id, row.email, signup.fields, signup.format)


def set_preferences(
    engine: Engine, config: Config, subscriber_id: int, fields: Iterable[str], fmt: str, *,
    ip: str | None, user_agent: str | None,
) -> dict[str, Any] | None:
    """The preference center: replace fields and format. ValueError for bad
    values; None when the subscriber no longer exists."""
    values = {"fields": parse_fields(config, list(fields)), "format": parse_format(fmt)}
    with engine.begin() as conn:
        row = q.get_by_id(conn, subscriber_id)
        if row is None:
            return None
        changed = sorted(k for k, v in values.items() if getattr(row, k) != v)
        if changed:
            q.update_subscriber(conn, subscriber_id, values)
            q.add_consent(conn, subscriber_id, "change", source="web", ip=ip, user_agent=user_agent,
                          detail=", ".join(f"{k}={values[k]}" for k in changed))
    return values


def unsubscribe_id(
    engine: Engine, subscriber_id: int, *, source: str, ip: str | None = None, user_agent: str | None = None,
    detail: str | None = None,
) -> tuple[str | None, int]:
    """Unsubscribe by id (a signed link or a mailed request): the pending
    deliveries are cancelled and a consent row written; repeating it, or doing
    it to a bounced/complained address, changes nothing.

    Returns (the status before or None when there is no such subscriber, the
    number of deliveries cancelled)."""
    with engine.begin() as conn:
        row = q.get_by_id(conn, subscriber_id)
        if row is None:
            return None, 0
        done = suppress(conn, [subscriber_id], "unsubscribed", source, detail=detail, ip=ip, user_agent=user_agent)
        return row.status, done.cancelled
