"""The ``sendgrid`` provider: Twilio SendGrid v3 Mail Send (``POST /v3/mail/send``).

Batching: the messages of one variant share everything but the personal parts,
so they go as **one request with up to 1,000 ``personalizations``** (SendGrid's
limit, which also caps to+cc+bcc at 1,000 per request), each with:

- ``to``: the recipient and their name;
- ``substitutions``: the personal values.  SendGrid replaces the same keys in the
  subject, the text and the HTML alike, but the HTML needs escaped values and the
  text plain ones, so each part's placeholders are rewritten once per variant to
  keys of their own, named by :func:`newsletter.links.server_key` (random per
  render like the placeholders: ``%%nl_greeting_<nonce>%%`` and
  ``%%nl_greeting_<nonce>_html%%``), so article text cannot name one;
- ``headers``: this recipient's List-Unsubscribe (the variant's List-Id,
  List-Unsubscribe-Post, Auto-Submitted and Precedence are request-wide);
- ``custom_args``: ``nl_delivery_id``, which SendGrid hands back in every event
  webhook, so a bounce finds its delivery row.

A request is all or nothing: 202, or 400 with ``errors[].field`` such as
``personalizations.3.to.0.email``.  When the fields name personalizations, those
messages fail (with ``bad_address`` when SendGrid's words are about the address) and the others go again at once
without them; a 413 splits the request in halves.  A recipient never appears
twice in one request (SendGrid refuses that).  403 is SendGrid's answer to an
unverified sender identity as much as to a revoked key, so 401 and 403 both
count as a configuration problem.  Rate limits come as 429 with
``X-RateLimit-Reset`` (epoch seconds); a ``Retry-After`` is honoured too.

Message-ID: SendGrid makes its own; ``provider_id`` is the request's
``X-Message-Id``, the prefix of every ``sg_message_id`` in its events.
SendGrid builds the MIME itself, always in UTF-8, so a subscriber's
ISO-2022-JP preference is not kept here (use ``ses`` or ``mailgun`` for that).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from newsletter import links
from newsletter.interfaces import MessageContent, OutgoingMessage, SendResult
from newsletter.providers import OptionReader
from newsletter.providers.http import (
    HTTPProvider,
    HTTPRequest,
    HTTPResponse,
    Outcome,
    env_secret,
    json_body,
    parse_retry_after,
    read_base_url,
    split_by,
    whole,
)
from newsletter.sanitize import ascii_digits

__all__ = ["SendGridProvider", "substitution_tag"]

BASE_URLS = {"global": "https://api.sendgrid.com", "eu": "https://api.eu.sendgrid.com"}
MAX_PERSONALIZATIONS = 1000
# SendGrid refuses mail over 30 MB; leave room for the JSON around the parts.
MAX_REQUEST_BYTES = 20_000_000
_PERSONALIZATION = re.compile(r"^personalizations\.(\d+)\b")


def substitution_tag(key: str) -> str:
    """The tag SendGrid replaces for a :func:`links.server_key` name."""
    return f"%%{key}%%"


class SendGridProvider(HTTPProvider):
    """SendGrid v3; see the module docstring."""

    name = "sendgrid"
    service = "SendGrid"
    max_batch = MAX_PERSONALIZATIONS

    def __init__(self, api_key: str, base_url: str = BASE_URLS["global"], *, timeout: float = 30.0,
                 connect_timeout: float = 10.0, max_batch: int = MAX_PERSONALIZATIONS, **kwargs: Any):
        super().__init__(base_url, timeout=timeout, connect_timeout=connect_timeout, max_batch=max_batch,
                         **kwargs)
        self._api_key = api_key

    @classmethod
    def from_config(cls, options: Mapping[str, object], base_dir: Path) -> SendGridProvider:
        r = OptionReader(options, cls.name)
        r.forbid("api_key", "API keys never go in config.toml; put it in an environment variable "
                            "and name that variable in provider.api_key_env")
        api_key = env_secret(r, "api_key_env", "SENDGRID_API_KEY", what="SendGrid API key")
        region = r.text("region", "global", choices=tuple(BASE_URLS))
        base_url = read_base_url(r, BASE_URLS[region or "global"])
        timeout = r.number("timeout", 30.0, minimum=0.001)
        connect_timeout = r.number("connect_timeout", 10.0, minimum=0.001)
        max_batch = r.integer("max_batch", MAX_PERSONALIZATIONS, minimum=1, maximum=MAX_PERSONALIZATIONS)
        r.finish()
        assert api_key is not None
        return cls(api_key, base_url, timeout=timeout, connect_timeout=connect_timeout, max_batch=max_batch)

    # -- plan / build (pure) ----------------------------------------------------------

    def precheck(self, message: OutgoingMessage) -> str | None:
        if message.content is None:
            return "local: the sendgrid provider needs structured content (OutgoingMessage.content)"
        return None

    def plan(self, batch: Sequence[OutgoingMessage]) -> list[list[OutgoingMessage]]:
        return split_by(batch, limit=self.max_batch, size=lambda m: len(json_body(_personalization(m))),
                        budget=MAX_REQUEST_BYTES - _content_size(batch),
                        distinct=lambda m: m.recipient.lower())

    def build_payload(self, group: Sequence[OutgoingMessage]) -> HTTPRequest:
        first = group[0]
        content = first.content
        assert content is not None  # precheck
        body: dict[str, Any] = {
            "personalizations": [_personalization(m) for m in group],
            "from": _address(content.from_address, content.from_name),
            "subject": content.subject,
            "content": _parts(content, list(first.personal)),
            "headers": dict(content.headers),
            # Our own unsubscribe link and List-Unsubscribe are in every message;
            # SendGrid's footer would be a second, different one.
            "tracking_settings": {"subscription_tracking": {"enable": False}},
        }
        if content.reply_to:
            body["reply_to"] = {"email": content.reply_to}
        return HTTPRequest(
            "POST", f"{self.base_url}/v3/mail/send",
            {"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json",
             "Accept": "application/json"},
            json_body(body), tuple(group), "mail.send",
        )

    # -- parse (pure) -----------------------------------------------------------------

    def parse_results(self, request: HTTPRequest, response: HTTPResponse) -> Outcome:
        messages = request.messages
        status = response.status
        if 200 <= status < 300:
            pid = response.header("X-Message-Id")
            return Outcome(whole(messages, "accepted", response.describe(), provider_id=pid))
        errors = _errors(response)
        detail = "; ".join(_error_text(e) for e in errors) if errors else None
        if status in (401, 403):
            return Outcome(config_problem=(
                "api_key_env", f"SendGrid refused the request: {response.describe(detail)}"))
        if status == 413 and len(messages) > 1:
            return Outcome(resend=self.halves(request))
        if status == 429:
            wait = self.retry_after(response)
            if wait is None:
                reset = response.header("X-RateLimit-Reset")
                if reset and ascii_digits(reset.strip()):
                    wait = parse_retry_after(str(max(0, int(reset) - int(self.clock()))), self.clock())
            return Outcome(whole(messages, "transient", response.describe(detail), retry_after=wait,
                                 throttled=True), stop=True, retry_after=wait)
        if status >= 500 or status == 408:
            return self.trouble(request, response, detail)
        if 400 <= status < 500:
            blamed: dict[int, list[str]] = {}
            for error in errors:
                m = _PERSONALIZATION.match(str(error.get("field") or ""))
                if m and int(m.group(1)) < len(messages):
                    blamed.setdefault(int(m.group(1)), []).append(_error_text(error))
            if not blamed:
                return Outcome(whole(messages, "permanent", response.describe(detail)))
            outcome = Outcome()
            for index, texts in blamed.items():
                message = messages[index]
                outcome.results.append(_permanent(message, f"{status}: {'; '.join(texts)}",
                                                  bad_address=any("address" in t.lower() for t in texts)))
            rest = [m for i, m in enumerate(messages) if i not in blamed]
            if rest:
                outcome.resend.append(rest)
            return outcome
        return self.trouble(request, response, detail)


def _permanent(message: OutgoingMessage, reply: str, *, bad_address: bool = False) -> SendResult:
    return SendResult(message.delivery_id, "permanent", reply=" ".join(reply.split())[:500], bad_address=bad_address)


def _address(email: str, name: str = "") -> dict[str, str]:
    return {"email": email, "name": name} if name else {"email": email}


def _parts(content: MessageContent, placeholders: Sequence[str]) -> list[dict[str, str]]:
    # SendGrid wants text/plain first, then text/html.
    parts = [{"type": "text/plain",
              "value": links.server_template(content.text, placeholders, substitution_tag, escaped=False)}]
    if content.html is not None:
        parts.append({"type": "text/html",
                      "value": links.server_template(content.html, placeholders, substitution_tag, escaped=True)})
    return parts


def _personalization(message: OutgoingMessage) -> dict[str, Any]:
    substitutions = {substitution_tag(k): v for k, v in links.server_values(message.personal).items()}
    headers = {}
    if "List-Unsubscribe" in message.headers:
        headers["List-Unsubscribe"] = message.headers["List-Unsubscribe"]
    p: dict[str, Any] = {
        "to": [_address(message.recipient, message.to_name)],
        "custom_args": {"nl_delivery_id": str(message.delivery_id)},
    }
    if substitutions:
        p["substitutions"] = substitutions
    if headers:
        p["headers"] = headers
    return p


def _content_size(batch: Sequence[OutgoingMessage]) -> int:
    """The largest variant's shared part, so the personalizations' budget leaves room for it."""
    biggest = 0
    seen: set[str] = set()
    for m in batch:
        if m.content is None or m.variant in seen:
            continue
        seen.add(m.variant)
        c = m.content
        biggest = max(biggest, len((c.subject + c.text + (c.html or "")).encode("utf-8")) + 2048)
    return biggest


def _errors(response: HTTPResponse) -> list[dict[str, Any]]:
    data = response.json()
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        return [e for e in data["errors"] if isinstance(e, dict)]
    return []


def _error_text(error: Mapping[str, Any]) -> str:
    field_name = error.get("field")
    message = str(error.get("message") or "").strip()
    return f"{field_name}: {message}" if field_name else message
