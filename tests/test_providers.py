"""Providers against real things: a temp folder and a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import mailbox
import os
import socket
import sys
import time
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from newsletter.errors import ConfigError
from newsletter.interfaces import OutgoingMessage, Provider
from newsletter.providers import load_provider
from newsletter.providers.file import FileProvider
from newsletter.providers.smtp import SMTPProvider, classify_smtp_reply, enhanced_status, queue_id
from tests import smtp_fixtures
from tests.smtp_server import SMTPTestServer

# Assigned rather than imported by name so the test arguments do not "shadow" an import.
smtp_server = smtp_fixtures.smtp_server

SENDER = "magazine@news.example.jp"
SUBJECT_JA = "地方行政ニュース 第12号：防災特集"
BODY_JA = (
    "山田太郎様\n"
    "\n"
    "今週は自治体の防災計画を特集します。\n"
    ".で始まる行も、そのまま届かなければなりません。\n"
    "配信停止はこちら：https://news.example.jp/u/abc\n"
)


def make_message(delivery_id: int, recipient: str, *, subject: str = "Weekly news",
                 body: str = "Hello.\n", sender: str = SENDER) -> OutgoingMessage:
    msg = EmailMessage()
    msg["From"] = f"地方行政ニュース <{sender}>"
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Message-ID"] = message_id = make_msgid(domain="news.example.jp")
    # 8bit so that raw UTF-8 bytes travel (and must survive) the whole way.
    msg.set_content(body, charset="utf-8", cte="8bit")
    data = msg.as_bytes(policy=policy.SMTP)
    return OutgoingMessage(delivery_id, sender, recipient, message_id, data)


def batch(n: int, start: int = 1) -> list[OutgoingMessage]:
    return [make_message(i, f"reader{i}@example.jp") for i in range(start, start + n)]


def by_id(results):
    return {r.delivery_id: r for r in results}


# --------------------------------------------------------------------------- load_provider


def test_load_builtin_providers(tmp_path):
    file_provider = load_provider("file", {}, tmp_path)
    smtp_provider = load_provider("smtp", {"host": "mail.example.jp"}, tmp_path)
    assert isinstance(file_provider, FileProvider) and isinstance(file_provider, Provider)
    assert file_provider.path == tmp_path / "var" / "outbox"
    assert isinstance(smtp_provider, SMTPProvider) and isinstance(smtp_provider, Provider)
    assert (smtp_provider.host, smtp_provider.port) == ("mail.example.jp", 25)


def test_unknown_kind_lists_known_ones(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_provider("carrier-pigeon", {}, tmp_path)
    assert str(err.value).startswith("provider.kind: unknown provider 'carrier-pigeon' (known: ")
    assert "file" in str(err.value) and "smtp" in str(err.value)


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """A real installed-looking distribution registering two providers."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "np_plugins.py").write_text(
        "class MemoryProvider:\n"
        "    name = 'memory'\n"
        "    def __init__(self, max_batch):\n"
        "        self.max_batch = max_batch\n"
        "        self.sent = []\n"
        "    @classmethod\n"
        "    def from_config(cls, options, base_dir):\n"
        "        return cls(options.get('max_batch', 10))\n"
        "    def send(self, batch):\n"
        "        return []\n"
        "    def close(self):\n"
        "        pass\n"
        "\n"
        "class NotAProvider:\n"
        "    name = 'nope'\n"
        "    @classmethod\n"
        "    def from_config(cls, options, base_dir):\n"
        "        return cls()\n",
        encoding="utf-8",
    )
    dist = site / "np_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: np-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[newsletter.providers]\n"
        "memory = np_plugins:MemoryProvider\n"
        "nope = np_plugins:NotAProvider\n"
        "missing = np_plugins_gone:Provider\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("np_plugins", None)


