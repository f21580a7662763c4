"""Bounce and complaint webhooks: each provider's documented signature or
authentication scheme, checked against keys and certificates made here; a
request that fails it changes nothing; the same event twice changes nothing.

Payload shapes and signature schemes, as documented:
- SendGrid: https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
  and https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
- Mailgun: https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks
  and https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads
- Postmark: https://postmarkapp.com/email-webhooks (HTTP basic auth; no payload signature)
- SES via SNS: https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html,
  https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message-verify-message-signature.html
  and https://docs.aws.amazon.com/ses/latest/dg/notification-examples.html
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select, update

from newsletter.store.tables import consents, deliveries, mail_events, subscribers
from newsletter.web.webhooks import sns_string_to_sign
from tests.test_web import Site, dump, make_site

CERT_URL = "https://sns.ap-northeast-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
TOPIC = "arn:aws:sns:ap-northeast-1:123456789012:ses-bounces"


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_cert():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def hooks(tmp_path, ec_key, rsa_cert, monkeypatch) -> Site:
    public = base64.b64encode(ec_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    certs = tmp_path / "project" / "sns-certs"
    certs.mkdir(parents=True)
    (certs / CERT_URL.rsplit("/", 1)[1]).write_bytes(rsa_cert[1])
    monkeypatch.setenv("MG_SIGNING_KEY", "mailgun-signing-key-123")
    monkeypatch.setenv("PM_WEBHOOK_PASSWORD", "p@ss word")
    extra = f'''
[web.webhooks]
sendgrid_public_key = "{public}"
mailgun_signing_key_env = "MG_SIGNING_KEY"
postmark_username = "postmark"
postmark_password_env = "PM_WEBHOOK_PASSWORD"
ses_certificates = "sns-certs"
ses_topic_arns = ["{TOPIC}"]

[bounces]
soft_limit = 3
soft_window = "7d"
'''
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}", extra=extra)
    for address in ("hard@example.jp", "soft@example.jp", "spam@example.jp", "fine@example.jp"):
        site.cli("subscriber", "add", address, "--fields", "education")
    return site


def statuses(site: Site) -> dict[str, str]:
    return {a: site.subscriber(a).status for a in ("hard@example.jp", "soft@example.jp", "spam@example.jp",
                                                   "fine@example.jp")}


def counts(site: Site) -> tuple[int, int]:
    with site.engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(mail_events)).scalar(),
                conn.execute(select(func.count()).select_from(consents)).scalar())


ALL_ACTIVE = dict.fromkeys(("hard@example.jp", "soft@example.jp", "spam@example.jp", "fine@example.jp"), "active")


# -- SendGrid ----------------------------------------------------------------------

def sendgrid_post(site, key, events, *, timestamp=None, signature=None, body=None):
    body = body if body is not None else json.dumps(events).encode()
    timestamp = str(timestamp or int(time.time()))
    if signature is None:
        signature = base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return site.client.post("/webhooks/sendgrid", content=body, headers={
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    })


SENDGRID_EVENTS = [
    {"email": "hard@example.jp", "timestamp": 1513299569, "event": "bounce", "type": "bounce",
     "status": "5.1.1", "reason": "550 5.1.1 The email account does not exist.", "sg_event_id": "sg-1",
     "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"},
    {"email": "spam@example.jp", "timestamp": 1513299569, "event": "spamreport", "sg_event_id": "sg-2"},
    {"email": "soft@example.jp", "timestamp": 1513299569, "event": "deferred", "response": "400 try again later",
     "attempt": "5", "sg_event_id": "sg-3"},
    {"email": "fine@example.jp", "timestamp": 1513299569, "event": "delivered", "response": "250 OK",
     "sg_event_id": "sg-4"},
    {"email": "soft@example.jp", "timestamp": 1513299569, "event": "bounce", "type": "blocked",
     "status": "4.0.0", "reason": "blocked", "sg_event_id": "sg-5"},
]


def test_sendgrid_signed_events(hooks, ec_key):
    """Signed Event Webhook: ECDSA over timestamp + raw body, base64 DER in
    X-Twilio-Email-Event-Webhook-Signature; events per the Event Webhook Reference."""
    res = sendgrid_post(hooks, ec_key, SENDGRID_EVENTS)
    assert res.status_code == 200, res.text
    assert statuses(hooks) == {**ALL_ACTIVE, "hard@example.jp": "bounced", "spam@example.jp": "complained"}
    before = counts(hooks)
    again = sendgrid_post(hooks, ec_key, SENDGRID_EVENTS)  # a retry: same events
    assert again.status_code == 200 and "3 already seen" in again.text
    assert counts(hooks) == before
    consent = hooks.consents("hard@example.jp")[-1]
    assert (consent.event, consent.source) == ("bounced", "sendgrid") and "5.1.1" in consent.detail


def test_webhooks_follow_the_one_hard_bounce_rule(hooks, ec_key, rsa_cert):
    """A permanent bounce whose code says nothing about the address (5.7.1 policy,
    5.2.2 mailbox full) is soft, as in the engine and the DSN intake; 5.1.x is hard,
    and so is a service's own "permanent" when it gives no code."""
    events = [
        {"email": "spam@example.jp", "event": "bounce", "type": "bounce", "status": "5.7.1",
         "reason": "554 5.7.1 Message rejected as spam", "sg_event_id": "sg-policy"},
        {"email": "soft@example.jp", "event": "bounce", "type": "bounce", "status": "5.2.2",
         "reason": "552 5.2.2 Mailbox full", "sg_event_id": "sg-full"},
    ]
    assert sendgrid_post(hooks, ec_key, events).status_code == 200
    mg = mg_failed("hard@example.jp", "permanent", "mg-policy")
    mg["delivery-status"]["enhanced-code"] = "5.7.1"
    assert mailgun_post(hooks, mg).status_code == 200
    assert statuses(hooks) == ALL_ACTIVE
    with hooks.engine.connect() as conn:
        kinds = set(conn.execute(select(mail_events.c.kind)).scalars())
    assert kinds == {"soft"}
    key, _ = rsa_cert
    ses = {**SES_BOUNCE, "bounce": {**SES_BOUNCE["bounce"], "bouncedRecipients": [
        {"emailAddress": "fine@example.jp", "status": "5.7.1", "action": "failed"},
        {"emailAddress": "hard@example.jp", "status": "5.1.1", "action": "failed"}]}}
    assert post_sns(hooks, sns_message(ses, key=key, MessageId="ses-mixed")).status_code == 200
    assert statuses(hooks) == {**ALL_ACTIVE, "hard@example.jp": "bounced"}


