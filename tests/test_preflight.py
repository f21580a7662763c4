"""Preflight (``edition check``): what would reach readers broken is an error,
what merely degrades is a warning, and checking changes nothing."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from sqlalchemy import func, select

from newsletter.config import load_config
from newsletter.editions import creation
from newsletter.editions.assemble import VariantKey
from newsletter.errors import InputError
from newsletter.preflight import (
    GMAIL_CLIP_BYTES,
    Plan,
    check_edition,
    check_plan,
    css_problems,
    has_errors,
    link_problem,
)
from newsletter.preflight import plan_send as preflight_plan
from newsletter.store import open_engine
from newsletter.store.tables import articles, deliveries, editions
from tests.test_render import ADMIN, EDU, LG, WHEN, fixed_articles, fixed_config, fixed_content, premailer_runs

ALL = (LG, ADMIN, EDU)


def plan_for(content: dict, variants: dict[VariantKey, int] | None = None, **changes) -> Plan:
    variants = variants or {VariantKey(ALL, "html", "utf-8"): 3, VariantKey(ALL, "text", "iso-2022-jp"): 2}
    return Plan(content, WHEN, content["number"], False, variants, **changes)


def codes(findings, severity: str) -> list[str]:
    return [f.code for f in findings if f.severity == severity]


def test_the_fixed_edition_is_clean():
    config = fixed_config()
    findings = check_plan(config, config.publication("weekly"), plan_for(fixed_content(config)))
    assert not has_errors(findings)
    assert codes(findings, "warning") == []
    info = [f.message for f in findings if f.severity == "info"]
    assert any(m.startswith("HTML ") and "KB" in m for m in info)
    assert any("text lines within 70 columns" in m for m in info)
    # Every finding of a variant names it.
    assert {f.variant for f in findings} == {"local-government,administration,education|html|utf-8",
                                             "local-government,administration,education|text|iso-2022-jp"}


def test_broken_links_are_errors_and_http_is_a_warning():
    arts = fixed_articles()
    arts[0]["url"] = "https//news.example.jp/articles/1"  # the colon forgotten
    arts[1]["url"] = "http://news.example.jp/articles/2"
    arts[2]["url"] = "/articles/3"
    config = fixed_config()
    findings = check_plan(config, config.publication("weekly"), plan_for(fixed_content(config, arts)))
    assert has_errors(findings)
    errors = [f.message for f in findings if f.severity == "error"]
    assert any("https//news.example.jp/articles/1" in m and "no scheme" in m for m in errors)
    assert any("/articles/3" in m for m in errors)
    warnings = [f.message for f in findings if f.severity == "warning"]
    assert any("http://news.example.jp/articles/2" in m and "not https" in m for m in warnings)


@pytest.mark.parametrize(("url", "severity"), [
    ("https://news.example.jp/a?b=1#c", None),
    ("mailto:henshu@news.example.jp", None),
    ("tel:03-1234-5678", None),
    ("%%NL_UNSUBSCRIBE_URL%%", "error"),  # an article's URL that only looks like a placeholder: no link
    ("http://news.example.jp/", "warning"),
    ("https://例え.jp/パス", "warning"),
    ("", "error"),
    ("https//news.example.jp", "error"),
    ("javascript:alert(1)", "error"),
    ("https://", "error"),
    ("https://localhost/", "error"),
    ("https://news.example.jp/a b", "error"),
    ("https://news.example.jp:99999/", "error"),
    ("mailto:", "error"),
    ("#top", "error"),
])
def test_link_problem(url, severity):
    problem = link_problem(url)
    assert (problem[0] if problem else None) == severity


def test_html_over_gmails_limit_is_an_error():
    sentence = "地方自治体の行政手続のオンライン化について詳しく説明します。"
    body = "\n\n".join(f"第{i}段落。" + sentence * 20 for i in range(60))
    arts = [a | {"body": body} for a in fixed_articles()]
    config = fixed_config()
    content = fixed_content(config, arts, full_text=True)
    findings = check_plan(config, config.publication("weekly"), plan_for(content))
    [size] = [f for f in findings if f.code == "html-size"]
    assert size.severity == "error" and "102 KB" in size.message
    assert len(json.dumps(content, ensure_ascii=False).encode()) > GMAIL_CLIP_BYTES


def test_iso_2022_jp_mapping_is_reported_and_the_unmappable_warned():
    arts = fixed_articles()
    arts[0]["summary"] = "㈱東雲データが①窓口②電子申請を担う。ｵﾝﾗｲﾝ申請に対応🎉"
    arts[1]["summary"] = "髙橋市長は記者会見で、﨑山地区の計画を発表した。"
    config = fixed_config()
    findings = check_plan(config, config.publication("weekly"), plan_for(fixed_content(config, arts),
                                                                          names_not_in_jis=("髙橋 美咲",)))
    assert not has_errors(findings)
    jis = [f for f in findings if f.variant.endswith("|iso-2022-jp")]
    [mapped] = [f.message for f in jis if f.code == "charset-mapped"]
    assert "㈱ → (株) ×1" in mapped and "① → (1) ×1" in mapped and "ｵﾝﾗｲﾝ → オンライン" in mapped
    assert "🎉 → (removed)" in mapped
    [rest] = [f for f in jis if f.code == "charset-unmappable"]
    assert rest.severity == "warning" and "髙 (U+9AD9)" in rest.message and "﨑 (U+FA11)" in rest.message
    assert "2 mail(s) go out as UTF-8" in rest.message
    assert any("髙橋 美咲" in f.message for f in findings if f.variant == "")
    # The UTF-8 variant has nothing to map.
    assert not [f for f in findings if f.variant.endswith("|utf-8") and f.code.startswith("charset")]


def test_long_subject_wide_lines_and_empty_summaries_are_warnings(tmp_path):
    config = fixed_config()
    templates = tmp_path / "templates"
    shutil.copytree(config.templates_dir, templates)
    (templates / "subject.txt.j2").write_text(
        "【{{ publication.title }}】第{{ edition.number }}号 "
        "特集：人口減少時代の公共施設再編と広域連携の最新動向を詳しく解説",
        encoding="utf-8")
    # A hand-written text template: preflight checks what it produces too.
    (templates / "digest.txt.j2").write_text(
        "{{ greeting }}\n\n" + "長い行" * 30 + "\n\n配信停止\n{{ links.unsubscribe }}\n", encoding="utf-8")
    config = dataclasses.replace(config, templates_dir=templates)
    arts = fixed_articles()
    arts[0]["summary"] = ""
    findings = check_plan(config, config.publication("weekly"), plan_for(fixed_content(config, arts)))
    warnings = {f.code: f.message for f in findings if f.severity == "warning"}
    assert "phones show about 40" in warnings["subject"]
    assert "has no summary" in warnings["section"]
    assert not has_errors(findings)  # the text template is wrapped by render like any text part
    assert "text-width" not in warnings


def test_missing_unsubscribe_link_is_an_error(tmp_path):
    config = fixed_config()
    templates = tmp_path / "templates"
    shutil.copytree(config.templates_dir, templates)
    (templates / "digest.txt.j2").write_text("{{ greeting }}\n\n本文\n", encoding="utf-8")
    config = dataclasses.replace(config, templates_dir=templates)
    findings = check_plan(config, config.publication("weekly"), plan_for(fixed_content(config)))
    assert any(f.code == "unsubscribe" and f.severity == "error" for f in findings)


def test_text_width_comes_from_the_publication():
    config = fixed_config()
    pub = dataclasses.replace(config.publication("weekly"), text_width=40)
    # Frozen into the content at creation, which is what the engine wraps with: the
    # check renders and measures exactly that.
    findings = check_plan(config, pub, plan_for(fixed_content(config, text_width=40)))
    assert any("text lines within 40 columns" in f.message for f in findings)


# --------------------------------------------------------------------------- the command


def counts(cli) -> tuple[int, int, int]:
    engine = open_engine(load_config(cli.config_path).storage_url)
    with engine.connect() as conn:
        result = (conn.execute(select(func.count()).select_from(editions)).scalar(),
                  conn.execute(select(func.count()).select_from(deliveries)).scalar(),
                  conn.execute(select(func.count()).where(articles.c.status == "queued")).scalar())
    engine.dispose()
    return result


def test_edition_check_changes_nothing_and_exits_by_severity(project, tmp_path):
    cli = project
    assert "nothing new to send" in cli("edition", "check", "weekly").stdout
    items = [
        {"title": "東雲県が素案を公表", "url": "https://news.example.jp/a/1", "summary": "①窓口の改善。",
         "fields": ["local-government"], "guid": "pf-1"},
        {"title": "日和市の補正予算", "url": "http://news.example.jp/a/2", "summary": "髙橋市長が発表。",
         "fields": ["administration"], "guid": "pf-2"},
    ]
    (tmp_path / "a.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    cli("article", "import", tmp_path / "a.json")
    cli("subscriber", "add", "sato@example.jp", "--name", "佐藤 花子")
    cli("subscriber", "add", "yamada@example.jp", "--name", "山田 太郎", "--format", "text",
        "--charset", "iso-2022-jp")
    before = counts(cli)
    result = cli("edition", "check", "weekly")
    assert result.exit_code == 0
    out = result.stdout
    assert "weekly 第1号 (next edition): 2 articles, 2 variant(s), 2 reader(s)" in out
    assert "variant local-government,administration | text | iso-2022-jp" in out
    assert "mapped: ① → (1) ×1" in out
    assert "髙 (U+9AD9) not in ISO-2022-JP" in out
    assert "http://news.example.jp/a/2 — not https" in out
    assert "0 error(s), 3 warning(s): ready to send" in out
    assert counts(cli) == before  # nothing created, nothing published

    # The importer refuses a bad article URL; a link inside a full-text body gets through.
    items.append({"title": "リンク切れ", "url": "https://news.example.jp/a/3", "fields": ["education"],
                  "guid": "pf-3", "body": "詳しくは[県の資料](https//www.pref.example.jp/a.pdf)を参照。"})
    (tmp_path / "a.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    cli("article", "import", tmp_path / "a.json")
    cli("subscriber", "add", "suzuki@example.jp", "--fields", "education")
    source = cli.config_path.read_text(encoding="utf-8")
    cli.config_path.write_text(source.replace("full_text = false", "full_text = true"), encoding="utf-8")
    result = cli("edition", "check", "weekly", "-q", ok=False)
    assert result.exit_code == 1
    assert "ERROR   link '県の資料': https//www.pref.example.jp/a.pdf — no scheme" in result.stdout
    assert "info" not in result.stdout  # -q: errors and warnings only
    assert "would reach readers broken" in result.stderr
    assert counts(cli)[:2] == before[:2]

    config = load_config(cli.config_path)
    engine = open_engine(config.storage_url)
    findings = check_edition(engine, config, config.publication("weekly"))
    engine.dispose()
    assert has_errors(findings)


def test_edition_check_looks_at_the_unfinished_edition(project, tmp_path):
    cli = project
    items = [{"title": "東雲県が素案を公表", "url": "https://news.example.jp/a/1", "summary": "概要。",
              "fields": ["local-government"], "guid": "pf-1"}]
    (tmp_path / "a.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    cli("article", "import", tmp_path / "a.json")
    cli("subscriber", "add", "sato@example.jp", "--name", "髙橋 花子", "--charset", "iso-2022-jp")
    cli("edition", "create", "weekly")
    out = cli("edition", "check", "weekly").stdout
    assert "weekly 第1号 (draft, started by 'edition send'): 1 articles, 1 variant(s), 1 reader(s)" in out
    assert "髙橋 花子" in out
    # An edition already sending (created in one step, as 'edition send' does) is resumed.
    cli("edition", "cancel", "1")
    config = load_config(cli.config_path)
    engine = open_engine(config.storage_url)
    creation.create_edition(engine, config, config.publication("weekly"))
    engine.dispose()
    out = cli("edition", "check", "weekly").stdout
    assert "weekly 第2号 (unfinished edition, resumed by 'edition send'): 1 articles, 1 variant(s), 1 reader(s)" \
        in out
    assert "髙橋 花子" in out


@pytest.mark.parametrize(("where", "text"), [
    ("title", "配信停止は %%NL_UNSUBSCRIBE_URL%% から"),
    ("summary", "宛名: %%NL_GREETING%% 様"),
    ("author", "%%SENDER%%"),
    ("url", "https://evil.example.com/c?u=%%NL_UNSUBSCRIBE_URL%%"),
    ("url", "https://evil.example.com/c?u=%recipient.list_unsubscribe%"),
    ("url", "https://evil.example.com/c?u=%unsubscribe_url%"),
    ("body", "<p>解約: %%NL<b>_</b>UNSUBSCRIBE_URL%%</p>"),  # joined once the tags are gone
])
def test_article_text_that_looks_like_a_placeholder_is_a_warning_naming_the_article(where, text):
    config = fixed_config()
    arts = fixed_articles()
    target = next(a for a in arts if a["id"] == 103)
    if where == "body":
        target.update(body=text, body_format="html")
    else:
        target[where] = text
    content = fixed_content(config, arts, full_text=where == "body")
    findings = check_plan(config, config.publication("weekly"), plan_for(content))
    found = [f for f in findings if f.code == "placeholder"]
    assert [f.severity for f in found] == ["warning"]
    assert "article 103 'マイナンバーカードの利用拡大に向けた省令改正案'" in found[0].message or where == "title"
    assert "article 103" in found[0].message and f"its {where}" in found[0].message
    assert not has_errors(f for f in findings if f.code != "link")  # a warning: the send goes ahead


def test_css_that_gmail_or_outlook_drops_is_a_warning(tmp_path):
    """The shipped template passes; a custom one that lays out with flexbox,
    positioning or a bare max-width is warned about, naming property and clients."""
    config = fixed_config()
    html = render_variant_html(config)
    assert css_problems(html) == []  # tables, the mso ghost table, @media rules left alone
    templates = tmp_path / "templates"
    shutil.copytree(config.templates_dir, templates)
    source = (templates / "digest.html.j2").read_text(encoding="utf-8")
    source = source.replace(".container {\n  width: 100%;", ".container {\n  display: flex;\n  width: 100%;")
    source = source.replace('<span class="preheader"', '<div style="position: absolute; top: 0">ヘッダー</div>'
                                                        '<span class="preheader"')
    source = source.replace("<!--[if mso]>", "<!--[if gte mso 99]>")  # no ghost table for Outlook
    (templates / "digest.html.j2").write_text(source, encoding="utf-8")
    config = dataclasses.replace(config, templates_dir=templates)
    findings = check_plan(config, config.publication("weekly"), plan_for(fixed_content(config)))
    css = [f.message for f in findings if f.code == "css"]
    assert all(f.severity == "warning" for f in findings if f.code == "css")
    assert any("'display:flex'" in m and "Outlook" in m for m in css)
    assert any("'position:absolute'" in m and "Gmail" in m for m in css)
    assert any("'max-width'" in m for m in css)
    assert not has_errors(findings)


def render_variant_html(config) -> str:
    from newsletter.editions.render import render_variant

    return render_variant(fixed_content(config), ALL, config.templates_dir, when=WHEN).html


def test_default_subject_is_the_first_headline_and_its_jis_losses_are_warned():
    """【誌名】第N号 and the first headline, cut at a phrase boundary to ~40 full-width
    characters; what ISO-2022-JP readers would see changed in it is a warning."""
    arts = fixed_articles()
    arts[3]["title"] = "㈱東雲データ、Ⅰ期システムを刷新🎉 窓口業務のオンライン化と書かない窓口の全庁展開へ"
    config = fixed_config()
    content = fixed_content(config, arts)
    findings = check_plan(config, config.publication("weekly"), plan_for(content))
    subject = {f.variant.split("|")[-1]: f for f in findings if f.code == "subject"}
    assert subject["iso-2022-jp"].severity == "warning"
    assert "㈱ → (株)" in subject["iso-2022-jp"].message and "🎉 → (removed)" in subject["iso-2022-jp"].message
    assert subject["utf-8"].severity == "info"  # within 40 full-width characters: cut to fit
    from newsletter.editions.render import render_variant

    rendered = render_variant(content, ALL, config.templates_dir, when=WHEN)
    assert rendered.subject.startswith("【週刊 地方行政ニュース】第12号 ㈱東雲データ、")
    assert rendered.subject.endswith("…") and "全庁展開へ" not in rendered.subject
    from newsletter.japanese import display_width

    assert display_width(rendered.subject) <= 80


# --------------------------------------------------------------------------- checked = sent


def _queue(cli, tmp_path, items) -> None:
    (tmp_path / "queue.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    cli("article", "import", tmp_path / "queue.json")


SEND_ITEMS = [
    {"title": "東雲県が子育て支援策の素案を公表", "url": "https://news.example.jp/a/1", "summary": "素案の概要。",
     "fields": ["local-government"], "guid": "cs-1"},
    {"title": "県立高校の入試日程が決定", "url": "https://news.example.jp/a/2", "summary": "日程の概要。",
     "fields": ["education"], "guid": "cs-2"},
]


def _outbox(cli) -> list[str]:
    box = cli.folder / "var" / "outbox"
    return sorted(p.read_bytes().decode("ascii", "replace") for p in box.glob("*.eml")) if box.exists() else []


def test_an_article_edited_between_check_and_creation_is_not_sent_unchecked(project, tmp_path, monkeypatch):
    """``edition send`` checks, then creates: an editor saving an article in between
    must not put text nobody checked into readers' mailboxes."""
    from newsletter import preflight

    cli = project
    _queue(cli, tmp_path, SEND_ITEMS)
    cli("subscriber", "add", "sato@example.jp", "--name", "佐藤 花子")
    config = load_config(cli.config_path)
    engine = open_engine(config.storage_url)
    real = preflight.deliverability

    def edited_meanwhile(*args):
        with engine.begin() as conn:  # another editor saves article 1 right after the check
            conn.execute(articles.update().where(articles.c.id == 1).values(title="未確認の差し替え見出し"))
        return real(*args)

    monkeypatch.setattr(preflight, "deliverability", edited_meanwhile)
    res = cli("edition", "send", "weekly", ok=False)
    assert res.exit_code == 1
    assert "changed since the check (articles edited: 1)" in res.stderr and "nothing was sent" in res.stderr
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(editions)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar() == 0
    assert _outbox(cli) == []
    # Sent again, the new title is checked, then sent.
    monkeypatch.setattr(preflight, "deliverability", real)
    assert "this run sent 1, failed 0" in cli("edition", "send", "weekly").stdout
    engine.dispose()