@pytest.mark.usefixtures("plugin_dist")
def test_entry_point_providers(tmp_path):
    provider = load_provider("memory", {"max_batch": 7}, tmp_path)
    assert type(provider).__name__ == "MemoryProvider" and provider.max_batch == 7

    not_provider = r"^provider.kind: 'nope' does not implement the Provider interface$"
    with pytest.raises(ConfigError, match=not_provider):
        load_provider("nope", {}, tmp_path)
    with pytest.raises(ConfigError, match=r"^provider.kind: cannot load provider 'missing'"):
        load_provider("missing", {}, tmp_path)
    known = r"known: file, mailgun, memory, missing, nope, postmark, sendgrid, ses, smtp\)"
    with pytest.raises(ConfigError, match=known):
        load_provider("pigeon", {}, tmp_path)


# --------------------------------------------------------------------------- file provider


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_file_eml_writes_exact_bytes(tmp_path):
    provider = load_provider("file", {"path": "outbox"}, tmp_path)
    messages = [make_message(1, "taro@example.jp", subject=SUBJECT_JA, body=BODY_JA),
                make_message(2, "Hanako.Sato+news@example.jp"),
                make_message(3, "odd/name:<x>@example.jp")]
    results = provider.send(messages)

    outbox = tmp_path / "outbox"
    assert [r.status for r in results] == ["accepted"] * 3
    assert [r.provider_id for r in results] == [
        "00000001-taro@example.jp.eml",
        "00000002-Hanako.Sato+news@example.jp.eml",
        "00000003-odd_name__x_@example.jp.eml",
    ]
    for message, result in zip(messages, results, strict=True):
        assert (outbox / result.provider_id).read_bytes() == message.data
    assert sorted(p.name for p in outbox.iterdir()) == sorted(r.provider_id for r in results)
    assert leftovers(outbox) == []


def test_file_eml_resend_replaces_the_file(tmp_path):
    provider = load_provider("file", {"path": str(tmp_path / "abs")}, Path("/nonexistent"))
    first, again = make_message(5, "a@example.jp"), make_message(5, "a@example.jp", subject="again")
    provider.send([first])
    [result] = provider.send([again])
    assert os.listdir(tmp_path / "abs") == [result.provider_id]
    assert (tmp_path / "abs" / result.provider_id).read_bytes() == again.data


def test_file_error_on_one_message_is_a_failure_others_continue(tmp_path):
    outbox = tmp_path / "outbox"
    # A directory where message 2's file should go makes exactly that rename fail.
    (outbox / "00000002-reader2@example.jp.eml").mkdir(parents=True)
    provider = load_provider("file", {"path": "outbox"}, tmp_path)
    results = by_id(provider.send(batch(3)))
    assert results[1].status == results[3].status == "accepted"
    # A write error is the machine's, not the reader's: a failure that shows (with the OS
    # error), not a retry in two minutes that hides it for three days.
    assert results[2].status == "permanent" and "directory" in results[2].reply.lower()
    assert "[Errno 21 EISDIR]" in results[2].reply
    assert leftovers(outbox) == []


def test_file_unusable_folder_fails_every_message_with_the_os_error(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    provider = load_provider("file", {"path": "blocker/outbox"}, tmp_path)
    results = provider.send(batch(2))
    assert [r.status for r in results] == ["permanent", "permanent"]
    assert "blocker" in results[0].reply and "[Errno 20 ENOTDIR]" in results[0].reply


def test_file_maildir(tmp_path):
    provider = load_provider("file", {"path": "Maildir", "format": "maildir"}, tmp_path)
    messages = [make_message(1, "taro@example.jp", subject=SUBJECT_JA, body=BODY_JA), *batch(4, start=2)]
    results = provider.send(messages)

    root = tmp_path / "Maildir"
    assert [r.status for r in results] == ["accepted"] * 5
    assert os.listdir(root / "tmp") == [] and os.listdir(root / "cur") == []
    names = sorted(os.listdir(root / "new"))
    assert names == sorted(r.provider_id for r in results) and len(set(names)) == 5
    for message, result in zip(messages, results, strict=True):
        assert (root / "new" / result.provider_id).read_bytes() == message.data
        assert ":" not in result.provider_id and "/" not in result.provider_id
    # A second, independent reader agrees it is a Maildir.
    box = mailbox.Maildir(root, create=False)
    assert len(box) == 5
    assert {m["Subject"] for m in box.values()} >= {"Weekly news"}
    box.close()


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"format": "mbox"}, "provider.format"),
        ({"path": 5}, "provider.path"),
        ({"path": ""}, "provider.path"),
        ({"colour": "red"}, "provider.colour"),
        ({"max_batch": 0}, "provider.max_batch"),
    ],
)
def test_file_bad_options(tmp_path, options, key):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        load_provider("file", options, tmp_path)


