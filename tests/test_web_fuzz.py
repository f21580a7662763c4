"""Fuzzing the web service at its ASGI interface (issue 11 item 8): every route
and webhook the app has, with every method it takes and a few it does not,
hostile path segments, query strings, headers (cookies, CSRF values, webhook
signatures and tokens) and bodies (forms, multipart, JSON nested deep, of the
wrong types, with lone surrogates, NUL and huge numbers).

Requests go straight to the ASGI app (raw bytes, as a server hands them over:
no client library cleans them first), on SQLite and PostgreSQL.  For every
request: no 5xx at all (the last-resort handler is for bugs, and none may be
reached), and a request that is refused (4xx), or any GET, changes nothing in
the database (every row of every table is compared).

Half of the webhook requests are signed with the right keys, so that what
comes after authentication is fuzzed too; page requests carry a valid CSRF
cookie and token, or valid personal links, often enough to get past those
checks into the validation behind them.

Bounded for CI: 100 examples per test and database, no deadline.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_from_bytes, unquote

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from newsletter.tokens import make_token
from newsletter.web.security import _csrf_mac
from newsletter.web.webhooks import sns_string_to_sign
from tests.test_web import Site, dump, link_in, make_site, sign_up
from tests.test_webhooks import CERT_URL, SES_BOUNCE, TOPIC, ec_key, rsa_cert, sns_message  # noqa: F401 (fixtures)

# CI runs 100 a test and database; NEWSLETTER_FUZZ_EXAMPLES=2000 for a longer hunt.
EXAMPLES = int(os.environ.get("NEWSLETTER_FUZZ_EXAMPLES", "100"))
COOKIE = "fuzzfuzzfuzzfuzzfuzzfuzz"
MG_KEY = "mailgun-signing-key-123"
PM_AUTH = b"Basic " + base64.b64encode(b"postmark:p@ss word")
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

# -- what a hostile client sends ----------------------------------------------------------

NASTY = [
    "", " ", "²", "٣", "１２３", "\x00", "\ud800", "\udc80", "署名", "すずき", "ｽｽﾞｷ", "\u202e", "\ufeff", "🙂",
    "\r\n", "%00", "%ff", "%", "../..", "9" * 30, "-1", "0", "1e999", "NaN", "&", "=", ";", '"', "'", "\\",
    "<script>", "AAAAAAAAAAAAAAAAAAAAAA", "a" * 300, "education", "html", "One-Click", "すずき@example.jp",
    "taro＠example.jp", "reader@example.jp", "a@b", "@", "a@[127.0.0.1]", "x@例え.jp",
]
text = st.one_of(
    st.sampled_from(NASTY),
    st.text(st.characters(exclude_categories=()), max_size=20),  # surrogates included
    st.lists(st.sampled_from(NASTY) | st.text(max_size=4), max_size=4).map("".join),
)


def utf8(value: str) -> bytes:
    """What a careless client makes of any text (lone surrogates become invalid UTF-8)."""
    return value.encode("utf-8", "surrogatepass")


raw_bytes = st.binary(max_size=40)
# Hypothesis draws 0 from small integer ranges far more often than 1 in n:
# "one time in n" is a choice among n equally likely values.
GOOD_MOSTLY = st.sampled_from([True, True, True, False])


def one_in(n: int) -> st.SearchStrategy[bool]:
    return st.sampled_from([False] * (n - 1) + [True])
header_value = st.one_of(
    text.map(utf8), raw_bytes,
).map(lambda b: bytes(c for c in b if c not in (10, 13)))  # a server never passes CR/LF inside a header

# JSON: right and wrong types everywhere, strings from `text`, numbers Python cannot read, deep nesting.
leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), text)
json_value = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(text, inner, max_size=3), max_leaves=6)
RAW_JSON = [
    "[" * 50 + "]" * 50, "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000, "9" * 5000, "-" + "9" * 4400,
    "1e999999", "NaN", '"\\ud800"', '"\\u0000"', '"\x00"', "", "nul", "[1,]", "{'a': 1}",
]
json_text = st.one_of(
    json_value.map(lambda v: json.dumps(v, ensure_ascii=False)),  # lone surrogates raw in the text
    json_value.map(json.dumps),  # and escaped
    st.sampled_from(RAW_JSON),
)


def splice(shape: Any, hole: str) -> str:
    """JSON text of ``shape`` with its "__HOLE__" string replaced by raw JSON
    text (deep nesting or a huge number where a field is expected)."""
    return json.dumps(shape).replace('"__HOLE__"', hole, 1)


# -- a raw ASGI client ---------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    body: bytes


class Asgi:
    """Hands a request to the app as a server would: the path percent-decoded
    (errors replaced, as uvicorn does), headers and body as raw bytes."""

    def __init__(self, app):
        self.app = app
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.loop.close()

    def __call__(self, method: str, raw_path: bytes, query: bytes = b"", headers: list | None = None,
                 body: bytes = b"") -> Answer:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": unquote(raw_path.decode("ascii")), "raw_path": raw_path, "query_string": query, "root_path": "",
            "headers": [(b"host", b"news.example.jp"), *(headers or [])],
            "client": ("198.51.100.7", 40000), "server": ("news.example.jp", 80),
        }
        chunks = [body[: len(body) // 2], body[len(body) // 2:]]
        sent: list[dict] = []
        done = asyncio.Event()

        async def receive() -> dict:
            if chunks:
                return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        # An exception out of the app (the last-resort handler re-raises after answering) fails the test here.
        self.loop.run_until_complete(self.app(scope, receive, send))
        start = next(m for m in sent if m["type"] == "http.response.start")
        return Answer(start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


# -- the site -----------------------------------------------------------------------------------

WEBHOOK_CONFIG = '''
[web]
trusted_proxies = ["198.51.100.7"]
signup_limit_ip = "1000000/h"
signup_limit_address = "1000000/d"

[web.webhooks]
sendgrid_public_key = "{public}"
mailgun_signing_key_env = "MG_SIGNING_KEY"
postmark_username = "postmark"
postmark_password_env = "PM_WEBHOOK_PASSWORD"
ses_certificates = "sns-certs"
ses_topic_arns = ["{topic}"]
'''


@dataclass
class Target:
    site: Site
    asgi: Asgi
    tokens: dict[str, str]  # purpose -> a valid token
    before: dict

    def check(self, method: str, path: bytes, answer: Answer) -> None:
        """No 5xx, ever; nothing changed by a refusal or a GET."""
        assert answer.status < 500, (method, path, answer.status, answer.body[:300])
        assert b"Traceback" not in answer.body
        after = dump(self.site.engine)
        if answer.status >= 400 or method in ("GET", "HEAD"):
            assert after == self.before, (method, path, answer.status, answer.body[:300])
        self.before = after


@pytest.fixture
def target(tmp_path, storage_url, ec_key, rsa_cert, monkeypatch):  # noqa: F811
    public = base64.b64encode(ec_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    certs = tmp_path / "project" / "sns-certs"
    certs.mkdir(parents=True)
    (certs / CERT_URL.rsplit("/", 1)[1]).write_bytes(rsa_cert[1])
    monkeypatch.setenv("MG_SIGNING_KEY", MG_KEY)
    monkeypatch.setenv("PM_WEBHOOK_PASSWORD", "p@ss word")
    site = make_site(tmp_path, storage_url, extra=WEBHOOK_CONFIG.format(public=public, topic=TOPIC))
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    key = site.config.secret()
    sid = site.subscriber("reader@example.jp").id
    tokens = {"unsubscribe": make_token(key, "unsubscribe", sid), "preferences": make_token(key, "preferences", sid)}
    asgi = Asgi(site.client.app)
    try:
        yield Target(site, asgi, tokens, dump(site.engine))
    finally:
        asgi.close()
        site.engine.dispose()


# -- page requests ------------------------------------------------------------------------------

ROUTE_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
FORM_KEYS = ["csrf", "email", "fields", "format", "name", "agree", "List-Unsubscribe"]
GOOD_VALUES = {"email": ["taro@example.jp", "reader@example.jp", " Hanako@Example.JP "],
               "fields": ["education", "administration", "教育"], "format": ["html", "text", "テキスト"],
               "name": ["佐藤 花子"], "agree": ["1"], "List-Unsubscribe": ["One-Click"]}


@st.composite
def path_value(draw, name: str, tokens: dict[str, str], purpose: str) -> str:
    """A good value for the parameter (mostly: for a token, the link of this
    route's purpose), a good one with a character changed, or anything."""
    mine = tokens.get(purpose)
    good = {"token": [mine, mine, *tokens.values()] if mine else list(tokens.values()),
            "publication": ["weekly", "monthly"], "number": ["1", "2", "0"],
            "provider": ["sendgrid", "mailgun", "postmark", "ses", "other"]}.get(name, [])
    choice = draw(st.sampled_from([0, 0, 1, 2]))
    if good and choice == 0:
        return draw(st.sampled_from(good))
    if good and choice == 1:  # a good value with one character changed
        value = draw(st.sampled_from(good))
        i = draw(st.integers(0, len(value)))
        return value[:i] + draw(text) + value[i + 1:]
    return draw(text)


@st.composite
def form_body(draw, path: str) -> tuple[bytes, bytes]:
    """(content type, body): a form that would be accepted (right CSRF token
    for this path and cookie, good values), with none to a few of its fields
    replaced, removed, doubled or added with hostile values; urlencoded,
    multipart or something else."""
    pairs = [("csrf", _csrf_mac(KEY_HOLDER["key"], COOKIE, path))]
    pairs += [(k, draw(st.sampled_from(v))) for k, v in GOOD_VALUES.items() if k != "List-Unsubscribe"]
    if path.startswith("/unsubscribe/") and draw(st.booleans()):
        pairs = [("List-Unsubscribe", "One-Click")]  # RFC 8058 one-click
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(FORM_KEYS) | text)
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action != "add":
            pairs = [(k, v) for k, v in pairs if k != key]
        if action != "remove":
            if key == "csrf" and draw(st.booleans()):  # a token for this path made with another key
                value = _csrf_mac(b"wrong", COOKIE, path)
            elif key in GOOD_VALUES and draw(st.booleans()):
                value = draw(st.sampled_from(GOOD_VALUES[key]))
            else:
                value = draw(text)
            pairs.append((key, value))
    style = draw(st.sampled_from(["urlencoded", "urlencoded", "urlencoded", "multipart", "multipart", "raw"]))
    if style == "urlencoded":
        body = b"&".join(quote_from_bytes(utf8(k), safe="").encode() + b"=" + quote_from_bytes(utf8(v), safe="")
                         .encode() for k, v in pairs)
        return b"application/x-www-form-urlencoded", body
    if style == "multipart":
        parts = []
        for k, v in pairs:
            filename = b'; filename="a.txt"' if draw(one_in(10)) else b""
            parts.append(b'--fz\r\nContent-Disposition: form-data; name="' + utf8(k).replace(b'"', b"%22") + b'"'
                         + filename + b"\r\n\r\n" + utf8(v) + b"\r\n")
        return b"multipart/form-data; boundary=fz", b"".join(parts) + draw(st.sampled_from([b"--fz--\r\n", b"", b"--"]))
    ctype = draw(st.sampled_from([b"application/x-www-form-urlencoded", b"multipart/form-data",
                                  b"multipart/form-data; boundary=", b"application/json", b"text/plain", b""]))
    return ctype, draw(raw_bytes | json_text.map(utf8))


