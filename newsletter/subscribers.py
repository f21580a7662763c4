"""Subscribers: validation, CSV import/export, status changes and consent.

Rules kept here:

- ``normalize_email`` is the one address validator and normaliser: sign-up,
  ``subscriber add``, import, ``edition send --test-to`` and every lookup call it.
  It folds what Japanese input methods type by mistake (full-width ``＠``, ``．``
  and full-width ASCII) to ASCII, refuses a local part (before ``@``) that is not
  ASCII — no provider we use can deliver to ``すずき@example.jp``, SMTPUTF8 is
  not something a public office can count on — and keeps IDN domains
  (``user@例え.jp``) in Unicode form.  Stored lower-cased, so that
  ``Taro@Example.JP`` and ``taro@example.jp`` are one subscriber.  Idempotent.
- ``CSV_ALIASES`` is the one table of column names, English and Japanese; the
  Excel export writes headers from it, so an export re-imports as it was.
- An import is one transaction: all of it or nothing, and ``--dry-run`` writes
  nothing.  It streams: rows are read, validated and staged in batches into a
  temporary table (``_Staging``, one per connection, dropped at the end), which
  is where duplicates within the file are merged — memory stays bounded however
  long the file is.  Then the staged rows are merged, batch by batch, with the
  subscribers already stored.  A column the table does not know is reported; a
  file without a fields column is refused unless ``--fields`` gives a default
  (a reader must never silently get every field).
- Stopping mail to an address has one home here, :func:`suppress`: every path
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
- The way back is :func:`reactivate` (``subscriber reactivate``, the console's
  配信再開): only with a recorded reason, never after a complaint, never for an
  address that is not stopped; a consent row and an audit row each time.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Column, Index, Integer, MetaData, String, Table, bindparam, select
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from .config import CHARSETS, Config
from .csvio import ENCODINGS, open_text, read_rows, split_list, write_csv
from .errors import InputError
from .sanitize import header_safe
from .store import subscribers as q
from .store.stats import delete_subscriber_events

log = logging.getLogger(__name__)

# Canonical column → the header names accepted for it.  Matched after NFKC, case,
# spaces, "_" and "-" are folded (csvio.normalize_header): "E-mail", "Ｅメール",
# "氏名（漢字）" need no entry of their own.  The first Japanese name of each is
# what the Excel export writes (EXCEL_HEADER).
CSV_ALIASES = {
    "email": ("メールアドレス", "mail", "emailaddress", "mailaddress", "address", "メール", "アドレス",
              "Eメール", "Eメールアドレス", "電子メール", "電子メールアドレス", "メアド"),
    "name": ("氏名", "名前", "お名前", "氏名(漢字)", "お名前(漢字)", "名前(漢字)", "fullname", "宛名", "購読者名"),
    "fields": ("分野", "field", "配信分野", "希望分野", "購読分野", "配信希望分野", "関心分野", "ジャンル",
               "カテゴリ", "カテゴリー", "topics", "topic", "category", "categories"),
    "format": ("形式", "配信形式", "メール形式", "受信形式", "希望形式", "mailformat"),
    "charset": ("文字コード", "文字セット", "encoding"),
    "publications": ("配信誌", "publication", "購読", "購読誌", "メルマガ", "メールマガジン"),
    # Written by the export, read back without effect on what is stored (see ``import_csv``).
    "status": ("状態", "配信状態"),
    "created_at": ("登録日時", "created", "登録日"),
}
FORMAT_WORDS = {
    "html": "html", "html形式": "html", "htmlメール": "html", "text/html": "html",
    "text": "text", "txt": "text", "plain": "text", "text/plain": "text", "テキスト": "text",
    "テキスト形式": "text", "テキストメール": "text", "プレーンテキスト": "text",
}
# Full-width ASCII (U+FF01..U+FF5E: ＠ ． ａ １ …) and the ideographic space, as an
# IME in full-width mode types them, to their ASCII selves.
_FULL_WIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
NOTE_FULL_WIDTH_ADDRESS = "normalised full-width characters in the address"
NOTE_FULL_WIDTH_FORMAT = "normalised full-width characters in the format"


def normalize_email(value: str, notes: list[str] | None = None, *, lookup: bool = False) -> str:
    """The canonical form of an address, or ValueError naming it (see module doc).

    When full-width characters were folded and ``notes`` is given, a note is added to it.
    ``lookup=True`` is for finding a subscriber only, never for storing one: it lets
    a non-ASCII local part through, so that an address stored before this rule
    can still be shown, changed, unsubscribed or erased."""
    raw = value.strip()
    if not raw:
        raise ValueError("missing email address")
    if any(c in raw for c in "\r\n\t\x00"):
        raise ValueError(f"invalid email address {raw!r}: control characters")
    folded = raw.translate(_FULL_WIDTH)
    local, at, _domain = folded.rpartition("@")
    if at and not local.isascii() and not lookup:
        raise ValueError(
            f"invalid email address '{raw}': the part before @ must be ASCII letters, digits or . _ + - "
            "(mail to a Japanese local part cannot be delivered)"
        )
    try:
        result = validate_email(folded, check_deliverability=False, allow_smtputf8=lookup)
    except EmailNotValidError as exc:
        raise ValueError(f"invalid email address '{raw}': {exc}") from None
    normalized = result.normalized.lower()
    from .editions.compose import ascii_address  # the form every provider gets

    try:
        ascii_address(normalized)
    except UnicodeError:
        raise ValueError(f"invalid email address '{raw}': the domain cannot be written in ASCII (IDNA)") from None
    if folded != raw and notes is not None:
        notes.append(NOTE_FULL_WIDTH_ADDRESS)
    return normalized


def parse_format(value: str | None, notes: list[str] | None = None) -> str:
    if not value or not value.strip():
        return "html"
    word = unicodedata.normalize("NFKC", value).strip()
    fmt = FORMAT_WORDS.get(word.lower())
    if fmt is None:
        raise ValueError(f"bad format '{value}' (expected html or text)")
    if word != value.strip() and notes is not None:
        notes.append(NOTE_FULL_WIDTH_FORMAT)
    return fmt


def parse_charset(value: str | None) -> str | None:
    if not value:
        return None
    cs = value.strip().lower().replace("_", "-")
    if cs not in CHARSETS:
        raise ValueError(f"bad charset '{value}' (expected {' or '.join(CHARSETS)})")
    return cs


def parse_fields(config: Config, value: str | Iterable[str] | None) -> str:
    return config.read_fields(split_list(value) if isinstance(value, str) else list(value or []))


def parse_publications(config: Config, value: str | Iterable[str] | None) -> str | None:
    tokens = split_list(value) if isinstance(value, str) else list(value or [])
    if not tokens:
        return None
    known = {p.slug for p in config.publications}
    for token in tokens:
        if token not in known:
            raise ValueError(f"unknown publication '{token}' (known: {', '.join(sorted(known))})")
    return ",".join(sorted(set(tokens)))


def validate(
    config: Config, raw: dict[str, Any], *, notes: list[str] | None = None, default_fields: str | None = None
) -> dict[str, Any]:
    """One subscriber's values from user input, or ValueError.  An empty fields
    value means ``default_fields`` when given, else every field."""
    email = normalize_email(raw.get("email") or "", notes)
    name = header_safe(raw.get("name") or "")
    if len(name) > 200:
        raise ValueError("name longer than 200 characters")
    fields_value = raw.get("fields")
    if fields_value in (None, ""):
        fields_value = default_fields if default_fields is not None else list(config.field_slugs)
    return {
        "email": email,
        "name": name,
        "fields": parse_fields(config, fields_value),
        "format": parse_format(raw.get("format"), notes),
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


# What an import says, line by line: "error" (a row left out), "warning" (an unknown
# column), "normalised" (a row changed on its way in), "note" (a merge, an address
# left as it is).  A listener gets each as it happens (the CLI prints them, so a
# long import needs no memory for its report); without one they are kept in lists.
Listener = Callable[[str, str], None]


@dataclass
class ImportReport:
    path: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    merged_in_file: int = 0
    suppressed: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    normalised: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    written: bool = False
    listener: Listener | None = field(default=None, repr=False, compare=False)

    def say(self, kind: str, text: str) -> None:
        if kind == "error":
            self.rejected += 1
        if self.listener is not None:
            self.listener(kind, text)
        else:
            {"error": self.problems, "warning": self.warnings, "normalised": self.normalised,
             "note": self.notes}[kind].append(text)


BATCH = 1000
_VALUE_KEYS = ("name", "fields", "format", "charset", "publications")


class _Staging:
    """A temporary table of the file's subscribers, one row per address (the
    in-file duplicate merge), on one connection; ``line`` is the address's first line."""

    def __init__(self, conn: Connection):
        self.conn = conn
        meta = MetaData()
        self.table = Table(
            "nl_import_staging", meta,
            Column("email", String(320), primary_key=True),
            Column("line", Integer, nullable=False),
            *(Column(k, String(500)) for k in _VALUE_KEYS),
            Index("nl_import_staging_line", "line", unique=True),
            prefixes=["TEMPORARY"],
        )
        with conn.begin():
            self.table.drop(conn, checkfirst=True)
            self.table.create(conn)

    def drop(self) -> None:
        try:
            if self.conn.in_transaction():
                self.conn.rollback()
            with self.conn.begin():
                self.table.drop(self.conn, checkfirst=True)
        except SQLAlchemyError as exc:
            # Never hide the error that ended the import; a table left behind goes
            # with the connection, or is dropped by the next import on it.
            log.warning("could not drop the import's staging table: %s", exc)

    def add(self, config: Config, batch: dict[str, dict[str, Any]], report: ImportReport, where: str) -> None:
        """Stage a batch (already merged within itself), merging it into rows staged before."""
        if not batch:
            return
        t = self.table
        staged = {r.email: r for r in self.conn.execute(select(t).where(t.c.email.in_(list(batch))))}
        new, merged = [], []
        for email, values in batch.items():
            row = staged.get(email)
            if row is None:
                new.append(values)
                continue
            prev = {k: getattr(row, k) for k in _VALUE_KEYS}
            _merge_into(config, prev, values)
            merged.append({"key": email, **prev})
            report.merged_in_file += 1
            report.say("note", f"{where}:{values['line']}: {email}: merged with line {row.line}")
        if new:
            self.conn.execute(t.insert(), new)
        if merged:
            self.conn.execute(
                sql_update(t).where(t.c.email == bindparam("key")).values({k: bindparam(k) for k in _VALUE_KEYS}),
                merged,
            )

    def batches(self) -> Iterable[list[Any]]:
        t, last = self.table, 0
        while True:
            chunk = self.conn.execute(select(t).where(t.c.line > last).order_by(t.c.line).limit(BATCH)).all()
            if not chunk:
                return
            last = chunk[-1].line
            yield chunk