def test_sendgrid_rejects_bad_signatures(hooks, ec_key):
    """A forged, missing or replayed signature changes nothing."""
    other = ec.generate_private_key(ec.SECP256R1())
    before = counts(hooks)
    assert sendgrid_post(hooks, other, SENDGRID_EVENTS).status_code == 403
    body = json.dumps(SENDGRID_EVENTS).encode()
    ts = str(int(time.time()))
    good = base64.b64encode(ec_key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    tampered = body.replace(b"hard@example.jp", b"fine@example.jp")
    assert sendgrid_post(hooks, ec_key, None, timestamp=ts, signature=good, body=tampered).status_code == 403
    assert sendgrid_post(hooks, ec_key, None, timestamp=int(ts) + 1, signature=good, body=body).status_code == 403
    assert sendgrid_post(hooks, ec_key, SENDGRID_EVENTS, signature="bm90IGEgc2lnbmF0dXJl").status_code == 403
    assert sendgrid_post(hooks, ec_key, SENDGRID_EVENTS, signature="%%%").status_code == 403
    old = int(time.time()) - 3 * 86400
    assert sendgrid_post(hooks, ec_key, SENDGRID_EVENTS, timestamp=old).status_code == 403
    res = hooks.client.post("/webhooks/sendgrid", content=body, headers={"Content-Type": "application/json"})
    assert res.status_code == 403 and res.text.startswith("error: signature headers missing")
    # Signed but not what SendGrid sends.
    assert sendgrid_post(hooks, ec_key, None, body=b"{not json").status_code == 400
    assert sendgrid_post(hooks, ec_key, {"email": "x"}).status_code == 400
    assert counts(hooks) == before and statuses(hooks) == ALL_ACTIVE


# -- Mailgun -------------------------------------------------------------------------

def mailgun_post(site, event_data, *, key="mailgun-signing-key-123", timestamp=None, token="t" * 50,
                 signature=None):
    timestamp = str(timestamp or int(time.time()))
    if signature is None:
        signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    payload = {"signature": {"timestamp": timestamp, "token": token, "signature": signature},
               "event-data": event_data}
    return site.client.post("/webhooks/mailgun", json=payload)


def mg_failed(recipient, severity, event_id, code=550):
    return {"event": "failed", "severity": severity, "recipient": recipient, "id": event_id,
            "timestamp": 1521233195.375624, "reason": "bounce" if severity == "permanent" else "generic",
            "log-level": "error", "delivery-status": {"code": code, "message": "mailbox unavailable"},
            "message": {"headers": {"message-id": "20130503182626.18666.16540@news.example.jp"}}}


def test_mailgun_signed_events_and_soft_bounce_limit(hooks):
    """HMAC-SHA256(signing key, timestamp + token) in signature.signature;
    event-data per the webhook payload examples (failed/permanent|temporary, complained)."""
    assert mailgun_post(hooks, mg_failed("hard@example.jp", "permanent", "mg-1")).status_code == 200
    assert mailgun_post(hooks, {"event": "complained", "recipient": "spam@example.jp", "id": "mg-2",
                                "timestamp": 1521233195.1}).status_code == 200
    for i in range(2):
        mailgun_post(hooks, mg_failed("soft@example.jp", "temporary", f"mg-soft-{i}", code=452))
    assert hooks.subscriber("soft@example.jp").status == "active"  # 2 of 3
    mailgun_post(hooks, mg_failed("soft@example.jp", "temporary", "mg-soft-1", code=452))  # a retry of #2
    assert hooks.subscriber("soft@example.jp").status == "active"
    mailgun_post(hooks, mg_failed("soft@example.jp", "temporary", "mg-soft-2", code=452))
    assert statuses(hooks) == {**ALL_ACTIVE, "hard@example.jp": "bounced", "spam@example.jp": "complained",
                               "soft@example.jp": "bounced"}
    assert "3 soft bounces in 7 days" in hooks.consents("soft@example.jp")[-1].detail


def test_mailgun_rejects_bad_signatures(hooks):
    event = mg_failed("hard@example.jp", "permanent", "mg-x")
    before = counts(hooks)
    assert mailgun_post(hooks, event, key="wrong").status_code == 403
    assert mailgun_post(hooks, event, signature="00" * 32).status_code == 403
    assert mailgun_post(hooks, event, timestamp=int(time.time()) - 200_000).status_code == 403
    res = hooks.client.post("/webhooks/mailgun", json={"event-data": event})
    assert res.status_code == 403
    assert hooks.client.post("/webhooks/mailgun", content=b"\xff\xfe",
                             headers={"Content-Type": "application/json"}).status_code == 400
    assert mailgun_post(hooks, {"event": "failed"}).status_code == 400  # signed, but no recipient
    assert counts(hooks) == before and statuses(hooks) == ALL_ACTIVE


# -- Postmark -----------------------------------------------------------------------

POSTMARK_BOUNCE = {
    "RecordType": "Bounce", "ID": 42, "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Description": "The server was unable to deliver your message",
    "Details": "Test bounce details", "Email": "hard@example.jp", "BouncedAt": "2014-08-01T13:28:10.2735393-04:00",
    "DumpAvailable": True, "Inactive": True, "CanActivate": True, "Subject": "Test subject",
    "MessageStream": "outbound",
}
POSTMARK_COMPLAINT = {
    "RecordType": "SpamComplaint", "ID": 43, "Type": "SpamComplaint", "TypeCode": 512, "MessageID": "abc",
    "Email": "spam@example.jp", "BouncedAt": "2019-11-05T16:33:54.9070259Z", "Description": "spam",
}


def postmark_post(site, payload, user="postmark", password="p@ss word"):
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return site.client.post("/webhooks/postmark", json=payload, headers={"Authorization": f"Basic {auth}"})


def test_postmark_basic_auth(hooks):
    """Postmark has no payload signature: its webhook URL carries HTTP basic
    auth credentials, which we check; Bounce and SpamComplaint payloads as documented."""
    before = counts(hooks)
    res = hooks.client.post("/webhooks/postmark", json=POSTMARK_BOUNCE)
    assert res.status_code == 401 and res.headers["www-authenticate"].startswith("Basic")
    assert postmark_post(hooks, POSTMARK_BOUNCE, password="guess").status_code == 401
    assert postmark_post(hooks, POSTMARK_BOUNCE, user="admin").status_code == 401
    assert hooks.client.post("/webhooks/postmark", json=POSTMARK_BOUNCE,
                             headers={"Authorization": "Basic !!!"}).status_code == 401
    assert counts(hooks) == before and statuses(hooks) == ALL_ACTIVE

    assert postmark_post(hooks, POSTMARK_BOUNCE).status_code == 200
    assert postmark_post(hooks, POSTMARK_COMPLAINT).status_code == 200
    assert postmark_post(hooks, {**POSTMARK_BOUNCE, "ID": 44, "Type": "SoftBounce",
                                 "Email": "soft@example.jp"}).status_code == 200
    assert statuses(hooks) == {**ALL_ACTIVE, "hard@example.jp": "bounced", "spam@example.jp": "complained"}
    before = counts(hooks)
    assert postmark_post(hooks, POSTMARK_BOUNCE).status_code == 200
    assert counts(hooks) == before
    assert postmark_post(hooks, {"no": "record type"}).status_code == 400


# -- Amazon SES through SNS ----------------------------------------------------------

def sns_message(note: dict | None = None, *, type_="Notification", version="1", key=None, **over) -> dict:
    msg = {
        "Type": type_,
        "MessageId": over.pop("MessageId", "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"),
        "TopicArn": over.pop("TopicArn", TOPIC),
        "Message": json.dumps(note) if note is not None else "You have chosen to subscribe to the topic",
        "Timestamp": over.pop("Timestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"),
        "SignatureVersion": version,
        "SigningCertURL": over.pop("SigningCertURL", CERT_URL),
    }
    if type_ != "Notification":
        msg["Token"] = "2336412f37fb687f5d51e6e2425c464de12884"
        msg["SubscribeURL"] = "https://sns.ap-northeast-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336"
    msg.update(over)
    if key is not None:
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        msg["Signature"] = base64.b64encode(key.sign(sns_string_to_sign(msg), padding.PKCS1v15(), algorithm)).decode()
    return msg


SES_BOUNCE = {
    "notificationType": "Bounce",
    "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "reportingMTA": "dns; email.example.com",
               "bouncedRecipients": [{"emailAddress": "hard@example.jp", "status": "5.1.1", "action": "failed",
                                      "diagnosticCode": "smtp; 550 5.1.1 <hard@example.jp>... User"}],
               "timestamp": "2016-01-27T14:59:38.237Z", "feedbackId": "00000138111222aa-33322211"},
    "mail": {"timestamp": "2016-01-27T14:59:38.237Z", "source": "magazine@news.example.jp",
             "messageId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
             "destination": ["hard@example.jp"]},
}
SES_COMPLAINT = {
    "notificationType": "Complaint",
    "complaint": {"userAgent": "AnyCompany Feedback Loop (V0.01)", "complaintFeedbackType": "abuse",
                  "complainedRecipients": [{"emailAddress": "spam@example.jp"}],
                  "timestamp": "2016-01-27T14:59:38.237Z", "feedbackId": "000001378603177f-18c07c78"},
    "mail": {"timestamp": "2016-01-27T14:59:38.237Z", "messageId": "000001378603177f-7a5433e7",
             "source": "magazine@news.example.jp", "destination": ["spam@example.jp"]},
}


