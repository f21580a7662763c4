"""Rendering one variant of an edition: a golden file, the sections each reader
gets, one premailer run per field set, Japanese dates and the plain-text part.

Everything here is pure: a fixed config (the repo's config.toml), fixed articles,
a fixed ``when``; no database, no network.  ``UPDATE_GOLDEN=1`` rewrites the
golden files (see tests/golden/README.md); read the diff before committing it.
"""

from __future__ import annotations

import dataclasses
import html as htmllib
import json
import os
import re
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from zoneinfo import ZoneInfo

import lxml.html
import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter import japanese
from newsletter.config import Config, Publication, load_config
from newsletter.delivery import Variants
from newsletter.editions import render
from newsletter.editions.assemble import VariantKey, freeze, sections, select_articles, variant_fields
from newsletter.editions.render import date_texts, html_to_text, render_variant
from newsletter.links import PLACEHOLDER

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"

LG, ADMIN, EDU = "local-government", "administration", "education"
CREATED = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # 2026-12-01 08:00 in Tokyo
WHEN = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)  # the scheduled send: Tuesday 09:00 in Tokyo


def article(id: int, title: str, fields: str, *, summary: str = "", body: str = "", body_format: str = "markdown",
            author: str = "", day: int = 25, pinned: bool = False, priority: int = 0) -> dict:
    """An article row as the store returns it (the keys freeze() and order_key() read)."""
    return {
        "id": id,
        "title": title,
        "url": f"https://news.example.jp/articles/2026/{id}",
        "summary": summary,
        "body": body,
        "body_format": body_format,
        "author": author,
        "fields": fields,
        "created_at": datetime(2026, 11, day, 1, 30, tzinfo=UTC),
        "publish_at": None,
        "priority": priority,
        "pinned": pinned,
    }


def fixed_articles() -> list[dict]:
    return [
        article(
            101, "人口減少下の公共施設再編、総務省が新たな指針を公表", f"{LG},{EDU}",
            summary="総務省は、公共施設の統廃合と複数自治体による共同利用を促す指針を公表した。\n"
                    "学校施設の複合化も対象に含まれる。",
            author="佐藤 一郎", day=28,
        ),
        article(
            102, "教員の働き方改革 <速報> 勤務時間調査の結果 & 今後の対応", EDU,
            summary="文部科学省は公立学校教員の勤務実態調査の速報値を発表した。\n"
                    "1. 時間外勤務は前回調査から減少\n"
                    "- 部活動の地域移行が進む地域で減少幅が大きい",
            day=27,
        ),
        article(
            103, "マイナンバーカードの利用拡大に向けた省令改正案", ADMIN,
            summary="デジタル庁は、行政手続きでのカード利用を広げる省令改正案の意見公募を始めた。",
            day=26,
        ),
        article(
            104, "【特集】能登半島の復興計画、住民参加で見直しへ", LG,
            summary="石川県内の被災自治体が、住民説明会の意見を踏まえて復興計画の改定案をまとめた。",
            author="編集部 防災取材班", day=24, pinned=True,
        ),
        article(
            105, "小中学校の給食費無償化、来年度から対象を拡大する自治体相次ぐ", f"{EDU},{LG}",
            summary="物価高を背景に、給食費の無償化を中学校まで広げる市町村が増えている。",
            day=23,
        ),
    ]


def fixed_config() -> Config:
    return load_config(ROOT / "config.toml")


def weekly(config: Config) -> Publication:
    return config.publication("weekly")


def fixed_content(config: Config | None = None, articles: list[dict] | None = None, **pub_changes) -> dict:
    config = config or fixed_config()
    pub = dataclasses.replace(weekly(config), **pub_changes)
    chosen = select_articles(articles if articles is not None else fixed_articles(), pub.max_articles)
    return freeze(config, pub, 12, chosen, CREATED)


def render_fixed(fields=(LG, EDU), *, html: bool = True, content: dict | None = None, when: datetime = WHEN):
    config = fixed_config()
    return render_variant(content or fixed_content(config), fields, config.templates_dir, when=when, html=html)


# --------------------------------------------------------------------------- golden files


def normalise(text: str) -> str:
    """The placeholders' random nonce taken out: %%NL_GREETING_<nonce>%% → %%NL_GREETING%%."""
    return PLACEHOLDER.sub(r"%%NL_\1%%", text)


