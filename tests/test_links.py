"""Personal data only where the template puts it (newsletter.links).

An article, a feed item or a config string that spells the pipeline's
placeholders — ``%%NL_UNSUBSCRIBE_URL%%`` in a link to someone else's site, split
by tags in a full-text body so that html2text joins it, ``%%NL_GREETING%%`` in
the site name — must reach every reader exactly as written, while each
reader's own token appears only in the footer links and List-Unsubscribe.
Checked through the file outbox (the whole CLI pipeline), through every HTTP
provider against its contract server, and as a property over arbitrary text.
"""

from __future__ import annotations

import email
import re
from email import policy
from email.header import decode_header, make_header
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter import links
from newsletter.config import load_config
from newsletter.editions.compose import Recipient, Sending, compose
from newsletter.editions.render import render_variant
from newsletter.tokens import make_token, signing_keys, verify_token
from tests.conftest import CLI, write_config
from tests.test_http_providers import make_kit
from tests.test_render import EDU, LG, WHEN, article, fixed_articles, fixed_config, fixed_content

EVIL_URL = "https://evil.example.com/c?u=%%NL_UNSUBSCRIBE_URL%%"
EVIL_RSS = "https://evil.example.com/r?u=%%NL_UNSUBSCRIBE_URL%%&p=%%NL_PREFERENCES_URL%%"
SPLIT_BODY = "<p>解約はこちら: %%NL<b>_</b>UNSUBSCRIBE_URL%% ／ 宛名 %%NL<i>_</i>GREETING%%</p>"
SITE_NAME = "地方行政ニュース %%NL_GREETING%%"
SENDER_NAME = "地方行政ニュース編集部 %%NL_UNSUBSCRIBE_URL%%"
READERS = (("yamada@example.jp", "山田 太郎"), ("sato@example.jp", "佐藤 花子"))

RSS = f"""\
<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0">
<channel>
  <title>東雲県 報道発表</title>
  <link>https://www.pref.shinonome.example.jp/</link>
  <description>東雲県の報道発表資料</description>
  <item>
    <title>県立高校の入学者選抜、出願をオンライン化</title>
    <link>{EVIL_RSS.replace("&", "&amp;")}</link>
    <guid isPermaLink="false">shinonome-press-2026-0412</guid>
    <category>教育</category>
    <description><![CDATA[{SPLIT_BODY}]]></description>
  </item>
</channel>
</rss>
"""


def personal_tokens(key: bytes, sid: int) -> tuple[str, str]:
    return make_token(key, "unsubscribe", sid), make_token(key, "preferences", sid)


def assert_only_in_footer(text: str, html: str | None, list_unsubscribe: str, unsubscribe: str,
                          preferences: str) -> None:
    """Each token once in each part (the footer link) and in List-Unsubscribe; the
    evil links as written."""
    assert text.count(unsubscribe) == 1 and text.count(preferences) == 1, text
    assert f"/unsubscribe/{unsubscribe}" in text and f"/preferences/{preferences}" in text
    if html is not None:
        assert html.count(unsubscribe) == 1 and html.count(preferences) == 1
        assert re.search(rf'href="[^"]*/unsubscribe/{re.escape(unsubscribe)}"', html)
    assert unsubscribe in list_unsubscribe and preferences not in list_unsubscribe


# --------------------------------------------------------------------------- the whole pipeline


@pytest.fixture
def leaky_project(tmp_path) -> CLI:
    path = write_config(tmp_path / "project", f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}",
                        replace={'name = "地方行政ニュース"': f'name = "{SITE_NAME}"',
                                 'name = "地方行政ニュース編集部"': f'name = "{SENDER_NAME}"',
                                 "full_text = false": "full_text = true"})
    cli = CLI(path)
    cli("init")
    return cli


def _queue_leaky_articles(cli: CLI) -> None:
    for address, name in READERS:
        cli("subscriber", "add", address, "--name", name, "--fields", "education")
    body = cli.folder / "body.html"
    body.write_text(SPLIT_BODY, encoding="utf-8")
    cli("article", "add", "--field", "education", "--title", "外部サイトの解説記事", "--url", EVIL_URL,
        "--summary", "要約", "--body-file", body, "--author", "%%NL_GREETING%%")
    feed = cli.folder / "press.xml"
    feed.write_text(RSS, encoding="utf-8")
    cli("article", "import", feed)


