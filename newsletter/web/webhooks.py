"""Bounce and complaint webhooks of the HTTP mail services.

``POST /webhooks/<provider>``; each provider's request is authenticated the
way that provider documents, then turned into :class:`~newsletter.bounces.MailEvent`
values for :func:`~newsletter.bounces.apply_events` (idempotent: a retried
delivery of the same event changes nothing).  An endpoint whose credentials
are not configured answers 404; a request that fails authentication 401/403
and changes nothing; a body that is not what the provider sends 400.

- **SendGrid** Event Webhook: ECDSA P-256/SHA-256 signature (base64 DER) in
  ``X-Twilio-Email-Event-Webhook-Signature`` over the
  ``X-Twilio-Email-Event-Webhook-Timestamp`` value followed by the raw body;
  the verification key is the base64 DER (or PEM) public key SendGrid shows.
- **Mailgun**: ``signature.signature`` = hex HMAC-SHA256, keyed with the
  webhook signing key, of ``signature.timestamp`` + ``signature.token``.
- **Postmark** signs nothing; its webhooks are protected with HTTP basic auth
  credentials put in the webhook URL (``https://user:pass@host/webhooks/postmark``).
  We check those (user name in config, password from the environment).
- **Amazon SES via SNS**: the SNS message signature (SignatureVersion 1 =
  RSA/SHA-1, 2 = RSA/SHA-256) over the documented "string to sign", verified
  with the certificate named by ``SigningCertURL``.  That URL must be https on
  an allow-listed host (``sns.*.amazonaws.com``); the certificate is read from
  ``[web.webhooks] ses_certificates`` (a folder, file named as the URL's last
  segment) and fetched only when ``ses_fetch_certificates = true``.  Raw
  message delivery (no SNS envelope, so no signature) is not supported.

Each event is matched to its delivery by the ``nl_delivery_id`` our providers
attach to every message (SendGrid ``custom_args``, Mailgun ``v:nl-delivery-id``,
Postmark ``Metadata``, SES ``EmailTags``), the address as the fallback — see
:mod:`newsletter.bounces`.

Timestamps older than ``[web.webhooks] max_age`` (default 1 day) are refused
(replays); duplicates within it are harmless anyway.

Whatever arrives — before authentication and after it — ends as an answer, never
an exception: a JSON body is checked as a whole before any field is used (UTF-8,
valid JSON, nested at most :data:`MAX_JSON_DEPTH` deep, no lone surrogate or NUL
in any string, numbers Python can read), every field is type-checked before it
is used, numbers in text are ASCII digits, and secrets are compared as bytes
(:func:`newsletter.tokens.equal`).  No provider sends anything else, so each of
these is a 400 (403 for a signature that cannot be one).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..bounces import MailEvent, apply_events
from ..config import WebhookSettings
from ..replies import bounce_kind
from ..stats import record_provider_events
from ..tokens import equal
from .service import service

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


class Rejected(Exception):
    """The request is refused: ``status`` and a message for the sender."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


# The providers' payloads are at most five levels deep.
MAX_JSON_DEPTH = 32
_DIGITS = re.compile(r"[0-9]{1,12}")


