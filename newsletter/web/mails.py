"""The two mails the sign-up form sends: the confirmation link (double opt-in)
and, for an address that is already subscribed, a notice with its preferences
link — so that the page shown after the form is the same either way.

Built like the digests (:mod:`newsletter.editions.compose`): headers written
by our code from header-safe values, a UTF-8 text/plain body in base64, and
handed to the configured provider.
"""

from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2

from ..config import Config
from ..editions.compose import CRLF, ascii_address, encode_address, encode_text
from ..interfaces import MessageContent, OutgoingMessage, SendResult
from ..providers import open_provider
from .words import text


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


def _mail_env(templates: Path) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), autoescape=False,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def confirmation_mail(config: Config, templates: Path, to: str, url: str, hours: int) -> Mail:
    lang = config.site.language
    body = _mail_env(templates).get_template("mail_confirm.txt.j2").render(
        en=lang == "en", site=config.site, sender=config.sender, url=url, hours=hours)
    return Mail(to, text(lang, "mail_confirm_subject", site=config.site.name), body)


def notice_mail(config: Config, templates: Path, to: str, preferences_url: str) -> Mail:
    lang = config.site.language
    body = _mail_env(templates).get_template("mail_notice.txt.j2").render(
        en=lang == "en", site=config.site, sender=config.sender, url=preferences_url)
    return Mail(to, text(lang, "mail_notice_subject", site=config.site.name), body)


def outgoing(config: Config, mail: Mail, now: datetime) -> OutgoingMessage:
    sender = config.sender
    msgid = f"<nl.web.{int(now.timestamp())}.{secrets.token_hex(8)}@{config.site.domain}>"
    body = mail.body.replace("\r\n", "\n").replace("\n", CRLF).encode("utf-8")
    encoded = base64.b64encode(body)
    lines = [
        f"From: {encode_address(sender.name, sender.address, 'utf-8', 'From')}",
        f"To: {ascii_address(mail.to)}",
        f"Subject: {encode_text(mail.subject, 'utf-8', 'Subject')}",
        f"Date: {format_datetime(now.astimezone(ZoneInfo(config.site.timezone)))}",
        f"Message-ID: {msgid}",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="UTF-8"',
        "Content-Transfer-Encoding: base64",
    ]
    if sender.reply_to:
        lines.insert(2, f"Reply-To: {ascii_address(sender.reply_to)}")
    data = (CRLF.join(lines) + CRLF + CRLF).encode("ascii") + b"\r\n".join(
        encoded[i : i + 76] for i in range(0, len(encoded), 76)) + b"\r\n"
    return OutgoingMessage(
        delivery_id=0,
        sender=ascii_address(sender.bounce_address or sender.address),
        recipient=ascii_address(mail.to),
        message_id=msgid,
        data=data,
        headers={"Message-ID": msgid},
        variant=f"web:{secrets.token_hex(6)}",
        content=MessageContent(subject=mail.subject, text=mail.body, html=None, from_name=sender.name,
                               from_address=sender.address, reply_to=sender.reply_to,
                               headers={"Auto-Submitted": "auto-generated"}),
    )


def send(config: Config, message: OutgoingMessage) -> SendResult:
    """Hand one message to the configured provider (a fresh instance each time:
    sign-ups are rare, and a long-lived SMTP connection would go stale)."""
    provider = open_provider(config)
    try:
        results = provider.send([message])
    finally:
        provider.close()
    result = results[0] if results else SendResult(message.delivery_id, "transient", reply="no result")
    if result.status != "accepted":
        logging.getLogger(__name__).warning("sign-up mail not accepted by %s: %s %s", config.provider.kind,
                                            result.status, result.reply)
    return result