def _merge_into(config: Config, prev: dict[str, Any], values: dict[str, Any]) -> None:
    """The same person twice in one file (common when lists are concatenated):
    the union of the fields; the later row's other values where it has them."""
    prev["fields"] = _merge_fields(config, prev["fields"], values["fields"])
    for key in ("name", "charset", "publications"):
        prev[key] = values[key] or prev[key]
    prev["format"] = values["format"]


def _file_status(value: str | None) -> str:
    """The status column of an export read back: only ``active`` rows (or no
    status) are imported — an export's unsubscribed or never-confirmed reader
    must not come back as active in another database."""
    status = (value or "").strip().lower() or "active"
    if status not in q.STATUSES:
        raise ValueError(f"unknown status '{value}' (expected {', '.join(q.STATUSES)})")
    return status


def import_csv(
    engine: Engine,
    config: Config,
    path: Path,
    *,
    encoding: str = "auto",
    dry_run: bool = False,
    strict: bool = False,
    status: str = "active",
    default_fields: str | None = None,
    listener: Listener | None = None,
) -> ImportReport:
    """Import a CSV of subscribers in one transaction, streaming (see module doc for the rules).

    ``default_fields`` (``--fields``): the fields of rows whose fields cell is
    empty, and what makes a file without a fields column acceptable."""
    if encoding not in ENCODINGS:
        raise InputError(f"--encoding: expected one of {', '.join(ENCODINGS)}")
    if default_fields is not None:
        try:
            default_fields = parse_fields(config, default_fields)
        except ValueError as exc:
            raise InputError(f"--fields: {exc}") from None
    where = path.name
    report = ImportReport(path=str(path), listener=listener)
    with open_text(path, encoding, where) as stream:
        rows = read_rows(stream, where, CSV_ALIASES, ("email",))
        known = ", ".join(f"{k}/{names[0]}" for k, names in CSV_ALIASES.items())
        for name in rows.unknown:
            report.say("warning", f"{where}:1: unknown column '{name}' ignored (known: {known})")
        if "fields" not in rows and default_fields is None:
            accepted = ", ".join(("fields", *CSV_ALIASES["fields"]))
            raise InputError(
                f"{where}:1: no fields column in the header (accepted names: {accepted}); "
                "give --fields to choose the fields of every reader in the file"
            )
        with engine.connect() as conn:
            staging = _Staging(conn)
            try:
                with conn.begin() as tx:
                    if conn.dialect.name == "postgresql":
                        # psycopg prepares a statement after its 5th run and PostgreSQL may keep a
                        # generic plan made while the staging table (a temporary table, never
                        # analysed) and a new database's subscribers were nearly empty: a sequential
                        # scan per batch, so the import grew with the square of the file (100,000
                        # rows: 345 s, 13 s of it ours).  A custom plan per run sees the real sizes.
                        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
                    _stage_rows(config, rows, staging, report, where, default_fields)
                    if strict and report.rejected:
                        tx.rollback()
                        return report
                    _merge_staged(config, conn, staging, report, where, status, dry_run)
                    if dry_run:
                        tx.rollback()  # nothing was written: updates and inserts are skipped in a dry run
                        return report
            finally:
                staging.drop()
    report.written = True
    return report


