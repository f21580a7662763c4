"""Japanese mail end to end: an edition whose articles are the corpus of
tests/test_japanese.py goes through the real SMTP test server to readers in
UTF-8 and in ISO-2022-JP (by the publication's charset and by a subscriber's
own), and every message, parsed back with the ``email`` package, decodes to
exactly the text we expect: the corpus as it is in UTF-8, mapped (① → (1),
ｶﾀｶﾅ → カタカナ, emoji removed) in ISO-2022-JP, every line within the width.
"""

from __future__ import annotations

import email
import html as htmllib
import json
import re
from email import policy

import pytest
from sqlalchemy import select

from newsletter.config import load_config
from newsletter.delivery import sending_for
from newsletter.editions.assemble import VariantKey
from newsletter.editions.compose import personal_urls
from newsletter.editions.render import render_variant
from newsletter.japanese import DEFAULT_WIDTH, display_width, fits_jis, map_for_jis
from newsletter.links import fill
from newsletter.store import open_engine
from newsletter.store.editions import load_content
from newsletter.store.tables import deliveries, editions
from tests.conftest import CLI, write_config
from tests.test_japanese import EMOJI, HALF_WIDTH, LONG_SENTENCE, LONG_URL, MACHINE_DEPENDENT, MIXED_ASCII, PUNCTUATION

ARTICLES = [
    {
        "title": "東雲県、「第2次DX推進計画」素案を公表\u3000県の行政手続の9割をオンライン化へ",
        "url": "https://news.example.jp/local-government/2026/11/dx-plan-2",
        "summary": LONG_SENTENCE + "。" + MIXED_ASCII + LONG_URL,
        "fields": ["local-government"],
        "author": "編集部",
        "guid": "ja-e2e-1",
        "pinned": True,
    },
    {
        "title": "㈱東雲データ、Ⅰ期システムを刷新\u3000①窓口②電子申請の改善策",
        "url": "https://news.example.jp/administration/2026/11/shinonome-data",
        "summary": MACHINE_DEPENDENT + PUNCTUATION,
        "fields": ["administration"],
        "author": "ｼﾉﾉﾒ通信",
        "guid": "ja-e2e-2",
    },
    {
        "title": "ｵﾝﾗｲﾝ学習ｼｽﾃﾑの利用者ｱﾝｹｰﾄ結果🎉",
        "url": "https://news.example.jp/education/2026/11/online-learning",
        "summary": HALF_WIDTH + EMOJI,
        "fields": ["education"],
        "guid": "ja-e2e-3",
    },
]
# The publisher's own subject line, with a machine-dependent character in it.
SUBJECT_TEMPLATE = (
    "{%- autoescape false -%}【{{ publication.title }}】第{{ edition.number }}号 {{ edition.short_date }} ㈱特集"
    "{%- endautoescape -%}"
)
# email → (name, format, charset override)
READERS = {
    "sato.hanako@example.jp": ("佐藤 花子", "html", None),
    "yamada.taro@example.jp": ("ﾔﾏﾀﾞ ﾀﾛｳ", "text", "iso-2022-jp"),
    "suzuki.ichiro@example.jp": ("鈴木 一郎", "html", "utf-8"),
    "takahashi.misaki@example.jp": ("髙橋 美咲", "html", "iso-2022-jp"),  # 髙: not in JIS X 0208
}
URL_LINE = re.compile(r"^\s*(https?://\S+|%%NL_\w+%%)\s*$")


def smtp_provider(server) -> str:
    return f'[provider]\nkind = "smtp"\nhost = "{server.host}"\nport = {server.port}\nsecurity = "none"\ntimeout = 10\n'


@pytest.fixture(params=["utf-8", "iso-2022-jp"])
def jp_project(request, tmp_path, storage_url, smtp_server):
    folder = tmp_path / "project"
    config = write_config(folder, storage_url, provider=smtp_provider(smtp_server),
                          replace={'charset = "utf-8"            # or "iso-2022-jp"':
                                   f'charset = "{request.param}"'})
    (folder / "templates" / "subject.txt.j2").write_text(SUBJECT_TEMPLATE, encoding="utf-8")
    cli = CLI(config)
    cli("init")
    (folder / "articles.json").write_text(json.dumps(ARTICLES, ensure_ascii=False), encoding="utf-8")
    cli("article", "import", folder / "articles.json")
    for address, (name, fmt, charset) in READERS.items():
        cli("subscriber", "add", address, "--name", name, "--format", fmt,
            *(["--charset", charset] if charset else []))
    return cli, request.param


def expected_charset(address: str, pub_charset: str) -> tuple[str, str]:
    """(the variant's charset, the charset the message is sent in)."""
    charset = READERS[address][2] or pub_charset
    if charset == "iso-2022-jp" and not fits_jis(map_for_jis(READERS[address][0], names=True)[0]):
        return charset, "utf-8"  # that one message falls back
    return charset, charset


