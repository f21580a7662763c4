"""What every request goes through: the client's address, CSRF tokens, the
security headers, the body-size limit and an access log without tokens.

CSRF: a signed double-submit token.  Every page with a form makes sure the
browser holds a random ``nl_csrf`` cookie (HttpOnly, SameSite=Lax); the form
carries ``HMAC(key, cookie | form path)`` in a hidden field.  A cross-site page
can make the browser send the cookie but can neither read it nor compute the
HMAC, and a token taken from one form does not work on another path.  The
RFC 8058 one-click POST is the exception by design: mailbox providers send it
without cookies, and the signed link itself is the authority.  The form
token is compared as bytes in constant time (:func:`newsletter.tokens.equal`),
so any text a client puts there is simply "wrong", never an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..tokens import equal

access_log = logging.getLogger("newsletter.web.access")

CSRF_COOKIE = "nl_csrf"
WEBHOOK_BODY_LIMIT = 4 * 1024 * 1024
CSRF_FIELD = "csrf"

# Pages of our own: no inline script or style at all.  The archive overrides
# style-src for the digest HTML, whose CSS premailer inlined into style attributes.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
ARCHIVE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'none'; "
               "frame-ancestors 'none'; base-uri 'none'")


class ClientInfo:
    """Who sent the request: the peer address, or the client address a trusted
    reverse proxy put in X-Forwarded-For (rightmost entry that is not itself a
    trusted proxy, since everything left of it can be written by the client)."""

    def __init__(self, trusted: Iterable[str]):
        self.trusted = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def _is_trusted(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.strip())
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def ip(self, request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        if not self.trusted or not self._is_trusted(peer):
            return peer
        chain = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",") if a.strip()]
        for addr in reversed(chain):
            if not self._is_trusted(addr):
                try:
                    return str(ipaddress.ip_address(addr))
                except ValueError:
                    return peer
        return peer

    def is_https(self, request: Request) -> bool:
        if request.url.scheme == "https":
            return True
        peer = request.client.host if request.client else ""
        return self._is_trusted(peer) and request.headers.get("x-forwarded-proto", "").lower() == "https"


def user_agent(request: Request) -> str:
    ua = request.headers.get("user-agent", "")
    return "".join(c for c in ua if c.isprintable())[:500]


# -- CSRF ------------------------------------------------------------------------

def _csrf_key(secret: bytes) -> bytes:
    return hmac.new(secret, b"newsletter:csrf-key", hashlib.sha256).digest()


def _csrf_mac(secret: bytes, cookie: str, path: str) -> str:
    mac = hmac.new(_csrf_key(secret), f"{cookie}|{path}".encode(), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(mac).decode()


_COOKIE_RE = re.compile(r"[A-Za-z0-9_-]{20,64}")


class CSRF:
    def __init__(self, keys: list[bytes], clients: ClientInfo):
        self.keys = keys
        self.clients = clients

    def cookie_of(self, request: Request) -> str | None:
        value = request.cookies.get(CSRF_COOKIE, "")
        return value if _COOKIE_RE.fullmatch(value) else None

    def tokens(self, request: Request, *paths: str) -> tuple[list[str], str | None]:
        """The form tokens for ``paths`` and a new cookie value to set (None when
        the browser already holds one)."""
        cookie = self.cookie_of(request)
        new = None
        if cookie is None:
            cookie = new = secrets.token_urlsafe(24)
        return [_csrf_mac(self.keys[0], cookie, path) for path in paths], new

    def set_cookie(self, request: Request, response: Response, value: str | None) -> None:
        if value:
            response.set_cookie(CSRF_COOKIE, value, httponly=True, samesite="lax", path="/",
                                secure=self.clients.is_https(request))

    def check(self, request: Request, form_token: object, path: str, message: str) -> None:
        cookie = self.cookie_of(request)
        if not cookie or not isinstance(form_token, str) or not form_token:
            raise HTTPException(403, message)
        if not any(equal(_csrf_mac(k, cookie, path), form_token) for k in self.keys):
            raise HTTPException(403, message)


# -- ASGI middleware -------------------------------------------------------------

def default_headers(hsts: bool = False) -> dict[str, str]:
    headers = {
        "Content-Security-Policy": CSP,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        # The personal links carry their token in the path: never send it onwards.
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
        "Cache-Control": "no-store",
    }
    if hsts:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers


class SecurityHeaders:
    """Adds the security headers to every response that does not set its own."""

    def __init__(self, app: ASGIApp, hsts: bool = False):
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in default_headers(self.hsts and scope.get("scheme") == "https").items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, whether announced
    by Content-Length or streamed in chunks (the count is made as the body is
    read; the HTTPException goes to the app's error page)."""

    def __init__(self, app: ASGIApp, limit: int, message: str, webhook_limit: int = WEBHOOK_BODY_LIMIT):
        self.app = app
        self.limit = limit
        self.webhook_limit = max(limit, webhook_limit)
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Providers batch events (SendGrid: up to thousands a POST): webhooks get more room than forms.
        limit = self.webhook_limit if scope.get("path", "").startswith("/webhooks/") else self.limit
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit():
                    await _plain(send, 400, "error: bad Content-Length header\n")
                    return
                if int(value) > limit:
                    await _plain(send, 413, f"error: {self.message}\n")
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, limited, send)


async def _plain(send: Send, status: int, body: str) -> None:
    data = body.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(data)).encode()),
        (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": data})


# /r/ and /o/ (reading statistics): everything after them, the reader's part included.
_TOKEN_PATH = re.compile(r"^/(unsubscribe|preferences|confirm)/[^/]+|^/(r|o)/.+")


def redact(path: str) -> str:
    """The path as it may appear in a log: personal tokens replaced."""
    return _TOKEN_PATH.sub(lambda m: f"/{m.group(1) or m.group(2)}/…", path)


class AccessLog:
    """One line per request, without tokens or query strings (uvicorn's own
    access log is off: it would write every personal link into the log)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.info('%s "%s %s" %s %.0fms', client[0], scope.get("method"), redact(scope.get("path", "")),
                            status or 500, (time.perf_counter() - start) * 1000)