def _stage_rows(config, rows, staging: _Staging, report: ImportReport, where: str, default_fields) -> None:
    batch: dict[str, dict[str, Any]] = {}
    for line, row in rows:
        report.rows += 1
        notes: list[str] = []
        try:
            values = validate(config, row, notes=notes, default_fields=default_fields)
            in_file = _file_status(row.get("status"))
        except ValueError as exc:
            # row number, address, problem (the address only when the message lacks it)
            address = row.get("email", "")
            who = f"{address}: " if address and address not in str(exc) else ""
            report.say("error", f"{where}:{line}: {who}{exc}")
            continue
        email = values["email"]
        for note in notes:
            report.say("normalised", f"{where}:{line}: {email}: {note}")
        if in_file != "active":
            report.suppressed += 1
            report.say("note", f"{where}:{line}: {email}: is {in_file} in the file; not imported")
            continue
        if email in batch:
            _merge_into(config, batch[email], values)
            report.merged_in_file += 1
            report.say("note", f"{where}:{line}: {email}: merged with line {batch[email]['line']}")
            continue
        batch[email] = {**values, "line": line}
        if len(batch) >= BATCH:
            staging.add(config, batch, report, where)
            batch = {}
    staging.add(config, batch, report, where)


def _merge_staged(config, conn: Connection, staging: _Staging, report: ImportReport, where: str, status: str,
                  dry_run: bool) -> None:
    source = f"import:{where}"
    for chunk in staging.batches():
        existing = q.by_emails(conn, [r.email for r in chunk])
        new_rows: list[dict[str, Any]] = []
        changed: list[str] = []
        for staged in chunk:
            values = {k: getattr(staged, k) for k in _VALUE_KEYS}
            row = existing.get(staged.email)
            if row is None:
                new_rows.append({"email": staged.email, **values, "status": status})
                continue
            if row.status in q.SUPPRESSED:
                report.suppressed += 1
                report.say("note", f"{where}:{staged.line}: {staged.email}: is {row.status}; left as it is")
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
                changed.append(staged.email)
        report.created += len(new_rows)
        report.updated += len(changed)
        if dry_run:
            continue
        q.insert_many(conn, new_rows)
        q.add_consents(conn, [r["email"] for r in new_rows], "import", source=source)
        if changed:
            q.add_consents(conn, changed, "change", source=source)