def post_sns(site, msg):
    return site.client.post("/webhooks/ses", content=json.dumps(msg).encode(), headers={
        "Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": msg["Type"]})


@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_notifications_signed_by_sns(hooks, rsa_cert, version):
    """SNS SignatureVersion 1 (SHA1withRSA) and 2 (SHA256withRSA) over the
    documented string to sign; the certificate from the configured folder."""
    key, _ = rsa_cert
    assert post_sns(hooks, sns_message(SES_BOUNCE, version=version, key=key)).status_code == 200
    complaint = sns_message(SES_COMPLAINT, version=version, key=key, MessageId="m-2", Subject="Amazon SES")
    assert post_sns(hooks, complaint).status_code == 200
    assert statuses(hooks) == {**ALL_ACTIVE, "hard@example.jp": "bounced", "spam@example.jp": "complained"}
    before = counts(hooks)
    assert post_sns(hooks, complaint).status_code == 200  # SNS retries: at-least-once delivery
    assert counts(hooks) == before
    soft = {**SES_BOUNCE, "bounce": {**SES_BOUNCE["bounce"], "bounceType": "Transient", "bounceSubType": "MailboxFull",
                                    "bouncedRecipients": [{"emailAddress": "soft@example.jp", "status": "4.2.2"}]}}
    assert post_sns(hooks, sns_message(soft, version=version, key=key, MessageId="m-3")).status_code == 200
    assert hooks.subscriber("soft@example.jp").status == "active"