def test_creation_refuses_content_other_than_the_checked(project, tmp_path):
    cli = project
    _queue(cli, tmp_path, SEND_ITEMS[:1])
    cli("subscriber", "add", "sato@example.jp")
    config = load_config(cli.config_path)
    engine = open_engine(config.storage_url)
    pub = config.publication("weekly")
    plan = preflight_plan(engine, config, pub)
    _queue(cli, tmp_path, SEND_ITEMS[1:])  # added after the check
    with pytest.raises(InputError, match=r"articles added: 2 「県立高校の入試日程が決定」"):
        creation.create_edition(engine, config, pub, now=plan.when, checked=plan.content)
    created = creation.create_edition(engine, config, pub, now=plan.when,
                                     checked=preflight_plan(engine, config, pub, now=plan.when).content)
    assert created.articles == 2
    engine.dispose()


def test_a_checked_send_renders_each_variant_once(project, tmp_path, monkeypatch):
    """Preflight's renders are the ones sent: premailer runs once per HTML field set
    and charset for the whole ``edition send``, not once for the check and again
    for the engine."""
    cli = project
    _queue(cli, tmp_path, SEND_ITEMS)
    cli("subscriber", "add", "sato@example.jp", "--fields", "local-government", "--name", "佐藤 花子")
    cli("subscriber", "add", "suzuki@example.jp", "--fields", "education", "--name", "鈴木 一郎")
    cli("subscriber", "add", "tanaka@example.jp", "--fields", "education", "--format", "text")
    cli("subscriber", "add", "ito@example.jp", "--fields", "education", "--charset", "iso-2022-jp")
    calls = premailer_runs(monkeypatch)
    out = cli("edition", "send", "weekly").stdout
    assert "this run sent 4, failed 0" in out
    # HTML variants: local-government|utf-8, education|utf-8, education|iso-2022-jp (the text reader shares one).
    assert len(calls) == 3
    mails = _outbox(cli)
    assert len(mails) == 4 and sum("Content-Type: text/html" in m for m in mails) == 3