def _check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    actual = normalise(actual)
    data = actual.encode("utf-8")
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_bytes(data)
    assert path.exists(), f"{path} missing: run UPDATE_GOLDEN=1 python -m pytest tests/test_render.py"
    expected = path.read_bytes()
    if expected != data:
        exp_lines, act_lines = expected.decode("utf-8").splitlines(), actual.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(exp_lines, act_lines, strict=False)) if a != b),
                     min(len(exp_lines), len(act_lines)))
        pytest.fail(
            f"{name} differs from the rendered variant at line {first + 1}:\n"
            f"  golden:   {exp_lines[first] if first < len(exp_lines) else '<end>'!r}\n"
            f"  rendered: {act_lines[first] if first < len(act_lines) else '<end>'!r}\n"
            "If the change is intended: UPDATE_GOLDEN=1 python -m pytest tests/test_render.py"
        )


SUBJECT = "【週刊 地方行政ニュース】第12号 【特集】能登半島の復興計画、住民参加で見直しへ"


def test_golden_variant_html_and_text():
    rendered = render_fixed((LG, EDU))
    assert rendered.subject == SUBJECT
    assert rendered.article_ids == (104, 101, 105, 102)
    _check_golden("digest.html", rendered.html)
    _check_golden("digest.txt", rendered.text)


LEAD = "<p>師走に入りました。今号は<strong>DX推進計画</strong>と、学校の端末更新を特集します。</p>"
AFTERWORD = "<p>年末年始は12月29日から1月3日まで休刊します。来年もよろしくお願いいたします。</p>"
NOTICE = {
    "title": "月刊「地方行政」12月号を発売しました",
    "text": "特集は「自治体DXの現在地」。書店、または当社オンラインストアでお求めいただけます。",
    "link": "https://news.example.jp/shop/monthly-2026-12",
    "link_label": "12月号の購入はこちら",
    "image": "https://news.example.jp/shop/monthly-2026-12/cover.jpg",
    "image_alt": "月刊「地方行政」12月号の表紙",
}


def demo_content(charset: str = "utf-8", **pub_changes) -> dict:
    """The demo's edition (articles/sample.json, as `newsletter demo` sends it), with
    the lead, afterword and お知らせ the editorial workflow adds to the content."""
    items = json.loads((ROOT / "articles" / "sample.json").read_text(encoding="utf-8"))
    rows = [
        article(i + 1, it["title"], ",".join(it["fields"]), summary=it.get("summary", ""),
                author=it.get("author", ""), day=28 - i, pinned=bool(it.get("pinned")),
                priority=it.get("priority", 0)) | {"url": it["url"]}
        for i, it in enumerate(items)
    ]
    content = fixed_content(articles=rows, charset=charset, **pub_changes)
    return content | {"lead_html": LEAD, "afterword_html": AFTERWORD, "notice": NOTICE}


# The seed's hard input: machine-dependent characters (㈱ Ⅰ Ⅴ 〝〞 ①), NBSP, long
# katakana compounds, URLs inside sentences, half-width katakana.
HARD_URL = "https://www.pref.shinonome.example.jp/kensei/dx/keikaku/2026/11/shiryou.html"


def hard_articles() -> list[dict]:
    return [
        article(901, "㈱東雲データ、Ⅰ期・Ⅴ期システムを刷新\u3000〝書かない窓口〟を全庁へ", f"{ADMIN},{LG}",
                summary="㈱東雲データと㈲日和工務店が①計画策定②システム構築を担う。Ⅰ期・Ⅴ期に分けて"
                        "進め、〝書かない窓口〟を令和8年\xa012月\xa01日から全庁に広げる。資料は"
                        f"{HARD_URL}で公開中、問い合わせは平日9:00〜17:00。",
                author="ｼﾉﾉﾒ通信", day=29),
        article(902, "マイナンバーカードインターオペラビリティプラットフォームアーキテクチャ検討会が報告書", ADMIN,
                summary="デジタル庁のアーキテクチャ検討会は、ユーザーエクスペリエンスインプルーブメントプログラムの"
                        "成果をまとめた。詳しくは https://www.digital.go.jp/policies/dx-plan/2026 をご覧ください。",
                day=29),
        article(903, "第2回\xa0地域DXフォーラム、12月15日に開催\u3000ｵﾝﾗｲﾝ参加も可能", EDU,
                summary="申込はhttps://forum.example.jp/entry?id=2026&ref=mailから。定員は先着300名。",
                author="編集部", day=29, priority=5),
    ]