def test_ses_subscription_confirmation_is_logged(hooks, rsa_cert, caplog):
    key, _ = rsa_cert
    res = post_sns(hooks, sns_message(type_="SubscriptionConfirmation", key=key, version="2"))
    assert res.status_code == 200 and "0 events" in res.text
    assert "ConfirmSubscription" in caplog.text


def test_ses_rejects_what_sns_did_not_sign(hooks, rsa_cert):
    key, _ = rsa_cert
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    before = counts(hooks)
    assert post_sns(hooks, sns_message(SES_BOUNCE, key=other)).status_code == 403
    tampered = sns_message(SES_BOUNCE, key=key)
    tampered["Message"] = tampered["Message"].replace("hard@example.jp", "fine@example.jp")
    assert post_sns(hooks, tampered).status_code == 403
    for url in ("https://evil.example.com/SimpleNotificationService-0123456789abcdef.pem",
                "http://sns.ap-northeast-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
                "https://sns.ap-northeast-1.amazonaws.com.evil.jp/SimpleNotificationService-0123456789abcdef.pem",
                "https://sns.ap-northeast-1.amazonaws.com/../../etc/passwd.pem",
                "https://sns.ap-northeast-1.amazonaws.com/SimpleNotificationService-unknown.pem"):
        assert post_sns(hooks, sns_message(SES_BOUNCE, key=key, SigningCertURL=url)).status_code == 403, url
    assert post_sns(hooks, sns_message(SES_BOUNCE, key=key, TopicArn="arn:aws:sns:x:1:other")).status_code == 403
    old = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert post_sns(hooks, sns_message(SES_BOUNCE, key=key, Timestamp=old)).status_code == 403
    assert post_sns(hooks, sns_message(SES_BOUNCE, key=key, version="3")).status_code == 400
    unsigned = sns_message(SES_BOUNCE)
    assert post_sns(hooks, unsigned).status_code == 403
    assert hooks.client.post("/webhooks/ses", content=b"[1, 2]").status_code == 400
    assert counts(hooks) == before and statuses(hooks) == ALL_ACTIVE


