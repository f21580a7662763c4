"""The HTTP providers (SendGrid, Mailgun, Postmark, Amazon SES) against local servers
that enforce each service's documented contract (tests/http_servers.py; the pages
they follow are cited there), never against a patched ``requests``.

For every provider: success with the personal parts right (plain in the text,
escaped in the HTML), refused credentials, a recipient refused inside a batch,
429 with Retry-After, 500, no answer (read timeout, connection refused, dropped
connection), the size limits, and an edition for 5,000 subscribers through the
real pipeline riding out a 429 storm and a 500 in one run.  Then the pure steps on their own,
the SigV4 signer against AWS's published test suite, the configuration errors,
and a third-party provider package installed with pip.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import insert, select

from newsletter.config import load_config
from newsletter.delivery import deliver
from newsletter.editions import creation
from newsletter.editions.compose import Recipient, Sending, compose
from newsletter.editions.render import Rendered
from newsletter.errors import ConfigError
from newsletter.interfaces import OutgoingMessage, Provider
from newsletter.links import Placeholders, server_key
from newsletter.providers import load_provider
from newsletter.providers.http import (
    HTTPRequest,
    HTTPResponse,
    classify_status,
    display_address,
    parse_retry_after,
    split_by,
)
from newsletter.providers.mailgun import MailgunProvider, multipart
from newsletter.providers.postmark import PostmarkProvider
from newsletter.providers.sendgrid import SendGridProvider
from newsletter.providers.ses import SESProvider, canonical_request, error_type, sign_v4
from newsletter.store import open_engine
from newsletter.store.tables import deliveries, subscribers, utcnow
from tests.conftest import CLI, ROOT, write_config
from tests.http_servers import (
    MailgunServer,
    PostmarkServer,
    SendGridServer,
    SESServer,
    free_port,
    http_date,
    parse_multipart,
)

PROVIDERS = ["sendgrid", "mailgun", "postmark", "ses"]
NOW = datetime(2026, 12, 1, 0, 3, 27, tzinfo=UTC)

SENDING = Sending(
    edition_id=7, edition_stamp=1796079600, publication_slug="weekly", publication_title="週刊 地方行政ニュース",
    timezone="Asia/Tokyo", from_name="地方行政ニュース編集部", from_address="magazine@news.example.jp",
    reply_to="henshu@news.example.jp", envelope_from="bounces@news.example.jp",
    base_url="https://news.example.jp", domain="news.example.jp",
    unsubscribe_mailto="unsubscribe@news.example.jp", key=b"http-provider-test-key-0123456789",
)
MARKS = Placeholders.new()
GREETING, UNSUBSCRIBE_URL, PREFERENCES_URL = MARKS.all()
HTML = Rendered(
    subject="【週刊 地方行政ニュース】第12号",
    html=(f'<html><body><p class="greeting">{GREETING}</p><p>今週は防災特集です &amp; 教育の話題。</p>'
          f'<a href="{UNSUBSCRIBE_URL}">配信停止</a> <a href="{PREFERENCES_URL}">配信設定</a></body></html>'),
    text=(f"{GREETING}\n\n今週は防災特集です & 教育の話題。\n\n"
          f"配信停止: {UNSUBSCRIBE_URL}\n配信設定: {PREFERENCES_URL}\n"),
    article_ids=(1, 2), language="ja", placeholders=MARKS,
)
TEXT = Rendered(HTML.subject, None, HTML.text, HTML.article_ids, "ja", placeholders=MARKS)
# Markup characters in the name: the HTML must get them escaped, the text as they are.
NAME = "<山田 & 太郎>"


def message(i: int, *, kind: str = "html", email: str | None = None) -> OutgoingMessage:
    rendered = TEXT if kind == "text" else HTML
    charset = "iso-2022-jp" if kind == "iso" else "utf-8"
    return compose(rendered, Recipient(i, 1000 + i, email or f"reader{i:05d}@example.jp", f"{NAME} {i}"),
                   SENDING, charset=charset, now=NOW)


def batch(n: int, start: int = 1, kind: str = "html") -> list[OutgoingMessage]:
    return [message(i, kind=kind) for i in range(start, start + n)]


# --------------------------------------------------------------------------- the kit


@dataclass
class Kit:
    """A running contract server and the [provider] options that point at it."""

    kind: str
    server: Any
    options: dict[str, Any]
    tag: str                       # where the server shows our delivery id
    env: dict[str, str] = field(default_factory=dict)

    def provider(self, **changes: Any):
        return load_provider(self.kind, {**self.options, **changes}, Path("."))

    def toml(self, **extra: Any) -> str:
        lines = ["[provider]", f'kind = "{self.kind}"']
        for key, value in {**self.options, **extra}.items():
            lines.append(f"{key} = {json.dumps(value)}")
        return "\n".join(lines) + "\n"


def make_kit(kind: str, monkeypatch) -> Kit:
    if kind == "sendgrid":
        server = SendGridServer(api_key="SG.test-key")
        env = {"NL_TEST_SENDGRID_KEY": server.api_key}
        options = {"api_key_env": "NL_TEST_SENDGRID_KEY"}
        tag = "nl_delivery_id"
    elif kind == "mailgun":
        server = MailgunServer(api_key="key-test", domain="mg.news.example.jp")
        env = {"NL_TEST_MAILGUN_KEY": server.api_key}
        options = {"api_key_env": "NL_TEST_MAILGUN_KEY", "domain": server.domain}
        tag = "nl-delivery-id"
    elif kind == "postmark":
        server = PostmarkServer(token="pm-server-token")
        env = {"NL_TEST_POSTMARK_TOKEN": server.token}
        options = {"api_key_env": "NL_TEST_POSTMARK_TOKEN"}
        tag = "nl_delivery_id"
    else:
        server = SESServer(access_key="AKIDTESTKEY", secret_key="test/secret/KEY", region="ap-northeast-1",
                           session_token="session-token-123")
        env = {"NL_TEST_AWS_ID": server.access_key, "NL_TEST_AWS_SECRET": server.secret_key,
               "NL_TEST_AWS_TOKEN": "session-token-123"}
        options = {"access_key_id_env": "NL_TEST_AWS_ID", "secret_access_key_env": "NL_TEST_AWS_SECRET",
                   "session_token_env": "NL_TEST_AWS_TOKEN", "region": server.region,
                   "configuration_set": "newsletter"}
        tag = "nl_delivery_id"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    server.start()
    options.update(base_url=server.base_url, timeout=5, connect_timeout=2)
    return Kit(kind, server, options, tag, env)


@contextlib.contextmanager
def running(kind: str, monkeypatch) -> Iterator[Kit]:
    kit = make_kit(kind, monkeypatch)
    try:
        yield kit
    finally:
        kit.server.stop()


@pytest.fixture(params=PROVIDERS)
def kit(request, monkeypatch):
    with running(request.param, monkeypatch) as k:
        yield k


def statuses(results) -> dict[int, str]:
    return {r.delivery_id: r.status for r in results}


def lf(text: str | None) -> str | None:
    return None if text is None else text.replace("\r\n", "\n")


# --------------------------------------------------------------------------- success


def test_every_message_once_with_its_personal_parts(kit):
    messages = batch(6) + batch(3, start=7, kind="text") + batch(2, start=10, kind="iso")
    provider = kit.provider()
    assert isinstance(provider, Provider)
    results = provider.send(messages)
    provider.close()

    assert [r.delivery_id for r in results] == [m.delivery_id for m in messages]
    assert all(r.status == "accepted" and r.provider_id for r in results), [r.reply for r in results]
    delivered = {d.recipient: d for d in kit.server.delivered}
    assert sorted(kit.server.recipients()) == sorted(m.recipient for m in messages)  # each exactly once
    expected = {"sendgrid": 3, "mailgun": 4, "postmark": 1, "ses": 11}[kit.kind]
    assert kit.server.requests == expected

    for m in messages:
        d = delivered[m.recipient]
        assert d.tags[kit.tag] == str(m.delivery_id)
        assert d.subject == HTML.subject
        assert NAME in d.to_name
        if kit.kind in ("ses",) or (kit.kind == "mailgun" and m.headers["Charset"] != "utf-8"):
            # The composed bytes went as they are: ISO-2022-JP stays ISO-2022-JP.
            assert d.raw == m.data
            assert f'charset="{m.headers["Charset"].upper()}"'.encode() in d.raw
        text, markup = lf(d.text), lf(d.html)
        assert text == m.personal_text()
        assert f"{NAME} {m.delivery_id} 様" in text  # plain in the text...
        if m.content.html is None:
            assert markup is None
        else:
            assert markup == m.personal_html()
            assert f"&lt;山田 &amp; 太郎&gt; {m.delivery_id} 様" in markup  # ...escaped in the HTML
        unsubscribe = m.personal[UNSUBSCRIBE_URL]
        assert unsubscribe in d.headers["List-Unsubscribe"]
        assert "List-Unsubscribe=One-Click" in d.headers["List-Unsubscribe-Post"]
        assert "weekly.news.example.jp" in d.headers["List-Id"]


def test_same_recipient_twice_in_a_batch_goes_in_separate_requests(kit):
    messages = [message(1, email="twice@example.jp"), message(2, email="twice@example.jp"), message(3)]
    results = kit.provider().send(messages)
    assert set(statuses(results).values()) == {"accepted"}
    assert Counter(kit.server.recipients())["twice@example.jp"] == 2
    if kit.kind in ("sendgrid", "mailgun"):  # they refuse an address twice in one request
        assert kit.server.requests == 2


# --------------------------------------------------------------------------- refusals


def test_refused_credentials_stop_the_run_before_anything_is_lost(kit):
    kit.server.fail_next(1, 401)
    provider = kit.provider()
    option = "access_key_id_env" if kit.kind == "ses" else "api_key_env"
    with pytest.raises(ConfigError, match=rf"^provider\.{option}: .*refused"):
        provider.send(batch(3))
    assert kit.server.delivered == []


def test_refused_credentials_after_a_success_are_transient(kit):
    # Raising now would lose the first request's results; the rest waits instead.
    messages = batch(2) + batch(2, start=3, kind="text")
    kit.server.fail_next(1, 401, after=1)
    results = kit.provider(max_batch=2).send(messages)  # at least two requests
    got = statuses(results)
    assert "accepted" in got.values() and "transient" in got.values()
    assert set(got.values()) <= {"accepted", "transient"}
    assert sorted(kit.server.recipients()) == sorted(m.recipient for m in messages if got[m.delivery_id]
                                                     == "accepted")


def test_a_refused_recipient_fails_alone_and_the_rest_go(kit):
    messages = batch(10)
    bad = {messages[2].recipient, messages[7].recipient}
    kit.server.reject(*bad)
    results = kit.provider().send(messages)
    for m, r in zip(messages, results, strict=True):
        if m.recipient in bad:
            assert r.status == "permanent", r
        else:
            assert r.status == "accepted", r
    assert sorted(kit.server.recipients()) == sorted(m.recipient for m in messages if m.recipient not in bad)
    refused = [r for m, r in zip(messages, results, strict=True) if m.recipient in bad]
    replies = [r.reply for r in refused]
    # The service's own words in the log, never a made-up SMTP code; "bad address" is a typed field.
    assert not any(r[:1].isdigit() and r[1:2] == "." for r in replies), replies
    assert not any(r.bad_address for m, r in zip(messages, results, strict=True) if m.recipient not in bad)
    if kit.kind == "sendgrid":
        # SendGrid names the personalization: the others went again at once, in one request.
        assert kit.server.requests == 2
        assert all(r.startswith("400: ") and "personalizations." in r for r in replies)
        assert all(r.bad_address for r in refused)
    elif kit.kind == "mailgun":
        # Mailgun's 400 names nobody: halves until the culprits stand alone.
        assert 2 < kit.server.requests <= 1 + 2 * 2 * 4
        assert all(r.startswith("400 ") and "'to' parameter" in r for r in replies)
        assert all(r.bad_address for r in refused)
    elif kit.kind == "postmark":
        # One request, one result per message: exactly which ones went.
        assert kit.server.requests == 1
        assert all(r.startswith("Postmark ErrorCode 406") for r in replies)
        assert all(r.bad_address for r in refused)
    else:
        assert kit.server.requests == 10
        assert all("MessageRejected" in r for r in replies)
        assert not any(r.bad_address for r in refused)  # SES says "rejected", not "no such address"


def test_a_request_refused_as_such_is_permanent(kit):
    # A validation error that is about the request, not about one recipient.
    status = 422 if kit.kind == "postmark" else 400
    kit.server.fail_next(1, status)
    results = kit.provider().send(batch(2))
    # SES: one request per message, so the second message has a request of its own.
    expected = ["permanent", "accepted"] if kit.kind == "ses" else ["permanent", "permanent"]
    assert [r.status for r in results] == expected
    assert results[0].reply.startswith(str(status))
    assert len(kit.server.delivered) == expected.count("accepted")


def test_sendgrid_400_names_fields():
    with SendGridServer() as server:
        provider = SendGridProvider(server.api_key, server.base_url)
        request = provider.build_payload(batch(2))
        mail = json.loads(request.body)
        mail["personalizations"][1]["to"][0]["email"] = "not-an-address"
        del mail["from"]
        r = requests.post(server.base_url + "/v3/mail/send", data=json.dumps(mail), headers=request.headers)
    assert r.status_code == 400
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {"personalizations.1.to.0.email", "from.email"}


# --------------------------------------------------------------------------- rate limits, 5xx


def test_429_is_transient_with_retry_after_and_stops_the_batch(kit):
    provider = kit.provider()
    kit.server.fail_next(1, 429, retry_after=120)
    messages = batch(4) + batch(4, start=5, kind="text")
    results = provider.send(messages)
    assert {r.status for r in results} == {"transient"}
    assert all(r.throttled and not r.server_error for r in results)  # about the service, not the readers
    assert {r.retry_after for r in results} == {120.0}
    assert kit.server.requests == 1  # the rest of the batch was not tried against a rate limit
    assert kit.server.delivered == []
    assert results[0].reply.startswith("429")
    if kit.kind != "postmark":  # Postmark had all eight in its one request
        assert results[-1].reply.startswith("not sent: earlier in this batch: 429")

    # Retry-After as an HTTP-date.
    kit.server.fail_next(1, 429, retry_after=http_date(90))
    [result] = provider.send(batch(1))
    assert result.status == "transient" and 85 <= result.retry_after <= 91


def test_sendgrid_429_without_retry_after_uses_the_rate_limit_reset():
    with SendGridServer() as server:
        server.fail_next(1, 429)  # X-RateLimit-Reset: now + 60, as SendGrid documents
        [result] = SendGridProvider(server.api_key, server.base_url).send(batch(1))
    assert result.status == "transient" and 55 <= result.retry_after <= 61


def test_500_is_transient_and_the_next_send_goes_through(kit):
    provider = kit.provider()
    kit.server.fail_next(1, 500)
    results = provider.send(batch(3))
    assert {r.status for r in results} == {"transient"}
    assert all(r.retry_after is None for r in results)
    assert all(r.server_error and not r.throttled for r in results)
    assert results[0].reply.startswith("500")
    assert kit.server.delivered == []
    assert {r.status for r in provider.send(batch(3))} == {"accepted"}
    assert len(kit.server.delivered) == 3


# --------------------------------------------------------------------------- no answer


def test_no_answer_in_time_is_unknown(kit):
    # The request went out whole; the service may have taken it (here it did).
    kit.server.stall_next(1, 0.6)
    results = kit.provider(timeout=0.2).send(batch(2))
    assert results[0].status == "unknown" and "may have been accepted" in results[0].reply
    assert results[1].status in ("transient", "unknown")
    deadline = time.monotonic() + 5
    while not kit.server.delivered and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kit.server.delivered  # the late answer said "accepted"; nobody heard it


def test_connection_refused_is_transient(kit):
    provider = kit.provider(base_url=f"http://127.0.0.1:{free_port()}")
    results = provider.send(batch(3))
    assert {r.status for r in results} == {"transient"}
    assert "cannot reach 127.0.0.1" in results[0].reply


def test_a_dropped_connection_is_transient(kit):
    kit.server.drop_next(1)
    provider = kit.provider()
    results = provider.send(batch(2))
    assert {r.status for r in results} == {"transient"}
    assert {r.status for r in provider.send(batch(2))} == {"accepted"}  # a fresh connection works


# --------------------------------------------------------------------------- size limits


LIMITS = {"sendgrid": 1000, "mailgun": 1000, "postmark": 500}


@pytest.mark.parametrize("kind", ["sendgrid", "mailgun", "postmark"])
def test_batches_never_exceed_the_service_limit(kind, monkeypatch):
    with running(kind, monkeypatch) as kit:
        limit = LIMITS[kind]
        messages = batch(2 * limit + 37)
        results = kit.provider().send(messages)  # more than one request's worth in one call
        assert {r.status for r in results} == {"accepted"}
        assert len(kit.server.delivered) == len(messages)
        assert kit.server.requests == 3


@pytest.mark.parametrize("kind", ["sendgrid", "mailgun", "postmark"])
def test_413_splits_the_request_in_halves(kind, monkeypatch):
    with running(kind, monkeypatch) as kit:
        kit.server.fail_next(1, 413)
        results = kit.provider().send(batch(10))
        assert {r.status for r in results} == {"accepted"}
        assert kit.server.requests == 3 and len(kit.server.delivered) == 10


def test_the_servers_refuse_oversized_requests():
    """The contract servers enforce the limits our batching must respect."""
    with SendGridServer() as sg:
        request = SendGridProvider(sg.api_key, sg.base_url).build_payload(batch(1))
        mail = json.loads(request.body)
        mail["personalizations"] = [{"to": [{"email": f"r{i}@example.jp"}]} for i in range(1001)]
        r = requests.post(sg.base_url + "/v3/mail/send", data=json.dumps(mail), headers=request.headers)
        assert r.status_code == 400 and "limited to 1000 personalizations" in r.json()["errors"][0]["message"]
    with PostmarkServer() as pm:
        provider = PostmarkProvider(pm.token, pm.base_url)
        request = provider.build_payload(batch(1))
        one = json.loads(request.body)[0]
        r = requests.post(pm.base_url + "/email/batch", data=json.dumps([one] * 501), headers=request.headers)
        assert r.status_code == 422 and r.json()["ErrorCode"] == 410
    with MailgunServer() as mg:
        provider = MailgunProvider(mg.api_key, mg.domain, mg.base_url)
        fields = [("from", "a@news.example.jp"), ("subject", "s"), ("text", "t"),
                  ("recipient-variables", json.dumps({f"r{i}@example.jp": {} for i in range(1001)}))]
        fields += [("to", f"r{i}@example.jp") for i in range(1001)]
        body, ctype = multipart(fields)
        r = requests.post(f"{mg.base_url}/v3/{mg.domain}/messages", data=body,
                          headers={"Content-Type": ctype, "Authorization": provider.build_payload(
                              batch(1)).headers["Authorization"]})
        assert r.status_code == 400 and "1000" in r.json()["message"]
    with SESServer() as ses:
        provider = SESProvider(ses.access_key, ses.secret_key, ses.region, base_url=ses.base_url)
        request = provider.build_payload(batch(1))
        payload = json.loads(request.body)
        payload["Destination"]["ToAddresses"] = [f"r{i}@example.jp" for i in range(51)]
        signed = provider.finalize(HTTPRequest("POST", request.url, request.headers, json.dumps(payload).encode(),
                                               request.messages))
        r = requests.post(request.url, data=signed.body, headers=dict(signed.headers))
        assert r.status_code == 400 and r.headers["x-amzn-ErrorType"].startswith("MessageRejected")


def test_messages_too_big_for_the_service_fail_without_a_request(monkeypatch):
    for kind, size in (("ses", 31 * 1024 * 1024), ("postmark", 10_000_001)):
        with running(kind, monkeypatch) as kit:
            big = message(1)
            if kind == "ses":  # SES takes our MIME as it is
                big = OutgoingMessage(**{**big.__dict__, "data": big.data + b"x" * size})
            else:  # Postmark takes JSON built from the parts (our MIME is never built for it)
                big = dataclasses.replace(big, content=dataclasses.replace(big.content, text="x" * size))
            results = kit.provider().send([big, message(2)])
            assert [r.status for r in results] == ["permanent", "accepted"]
            assert results[0].reply.startswith("local: the message is")
            assert kit.server.recipients() == [message(2).recipient]


# --------------------------------------------------------------------------- provider specifics


def test_mailgun_mime_mode_sends_each_message_as_composed(monkeypatch):
    with running("mailgun", monkeypatch) as kit:
        messages = batch(3)
        results = kit.provider(mode="mime").send(messages)
        assert {r.status for r in results} == {"accepted"}
        assert kit.server.requests == 3
        assert sorted(d.raw for d in kit.server.delivered) == sorted(m.data for m in messages)


def test_mailgun_unknown_domain_is_a_configuration_error(monkeypatch):
    with running("mailgun", monkeypatch) as kit:
        with pytest.raises(ConfigError, match=r"^provider\.domain: Mailgun does not know the domain 'mg.other.jp'"):
            kit.provider(domain="mg.other.jp").send(batch(1))


def test_ses_bad_signature_and_unknown_configuration_set(monkeypatch):
    with running("ses", monkeypatch) as kit:
        monkeypatch.setenv("NL_TEST_AWS_SECRET", "wrong/secret")
        with pytest.raises(ConfigError, match=r"SignatureDoesNotMatch"):
            kit.provider().send(batch(1))
        monkeypatch.setenv("NL_TEST_AWS_SECRET", kit.server.secret_key)
        with pytest.raises(ConfigError, match=r"^provider\.configuration_set: .*does not exist"):
            kit.provider(configuration_set="nope").send(batch(1))
        assert kit.server.delivered == []


def test_postmark_per_message_codes():
    provider = PostmarkProvider("t", "http://127.0.0.1:9")
    messages = batch(4)
    request = provider.build_payload(messages)
    answer = [{"ErrorCode": 0, "Message": "OK", "MessageID": "m-1"},
              {"ErrorCode": 406, "Message": "inactive"},
              {"ErrorCode": 405, "Message": "Not allowed to send: out of credits"}]  # and none for the 4th
    outcome = provider.parse_results(request, HTTPResponse(200, {}, json.dumps(answer).encode()))
    assert [r.status for r in outcome.results] == ["accepted", "permanent", "transient", "unknown"]
    assert outcome.results[0].provider_id == "m-1"
    assert outcome.results[1].reply.startswith("Postmark ErrorCode 406") and outcome.results[1].bad_address
    assert not any(r.bad_address for i, r in enumerate(outcome.results) if i != 1)


def test_a_postmark_inactive_recipient_bounces_the_subscriber_by_the_typed_field(tmp_path, monkeypatch):
    """The engine learns "bad address" from SendResult.bad_address, not from reply
    text: Postmark's ErrorCode 406 suppresses the subscriber, and neither the log nor
    the reply carries a made-up SMTP code."""
    from newsletter import subscribers as subs
    from newsletter.store.tables import consents

    with running("postmark", monkeypatch) as kit:
        cli = CLI(write_config(tmp_path / "p", f"sqlite:///{tmp_path / 'p' / 'db.sqlite'}", provider=kit.toml()))
        cli("init")
        config = load_config(cli.config_path)
        engine = open_engine(config.storage_url)
        for address in ("kyuu@example.jp", "genki@example.jp"):
            subs.add(engine, config, {"email": address, "fields": "education", "name": "試験 次郎"})
        cli("article", "add", "--field", "education", "--title", "公民館の耐震改修が完了",
            "--url", "https://news.example.jp/e/kominkan", "--summary", "改修の概要です。")
        created = creation.create_edition(engine, config, config.publication("weekly"))
        kit.server.reject("kyuu@example.jp")
        report = deliver(engine, config, created.edition_id)
        assert (report.sent, report.failed, report.bounced) == (1, 1, 1)
        assert kit.server.recipients() == ["genki@example.jp"]
        with engine.connect() as conn:
            row = conn.execute(select(deliveries).where(deliveries.c.email == "kyuu@example.jp")).one()
            sub = conn.execute(select(subscribers).where(subscribers.c.email == "kyuu@example.jp")).one()
            consent = conn.execute(select(consents).where(consents.c.subscriber_id == sub.id)
                                   .order_by(consents.c.id.desc())).first()
        assert row.status == "failed" and row.last_reply.startswith("Postmark ErrorCode 406")
        assert "5.1." not in row.last_reply
        assert sub.status == "bounced" and consent.event == "bounced"
        assert consent.detail.startswith("hard bounce: Postmark ErrorCode 406")


def test_postmark_message_carries_our_message_id_and_stream():
    m = message(1)
    body = json.loads(PostmarkProvider("t", "http://x", message_stream="news").build_payload([m]).body)[0]
    assert body["MessageStream"] == "news"
    assert {"Name": "Message-ID", "Value": m.message_id} in body["Headers"]
    assert body["To"] == f'"{NAME} 1" <{m.recipient}>'
    assert body["Metadata"] == {"nl_delivery_id": "1"}


def test_sendgrid_payload_keys_text_and_html_apart():
    messages = batch(2)
    mail = json.loads(SendGridProvider("k", "http://x").build_payload(messages).body)
    text, markup = (c["value"] for c in mail["content"])
    plain, escaped = f"%%{server_key(GREETING)}%%", f"%%{server_key(GREETING, escaped=True)}%%"
    assert plain in text and escaped not in text and escaped in markup and plain not in markup
    assert MARKS.nonce in plain and GREETING not in text + markup
    subs = mail["personalizations"][0]["substitutions"]
    assert subs[plain] == f"{NAME} 1 様"
    assert subs[escaped] == "&lt;山田 &amp; 太郎&gt; 1 様"
    assert mail["personalizations"][1]["custom_args"] == {"nl_delivery_id": "2"}
    assert mail["headers"]["List-Id"].endswith("<weekly.news.example.jp>")
    assert mail["tracking_settings"] == {"subscription_tracking": {"enable": False}}


def test_ses_request_is_signed_and_carries_the_raw_bytes():
    m = message(1, kind="iso")
    when = datetime(2026, 11, 30, 15, 0, tzinfo=UTC).timestamp()
    provider = SESProvider("AKID", "secret", "ap-northeast-1", configuration_set="cs", clock=lambda: when)
    request = provider.finalize(provider.build_payload([m]))
    assert request.url == "https://email.ap-northeast-1.amazonaws.com/v2/email/outbound-emails"
    assert request.headers["X-Amz-Date"] == "20261130T150000Z"
    assert request.headers["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKID/20261130/ap-northeast-1/ses/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, Signature=")
    body = json.loads(request.body)
    assert base64.b64decode(body["Content"]["Raw"]["Data"]) == m.data
    assert body["Destination"] == {"ToAddresses": [m.recipient]}
    assert body["ConfigurationSetName"] == "cs"
    assert error_type(HTTPResponse(400, {"x-amzn-errortype": "MessageRejected:http://internal/"}, b"")) == \
        "MessageRejected"


# --------------------------------------------------------------------------- the pure helpers


@pytest.mark.parametrize(("code", "status"), [
    (200, "accepted"), (202, "accepted"), (400, "permanent"), (404, "permanent"), (413, "permanent"),
    (408, "transient"), (429, "transient"), (500, "transient"), (503, "transient"), (302, "transient"),
])
def test_classify_status(code, status):
    assert classify_status(code) == status


def test_parse_retry_after():
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("Fri, 15 Jan 2027 08:00:30 GMT", 1_800_000_000.0) == pytest.approx(
        datetime(2027, 1, 15, 8, 0, 30, tzinfo=UTC).timestamp() - now)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after("99999999", now) == 24 * 3600.0                # capped
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_split_by_keeps_limits_variants_and_distinct_recipients():
    ms = batch(5) + batch(3, start=6, kind="text") + [message(9, email="reader00001@example.jp")]
    groups = split_by(ms, limit=2, size=lambda m: 1, budget=100, distinct=lambda m: m.recipient)
    assert [[m.delivery_id for m in g] for g in groups] == [[1, 2], [3, 4], [5, 9], [6, 7], [8]]
    by_bytes = split_by(batch(5), limit=100, size=lambda m: 40, budget=100)
    assert [len(g) for g in by_bytes] == [2, 2, 1]


def test_display_address_quotes_names():
    assert display_address("", "a@example.jp") == "a@example.jp"
    assert display_address('Joe "J" Sender, jr', "a@example.jp") == '"Joe \\"J\\" Sender, jr" <a@example.jp>'


def test_multipart_round_trip():
    fields = [("to", "A <a@example.jp>"), ("to", "b@example.jp"), ("text", "本文\r\n--x"),
              ("message", ("m.mime", b"From: a\r\n\r\nbody\r\n", "application/octet-stream"))]
    body, ctype = multipart(fields)
    assert parse_multipart(body, ctype) == [("to", b"A <a@example.jp>"), ("to", b"b@example.jp"),
                                            ("text", "本文\r\n--x".encode()),
                                            ("message", b"From: a\r\n\r\nbody\r\n")]


# --------------------------------------------------------------------------- SigV4


# AWS Signature Version 4 test suite (https://docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html),
# as published in awslabs/aws-c-auth tests/aws-signing-test-suite/v4/<name>/: credentials AKIDEXAMPLE /
# wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, us-east-1, service "service", 2015-08-30T12:36:00Z.
SIGV4_SUITE = [
    ("get-vanilla", "GET", "/", [], b"", None, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("get-vanilla-query-order-key-case", "GET", "/?Param2=value2&Param1=value1", [], b"", None,
     "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ("get-utf8", "GET", "/ሴ", [], b"", None, "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
    ("get-vanilla-utf8-query", "GET", "/?ሴ=bar", [], b"", None,
     "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
    ("get-header-value-trim", "GET", "/", [("My-Header1", " value1"), ("My-Header2", ' "a   b   c"')], b"", None,
     "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
    ("get-header-key-duplicate", "GET", "/",
     [("My-Header1", "value2"), ("My-Header1", "value2"), ("My-Header1", "value1")], b"", None,
     "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"),
    ("get-vanilla-with-session-token", "GET", "/", [], b"",
     "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
     "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"),
    ("post-vanilla", "POST", "/", [], b"", None, "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ("post-x-www-form-urlencoded", "POST", "/", [("Content-Type", "application/x-www-form-urlencoded")],
     b"Param1=value1", None, "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
]


@pytest.mark.parametrize(("name", "method", "target", "headers", "body", "token", "signature"), SIGV4_SUITE,
                         ids=[case[0] for case in SIGV4_SUITE])
def test_sigv4_matches_the_aws_test_suite(name, method, target, headers, body, token, signature):
    added = dict(sign_v4(method, "https://example.amazonaws.com" + target,
                         [("Host", "example.amazonaws.com"), *headers], body,
                         access_key="AKIDEXAMPLE", secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                         region="us-east-1", service="service", when=datetime(2015, 8, 30, 12, 36, tzinfo=UTC),
                         session_token=token))
    assert added["X-Amz-Date"] == "20150830T123600Z"
    assert added["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                                             "aws4_request, SignedHeaders=")
    assert added["Authorization"].endswith(f", Signature={signature}")


def test_sigv4_canonical_request_of_get_vanilla():
    creq, signed = canonical_request("GET", "/", "", [("Host", "example.amazonaws.com"),
                                                      ("X-Amz-Date", "20150830T123600Z")],
                                     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert signed == "host;x-amz-date"
    assert creq == ("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("kind", "options", "message"), [
    ("sendgrid", {"api_key_env": "NL_TEST_UNSET"}, r"provider\.api_key_env: environment variable NL_TEST_UNSET "
                                                   r"is not set"),
    ("sendgrid", {"api_key": "SG.literal"}, r"provider\.api_key: API keys never go in config\.toml"),
    ("sendgrid", {"api_key_env": "NL_TEST_SET", "region": "mars"}, r"provider\.region: must be one of"),
    ("sendgrid", {"api_key_env": "NL_TEST_SET", "max_batch": 1001}, r"provider\.max_batch: must be at most 1000"),
    ("sendgrid", {"api_key_env": "NL_TEST_SET", "base_url": "ftp://x"}, r"provider\.base_url: must be an http"),
    ("mailgun", {"api_key_env": "NL_TEST_SET"}, r"provider\.domain: required"),
    ("mailgun", {"api_key_env": "NL_TEST_SET", "domain": "mg.example.jp", "mode": "smtp"}, r"provider\.mode"),
    ("postmark", {"api_key_env": "NL_TEST_SET", "max_batch": 501}, r"provider\.max_batch: must be at most 500"),
    ("postmark", {"api_key_env": "NL_TEST_SET", "stream": "broadcast"},
     r"provider\.stream: unknown option for the 'postmark' provider"),
    ("ses", {"access_key_id_env": "NL_TEST_SET", "secret_access_key_env": "NL_TEST_SET"}, r"provider\.region: "
                                                                                          r"required"),
    ("ses", {"secret_access_key": "x"}, r"provider\.secret_access_key: credentials never go in config\.toml"),
    ("ses", {"access_key_id_env": "NL_TEST_SET", "secret_access_key_env": "NL_TEST_SET", "region": "x",
             "session_token_env": "NL_TEST_UNSET"}, r"provider\.session_token_env: environment variable"),
])
def test_configuration_errors_name_the_key(kind, options, message, monkeypatch):
    monkeypatch.setenv("NL_TEST_SET", "value")
    monkeypatch.delenv("NL_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError, match=message):
        load_provider(kind, options, Path("."))


def test_regions_and_defaults(monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", "k")
    monkeypatch.setenv("MAILGUN_API_KEY", "k")
    monkeypatch.setenv("POSTMARK_SERVER_TOKEN", "k")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "k")
    assert load_provider("sendgrid", {"region": "eu"}, Path(".")).base_url == "https://api.eu.sendgrid.com"
    mg = load_provider("mailgun", {"domain": "mg.example.jp", "region": "eu"}, Path("."))
    assert mg.base_url == "https://api.eu.mailgun.net" and mg.max_batch == 1000 and mg.mode == "batch"
    pm = load_provider("postmark", {}, Path("."))
    assert pm.message_stream == "broadcast" and pm.max_batch == 500 and pm.base_url == "https://api.postmarkapp.com"
    ses = load_provider("ses", {"region": "ap-northeast-1"}, Path("."))
    assert ses.base_url == "https://email.ap-northeast-1.amazonaws.com" and ses.max_batch == 50
    for p in (mg, pm, ses):
        assert isinstance(p, Provider)


# --------------------------------------------------------------------------- the plug-in seam


def test_a_provider_package_installed_with_pip_sends_an_edition(tmp_path, monkeypatch):
    source = tmp_path / "plugin_acme"
    shutil.copytree(ROOT / "tests" / "plugin_acme", source, ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (site / "acme_provider-1.0.dist-info" / "entry_points.txt").read_text().startswith(
        "[newsletter.providers]\nacme = acme_provider:AcmeProvider")
    monkeypatch.syspath_prepend(str(site))
    try:
        cli = CLI(write_config(tmp_path / "p", f"sqlite:///{tmp_path / 'p' / 'db.sqlite'}",
                               provider='[provider]\nkind = "acme"\noutbox = "acme.jsonl"\n'))
        cli("init")
        cli("subscriber", "import", ROOT / "subscribers" / "sample.csv")
        cli("article", "import", ROOT / "articles" / "sample.json")
        out = cli("edition", "send", "weekly").stdout
        assert "sent 12" in out
        lines = [json.loads(line) for line in (cli.folder / "acme.jsonl").read_text().splitlines()]
        assert len(lines) == 12 and len({line["to"] for line in lines}) == 12
        provider = load_provider("acme", {}, tmp_path)
        assert type(provider).__module__ == "acme_provider" and isinstance(provider, Provider)
    finally:
        sys.modules.pop("acme_provider", None)


# --------------------------------------------------------------------------- end to end


FIELD_SETS = ["local-government", "administration,education", "local-government,administration,education"]
E2E_SUBSCRIBERS = 5000
# SES is one request per message: two connections, as a real SES sender would run.
CONNECTIONS = {"sendgrid": 1, "mailgun": 1, "postmark": 1, "ses": 2}


def _subscribers(n: int) -> list[dict[str, Any]]:
    now = utcnow()
    # One reader in four takes HTML (heavier to compose and, for Postmark, to carry): enough
    # for every variant kind to be in every chunk while the test stays quick.
    return [{"email": f"m{i:05d}@example.jp", "name": f"読者 {i}", "fields": FIELD_SETS[i % 3],
             "format": "html" if i % 4 == 0 else "text", "charset": "iso-2022-jp" if i % 199 == 0 else None,
             "status": "active", "created_at": now, "updated_at": now} for i in range(n)]


@pytest.mark.parametrize("kind", PROVIDERS)
def test_an_edition_for_5000_subscribers_rides_out_a_429_storm_and_a_500_in_one_run(kind, tmp_path, monkeypatch):
    with running(kind, monkeypatch) as kit:
        _edition_run(kit, tmp_path)


def _edition_run(kit: Kit, tmp_path: Path) -> None:
    server = kit.server
    server.render = False  # 5,000 MIME parses would be the slowest part of the test
    batch_size = {"sendgrid": 1000, "mailgun": 1000, "postmark": 500, "ses": 250}[kit.kind]
    table = kit.toml(batch_size=batch_size, max_batch=batch_size, connections=CONNECTIONS[kit.kind])
    cli = CLI(write_config(tmp_path / "p", f"sqlite:///{tmp_path / 'p' / 'db.sqlite'}", provider=table))
    cli("init")
    # Three articles, not the sample's twelve: the pipeline and the batching are the
    # point here, and Postmark would carry 5,000 complete 30 KB messages otherwise.
    articles = tmp_path / "articles.json"
    articles.write_text(json.dumps(json.loads((ROOT / "articles" / "sample.json").read_text("utf-8"))[:3],
                                   ensure_ascii=False), encoding="utf-8")
    cli("article", "import", articles)
    config = load_config(cli.config_path)
    engine = open_engine(config.storage_url)
    people = _subscribers(E2E_SUBSCRIBERS)
    with engine.begin() as conn:
        conn.execute(insert(subscribers), people)
    created = creation.create_edition(engine, config, config.publications[0])
    assert created is not None and created.pending == E2E_SUBSCRIBERS

    # Mid-run: three requests in a row answered 429 (Retry-After 30 s), a little later one 500.
    storm_after, then = {"sendgrid": (2, 3), "mailgun": (2, 3), "postmark": (3, 2), "ses": (1500, 1500)}[kit.kind]
    server.fail_next(3, 429, retry_after=30, after=storm_after)
    server.fail_next(1, 500, after=then)

    # The pauses the throttle and the 500 call for pass on a fake clock, instantly.
    paused: list[float] = []
    pause_clock = [0.0]

    def sleep(seconds: float) -> None:
        paused.append(seconds)
        pause_clock[0] += seconds

    report = deliver(engine, config, created.edition_id, sleep=sleep,
                     monotonic=lambda: time.monotonic() + pause_clock[0])
    assert server.failures_left() == 0  # the storm and the 500 both fell in this run
    # A throttle pauses the run and a server error is tried again: one run, nothing deferred.
    assert report.finished and report.failed == 0 and report.deferred == 0 and report.throttled > 0
    assert report.sent == E2E_SUBSCRIBERS and len(server.delivered) == report.sent
    assert 30 <= sum(paused) < 3 * 30 + 10  # each 429's window (they may overlap on two connections)
    with engine.connect() as conn:
        assert set(conn.execute(select(deliveries.c.attempts)).scalars()) == {1}  # pauses are not attempts

    got = Counter(server.recipients())
    assert set(got) == {p["email"] for p in people} and set(got.values()) == {1}  # everyone, exactly once
    tags = {d.tags[kit.tag] for d in server.delivered}
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.id, deliveries.c.status, deliveries.c.provider_id)).all()
    assert {r.status for r in rows} == {"sent"} and all(r.provider_id for r in rows)
    assert tags == {str(r.id) for r in rows}  # each message carried its own delivery id

    requests_made = server.requests
    if kit.kind == "ses":
        # One request per message by design: the sent ones, plus those refused in the storm.
        assert requests_made == E2E_SUBSCRIBERS + 4
    else:
        # Batched: a few dozen requests for 5,000 readers (variants x chunks, ISO-2022-JP ones alone
        # on Mailgun), however the storm fell.
        assert requests_made <= {"sendgrid": 100, "mailgun": 100, "postmark": 20}[kit.kind], requests_made


# -- numbers in a provider's headers are ASCII digits (limits helper, issue 16 notes) ------------


def test_a_retry_after_of_superscript_two_is_unreadable_not_a_crash(kit):
    # '²'.isdigit() is true and int('²') fails: the header is simply not a number.
    assert parse_retry_after("²", 0.0) is None and parse_retry_after("１２０", 0.0) is None
    provider = kit.provider()
    kit.server.fail_next(1, 429, retry_after="²")
    results = provider.send(batch(2))
    assert {r.status for r in results} == {"transient"} and all(r.throttled for r in results)
    if kit.kind == "sendgrid":  # no readable Retry-After: X-RateLimit-Reset (now + 60) says when
        assert all(55 <= r.retry_after <= 61 for r in results)
    else:
        assert all(r.retry_after is None for r in results)


def test_sendgrid_429_with_a_non_ascii_rate_limit_reset_is_a_throttle_without_a_window():
    with SendGridServer() as server:
        server.rate_limit_reset = "²"
        server.fail_next(1, 429)
        [result] = SendGridProvider(server.api_key, server.base_url).send(batch(1))
    assert result.status == "transient" and result.throttled and result.retry_after is None