KEY_HOLDER: dict[str, bytes] = {}  # the site's signing key, for the strategies (set per test)


def endpoints(app) -> list[tuple[Route, str]]:
    """Every (route, method) of the app but the webhooks; a POST three times
    (that is where the input is)."""
    out = []
    for route in app.routes:
        if isinstance(route, Route) and not route.path.startswith("/webhooks/"):
            for method in sorted(route.methods or ["GET"]):
                out += [(route, method)] * (3 if method == "POST" else 1)
    return out


@st.composite
def page_request(draw, endpoints: list[tuple[Route, str]], tokens: dict[str, str]):
    route, method = draw(st.sampled_from(endpoints))
    if draw(one_in(8)):  # a method the route does not take
        method = draw(st.sampled_from(["PUT", "DELETE", "PATCH", "OPTIONS", "POST", "GET"]))
    path = ROUTE_PARAM.sub(lambda m: "\0" + m.group(1) + "\0", route.path)
    pieces = path.split("\0")
    for i in range(1, len(pieces), 2):
        pieces[i] = quote(utf8(draw(path_value(pieces[i], tokens, route.path.split("/")[1]))), safe="")
    raw_path = "".join(pieces).encode()
    query = draw(st.sampled_from([b"", b"saved=1"]) | text.map(lambda t: quote_from_bytes(utf8(t), safe="=&").encode()))
    headers = [(b"user-agent", draw(header_value))]
    cookie = COOKIE if draw(GOOD_MOSTLY) else draw(st.sampled_from(["", "short"]) | text)
    if cookie:
        headers.append((b"cookie", b"nl_csrf=" + utf8(cookie).replace(b"\n", b"").replace(b"\r", b"")))
    if draw(st.booleans()):  # the client is a trusted proxy: this header names the reader
        headers.append((b"x-forwarded-for", draw(st.sampled_from([b"203.0.113.5", b"10.0.0.1, ::1"]) | header_value)))
    body = b""
    if method in ("POST", "PUT", "PATCH"):
        ctype, body = draw(form_body(unquote(raw_path.decode())))
        if ctype:
            headers.append((b"content-type", ctype))
    return method, raw_path, query, headers, body