def test_edition_check_warns_about_placeholder_lookalikes_naming_the_articles(leaky_project):
    _queue_leaky_articles(leaky_project)
    check = leaky_project("edition", "check", "weekly")  # warnings: exit 0, the send may go ahead
    lines = [line for line in check.output.splitlines() if "looks like a personal placeholder" in line]
    assert len(lines) == 2 and all(line.startswith("warning") for line in lines)
    assert "外部サイトの解説記事" in lines[0] + lines[1] and "県立高校の入学者選抜" in lines[0] + lines[1]


def test_article_and_feed_text_never_carries_a_readers_token(leaky_project):
    cli = leaky_project
    _queue_leaky_articles(cli)
    cli("edition", "send", "weekly")

    config = load_config(cli.config_path)
    key = config.secret()
    mails = sorted((cli.folder / "var" / "outbox").glob("*.eml"))
    assert len(mails) == 2
    seen = []
    for path in mails:
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        lu = str(msg["List-Unsubscribe"])
        sid = verify_token(signing_keys(config), "unsubscribe", lu.split("/unsubscribe/")[1].split(">")[0])
        assert sid is not None
        seen.append(sid)
        unsubscribe, preferences = personal_tokens(key, sid)
        assert_only_in_footer(text, html, lu, unsubscribe, preferences)
        # What the article, the feed and the config said, as they said it.
        assert EVIL_URL in text and EVIL_URL in html
        assert EVIL_RSS in text and EVIL_RSS.replace("&", "&amp;") in html
        assert "%%NL_UNSUBSCRIBE_URL%%" in text  # the split body, joined by html2text, not filled
        assert SITE_NAME in html and SENDER_NAME in html
        # (decoded with email.header: policy.default's address parser puts a space between encoded words)
        raw_from = re.search(rb"(?m)^From: ([^\r\n]*(?:\r\n [^\r\n]*)*)", path.read_bytes()).group(1).decode("ascii")
        assert f"{SENDER_NAME} <" in str(make_header(decode_header(raw_from)))
        name = dict(READERS)[msg["To"].addresses[0].addr_spec]
        assert text.count(f"{name} 様") == 1 and html.count(f"{name} 様") == 1  # only the greeting
        assert not re.search(r"%%NL_[A-Z_]+_[0-9a-f]{16}%%", text + html)  # every real placeholder filled
    assert len(set(seen)) == 2


def test_config_strings_that_spell_a_placeholder_stay_literal():
    config = fixed_config()
    content = fixed_content(config)
    content["site"]["name"] = SITE_NAME
    content["sender"]["name"] = SENDER_NAME
    content["publication"]["title"] = "週刊 %%NL_PREFERENCES_URL%% ニュース"
    rendered = render_variant(content, (LG, EDU), config.templates_dir, when=WHEN, html=True)
    m = compose(rendered, Recipient(1, 9, "reader@example.jp", "山田 太郎"), SENDING, now=WHEN)
    text, html = m.personal_text(), m.personal_html()
    assert SITE_NAME in html and SENDER_NAME in html and "週刊 %%NL_PREFERENCES_URL%% ニュース" in html
    assert rendered.subject.startswith("【週刊 %%NL_PREFERENCES_URL%% ニュース】")
    assert text.count("山田 太郎 様") == 1 and html.count("山田 太郎 様") == 1
    unsubscribe, preferences = personal_tokens(SENDING.key, 9)
    assert_only_in_footer(text, html, m.headers["List-Unsubscribe"], unsubscribe, preferences)


# --------------------------------------------------------------------------- HTTP providers


def _evil_content():
    config = fixed_config()
    arts = fixed_articles()
    arts.append(article(106, "外部サイト %recipient.list_unsubscribe% の解説", EDU,
                        summary="要約", body=SPLIT_BODY + "<p>宛先 %recipient.delivery_id% / %%NL_GREETING%%</p>",
                        body_format="html"))
    content = fixed_content(config, arts, full_text=True)
    for a in content["articles"]:
        if a["id"] == 106:
            a["url"] = EVIL_URL
    content["site"]["name"] = SITE_NAME
    content["sender"]["name"] = SENDER_NAME
    return config, content