@pytest.mark.parametrize("charset", ["utf-8", "iso-2022-jp"])
@pytest.mark.parametrize("full_text", [False, True])
def test_hard_input_through_both_parts_within_76_columns(charset, full_text):
    """Every text line within 76 columns (RFC 5322's advice, and what old phones
    show) but for a URL alone on its line; the hard characters reach the reader,
    mapped for ISO-2022-JP; NBSP is &nbsp; in the HTML, never a raw U+00A0."""
    config = fixed_config()
    arts = [a | {"body": a["summary"] + "\n\n- " + a["summary"]} for a in hard_articles()]
    content = fixed_content(articles=arts + fixed_articles(), charset=charset, full_text=full_text) | {
        "lead_html": f"<p>{HARD_URL}を参照。㈱〝特集〟は\xa0Ⅰ期から。</p>", "afterword_html": AFTERWORD,
        "notice": NOTICE | {"text": "ｵﾝﾗｲﾝｽﾄｱ限定。㈱日和出版の〝Ⅴ号〟です。" + HARD_URL + "で受付。"}}
    rendered = render_variant(content, (LG, ADMIN, EDU), config.templates_dir, when=WHEN, charset=charset)
    for line in rendered.text.splitlines():
        assert japanese.display_width(line) <= 76 or re.fullmatch(r"\s*https?://\S+", line), line
        assert japanese.display_width(line) <= 70 or re.fullmatch(r"\s*https?://\S+", line), line
    flat = "".join(line.strip() for line in rendered.text.splitlines())
    expect = (lambda t: japanese.map_for_jis(t)[0]) if charset == "iso-2022-jp" else (lambda t: t)
    for piece in ("㈱東雲データ、Ⅰ期・Ⅴ期システムを刷新", "〝書かない窓口〟",
                  "マイナンバーカードインターオペラビリティプラットフォームアーキテクチャ検討会が報告書",
                  "ｵﾝﾗｲﾝ参加も可能", "https://www.digital.go.jp/policies/dx-plan/2026", HARD_URL):
        assert expect(piece) in flat, piece
    assert any(line.strip() == HARD_URL for line in rendered.text.splitlines())  # broken out of its sentence
    assert "\xa0" not in rendered.html
    if charset == "iso-2022-jp":
        assert japanese.fits_jis(rendered.text) and japanese.fits_jis(rendered.subject)
        assert japanese.fits_jis(rendered.html.replace("&nbsp;", ""))
        assert "(株)東雲データ" in rendered.subject or "(株)" in flat
    plain = rendered.html.replace("<wbr>", "")
    assert expect("㈱東雲データ、Ⅰ期・Ⅴ期システムを刷新") in plain
    assert expect("第2回&nbsp;地域DXフォーラム") in plain


@pytest.mark.parametrize("charset", ["utf-8", "iso-2022-jp"])
def test_golden_demo_edition_in_both_charsets(charset):
    """The demo edition for a reader of every field: the HTML and the text part, as
    each charset's readers get them (UPDATE_GOLDEN=1 rewrites tests/golden/demo.*)."""
    config = fixed_config()
    rendered = render_variant(demo_content(charset), (LG, ADMIN, EDU), config.templates_dir, when=WHEN,
                              charset=charset)
    _check_golden(f"demo.{charset}.html", rendered.html)
    _check_golden(f"demo.{charset}.txt", rendered.text)
    assert rendered.subject.startswith("【週刊 地方行政ニュース】第12号 東雲県、")
    for line in rendered.text.splitlines():
        assert japanese.display_width(line) <= 70 or line.startswith("https://"), line


