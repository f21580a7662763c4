"""Signed tokens for the personal links in every mail.

A token is ``<subscriber id>.<signature>``, the signature an HMAC-SHA256 over
the purpose and the id, truncated to 128 bits and base64url-encoded.
Unsubscribe and preference tokens do not expire: a link in a mail from last
year must still work.  Verification accepts the current key and any old ones,
so that keys can be rotated without breaking links already sent.

Confirmation links of the sign-up form (double opt-in) are different: they
expire and are used once.  Their token is ``<sign-up id>.<expiry>.<signature>``
(expiry in epoch seconds, inside the signed text, so it cannot be extended);
single use is the store's business (``signups.confirmed_at``).

Tracking links (issue 15) sign a few short fields instead of a subscriber id:
``<field>.<field>….<signature>`` (:func:`make_fields_token`), each field
``[0-9a-z]``; a click link names the edition, the link's index into the frozen
content and the variant, never a URL, so no request can make us redirect
elsewhere.

Key rotation: :func:`signing_keys` is the current key (``config.secret()``)
followed by the old ones from the variable named by ``[site] old_secrets_env``
(comma-separated).  New links are always signed with the first.

Parsing is strict, whatever a client sends: ids and expiries are ASCII digits
only (``'²'.isdigit()`` is true, and ``int('²')`` fails), signatures exactly
the base64url characters of a 128-bit MAC; anything else is "not our token"
(None), never an exception.  Every comparison of a secret with what a client
sent goes through :func:`equal` (constant time, on bytes: ``hmac.compare_digest``
raises on a non-ASCII ``str``), here and in the CSRF and webhook checks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

PURPOSES = ("unsubscribe", "preferences")
# 128 bits in base64url without padding: 22 characters.  [0-9] and [A-Za-z] are
# ASCII only (unlike str.isdigit() or \d on str patterns).
_SIGNATURE = r"[A-Za-z0-9_-]{22}"
_TOKEN = re.compile(rf"([0-9]{{1,18}})\.({_SIGNATURE})")
_EXPIRING = re.compile(rf"([0-9]{{1,15}})\.([0-9]{{1,15}})\.({_SIGNATURE})")
EXPIRING_PURPOSES = ("confirm",)


def equal(expected: str | bytes, given: str | bytes) -> bool:
    """Constant-time comparison of a secret we computed with what a client sent,
    for any text at all (non-ASCII, lone surrogates): both are compared as bytes."""
    a = expected.encode("utf-8", "surrogatepass") if isinstance(expected, str) else expected
    b = given.encode("utf-8", "surrogatepass") if isinstance(given, str) else given
    return hmac.compare_digest(a, b)


def _sig(key: bytes, purpose: str, subscriber_id: int) -> str:
    mac = hmac.new(key, f"newsletter:{purpose}:{subscriber_id}".encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def make_token(key: bytes, purpose: str, subscriber_id: int) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    return f"{subscriber_id}.{_sig(key, purpose, subscriber_id)}"


def verify_token(keys: Iterable[bytes], purpose: str, token: str) -> int | None:
    """The subscriber id if ``token`` was made by one of ``keys`` for ``purpose``."""
    m = _TOKEN.fullmatch(token)
    if m is None:
        return None
    sid = int(m.group(1))
    for key in keys:
        if equal(_sig(key, purpose, sid), m.group(2)):
            return sid
    return None


def signing_keys(config) -> list[bytes]:
    """The current key, then the old ones still accepted (rotation)."""
    keys = [config.secret()]
    env = getattr(config.site, "old_secrets_env", None)
    for old in (os.environ.get(env, "") if env else "").split(","):
        old = old.strip()
        if old and old.encode() not in keys:
            keys.append(old.encode())
    return keys


@dataclass(frozen=True)
class Expiring:
    """A verified expiring token: whose it is, and whether it has run out."""

    ident: int
    expires: int
    expired: bool


def _expiring_sig(key: bytes, purpose: str, ident: int, expires: int) -> str:
    text = f"newsletter:{purpose}:{ident}:{expires}".encode()
    return base64.urlsafe_b64encode(hmac.new(key, text, hashlib.sha256).digest()[:16]).rstrip(b"=").decode()


def make_expiring_token(key: bytes, purpose: str, ident: int, expires: int) -> str:
    """A token for ``ident`` that stops working at ``expires`` (epoch seconds)."""
    if purpose not in EXPIRING_PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    return f"{ident}.{expires}.{_expiring_sig(key, purpose, ident, expires)}"


def verify_expiring_token(keys: Iterable[bytes], purpose: str, token: str, now: float) -> Expiring | None:
    """None for a token none of ``keys`` made (forged, truncated, other purpose);
    otherwise its id, with ``expired`` set when ``now`` is past its expiry."""
    m = _EXPIRING.fullmatch(token)
    if m is None:
        return None
    ident, expires, sig = int(m.group(1)), int(m.group(2)), m.group(3)
    for key in keys:
        if equal(_expiring_sig(key, purpose, ident, expires), sig):
            return Expiring(ident, expires, expired=now >= expires)
    return None


_FIELD = re.compile(r"[0-9a-z]{1,24}")
FIELD_PURPOSES = ("click", "open", "reader")


def _fields_sig(key: bytes, purpose: str, fields: tuple[str, ...]) -> str:
    text = f"newsletter:{purpose}:{'.'.join(fields)}".encode()
    return base64.urlsafe_b64encode(hmac.new(key, text, hashlib.sha256).digest()[:16]).rstrip(b"=").decode()


def make_fields_token(key: bytes, purpose: str, *fields: str) -> str:
    """``fields`` (each 1-24 of ``[0-9a-z]``) and their signature for ``purpose``."""
    if purpose not in FIELD_PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    if not all(_FIELD.fullmatch(f) for f in fields):
        raise ValueError(f"token fields must be [0-9a-z]{{1,24}}: {fields!r}")
    return ".".join(fields) + "." + _fields_sig(key, purpose, fields)


def verify_fields_token(keys: Iterable[bytes], purpose: str, token: str, count: int) -> tuple[str, ...] | None:
    """The ``count`` fields of ``token`` if one of ``keys`` signed them for
    ``purpose``; None for anything else (forged, truncated, other purpose)."""
    parts = token.split(".")
    if len(parts) != count + 1 or len(token) > 200:
        return None
    fields, sig = tuple(parts[:-1]), parts[-1]
    if not all(_FIELD.fullmatch(f) for f in fields):
        return None
    for key in keys:
        if hmac.compare_digest(_fields_sig(key, purpose, fields), sig):
            return fields
    return None