def test_unconfigured_webhooks_answer_404(tmp_path):
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}")
    for provider in ("sendgrid", "mailgun", "postmark", "ses"):
        res = site.client.post(f"/webhooks/{provider}", json=[])
        assert res.status_code == 404 and "not configured" in res.text


def test_webhook_body_limit(hooks, ec_key):
    big = [{"email": f"x{i}@example.jp", "event": "delivered", "sg_event_id": f"e{i}", "pad": "x" * 200}
           for i in range(20_000)]
    assert sendgrid_post(hooks, ec_key, big).status_code == 413


# -- nl_delivery_id: the event finds its delivery ------------------------------------

def _sent(site) -> dict[str, int]:
    """Send an edition to the four readers; their delivery ids by address."""
    site.cli("article", "add", "--field", "education", "--title", "教員の働き方改革", "--url",
             "https://news.example.jp/a/1", "--summary", "勤務実態調査の速報値。")
    site.cli("edition", "send", "weekly")
    with site.engine.connect() as conn:
        return {r.email: r.id for r in conn.execute(select(deliveries.c.id, deliveries.c.email))}


def _bounce(kind: str, address: str, delivery_id: int, n: int) -> dict:
    tag = str(delivery_id)
    if kind == "sendgrid":
        return {"email": address, "timestamp": 1513299569, "event": "bounce", "type": "bounce", "status": "5.1.1",
                "reason": "550 5.1.1 no such user", "sg_event_id": f"sg-id-{n}", "nl_delivery_id": tag}
    if kind == "mailgun":
        return {**mg_failed(address, "permanent", f"mg-id-{n}"), "user-variables": {"nl-delivery-id": tag}}
    if kind == "postmark":
        return {**POSTMARK_BOUNCE, "ID": 900 + n, "Email": address, "Metadata": {"nl_delivery_id": tag}}
    bounce = json.loads(json.dumps(SES_BOUNCE))
    bounce["bounce"]["bouncedRecipients"][0]["emailAddress"] = address
    bounce["mail"]["tags"] = {"nl_delivery_id": [tag]}
    return bounce