@FUZZ
@given(data=st.data())
def _pages(target: Target, data) -> None:
    method, raw_path, query, headers, body = data.draw(page_request(endpoints(target.site.client.app),
                                                                    target.tokens))
    answer = target.asgi(method, raw_path, query, headers, body)
    target.check(method, raw_path, answer)


def test_no_page_request_gives_a_5xx_or_changes_anything_it_refuses(target):
    site = target.site
    site.cli("article", "add", "--field", "education", "--title", "県立高校の入試日程を公表",
             "--url", "https://news.example.jp/edu/1")
    site.cli("edition", "send", "weekly")  # one edition in the archive
    assert sign_up(site, "pending@example.jp").status_code == 200  # a confirmation link that works
    target.tokens["confirm"] = link_in(site.last_mail("pending@example.jp"), "confirm").rsplit("/", 1)[1]
    target.before = dump(site.engine)
    KEY_HOLDER["key"] = site.config.secret()
    _pages(target)


# -- webhook requests ----------------------------------------------------------------------------

def hostile(data, good: list) -> Any:
    """Mostly a good value (so that the request gets far), else any JSON value at all."""
    return data.draw(st.sampled_from(good) if data.draw(GOOD_MOSTLY) else json_value)


def mostly(data, good: Any, bad: st.SearchStrategy) -> Any:
    """``good`` three times in four, else something drawn from ``bad``."""
    return good if data.draw(GOOD_MOSTLY) else data.draw(bad)


