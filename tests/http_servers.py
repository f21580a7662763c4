"""Local stand-ins for SendGrid, Mailgun, Postmark and Amazon SES, for tests.

Each is a stdlib ``http.server`` on 127.0.0.1 (a free port) in its own thread,
speaking HTTP/1.1 with keep-alive, that enforces its service's *documented*
contract (method, path, authentication, content type, body schema, size
limits) and answers with the documented success and error bodies.  They are
written from the public API references cited in each class docstring, not from
our client, so a client that builds a wrong request fails here the way it
would fail in production.

Like ``tests/smtp_server.py`` they can be told to misbehave:

- ``fail_next(n, status, retry_after=...)``: answer the next n requests with that
  status and the service's documented error body (401, 429, 500, ...);
- ``reject(address)``: refuse that recipient the way the service does (a 400 naming
  the personalization, a 400 naming nobody, a per-message ErrorCode, a MessageRejected);
- ``stall_next(n, seconds)``: answer late (client read timeouts);
- ``drop_next(n)``: close the connection without answering;

and they record what they accepted, one :class:`Delivered` per recipient, rendered
the way the recipient would see it (substitutions applied), plus every request
(:attr:`ContractServer.received`) and the number of requests.

Handlers run in the server's connection threads while the test reads from its
own, so shared state is guarded by one lock and collections are handed out as copies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = [
    "ContractServer", "Delivered", "MailgunServer", "PostmarkServer", "Received", "Reply", "SESServer",
    "SendGridServer", "free_port",
]

_ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


@dataclass(frozen=True)
class Received:
    """One HTTP request as the server saw it."""

    number: int
    method: str
    path: str
    query: str
    header_items: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.header_items if k.lower() == name.lower()]
        return ",".join(values) if values else None


@dataclass(frozen=True)
class Delivered:
    """One message the service took, as its recipient would see it."""

    recipient: str
    to_name: str
    subject: str
    text: str | None
    html: str | None
    headers: Mapping[str, str]
    tags: Mapping[str, str]    # custom_args / v: variables / Metadata / EmailTags
    service_id: str            # the id the service answered with
    request: int               # the number of the request that carried it
    raw: bytes | None = None   # the MIME as sent, when the client sent MIME


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, value: Any, **headers: str) -> Reply:
        return cls(status, json.dumps(value).encode(), {"Content-Type": "application/json", **headers})

    @classmethod
    def text(cls, status: int, value: str, **headers: str) -> Reply:
        return cls(status, value.encode(), {"Content-Type": "text/plain; charset=utf-8", **headers})


def free_port() -> int:
    """A port nothing listens on (for "connection refused")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_address(text: str) -> bool:
    return bool(_ADDRESS.match(text))


class ContractServer:
    """The HTTP plumbing and the programmable failures; subclasses enforce one API."""

    service = "service"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._received: list[Received] = []
        self._delivered: list[Delivered] = []
        self._failures: list[list[Any]] = []   # [status, times left, retry_after]
        self._stalls: list[list[Any]] = []     # [seconds, times left]
        self._drops = 0
        self._rejected: set[str] = set()
        self._live: set[socket.socket] = set()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.keep_bodies = True  # False: do not keep every request (memory stays flat in big runs)
        self.render = True       # False: do not parse MIME into subject/text/html (speed in big runs)
        self.keep_delivered = True  # False: check each message, keep none (bench/scale.py: 100,000s of mails)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, port: int = 0, *, shared_port: bool = False) -> None:
        """Listen on 127.0.0.1 (``port`` 0: a free one).  ``shared_port``: with
        SO_REUSEPORT, so several processes serve one port and the kernel spreads
        the connections (bench/scale.py: a stand-in that parses on more than one
        core, as a real service does)."""
        server = _Server(("127.0.0.1", port), _Handler, bind_and_activate=False)
        server.reuse_port = shared_port
        try:
            server.server_bind()
            server.server_activate()
        except OSError:
            server.server_close()
            raise
        server.owner = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.service}-contract", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        with self._lock:
            live = list(self._live)
        for conn in live:  # keep-alive connections would otherwise outlive the test
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._server = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what happened -------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """Requests received (answered, failed or dropped) since start() or clear()."""
        with self._lock:
            return self._requests

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def delivered(self) -> list[Delivered]:
        with self._lock:
            return list(self._delivered)

    def recipients(self) -> list[str]:
        return [d.recipient for d in self.delivered]

    # -- programming it ------------------------------------------------------------------

    def fail_next(self, n: int, status: int, *, retry_after: str | int | None = None, after: int = 0) -> None:
        """Answer ``n`` requests with ``status`` and the documented error body: the next
        ones, or those after the next ``after`` (which are handled normally)."""
        with self._lock:
            self._failures.append([status, n, retry_after, after])

    def failures_left(self) -> int:
        """Programmed failures not yet served."""
        with self._lock:
            return sum(rule[1] for rule in self._failures)

    def stall_next(self, n: int, seconds: float) -> None:
        """Wait ``seconds`` before handling each of the next ``n`` requests (then handle them)."""
        with self._lock:
            self._stalls.append([seconds, n])

    def drop_next(self, n: int = 1) -> None:
        """Close the connection of the next ``n`` requests without any answer."""
        with self._lock:
            self._drops += n

    def reject(self, *addresses: str) -> None:
        """Refuse these recipients, the way this service refuses a bad address."""
        with self._lock:
            self._rejected.update(a.lower() for a in addresses)

    def is_rejected(self, address: str) -> bool:
        with self._lock:
            return address.lower() in self._rejected

    def clear(self) -> None:
        """Forget requests, deliveries and every programmed behaviour."""
        with self._lock:
            self._requests = 0
            self._received.clear()
            self._delivered.clear()
            self._failures.clear()
            self._stalls.clear()
            self._drops = 0
            self._rejected.clear()

    # -- for subclasses ------------------------------------------------------------------

    def handle(self, request: Received) -> Reply:  # pragma: no cover - abstract
        raise NotImplementedError

    def failure(self, status: int, retry_after: str | int | None) -> Reply:  # pragma: no cover
        raise NotImplementedError

    def deliver(self, items: Iterable[Delivered]) -> None:
        if not self.keep_delivered:  # still built (and so checked) one by one, then dropped
            for _ in items:
                pass
            return
        with self._lock:
            self._delivered.extend(items)

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    # -- used by the handler (connection threads) ----------------------------------------

    def _dispatch(self, request: Received) -> Reply | None:
        with self._lock:
            self._requests += 1
            number = self._requests
            if self.keep_bodies:
                self._received.append(request)
            drop = self._drops > 0
            if drop:
                self._drops -= 1
            stall = _take(self._stalls)
            failure = None if drop else _take_failure(self._failures)
        if stall:
            time.sleep(stall[0])
        if drop:
            return None
        if failure is not None:
            status, _, retry_after, _ = failure
            return self.failure(status, retry_after)
        return self.handle(_renumber(request, number))

    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._live.add(conn)

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._live.discard(conn)