def test_every_finding_of_the_check_is_written_in_japanese_too():
    """The console is Japanese first: each finding preflight writes carries its
    Japanese wording (``Finding.ja``; ``text(lang)`` picks it), so an editor never
    reads an English sentence on 配信前チェック.  The command line keeps ``message``."""
    import re

    arts = fixed_articles()
    arts[0]["url"] = "https//news.example.jp/articles/1"  # no scheme: an error
    arts[1]["url"] = "http://news.example.jp/articles/2"  # a warning
    arts[2]["summary"] = "解約は %%NL_UNSUBSCRIBE_URL%% からどうぞ。"  # a placeholder lookalike
    arts[3]["summary"] = ""  # a card with only its title
    config = fixed_config()
    pub = config.publication("weekly")
    content = fixed_content(config, arts)
    content["subject"] = "【週刊 地方行政ニュース】" + "人口減少下の公共施設再編について" * 3 + "①"
    findings = check_plan(config, pub, plan_for(content, names_not_in_jis=("髙橋 ①子",)))
    findings += check_plan(config, pub, Plan(content, WHEN, content["number"], False, {}))  # nobody to send to
    assert {"link", "placeholder", "charset-unmappable", "charset-mapped", "readers", "html-size", "subject",
            "text-width", "section"} <= {f.code for f in findings}
    kana_or_kanji = re.compile(r"[ぁ-んァ-ヶ一-龠]")
    for f in findings:
        assert f.ja and kana_or_kanji.search(f.ja), f
        assert f.text("ja") == f.ja and f.text("en") == f.message
    ja = [f.ja for f in findings]
    assert any("https ではありません" in m and "http://news.example.jp/articles/2" in m for m in ja)
    assert any("相対リンクはメールの中ではどこにも行きません" in m for m in ja)
    assert "この号を受け取る購読者がいません" in ja