SENDING = Sending(
    edition_id=7, edition_stamp=1796079600, publication_slug="weekly", publication_title="週刊 地方行政ニュース",
    timezone="Asia/Tokyo", from_name=SENDER_NAME, from_address="magazine@news.example.jp",
    reply_to=None, envelope_from="bounces@news.example.jp", base_url="https://news.example.jp",
    domain="news.example.jp", unsubscribe_mailto="unsubscribe@news.example.jp",
    key=b"links-test-key-0123456789abcdef01",
)


@pytest.mark.parametrize("kind", ["sendgrid", "mailgun", "postmark", "ses"])
def test_http_provider_payloads_fill_only_the_templates_places(kind, monkeypatch):
    config, content = _evil_content()
    rendered = render_variant(content, (LG, EDU), config.templates_dir, when=WHEN, html=True)
    messages = [compose(rendered, Recipient(i, 500 + i, address, name), SENDING, now=WHEN)
                for i, (address, name) in enumerate(READERS, 1)]
    kit = make_kit(kind, monkeypatch)
    try:
        provider = kit.provider()
        results = provider.send(messages)
        provider.close()
        assert [r.status for r in results] == ["accepted", "accepted"], [r.reply for r in results]
        delivered = {d.recipient: d for d in kit.server.delivered}
    finally:
        kit.server.stop()
    for i, (address, name) in enumerate(READERS, 1):
        d = delivered[address]
        if d.raw is not None:  # SES: our own MIME
            msg = email.message_from_bytes(d.raw, policy=policy.default)
            text, html = msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()
        else:
            text, html = d.text, d.html
        unsubscribe, preferences = personal_tokens(SENDING.key, 500 + i)
        assert_only_in_footer(text, html, d.headers.get("List-Unsubscribe", "") or messages[i - 1].headers[
            "List-Unsubscribe"], unsubscribe, preferences)
        assert EVIL_URL in text and EVIL_URL in html
        assert "%recipient.list_unsubscribe%" in text and "%recipient.delivery_id%" in text
        assert "%%NL_GREETING%%" in text and SITE_NAME in html
        assert text.count(f"{name} 様") == 1 and html.count(f"{name} 様") == 1
        assert str(500 + i) not in re.sub(r"/(unsubscribe|preferences)/\S+", "", text)


# --------------------------------------------------------------------------- any text at all

# Control characters are refused at input (and lxml cannot hold them): not this test's subject.
_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60)
_SHAPES = st.sampled_from(["%%NL_UNSUBSCRIBE_URL%%", "%%NL_PREFERENCES_URL%%", "%%NL_GREETING%%", "%%", "%",
                           "%%NL<b>_</b>GREETING%%", "%recipient.nl_greeting%", "様", "/unsubscribe/", "\n"])
_ARTICLE_TEXT = st.lists(st.one_of(_TEXT, _SHAPES), max_size=6).map("".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=_ARTICLE_TEXT, summary=_ARTICLE_TEXT, author=_ARTICLE_TEXT, path=_ARTICLE_TEXT)
def test_arbitrary_article_text_never_yields_a_personal_token(title, summary, author, path):
    config = fixed_config()
    a = article(107, title.strip() or "題", EDU, summary=summary, author=author)
    a["url"] = "https://evil.example.com/" + "".join(c for c in path if c.isprintable() and not c.isspace())
    content = fixed_content(config, [a])
    rendered = render_variant(content, (EDU,), config.templates_dir, when=WHEN, html=True)
    m = compose(rendered, Recipient(1, 4242, "reader@example.jp", "読者 一郎"), SENDING, now=WHEN)
    unsubscribe, preferences = personal_tokens(SENDING.key, 4242)
    text, html = m.personal_text(), m.personal_html()
    assert text.count(unsubscribe) == 1 and html.count(unsubscribe) == 1
    assert text.count(preferences) == 1 and html.count(preferences) == 1
    assert text.count("読者 一郎 様") == 1


# --------------------------------------------------------------------------- the pieces


