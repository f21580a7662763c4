"""The ``postmark`` provider: Postmark's ``POST /email/batch``.

Up to **500 messages** per request (and 50 MB, Postmark's limits), each a complete
message of its own: the personal text and HTML are filled in here
(``OutgoingMessage.personal_text``/``personal_html``), so there is nothing to
substitute server-side and nothing to escape twice.  Every message carries our
Message-ID (a retry keeps it), its List-Unsubscribe and the variant's List-Id,
List-Unsubscribe-Post, Auto-Submitted and Precedence headers, ``Metadata``
``nl_delivery_id`` (handed back in webhooks) and the ``MessageStream``:
``broadcast`` by default, since Postmark keeps newsletters apart from
transactional mail.

The batch endpoint answers 200 with one result per message, in order, so a
partly refused batch says exactly which messages went: ``ErrorCode`` 0 is
accepted; 406 (inactive recipient: it hard-bounced or complained before) and
300 (invalid request, e.g. a bad address) are permanent, 406 with
``bad_address`` set so the engine counts it as a hard bounce; account-level codes (100
maintenance, 405 out of credits, 412 account pending, 413 account may not send,
429 rate limit) are transient.  401 is a bad server token (ErrorCode 10); 422
refuses the whole batch; 429 and 5xx are transient.  Postmark builds the MIME
itself, in UTF-8.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from newsletter.interfaces import OutgoingMessage, SendResult
from newsletter.providers import OptionReader
from newsletter.providers.http import (
    HTTPProvider,
    HTTPRequest,
    HTTPResponse,
    Outcome,
    display_address,
    env_secret,
    json_body,
    json_filled,
    read_base_url,
    split_by,
    whole,
)

__all__ = ["PostmarkProvider", "message_bytes", "message_json"]

BASE_URL = "https://api.postmarkapp.com"
MAX_MESSAGES = 500
MAX_REQUEST_BYTES = 45_000_000  # Postmark: 50 MB per batch
MAX_MESSAGE_BYTES = 10_000_000  # Postmark: 10 MB per message
TRANSIENT_CODES = {100, 405, 412, 413, 429}
HARD_BOUNCE_CODES = {406}


class PostmarkProvider(HTTPProvider):
    """Postmark; see the module docstring."""

    name = "postmark"
    service = "Postmark"
    max_batch = MAX_MESSAGES

    def __init__(self, server_token: str, base_url: str = BASE_URL, *, message_stream: str = "broadcast",
                 timeout: float = 30.0, connect_timeout: float = 10.0, max_batch: int = MAX_MESSAGES,
                 **kwargs: Any):
        super().__init__(base_url, timeout=timeout, connect_timeout=connect_timeout, max_batch=max_batch,
                         **kwargs)
        self._token = server_token
        self.message_stream = message_stream
        # Each message's JSON, built once for plan (its size) and build_payload (the body).
        self._json: dict[int, tuple[OutgoingMessage, bytes]] = {}

    @classmethod
    def from_config(cls, options: Mapping[str, object], base_dir: Path) -> PostmarkProvider:
        r = OptionReader(options, cls.name)
        r.forbid("api_key", "server tokens never go in config.toml; put it in an environment variable "
                            "and name that variable in provider.api_key_env")
        token = env_secret(r, "api_key_env", "POSTMARK_SERVER_TOKEN", what="Postmark server token")
        base_url = read_base_url(r, BASE_URL)
        stream = r.text("message_stream", "broadcast")
        timeout = r.number("timeout", 30.0, minimum=0.001)
        connect_timeout = r.number("connect_timeout", 10.0, minimum=0.001)
        max_batch = r.integer("max_batch", MAX_MESSAGES, minimum=1, maximum=MAX_MESSAGES)
        r.finish()
        assert token is not None and stream is not None
        return cls(token, base_url, message_stream=stream, timeout=timeout, connect_timeout=connect_timeout,
                   max_batch=max_batch)

    # -- plan / build (pure) ----------------------------------------------------------

    def precheck(self, message: OutgoingMessage) -> str | None:
        if message.content is None:
            return "local: the postmark provider needs structured content"
        # What Postmark receives is the message's JSON, not our MIME (never built for Postmark).
        size = len(self.encoded(message))
        if size > MAX_MESSAGE_BYTES:
            return f"local: the message is {size} bytes; Postmark takes at most {MAX_MESSAGE_BYTES}"
        return None

    def encoded(self, message: OutgoingMessage) -> bytes:
        """The message's JSON (memoised for the current send: keyed by identity and
        holding the message, so an id cannot be reused while it is cached)."""
        cached = self._json.get(id(message))
        if cached is None:
            cached = self._json[id(message)] = (message, message_bytes(message, self.message_stream))
        return cached[1]

    def plan(self, batch: Sequence[OutgoingMessage]) -> list[list[OutgoingMessage]]:
        # Each message is complete in itself: variants may share a request.
        return split_by(batch, limit=self.max_batch, budget=MAX_REQUEST_BYTES, key=lambda m: None,
                        size=lambda m: len(self.encoded(m)))

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        try:
            return super().send(batch)
        finally:
            self._json.clear()

    def build_payload(self, group: Sequence[OutgoingMessage]) -> HTTPRequest:
        parts = [b"["]
        for m in group:  # one copy of the (megabytes of) messages, not two
            parts += (self.encoded(m), b",")
        parts[-1:] = [b"]"] if len(parts) > 1 else [b"[", b"]"]
        body = b"".join(parts)
        headers = {"X-Postmark-Server-Token": self._token, "Content-Type": "application/json",
                   "Accept": "application/json"}
        return HTTPRequest("POST", f"{self.base_url}/email/batch", headers, body, tuple(group), "email.batch")

    # -- parse (pure) -----------------------------------------------------------------

    def parse_results(self, request: HTTPRequest, response: HTTPResponse) -> Outcome:
        messages = request.messages
        status = response.status
        data = response.json()
        if status == 200 and isinstance(data, list):
            results = []
            for i, message in enumerate(messages):
                item = data[i] if i < len(data) and isinstance(data[i], dict) else None
                results.append(_result(message, item))
            return Outcome(results)
        said = f"ErrorCode {data.get('ErrorCode')}: {data.get('Message', '')}" if isinstance(data, dict) else None
        if status == 401 or (isinstance(data, dict) and data.get("ErrorCode") == 10):
            return Outcome(config_problem=("api_key_env", f"Postmark refused the server token: "
                                                          f"{response.describe(said)}"))
        if status == 413 and len(messages) > 1:
            return Outcome(resend=self.halves(request))
        if status in (408, 429) or status >= 500 or not 200 <= status < 500:
            return self.trouble(request, response, said)
        code = data.get("ErrorCode") if isinstance(data, dict) else None
        if code in TRANSIENT_CODES:
            return self.trouble(request, response, said, throttled=code == 429)
        if code == 410 and len(messages) > 1:  # "too many batch messages"
            return Outcome(resend=self.halves(request))
        # 200 with something that is not a list of results: we cannot tell what went.
        kind = "unknown" if 200 <= status < 300 else "permanent"
        return Outcome(whole(messages, kind, response.describe(said)))


def message_json(message: OutgoingMessage, stream: str, *, bodies: bool = True) -> dict[str, Any]:
    """One message of the batch (``bodies=False``: without TextBody and HtmlBody)."""
    content = message.content
    assert content is not None
    headers = [{"Name": "Message-ID", "Value": message.message_id}]
    if "List-Unsubscribe" in message.headers:
        headers.append({"Name": "List-Unsubscribe", "Value": message.headers["List-Unsubscribe"]})
    headers += [{"Name": k, "Value": v} for k, v in content.headers.items()]
    item: dict[str, Any] = {
        "From": display_address(content.from_name, content.from_address),
        "To": display_address(message.to_name, message.recipient),
        "Subject": content.subject,
        "Headers": headers,
        "Metadata": {"nl_delivery_id": str(message.delivery_id)},
        "MessageStream": stream,
    }
    if content.reply_to:
        item["ReplyTo"] = content.reply_to
    if bodies:
        item["TextBody"] = message.personal_text()
        markup = message.personal_html()
        if markup is not None:
            item["HtmlBody"] = markup
    return item


def message_bytes(message: OutgoingMessage, stream: str) -> bytes:
    """The JSON of :func:`message_json`, encoded: the small fields by ``json_body``,
    the two bodies spliced in by ``json_filled`` (the variant's text escaped once,
    not once a message)."""
    content = message.content
    assert content is not None
    item = message_json(message, stream, bodies=False)
    parts = [json_body(item)[:-1], b',"TextBody":"', json_filled(content.text, message.personal), b'"']
    if content.html is not None:
        parts += [b',"HtmlBody":"', json_filled(content.html, message.personal, escape=True), b'"']
    parts.append(b"}")
    return b"".join(parts)


def _result(message: OutgoingMessage, item: Mapping[str, Any] | None) -> SendResult:
    if item is None:
        return SendResult(message.delivery_id, "unknown", reply="Postmark's answer had no result for this message")
    code = item.get("ErrorCode")
    words = " ".join(str(item.get("Message", "")).split())[:400]
    if code == 0:
        return SendResult(message.delivery_id, "accepted", provider_id=item.get("MessageID"),
                          reply=f"Postmark: {words}")
    if code in TRANSIENT_CODES:
        return SendResult(message.delivery_id, "transient", reply=f"Postmark ErrorCode {code}: {words}",
                          throttled=code == 429)
    return SendResult(message.delivery_id, "permanent", reply=f"Postmark ErrorCode {code}: {words}",
                      bad_address=code in HARD_BOUNCE_CODES)