def _post(kind: str, site, key, rsa_cert, payload: dict, n: int):
    if kind == "sendgrid":
        return sendgrid_post(site, key, [payload])
    if kind == "mailgun":
        return mailgun_post(site, payload, token=f"tok{n}" * 10)
    if kind == "postmark":
        return postmark_post(site, payload)
    return post_sns(site, sns_message(payload, key=rsa_cert[0], MessageId=f"ses-id-{n}"))


@pytest.mark.parametrize("kind", ["sendgrid", "mailgun", "postmark", "ses"])
def test_a_bounce_finds_its_delivery_by_nl_delivery_id(hooks, ec_key, rsa_cert, kind):
    """The reader changed their address after the edition went out: the bounce of
    the old address still names its delivery, and through it the subscriber."""
    ids = _sent(hooks)
    with hooks.engine.begin() as conn:
        conn.execute(update(subscribers).where(subscribers.c.email == "hard@example.jp")
                     .values(email="hard.new@example.jp"))
    res = _post(kind, hooks, ec_key, rsa_cert, _bounce(kind, "hard@example.jp", ids["hard@example.jp"], 1), 1)
    assert res.status_code == 200, res.text
    assert hooks.subscriber("hard.new@example.jp").status == "bounced"

    # An id that is not this address's delivery (another installation on the same
    # account): the address decides, as without an id.
    res = _post(kind, hooks, ec_key, rsa_cert, _bounce(kind, "spam@example.jp", ids["fine@example.jp"], 2), 2)
    assert res.status_code == 200, res.text
    assert hooks.subscriber("spam@example.jp").status == "bounced"
    assert hooks.subscriber("fine@example.jp").status == "active"