# --------------------------------------------------------------------------- SMTP: classification


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (250, "2.0.0 Ok: queued as ABC", "accepted"),
        (251, "2.1.5 User not local; will forward", "accepted"),
        (421, "4.7.0 Too many connections", "transient"),
        (450, "4.2.1 Mailbox busy", "transient"),
        (451, "4.3.0 Local error in processing", "transient"),
        (452, "4.3.1 Insufficient system storage", "transient"),
        (550, "5.1.1 No such user", "permanent"),
        (551, "5.1.6 User not local", "permanent"),
        (552, "5.2.2 Mailbox full", "transient"),        # RFC 5321 §4.5.3.1.10
        (552, "Message size exceeds fixed limit", "transient"),
        (553, "5.1.3 Bad address syntax", "permanent"),
        (554, "5.7.1 Rejected by policy", "permanent"),
        (550, "4.2.2 Over quota", "permanent"),            # code decides, not the enhanced status
        (450, "5.1.1 No such user", "transient"),
        (354, "Start mail input", "transient"),            # not a final answer
        (-1, "garbled", "transient"),
    ],
)
def test_classify_smtp_reply(code, text, expected):
    assert classify_smtp_reply(code, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5.1.1 No such user", "5.1.1"),
        ("550 5.1.1 No such user", "5.1.1"),
        ("550-5.7.26 Unauthenticated email", "5.7.26"),
        ("4.7.0 Try again later", "4.7.0"),
        ("2.0.0 Ok: queued as 4XYZ", "2.0.0"),
        ("No such user", None),
        ("550 No such user", None),
        ("3.1.1 not a class", None),
        ("5.1.1.1 too many parts", None),
        ("", None),
    ],
)
def test_enhanced_status(text, expected):
    assert enhanced_status(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.0.0 Ok: queued as 4Xb2Lm0qZsz9v", "4Xb2Lm0qZsz9v"),
        ("OK id=1tF7xq-0004Ab-2K", "1tF7xq-0004Ab-2K"),
        ("2.0.0 Ok", None),
    ],
)
def test_queue_id(text, expected):
    assert queue_id(text) == expected


# --------------------------------------------------------------------------- SMTP: against the server


def smtp_provider(server: SMTPTestServer, **options) -> SMTPProvider:
    options = {"host": server.host, "port": server.port, "helo": "client.test", "timeout": 5, **options}
    provider = load_provider("smtp", options, Path("."))
    assert isinstance(provider, SMTPProvider)
    return provider


def test_smtp_many_messages_over_one_connection(smtp_server):
    provider = smtp_provider(smtp_server)
    first, second = batch(3), batch(2, start=4)
    results = provider.send(first) + provider.send(second)
    provider.close()

    assert [r.status for r in results] == ["accepted"] * 5
    assert smtp_server.connections == 1
    assert smtp_server.quits == 1
    received = smtp_server.messages
    assert [m.rcpt_tos for m in received] == [(m.recipient,) for m in first + second]
    assert [r.provider_id for r in results] == [m.queue_id for m in received]
    assert results[0].reply == f"250 2.0.0 Ok: queued as {received[0].queue_id}"
    assert all(m.mail_from == SENDER for m in received)


def test_smtp_japanese_message_arrives_byte_identical(smtp_server):
    message = make_message(1, "taro@example.jp", subject=SUBJECT_JA, body=BODY_JA)
    with smtp_provider(smtp_server) as provider:
        [result] = provider.send([message])

    assert result.status == "accepted"
    [received] = smtp_server.messages
    assert received.data == message.data          # including the dot-stuffed line
    assert received.message["Subject"] == SUBJECT_JA
    assert received.message.get_content().replace("\r\n", "\n") == BODY_JA
    assert "BODY=8BITMIME" in received.mail_options


