"""The ``ses`` provider: Amazon SES API v2 ``SendEmail`` with raw content.

Why ``SendEmail`` with ``Content.Raw`` (one request per message) and not
``SendBulkEmail``: bulk sending needs an SES template created beforehand and
per-destination ``ReplacementTemplateData``, i.e. a second copy of our
templating in SES's syntax, and a stored template per variant per edition to
create and delete.  Raw content sends the bytes compose already built, exactly:
our Message-ID, List-Unsubscribe and List-Id headers, and ISO-2022-JP for the
readers who asked for it; and each message gets its own answer, so a refused
address never drags others with it.  SES counts recipients, not requests, against
the sending quota, so one request per message costs nothing there; the engine's
``connections`` runs several in parallel when throughput matters.

Each request names the recipient in ``Destination.ToAddresses`` (the envelope),
tags the message ``nl_delivery_id`` (``EmailTags``, returned in SES event
notifications) and sets ``ConfigurationSetName`` when configured.  Requests are
signed with AWS Signature Version 4 (:func:`sign_v4`, tested against AWS's
published test suite).  Errors come as ``x-amzn-ErrorType`` plus a ``message``:
``TooManyRequestsException``/``LimitExceededException``/``SendingPausedException``
and 5xx are transient, ``MessageRejected`` and the other 400s permanent,
403 (unknown key, bad signature) and ``NotFoundException`` (no such configuration
set) configuration problems.  SES sends no ``Retry-After``; one is honoured if
it ever does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from newsletter.interfaces import OutgoingMessage
from newsletter.providers import OptionReader
from newsletter.providers.http import (
    HTTPProvider,
    HTTPRequest,
    HTTPResponse,
    Outcome,
    env_secret,
    json_body,
    read_base_url,
    whole,
)

__all__ = ["SESProvider", "canonical_request", "sign_v4", "signing_key", "string_to_sign"]

SERVICE = "ses"
MAX_RAW_BASE64 = 40 * 1024 * 1024  # "40 MB per message (after base64 encoding)", SES v2
TRANSIENT_ERRORS = {"TooManyRequestsException", "LimitExceededException", "SendingPausedException",
                    "Throttling", "ThrottlingException", "ServiceUnavailable", "InternalFailure"}
# The sending-rate answers: a pause for everyone, not a failure of the message.
THROTTLES = {"TooManyRequestsException", "Throttling", "ThrottlingException"}
_UNRESERVED = "-_.~"


# -- AWS Signature Version 4 ------------------------------------------------------------
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html


def _uri_encode(text: str, safe: str = "") -> str:
    return quote(text, safe=_UNRESERVED + safe)


def canonical_request(method: str, path: str, query: str, headers: Sequence[tuple[str, str]],
                      payload_hash: str) -> tuple[str, str]:
    """The canonical request and the signed-headers list.

    ``path`` and ``query`` are as they appear on the wire (percent-encoded or not;
    they are decoded and encoded again the one canonical way).  Header names are
    lower-cased and sorted; values trimmed with inner runs of spaces collapsed;
    repeated headers joined with commas in the order given.
    """
    uri = _uri_encode(unquote(path) or "/", safe="/")
    pairs = sorted((_uri_encode(k), _uri_encode(v)) for k, v in parse_qsl(query, keep_blank_values=True))
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault(name.strip().lower(), []).append(" ".join(value.split()))
    names = sorted(merged)
    canonical_headers = "".join(f"{n}:{','.join(merged[n])}\n" for n in names)
    signed = ";".join(names)
    return "\n".join([method.upper(), uri, canonical_query, canonical_headers, signed, payload_hash]), signed


def string_to_sign(amz_date: str, scope: str, creq: str) -> str:
    return "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode("utf-8")).hexdigest()])


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def sign_v4(method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes, *, access_key: str,
            secret_key: str, region: str, service: str, when: datetime,
            session_token: str | None = None) -> list[tuple[str, str]]:
    """The headers to add to a request so that AWS accepts it: X-Amz-Date,
    X-Amz-Security-Token (with temporary credentials) and Authorization.  Every
    header in ``headers`` is signed, plus Host (from the URL when absent)."""
    parts = urlsplit(url)
    amz_date = when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    added = [("X-Amz-Date", amz_date)]
    if session_token:
        added.append(("X-Amz-Security-Token", session_token))
    all_headers = list(headers) + added
    if not any(name.lower() == "host" for name, _ in all_headers):
        all_headers.append(("Host", parts.netloc))
    creq, signed = canonical_request(method, parts.path, parts.query, all_headers,
                                     hashlib.sha256(body).hexdigest())
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    signature = hmac.new(signing_key(secret_key, amz_date[:8], region, service),
                         string_to_sign(amz_date, scope, creq).encode("utf-8"), hashlib.sha256).hexdigest()
    added.append(("Authorization", f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                                   f"SignedHeaders={signed}, Signature={signature}"))
    return added


# -- the provider ------------------------------------------------------------------------


class SESProvider(HTTPProvider):
    """Amazon SES v2; see the module docstring."""

    name = "ses"
    sends_raw_mime = True  # hands over OutgoingMessage.data as it is (a DKIM signature survives)
    service = "Amazon SES"
    max_batch = 50

    def __init__(self, access_key_id: str, secret_access_key: str, region: str, *,
                 session_token: str | None = None, base_url: str | None = None,
                 configuration_set: str | None = None, timeout: float = 30.0, connect_timeout: float = 10.0,
                 max_batch: int = 50, **kwargs: Any):
        super().__init__(base_url or f"https://email.{region}.amazonaws.com", timeout=timeout,
                         connect_timeout=connect_timeout, max_batch=max_batch, **kwargs)
        self._access_key = access_key_id
        self._secret_key = secret_access_key
        self._session_token = session_token
        self.region = region
        self.configuration_set = configuration_set

    def __repr__(self) -> str:
        return f"<SESProvider {self.region} {self.base_url} key={self._access_key[:4]}…>"

    @classmethod
    def from_config(cls, options: Mapping[str, object], base_dir: Path) -> SESProvider:
        r = OptionReader(options, cls.name)
        for key in ("access_key_id", "secret_access_key", "session_token"):
            r.forbid(key, f"credentials never go in config.toml; put it in an environment variable "
                          f"and name that variable in provider.{key}_env")
        access = env_secret(r, "access_key_id_env", "AWS_ACCESS_KEY_ID", what="AWS access key id")
        secret = env_secret(r, "secret_access_key_env", "AWS_SECRET_ACCESS_KEY", what="AWS secret access key")
        token = env_secret(r, "session_token_env", None, what="AWS session token", required=False)
        region = r.text("region")
        if region is None:
            raise r.fail("region", "required: the AWS region of your SES account (e.g. \"ap-northeast-1\")")
        if not all(c.isalnum() or c == "-" for c in region):
            raise r.fail("region", f"not an AWS region name: {region!r}")
        base_url = read_base_url(r, f"https://email.{region}.amazonaws.com")
        configuration_set = r.text("configuration_set")
        timeout = r.number("timeout", 30.0, minimum=0.001)
        connect_timeout = r.number("connect_timeout", 10.0, minimum=0.001)
        max_batch = r.integer("max_batch", 50, minimum=1, maximum=1000)
        r.finish()
        assert access is not None and secret is not None
        return cls(access, secret, region, session_token=token, base_url=base_url,
                   configuration_set=configuration_set, timeout=timeout, connect_timeout=connect_timeout,
                   max_batch=max_batch)

    def precheck(self, message: OutgoingMessage) -> str | None:
        encoded = (len(message.data) + 2) // 3 * 4
        if encoded > MAX_RAW_BASE64:
            return f"local: the message is {encoded} bytes in base64; SES v2 takes at most {MAX_RAW_BASE64}"
        return None

    def build_payload(self, group: Sequence[OutgoingMessage]) -> HTTPRequest:
        [message] = group
        body: dict[str, Any] = {
            "Destination": {"ToAddresses": [message.recipient]},
            "Content": {"Raw": {"Data": base64.b64encode(message.data).decode("ascii")}},
            "EmailTags": [{"Name": "nl_delivery_id", "Value": str(message.delivery_id)}],
        }
        if self.configuration_set:
            body["ConfigurationSetName"] = self.configuration_set
        return HTTPRequest("POST", f"{self.base_url}/v2/email/outbound-emails",
                           {"Content-Type": "application/json", "Host": urlsplit(self.base_url).netloc},
                           json_body(body), (message,), "SendEmail")

    def finalize(self, request: HTTPRequest) -> HTTPRequest:
        when = datetime.fromtimestamp(self.clock(), UTC)
        added = sign_v4(request.method, request.url, list(request.headers.items()), request.body,
                        access_key=self._access_key, secret_key=self._secret_key, region=self.region,
                        service=SERVICE, when=when, session_token=self._session_token)
        return HTTPRequest(request.method, request.url, {**request.headers, **dict(added)}, request.body,
                           request.messages, request.operation)

    def parse_results(self, request: HTTPRequest, response: HTTPResponse) -> Outcome:
        messages = request.messages
        status = response.status
        data = response.json()
        if 200 <= status < 300:
            pid = data.get("MessageId") if isinstance(data, dict) else None
            return Outcome(whole(messages, "accepted", response.describe(), provider_id=pid))
        kind = error_type(response)
        said = f"{kind}: {_message(data) or response.text()}" if kind else _message(data)
        if status == 403 or kind in ("UnrecognizedClientException", "InvalidSignatureException",
                                     "SignatureDoesNotMatch", "AccessDeniedException", "ExpiredTokenException",
                                     "IncompleteSignature", "MissingAuthenticationToken"):
            return Outcome(config_problem=("access_key_id_env",
                                           f"Amazon SES refused the credentials: {response.describe(said)}"))
        if kind == "NotFoundException":
            return Outcome(config_problem=("configuration_set", f"Amazon SES: {response.describe(said)}"))
        if status in (408, 429) or status >= 500 or kind in TRANSIENT_ERRORS or not 200 <= status < 500:
            return self.trouble(request, response, said, throttled=status == 429 or kind in THROTTLES)
        return Outcome(whole(messages, "permanent", response.describe(said)))


def error_type(response: HTTPResponse) -> str | None:
    """The AWS error code: ``x-amzn-ErrorType`` ("MessageRejected:http://..."), else ``__type``/``code``."""
    raw = response.header("x-amzn-ErrorType")
    if not raw:
        data = response.json()
        if isinstance(data, dict):
            raw = data.get("__type") or data.get("code") or data.get("Code")
    if not raw:
        return None
    raw = str(raw).split(":", 1)[0]
    return raw.rsplit("#", 1)[-1] or None


def _message(data: Any) -> str | None:
    if isinstance(data, dict):
        value = data.get("message") or data.get("Message")
        return str(value) if value else None
    return None