def test_hostile_webhook_requests_are_a_4xx_that_changes_nothing(hooks, ec_key, rsa_cert):
    """Issue 11 item 8: each of these answered 500, most before authentication —
    non-ASCII or surrogate signatures and tokens, deep nesting, integers too long
    for Python, wrong JSON types in SNS fields — and, signed with the right keys,
    digits outside ASCII and wrong types after authentication."""
    key, _ = rsa_cert
    before = dump(hooks.engine)

    def post(provider: str, body: bytes, **headers) -> int:
        res = hooks.client.post(f"/webhooks/{provider}", content=body,
                                headers={"Content-Type": "application/json", **headers})
        assert res.text.startswith("error: " if res.status_code >= 400 else "ok: ") and "Traceback" not in res.text
        return res.status_code

    deep = b"[" * 100_000 + b"]" * 100_000
    mg_sig = {"timestamp": str(int(time.time())), "token": "t" * 50}
    unsigned_ses = sns_message(SES_BOUNCE)
    # Before authentication.
    assert post("mailgun", json.dumps({"signature": {**mg_sig, "signature": "署名"}}).encode()) == 403
    assert post("mailgun", b'{"signature": {"timestamp": "1", "token": "\\udc80", "signature": "00"}}') == 400
    assert post("mailgun", deep) == 400
    assert post("mailgun", b'{"a":' * 40 + b"1" + b"}" * 40) == 400  # deeper than any provider nests
    assert post("mailgun", b'{"signature": {"timestamp": ' + b"9" * 5000 + b', "token": "t", "signature": "0"}}') == 400
    assert post("ses", json.dumps({**unsigned_ses, "Type": ["Notification"], "Signature": "AAAA"}).encode()) == 400
    bad_url = "https://[sns.ap-northeast-1.amazonaws.com/a.pem"
    assert post("ses", json.dumps({**unsigned_ses, "Signature": "AAAA", "SigningCertURL": bad_url}).encode()) == 403
    assert post("ses", json.dumps({**unsigned_ses, "Signature": "署名"}).encode()) == 403
    assert post("ses", json.dumps({**unsigned_ses, "Signature": "AAAA", "Message": "\udc80"}).encode()) == 400
    assert post("ses", json.dumps({**unsigned_ses, "Signature": "AAAA", "MessageId": "a\x00"}).encode()) == 400
    assert post("sendgrid", b"[]", **{"X-Twilio-Email-Event-Webhook-Signature": "署名".encode(),
                                      "X-Twilio-Email-Event-Webhook-Timestamp": b"\xb2"}) == 403
    assert post("postmark", b"{}", Authorization=b"Basic " + "署名".encode()) == 401
    # Signed with the right keys, but not what the provider sends.
    digit = "\u00b2"  # '²': str.isdigit() says yes, int() says no
    signature = hmac.new(b"mailgun-signing-key-123", (digit + "t").encode(), hashlib.sha256).hexdigest()
    event = mg_failed("hard@example.jp", "permanent", "mg-9")
    assert post("mailgun", json.dumps({"signature": {"timestamp": digit, "token": "t", "signature": signature},
                                       "event-data": event}).encode()) == 400
    auth = base64.b64encode(b"postmark:p@ss word").decode()
    assert post("postmark", json.dumps({**POSTMARK_BOUNCE, "Type": ["HardBounce"]}).encode(),
                Authorization=f"Basic {auth}") in (200, 400)
    odd = {**SES_BOUNCE, "bounce": {**SES_BOUNCE["bounce"], "bouncedRecipients": 5}}
    assert post_sns(hooks, sns_message(odd, key=key, MessageId="m-odd")).status_code in (200, 400)
    year_one = sns_message(SES_BOUNCE, key=key, Timestamp="0001-01-01T00:00:00+09:00")
    assert post_sns(hooks, year_one).status_code == 400
    assert statuses(hooks) == ALL_ACTIVE
    assert dump(hooks.engine) == before