def test_golden_html_is_mail_ready():
    html = (GOLDEN / "digest.html").read_text(encoding="utf-8")
    doc = lxml.html.document_fromstring(html)

    def style(cls: str) -> str:
        return doc.find_class(cls)[0].get("style") or ""

    # CSS inlined onto the elements, the <style> block kept for the phone layout.
    assert "padding:20px 24px 18px 24px" in style("card-cell")
    assert "border-left:4px solid #1d4f7c" in style("section-heading")
    assert "Hiragino Kaku Gothic ProN" in style("summary")
    assert "word-break:keep-all" in style("summary") and "overflow-wrap:anywhere" in style("summary")
    assert all(el.get("style") for el in doc.iter("td", "p", "h1", "h2", "h3", "a"))
    block = re.search(r"<style[^>]*>(.*?)</style>", html, re.S)
    assert block and "@media (max-width: 620px)" in block.group(1)
    assert "@media (prefers-color-scheme: dark)" in block.group(1)
    assert '<meta name="color-scheme" content="light dark">' in html
    assert "<link" not in html.lower() and "<script" not in html.lower()
    assert "</wbr>" not in html
    # ≤ 600 px: the fluid container and Outlook's ghost table.
    assert "max-width:600px" in style("container")
    widths = [int(w) for w in re.findall(r'\bwidth="(\d+)"', html)] + \
             [int(w) for w in re.findall(r"(?<![-\w])width:\s*(\d+)px", html)]
    assert widths and max(widths) <= 600
    pre = doc.find_class("preheader")[0]
    assert "display:none" in pre.get("style") and pre.text.startswith("【特集】能登半島の復興計画")
    assert doc.body.index(pre) == 0  # first in the body: what the inbox shows after the subject
    assert 'href="%%NL_UNSUBSCRIBE_URL%%"' in html and 'href="%%NL_PREFERENCES_URL%%"' in html
    assert "%%NL_GREETING%%" in html
    assert "\xa0" not in html  # ISO-2022-JP cannot carry U+00A0; &nbsp; instead
    # Data is escaped, and only once.
    assert "教員の働き方改革 &lt;速報&gt; 勤務時間調査の結果 &amp; 今後の対応" in html.replace("<wbr>", "")
    assert "<速報>" not in html and "&amp;lt;" not in html
    # The 目次: every headline, linked to its card in the mail.
    toc = doc.find_class("toc-cell")[0]
    targets = [a.get("href") for a in toc.iter("a")]
    assert targets == ["#a104", "#a101", "#a105", "#a102"]
    for target in targets:
        [heading] = [el for el in doc.iter("h3") if el.get("id") == target[1:]]
        assert heading.find("a").get("name") == target[1:]
    # Web版 and back numbers.
    hrefs = [a.get("href") for a in doc.iter("a")]
    assert "https://news.example.jp/archive/weekly/12/" in hrefs
    assert "https://news.example.jp/archive/weekly/" in hrefs


def test_golden_text_reads_like_a_japanese_mail_magazine():
    text = (GOLDEN / "digest.txt").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert "■ 地方自治" in lines and "■ 教育" in lines
    assert "■ 行政" not in lines
    assert "第12号 | 2026年12月1日(火)" in lines
    rule = "━" * 35
    assert lines[0] == rule and lines[-1] == rule
    head = len(lines) - 1 - lines[::-1].index("■ 地方自治")  # the section (the first is in the 目次)
    assert lines[head - 1] == rule and lines[head + 1] == rule
    # The 目次 first, then the sections, in the same order.
    toc = lines.index("【目次】")
    assert lines[toc + 1: toc + 7] == [
        "■ 地方自治", "・【特集】能登半島の復興計画、住民参加で見直しへ",
        "・人口減少下の公共施設再編、総務省が新たな指針を公表",
        "・小中学校の給食費無償化、来年度から対象を拡大する自治体相次ぐ",
        "■ 教育", "・教員の働き方改革 <速報> 勤務時間調査の結果 & 今後の対応"]
    # Each item: headline, byline and the *other* fields, summary, the URL on a line of its own.
    i = lines.index("◆ 教員の働き方改革 <速報> 勤務時間調査の結果 & 今後の対応")
    assert lines[i + 1: i + 7] == ["", "文部科学省は公立学校教員の勤務実態調査の速報値を発表した。",
                                   "1. 時間外勤務は前回調査から減少",  # no Markdown escape "1\\."
                                   "- 部活動の地域移行が進む地域で減少幅が大きい",
                                   "https://news.example.jp/articles/2026/102", ""]
    i = lines.index("◆ 人口減少下の公共施設再編、総務省が新たな指針を公表")
    assert lines[i + 1] == "文：佐藤 一郎 ／ 関連分野：教育"  # not 地方自治: that is the section
    assert "【地方自治】" not in text and "関連分野：地方自治" not in text
    assert "続きを読む" not in text
    # The footer Japan's Act on Specified Electronic Mail requires, and the links.
    assert "発行者: 地方行政ニュース編集部" in lines
    assert "所在地: 〒100-0013 東京都千代田区霞が関1-2-3 地方行政会館5階" in lines
    assert "お問い合わせ: henshu@news.example.jp / 03-1234-5678（平日9時〜17時）" in lines
    for label, url in (("▼Web版で見る", "https://news.example.jp/archive/weekly/12/"),
                       ("▼バックナンバー", "https://news.example.jp/archive/weekly/"),
                       ("▼配信設定の変更", "%%NL_PREFERENCES_URL%%"),
                       ("▼配信停止", "%%NL_UNSUBSCRIBE_URL%%")):
        assert lines[lines.index(label) + 1] == url
    assert "%%NL_GREETING%%" in lines
    assert "\n\n\n" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")