def _json(body: bytes) -> Any:
    """``body`` as JSON whose every part is safe to use: Rejected(400) otherwise."""
    try:
        data = json.loads(body.decode("utf-8"))
    except RecursionError:  # the parser's own bound, far deeper than MAX_JSON_DEPTH
        raise Rejected(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: not JSON, or an integer too long to read
        raise Rejected(400, f"body is not JSON ({exc.__class__.__name__})") from None
    _check_json(data)
    return data


def _check_json(data: Any) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH and strings no provider sends:
    lone surrogates (``"\\ud800"`` is valid JSON but not text, and cannot be
    encoded) and NUL (PostgreSQL cannot store it)."""
    todo: list[tuple[Any, int]] = [(data, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise Rejected(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(value, dict):
                todo.extend((k, depth) for k in value)
                todo.extend((v, depth + 1) for v in value.values())
            else:
                todo.extend((v, depth + 1) for v in value)


def _check_text(value: str) -> None:
    if "\x00" in value:
        raise Rejected(400, "NUL character in the body")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected(400, "invalid Unicode in the body (a lone surrogate)") from None


def _short(value: Any) -> str:
    """A client's value, quoted and cut short, for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _number(text: str, what: str) -> int:
    """A timestamp in text: ASCII digits only (``'²'.isdigit()`` is true too)."""
    if not _DIGITS.fullmatch(text):
        raise Rejected(400, f"bad {what}")
    return int(text)


_DELIVERY_ID = re.compile(r"[0-9]{1,10}")


def _delivery_id(value: Any) -> int | None:
    """Our ``nl_delivery_id`` as a provider hands it back (a string; SES: a list of
    strings), or None for anything else — ASCII digits only ('²'.isdigit() is true)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return int(value) if isinstance(value, str) and _DELIVERY_ID.fullmatch(value) else None


# Provider events that feed the reading statistics (newsletter.stats.record_provider_events).
READING = ("open", "click", "delivered")


def _text(value: Any) -> str | None:
    return value[:2000] if isinstance(value, str) else None


def _check_age(settings: WebhookSettings, timestamp: float, now: float) -> None:
    if abs(now - timestamp) > settings.max_age_seconds:
        raise Rejected(403, "timestamp outside the accepted window (replay?)")


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Rejected(403, f"{what} is not base64") from None


def _secret(env: str | None) -> str | None:
    return os.environ.get(env) if env else None


# -- SendGrid ------------------------------------------------------------------

def _sendgrid_key(settings: WebhookSettings) -> ec.EllipticCurvePublicKey | None:
    text = settings.sendgrid_public_key or _secret(settings.sendgrid_public_key_env)
    if not text:
        return None
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text.strip()))
    except (ValueError, binascii.Error):
        raise Rejected(503, "the configured SendGrid verification key cannot be read") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise Rejected(503, "the configured SendGrid verification key is not an ECDSA key")
    return key


def sendgrid_events(settings: WebhookSettings, headers: Mapping[str, str], body: bytes, now: float) -> list[MailEvent]:
    key = _sendgrid_key(settings)
    if key is None:
        raise Rejected(404, "the SendGrid webhook is not configured")
    signature = headers.get("x-twilio-email-event-webhook-signature", "")
    timestamp = headers.get("x-twilio-email-event-webhook-timestamp", "")
    if not signature or not timestamp:
        raise Rejected(403, "signature headers missing")
    try:
        key.verify(_b64(signature, "signature"), timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Rejected(403, "signature does not match") from None
    _check_age(settings, _number(timestamp, "timestamp header"), now)
    data = _json(body)
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise Rejected(400, "expected a JSON array of event objects")
    events = []
    for e in data:
        email, name = e.get("email"), e.get("event")
        if not isinstance(email, str) or not isinstance(name, str):
            raise Rejected(400, "an event without 'email' or 'event'")
        event_id = str(e.get("sg_event_id") or hashlib.sha256(json.dumps(e, sort_keys=True).encode()).hexdigest())
        reason = str(e.get("reason") or "")
        status = str(e.get("status") or "")
        if name == "bounce":
            # type "blocked": the receiving server refused this time (reputation, content): not the address.
            # Otherwise the one hard-bounce rule (newsletter.replies): 5.1.x hard, other codes soft;
            # SendGrid's own "bounce" when it gives no code.
            kind = "soft" if e.get("type") == "blocked" else bounce_kind(status, default="hard")
            if kind == "ignored":
                kind = "hard"
        elif name == "dropped":
            kind = ("hard" if ("Bounced" in reason or "Invalid" in reason) else
                    "complaint" if "Spam" in reason else "unsubscribe" if "Unsubscribed" in reason else "ignored")
        elif name == "spamreport":
            kind = "complaint"
        elif name in ("unsubscribe", "group_unsubscribe"):
            kind = "unsubscribe"
        else:
            kind = "ignored"  # processed, delivered, deferred, open, click...
        events.append(MailEvent("sendgrid", event_id, kind, email=email, detail=f"{name} {status} {reason}".strip(),
                                delivery_id=_delivery_id(e.get("nl_delivery_id")),
                                reading=name if name in READING else None, url=_text(e.get("url")),
                                client_ip=_text(e.get("ip")) or "", user_agent=_text(e.get("useragent")) or "",
                                machine_open=e.get("sg_machine_open") is True))
    return events


# -- Mailgun ---------------------------------------------------------------------

def mailgun_events(settings: WebhookSettings, headers: Mapping[str, str], body: bytes, now: float) -> list[MailEvent]:
    key = _secret(settings.mailgun_signing_key_env)
    if not key:
        raise Rejected(404, "the Mailgun webhook is not configured")
    data = _json(body)
    sig = data.get("signature") if isinstance(data, dict) else None
    if not isinstance(sig, dict) or not all(isinstance(sig.get(k), (str, int))
                                            for k in ("timestamp", "token", "signature")):
        raise Rejected(403, "signature missing")
    timestamp, token = str(sig["timestamp"]), str(sig["token"])
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not equal(expected, str(sig["signature"]).lower()):
        raise Rejected(403, "signature does not match")
    _check_age(settings, _number(timestamp, "signature.timestamp"), now)
    ed = data.get("event-data")
    if not isinstance(ed, dict) or not isinstance(ed.get("event"), str):
        raise Rejected(400, "event-data missing")
    name, recipient = ed["event"], ed.get("recipient")
    if not isinstance(recipient, str):
        raise Rejected(400, "event-data.recipient missing")
    status = ed.get("delivery-status") if isinstance(ed.get("delivery-status"), dict) else {}
    if name == "failed":
        # Permanent: the one hard-bounce rule on the enhanced code when Mailgun gives one, else hard.
        code = status.get("enhanced-code")
        kind = bounce_kind(str(code or ""), default="hard") if ed.get("severity") == "permanent" else "soft"
    elif name == "complained":
        kind = "complaint"
    elif name == "unsubscribed":
        kind = "unsubscribe"
    else:
        kind = "ignored"
    # event-data.id is unique only within a day; with the timestamp it is unique.
    event_id = f"{ed.get('id') or token}:{ed.get('timestamp') or timestamp}"
    detail = f"{name} {ed.get('severity') or ''} {status.get('code') or ''} {ed.get('reason') or ''}"
    variables = ed.get("user-variables") if isinstance(ed.get("user-variables"), dict) else {}
    client = ed.get("client-info") if isinstance(ed.get("client-info"), dict) else {}
    return [MailEvent("mailgun", event_id, kind, email=recipient, detail=" ".join(detail.split()),
                      delivery_id=_delivery_id(variables.get("nl-delivery-id")),
                      reading={"opened": "open", "clicked": "click", "delivered": "delivered"}.get(name),
                      url=_text(ed.get("url")), client_ip=_text(ed.get("ip")) or "",
                      user_agent=_text(client.get("user-agent")) or "")]


# -- Postmark --------------------------------------------------------------------

POSTMARK_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
POSTMARK_SOFT = {"SoftBounce", "Transient", "DnsError"}
POSTMARK_REALM = 'Basic realm="newsletter webhooks", charset="UTF-8"'


def postmark_events(settings: WebhookSettings, headers: Mapping[str, str], body: bytes, now: float) -> list[MailEvent]:
    password = _secret(settings.postmark_password_env)
    if not settings.postmark_username or not password:
        raise Rejected(404, "the Postmark webhook is not configured")
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    given = b""
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            given = b""
    expected = f"{settings.postmark_username}:{password}".encode()
    if not given or not equal(expected, given):
        raise Rejected(401, "authentication required", {"WWW-Authenticate": POSTMARK_REALM})
    data = _json(body)
    if not isinstance(data, dict) or not isinstance(data.get("RecordType"), str):
        raise Rejected(400, "expected a Postmark webhook object with RecordType")
    record = data["RecordType"]
    email = data.get("Email") or data.get("Recipient")
    if not isinstance(email, str):
        raise Rejected(400, "no Email/Recipient in the webhook")
    kind = "ignored"
    bounce_type = data.get("Type") if isinstance(data.get("Type"), str) else ""
    if record == "Bounce":
        kind = "hard" if bounce_type in POSTMARK_HARD else "soft" if bounce_type in POSTMARK_SOFT \
            else "complaint" if bounce_type == "SpamComplaint" else "ignored"
    elif record == "SpamComplaint":
        kind = "complaint"
    elif record == "SubscriptionChange" and data.get("SuppressSending") is True:
        kind = {"HardBounce": "hard", "SpamComplaint": "complaint", "ManualSuppression": "unsubscribe"}.get(
            str(data.get("SuppressionReason")), "ignored")
    # Postmark names no event id: the record, the message and the event's own time (to
    # 1e-7 s: Open/Click ReceivedAt, Delivery DeliveredAt) are one event; a click adds its link.
    when = (data.get("ChangedAt") or data.get("BouncedAt") or data.get("ReceivedAt") or data.get("DeliveredAt")
            or "")
    event_id = f"{record}:{data.get('ID') or data.get('MessageID')}:{when}"
    if record == "Click" and isinstance(data.get("OriginalLink"), str):
        event_id += ":" + hashlib.sha256(data["OriginalLink"].encode("utf-8", "surrogatepass")).hexdigest()[:16]
    detail = f"{record} {data.get('Type') or data.get('SuppressionReason') or ''} {data.get('Description') or ''}"
    metadata = data.get("Metadata") if isinstance(data.get("Metadata"), dict) else {}
    geo = data.get("Geo") if isinstance(data.get("Geo"), dict) else {}
    return [MailEvent("postmark", event_id, kind, email=email, detail=" ".join(detail.split()),
                      delivery_id=_delivery_id(metadata.get("nl_delivery_id")),
                      reading={"Open": "open", "Click": "click", "Delivery": "delivered"}.get(record),
                      url=_text(data.get("OriginalLink")), client_ip=_text(geo.get("IP")) or "",
                      user_agent=_text(data.get("UserAgent")) or "")]


# -- Amazon SES via SNS ---------------------------------------------------------

_SIGNED_KEYS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_CERT_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}\.pem")


def sns_string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The text SNS signs: "Key\\nvalue\\n" for each signed key present, in
    byte order (Subject only when the message has one)."""
    kind = message.get("Type", "")
    keys = _SIGNED_KEYS.get(kind) if isinstance(kind, str) else None
    if keys is None:
        raise Rejected(400, f"unknown SNS message Type {_short(kind)}")
    out = []
    for key in keys:
        if key == "Subject" and message.get("Subject") is None:
            continue
        value = message.get(key)
        if not isinstance(value, str):
            raise Rejected(400, f"SNS message without {key}")
        out.append(f"{key}\n{value}\n")
    return "".join(out).encode("utf-8")


def _sns_certificate(settings: WebhookSettings, url: str, now: datetime) -> x509.Certificate:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:  # e.g. "https://[x/": an unclosed IPv6 bracket
        raise Rejected(403, "SigningCertURL is not an allowed SNS certificate URL") from None
    name = parts.path.rsplit("/", 1)[-1]
    if parts.scheme != "https" or not any(fnmatch.fnmatchcase(host, p) for p in settings.ses_certificate_hosts) \
            or not _CERT_NAME.fullmatch(name) or parts.query or parts.username:
        raise Rejected(403, "SigningCertURL is not an allowed SNS certificate URL")
    data = None
    if settings.ses_certificates:
        path = Path(settings.ses_certificates) / name
        if path.is_file():
            data = path.read_bytes()
    if data is None and settings.ses_fetch_certificates:
        import requests

        try:
            reply = requests.get(url, timeout=5, allow_redirects=False)
        except requests.RequestException as exc:
            raise Rejected(503, f"cannot fetch the signing certificate ({exc.__class__.__name__})") from None
        if reply.status_code != 200:
            raise Rejected(503, f"cannot fetch the signing certificate (HTTP {reply.status_code})")
        data = reply.content
        if settings.ses_certificates:
            Path(settings.ses_certificates).mkdir(parents=True, exist_ok=True)
            (Path(settings.ses_certificates) / name).write_bytes(data)
    if data is None:
        raise Rejected(403, "unknown signing certificate")
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise Rejected(503, "the signing certificate cannot be read") from None
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise Rejected(403, "the signing certificate is not valid now")
    return cert


def _sns_time(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 with a positive offset
        raise Rejected(400, "bad SNS Timestamp") from None


def ses_events(settings: WebhookSettings, headers: Mapping[str, str], body: bytes, now: float) -> list[MailEvent]:
    if not settings.ses_certificates and not settings.ses_fetch_certificates:
        raise Rejected(404, "the SES (SNS) webhook is not configured")
    msg = _json(body)
    if not isinstance(msg, dict):
        raise Rejected(400, "expected an SNS message object")
    declared = headers.get("x-amz-sns-message-type")
    if declared and declared != msg.get("Type"):
        raise Rejected(400, "x-amz-sns-message-type does not match the message Type")
    version = msg.get("SignatureVersion")
    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(str(version))
    if algorithm is None:
        raise Rejected(400, f"unsupported SignatureVersion {_short(version)}")
    if not isinstance(msg.get("Signature"), str) or not isinstance(msg.get("SigningCertURL"), str):
        raise Rejected(403, "signature missing")
    signed = sns_string_to_sign(msg)
    when = datetime.fromtimestamp(now, UTC)
    cert = _sns_certificate(settings, msg["SigningCertURL"], when)
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Rejected(403, "the signing certificate has no RSA key")
    try:
        key.verify(_b64(msg["Signature"], "Signature"), signed, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise Rejected(403, "signature does not match") from None
    _check_age(settings, _sns_time(msg["Timestamp"]).timestamp(), now)
    if settings.ses_topic_arns and msg.get("TopicArn") not in settings.ses_topic_arns:
        raise Rejected(403, "TopicArn not allowed")
    if msg["Type"] == "SubscriptionConfirmation":
        # Confirming means fetching SubscribeURL; the operator does that (see README).
        log.warning("SNS subscription confirmation for %s: open its SubscribeURL to confirm: %s",
                    msg.get("TopicArn"), msg.get("SubscribeURL"))
        return []
    if msg["Type"] != "Notification":
        return []
    note = _json(msg["Message"].encode("utf-8"))
    if not isinstance(note, dict):
        raise Rejected(400, "the SNS Message is not an SES notification")
    kind_name = note.get("notificationType") or note.get("eventType")
    mail = note.get("mail") if isinstance(note.get("mail"), dict) else {}
    tags = mail.get("tags") if isinstance(mail.get("tags"), dict) else {}
    delivery_id = _delivery_id(tags.get("nl_delivery_id"))
    events = []
    if kind_name == "Bounce":
        bounce = note.get("bounce") if isinstance(note.get("bounce"), dict) else {}
        bounce_type = bounce.get("bounceType")
        for r in _list(bounce.get("bouncedRecipients")):
            if isinstance(r, dict) and isinstance(r.get("emailAddress"), str):
                # Permanent: the one hard-bounce rule on the recipient's status when SES gives one.
                kind = bounce_kind(str(r.get("status") or ""), default="hard") if bounce_type == "Permanent" \
                    else "soft"
                detail = (f"{bounce_type}/{bounce.get('bounceSubType')} {r.get('status') or ''} "
                          f"{r.get('diagnosticCode') or ''}")
                events.append(MailEvent("ses", f"{msg['MessageId']}:{r['emailAddress'].lower()}", kind,
                                        email=r["emailAddress"], detail=" ".join(detail.split()),
                                        delivery_id=delivery_id))
    elif kind_name == "Complaint":
        complaint = note.get("complaint") if isinstance(note.get("complaint"), dict) else {}
        feedback = complaint.get("complaintFeedbackType")
        for r in _list(complaint.get("complainedRecipients")):
            if isinstance(r, dict) and isinstance(r.get("emailAddress"), str):
                events.append(MailEvent("ses", f"{msg['MessageId']}:{r['emailAddress'].lower()}",
                                        "ignored" if feedback == "not-spam" else "complaint",
                                        email=r["emailAddress"], detail=f"complaint {feedback or ''}".strip(),
                                        delivery_id=delivery_id))
    return events


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


PROVIDERS: dict[str, Callable[[WebhookSettings, Mapping[str, str], bytes, float], list[MailEvent]]] = {
    "sendgrid": sendgrid_events,
    "mailgun": mailgun_events,
    "postmark": postmark_events,
    "ses": ses_events,
}


async def receive(request: Request) -> Response:
    svc = service(request)
    parse = PROVIDERS.get(request.path_params["provider"])
    if parse is None:
        raise HTTPException(404, "no such webhook")
    body = await request.body()
    try:
        events = parse(svc.config.web.webhooks, request.headers, body, svc.clock().timestamp())
    except Rejected as exc:
        if exc.status >= 500:
            log.error("webhook %s: %s", request.path_params["provider"], exc)
        raise HTTPException(exc.status, str(exc), headers=exc.headers) from None
    report = await run_in_threadpool(apply_events, svc.engine, svc.config, events)
    if any(ev.reading for ev in events):
        await run_in_threadpool(record_provider_events, svc.engine, svc.config, events, svc.clock())
    return PlainTextResponse(f"ok: {len(events)} events, {report.duplicate} already seen\n")
