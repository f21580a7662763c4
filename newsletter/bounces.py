"""Bounces, complaints and mailed unsubscribe requests → subscriber status.

Every source is turned into :class:`MailEvent` values first — a provider's
webhook (``newsletter.web.webhooks``), an RFC 3464 delivery status
notification or an RFC 5965 (ARF) complaint report found in a maildir or mbox,
or a message to ``[sender] unsubscribe_mailto`` whose subject is
``unsubscribe <token>`` (the RFC 2369 mailto in every mail's List-Unsubscribe)
— and then :func:`apply_events` records them:

- ``hard`` (the address does not work: a 5.1.x status, or the service's own
  "hard/permanent bounce" when it gives no code — the rule is
  :mod:`newsletter.replies`) counts towards ``[provider] hard_bounce_limit``
  (:func:`newsletter.subscribers.count_bad_addresses`, the same count the
  delivery engine keeps) and then makes the address ``bounced``;
  ``complaint`` → ``complained``; ``unsubscribe`` → ``unsubscribed``.
- ``soft`` (4.x.x, and 5.x.x codes that say nothing about the address, such as
  5.7.1 policy) is counted; ``[bounces] soft_limit`` of them within
  ``soft_window`` make the address ``bounced``.
- ``ignored`` (deliveries, opens, delay warnings...) is only counted.

Every suppression goes through :func:`newsletter.subscribers.suppress`: a
consent-log row saying why, and the pending deliveries cancelled with the real
reason ("hard bounce: …", "complaint", "unsubscribed", "N soft bounces in …").

An event from a provider's webhook may carry the delivery it is about (the
``nl_delivery_id`` every HTTP provider attaches to each message): the
subscriber is then the one that delivery went to — even after an address
change — provided the delivery's address is the event's (an id from another
installation sharing the provider account names someone else).  Otherwise,
and for every other source, the address finds the subscriber.

Each event carries the id its source gave it (the provider's event id, the
DSN's Message-ID and recipient...); the pair (source, id) is unique in
``mail_events``, so the same event delivered twice — a webhook retry, a mailbox
processed again — changes nothing.
"""

from __future__ import annotations

import email
import hashlib
import logging
import mailbox
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage, Message
from email.utils import getaddresses
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import Engine

from .config import Config
from .errors import InputError
from .replies import bounce_kind
from .store import editions as eq
from .store import mail_events as mq
from .store import subscribers as sq
from .store.tables import utcnow
from .subscribers import count_bad_addresses, normalize_email, suppress
from .tokens import signing_keys, verify_token

log = logging.getLogger(__name__)

Kind = Literal["hard", "soft", "complaint", "unsubscribe", "ignored"]
KINDS = ("hard", "soft", "complaint", "unsubscribe", "ignored")


@dataclass(frozen=True)
class MailEvent:
    """One thing a mail service or mailbox told us about one address.

    ``email`` or ``subscriber_id`` names the subscriber (an unsubscribe request
    carries a signed id, everything else an address)."""

    source: str
    event_id: str
    kind: Kind
    email: str | None = None
    subscriber_id: int | None = None
    detail: str = ""
    at: datetime | None = None
    delivery_id: int | None = None  # our nl_delivery_id, when the provider handed it back
    # Reading statistics (newsletter.stats.record_provider_events): "open", "click" or
    # "delivered" when the service tracks; the clicked URL and the client it saw.
    reading: str | None = None
    url: str | None = None
    client_ip: str = ""
    user_agent: str = ""
    machine_open: bool = False  # the service says a machine fetched it (SendGrid sg_machine_open)


