"""The seams between the pipeline and the outside world.

A *provider* is the one place that talks to a mail service (a folder of .eml files,
an SMTP server, an HTTP API).  The delivery engine hands it batches of fully
composed messages and gets back exactly one :class:`SendResult` per message, in
any order, so that a half-accepted batch says precisely which half went out.

Providers are found through the entry-point group ``newsletter.providers``
(ours are registered the same way in ``pyproject.toml``).  The entry point names
a class; :func:`newsletter.providers.load_provider` checks that it satisfies
:class:`Provider` and builds it with :meth:`Provider.from_config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from .links import fill

Status = Literal["accepted", "transient", "permanent", "unknown"]


@dataclass(frozen=True)
class MessageContent:
    """The readable parts of one variant, shared by every message of that variant.

    ``text`` and ``html`` hold the variant's placeholders
    (:class:`newsletter.links.Placeholders`: random per render, so nothing but
    the template's own places can match one); each message's ``personal``
    mapping gives its values, filled with :func:`newsletter.links.fill` only.
    The subject holds none.  ``headers`` are the headers
    every message of the variant carries (List-Id, List-Unsubscribe-Post,
    Auto-Submitted, ...), as plain (decoded) text.

    HTTP providers that batch (one request, many recipients, per-recipient
    substitutions) group messages by ``OutgoingMessage.variant`` and send this
    once per group; the others use :meth:`OutgoingMessage.personal_text` and
    :meth:`OutgoingMessage.personal_html`, or the raw MIME ``data``.
    """

    subject: str
    text: str
    html: str | None
    from_name: str
    from_address: str
    reply_to: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutgoingMessage:
    """One personal message, ready to hand over.

    ``data`` is the complete RFC 5322 message as bytes with CRLF line endings
    (not dot-stuffed: SMTP providers do that).  ``sender`` and ``recipient``
    are the SMTP envelope (``sender`` is the bounce address, which may differ
    from the From header).  ``headers`` are this message's own headers as
    plain text (Message-ID, List-Unsubscribe...).  The structured fields
    (``variant``, ``content``, ``to_name``, ``personal``) are for providers
    that build the message themselves from parts.
    """

    delivery_id: int
    sender: str
    recipient: str
    message_id: str
    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    variant: str = ""
    content: MessageContent | None = None
    to_name: str = ""
    personal: Mapping[str, str] = field(default_factory=dict)

    def personal_text(self) -> str:
        assert self.content is not None
        return fill(self.content.text, self.personal, escape=False)

    def personal_html(self) -> str | None:
        assert self.content is not None
        return None if self.content.html is None else fill(self.content.html, self.personal, escape=True)


@dataclass(frozen=True)
class SendResult:
    """What happened to one message.

    ``status``: ``accepted`` (the service took responsibility for it),
    ``transient`` (try again later, maybe after ``retry_after`` seconds) or
    ``permanent`` (do not try again) or ``unknown`` (the whole message was handed
    over but the answer never came: it may have been delivered; the engine retries
    such a message at most once, with the same Message-ID).  ``reply`` is the server's own words, for
    the delivery log; ``provider_id`` the service's message id when it gives one.

    ``bad_address`` (with ``permanent`` only): the service says the address itself
    does not work — an SMTP 5.1.x enhanced code, or the service's own typed field
    (Postmark 406 "inactive recipient", a SendGrid/Mailgun refusal naming the
    address); the rule is :mod:`newsletter.replies`.  The engine counts it towards
    ``hard_bounce_limit`` and never reads ``reply`` to decide anything, so a
    provider sets this field instead of writing codes into its reply.

    Two flags say that a ``transient`` answer is about the service, not about this
    recipient, so the engine does not count it as a delivery attempt:

    ``throttled``
        the service asked us to slow down for everyone (HTTP 429, SMTP 421 "too
        many connections/messages"); ``retry_after`` is the window it named, if any.
        The engine pauses sending for that window and carries on in the same run.
    ``server_error``
        the whole request failed without a word about its recipients (HTTP 5xx, a
        connection refused or reset before any answer).  The engine tries again in
        the same run after a short backoff, a few times, before deferring the rows.

    Messages of a batch that were not tried because of such an answer come back
    with the same flag.
    """

    delivery_id: int
    status: Status
    provider_id: str | None = None
    reply: str = ""
    retry_after: float | None = None
    bad_address: bool = False
    throttled: bool = False
    server_error: bool = False


@runtime_checkable
class Provider(Protocol):
    """A mail service.

    ``max_batch`` is how many messages one :meth:`send` call may carry.  ``send``
    must never raise for a per-message problem: it returns a result for every
    message it was given.  An optional ``accepts_8bit`` attribute (default False)
    tells the engine it may compose 8-bit bodies instead of base64.  It may raise
    :class:`~newsletter.errors.ConfigError`
    when the configuration itself is unusable (a missing password variable...).
    """

    name: str
    max_batch: int

    @classmethod
    def from_config(cls, options: Mapping[str, object], base_dir: Path) -> Provider:
        """Build from the ``[provider]`` table (minus ``kind``); relative paths resolve
        against ``base_dir``.  Raise ConfigError naming ``provider.<key>`` on bad input."""
        ...

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]: ...

    def close(self) -> None: ...
