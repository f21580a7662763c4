"""What the HTTP mail providers (SendGrid, Mailgun, Postmark, Amazon SES) share.

Each of them is four small steps around one network call::

    plan(batch)                  pure  which messages travel together: one request per group
    build_payload(group)         pure  the HTTPRequest for a group (method, URL, headers, body bytes)
    transmit(request)            I/O   one request on a keep-alive requests.Session; nothing else
    parse_results(request, resp) pure  the service's answer -> one SendResult per message

:meth:`HTTPProvider.send` strings them together.  The pure steps are tested without
a network; ``transmit`` is tested against the local contract servers in
``tests/http_servers.py``.

What an answer means (:func:`classify_status`)
    2xx accepted; 429, 408 and 5xx transient (429 with ``retry_after`` taken from
    ``Retry-After``, in seconds or as an HTTP-date); any other 4xx permanent.
    A 429 (or what a service documents as its rate limit) is flagged
    ``SendResult.throttled``; a 5xx or 408, and no answer at all before the request
    was read (refused, reset), ``SendResult.server_error``: neither is about the
    recipients, and the engine pauses or retries instead of counting an attempt.  A
    401 (and what each service documents as "your credentials are wrong") is not
    about the message at all: when nothing of the batch was accepted yet it raises
    :class:`~newsletter.errors.ConfigError`, which stops the run with every
    message still pending instead of failing a whole list for a bad API key.

What no answer means
    Connection refused, DNS failure, connect timeout, connection reset: transient,
    the service never saw the request.  A *read* timeout is ``unknown``: the request
    went out whole and the service may have queued it; the engine retries such a
    message once (``interfaces.SendResult``).

Retries are not done here: the engine owns them (rows with ``next_attempt_at``).
After the first sign of trouble (a transient answer or no answer) the rest of the
batch is not tried in this call; those messages come back ``transient`` with the
same ``retry_after``, so a rate limit is not hammered.  The only second requests
``send`` makes are *corrective*: when a service refuses a whole request because
of some of its recipients (SendGrid names them in a 400, Mailgun does not), the
others go again at once without them, or the group is split in halves (a 413, or
a refusal that names nobody) until the culprits stand alone.  Every corrective
request carries fewer messages than the one before, so this ends.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from newsletter import links
from newsletter.errors import ConfigError, TransportError
from newsletter.interfaces import OutgoingMessage, SendResult, Status
from newsletter.providers import OptionReader
from newsletter.sanitize import ascii_digits

__all__ = [
    "HTTPProvider", "HTTPRequest", "HTTPResponse", "Outcome", "TransportError",
    "classify_status", "display_address", "env_secret", "json_body", "json_filled", "parse_retry_after",
    "read_base_url", "split_by", "whole",
]

# A bogus Retry-After ("come back next year") must not park a delivery forever.
MAX_RETRY_AFTER = 24 * 3600.0
# Corrective requests per batch: halving 1,000 recipients reaches single ones in 10.
MAX_GENERATIONS = 12
_SNIPPET = 300


@dataclass(frozen=True)
class HTTPRequest:
    """One request, fully built: what goes on the wire and which messages it carries
    (in the order the service will answer for them)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    messages: tuple[OutgoingMessage, ...]
    operation: str = ""  # which API operation (for providers with more than one)


@dataclass(frozen=True)
class HTTPResponse:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    reason: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def describe(self, detail: str | None = None) -> str:
        """``"429 Too Many Requests: <the server's words>"`` on one line, for the log."""
        words = detail if detail is not None else self.text()
        words = " ".join(words.split())[:_SNIPPET]
        head = f"{self.status} {self.reason}".strip()
        return f"{head}: {words}" if words else head


