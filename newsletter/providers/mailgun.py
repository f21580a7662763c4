"""The ``mailgun`` provider: Mailgun's ``POST /v3/{domain}/messages`` (and ``messages.mime``).

Why batch sending and not one ``messages.mime`` request per message: a weekly
edition is a few variants times thousands of readers, and batch sending makes
that a few requests of up to **1,000 recipients** each (Mailgun's limit) instead
of thousands, which is what Mailgun's own rate limits and queueing are built
for.  Each recipient still gets a message of their own, because the request
carries ``recipient-variables`` (without them every recipient would see every
address in To).  The personal parts become ``%recipient.<key>%`` references:
a plain key for the text and an ``_html`` key holding the escaped value for the
HTML, named by :func:`newsletter.links.server_key` (they keep the placeholder's
random nonce), plus a delivery id and the List-Unsubscribe value for
``v:nl-delivery-id`` (handed back in every webhook) and ``h:List-Unsubscribe``
under names with a random suffix of their own.  Mailgun replaces
``%recipient.<key>%`` anywhere in the text, so a fixed, guessable key would let
an article link such as ``https://evil.example/?u=%recipient.list_unsubscribe%``
carry every reader's own unsubscribe link away.

What batch sending cannot do is keep our exact MIME: Mailgun builds the message,
in UTF-8.  Readers who asked for ISO-2022-JP (old phones) would lose it, so a
message whose ``Charset`` is not UTF-8 goes through ``messages.mime`` with its
bytes as composed, one request each; ``mode = "mime"`` sends everything that way.

A batch request is accepted or refused as a whole, and Mailgun's 400 does not
say which recipient it choked on ("'to' parameter is not a valid address"): such
a group is split in halves and sent again until the culprit stands alone, which
costs about 2·log2(n) extra requests per bad address.  401 (bad key) and 404
(unknown domain) are configuration problems; 429 honours ``Retry-After``.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping, Sequence
from email.utils import formataddr
from pathlib import Path
from typing import Any
from urllib.parse import quote

from newsletter import links
from newsletter.interfaces import OutgoingMessage, SendResult
from newsletter.providers import OptionReader
from newsletter.providers.http import (
    HTTPProvider,
    HTTPRequest,
    HTTPResponse,
    Outcome,
    env_secret,
    read_base_url,
    split_by,
    whole,
)

__all__ = ["MailgunProvider", "multipart", "reference"]

BASE_URLS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
MAX_RECIPIENTS = 1000
# Mailgun's maximum message size is 25 MB; the per-recipient variables count too.
MAX_REQUEST_BYTES = 20_000_000
MODES = ("batch", "mime")


def reference(key: str) -> str:
    """How the message text names a recipient variable."""
    return f"%recipient.{key}%"


class MailgunProvider(HTTPProvider):
    """Mailgun; see the module docstring."""

    name = "mailgun"
    service = "Mailgun"
    max_batch = MAX_RECIPIENTS

    def __init__(self, api_key: str, domain: str, base_url: str = BASE_URLS["us"], *, mode: str = "batch",
                 timeout: float = 30.0, connect_timeout: float = 10.0, max_batch: int = MAX_RECIPIENTS,
                 **kwargs: Any):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        super().__init__(base_url, timeout=timeout, connect_timeout=connect_timeout, max_batch=max_batch,
                         **kwargs)
        self._api_key = api_key
        self.domain = domain
        self.mode = mode
        # Only "mime" mode hands over our bytes (and so a DKIM signature on them) for every message.
        self.sends_raw_mime = mode == "mime"

    @classmethod
    def from_config(cls, options: Mapping[str, object], base_dir: Path) -> MailgunProvider:
        r = OptionReader(options, cls.name)
        r.forbid("api_key", "API keys never go in config.toml; put it in an environment variable "
                            "and name that variable in provider.api_key_env")
        api_key = env_secret(r, "api_key_env", "MAILGUN_API_KEY", what="Mailgun API key")
        domain = r.text("domain")
        if domain is None:
            raise r.fail("domain", "required: the Mailgun sending domain (e.g. \"mg.example.jp\")")
        if "/" in domain or not domain.isascii() or " " in domain:
            raise r.fail("domain", f"not a domain name: {domain!r}")
        region = r.text("region", "us", choices=tuple(BASE_URLS))
        base_url = read_base_url(r, BASE_URLS[region or "us"])
        mode = r.text("mode", "batch", choices=MODES)
        timeout = r.number("timeout", 30.0, minimum=0.001)
        connect_timeout = r.number("connect_timeout", 10.0, minimum=0.001)
        max_batch = r.integer("max_batch", MAX_RECIPIENTS, minimum=1, maximum=MAX_RECIPIENTS)
        r.finish()
        assert api_key is not None and mode is not None
        return cls(api_key, domain, base_url, mode=mode, timeout=timeout, connect_timeout=connect_timeout,
                   max_batch=max_batch)

    # -- plan / build (pure) ----------------------------------------------------------

    def uses_mime(self, message: OutgoingMessage) -> bool:
        return (self.mode == "mime" or message.content is None
                or message.headers.get("Charset", "utf-8").lower() != "utf-8")

    def plan(self, batch: Sequence[OutgoingMessage]) -> list[list[OutgoingMessage]]:
        mime = [[m] for m in batch if self.uses_mime(m)]
        batched = [m for m in batch if not self.uses_mime(m)]
        return split_by(batched, limit=self.max_batch, size=lambda m: len(json.dumps(_variables(m, "0" * 16))) + 200,
                        budget=MAX_REQUEST_BYTES - _content_size(batched),
                        distinct=lambda m: m.recipient.lower()) + mime

    def build_payload(self, group: Sequence[OutgoingMessage]) -> HTTPRequest:
        if len(group) == 1 and self.uses_mime(group[0]):
            return self._mime_request(group[0])
        return self._batch_request(group)

    def _batch_request(self, group: Sequence[OutgoingMessage]) -> HTTPRequest:
        first = group[0]
        content = first.content
        assert content is not None
        suffix = secrets.token_hex(8)
        subject = content.subject
        text = links.server_template(content.text, first.personal, reference, escaped=False)
        markup = None if content.html is None else links.server_template(content.html, first.personal, reference,
                                                                           escaped=True)
        fields: list[tuple[str, str | tuple[str, bytes, str]]] = [
            ("from", formataddr((content.from_name, content.from_address))),
        ]
        fields += [("to", formataddr((m.to_name, m.recipient))) for m in group]
        fields += [("subject", subject), ("text", text)]
        if markup is not None:
            fields.append(("html", markup))
        if content.reply_to:
            fields.append(("h:Reply-To", content.reply_to))
        fields += [(f"h:{name}", value) for name, value in content.headers.items()]
        fields += [
            ("h:List-Unsubscribe", reference(f"list_unsubscribe_{suffix}")),
            ("v:nl-delivery-id", reference(f"delivery_id_{suffix}")),
            ("recipient-variables", json.dumps({m.recipient: _variables(m, suffix) for m in group},
                                               ensure_ascii=False, separators=(",", ":"))),
        ]
        return self._request("messages", fields, group)

    def _mime_request(self, message: OutgoingMessage) -> HTTPRequest:
        fields: list[tuple[str, str | tuple[str, bytes, str]]] = [
            ("to", message.recipient),
            ("v:nl-delivery-id", str(message.delivery_id)),
            ("message", ("message.mime", message.data, "application/octet-stream")),
        ]
        return self._request("messages.mime", fields, [message])

    def _request(self, operation: str, fields, group: Sequence[OutgoingMessage]) -> HTTPRequest:
        body, content_type = multipart(fields)
        url = f"{self.base_url}/v3/{quote(self.domain, safe='.-')}/{operation}"
        headers = {"Authorization": _basic("api", self._api_key), "Content-Type": content_type,
                   "Accept": "application/json"}
        return HTTPRequest("POST", url, headers, body, tuple(group), operation)

    # -- parse (pure) -----------------------------------------------------------------

    def parse_results(self, request: HTTPRequest, response: HTTPResponse) -> Outcome:
        messages = request.messages
        status = response.status
        data = response.json()
        said = str(data.get("message", "")) if isinstance(data, dict) else response.text()
        if 200 <= status < 300:
            pid = data.get("id") if isinstance(data, dict) else None
            return Outcome(whole(messages, "accepted", response.describe(said), provider_id=pid))
        if status == 401:
            return Outcome(config_problem=("api_key_env", f"Mailgun refused the API key: {response.describe()}"))
        if status == 404:
            return Outcome(config_problem=("domain", f"Mailgun does not know the domain {self.domain!r}: "
                                                     f"{response.describe(said)}"))
        if status == 413 and len(messages) > 1:
            return Outcome(resend=self.halves(request))
        if _transient(status):
            return self.trouble(request, response, said)
        if status == 400 and _about_recipients(said):
            if len(messages) > 1:
                return Outcome(resend=self.halves(request))
            return Outcome([SendResult(messages[0].delivery_id, "permanent", reply=response.describe(said),
                                       bad_address=True)])
        return Outcome(whole(messages, "permanent", response.describe(said)))


def _transient(status: int) -> bool:
    return status in (408, 429) or status >= 500 or status < 200 or 300 <= status < 400


def _about_recipients(said: str) -> bool:
    text = said.lower()
    return "'to'" in text or "recipient" in text or "to parameter" in text


def _variables(message: OutgoingMessage, suffix: str) -> dict[str, str]:
    return {f"delivery_id_{suffix}": str(message.delivery_id),
            f"list_unsubscribe_{suffix}": message.headers.get("List-Unsubscribe", ""),
            **links.server_values(message.personal)}


def _content_size(batch: Sequence[OutgoingMessage]) -> int:
    biggest = 0
    for m in batch:
        if m.content is not None:
            c = m.content
            biggest = max(biggest, len((c.subject + c.text + (c.html or "")).encode("utf-8")) + 4096)
    return biggest


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def multipart(fields: Sequence[tuple[str, str | tuple[str, bytes, str]]]) -> tuple[bytes, str]:
    """A multipart/form-data body (RFC 7578) and its Content-Type.  A value is text
    (sent as UTF-8) or ``(filename, bytes, content type)`` for a file part."""
    boundary = f"nl-{secrets.token_hex(16)}"
    out: list[bytes] = []
    for name, value in fields:
        if isinstance(value, tuple):
            filename, data, ctype = value
            head = (f'Content-Disposition: form-data; name="{_quoted(name)}"; filename="{_quoted(filename)}"\r\n'
                    f"Content-Type: {ctype}\r\n")
        else:
            data = value.encode("utf-8")
            head = f'Content-Disposition: form-data; name="{_quoted(name)}"\r\n'
        if boundary.encode() in data:  # pragma: no cover - 128 random bits
            raise ValueError("multipart boundary found in the data")
        out += [b"--", boundary.encode(), b"\r\n", head.encode("utf-8"), b"\r\n", data, b"\r\n"]
    out += [b"--", boundary.encode(), b"--\r\n"]
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def _quoted(value: str) -> str:
    # RFC 7578 §4.2: field names are percent-encoded where they would break the quoting.
    return value.replace("\\", "%5C").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