def test_smtp_utf8_address(smtp_server):
    message = make_message(1, "山田@例え.jp")
    with smtp_provider(smtp_server) as provider:
        [result] = provider.send([message])
    assert result.status == "accepted", result.reply
    assert smtp_server.messages[0].rcpt_tos == ("山田@例え.jp",)
    assert "SMTPUTF8" in smtp_server.messages[0].mail_options


def test_smtp_reconnects_after_421_and_delivers_each_message_once(smtp_server):
    smtp_server.close_after(2)
    messages = batch(5)
    with smtp_provider(smtp_server) as provider:
        results = provider.send(messages)

    assert [r.status for r in results] == ["accepted"] * 5
    assert smtp_server.connections == 3
    received = smtp_server.messages
    assert sorted(m.rcpt_tos[0] for m in received) == sorted(m.recipient for m in messages)
    assert [m.connection for m in received] == [1, 1, 2, 2, 3]


def test_smtp_reconnects_when_idle_connection_was_closed(smtp_server):
    with smtp_provider(smtp_server) as provider:
        assert provider.send(batch(1))[0].status == "accepted"
        smtp_server.disconnect_clients()
        time.sleep(0.05)
        [result] = provider.send(batch(1, start=2))
    assert result.status == "accepted", result.reply
    assert smtp_server.connections == 2
    assert len(smtp_server.messages) == 2


def test_smtp_max_messages_per_connection(smtp_server):
    with smtp_provider(smtp_server, max_messages_per_connection=2) as provider:
        results = provider.send(batch(5))
    assert [r.status for r in results] == ["accepted"] * 5
    assert smtp_server.connections == 3


def test_smtp_550_for_one_recipient(smtp_server):
    smtp_server.reply_to_rcpt("Nobody@Example.jp", "550 5.1.1 No such user")
    messages = [make_message(1, "a@example.jp"), make_message(2, "nobody@example.jp"),
                make_message(3, "b@example.jp")]
    with smtp_provider(smtp_server) as provider:
        results = by_id(provider.send(messages))

    assert results[2].status == "permanent"
    assert results[2].reply == "550 5.1.1 No such user"
    assert results[2].provider_id is None
    assert enhanced_status(results[2].reply) == "5.1.1"
    assert results[1].status == results[3].status == "accepted"
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == ["a@example.jp", "b@example.jp"]
    assert smtp_server.connections == 1     # RSET, not a new connection


@pytest.mark.parametrize(
    ("reply", "status"),
    [("451 4.3.0 Temporary local problem", "transient"),
     ("452 4.3.1 Insufficient system storage", "transient"),
     ("552 5.2.2 Mailbox full", "transient"),
     ("554 5.7.1 Message rejected as spam", "permanent")],
)
def test_smtp_reply_to_data(smtp_server, reply, status):
    smtp_server.reply_to_data("b@example.jp", reply, times=1)
    messages = [make_message(i, f"{c}@example.jp") for i, c in enumerate("abc", start=1)]
    with smtp_provider(smtp_server) as provider:
        results = by_id(provider.send(messages))
        assert (results[2].status, results[2].reply) == (status, reply)
        assert results[1].status == results[3].status == "accepted"
        assert len(smtp_server.messages) == 2
        # The refusal was for one time only: a retry goes through.
        assert provider.send([messages[1]])[0].status == "accepted"
    assert smtp_server.connections == 1


def test_smtp_421_mid_transaction_reconnects_for_the_next(smtp_server):
    smtp_server.reply_to_rcpt("b@example.jp", "421 4.3.2 Service shutting down")
    messages = [make_message(i, f"{c}@example.jp") for i, c in enumerate("abc", start=1)]
    with smtp_provider(smtp_server) as provider:
        results = by_id(provider.send(messages))
    assert results[2].status == "transient" and results[2].reply.startswith("421 4.3.2")
    assert not results[2].throttled  # one session closed, not a throttle: the next message goes
    assert results[1].status == results[3].status == "accepted"
    assert smtp_server.connections == 2