@dataclass
class Outcome:
    """What one answer means: results for some messages, groups to send again at once
    (corrective requests), and whether to stop trying the rest of the batch now.

    ``config_problem`` is ``(option, message)`` when the answer says the configuration
    is wrong (bad key, unknown domain): raised as ConfigError while nothing was accepted.
    """

    results: list[SendResult] = field(default_factory=list)
    resend: list[list[OutgoingMessage]] = field(default_factory=list)
    stop: bool = False
    retry_after: float | None = None
    config_problem: tuple[str, str] | None = None


def classify_status(code: int) -> Status:
    """The default meaning of an HTTP status for the messages of the request."""
    if 200 <= code < 300:
        return "accepted"
    if code in (408, 425, 429) or 500 <= code < 600:
        return "transient"
    if 400 <= code < 500:
        return "permanent"
    # 1xx/3xx as a final answer: redirects are not followed (a POST must not be
    # replayed somewhere else), so something between us and the service is wrong.
    return "transient"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value (RFC 9110 §10.2.3: delay-seconds or
    an HTTP-date), capped at a day; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if ascii_digits(value):
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def whole(messages: Iterable[OutgoingMessage], status: Status, reply: str, *,
          provider_id: str | None = None, retry_after: float | None = None, throttled: bool = False,
          server_error: bool = False) -> list[SendResult]:
    """The same result for every message of a request."""
    return [SendResult(m.delivery_id, status, provider_id=provider_id, reply=reply, retry_after=retry_after,
                       throttled=throttled, server_error=server_error)
            for m in messages]


def split_by(messages: Sequence[OutgoingMessage], *, limit: int, size: Callable[[OutgoingMessage], int],
             budget: int, distinct: Callable[[OutgoingMessage], str] | None = None,
             key: Callable[[OutgoingMessage], object] = lambda m: m.variant) -> list[list[OutgoingMessage]]:
    """Groups of messages sharing ``key`` (order kept within a group), each at most
    ``limit`` long, at most ``budget`` bytes by ``size``, and, with ``distinct``,
    never holding the same recipient twice (services refuse that in one request).
    A single message bigger than the budget still gets a group of its own: the
    service's answer for it is the right result."""
    by_key: dict[object, list[list[OutgoingMessage]]] = {}
    state: dict[object, tuple[int, set[str]]] = {}
    for message in messages:
        k = key(message)
        groups = by_key.setdefault(k, [[]])
        used, seen = state.get(k, (0, set()))
        n = size(message)
        who = distinct(message) if distinct else None
        current = groups[-1]
        if current and (len(current) >= limit or used + n > budget or (who is not None and who in seen)):
            current = []
            groups.append(current)
            used, seen = 0, set()
        current.append(message)
        used += n
        if who is not None:
            seen.add(who)
        state[k] = (used, seen)
    return [g for groups in by_key.values() for g in groups if g]


