"""Test sends and other mail without a delivery row, as an editor meets them:
``edition send --test-to`` marks the mail 【テスト】 in the subject and with a
banner in both parts, and the file outbox keeps every such mail in a file of
its own (a second test send or confirmation mail never replaces the first).
"""

from __future__ import annotations

import email
import email.policy

from newsletter.interfaces import OutgoingMessage
from newsletter.providers.file import FileProvider
from tests.test_editions import load_samples

BANNER = "【テスト】これはテスト送信です。読者には届いていません。"


def _read(path) -> email.message.EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def test_file_outbox_keeps_every_mail_without_a_delivery_row(tmp_path):
    provider = FileProvider(tmp_path / "outbox")
    for n in range(3):  # a test send, another, a confirmation mail: all delivery_id 0
        data = f"Subject: {n}\r\n\r\n本文 {n}\r\n".encode()
        [result] = provider.send([OutgoingMessage(0, "magazine@news.example.jp", "editor@example.jp",
                                                  f"<{n}@news.example.jp>", data)])
        assert result.status == "accepted"
    files = sorted((tmp_path / "outbox").iterdir())
    assert len(files) == 3
    assert sorted(f.read_bytes() for f in files) == sorted(f"Subject: {n}\r\n\r\n本文 {n}\r\n".encode()
                                                          for n in range(3))
    assert all(f.name.endswith("-editor@example.jp.eml") for f in files)
    # A delivery's own file is still replaced by a resend of that delivery.
    for _ in range(2):
        provider.send([OutgoingMessage(7, "magazine@news.example.jp", "reader@example.jp", "<7@x>", b"x\r\n")])
    assert len(list((tmp_path / "outbox").glob("00000007-*"))) == 1


def test_test_send_is_marked_in_subject_and_body_and_never_overwritten(sqlite_project):
    cli = sqlite_project
    load_samples(cli)
    for fmt in ("html", "html", "text"):
        res = cli("edition", "send", "weekly", "--test-to", "editor@example.jp", "--fields", "education",
                  "--format", fmt)
        assert "accepted" in res.stdout
    files = sorted((cli.folder / "var" / "outbox").glob("*.eml"))
    assert len(files) == 3
    for path in files:
        msg = _read(path)
        assert msg["Subject"].startswith("【テスト】【週刊 地方行政ニュース】第1号"), msg["Subject"]
        text = msg.get_body(("plain",)).get_content()
        assert text.splitlines()[0] == BANNER
        html = msg.get_body(("html",))
        if html is not None:
            assert BANNER in html.get_content()
    # Nothing of the test reached the real edition: it is not even created.
    assert cli("edition", "list").stdout == ""
    preview = cli("edition", "preview", "weekly", "--format", "text").stdout
    assert "【テスト】" not in preview