def test_smtp_421_greeting_is_a_throttle_and_the_rest_of_the_batch_waits(smtp_server):
    smtp_server.refuse_connections(1)
    messages = [make_message(i, f"{c}@example.jp") for i, c in enumerate("abc", start=1)]
    with smtp_provider(smtp_server) as provider:
        results = provider.send(messages)
        assert [r.status for r in results] == ["transient"] * 3
        assert all(r.throttled for r in results) and "421 4.7.0" in results[0].reply
        assert smtp_server.messages == [] and smtp_server.connections == 1  # nobody knocked again
        assert {r.status for r in provider.send(messages)} == {"accepted"}


@pytest.mark.parametrize(("stage", "status"), [
    ("rcpt", "transient"), ("data_before", "transient"),
    # The message was sent whole but no answer came: it may have been delivered.
    ("data_after", "unknown"),
])
def test_smtp_dropped_connection(smtp_server, stage, status):
    smtp_server.drop_connection_on(stage, "reader2@example.jp")
    with smtp_provider(smtp_server) as provider:
        results = by_id(provider.send(batch(4)))
    assert results[2].status == status
    assert "connection lost" in results[2].reply
    assert [results[i].status for i in (1, 3, 4)] == ["accepted"] * 3
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == [
        "reader1@example.jp", "reader3@example.jp", "reader4@example.jp"]
    assert smtp_server.connections == 2


def test_smtp_connection_refused_makes_everything_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = load_provider("smtp", {"host": "127.0.0.1", "port": port, "helo": "client.test"}, Path("."))
    results = provider.send(batch(3))
    assert [r.status for r in results] == ["transient"] * 3
    assert all(f"127.0.0.1:{port}" in r.reply and "refused" in r.reply.lower() for r in results)
    provider.close()


def test_smtp_silent_server_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)              # accepts at kernel level, never says 220
        port = listener.getsockname()[1]
        provider = load_provider("smtp", {"host": "127.0.0.1", "port": port, "timeout": 0.3,
                                          "helo": "client.test"}, Path("."))
        started = time.monotonic()
        results = provider.send(batch(3))
        assert time.monotonic() - started < 3
    assert [r.status for r in results] == ["transient"] * 3
    assert "timed out" in results[0].reply


def test_smtp_envelope_from(smtp_server):
    with smtp_provider(smtp_server, envelope_from="bounces@news.example.jp") as provider:
        provider.send(batch(1))
    [received] = smtp_server.messages
    assert received.mail_from == "bounces@news.example.jp"
    assert "magazine@news.example.jp" in received.message["From"]


def test_smtp_provider_id_falls_back_to_message_id(smtp_server):
    smtp_server.reply_to_data("reader1@example.jp", "250 2.0.0 Ok")
    message = batch(1)[0]
    with smtp_provider(smtp_server) as provider:
        [result] = provider.send([message])
    assert result.status == "accepted" and result.provider_id == message.message_id


# --------------------------------------------------------------------------- SMTP: configuration


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"password": "hunter2"}, r"^provider.password: .*password_env"),
        ({"hots": "smtp.example.jp"}, r"^provider.hots: unknown option"),
        ({"security": "ssl"}, r"^provider.security: "),
        ({"port": "587"}, r"^provider.port: must be an integer"),
        ({"port": 70000}, r"^provider.port: "),
        ({"timeout": 0}, r"^provider.timeout: "),
        ({"max_messages_per_connection": 0}, r"^provider.max_messages_per_connection: "),
        ({"username": "magazine"}, r"^provider.password_env: required"),
        ({"password_env": "SMTP_PASSWORD"}, r"^provider.username: required"),
    ],
)
def test_smtp_bad_options(options, message):
    with pytest.raises(ConfigError, match=message):
        load_provider("smtp", options, Path("."))


def test_smtp_default_ports():
    assert load_provider("smtp", {"security": "tls"}, Path(".")).port == 465
    assert load_provider("smtp", {"security": "starttls"}, Path(".")).port == 587
    assert load_provider("smtp", {"security": "starttls", "port": 2525}, Path(".")).port == 2525


