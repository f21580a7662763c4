"""What a mail server's answer means: SMTP reply codes, RFC 3463 enhanced status
codes, and the one rule for "this address does not work".

Neutral ground: the SMTP provider reads its replies here, the bounce processor
reads delivery status notifications and the webhooks read the services' status
fields here, and nobody else parses reply text — the delivery engine reads the
typed :class:`~newsletter.interfaces.SendResult` (``status``, ``bad_address``).

Rules this module keeps:

- **Basic reply code** (:func:`classify_smtp_reply`): 2xx accepted, 4xx
  transient, 5xx permanent, except 552 (storage exceeded), which RFC 5321
  §4.5.3.1.10 lets clients treat as temporary and which is mailbox-full in
  practice.  Anything else (1xx/3xx as a final answer, smtplib's -1 for a
  garbled line) means the dialogue broke: transient.  The enhanced code does
  not overrule the basic code (servers disagree too often on it).
- **The hard-bounce rule — which codes.**  An address is *bad* (a hard bounce)
  when a permanent failure carries an enhanced status of class 5, subject 1
  (5.1.x: bad mailbox, bad destination system, bad syntax, ambiguous, moved,
  null MX — RFC 3463 §3.2 "Addressing Status"), or, when the answer has no
  enhanced code, when the service says so in its own typed field (Postmark 406
  "inactive recipient", a SendGrid/Mailgun refusal naming the address, a webhook's
  "hard"/"Permanent" bounce type).  Every other permanent failure — 5.7.x policy,
  5.2.x mailbox, 5.3.x/5.4.x/5.5.x/5.6.x — fails the message and says nothing
  about the address: as a reported bounce it counts as *soft*.
- **The hard-bounce rule — after how many** is kept by
  :func:`newsletter.subscribers.count_bad_addresses`: ``[provider]
  hard_bounce_limit`` bad-address answers (default 1) make the subscriber
  ``bounced``, for the engine and the bounce intake alike.
"""

from __future__ import annotations

import re
from typing import Literal

from .interfaces import Status

__all__ = ["BounceKind", "bounce_kind", "classify_smtp_reply", "enhanced_status", "is_bad_address_code",
           "smtp_outcome"]

BounceKind = Literal["hard", "soft", "ignored"]

# RFC 3463: class.subject.detail, at the start of the reply text.
_ENHANCED = re.compile(r"^\s*(?:\d{3}[ -])?([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
# Anywhere in a status field ("Status: 5.1.1", "smtp; 550 5.1.1 ...").
_ANY_ENHANCED = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")


def classify_smtp_reply(code: int, text: str = "") -> Status:
    """What a final reply to MAIL/RCPT/DATA means for the message (see the module doc)."""
    if 200 <= code < 300:
        return "accepted"
    if code == 552:
        return "transient"
    if 400 <= code < 500:
        return "transient"
    if 500 <= code < 600:
        return "permanent"
    return "transient"


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply ("5.1.1"), if any.
    Accepts the text with or without the basic code in front."""
    match = _ENHANCED.match(text)
    return match.group(1) if match else None


# Japan's mobile carriers (docomo, au, SoftBank, Y!mobile) tell bulk senders to stop
# mailing an unknown address at once: a burst of mail to addresses that do not exist
# gets the sending network blocked.  Their addresses are suppressed at the first
# bad-address answer, whatever ``hard_bounce_limit`` says.
CARRIER_DOMAINS = ("docomo.ne.jp", "ezweb.ne.jp", "au.com", "softbank.ne.jp", "i.softbank.jp", "ymobile.ne.jp")


def is_bad_address_code(code: str | None) -> bool:
    """5.1.x: the enhanced codes that say the address itself does not work."""
    return code is not None and code.startswith("5.1.")


def smtp_outcome(code: int, text: str) -> tuple[Status, bool]:
    """(status, bad address) for an SMTP reply: the address is bad only when the
    reply is permanent *and* its enhanced code is 5.1.x."""
    status = classify_smtp_reply(code, text)
    return status, status == "permanent" and is_bad_address_code(enhanced_status(text))


def bounce_kind(status: str | None, *, default: BounceKind = "ignored") -> BounceKind:
    """A reported failure's kind from the enhanced status found anywhere in
    ``status`` (a DSN's ``Status:`` field, a webhook's status/diagnostic):
    5.1.x hard; any other 5.x.x, and 4.x.x, soft; 2.x.x ignored.  ``default``
    when there is no code at all — ``"hard"`` where the service's own typed
    field already says the bounce is permanent, ``"ignored"`` where nothing does."""
    match = _ANY_ENHANCED.search(status or "")
    if not match:
        return default
    code = match.group(1)
    if is_bad_address_code(code):
        return "hard"
    return "soft" if code[0] in "45" else "ignored"