def test_japanese_edition_in_both_charsets(jp_project, smtp_server):
    cli, pub_charset = jp_project
    out = cli("edition", "send", "weekly").stdout
    assert "created weekly 第1号: 3 articles" in out

    config = load_config(cli.config_path)
    engine = open_engine(config.storage_url)
    with engine.connect() as conn:
        edition = conn.execute(select(editions)).one()
        variants = {r.email: (VariantKey.decode(r.variant), r.subscriber_id)
                    for r in conn.execute(select(deliveries.c.email, deliveries.c.variant, deliveries.c.subscriber_id))}
    content = load_content(edition)
    when = edition.scheduled_for or edition.created_at
    sending = sending_for(config, edition)
    received = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    assert sorted(received) == sorted(READERS)

    for address, (name, fmt, _) in READERS.items():
        variant_charset, sent_charset = expected_charset(address, pub_charset)
        key, subscriber_id = variants[address]
        assert key.charset == variant_charset
        raw = received[address].data
        msg = email.message_from_bytes(raw, policy=policy.default)
        rendered = render_variant(content, key.fields, config.templates_dir, when=when, html=fmt == "html",
                                  charset=variant_charset)
        mapped = variant_charset == "iso-2022-jp"

        # Headers: in the message's charset, decoding to the (mapped) text.
        raw_subject = re.search(rb"(?m)^Subject: (.*(?:\r\n[ \t].*)*)", raw).group(1)
        assert raw_subject.lower().startswith(f"=?{sent_charset}?b?".encode())
        assert msg["Subject"] == rendered.subject
        assert msg["Subject"].startswith("【週刊 地方行政ニュース】第1号 ")
        assert msg["Subject"].endswith("(株)特集" if mapped else "㈱特集")
        to_name = msg["To"].addresses[0].display_name
        if sent_charset == "iso-2022-jp":
            assert to_name == map_for_jis(name, names=True)[0]
            assert raw.isascii() and b"\x1b$B" in raw  # 7-bit JIS all through
        else:
            assert to_name == name
        if address == "yamada.taro@example.jp":
            assert to_name == "ヤマダ タロウ"  # half-width katakana, written full-width
        if address == "takahashi.misaki@example.jp":
            assert to_name == "髙橋 美咲"  # never rewritten: this message went as UTF-8
        assert str(msg["From"]) == "地方行政ニュース編集部 <magazine@news.example.jp>"

        # Bodies: exactly the rendered variant with this reader's parts in.
        parts = list(msg.iter_parts()) if msg.is_multipart() else [msg]
        assert [p.get_content_type() for p in parts] == (["text/plain", "text/html"] if fmt == "html"
                                                         else ["text/plain"])
        assert all(p.get_content_charset() == sent_charset for p in parts)
        greeting = f"{to_name} 様"
        unsubscribe, preferences = personal_urls(sending, subscriber_id)
        personal = rendered.placeholders.values(greeting, unsubscribe, preferences)
        text = parts[0].get_content().replace("\r\n", "\n")
        expected_text = fill(rendered.text, personal)
        # (a single-part message ends with one more CRLF, which ends the message, not the text)
        assert text.rstrip("\n") == expected_text.rstrip("\n")
        if sent_charset == "iso-2022-jp":
            assert parts[0]["Content-Transfer-Encoding"] == "7bit"

        # What the reader reads: the corpus, mapped where ISO-2022-JP requires.
        flat = "".join(line.lstrip(" ") for line in text.split("\n"))
        for piece in (LONG_SENTENCE, MIXED_ASCII, LONG_URL, MACHINE_DEPENDENT, PUNCTUATION, HALF_WIDTH, EMOJI):
            want = map_for_jis(piece)[0] if mapped else piece
            assert want in flat, (address, want[:20])
        if mapped:
            assert "(株)東雲データと(有)日和工務店が(1)計画策定" in flat
            assert "オンライン申請システム" in flat and "🎉" not in text and "①" not in text
        else:
            assert "㈱東雲データと㈲日和工務店が①計画策定" in flat and "🎉" in text
        for article in content["articles"]:  # titles as stored (the importer folds U+3000 to a space)
            title = map_for_jis(article["title"])[0] if mapped else article["title"]
            assert f"◆ {title}" in "".join(re.sub(r"\n {3}", "", text)), title

        # Every line within the width, but for a URL alone on its line.
        for line in text.split("\n"):
            assert display_width(line) <= DEFAULT_WIDTH or URL_LINE.match(line), line

        if fmt == "html":
            # (<wbr> between BudouX phrases: where a line of the HTML may end)
            body = htmllib.unescape(parts[1].get_content()).replace("<wbr>", "")
            assert greeting in body
            for piece in (MACHINE_DEPENDENT, HALF_WIDTH, EMOJI):
                assert (map_for_jis(piece)[0] if mapped else piece) in body
            assert f'<meta charset="{sent_charset}">' in body


def test_preview_reports_what_it_replaced(jp_project):
    cli, _ = jp_project
    result = cli("edition", "preview", "weekly", "--format", "text", "--charset", "iso-2022-jp")
    assert "replaced: " in result.stderr
    for shown in ("㈱ → (株)", "① → (1)", "ｵﾝﾗｲﾝ → オンライン", "🎉 → (removed)", "〝 → “"):
        assert shown in result.stderr, shown
    assert "(株)東雲データ" in result.stdout and "㈱" not in result.stdout
    utf8 = cli("edition", "preview", "weekly", "--format", "text", "--charset", "utf-8")
    assert "replaced" not in utf8.stderr and "㈱東雲データ" in utf8.stdout