# --------------------------------------------------------------------------- sections


def _ids(secs) -> list[tuple[str, list[int]]]:
    return [(s["field"]["slug"], [a["id"] for a in s["articles"]]) for s in secs]


def test_article_in_two_fields_appears_once_in_the_readers_first_field():
    content = fixed_content()
    # 101 is in local-government and education; 105 in education and local-government.
    assert _ids(sections(content, (LG, EDU))) == [(LG, [104, 101, 105]), (EDU, [102])]
    # The education-only reader still gets them, under education.
    assert _ids(sections(content, (EDU,))) == [(EDU, [101, 102, 105])]
    card = next(a for a in sections(content, (LG, EDU))[0]["articles"] if a["id"] == 101)
    assert card["field_names"] == ["地方自治", "教育"]
    # 105 is stored as "education,local-government": its labels still follow config order.
    card = next(a for a in sections(content, (LG, EDU))[0]["articles"] if a["id"] == 105)
    assert card["field_names"] == ["地方自治", "教育"]
    text = render_fixed((LG, EDU)).text
    assert text.count("◆ 人口減少下の公共施設再編、総務省が新たな指針を公表") == 1
    assert text.count("・人口減少下の公共施設再編、総務省が新たな指針を公表") == 1  # the 目次
    body = text[text.index("━\n■ 地方自治"):]
    assert body.index("■ 地方自治") < body.index("◆ 人口減少下の公共施設再編") < body.index("■ 教育")


def test_reader_with_only_education_gets_only_education_articles():
    rendered = render_fixed((EDU,))
    assert set(rendered.article_ids) == {101, 102, 105}
    for other in ("マイナンバーカード", "能登半島"):
        assert other not in rendered.text and other not in rendered.html
    assert "■ 地方自治" not in rendered.text and "■ 教育" in rendered.text


def test_sections_follow_config_order_not_the_readers_order():
    content = fixed_content()
    assert [s["field"]["slug"] for s in sections(content, (EDU, ADMIN, LG))] == [LG, ADMIN, EDU]
    assert variant_fields(content, [EDU, LG]) == (LG, EDU)
    text = render_fixed((EDU, ADMIN, LG)).text
    assert text.index("■ 地方自治") < text.index("■ 行政") < text.index("■ 教育")  # the 目次
    body = text[text.index("━\n■ 地方自治"):]
    assert body.index("■ 地方自治") < body.index("■ 行政") < body.index("■ 教育")


def test_empty_sections_are_absent():
    # Nothing in administration at all, and education's only article is also in
    # local-government, so it is placed there: both sections would be empty.
    only = [a for a in fixed_articles() if a["id"] in (101, 104)]
    content = fixed_content(articles=only)
    assert _ids(sections(content, (LG, ADMIN, EDU))) == [(LG, [104, 101])]
    rendered = render_fixed((LG, ADMIN, EDU), content=content)
    assert "■ 行政" not in rendered.text and "■ 教育" not in rendered.text
    assert rendered.html.count('class="section-heading"') == 1
    assert variant_fields(content, [ADMIN]) == ()