def _take(rules: list[list[Any]]) -> list[Any] | None:
    for rule in rules:
        if rule[1] > 0:
            rule[1] -= 1
            return rule
    return None


def _take_failure(rules: list[list[Any]]) -> list[Any] | None:
    for rule in rules:
        if rule[1] > 0:
            if rule[3] > 0:  # still letting requests through first
                rule[3] -= 1
                return None
            rule[1] -= 1
            return list(rule)
    return None


def _renumber(request: Received, number: int) -> Received:
    return Received(number, request.method, request.path, request.query, request.header_items, request.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    reuse_port = False
    owner: ContractServer

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up makes the late answer fail: expected here.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services
    server_version = "contract"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body are two writes; without this, Nagle's algorithm holds the
        # second until the client's delayed ACK (40 ms a request on Linux).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = Received(0, self.command, parts.path, parts.query, tuple(self.headers.items()), body)
        reply = self.server.owner._dispatch(request)
        if reply is None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


def _media_type(request: Received) -> str:
    return (request.header("Content-Type") or "").split(";", 1)[0].strip().lower()


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.fromtimestamp(time.time() + seconds_from_now, UTC), usegmt=True)


def _retry_headers(retry_after: str | int | None) -> dict[str, str]:
    return {} if retry_after is None else {"Retry-After": str(retry_after)}


# ======================================================================================
# SendGrid
# ======================================================================================