def json_body(value: Any) -> bytes:
    """Compact UTF-8 JSON (Japanese text stays 3 bytes a character instead of 6)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_chars(text: str) -> bytes:
    """``text`` as the inside of a JSON string, UTF-8 (what :func:`json_body` writes for it)."""
    return json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8")


@lru_cache(maxsize=64)
def _json_template(template: str, placeholders: tuple[str, ...]) -> tuple[bytes | str, ...]:
    return tuple(piece if i % 2 else _json_chars(piece)
                 for i, piece in enumerate(links.split_once(template, placeholders)))


def json_filled(template: str, values: Mapping[str, str], *, escape: bool = False) -> bytes:
    """``links.fill(template, values, escape=escape)`` as the inside of a JSON string
    (UTF-8 bytes, no quotes), for a provider that puts each message's whole body in
    its JSON (Postmark).  The template's text is escaped for JSON once per variant
    and each message only joins it with its own values: JSON-escaping commutes
    with joining, and the body was most of the JSON a worker encoded for every
    message (bench/scale.py)."""
    pieces = _json_template(template, tuple(values))
    out = list(pieces)
    for i in range(1, len(out), 2):
        value = values[pieces[i]]  # type: ignore[index]
        out[i] = _json_chars(html.escape(value) if escape else value)
    return b"".join(out)  # type: ignore[arg-type]


def display_address(name: str, address: str) -> str:
    """``"Name" <address>`` with the name as an RFC 5322 quoted-string (any punctuation
    is then safe), or the bare address.  Unicode stays as it is: JSON APIs encode it."""
    if not name:
        return address
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>'


def env_secret(r: OptionReader, key: str, default: str | None, *, what: str,
               required: bool = True) -> str | None:
    """The secret held by the environment variable that option ``key`` names."""
    name = r.text(key, default)
    if name is None:
        if required:
            raise r.fail(key, f"required: the name of the environment variable that holds the {what}")
        return None
    value = os.environ.get(name, "").strip()
    if not value:
        raise r.fail(key, f"environment variable {name} is not set (it should hold the {what})")
    if not value.isascii() or any(c in value for c in "\r\n"):
        raise r.fail(key, f"the value of {name} is not a plausible {what} (not ASCII, or several lines)")
    return value


def read_base_url(r: OptionReader, default: str) -> str:
    url = r.text("base_url", default)
    assert url is not None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise r.fail("base_url", f"must be an http:// or https:// URL without query, not {url!r}")
    return url.rstrip("/")


class HTTPProvider:
    """Base class: subclasses implement :meth:`plan`, :meth:`build_payload` and
    :meth:`parse_results`, and may override :meth:`precheck` and :meth:`finalize`.

    Not thread-safe (one provider instance per sending thread, as the engine does).
    """

    name = "http"
    max_batch = 100
    service = "the service"  # its name in replies

    def __init__(self, base_url: str, *, timeout: float = 30.0, connect_timeout: float = 10.0,
                 max_batch: int | None = None, clock: Callable[[], float] = time.time,
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        if max_batch is not None:
            self.max_batch = max_batch
        self.clock = clock
        self.session = session or _session(self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"

    # -- the steps subclasses provide ----------------------------------------------

    def plan(self, batch: Sequence[OutgoingMessage]) -> list[list[OutgoingMessage]]:
        """Groups of messages, one request each (pure)."""
        return [[m] for m in batch]

    def build_payload(self, group: Sequence[OutgoingMessage]) -> HTTPRequest:  # pragma: no cover - abstract
        raise NotImplementedError

    def parse_results(self, request: HTTPRequest, response: HTTPResponse) -> Outcome:  # pragma: no cover
        raise NotImplementedError

    def precheck(self, message: OutgoingMessage) -> str | None:
        """Why the service would certainly refuse this message (sent nowhere), or None."""
        return None

    def finalize(self, request: HTTPRequest) -> HTTPRequest:
        """Last touches that depend on the time of sending (signatures); default none."""
        return request

    # -- shared answers ---------------------------------------------------------------

    def retry_after(self, response: HTTPResponse) -> float | None:
        return parse_retry_after(response.header("Retry-After"), self.clock())

    def trouble(self, request: HTTPRequest, response: HTTPResponse, detail: str | None = None, *,
                throttled: bool | None = None) -> Outcome:
        """A whole-request transient answer (429, 5xx): stop this batch for now.  A 429
        (or ``throttled``) is a throttle; otherwise a 5xx or 408 is a server error."""
        wait = self.retry_after(response)
        if throttled is None:
            throttled = response.status == 429
        server_error = not throttled and (response.status >= 500 or response.status == 408)
        return Outcome(whole(request.messages, "transient", response.describe(detail), retry_after=wait,
                             throttled=throttled, server_error=server_error),
                       stop=True, retry_after=wait)

    def halves(self, request: HTTPRequest) -> list[list[OutgoingMessage]]:
        middle = (len(request.messages) + 1) // 2
        return [list(request.messages[:middle]), list(request.messages[middle:])]

    # -- the one I/O step -------------------------------------------------------------

    def transmit(self, request: HTTPRequest) -> HTTPResponse:
        """Send one request; raise TransportError when no HTTP answer came back."""
        request = self.finalize(request)
        host = urlsplit(request.url).netloc
        try:
            r = self.session.request(request.method, request.url, headers=dict(request.headers),
                                     data=request.body, timeout=(self.connect_timeout, self.timeout),
                                     allow_redirects=False)
        except requests.exceptions.ConnectTimeout as exc:
            raise TransportError("transient", f"no connection to {host} within {self.connect_timeout:g} s") from exc
        except requests.exceptions.ReadTimeout as exc:
            raise TransportError("unknown", f"no answer from {host} within {self.timeout:g} s after the "
                                            f"request was sent; it may have been accepted") from exc
        except requests.exceptions.RequestException as exc:
            raise TransportError("transient", f"cannot reach {host}: {_describe(exc)}") from exc
        return HTTPResponse(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content,
                            r.reason or "")

    # -- the template -----------------------------------------------------------------

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """One result per message, in the batch's order (see the module docstring):
        precheck, plan, then build/transmit/parse each group; corrective groups go
        first; after trouble the untried groups come back transient."""
        results: dict[int, SendResult] = {}
        sendable = []
        for message in batch:
            problem = self.precheck(message)
            if problem is None:
                sendable.append(message)
            else:
                results[message.delivery_id] = SendResult(message.delivery_id, "permanent", reply=problem)

        pending: deque[tuple[list[OutgoingMessage], int]] = deque((g, 0) for g in self.plan(sendable) if g)
        accepted = False
        while pending:
            group, generation = pending.popleft()
            request = self.build_payload(group)
            try:
                response = self.transmit(request)
            except TransportError as exc:
                # No answer and nothing read ("transient"): the service never saw the request.
                outcome = Outcome(whole(request.messages, exc.status, exc.reply,
                                        server_error=exc.status == "transient"), stop=True)
            else:
                outcome = self.parse_results(request, response)
            if outcome.config_problem is not None:
                option, problem = outcome.config_problem
                if not accepted:
                    # Nothing was sent yet: stop the run rather than fail every message.
                    raise ConfigError(f"provider.{option}: {problem}")
                outcome = Outcome(whole(request.messages, "transient", problem), stop=True)
            for result in outcome.results:
                results[result.delivery_id] = result
                accepted = accepted or result.status == "accepted"
            for again in outcome.resend:
                if generation + 1 > MAX_GENERATIONS:
                    for m in again:
                        results[m.delivery_id] = SendResult(
                            m.delivery_id, "transient", reply=f"refused by {self.service} in every group tried")
                else:
                    pending.appendleft((again, generation + 1))
            if outcome.stop and pending:
                first = next((r for r in outcome.results if r.status != "accepted"), None)
                reason = first.reply if first else "an earlier request failed"
                for rest, _ in pending:
                    for m in rest:
                        results[m.delivery_id] = SendResult(
                            m.delivery_id, "transient", reply=f"not sent: earlier in this batch: {reason}",
                            retry_after=outcome.retry_after, throttled=bool(first and first.throttled),
                            server_error=bool(first and first.server_error))
                pending.clear()
        return [results.get(m.delivery_id) or SendResult(m.delivery_id, "transient", reply="no result")
                for m in batch]

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _session(name: str) -> requests.Session:
    session = requests.Session()
    # One pooled keep-alive connection; max_retries=0: urllib3 must not replay a POST.
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = f"newsletter-{name}/0.1 (+python-requests)"
    return session


def _describe(exc: BaseException) -> str:
    """requests wraps urllib3 wraps OSError; the innermost words are the useful ones
    ("[Errno 111] Connection refused", "Remote end closed connection without response")."""
    inner: BaseException = exc
    for _ in range(6):
        reason = getattr(inner, "reason", None)
        nested = inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) else None
        nxt = reason if isinstance(reason, BaseException) else nested or inner.__cause__ or inner.__context__
        if nxt is None or nxt is inner:
            break
        inner = nxt
    text = str(inner) or type(inner).__name__
    return " ".join(text.split())[:_SNIPPET]