def test_smtp_missing_password_variable_is_named(monkeypatch):
    monkeypatch.delenv("NEWSLETTER_TEST_SMTP_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="provider.password_env: .*NEWSLETTER_TEST_SMTP_PASSWORD"):
        load_provider("smtp", {"username": "magazine", "password_env": "NEWSLETTER_TEST_SMTP_PASSWORD"},
                      Path("."))


def test_smtp_non_ascii_password_is_refused_early(monkeypatch):
    monkeypatch.setenv("NEWSLETTER_TEST_SMTP_PASSWORD", "秘密")
    with pytest.raises(ConfigError, match="^provider.password_env: .*SMTP_PASSWORD must be ASCII"):
        load_provider("smtp", {"username": "magazine", "password_env": "NEWSLETTER_TEST_SMTP_PASSWORD"},
                      Path("."))


@pytest.fixture
def auth_server():
    with SMTPTestServer(credentials={"magazine": "s3cret-pass"}) as server:
        yield server


def test_smtp_login_with_password_from_environment(auth_server, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_TEST_SMTP_PASSWORD", "s3cret-pass")
    with smtp_provider(auth_server, username="magazine",
                       password_env="NEWSLETTER_TEST_SMTP_PASSWORD") as provider:
        assert "s3cret" not in repr(provider)
        results = provider.send(batch(2))
    assert [r.status for r in results] == ["accepted"] * 2
    assert [m.login for m in auth_server.messages] == ["magazine", "magazine"]


def test_smtp_rejected_login_is_a_config_error(auth_server, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_TEST_SMTP_PASSWORD", "wrong")
    with smtp_provider(auth_server, username="magazine",
                       password_env="NEWSLETTER_TEST_SMTP_PASSWORD") as provider:
        with pytest.raises(ConfigError, match=r"^provider.username: .*refused the login.*535"):
            provider.send(batch(2))
    assert auth_server.messages == []


def test_smtp_without_login_is_refused_by_auth_server(auth_server):
    with smtp_provider(auth_server) as provider:
        results = provider.send(batch(1))
    # Every server words this differently; what matters is that it is not accepted.
    assert results[0].status == "permanent" and results[0].reply.startswith("530")


def test_smtp_server_fixture_clear(smtp_server):
    smtp_server.reply_to_rcpt("a@example.jp", "550 no")
    smtp_server.close_after(1)
    smtp_server.clear()
    with smtp_provider(smtp_server) as provider:
        assert [r.status for r in provider.send(batch(3))] == ["accepted"] * 3
    assert smtp_server.connections == 1


def test_smtp_without_pipelining_sends_one_command_at_a_time():
    """The same transactions against a server that does not announce PIPELINING."""
    from tests.smtp_server import SMTPTestServer

    with SMTPTestServer(pipelining=False) as server:
        server.reply_to_rcpt("reader2@example.jp", "550 5.1.1 No such user")
        with smtp_provider(server) as provider:
            results = by_id(provider.send(batch(3)))
        assert [results[i].status for i in (1, 2, 3)] == ["accepted", "permanent", "accepted"]
        assert results[2].reply.startswith("550 5.1.1")
        assert [m.rcpt_tos[0] for m in server.messages] == ["reader1@example.jp", "reader3@example.jp"]


def test_smtp_pipelined_refusals_leave_the_connection_usable(smtp_server):
    """With PIPELINING, MAIL/RCPT/DATA go in one write: a refused sender or recipient
    makes DATA fail too, and the next message on the same connection still goes."""
    smtp_server.reply_to_rcpt("reader1@example.jp", "550 5.1.1 No such user")
    smtp_server.reply_to_rcpt("reader2@example.jp", "451 4.7.1 Greylisted")
    with smtp_provider(smtp_server) as provider:
        results = by_id(provider.send(batch(4)))
    assert [results[i].status for i in (1, 2, 3, 4)] == ["permanent", "transient", "accepted", "accepted"]
    assert smtp_server.connections == 1