@dataclass
class BounceReport:
    """What applying provider events (bounces, complaints, unsubscribes) did, by kind."""

    hard: int = 0
    soft: int = 0
    complaint: int = 0
    unsubscribe: int = 0
    ignored: int = 0
    duplicate: int = 0
    unknown: int = 0  # addresses we do not have
    suppressed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, other: BounceReport) -> None:
        for name in ("hard", "soft", "complaint", "unsubscribe", "ignored", "duplicate", "unknown"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.suppressed += other.suppressed
        self.problems += other.problems

    def line(self) -> str:
        return (f"{self.hard} hard bounces, {self.soft} soft bounces, {self.complaint} complaints, "
                f"{self.unsubscribe} unsubscribe requests, {self.ignored} ignored, {self.duplicate} already seen, "
                f"{self.unknown} unknown addresses; {len(self.suppressed)} addresses suppressed")


_SUPPRESS = {"complaint": "complained", "unsubscribe": "unsubscribed"}


def apply_events(engine: Engine, config: Config, events: Iterable[MailEvent], *, dry_run: bool = False) -> BounceReport:
    """Record each event once and change the subscribers it names (see module doc).

    One transaction per event: a webhook batch that fails half-way has still
    recorded the events before it, and a retry skips those."""
    report = BounceReport()
    for ev in events:
        if ev.kind not in KINDS:
            raise ValueError(f"unknown event kind {ev.kind!r}")
        with engine.connect() as conn:
            trans = conn.begin()
            _apply_one(conn, config, ev, report)
            if dry_run:
                trans.rollback()
            else:
                trans.commit()
    return report


def _apply_one(conn, config: Config, ev: MailEvent, report: BounceReport) -> None:
    if ev.kind == "ignored":
        # Deliveries, opens, delays...: counted, not stored (they would fill the table).
        report.ignored += 1
        return
    now = utcnow()
    window = timedelta(seconds=config.bounces.soft_window_seconds)
    row = None
    if ev.subscriber_id is not None:
        row = sq.get_by_id(conn, ev.subscriber_id)
    elif (sid := _delivered_to(conn, ev)) is not None:
        row = sq.get_by_id(conn, sid)
    elif ev.email:
        try:
            row = sq.get_by_email(conn, normalize_email(ev.email))
        except ValueError:
            row = None
    detail = ev.detail[:1000] if ev.detail else None
    new = mq.insert_event(conn, {"source": ev.source, "event_id": ev.event_id[:300], "kind": ev.kind,
                                 "subscriber_id": row.id if row else None, "at": ev.at or now, "detail": detail})
    if not new:
        report.duplicate += 1
        return
    setattr(report, ev.kind, getattr(report, ev.kind) + 1)
    if row is None:
        report.unknown += 1
        return
    changed: list[int] = []
    if ev.kind == "hard":
        reason = f"hard bounce: {detail or ev.source}"
        changed = count_bad_addresses(conn, {row.id: reason}, limit=config.delivery.hard_bounce_limit,
                                      source=ev.source)
    elif ev.kind == "soft":
        n = mq.count_events(conn, row.id, "soft", now - window)
        if n >= config.bounces.soft_limit:
            reason = f"{n} soft bounces in {_days(window)}: {detail or ''}".strip()
            changed = suppress(conn, [row.id], "bounced", ev.source, reason).changed
    elif ev.kind in _SUPPRESS:
        changed = suppress(conn, [row.id], _SUPPRESS[ev.kind], ev.source, detail=detail).changed
    if changed:
        report.suppressed.append(row.email)
        log.info("%s: %s (%s)", row.email, ev.kind, ev.source)


@dataclass(frozen=True)
class EditionBounces:
    """An edition's bounces and complaints, for the console's sending page:
    ``at_send`` its deliveries that failed on a bad address (5.1.x, the rule of
    :mod:`newsletter.replies`); ``reported`` / ``complaints`` the people it was
    sent to with a bounce (hard or soft) / a complaint recorded since it was made
    (a report names the address, not the edition: a later edition's bounce from
    the same person counts here too)."""

    at_send: int
    reported: int
    complaints: int


def edition_bounces(engine: Engine, edition_id: int) -> EditionBounces | None:
    from .replies import enhanced_status, is_bad_address_code

    with engine.connect() as conn:
        row = eq.get_edition(conn, edition_id)
        if row is None:
            return None
        at_send = sum(1 for f in eq.failed_deliveries(conn, edition_id)
                      if is_bad_address_code(enhanced_status(f.last_reply or "")))
        reported = mq.recipients_reporting(conn, edition_id, ("hard", "soft"), row.created_at)
        complaints = mq.recipients_reporting(conn, edition_id, ("complaint",), row.created_at)
    return EditionBounces(at_send, reported, complaints)


def _delivered_to(conn, ev: MailEvent) -> int | None:
    """The subscriber of the event's delivery, if it went to the event's address."""
    if ev.delivery_id is None or not ev.email:
        return None
    found = eq.delivery_recipient(conn, ev.delivery_id)
    if found is None or found.subscriber_id is None or found.email.lower() != ev.email.strip().lower():
        return None
    return found.subscriber_id


def _days(window: timedelta) -> str:
    days = window.total_seconds() / 86400
    return f"{days:g} days" if days >= 1 else f"{window.total_seconds():g} s"


# -- RFC 3464 delivery status notifications and RFC 5965 complaint reports -------

def _header_blocks(part: Message) -> list[Message]:
    """The field groups of a message/delivery-status part (the email package
    parses each group as a headers-only message)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    # Some parsers leave the part as text: parse the groups ourselves.
    text = payload if isinstance(payload, str) else ""
    return [email.message_from_string(block.strip() + "\n") for block in re.split(r"\r?\n\s*\r?\n", text)
            if block.strip()]


def _address(value: str | None) -> str | None:
    """``rfc822; user@example.jp`` → ``user@example.jp``."""
    if not value:
        return None
    value = str(value)
    if ";" in value:
        value = value.split(";", 1)[1]
    value = value.strip().strip("<>").strip()
    return value or None


def message_id_of(msg: Message, raw: bytes | None = None) -> str:
    mid = str(msg.get("Message-ID", "") or "").strip()
    if mid:
        return mid
    return "sha256:" + hashlib.sha256(raw if raw is not None else msg.as_bytes()).hexdigest()


def parse_report(msg: Message, source: str = "dsn") -> list[MailEvent]:
    """The events in one message if it is a DSN (multipart/report;
    report-type=delivery-status) or an ARF complaint (report-type=feedback-report);
    [] for any other message."""
    if msg.get_content_type() != "multipart/report":
        return []
    report_type = (msg.get_param("report-type") or "").lower()
    mid = message_id_of(msg)
    events: list[MailEvent] = []
    if report_type == "delivery-status":
        for part in msg.walk():
            if part.get_content_type() not in ("message/delivery-status", "message/global-delivery-status"):
                continue
            blocks = _header_blocks(part)
            for block in blocks[1:] if len(blocks) > 1 else blocks:
                recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
                if not recipient:
                    continue
                action = str(block.get("Action", "")).strip().lower()
                status = str(block.get("Status", "")).strip()
                kind = bounce_kind(status) if action == "failed" else "ignored"
                diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
                events.append(MailEvent(source, f"{mid}:{recipient.lower()}", kind, email=recipient,
                                        detail=f"{action} {status} {diagnostic}".strip()))
    elif report_type == "feedback-report":
        recipient = None
        feedback_type = ""
        for part in msg.walk():
            ctype = part.get_content_type()
            if ctype == "message/feedback-report":
                for block in _header_blocks(part):
                    feedback_type = feedback_type or str(block.get("Feedback-Type", "")).strip().lower()
                    recipient = recipient or _address(block.get("Original-Rcpt-To"))
            elif ctype in ("message/rfc822", "text/rfc822-headers") and recipient is None:
                if ctype == "message/rfc822":
                    inner = part.get_payload(0)
                else:
                    inner = email.message_from_bytes(part.get_payload(decode=True) or b"")
                tos = getaddresses([str(v) for v in inner.get_all("To", [])])
                recipient = tos[0][1] if tos and tos[0][1] else None
        if recipient:
            kind: Kind = "complaint" if feedback_type in ("abuse", "fraud", "virus", "other", "") else "ignored"
            events.append(MailEvent(source, f"{mid}:{recipient.lower()}", kind, email=recipient,
                                    detail=f"feedback-type {feedback_type or '-'}"))
    return events


_UNSUBSCRIBE_SUBJECT = re.compile(r"^\s*unsubscribe\s+(\d{1,18}\.[A-Za-z0-9_-]{10,64})\s*$", re.IGNORECASE)


def parse_unsubscribe_request(msg: Message, config: Config, keys: list[bytes]) -> MailEvent | None:
    """A mail sent through the List-Unsubscribe mailto: to ``unsubscribe_mailto``
    with the subject ``unsubscribe <token>``.  The signed token, not the From
    header (which anyone can write), says who leaves."""
    target = config.sender.unsubscribe_mailto
    if not target:
        return None
    recipients = {a.lower() for _, a in getaddresses([str(v) for h in ("To", "Cc", "Delivered-To", "X-Original-To")
                                                       for v in msg.get_all(h, [])])}
    if target.lower() not in recipients:
        return None
    m = _UNSUBSCRIBE_SUBJECT.match(str(msg.get("Subject", "") or ""))
    if not m:
        return None
    sid = verify_token(keys, "unsubscribe", m.group(1))
    if sid is None:
        return MailEvent("mailto", message_id_of(msg), "ignored", detail="unsubscribe request with a bad token")
    return MailEvent("mailto", message_id_of(msg), "unsubscribe", subscriber_id=sid, detail="mailto unsubscribe")


def read_messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """(where, raw bytes) for each message in a Maildir folder, an mbox file or
    one .eml file."""
    if path.is_dir():
        if not ((path / "cur").is_dir() or (path / "new").is_dir()):
            raise InputError(f"{path}: a folder but not a Maildir (no cur/ or new/)")
        box = mailbox.Maildir(str(path), factory=None, create=False)
        for key in sorted(box.keys()):
            with box.get_file(key) as fh:
                yield f"{path}/{key}", fh.read()
        return
    try:
        with path.open("rb") as fh:
            head = fh.read(5)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or folder") from None
    if head == b"From ":
        box = mailbox.mbox(str(path), factory=None, create=False)
        for i, key in enumerate(box.keys(), 1):
            yield f"{path}:{i}", box.get_bytes(key)
        return
    yield str(path), path.read_bytes()


def events_from_mail(raw: bytes, config: Config, keys: list[bytes]) -> list[MailEvent]:
    msg: EmailMessage = email.message_from_bytes(raw, policy=policy.compat32)  # type: ignore[assignment]
    unsubscribe = parse_unsubscribe_request(msg, config, keys)
    if unsubscribe is not None:
        return [unsubscribe]
    return parse_report(msg)


def process_path(engine: Engine, config: Config, path: Path, *, dry_run: bool = False) -> tuple[int, BounceReport]:
    """``newsletter bounces process PATH``: every message in PATH; returns
    (messages read, report).  Messages that are neither reports nor unsubscribe
    requests are counted in ``ignored`` and left alone."""
    keys = signing_keys(config)
    total = BounceReport()
    n = 0
    for where, raw in read_messages(path):
        n += 1
        try:
            events = events_from_mail(raw, config, keys)
        except Exception as exc:  # one broken message must not stop the mailbox
            total.problems.append(f"{where}: cannot parse: {exc}")
            continue
        if not events:
            total.ignored += 1
            continue
        total.add(apply_events(engine, config, events, dry_run=dry_run))
    return n, total