def test_full_text_publication_carries_the_sanitized_body():
    body = (
        "## 指針のポイント\n\n"
        "総務省の指針は、**複数自治体**による施設の共同利用を柱とする。\n\n"
        "<script>alert('攻撃')</script>\n\n"
        '<a href="javascript:alert(1)" onclick="steal()">危険なリンク</a>\n\n'
        "詳しくは[総務省の発表資料](https://www.soumu.go.jp/example)を参照。\n"
    )
    arts = [a | {"body": body} if a["id"] == 101 else a for a in fixed_articles()]
    content = fixed_content(articles=arts, full_text=True)
    stored = next(a for a in content["articles"] if a["id"] == 101)["body_html"]
    assert "<script" not in stored and "javascript:" not in stored and "onclick" not in stored
    assert "<strong>複数自治体</strong>" in stored
    rendered = render_fixed((LG, EDU), content=content)
    assert "<script" not in rendered.html.lower() and "javascript:" not in rendered.html
    assert '<div class="article-body"' in rendered.html
    assert "総務省の指針は、" in rendered.html and "複数自治体" in rendered.html
    assert "公共施設の統廃合と複数自治体による共同利用を促す" not in rendered.html  # the summary
    assert "総務省の指針は、複数自治体による施設の共同利用を柱とする。" in rendered.text
    assert "総務省の発表資料\nhttps://www.soumu.go.jp/example" in rendered.text
    assert "alert" not in rendered.text


# --------------------------------------------------------------------------- one render per variant


def premailer_runs(monkeypatch) -> list[str]:
    """The HTML each premailer run inlined, from now on (a real run each time)."""
    calls: list[str] = []
    real = render.inline_css

    def counting(source: str) -> str:
        calls.append(source)
        return real(source)

    monkeypatch.setattr(render, "inline_css", counting)
    return calls


def test_premailer_runs_once_per_distinct_field_set(monkeypatch):
    calls = premailer_runs(monkeypatch)
    config = fixed_config()
    content = fixed_content(config)
    variants = Variants(config, content, WHEN)
    combos = [c for n in (1, 2, 3) for c in combinations((LG, ADMIN, EDU), n)]
    assert len(combos) == 7
    # 7 field sets × 2 formats × 5 subscribers each, text readers first half the time.
    subscribers = [(fields, fmt) for i in range(5) for fields in combos
                   for fmt in (("text", "html") if i % 2 == 0 else ("html", "text"))]
    seen: dict[VariantKey, object] = {}
    for fields, fmt in subscribers:
        key = VariantKey(variant_fields(content, fields), fmt, "utf-8")
        rendered = variants.get(key)
        assert (rendered.html is None) == (fmt == "text")
        seen[key] = rendered
    assert len({k.fields for k in seen}) == 7
    assert len(calls) == 7
    assert variants.renders <= 14
    # Same fields, other format: the same words.
    for key, rendered in seen.items():
        other = seen[VariantKey(key.fields, "text" if key.format == "html" else "html", "utf-8")]
        assert rendered.text == other.text and rendered.subject == other.subject


def test_text_only_render_skips_premailer(monkeypatch):
    def fail(source: str) -> str:
        raise AssertionError("premailer must not run for a text-only variant")

    monkeypatch.setattr(render, "inline_css", fail)
    rendered = render_fixed((EDU,), html=False)
    assert rendered.html is None and "■ 教育" in rendered.text


# --------------------------------------------------------------------------- dates


def test_japanese_date_in_the_publication_time_zone():
    tokyo = ZoneInfo("Asia/Tokyo")
    assert date_texts(datetime(2026, 12, 1, 9, 0, tzinfo=tokyo), "Asia/Tokyo", "ja") == \
        ("2026年12月1日(火)", "2026年12月1日")
    # 16:00 UTC on 30 November is already 1 December (01:00) in Tokyo ...
    assert date_texts(datetime(2026, 11, 30, 16, 0, tzinfo=UTC), "Asia/Tokyo", "ja") == \
        ("2026年12月1日(火)", "2026年12月1日")
    # ... while 14:59 UTC is still Monday 23:59 there.
    assert date_texts(datetime(2026, 11, 30, 14, 59, tzinfo=UTC), "Asia/Tokyo", "ja") == \
        ("2026年11月30日(月)", "2026年11月30日")
    rendered = render_fixed((EDU,), when=datetime(2026, 11, 30, 16, 0, tzinfo=UTC))
    assert "第12号 | 2026年12月1日(火)" in rendered.text


