"""An edition's archive page as a reader (or a link preview) meets it: the
site's header and navigation, previous/next edition, the 目次, a <title> and
OpenGraph tags; and the mail's Web版 link leads to exactly this page."""

from __future__ import annotations

import lxml.html

from tests.conftest import ROOT
from tests.test_web import site  # noqa: F401  (the fixture)


def _send_two(site) -> None:  # noqa: F811
    site.cli("subscriber", "import", ROOT / "subscribers" / "sample.csv")
    site.cli("article", "import", ROOT / "articles" / "sample.json")
    site.cli("edition", "send", "weekly")
    site.cli("article", "add", "--field", "education", "--title", "学校図書館の電子書籍サービス、全小中学校で開始",
             "--url", "https://news.example.jp/education/2026/12/ebooks",
             "--summary", "朝霧市教委は電子書籍の貸出を始めた。")
    site.cli("edition", "send", "weekly")


def test_edition_page_has_site_navigation_prev_next_toc_and_open_graph(site):  # noqa: F811
    _send_two(site)
    first = lxml.html.document_fromstring(site.client.get("/archive/weekly/1/").text)
    second = lxml.html.document_fromstring(site.client.get("/archive/weekly/2/").text)

    titles = first.findall(".//title")
    assert len(titles) == 1 and titles[0].text.startswith("週刊 地方行政ニュース 第1号（")
    assert titles[0].text.endswith("| 地方行政ニュース")
    og = {m.get("property"): m.get("content") for m in first.iter("meta") if m.get("property")}
    assert og["og:title"] == titles[0].text.split(" | ")[0]
    assert og["og:url"] == "https://news.example.jp/archive/weekly/1/"
    assert og["og:type"] == "article" and og["og:site_name"] == "地方行政ニュース"
    assert og["og:description"].startswith("東雲県、「第2次DX推進計画」素案を公表")
    assert first.find(".//link[@rel='canonical']").get("href") == og["og:url"]

    # The site header: the site, the back numbers, the sign-up page.
    header = first.find_class("site-header")[0]
    assert [a.get("href") for a in header.iter("a")] == ["/", "/archive/weekly/", "/"]
    # Previous / next.
    def pager(doc, rel):
        return [a.get("href") for a in doc.iter("a") if a.get("rel") == rel]
    assert pager(first, "prev") == [] and pager(first, "next") == ["/archive/weekly/2/"] * 2
    assert pager(second, "prev") == ["/archive/weekly/1/"] * 2 and pager(second, "next") == []
    # The same 目次 as in the mail, linked within the page.
    toc = first.find_class("toc-cell")[0]
    assert all(a.get("href").startswith("#a") for a in toc.iter("a")) and len(list(toc.iter("a"))) == 12
    # The mail's Web版 link is this page's address.
    assert "https://news.example.jp/archive/weekly/1/" in [a.get("href") for a in first.iter("a")]