EXPORT_HEADER = ("email", "name", "fields", "format", "charset", "status", "publications", "created_at")
# The Excel flavour: Japanese headers, each one the alias table knows for the same column.
EXCEL_HEADER = ("メールアドレス", "氏名", "分野", "形式", "文字コード", "状態", "配信誌", "登録日時")


def export_csv(engine: Engine, config: Config, path: Path, *, excel: bool = False, status: str | None = None) -> int:
    """Write subscribers to ``path``.  Plain: English headers, times in UTC (ISO 8601);
    ``excel``: Japanese headers, times in the site's time zone, BOM and CRLF."""
    tz = ZoneInfo(config.site.timezone)

    def when(at) -> str:
        return at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if excel else at.isoformat(timespec="seconds")

    with engine.connect() as conn:
        rows = (
            (r.email, r.name, ";".join(r.fields.split(",")), r.format, r.charset or "", r.status,
             r.publications or "", when(r.created_at))
            for r in q.list_subscribers(conn, status=status)
        )
        return write_csv(path, EXCEL_HEADER if excel else EXPORT_HEADER, rows, excel=excel)


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


class ReactivationRefused(InputError):
    """Re-activation is refused for this subscriber; ``why`` is "complaint" or
    "not stopped" (a console shows its own words for each)."""

    def __init__(self, message: str, why: str):
        super().__init__(message)
        self.why = why