class SendGridServer(ContractServer):
    """SendGrid v3 Mail Send, ``POST /v3/mail/send``.

    Contract, from:
    - https://www.twilio.com/docs/sendgrid/api-reference/mail-send.md (Bearer API key;
      base URLs api.sendgrid.com / api.eu.sendgrid.com; 202 with an empty body and
      ``X-Message-Id``);
    - https://twilio.com/docs/sendgrid/api-reference/mail-send/errors (every error is a
      400: at most 1,000 personalizations and 1,000 to+cc+bcc per request, at least one
      ``to`` with an ``email``, each address once per request, ``from`` required, a
      subject at the top or in every personalization, content values at least one
      character, text/plain before text/html, ``custom_args`` values strings);
    - https://www.twilio.com/docs/sendgrid/for-developers/sending-email/personalizations and
      https://twilio.com/docs/sendgrid/for-developers/sending-email/substitution-tags
      (per-personalization ``substitutions``, at most 50,000 bytes each; they apply to
      the subject and the content);
    - https://twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/errors
      (``{"errors": [{"field", "message"}]}``; 401, 403, 413, 429, 500);
    - https://twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits
      (429 with X-RateLimit-Limit/-Remaining/-Reset, the reset in epoch seconds).
    The total message may not exceed 30 MB (the Mail Send reference's limits).
    """

    service = "sendgrid"
    MAX_PERSONALIZATIONS = 1000
    MAX_BYTES = 30 * 1024 * 1024
    MAX_SUBSTITUTION_BYTES = 50_000
    RESERVED = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
                "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"}

    def __init__(self, api_key: str = "SG.test-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.rate_limit_reset = 60  # seconds ahead, in the X-RateLimit-Reset of a 429

    @staticmethod
    def errors(status: int, *errors: tuple[str | None, str], **headers: str) -> Reply:
        return Reply.json(status, {"errors": [{"field": f, "message": m, "help": None} for f, m in errors]},
                          **headers)

    def failure(self, status: int, retry_after: str | int | None) -> Reply:
        if status == 401:
            return self.errors(401, (None, "The provided authorization grant is invalid, expired, or revoked"))
        if status == 429:
            reset = (self.rate_limit_reset if isinstance(self.rate_limit_reset, str)  # as written, for tests
                     else str(int(time.time()) + self.rate_limit_reset))
            return self.errors(429, (None, "too many requests"), **{
                "X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset,
                **_retry_headers(retry_after)})
        if status == 413:
            return self.errors(413, (None, "The JSON payload you have included in your request is too large."))
        if status >= 500:
            return self.errors(status, (None, "internal server error"), **_retry_headers(retry_after))
        return self.errors(status, (None, "error"), **_retry_headers(retry_after))

    def handle(self, request: Received) -> Reply:
        if (request.method, request.path) != ("POST", "/v3/mail/send"):
            return self.errors(404, (None, "not found"))
        if request.header("Authorization") != f"Bearer {self.api_key}":
            return self.failure(401, None)
        if len(request.body) > self.MAX_BYTES:
            return self.failure(413, None)
        if _media_type(request) != "application/json":
            return self.errors(400, (None, "Content-Type should be application/json."))
        try:
            mail = json.loads(request.body)
        except ValueError:
            return self.errors(400, (None, "Bad Request"))
        problems = list(self._validate(mail))
        if problems:
            return self.errors(400, *problems)
        sg_id = f"sg{self.next_id():06d}{uuid.uuid4().hex[:10]}"
        self.deliver(self._render(mail, sg_id, request.number))
        return Reply(202, b"", {"X-Message-Id": sg_id})

    def _validate(self, mail: Any) -> Iterable[tuple[str | None, str]]:
        if not isinstance(mail, dict):
            yield None, "Bad Request"
            return
        ps = mail.get("personalizations")
        if not isinstance(ps, list) or not ps:
            yield "personalizations", "You must have at least one personalization."
            return
        if len(ps) > self.MAX_PERSONALIZATIONS:
            yield "personalizations", (f"The personalization block is limited to 1000 personalizations per API "
                                       f"request. You have provided {len(ps)} personalizations.")
            return
        total = 0
        seen: set[str] = set()
        top_subject = isinstance(mail.get("subject"), str) and mail["subject"] != ""
        for i, p in enumerate(ps):
            where = f"personalizations.{i}"
            if not isinstance(p, dict) or not isinstance(p.get("to"), list) or not p["to"]:
                yield f"{where}.to", "The to array is required for all personalization objects, and must have at least one email object with a valid email address."  # noqa: E501
                continue
            for j, to in enumerate(p["to"]):
                email = to.get("email") if isinstance(to, dict) else None
                if not isinstance(email, str) or not is_address(email) or self.is_rejected(email):
                    yield f"{where}.to.{j}.email", "Does not contain a valid address."
                    continue
                if email.lower() in seen:
                    yield where, ("Each email address in the personalization block should be unique between "
                                  f"to, cc, and bcc. We found the first duplicate instance of [{email}] in the "
                                  f"{where}.to field.")
                seen.add(email.lower())
                total += 1
            if not top_subject and not (isinstance(p.get("subject"), str) and p["subject"]):
                yield f"{where}.subject", "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined."  # noqa: E501
            for key in ("custom_args", "substitutions", "headers"):
                value = p.get(key, {})
                if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                    yield f"{where}.{key}", f"Invalid type. Expected: object of strings for {key}."
            subs = p.get("substitutions", {})
            size = len(json.dumps(subs, ensure_ascii=False).encode())
            if isinstance(subs, dict) and size > self.MAX_SUBSTITUTION_BYTES:
                yield f"{where}.substitutions", "Substitutions are limited to 50,000 bytes per personalization block."  # noqa: E501
            for name in (p.get("headers") or {}) if isinstance(p.get("headers"), dict) else ():
                if name.lower() in self.RESERVED:
                    yield f"{where}.headers", f"The header {name} is reserved and cannot be set."
        if total > self.MAX_PERSONALIZATIONS:
            yield "personalizations", "There is a limit of 1000 total recipients (to + cc + bcc) per request."
        sender = mail.get("from")
        if not isinstance(sender, dict) or not is_address(str(sender.get("email", ""))):
            yield "from.email", "The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter."  # noqa: E501
        content = mail.get("content")
        if not isinstance(content, list) or not content:
            yield "content", "Unless a valid template_id is provided, the content parameter is required."
        else:
            types = [c.get("type") if isinstance(c, dict) else None for c in content]
            for k, c in enumerate(content):
                if not isinstance(c, dict) or not isinstance(c.get("value"), str) or not c["value"]:
                    yield f"content.{k}.value", "The content value must be a string at least one character in length."  # noqa: E501
            if "text/plain" in types and types.index("text/plain") != 0:
                yield "content", "If present, text/plain content must be first, followed by text/html."
        for key in ("headers", "custom_args"):
            value = mail.get(key, {})
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                yield key, f"Invalid type. Expected: object of strings for {key}."

    def _render(self, mail: dict[str, Any], sg_id: str, number: int) -> list[Delivered]:
        parts = {c["type"]: c["value"] for c in mail["content"]}
        out = []
        for p in mail["personalizations"]:
            subs = p.get("substitutions", {})

            def fill(text: str | None, subs: Mapping[str, str] = subs) -> str | None:
                if text is None:
                    return None
                # Longest keys first, as one pass, the way a template engine replaces tags.
                for key in sorted(subs, key=len, reverse=True):
                    text = text.replace(key, subs[key])
                return text

            headers = {**mail.get("headers", {}), **p.get("headers", {})}
            tags = {**mail.get("custom_args", {}), **p.get("custom_args", {})}
            for to in p["to"]:
                out.append(Delivered(
                    recipient=to["email"], to_name=to.get("name", ""),
                    subject=fill(p.get("subject") or mail.get("subject")) or "",
                    text=fill(parts.get("text/plain")), html=fill(parts.get("text/html")),
                    headers=headers, tags=tags, service_id=sg_id, request=number,
                ))
        return out


# ======================================================================================
# Mailgun
# ======================================================================================


class MailgunServer(ContractServer):
    """Mailgun ``POST /v3/{domain}/messages`` and ``/v3/{domain}/messages.mime``.

    Contract, from:
    - https://documentation.mailgun.com/docs/mailgun/api-reference/api-overview (base URLs
      api.mailgun.net / api.eu.mailgun.net; HTTP Basic auth, user ``api``, the key as
      password; 400 with a JSON ``message``, 401, 404, 429, 500);
    - https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages.md
      (multipart/form-data; ``from``, ``to``, ``subject`` and one of ``text``/``html``;
      ``messages.mime`` takes ``to`` and the MIME as the ``message`` file; options
      starting with o:, h:, v:, t: are limited to 16 KB in total);
    - https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/batch-sending
      (several ``to`` with ``recipient-variables``, a JSON object keyed by the plain
      address, referenced as ``%recipient.key%``; at most 1,000 recipients; without
      recipient variables every recipient sees all of them, so this server refuses that);
    - the user manual (github.com/mailgun/documentation, source/user_manual.rst): success
      is ``{"id": "<...>", "message": "Queued. Thank you."}``; 25 MB maximum message size.
    A bad address is refused with a 400 that names nobody: "'to' parameter is not a
    valid address. please check documentation".  A bad key gets 401 "Forbidden".
    """

    service = "mailgun"
    MAX_RECIPIENTS = 1000
    MAX_OPTIONS = 16 * 1024
    MAX_BYTES = 25 * 1024 * 1024

    def __init__(self, api_key: str = "key-test", domain: str = "mg.news.example.jp") -> None:
        super().__init__()
        self.api_key = api_key
        self.domain = domain

    def failure(self, status: int, retry_after: str | int | None) -> Reply:
        if status == 401:
            return Reply.text(401, "Forbidden")
        words = {429: "Too many requests", 500: "Internal Server Error", 503: "Service Unavailable"}
        return Reply.json(status, {"message": words.get(status, "error")}, **_retry_headers(retry_after))

    def handle(self, request: Received) -> Reply:
        m = re.fullmatch(r"/v3/([^/]+)/(messages|messages\.mime)", request.path)
        if request.method != "POST" or not m:
            return Reply.json(404, {"message": "Not Found"})
        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if request.header("Authorization") != expected:
            return self.failure(401, None)
        if unquote(m.group(1)) != self.domain:
            return Reply.json(404, {"message": f"Domain not found: {unquote(m.group(1))}"})
        if len(request.body) > self.MAX_BYTES:
            return Reply.json(413, {"message": "Request Entity Too Large"})
        if _media_type(request) != "multipart/form-data":
            return Reply.json(400, {"message": "expected multipart/form-data"})
        try:
            fields = parse_multipart(request.body, request.header("Content-Type") or "")
        except ValueError as exc:
            return Reply.json(400, {"message": f"malformed multipart body: {exc}"})
        options = sum(len(k) + len(v) for k, v in fields if k[:2] in ("o:", "h:", "v:", "t:"))
        if options > self.MAX_OPTIONS:
            return Reply.json(400, {"message": "Send options (parameters starting with o:, h:, v:, or t:) "
                                               "are limited to 16 kB total"})
        if m.group(2) == "messages.mime":
            return self._mime(fields, request.number)
        return self._messages(fields, request.number)

    def _ok(self) -> tuple[str, Reply]:
        mid = f"<{datetime.now(UTC):%Y%m%d%H%M%S}.{self.next_id()}.{uuid.uuid4().hex[:8]}@{self.domain}>"
        return mid, Reply.json(200, {"id": mid, "message": "Queued. Thank you."})

    def _recipients(self, values: list[str]) -> list[tuple[str, str]] | None:
        out = []
        for name, address in getaddresses(values):
            if not is_address(address) or self.is_rejected(address):
                return None
            out.append((str(make_header(decode_header(name))), address))
        return out

    def _messages(self, fields: list[tuple[str, bytes]], number: int) -> Reply:
        text_fields = {}
        for k, v in fields:
            text_fields.setdefault(k, v.decode("utf-8"))
        to_values = [v.decode("utf-8") for k, v in fields if k == "to"]
        for key in ("from", "subject"):
            if not text_fields.get(key):
                return Reply.json(400, {"message": f"{key} parameter is missing"})
        if not to_values:
            return Reply.json(400, {"message": "to parameter is missing"})
        if "text" not in text_fields and "html" not in text_fields:
            return Reply.json(400, {"message": "Need at least one of 'text' or 'html' parameters specified"})
        recipients = self._recipients(to_values)
        if recipients is None:
            return Reply.json(400, {"message": "'to' parameter is not a valid address. please check documentation"})
        if len(recipients) > self.MAX_RECIPIENTS:
            return Reply.json(400, {"message": f"'to' parameter must not have more than {self.MAX_RECIPIENTS} "
                                               f"recipients for batch sending"})
        variables: dict[str, dict[str, Any]] = {}
        if "recipient-variables" in text_fields:
            try:
                variables = json.loads(text_fields["recipient-variables"])
            except ValueError:
                return Reply.json(400, {"message": "recipient-variables parameter is not a valid JSON"})
            if not isinstance(variables, dict):
                return Reply.json(400, {"message": "recipient-variables parameter is not a valid JSON"})
        elif len(recipients) > 1:
            return Reply.json(400, {"message": "batch sending without recipient-variables would show every "
                                               "recipient to all of them"})
        for _, address in recipients:
            if len(recipients) > 1 and not isinstance(variables.get(address), dict):
                return Reply.json(400, {"message": f"recipient-variables has no entry for {address}"})
        mid, reply = self._ok()
        out = []
        for name, address in recipients:
            values = variables.get(address, {})

            def fill(text: str | None, values: Mapping[str, Any] = values) -> str | None:
                if text is None:
                    return None
                return re.sub(r"%recipient\.([A-Za-z0-9_-]+)%",
                              lambda m: str(values.get(m.group(1), m.group(0))), text)

            headers = {k[2:]: fill(v) or "" for k, v in text_fields.items() if k.startswith("h:")}
            tags = {k[2:]: fill(v) or "" for k, v in text_fields.items() if k.startswith("v:")}
            out.append(Delivered(address, name, fill(text_fields["subject"]) or "", fill(text_fields.get("text")),
                                 fill(text_fields.get("html")), headers, tags, mid, number))
        self.deliver(out)
        return reply

    def _mime(self, fields: list[tuple[str, bytes]], number: int) -> Reply:
        to_values = [v.decode("utf-8") for k, v in fields if k == "to"]
        data = next((v for k, v in fields if k == "message"), None)
        if not to_values:
            return Reply.json(400, {"message": "to parameter is missing"})
        if data is None:
            return Reply.json(400, {"message": "message parameter is missing"})
        recipients = self._recipients(to_values)
        if recipients is None:
            return Reply.json(400, {"message": "'to' parameter is not a valid address. please check documentation"})
        if not _mime_head_ok(data):
            return Reply.json(400, {"message": "message is not a valid MIME message"})
        tags = {k[2:]: v.decode("utf-8") for k, v in fields if k.startswith("v:")}
        mid, reply = self._ok()
        self.deliver(_from_mime(address, data, tags, mid, number, self.render) for _, address in recipients)
        return reply


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(name, value) pairs of a multipart/form-data body (RFC 7578), in order."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise ValueError("no boundary")
    delimiter = b"--" + m.group(1).encode()
    if not body.startswith(delimiter):
        raise ValueError("body does not start with the boundary")
    out = []
    for chunk in body.split(b"\r\n" + delimiter)[0:]:
        chunk = chunk[len(delimiter):] if chunk.startswith(delimiter) else chunk
        if chunk.startswith(b"--"):
            break
        if not chunk.startswith(b"\r\n"):
            raise ValueError("bad part delimiter")
        head, sep, value = chunk[2:].partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("part without a blank line after its headers")
        disposition = next((line.decode("utf-8") for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-disposition:")), "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        if not name:
            raise ValueError("part without a name")
        out.append((unquote(name.group(1)), value))
    return out


def _mime_head_ok(data: bytes) -> bool:
    """Headers, a blank line, a body; a From header among the headers."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    return bool(sep) and re.search(rb"(?im)^From:", head) is not None


def _from_mime(address: str, data: bytes, tags: Mapping[str, str], service_id: str, number: int,
               render: bool) -> Delivered:
    if not render:
        return Delivered(address, "", "", None, None, {}, dict(tags), service_id, number, raw=data)
    parsed = BytesParser(policy=policy.default).parsebytes(data)
    text = parsed.get_body(("plain",))
    markup = parsed.get_body(("html",))
    to_name = parseaddr(str(parsed.get("To", "")))[0]
    headers = {k: str(v) for k, v in parsed.items()}
    return Delivered(address, to_name, str(parsed.get("Subject", "")),
                     text.get_content() if text is not None else None,
                     markup.get_content() if markup is not None else None,
                     headers, dict(tags), service_id, number, raw=data)


# ======================================================================================
# Postmark
# ======================================================================================


class PostmarkServer(ContractServer):
    """Postmark ``POST /email/batch``.

    Contract, from:
    - https://postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails (a JSON
      array of up to 500 messages and 50 MB; ``MessageStream`` picks the stream; the
      answer is 200 with one result per message, in order: ``ErrorCode`` (0 = sent),
      ``Message``, ``MessageID``, ``SubmittedAt``, ``To``);
    - https://postmarkapp.com/developer/api/overview (``X-Postmark-Server-Token``, JSON
      in and out; 401 for a missing or wrong token; 422 with ``{"ErrorCode", "Message"}``
      for a request it cannot process; 429, 500, 503; the error codes: 10 bad token,
      300 invalid email request, 406 inactive recipient, 409 JSON required, 402 invalid
      JSON, 410 too many batch messages, 1235 unknown message stream);
    - https://postmarkapp.com/developer (10 MB per message, at most 50 recipients per
      message) and https://postmarkapp.com/support/article/1180-what-does-errorcode-300-mean
      (a text or HTML body is required; names with punctuation must be quoted).
    Postmark documents no Retry-After; the failure injection can add one.
    """

    service = "postmark"
    MAX_MESSAGES = 500
    MAX_BYTES = 50 * 1024 * 1024
    MAX_MESSAGE_BYTES = 10 * 1024 * 1024

    def __init__(self, token: str = "pm-server-token", streams: Iterable[str] = ("outbound", "broadcast")) -> None:
        super().__init__()
        self.token = token
        self.streams = set(streams)

    def failure(self, status: int, retry_after: str | int | None) -> Reply:
        if status == 401:
            return Reply.json(401, {"ErrorCode": 10, "Message": "Request does not contain a valid Server token."})
        if status == 429:
            return Reply.json(429, {"ErrorCode": 429, "Message": "Rate limit exceeded."},
                              **_retry_headers(retry_after))
        return Reply.json(status, {"ErrorCode": 0 if status >= 500 else status,
                                   "Message": "Internal Server Error" if status >= 500 else "error"},
                          **_retry_headers(retry_after))

    def handle(self, request: Received) -> Reply:
        if (request.method, request.path) != ("POST", "/email/batch"):
            return Reply.json(404, {"ErrorCode": 404, "Message": "Not found"})
        if (request.header("X-Postmark-Server-Token") or "").lower() != self.token.lower():
            return self.failure(401, None)
        if len(request.body) > self.MAX_BYTES:
            return Reply.json(413, {"ErrorCode": 300, "Message": "Request is larger than 50 MB."})
        if _media_type(request) != "application/json" or "json" not in (request.header("Accept") or ""):
            return Reply.json(422, {"ErrorCode": 409, "Message": "JSON required: set Content-Type and Accept "
                                                                 "to application/json."})
        try:
            batch = json.loads(request.body)
        except ValueError:
            return Reply.json(422, {"ErrorCode": 402, "Message": "Received invalid JSON input."})
        if not isinstance(batch, list):
            return Reply.json(422, {"ErrorCode": 403, "Message": "Incompatible JSON input: expected an array."})
        if len(batch) > self.MAX_MESSAGES:
            return Reply.json(422, {"ErrorCode": 410, "Message": "Too many batch messages. The maximum is 500."})
        results, delivered = [], []
        for message in batch:
            result, item = self._one(message, request.number)
            results.append(result)
            if item is not None:
                delivered.append(item)
        self.deliver(delivered)
        return Reply.json(200, results)

    def _one(self, m: Any, number: int) -> tuple[dict[str, Any], Delivered | None]:
        def error(code: int, text: str, to: str = "") -> tuple[dict[str, Any], None]:
            return {"ErrorCode": code, "Message": text, "To": to}, None

        if not isinstance(m, dict):
            return error(300, "Invalid email request: each message must be an object.")
        to = m.get("To")
        if not isinstance(to, str) or not to or not is_address(parseaddr(str(m.get("From", "")))[1]):
            return error(300, "Invalid email request: 'From' and 'To' are required.", str(to or ""))
        recipients = getaddresses([to])
        if len(recipients) > 50:
            return error(300, "Invalid email request: maximum of 50 recipients allowed per email message.", to)
        if any(not is_address(a) for _, a in recipients):
            return error(300, f"Error parsing 'To': Illegal email address '{to}'. It must contain the '@' "
                              f"symbol.", to)
        if not m.get("TextBody") and not m.get("HtmlBody"):
            return error(300, "Provide either email TextBody or HtmlBody or both.", to)
        headers = m.get("Headers", [])
        if not isinstance(headers, list) or not all(isinstance(h, dict) and isinstance(h.get("Name"), str)
                                                    and isinstance(h.get("Value"), str) for h in headers):
            return error(300, "Invalid email request: Headers must be a list of {Name, Value}.", to)
        metadata = m.get("Metadata", {})
        if not isinstance(metadata, dict) or len(metadata) > 10 or not all(
                isinstance(v, str) and len(k) <= 20 and len(v) <= 80 for k, v in metadata.items()):
            return error(300, "Invalid email request: Metadata allows 10 string fields (keys up to 20 "
                              "characters, values up to 80).", to)
        size = sum(len(str(m.get(k, "")).encode()) for k in ("Subject", "TextBody", "HtmlBody"))
        if size > self.MAX_MESSAGE_BYTES:
            return error(300, "Invalid email request: the message is larger than 10 MB.", to)
        stream = m.get("MessageStream", "outbound")
        if stream not in self.streams:
            return error(1235, f"The message stream for the provided 'ID' was not found: {stream}", to)
        inactive = [a for _, a in recipients if self.is_rejected(a)]
        if inactive:
            return error(406, "You tried to send to recipient(s) that have been marked as inactive. Found "
                              f"inactive addresses: {', '.join(inactive)}. Inactive recipients are ones that "
                              "have generated a hard bounce, a spam complaint, or a manual suppression.", to)
        message_id = str(uuid.uuid4())
        name, address = recipients[0]
        item = Delivered(address, name, str(m.get("Subject", "")), m.get("TextBody"), m.get("HtmlBody"),
                         {h["Name"]: h["Value"] for h in headers}, dict(metadata), message_id, number)
        return {"ErrorCode": 0, "Message": "OK", "MessageID": message_id,
                "SubmittedAt": datetime.now(UTC).isoformat(), "To": to}, item


# ======================================================================================
# Amazon SES
# ======================================================================================


class SESServer(ContractServer):
    """Amazon SES API v2 ``SendEmail`` (``POST /v2/email/outbound-emails``), raw content.

    Contract, from:
    - https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html (request
      syntax: ``Destination``, ``Content.Raw.Data`` (base64), ``EmailTags``,
      ``ConfigurationSetName``...; 200 ``{"MessageId"}``; errors AccountSuspendedException,
      BadRequestException, LimitExceededException, MailFromDomainNotVerifiedException,
      MessageRejected, SendingPausedException (400), NotFoundException (404),
      TooManyRequestsException (429));
    - https://docs.aws.amazon.com/ses/latest/APIReference-V2/CommonErrors.html (403 for an
      unknown key or a bad signature; errors named in ``x-amzn-ErrorType``, the text in
      ``message``);
    - https://docs.aws.amazon.com/ses/latest/dg/quotas.html (SES v2: 40 MB per message after
      base64 encoding; 50 recipients per message);
    - https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
      (Signature Version 4, service ``ses``; the request time must be within 15 minutes).
    The signature is checked by recomputing it from the request as received, with code
    of its own (not the client's signer).  SES sends no Retry-After; the failure
    injection can add one.
    """

    service = "ses"
    MAX_RAW_BASE64 = 40 * 1024 * 1024
    MAX_RECIPIENTS = 50

    def __init__(self, access_key: str = "AKIDTESTKEY", secret_key: str = "test/secret/KEY",
                 region: str = "ap-northeast-1", *, session_token: str | None = None,
                 configuration_sets: Iterable[str] = ("newsletter",)) -> None:
        super().__init__()
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.session_token = session_token
        self.configuration_sets = set(configuration_sets)

    @staticmethod
    def error(status: int, kind: str, message: str, **headers: str) -> Reply:
        return Reply.json(status, {"message": message}, **{"x-amzn-ErrorType": f"{kind}:", **headers})

    def failure(self, status: int, retry_after: str | int | None) -> Reply:
        extra = _retry_headers(retry_after)
        if status == 429:
            return self.error(429, "TooManyRequestsException", "Maximum sending rate exceeded.", **extra)
        if status in (401, 403):
            return self.error(403, "UnrecognizedClientException", "The security token included in the request "
                                                                  "is invalid.")
        if status >= 500:
            return self.error(status, "InternalFailure", "The request processing has failed because of an "
                                                         "unknown error, exception or failure.", **extra)
        return self.error(status, "BadRequestException", "error", **extra)

    def handle(self, request: Received) -> Reply:
        if (request.method, request.path) != ("POST", "/v2/email/outbound-emails"):
            return self.error(404, "NotFoundException", "Not found")
        problem = self._check_signature(request)
        if problem is not None:
            return problem
        if _media_type(request) != "application/json":
            return self.error(400, "BadRequestException", "Content-Type must be application/json")
        try:
            body = json.loads(request.body)
        except ValueError:
            return self.error(400, "BadRequestException", "Could not parse the request body as JSON")
        if not isinstance(body, dict):
            return self.error(400, "BadRequestException", "The request body must be a JSON object")
        raw = ((body.get("Content") or {}).get("Raw") or {}).get("Data")
        if not isinstance(raw, str):
            return self.error(400, "BadRequestException", "Content.Raw.Data is required (this server takes "
                                                          "raw messages only)")
        if len(raw) > self.MAX_RAW_BASE64:
            return self.error(400, "MessageRejected", "Message length is more than 40 MB")
        try:
            data = base64.b64decode(raw, validate=True)
        except ValueError:
            return self.error(400, "BadRequestException", "Content.Raw.Data is not valid base64")
        destination = body.get("Destination") or {}
        recipients = [a for key in ("ToAddresses", "CcAddresses", "BccAddresses")
                      for a in destination.get(key, []) or []]
        if not recipients:
            parsed = BytesParser(policy=policy.default).parsebytes(data)
            recipients = [a for _, a in getaddresses([str(v) for k in ("To", "Cc", "Bcc")
                                                      for v in parsed.get_all(k, [])])]
        if not recipients:
            return self.error(400, "BadRequestException", "No recipients")
        if len(recipients) > self.MAX_RECIPIENTS:
            return self.error(400, "MessageRejected", "Recipient count exceeds 50.")
        if not _mime_head_ok(data):
            return self.error(400, "MessageRejected", "The raw message must have headers (From) and a body "
                                                      "separated by a blank line.")
        if any(len(line) > 1000 for line in data.split(b"\r\n")):
            return self.error(400, "MessageRejected", "Message has a line longer than 1000 characters.")
        tags = body.get("EmailTags", [])
        if not isinstance(tags, list) or not all(
                isinstance(t, dict) and re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(t.get("Name", "")))
                and re.fullmatch(r"[A-Za-z0-9_\-.@]{0,256}", str(t.get("Value", ""))) for t in tags):
            return self.error(400, "BadRequestException", "EmailTags: names and values may only contain "
                                                          "ASCII letters, digits, _ and -.")
        config_set = body.get("ConfigurationSetName")
        if config_set is not None and config_set not in self.configuration_sets:
            return self.error(404, "NotFoundException", f"Configuration set <{config_set}> does not exist.")
        bad = [a for a in recipients if not is_address(a) or self.is_rejected(a)]
        if bad:
            return self.error(400, "MessageRejected", f"Email address is not verified. The following identities "
                                                      f"failed the check in region {self.region.upper()}: "
                                                      f"{', '.join(bad)}")
        message_id = f"0106{self.next_id():012x}-{uuid.uuid4()}-000000"
        tag_values = {str(t["Name"]): str(t.get("Value", "")) for t in tags}
        self.deliver(_from_mime(a, data, tag_values, message_id, request.number, self.render)
                     for a in recipients)
        return Reply.json(200, {"MessageId": message_id})

    def _check_signature(self, request: Received) -> Reply | None:
        auth = request.header("Authorization") or ""
        m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                         r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})", auth)
        if not m:
            return self.error(403, "IncompleteSignature", "Authorization header requires Credential, "
                                                          "SignedHeaders and Signature.")
        key, date, region, service, signed, signature = m.groups()
        if key != self.access_key:
            return self.failure(403, None)
        if (region, service) != (self.region, "ses"):
            return self.error(403, "SignatureDoesNotMatch", f"Credential should be scoped to a valid region "
                                                            f"({self.region}) and service (ses).")
        amz_date = request.header("X-Amz-Date") or ""
        try:
            when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return self.error(403, "IncompleteSignature", "X-Amz-Date is missing or malformed")
        if abs(when.timestamp() - time.time()) > 15 * 60 or amz_date[:8] != date:
            return self.error(403, "InvalidSignatureException", "Signature expired: the request time is more "
                                                                "than 15 minutes from the server's.")
        names = signed.split(";")
        if "host" not in names or "x-amz-date" not in names:
            return self.error(403, "SignatureDoesNotMatch", "host and x-amz-date must be signed")
        if self.session_token is not None and (request.header("X-Amz-Security-Token") != self.session_token
                                               or "x-amz-security-token" not in names):
            return self.error(403, "UnrecognizedClientException", "The security token included in the request "
                                                                  "is invalid.")
        lines = []
        for name in names:
            values = [" ".join(v.split()) for k, v in request.header_items if k.lower() == name]
            if not values:
                return self.error(403, "SignatureDoesNotMatch", f"signed header {name} is missing")
            lines.append(f"{name}:{','.join(values)}\n")
        pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~"))
                       for k, v in parse_qsl(request.query, keep_blank_values=True))
        creq = "\n".join([
            request.method, quote(unquote(request.path), safe="/-_.~"), "&".join(f"{k}={v}" for k, v in pairs),
            "".join(lines), signed, hashlib.sha256(request.body).hexdigest(),
        ])
        scope = f"{date}/{region}/{service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(creq.encode()).hexdigest()}"
        k = ("AWS4" + self.secret_key).encode()
        for part in (date, region, service, "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return self.error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match "
                                                            "the signature you provided. Check your AWS Secret "
                                                            "Access Key and signing method.")
        return None