def test_english_publication_dates_stay_english():
    assert date_texts(datetime(2026, 11, 30, 16, 0, tzinfo=UTC), "Asia/Tokyo", "en") == \
        ("Tuesday, December 1, 2026", "December 1, 2026")
    content = fixed_content(language="en")
    rendered = render_fixed((EDU,), content=content)
    assert rendered.subject == "[週刊 地方行政ニュース] No. 12 人口減少下の公共施設再編、総務省が新たな指針を…"
    assert "Tuesday, December 1, 2026" in rendered.text
    assert "Publisher: 地方行政ニュース編集部" in rendered.text.splitlines()
    assert "年" not in rendered.subject and "December" in rendered.text


# --------------------------------------------------------------------------- html_to_text

SAMPLE = """<!DOCTYPE html><html><body>
<span class="preheader" style="display:none">今週の見どころ：防災計画の見直し</span>
<h1 class="pub-title">週刊 地方行政ニュース</h1>
<h2>防災</h2>
<h3 class="article-title"><a href="https://news.example.jp/a/1">避難所運営の手引きを改定</a></h3>
<p class="summary">内閣府は<strong>避難所運営</strong>の手引きを改定した。<em>女性の視点</em>を重視。<br>
1. 備蓄品の見直し<br>- 要配慮者への対応<br>+ 追加の留意点</p>
<h4>自治体の声</h4>
<p>詳細は<a href="https://www.bousai.go.jp/example">内閣府の資料</a>を参照。</p>
<p class="read-more"><a href="https://news.example.jp/a/1">続きを読む</a></p>
</body></html>"""


def test_html_to_text_has_no_markdown():
    text = html_to_text(SAMPLE)
    assert not re.search(r"\[[^\]]*\]\([^)]*\)", text)
    assert not re.search(r"(?m)^\s*#", text)
    assert "**" not in text and "__" not in text and "_女性" not in text
    assert "\\" not in text
    assert "今週の見どころ" not in text  # the preheader
    lines = text.splitlines()
    assert lines[lines.index("◆ 避難所運営の手引きを改定") + 1] == "https://news.example.jp/a/1"
    i = lines.index("詳細は内閣府の資料")
    assert lines[i + 1 : i + 3] == ["https://www.bousai.go.jp/example", "を参照。"]  # the text after a link stays
    assert "1. 備蓄品の見直し" in lines and "- 要配慮者への対応" in lines and "+ 追加の留意点" in lines
    assert "自治体の声" in lines and "■ 防災" in lines
    assert "続きを読む" not in text


def test_rendered_variant_text_has_no_markdown_and_no_preheader():
    rendered = render_fixed((LG, ADMIN, EDU))
    text = rendered.text
    preheader = re.search(r'<span class="preheader"[^>]*>([^<]*)</span>', rendered.html).group(1)
    assert preheader and preheader not in text
    assert not re.search(r"\[[^\]]*\]\([^)]*\)", text)
    assert not re.search(r"(?m)^\s*#", text)
    assert "**" not in text and "\\" not in text
    assert all(p in text for p in rendered.placeholders.all())



# --------------------------------------------------------------------------- phrases in the HTML

HEADLINE_TEXT = st.text(alphabet="東雲県市町村のオンライン化へ、。「」【】（）・〝〟㈱ⅠⅤ０１ABCab12 \u3000\u00a0<>&\"'",
                        max_size=60)


@given(text=HEADLINE_TEXT, hold=st.booleans())
def test_phrase_breaks_keep_the_text_and_kinsoku(text, hold):
    """<wbr> and phrase spans add only break points: the words read the same, and
    no break point falls after an opening bracket, before a closing one or a
    full stop, or next to a no-break space."""
    html = str(render.phrased(text, hold=hold, mark="・" if hold else ""))
    words = htmllib.unescape(re.sub(r"<[^>]+>", "", html.replace("<br>", "\n")))
    assert words == ("・" if hold else "") + text
    plain = re.sub(r"<(?!wbr>)[^>]+>", "", html)  # keep only the break points
    for before, after in re.findall(r"(.)<wbr>(?=(.))", htmllib.unescape(plain)):
        assert before not in japanese.NO_END and after not in japanese.NO_START, (before, after)
        assert "\xa0" not in (before, after) and after not in " \u3000"