def sendgrid_request(data, keys) -> tuple[list, bytes]:
    events = [{"email": hostile(data, ["reader@example.jp", "nobody@example.jp"]),
               "event": hostile(data, ["bounce", "dropped", "spamreport", "delivered", "unsubscribe"]),
               "type": hostile(data, ["bounce", "blocked"]), "status": hostile(data, ["5.1.1", "4.0.0"]),
               "reason": hostile(data, ["Bounced Address", "Spam Reporting Address"]),
               "sg_event_id": hostile(data, ["sg-1", None])} for _ in range(data.draw(st.integers(0, 3)))]
    body = utf8(mostly(data, json.dumps(events, ensure_ascii=data.draw(st.booleans())), json_text
                       | st.sampled_from(RAW_JSON).map(lambda raw: splice([{"email": "__HOLE__"}], raw))))
    timestamp = mostly(data, str(int(time.time())).encode(),
                       st.sampled_from([b"", b"\xb2", b"0", b"9" * 40]) | header_value)
    if data.draw(GOOD_MOSTLY):  # signed with the right key, as the server will read the header
        signed = timestamp.decode("latin-1").encode() + body
        signature = base64.b64encode(keys["ec"].sign(signed, ec.ECDSA(hashes.SHA256())))
    else:
        signature = data.draw(header_value)
    return [(b"x-twilio-email-event-webhook-signature", signature),
            (b"x-twilio-email-event-webhook-timestamp", timestamp)], body


def mailgun_request(data, keys) -> tuple[list, bytes]:
    timestamp = hostile(data, [str(int(time.time())), int(time.time()), "²", "0"])
    token = hostile(data, ["t" * 50, ""])
    try:
        text_signed = (str(timestamp) + str(token)).encode()
        signature = hmac.new(MG_KEY.encode(), text_signed, hashlib.sha256).hexdigest()
    except (UnicodeEncodeError, ValueError):  # a lone surrogate; an int too long for str()
        signature = "00"
    signature = mostly(data, signature, st.sampled_from([signature.upper(), "署名"]) | json_value)
    event = {"event": hostile(data, ["failed", "complained", "unsubscribed", "delivered"]),
             "severity": hostile(data, ["permanent", "temporary"]),
             "recipient": hostile(data, ["reader@example.jp", "すずき@example.jp"]),
             "id": hostile(data, ["mg-1"]), "timestamp": hostile(data, [1521233195.375]),
             "delivery-status": hostile(data, [{"code": 550}])}
    payload = {"signature": {"timestamp": timestamp, "token": token, "signature": signature},
               "event-data": data.draw(st.sampled_from([event]) | json_value)}
    try:
        body = json.dumps(payload, ensure_ascii=data.draw(st.booleans()))
    except ValueError:  # an int too long for Python to write: send one anyway
        body = '{"signature": {"timestamp": ' + "9" * 5000 + "}}"
    body = mostly(data, body, json_text
                  | st.sampled_from(RAW_JSON).map(lambda raw: splice({"signature": "__HOLE__"}, raw)))
    return [], utf8(body)


