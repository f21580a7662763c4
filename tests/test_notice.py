"""The お知らせ block: a publication's standing notice from config.toml (the
print magazine, its cover and a purchase link), replaced for one edition with
``edition set N --notice-file F`` before it is sent; shown before the footer
in both parts.  Bad input is a one-line error naming the file and key."""

from __future__ import annotations

import email
import email.policy

import pytest

from newsletter.config import load_config
from newsletter.errors import ConfigError
from tests.conftest import CLI, write_config
from tests.test_editions import load_samples

# Appended to config.toml: a sub-table of the last [[publications]] (the weekly one).
NOTICE_TOML = '''
[publications.notice]
title = "月刊「地方行政」12月号を発売しました"
text = """特集は「自治体DXの現在地」。
書店、または当社オンラインストアでお求めいただけます。"""
link = "https://news.example.jp/shop/monthly-2026-12"
link_label = "12月号の購入はこちら"
image = "https://news.example.jp/shop/monthly-2026-12/cover.jpg"
image_alt = "月刊「地方行政」12月号の表紙"
'''


def _mails(cli: CLI) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted((cli.folder / "var" / "outbox").glob("*.eml"))]


@pytest.fixture
def notice_project(tmp_path, storage_url):
    cli = CLI(write_config(tmp_path / "project", storage_url, extra=NOTICE_TOML))
    cli("init")
    return cli


def test_config_notice_reaches_both_parts_before_the_footer(notice_project):
    cli = notice_project
    load_samples(cli)
    cli("edition", "send", "weekly")
    mails = _mails(cli)
    assert mails
    for msg in mails:
        text = msg.get_body(("plain",)).get_content()
        assert "【お知らせ】" in text and "◆ 月刊「地方行政」12月号を発売しました" in text
        assert text.index("【お知らせ】") < text.index("配信停止") < text.index("発行者")
        assert "https://news.example.jp/shop/monthly-2026-12" in text.splitlines()  # on its own line
        html = msg.get_body(("html",))
        if html is not None:
            body = html.get_content()
            assert 'alt="月刊「地方行政」12月号の表紙"' in body and 'width="84" height="119"' in body
            assert body.index("12月号の購入はこちら") < body.index("発行者")


def test_edition_notice_replaces_the_config_one_until_sending_starts(notice_project):
    cli = notice_project
    load_samples(cli)
    cli("edition", "create", "weekly")
    notice = cli.folder / "notice.toml"
    notice.write_text('title = "年末年始の休刊のお知らせ"\ntext = "12月29日から1月3日まで休刊します。"\n',
                      encoding="utf-8")
    assert "weekly 第1号: updated (content " in cli("edition", "set", "1", "--notice-file", notice).stdout
    preview = cli("edition", "preview", "weekly", "--edition", "1", "--format", "text").stdout
    assert "◆ 年末年始の休刊のお知らせ" in preview and "月刊「地方行政」" not in preview
    cli("edition", "send", "weekly")
    assert all("年末年始の休刊のお知らせ" in m.get_body(("plain",)).get_content() for m in _mails(cli))
    res = cli("edition", "set", "1", "--notice-file", notice, ok=False)
    assert res.exit_code == 1 and "a sent edition cannot be changed" in res.stderr  # only a draft changes


@pytest.mark.parametrize("body, where", [
    ('title = "お知らせ"\nimage = "https://news.example.jp/c.jpg"\n', "image_alt"),
    ('title = "お知らせ"\nlink = "news.example.jp/shop"\n', "link"),
    ('titel = "お知らせ"\n', "titel"),
    ('title = "お知らせ\n', "notice.toml"),
])
def test_bad_notice_file_is_one_line_naming_file_and_key(sqlite_project, body, where):
    cli = sqlite_project
    load_samples(cli)
    cli("edition", "create", "weekly")
    path = cli.folder / "notice.toml"
    path.write_text(body, encoding="utf-8")
    res = cli("edition", "set", "1", "--notice-file", path, ok=False)
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and "notice.toml" in res.stderr and where in res.stderr, res.stderr


def test_bad_notice_in_config_names_the_key(tmp_path):
    no_alt = NOTICE_TOML.replace('image_alt = "月刊「地方行政」12月号の表紙"\n', "")
    path = write_config(tmp_path / "p", "sqlite:///x.db", extra=no_alt)
    with pytest.raises(ConfigError, match=r"config.toml: publications\[0\]\.notice\.image_alt: an image needs"):
        load_config(path)
