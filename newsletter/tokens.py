"""Signed tokens for the personal links in every mail.

A token is ``<subscriber id>.<signature>``, the signature an HMAC-SHA256 over
the purpose and the id, truncated to 128 bits and base64url-encoded.
Unsubscribe and preference tokens do not expire: a link in a mail from last
year must still work.  Verification accepts the current key and any old ones,
so that keys can be rotated without breaking links already sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

PURPOSES = ("unsubscribe", "preferences")


def _sig(key: bytes, purpose: str, subscriber_id: int) -> str:
    mac = hmac.new(key, f"newsletter:{purpose}:{subscriber_id}".encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def make_token(key: bytes, purpose: str, subscriber_id: int) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    return f"{subscriber_id}.{_sig(key, purpose, subscriber_id)}"


def verify_token(keys: Iterable[bytes], purpose: str, token: str) -> int | None:
    """The subscriber id if ``token`` was made by one of ``keys`` for ``purpose``."""
    sid_text, _, sig = token.partition(".")
    if not sid_text.isdigit() or not sig or len(sid_text) > 18:
        return None
    sid = int(sid_text)
    for key in keys:
        if hmac.compare_digest(_sig(key, purpose, sid), sig):
            return sid
    return None