def test_placeholders_are_new_for_every_render_and_never_in_the_text_twice():
    config = fixed_config()
    content = fixed_content(config)
    a = render_variant(content, (EDU,), config.templates_dir, when=WHEN, html=True)
    b = render_variant(content, (EDU,), config.templates_dir, when=WHEN, html=True)
    assert a.placeholders != b.placeholders
    assert all(links.PLACEHOLDER.fullmatch(p) for p in a.placeholders.all())
    assert a.placeholders.unsubscribe in a.text and a.placeholders.unsubscribe not in b.text


def test_fill_is_one_pass_and_escapes_for_html():
    ph = links.Placeholders.new()
    values = ph.values("<A & B> 様", ph.preferences, "https://x.example/p?a=1&b=2")
    assert links.fill(f"{ph.greeting}|{ph.unsubscribe}|{ph.preferences}", values) == \
        f"<A & B> 様|{ph.preferences}|https://x.example/p?a=1&b=2"  # a value is not filled again
    assert links.fill(f"{ph.greeting}{ph.preferences}", values, escape=True) == \
        "&lt;A &amp; B&gt; 様https://x.example/p?a=1&amp;b=2"


def test_subject_template_cannot_hold_a_personal_part(tmp_path):
    import shutil

    from newsletter.errors import InputError

    config = fixed_config()
    templates = tmp_path / "templates"
    shutil.copytree(config.templates_dir, templates)
    (templates / "subject.txt.j2").write_text("{{ greeting }} 第{{ edition.number }}号", encoding="utf-8")
    with pytest.raises(InputError, match="subject.txt.j2"):
        render_variant(fixed_content(config), (EDU,), templates, when=WHEN)


def test_links_verify_with_rotated_keys(monkeypatch, tmp_path):
    """A link signed with an old key (now in old_secrets_env) still verifies."""
    old, new = "old-key-" + "0" * 32, "new-key-" + "1" * 32
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}",
                        replace={'# old_secrets_env = "NEWSLETTER_OLD_SECRETS"':
                                 'old_secrets_env = "NEWSLETTER_OLD_SECRETS"'})
    monkeypatch.setenv("NEWSLETTER_SECRET", new)
    monkeypatch.setenv("NEWSLETTER_OLD_SECRETS", old)
    config = load_config(path)
    keys = signing_keys(config)
    url = links.unsubscribe_url("https://news.example.jp", old.encode(), 77)
    assert verify_token(keys, "unsubscribe", url.rsplit("/", 1)[1]) == 77
    assert links.unsubscribe_url("", keys[0], 77).startswith("/unsubscribe/77.")
    assert Path(links.archive_url("", "weekly", 3)).as_posix() == "/archive/weekly/3"


_JA = st.text(st.sampled_from("あいうえお漢字、。「」（）ー・ 　abcXYZ019-/.%_"), max_size=80)


@settings(max_examples=200, deadline=None)
@given(before=_JA, after=_JA, width=st.integers(min_value=8, max_value=76))
def test_the_wrapper_never_breaks_a_placeholder(before, after, width):
    """japanese.wrap keeps a run of printable ASCII on one line; a placeholder is one."""
    from newsletter.japanese import wrap

    ph = links.Placeholders.new()
    for marker in ph.all():
        assert marker in wrap(before + marker + after, width)


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)  # any text but lone surrogates


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(_TEXT, min_size=1, max_size=5), values=st.lists(_TEXT, min_size=4, max_size=4),
       escape=st.booleans())
def test_json_filled_is_the_filled_template_as_json(pieces, values, escape):
    """Postmark's bodies are spliced from the variant's text escaped once for JSON
    (providers.http.json_filled): byte for byte what encoding the filled template
    gives — quotes, backslashes, control characters, U+2028, Japanese and any
    placeholder lookalike in the text or in a value included."""
    from newsletter.providers.http import json_body, json_filled

    marks = links.Placeholders.new()
    keys = (*marks.all(), marks.reader)
    template = "".join(p + keys[i % 4] for i, p in enumerate(pieces[:-1])) + pieces[-1]
    personal = dict(zip(keys, values, strict=True))
    assert json_filled(template, personal, escape=escape) == \
        json_body(links.fill(template, personal, escape=escape))[1:-1]
