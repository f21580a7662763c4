"""The digest's HTML as a reader's browser lays it out: Debian's Chromium,
headless, driven by Playwright (never ``playwright install``).

- No headline breaks inside a phrase: at any width from 320 to 700 px (a
  hypothesis property), the rendered line boxes of every headline's
  characters show each phrase (the text between two ``<wbr>``) on one line —
  unless the phrase alone is wider than the line, where ``overflow-wrap:
  anywhere`` must break it.
- Screenshots of the demo edition plus the hard input at 390 and 1280 px, in
  light and dark ``prefers-color-scheme``, with remote images blocked (as most
  mail clients start), saved in tests/artifacts/ (git-ignored) to be looked at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.editions.render import render_variant
from newsletter.links import fill
from tests.test_render import ADMIN, EDU, LG, WHEN, demo_content, fixed_config, fixed_content, hard_articles
from tests.test_web_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

# Every character of a headline: the phrase it is in (text between <wbr>s; a
# space or a <br> also ends one: a line may always end there) and its line box.
# Lines are told apart by their vertical position; glyphs from fallback fonts
# (㈱, emoji) sit a few pixels off the others on the same line.
MEASURE = """
(selector) => {
  const found = [];
  for (const el of document.querySelectorAll(selector)) {
    const parent = el.parentElement, style = getComputedStyle(parent);  // the line's content width
    const box = parent.getBoundingClientRect().width - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const phrases = [[]];
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      if (n.nodeType === 1) {
        if (n.tagName === 'WBR' || n.tagName === 'BR') phrases.push([]);
        continue;
      }
      for (let i = 0; i < n.data.length; i++) {
        const c = n.data[i];
        if (/\\s/.test(c) && c !== '\\u00a0') { phrases.push([]); continue; }
        const range = document.createRange();
        range.setStart(n, i);
        range.setEnd(n, i + 1);
        const rects = range.getClientRects();
        if (rects.length) phrases[phrases.length - 1].push({c, top: rects[0].top, width: rects[0].width,
                                                              height: rects[0].height});
      }
    }
    for (const chars of phrases) {
      if (chars.length < 2) continue;
      const tops = chars.map(x => x.top).sort((a, b) => a - b);
      let lines = 1;
      for (let i = 1; i < tops.length; i++) if (tops[i] - tops[i - 1] > chars[0].height / 2) lines++;
      const width = chars.reduce((s, x) => s + x.width, 0);
      if (lines > 1) found.push({phrase: chars.map(x => x.c).join(''), lines, width, box,
                                 headline: el.textContent});
    }
  }
  return found;
}
"""
HEADLINES = ".article-title a, .toc-item a"


def _mail_html() -> str:
    """The demo edition and the hard input, for a reader of every field, as a
    reader sees it (placeholders filled)."""
    config = fixed_config()
    content = demo_content()
    hard = fixed_content(articles=hard_articles())["articles"]  # frozen, as an edition carries them
    content = content | {"articles": hard + content["articles"]}
    # One card with a thumbnail (blocked, like every remote image here): its box and alt text.
    content["articles"][0]["image"] = {"url": "https://news.example.jp/images/901.jpg",
                                       "alt": "新しい窓口システムの画面"}
    rendered = render_variant(content, (LG, ADMIN, EDU), config.templates_dir, when=WHEN)
    values = rendered.placeholders.values("山田 太郎 様", "https://news.example.jp/unsubscribe/1.x",
                                          "https://news.example.jp/preferences/1.x")
    return fill(rendered.html, values, escape=True)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: .ci/run installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def mail_page(browser) -> Iterator:
    page = browser.new_page(locale="ja-JP", viewport={"width": 700, "height": 900})
    page.route("**/*", lambda route: route.abort())  # remote images blocked, as in most mail clients
    page.set_content(_mail_html(), wait_until="load")
    try:
        yield page
    finally:
        page.close()


def test_the_mail_has_headlines_with_phrase_breaks(mail_page):
    count = mail_page.evaluate("(s) => document.querySelectorAll(s).length", HEADLINES)
    wbrs = mail_page.evaluate("(s) => [...document.querySelectorAll(s)].filter(e => e.querySelector('wbr')).length",
                              HEADLINES)
    assert count == 2 * 15 and wbrs == count  # each headline in the 目次 and in its card


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(min_value=320, max_value=700))
def test_no_headline_breaks_inside_a_phrase(mail_page, width):
    mail_page.set_viewport_size({"width": width, "height": 900})
    broken = [b for b in mail_page.evaluate(MEASURE, HEADLINES) if b["width"] <= b["box"]]
    assert not broken, f"at {width}px: " + "; ".join(f"{b['phrase']!r} on {b['lines']} lines in {b['headline']!r}"
                                                    for b in broken[:5])


def test_without_phrase_breaks_headlines_do_break_inside_words(browser):
    """The measurement can fail: the same mail without keep-all and nowrap
    (as before this layout) breaks headlines inside phrases."""
    page = browser.new_page(locale="ja-JP", viewport={"width": 390, "height": 900})
    page.route("**/*", lambda route: route.abort())
    html = re.sub(r"word-break:\s*keep-all;?|white-space:\s*nowrap;?", "", _mail_html())  # inline and <style>
    page.set_content(html, wait_until="load")
    try:
        found = page.evaluate(MEASURE, HEADLINES)
        assert [b for b in found if b["width"] <= b["box"]]
    finally:
        page.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [390, 1280])
def test_screenshots(browser, width, scheme):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(locale="ja-JP", viewport={"width": width, "height": 900}, color_scheme=scheme)
    page.route("**/*", lambda route: route.abort())
    page.set_content(_mail_html(), wait_until="load")
    try:
        path = ARTIFACTS / f"digest-{width}-{scheme}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
        # Nothing wider than the screen: no sideways scrolling on a phone.
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        # The 目次 jumps to the card.
        page.click(".toc-item a >> nth=2")
        target = page.evaluate("location.hash")
        assert target.startswith("#a") and page.locator(f"h3{target}").count() == 1
    finally:
        page.close()