def has_complained(conn, row) -> bool:
    """Did this person ever report our mail as spam?  The status says so, or the
    consent history, or a complaint event recorded while the address was
    already stopped (which leaves the status and the consent history as they were)."""
    from .store import mail_events as mq

    return (row.status == "complained" or any(c.event == "complained" for c in q.consent_records(conn, row.id))
            or mq.ever(conn, row.id, "complaint"))


def reactivate(engine: Engine, subscriber: int | str, reason: str, actor, *, ip: str | None = None,
               now: datetime | None = None) -> str:
    """Start mailing a suppressed subscriber again (配信再開) — the one way back
    besides the person signing up again (which confirms by mail).

    Only with a recorded ``reason``: the consent row (event ``reactivated``,
    source the actor's interface, detail "by NAME: reason") is the proof the Act
    on Specified Electronic Mail asks for, and one audit row says who did it
    (the subscriber's id, not the address: approvers read the audit log).
    Refused for a complaint (:func:`has_complained`: the person told their mail
    provider this is spam; only they can undo that, by signing up again) — and for an address
    that is not suppressed (active; pending still waits for its confirmation).
    An erased subscriber has no row left: "no such subscriber".  The bounce
    count starts again at 0; deliveries cancelled while suppressed stay
    cancelled (a cancelled row is never revived).  ``subscriber`` is an id or an
    address.  Returns the status it had."""
    from .store import audit as audit_q
    from .users import Actor

    reason = " ".join((reason or "").split())[:500]
    if not reason:
        raise InputError("--reason: say why mail is resumed (kept in the consent history)")
    actor = actor or Actor(None, "cli")
    if not actor.may("subscribers"):
        raise InputError(f"user {actor.name} ({actor.role}) may not resume mail to a subscriber")
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        if isinstance(subscriber, int):
            row = q.get_by_id(conn, subscriber)
            label = f"subscriber #{subscriber}"
        else:
            try:
                label = normalize_email(subscriber, lookup=True)
            except ValueError as exc:
                raise InputError(str(exc)) from None
            row = q.get_by_email(conn, label)
        if row is None:
            raise InputError(f"{label}: no such subscriber (an erased subscriber cannot be resumed)")
        if has_complained(conn, row):
            raise ReactivationRefused(f"{row.email}: reported our mail as spam (a complaint); mail is not resumed "
                                      "by an operator — the person can sign up again", "complaint")
        if row.status not in ("unsubscribed", "bounced"):
            raise ReactivationRefused(f"{row.email}: is {row.status}, not stopped: nothing to resume", "not stopped")
        if not q.mark_reactivated(conn, row.id, row.status):
            raise InputError(f"{row.email}: changed meanwhile; look again")
        q.add_consent(conn, row.id, "reactivated", at=now, source=actor.interface, ip=ip,
                      detail=f"by {actor.name}: {reason}" if actor.name else reason)
        audit_q.add(conn, at=now, actor=actor.name, interface=actor.interface, action="subscriber reactivated",
                    detail=f"subscriber #{row.id} (was {row.status})")
    return row.status


