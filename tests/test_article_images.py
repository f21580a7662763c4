"""Article images: a thumbnail URL and its alt text, from JSON/CSV or from a
feed (Media RSS ``media:thumbnail``, an image ``<enclosure>``), carried into
the edition and shown in the HTML with width and height set (the card keeps
its shape when images are blocked, and the alt text stands in)."""

from __future__ import annotations

import email
import email.policy
import json

import lxml.html
from sqlalchemy import select

from newsletter.config import load_config
from newsletter.editions.render import render_variant
from newsletter.store import open_engine
from newsletter.store.tables import articles
from tests.test_render import EDU, LG, WHEN, fixed_config, fixed_content

RSS = """\
<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/">
<channel>
  <title>東雲県 報道発表</title>
  <link>https://www.pref.shinonome.example.jp/</link>
  <description>東雲県の報道発表資料</description>
  <item>
    <title>県立高校の入学者選抜、出願をオンライン化</title>
    <link>https://www.pref.shinonome.example.jp/press/2026/0412.html</link>
    <category>教育</category>
    <media:thumbnail url="https://www.pref.shinonome.example.jp/press/2026/0412-thumb.jpg" width="160" height="90"/>
    <description>令和9年度入試から全日制の出願を電子申請に。</description>
  </item>
  <item>
    <title>県内全域で総合防災訓練を実施</title>
    <link>https://www.pref.shinonome.example.jp/press/2026/0413.html</link>
    <category>地方自治</category>
    <enclosure url="https://www.pref.shinonome.example.jp/press/2026/0413.jpg" length="12345" type="image/jpeg"/>
    <description>9月1日に県内全域で実施します。</description>
  </item>
  <item>
    <title>防災無線の放送内容を音声で公開</title>
    <link>https://www.pref.shinonome.example.jp/press/2026/0414.html</link>
    <category>地方自治</category>
    <enclosure url="https://www.pref.shinonome.example.jp/press/2026/0414.mp3" length="99999" type="audio/mpeg"/>
    <description>音声ファイルは県のサイトで。</description>
  </item>
</channel>
</rss>
"""


def _rows(cli):
    engine = open_engine(load_config(cli.config_path).storage_url)
    with engine.connect() as conn:
        return list(conn.execute(select(articles).order_by(articles.c.id)))


def test_feed_thumbnail_and_image_enclosure_are_imported(project):
    path = project.folder / "press.xml"
    path.write_text(RSS, encoding="utf-8")
    project("article", "import", path)
    rows = _rows(project)
    assert [(r.image_url, r.image_alt) for r in rows] == [
        ("https://www.pref.shinonome.example.jp/press/2026/0412-thumb.jpg", ""),  # alt: the headline
        ("https://www.pref.shinonome.example.jp/press/2026/0413.jpg", ""),
        ("", ""),  # an audio enclosure is not a picture
    ]


def test_json_image_reaches_the_mail_with_its_size_and_alt(project):
    items = [{"title": "学校体育館への空調設置を前倒し", "url": "https://news.example.jp/education/2026/11/gym",
              "fields": ["education"], "summary": "鈴ヶ峰町は体育館全5棟に空調を設置する。",
              "image": "https://news.example.jp/images/gym.jpg", "image_alt": "空調設備が設置された体育館"}]
    path = project.folder / "a.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    project("article", "import", path)
    project("subscriber", "add", "reader@example.jp", "--fields", "education")
    project("edition", "send", "weekly")
    raw = next((project.folder / "var" / "outbox").glob("*.eml")).read_bytes()
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    doc = lxml.html.document_fromstring(mail.get_body(("html",)).get_content())
    [img] = [i for i in doc.iter("img") if "gym.jpg" in i.get("src")]
    assert (img.get("width"), img.get("height"), img.get("alt")) == ("160", "90", "空調設備が設置された体育館")
    assert "gym.jpg" not in mail.get_body(("plain",)).get_content()  # a picture is for the HTML part


def test_image_without_alt_falls_back_to_the_headline():
    config = fixed_config()
    content = fixed_content()
    content["articles"][0]["image"] = {"url": "https://news.example.jp/images/noto.jpg", "alt": ""}
    html = render_variant(content, (LG, EDU), config.templates_dir, when=WHEN).html
    [img] = lxml.html.document_fromstring(html).find_class("thumb")
    assert img.get("alt") == content["articles"][0]["title"]
    assert "display:block" in img.get("style") and img.get("width") == "160"