def postmark_request(data, keys) -> tuple[list, bytes]:
    auth = mostly(data, PM_AUTH, st.sampled_from([b"Basic !!!", b"Basic " + "署名".encode()]) | header_value)
    payload = {"RecordType": hostile(data, ["Bounce", "SpamComplaint", "SubscriptionChange"]),
               "Type": hostile(data, ["HardBounce", "SoftBounce", "SpamComplaint"]),
               "Email": hostile(data, ["reader@example.jp", "x@例え.jp"]), "ID": hostile(data, [42]),
               "SuppressSending": hostile(data, [True]), "SuppressionReason": hostile(data, ["HardBounce"]),
               "BouncedAt": hostile(data, ["2014-08-01T13:28:10.2735393-04:00"])}
    body = mostly(data, json.dumps(payload, ensure_ascii=data.draw(st.booleans())), json_text)
    return [(b"authorization", auth)], utf8(body)


def ses_request(data, keys) -> tuple[list, bytes]:
    recipients = hostile(data, [[{"emailAddress": "reader@example.jp", "status": "5.1.1"}], [], 5])
    note = {**SES_BOUNCE, "notificationType": hostile(data, ["Bounce", "Complaint"]),
            "bounce": hostile(data, [{**SES_BOUNCE["bounce"], "bouncedRecipients": recipients}]),
            "complaint": hostile(data, [{"complainedRecipients": recipients}])}
    try:
        message_text = json.dumps(note, ensure_ascii=data.draw(st.booleans()))
    except ValueError:
        message_text = "9" * 5000
    over = {name: hostile(data, [good]) for name, good in (
        ("Type", "Notification"), ("MessageId", "m-1"), ("Timestamp", sns_message()["Timestamp"]),
        ("SigningCertURL", CERT_URL), ("TopicArn", TOPIC), ("SignatureVersion", "2"))
        if data.draw(one_in(4))}
    msg = sns_message(None, version="2", **over)
    msg["Message"] = mostly(data, message_text, json_text)
    try:
        msg["Signature"] = base64.b64encode(keys["rsa"].sign(sns_string_to_sign(msg), padding.PKCS1v15(),
                                                             hashes.SHA256())).decode()
    except Exception:  # a message SNS could not have signed: sent with any signature
        msg["Signature"] = hostile(data, ["AAAA", "署名"])
    msg["Signature"] = mostly(data, msg["Signature"], st.sampled_from(["AAAA", "署名"]) | json_value)
    body = mostly(data, json.dumps(msg, ensure_ascii=data.draw(st.booleans())), json_text
                  | st.sampled_from(RAW_JSON).map(lambda raw: splice({**msg, "Type": "__HOLE__"}, raw)))
    headers = [(b"x-amz-sns-message-type", mostly(data, utf8(str(msg.get("Type"))), header_value))]
    return headers, utf8(body)


WEBHOOKS = {"sendgrid": sendgrid_request, "mailgun": mailgun_request, "postmark": postmark_request,
            "ses": ses_request}


@FUZZ
@given(data=st.data())
def _webhooks(target: Target, keys: dict, data) -> None:
    provider = data.draw(st.sampled_from(sorted(WEBHOOKS)))
    headers, body = WEBHOOKS[provider](data, keys)
    ctype = data.draw(st.sampled_from([b"application/json", b"text/plain; charset=UTF-8", b""]))
    method = data.draw(st.sampled_from(["POST"] * 5 + ["GET", "PUT"]))
    raw_path = f"/webhooks/{provider}".encode()
    if data.draw(one_in(10)):  # a webhook we do not have
        raw_path = b"/webhooks/" + quote(utf8(data.draw(text)), safe="").encode()
    headers = [*headers, (b"content-type", ctype)] if ctype else headers
    answer = target.asgi(method, raw_path, b"", headers, body)
    target.check(method, raw_path, answer)


def test_no_webhook_request_gives_a_5xx_or_changes_anything_it_refuses(target, ec_key, rsa_cert):  # noqa: F811
    _webhooks(target, {"ec": ec_key, "rsa": rsa_cert[0]})