def count_bad_addresses(conn, reasons: Mapping[int, str], *, limit: int, source: str) -> list[int]:
    """The hard-bounce rule, "after how many": each subscriber in ``reasons``
    (id → "hard bounce: <the answer>") had one more bad-address answer
    (:mod:`newsletter.replies` says which answers are); those that have had
    ``limit`` of them (``[provider] hard_bounce_limit``, default 1) are suppressed
    as ``bounced`` with that reason — addresses at Japan's mobile carriers
    (:data:`newsletter.replies.CARRIER_DOMAINS`) at the first.  The count is
    ``subscribers.bounce_count`` (reset when the person confirms a new sign-up).
    Returns the ids whose status changed now."""
    from .replies import CARRIER_DOMAINS

    reached = q.count_bounce(conn, list(reasons), limit, at_once=CARRIER_DOMAINS)
    changed: list[int] = []
    for sid in reached:
        changed += suppress(conn, [sid], "bounced", source, reasons[sid]).changed
    return changed


def lookup_address(email: str) -> str:
    """An address typed to find a subscriber, normalized for the look-up (one stored
    before today's rules can still be found and stopped), or the one-line error."""
    try:
        return normalize_email(email, lookup=True)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def existing(conn: Connection, email: str):
    """The subscriber row of ``email`` (normalized), or "no such subscriber"."""
    row = q.get_by_email(conn, email)
    if row is None:
        raise InputError(f"{email}: no such subscriber")
    return row


def set_status(
    engine: Engine, email: str, status: str, *, source: str = "cli", detail: str | None = None
) -> tuple[str, int]:
    """Unsubscribe (or bounce, or mark complained) one address by :func:`suppress`.

    Returns (previous status, number of deliveries cancelled); an address already
    suppressed keeps its status."""
    email = lookup_address(email)
    with engine.begin() as conn:
        row = existing(conn, email)
        done = suppress(conn, [row.id], status, source, detail=detail)
        return row.status, done.cancelled


def update(engine: Engine, config: Config, email: str, changes: dict[str, Any]) -> dict[str, Any]:
    """``subscriber set``: replace fields/format/charset/name/publications (no merge)."""
    try:
        email = normalize_email(email, lookup=True)
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
        row = existing(conn, email)
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
    email = lookup_address(email)
    with engine.begin() as conn:
        row = existing(conn, email)
        done = suppress(conn, [row.id], "unsubscribed", "erasure", "erased")
        q.erase_from_deliveries(conn, row.id)
        delete_subscriber_events(conn, row.id)  # reading statistics (also ON DELETE CASCADE)
        q.delete_subscriber(conn, row.id)
        return done.cancelled


def show(engine: Engine, email: str) -> tuple[Any, list[Any]]:
    email = lookup_address(email)
    with engine.connect() as conn:
        row = existing(conn, email)
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
    from .store import signups as signup_q

    with engine.begin() as conn:
        row = q.get_by_email(conn, values["email"])
        if row is None:
            q.insert_many(conn, [{**values, "status": "pending"}])
            row = q.get_by_email(conn, values["email"])
        if row.status == "active":
            return SignupRequested(row.id, None, row.email, already=True)
        q.add_consent(conn, row.id, "signup", at=now, source="web", ip=ip, user_agent=user_agent,
                      wording_version=wording_version)
        signup_id = signup_q.insert_signup(conn, {
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
    from .store import signups as signup_q

    with engine.begin() as conn:
        signup = signup_q.get_signup(conn, signup_id)
        if signup is None:
            return "gone"
        if not signup_q.mark_confirmed(conn, signup_id, now):
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
    it to a bounced/complained address, changes nothing — also when the same
    link is posted many times at once: the status change is a compare-and-set,
    and only the request that made it writes the consent row.

    Returns (the status before or None when there is no such subscriber, the
    number of deliveries cancelled)."""
    with engine.begin() as conn:
        row = q.get_by_id(conn, subscriber_id)
        if row is None:
            return None, 0
        done = suppress(conn, [subscriber_id], "unsubscribed", source, detail=detail, ip=ip, user_agent=user_agent)
        return row.status, done.cancelled
