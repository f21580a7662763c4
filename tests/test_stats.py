"""Reading statistics (issue 15): tracked links written at render time, the
signed /r/ and /o/ endpoints, the machine-traffic rules (from recorded request
samples), the three tracking modes, retention, erasure and the edition report.

Real parts: the real app over Starlette's TestClient, the file provider's
outbox, SQLite and PostgreSQL through the ``storage_url`` fixture."""

from __future__ import annotations

import email
import json
import re
from datetime import UTC, datetime, timedelta
from email import policy
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select, text
from starlette.testclient import TestClient

from newsletter import stats
from newsletter.config import load_config
from newsletter.editions.render import render_variant
from newsletter.links import Tracking, click_url, open_url, reader_token, tracked_links
from newsletter.store import open_engine
from newsletter.store.tables import deliveries, metadata, stats_counts, stats_events, subscribers
from newsletter.web import create_app
from newsletter.web import tracking as web_tracking
from tests.conftest import CLI, ROOT, write_config

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
READER_IP = "203.0.113.20"
BODY_LINK = "https://www.soumu.go.jp/main_content/000123456.pdf"
LEAD_LINK = "https://news.example.jp/special/2026-12"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


# --------------------------------------------------------------------------- a sent edition


class Sent:
    """A project whose edition 1 went to the file outbox, and the app that counts."""

    def __init__(self, tmp_path: Path, storage_url: str, mode: str, extra: str = ""):
        self.cli = CLI(write_config(tmp_path / "project", storage_url, extra=extra, replace={
            "full_text = false": f'full_text = true\ntracking = "{mode}"'}))
        self.cli("init")
        readers = [("yamada@example.jp", "山田 太郎", "education", "html"),
                   ("sato@example.jp", "佐藤 花子", "education,administration", "html"),
                   ("suzuki@example.jp", "鈴木 一郎", "local-government", "text")]
        for address, name, fields, fmt in readers:
            self.cli("subscriber", "add", address, "--name", name, "--fields", fields, "--format", fmt)
        body = tmp_path / "body.md"
        body.write_text(f"詳しくは[総務省の資料]({BODY_LINK})をご覧ください。\n", encoding="utf-8")
        self.cli("article", "add", "--field", "education", "--title", "学校給食の無償化、来年度から全市町村で",
                 "--url", "https://news.example.jp/articles/1", "--summary", "県教育委員会は…", "--body-file", body)
        self.cli("article", "add", "--field", "administration", "--title", "行政手続のオンライン化、申請の九割に",
                 "--url", "https://news.example.jp/articles/2", "--summary", "デジタル庁は…")
        self.cli("article", "add", "--field", "local-government", "--title", "地域公共交通の再編計画を策定",
                 "--url", "https://news.example.jp/articles/3", "--summary", "県は…")
        self.cli("edition", "send", "weekly")
        self.config = load_config(self.cli.config_path)
        self.engine = open_engine(self.config.storage_url)
        self.clock = Clock()
        self.app = create_app(self.config, self.engine, clock=self.clock)
        self.client = TestClient(self.app, follow_redirects=False, client=(READER_IP, 40000),
                                 headers={"User-Agent": BROWSER})
        # Only the test's own flush() writes (the background thread would race its assertions).
        web_tracking.buffer(self.app.state.svc).interval = 3600.0

    def mail(self, address: str):
        for p in sorted((self.cli.folder / "var" / "outbox").glob("*.eml")):
            m = email.message_from_bytes(p.read_bytes(), policy=policy.default)
            if m["To"].addresses[0].addr_spec == address:
                return m
        raise AssertionError(address)

    def html(self, address: str) -> str:
        return self.mail(address).get_body(("html",)).get_content()

    def text(self, address: str) -> str:
        return self.mail(address).get_body(("plain",)).get_content()

    def clicks(self, address: str, part: str = "html") -> list[str]:
        body = self.html(address) if part == "html" else self.text(address)
        return [unescape(u) for u in re.findall(r'https://news\.example\.jp/r/[^"\s<>]+', body)]

    def pixel(self, address: str) -> str:
        return unescape(re.search(r'src="(https://news\.example\.jp/o/[^"]+)"', self.html(address)).group(1))

    def get(self, url: str, **kw):
        return self.client.get(urlsplit(url).path, **kw)

    def flush(self) -> None:
        web_tracking.buffer(self.app.state.svc).flush()

    def report(self) -> dict:
        return json.loads(self.cli("edition", "report", "1", "--json").stdout)

    def events(self) -> list:
        with self.engine.connect() as conn:
            return list(conn.execute(select(stats_events).order_by(stats_events.c.id)))


@pytest.fixture
def sent(tmp_path) -> Sent:
    return Sent(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}", "per-subscriber")


# --------------------------------------------------------------------------- link rewriting


def _content(lead: str | None = None) -> dict:
    config = load_config(ROOT / "config.toml")
    from newsletter.editions.assemble import freeze

    arts = [{"id": 7, "title": "学校の統廃合", "url": "https://news.example.jp/a/7", "summary": "要約です。",
             "body": f"本文。[資料]({BODY_LINK})と[メール](mailto:info@example.jp)。", "body_format": "markdown",
             "author": "", "fields": "education"}]
    pub = config.publication("weekly")
    import dataclasses

    content = freeze(config, dataclasses.replace(pub, full_text=True), 3, arts, datetime(2026, 12, 1, tzinfo=UTC))
    if lead is not None:
        content["lead_html"] = lead
    return content


def test_every_content_link_is_rewritten_once_per_variant_and_never_the_footer():
    content = _content(lead=f'<p>今号の特集は<a href="{LEAD_LINK}">こちら</a>。</p>')
    assert [u for u, _ in tracked_links(content)] == ["https://news.example.jp/a/7", BODY_LINK, LEAD_LINK]
    tracking = Tracking("https://news.example.jp", b"k" * 32, 42)
    r = render_variant(content, ("education",), ROOT / "templates", when=datetime(2026, 12, 1, tzinfo=UTC),
                       tracking=tracking)
    hrefs = re.findall(r'href="([^"]+)"', r.html)
    tracked = [unescape(h) for h in hrefs if "/r/" in h]
    assert len(tracked) == 4  # title, body link, 続きを読む, the lead's link
    assert any("/r/42.2.h" in h for h in tracked)  # the lead (巻頭言) link is counted too
    assert all(h.endswith("/" + r.placeholders.reader) for h in tracked)
    assert "https://news.example.jp/a/7" not in r.html and BODY_LINK not in r.html
    assert r.placeholders.unsubscribe in hrefs and r.placeholders.preferences in hrefs  # footer untouched
    assert 'href="mailto:info@example.jp"' in r.html
    assert r.html.count("/o/") == 1 and r.html.index("/o/") > r.html.index("配信停止")
    # The text part gets its own links (part "t"), no pixel.
    assert "/o/" not in r.text
    text_links = re.findall(r"https://news\.example\.jp/r/(\S+?)/%%", r.text)
    assert text_links and all(t.split(".")[2].startswith("t") for t in text_links)
    assert all(t.split(".")[2].startswith("h") for t in (h.split("/r/")[1] for h in tracked))

    from newsletter.editions.render import rewrite_links
    from newsletter.links import Placeholders

    ph = Placeholders.new()
    page = (f'<html><body><div class="lead"><a href="{LEAD_LINK}">特集</a></div>'
            f'<a href="{ph.unsubscribe}">停止</a></body></html>')
    out = rewrite_links(page, content, ("education",), "h", tracking, ph)
    assert LEAD_LINK not in out and ph.unsubscribe in out and "/r/42.2.h" in out


def test_without_tracking_nothing_changes():
    content = _content()
    r = render_variant(content, ("education",), ROOT / "templates", when=datetime(2026, 12, 1, tzinfo=UTC))
    assert "/r/" not in r.html and "/o/" not in r.html and BODY_LINK in r.html


def test_a_sent_mail_carries_tracked_links_with_the_readers_part_filled(sent):
    html_links = sent.clicks("yamada@example.jp")
    assert len(html_links) == 3 and all("%%" not in u for u in html_links)
    readers = {u.rsplit("/", 1)[1] for u in html_links}
    assert len(readers) == 1  # one reader part per message
    assert "news.example.jp/unsubscribe/" in sent.html("yamada@example.jp")
    footer = re.search(r'<p class="footer-links"[^>]*>.*?</p>', sent.html("yamada@example.jp"), re.S).group(0)
    assert "/r/" not in footer and "/unsubscribe/" in footer
    # sato's message has another reader part; the link tokens are the variant's.
    assert {u.rsplit("/", 1)[1] for u in sent.clicks("sato@example.jp")}.isdisjoint(readers)
    assert sent.clicks("suzuki@example.jp", "text")  # text-only readers get tracked links too


# --------------------------------------------------------------------------- the endpoints


def test_click_redirects_to_the_frozen_url_and_counts(sent):
    url = sent.clicks("yamada@example.jp")[0]
    res = sent.get(url)
    assert res.status_code == 302 and res.headers["location"] == "https://news.example.jp/articles/1"
    assert res.headers["cache-control"].startswith("no-store")
    pix = sent.get(sent.pixel("yamada@example.jp"))
    assert pix.status_code == 200 and pix.headers["content-type"] == "image/gif" and pix.content[:6] == b"GIF89a"
    assert pix.headers["cross-origin-resource-policy"] == "cross-origin"  # webmail shows it on its own origin
    sent.flush()
    evs = sent.events()
    links = tracked_links(json.loads(sent.engine.connect().execute(text("SELECT content FROM editions")).scalar()))
    assert [(e.kind, e.machine) for e in evs] == [("click", False), ("open", False)]
    assert links[evs[0].link][0] == "https://news.example.jp/articles/1" and evs[0].article_id == links[evs[0].link][1]
    yamada = sent.engine.connect().execute(select(subscribers.c.id).where(
        subscribers.c.email == "yamada@example.jp")).scalar()
    assert {e.subscriber_id for e in evs} == {yamada} and evs[0].fields == "education"


def test_forged_truncated_and_foreign_tokens(sent):
    url = sent.clicks("yamada@example.jp")[0]
    path = urlsplit(url).path
    token = path.split("/")[2]
    e, i, v, sig = token.split(".")
    other_key = Tracking("https://news.example.jp", b"x" * 32, int(e))
    bad = [
        f"/r/{e}.{int(i) + 1}.{v}.{sig}",          # another index under the same signature
        f"/r/{token[:-3]}",                          # truncated
        f"/r/{e}.{i}.{v}",                           # no signature
        urlsplit(click_url(other_key, 0, v, "x")).path,  # someone else's key
        "/r/https%3A%2F%2Fevil.example",
        f"/r/{token}.{sig}",
    ]
    for p in bad:
        res = sent.client.get(p)
        assert res.status_code == 404, p
        assert "location" not in res.headers and "リンクを開けませんでした" in res.text
    # A genuine token for an index past the edition's links: same page, no redirect.
    key = sent.config.secret()
    past = click_url(Tracking("https://news.example.jp", key, int(e)), 99, v, "x")
    assert sent.get(past).status_code == 404
    # Opens: 404, no pixel.
    pix = urlsplit(sent.pixel("yamada@example.jp")).path
    for p in (pix.replace("/o/", "/o/9"), pix[:-10] + ".gif", "/o/1.h1/x.gif"):
        assert sent.client.get(p).status_code == 404
    # A forged reader part still redirects (the link is genuine) but names nobody.
    res = sent.client.get(path.rsplit("/", 1)[0] + "/d1.1790000000.AAAAAAAAAAAAAAAAAAAAAA")
    assert res.status_code == 302
    sent.flush()
    assert [(ev.reader, ev.subscriber_id) for ev in sent.events()] == [(None, None)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="0123456789abcdefhtxyz._-~%AZ", max_size=60))
def test_any_path_under_r_and_o_is_never_a_5xx_nor_a_foreign_redirect(sent, junk):
    for path in (f"/r/{junk}", f"/r/{junk}/{junk}", f"/o/{junk}/{junk}.gif"):
        res = sent.client.get(path)
        assert res.status_code < 500
        if res.status_code == 302:  # ours: only to the edition's own links
            assert res.headers["location"].startswith("https://news.example.jp/articles/")
        elif res.status_code in (301, 303, 307, 308):  # Starlette's trailing slash ("/r" → "/r/"): same site
            assert urlsplit(res.headers["location"]).netloc == "testserver"


def test_replayed_clicks_count_once_per_reader(sent):
    url = sent.clicks("yamada@example.jp")[0]
    for _ in range(3):
        assert sent.get(url).status_code == 302
    sent.flush()
    rep = sent.report()
    assert rep["clicks"]["human"] == 1 and rep["clicks"]["human_events"] == 3


def test_the_redirect_works_with_the_database_down(tmp_path):
    s = Sent(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}", "per-subscriber")
    url = s.clicks("yamada@example.jp")[1]
    assert s.get(url).status_code == 302  # the edition's links are now in memory
    svc = s.app.state.svc
    svc.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none",
                               connect_args={"connect_timeout": 1})
    res = s.get(url)
    assert res.status_code == 302 and res.headers["location"] == BODY_LINK
    assert web_tracking.buffer(svc).flush() == 0 and web_tracking.buffer(svc).pending() == 2  # kept
    # An edition never seen: a "try again later" page, not a 5xx.
    svc.cache.pop(("tracked", 1))
    res = s.get(url)
    assert res.status_code == 200 and "location" not in res.headers
    svc.engine = s.engine
    assert web_tracking.buffer(svc).flush() == 2  # the database is back: nothing was lost


# --------------------------------------------------------------------------- machine traffic


# Recorded request samples: (method, client address, User-Agent, kind) → (machine, reason, via proxy).
SAMPLES = [
    # Apple Mail Privacy Protection prefetch: Apple's network, a bare agent.
    ("GET", "17.58.100.23", "Mozilla/5.0", "open", True, "apple-mpp", False),
    ("GET", "2620:149:a44:1000::1", "Mozilla/5.0", "open", True, "apple-mpp", False),
    # Gmail's image proxy: fetched when the reader opens the mail.
    ("GET", "66.249.84.12", "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
     "open", False, None, True),
    ("GET", "66.249.84.12", "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
     "open", False, None, True),
    # Link scanners and security gateways.
    ("GET", "52.232.10.4", "Barracuda Sentinel (EE)", "click", True, "scanner", False),
    ("GET", "205.139.110.1", "Mozilla/5.0 (compatible; Mimecast URL Protect)", "click", True, "scanner", False),
    ("GET", "148.163.128.9", "Proofpoint URL Defense/1.0", "click", True, "scanner", False),
    ("GET", "40.94.1.1", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/120.0.0.0 Safari/537.36", "click", True, "scanner", False),
    ("GET", "198.51.100.9", "python-requests/2.31.0", "click", True, "scanner", False),
    ("GET", "198.51.100.9", "", "click", True, "no-agent", False),
    ("HEAD", "203.0.113.5", BROWSER, "click", True, "head", False),
    ("HEAD", "203.0.113.5", BROWSER, "open", True, "head", False),
    # People.
    ("GET", "203.0.113.5", BROWSER, "click", False, None, False),
    ("GET", "126.0.0.8", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) Mobile/15E148", "open", False, None, False),
    ("GET", "203.0.113.5", "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)", "open",
     False, None, False),
    ("GET", "203.0.113.5", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
     "open", False, None, False),
]


@pytest.mark.parametrize(("method", "ip", "ua", "kind", "machine", "reason", "proxy"), SAMPLES)
def test_machine_classification_of_recorded_samples(method, ip, ua, kind, machine, reason, proxy):
    v = stats.classify(kind, method, ip, ua)
    assert (v.machine, v.reason, v.via_proxy) == (machine, reason, proxy)


def test_a_burst_of_different_links_soon_after_sending_is_a_scanner():
    sent = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    at = sent + timedelta(seconds=40)
    clicks = [(1, "d5", 0, at, sent), (2, "d5", 1, at + timedelta(seconds=1), sent),
              (3, "d5", 2, at + timedelta(seconds=2), sent),
              # a person reading two articles a minute apart
              (4, "d6", 0, at, sent), (5, "d6", 1, at + timedelta(seconds=60), sent),
              # three links in a burst, but two days after sending: a person opening tabs
              (6, "d7", 0, sent + timedelta(days=2), sent), (7, "d7", 1, sent + timedelta(days=2, seconds=1), sent),
              (8, "d7", 2, sent + timedelta(days=2, seconds=2), sent),
              # the same link three times is not "many links"
              (9, "d8", 0, at, sent), (10, "d8", 0, at, sent), (11, "d8", 0, at, sent)]
    assert stats.burst_events(clicks) == {1, 2, 3}


def test_human_and_machine_counts_side_by_side_in_the_report(sent):
    y, s_ = sent.clicks("yamada@example.jp"), sent.clicks("sato@example.jp")
    assert sent.get(y[0]).status_code == 302  # a person
    sent.get(sent.pixel("yamada@example.jp"))
    sent.get(sent.pixel("sato@example.jp"), headers={"User-Agent": SAMPLES[2][2]})  # Gmail proxy
    for u in s_:  # a scanner following every link at once, with a browser's agent
        sent.get(u)
    sent.client.head(urlsplit(y[1]).path)  # HEAD
    sent.flush()
    rep = sent.report()
    assert rep["opens"] == {"human": 2, "human_via_proxy": 1, "machine": 0, "unknown": 1, "human_events": 2,
                            "machine_events": 0, "rate_human": 1.0}
    assert rep["clicks"]["human"] == 1 and rep["clicks"]["machine"] == 2
    first = next(a for a in rep["articles"] if a["url"] == "https://news.example.jp/articles/1")
    assert first["title"] == "学校給食の無償化、来年度から全市町村で"
    assert (first["clicks_human"], first["clicks_machine"]) == (1, 2)


# --------------------------------------------------------------------------- the three modes


def _snapshot(engine) -> dict[str, set]:
    out = {}
    with engine.connect() as conn:
        for t in metadata.sorted_tables:
            out[t.name] = {tuple(r) for r in conn.execute(select(t))}
    return out


def test_aggregate_stores_no_subscriber_anywhere(tmp_path, storage_url):
    s = Sent(tmp_path, storage_url, "aggregate")
    with s.engine.connect() as conn:
        sids = {str(x) for x in conn.execute(select(subscribers.c.id)).scalars()}
        dids = {str(x) for x in conn.execute(select(deliveries.c.id)).scalars()}
    # The mail's reader part names no delivery.
    reader = s.clicks("yamada@example.jp")[0].rsplit("/", 1)[1]
    assert reader.startswith("m") and not any(reader.startswith(f"m{d}.") for d in dids)
    before = _snapshot(s.engine)
    for who in ("yamada@example.jp", "sato@example.jp"):
        s.get(s.clicks(who)[0])
        s.get(s.pixel(who))
    s.flush()
    after = _snapshot(s.engine)
    new = {name: rows - before[name] for name, rows in after.items() if rows - before[name]}
    assert set(new) == {"stats_events"}
    cols = [c.name for c in stats_events.columns]
    for row in new["stats_events"]:
        ev = dict(zip(cols, row, strict=True))
        assert ev["subscriber_id"] is None and ev["reader"].startswith("m")
        assert str(ev["reader"][1:]) not in sids | dids
    rep = s.report()
    assert rep["opens"]["human"] == 2 and rep["clicks"]["human"] == 2  # unique counts still work


def test_off_writes_no_tracked_link_and_counts_nothing(tmp_path):
    s = Sent(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}", "off")
    assert s.clicks("yamada@example.jp") == [] and "/o/" not in s.html("yamada@example.jp")
    assert "https://news.example.jp/articles/1" in s.html("yamada@example.jp")
    # A link of another edition's genre signed with our key still counts nothing under "off".
    url = click_url(Tracking("https://news.example.jp", s.config.secret(), 1), 0, "h4", "x")
    assert s.get(url).status_code == 302
    s.flush()
    assert s.events() == []


def test_switching_modes_never_back_fills(tmp_path):
    s = Sent(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}", "aggregate")
    url = s.clicks("yamada@example.jp")[0]
    # The office switches to per-subscriber: the mails already sent still name nobody.
    path = s.cli.config_path
    path.write_text(path.read_text(encoding="utf-8").replace('tracking = "aggregate"', 'tracking = "per-subscriber"'),
                    encoding="utf-8")
    app = create_app(load_config(path), s.engine)
    client = TestClient(app, follow_redirects=False, headers={"User-Agent": BROWSER})
    assert client.get(urlsplit(url).path).status_code == 302
    web_tracking.buffer(app.state.svc).flush()
    assert [(e.subscriber_id, e.reader[0]) for e in s.events()] == [(None, "m")]


def test_a_per_subscriber_mail_counted_under_aggregate_keeps_no_reader(tmp_path):
    s = Sent(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}", "per-subscriber")
    url = s.clicks("yamada@example.jp")[0]
    path = s.cli.config_path
    path.write_text(path.read_text(encoding="utf-8").replace('tracking = "per-subscriber"', 'tracking = "aggregate"'),
                    encoding="utf-8")
    app = create_app(load_config(path), s.engine)
    client = TestClient(app, follow_redirects=False, headers={"User-Agent": BROWSER})
    assert client.get(urlsplit(url).path).status_code == 302
    web_tracking.buffer(app.state.svc).flush()
    assert [(e.subscriber_id, e.reader) for e in s.events()] == [(None, None)]


def test_tracking_config_keys(tmp_path):
    cli = CLI(write_config(tmp_path / "p", "sqlite:///x.db", replace={
        "full_text = false": 'full_text = false\ntracking = "everything"'}))
    res = cli("edition", "list", ok=False)
    assert res.exit_code == 1 and "publications[0]" in res.output and "tracking" in res.output
    assert load_config(ROOT / "config.toml").publication("weekly").tracking == "off"
    cfg = load_config(write_config(tmp_path / "q", "sqlite:///x.db", replace={
        "full_text = false": 'full_text = false\ntracking = "aggregate"\ntracking_retention = "30d"'}))
    assert cfg.publication("weekly").tracking_retention == 30 * 86400


# --------------------------------------------------------------------------- retention and erasure


def test_prune_folds_old_events_into_counts(tmp_path, storage_url):
    s = Sent(tmp_path, storage_url, "per-subscriber")
    for who in ("yamada@example.jp", "sato@example.jp"):
        s.get(s.clicks(who)[0])
        s.get(s.pixel(who))
    s.get(s.clicks("yamada@example.jp")[0])
    s.flush()
    before = s.report()
    with s.engine.begin() as conn:
        for e in s.events():
            conn.execute(stats_events.update().where(stats_events.c.id == e.id).values(at=e.at - timedelta(days=401)))
    out = s.cli("stats", "prune", "--dry-run").stdout
    assert "would fold and delete 5 events" in out and len(s.events()) == 5
    assert "folded and deleted 5 events" in s.cli("stats", "prune").stdout
    assert s.events() == []
    with s.engine.connect() as conn:
        counts = list(conn.execute(select(stats_counts)))
    assert counts and all("reader" not in c._fields for c in counts)
    after = s.report()
    for key in ("opens", "clicks"):
        assert {k: v for k, v in after[key].items() if k != "human_via_proxy"} == \
            {k: v for k, v in before[key].items() if k != "human_via_proxy"}
    assert [a["clicks_human"] for a in after["articles"]] == [a["clicks_human"] for a in before["articles"]]


def test_erasing_a_subscriber_removes_their_events(tmp_path, storage_url):
    s = Sent(tmp_path, storage_url, "per-subscriber")
    s.get(s.clicks("yamada@example.jp")[0])
    s.get(s.clicks("sato@example.jp")[0])
    s.flush()
    s.cli("subscriber", "delete", "yamada@example.jp", "--yes")
    assert [e.reader for e in s.events()] and all(
        e.subscriber_id is not None for e in s.events()) and len(s.events()) == 1
    # A late click from the erased reader's mail is no longer tied to anyone.
    s.get(s.clicks("yamada@example.jp")[0])
    s.flush()
    assert len(s.events()) == 1


def test_the_buffer_writes_everything_on_a_clean_stop(tmp_path):
    s = Sent(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}", "per-subscriber")
    url = s.clicks("yamada@example.jp")[0]
    with TestClient(s.app, follow_redirects=False, headers={"User-Agent": BROWSER}) as client:
        for _ in range(25):
            assert client.get(urlsplit(url).path).status_code == 302
    assert len(s.events()) == 25  # lifespan shutdown flushed


def test_reader_tokens():
    key = b"k" * 32
    assert reader_token(key, "off", 5, 1) == "-"
    assert reader_token(key, "per-subscriber", 5, 1790000000).startswith("d5.1790000000.")
    a, b = reader_token(key, "aggregate", 5, 1), reader_token(key, "aggregate", 5, 1)
    assert a != b and a.startswith("m")
    assert open_url(Tracking("https://x.jp", key, 3), "h1", "R").startswith("https://x.jp/o/3.h1.")


def test_the_sql_of_the_stats_tables_is_plain(sent):
    with sent.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM stats_events")).scalar() == 0


# --------------------------------------------------------------------------- provider events


def test_provider_open_click_and_delivered_events_feed_the_same_table(tmp_path, monkeypatch):
    import base64
    import hashlib
    import hmac
    import time

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    monkeypatch.setenv("MG_SIGNING_KEY", "mailgun-signing-key-123")
    monkeypatch.setenv("PM_WEBHOOK_PASSWORD", "pw")
    s = Sent(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}", "per-subscriber", extra=f"""
[web.webhooks]
sendgrid_public_key = "{public}"
mailgun_signing_key_env = "MG_SIGNING_KEY"
postmark_username = "postmark"
postmark_password_env = "PM_WEBHOOK_PASSWORD"
""")
    with s.engine.connect() as conn:
        ids = dict(conn.execute(select(deliveries.c.email, deliveries.c.id)).all())
    now = int(time.time())
    sg = [{"email": "yamada@example.jp", "event": "delivered", "sg_event_id": "e1", "timestamp": now,
           "nl_delivery_id": str(ids["yamada@example.jp"])},
          {"email": "yamada@example.jp", "event": "open", "sg_event_id": "e2", "timestamp": now,
           "sg_machine_open": True, "nl_delivery_id": str(ids["yamada@example.jp"])},
          {"email": "yamada@example.jp", "event": "click", "sg_event_id": "e3", "timestamp": now,
           "url": "https://news.example.jp/articles/1", "useragent": BROWSER, "ip": READER_IP,
           "nl_delivery_id": str(ids["yamada@example.jp"])}]
    body = json.dumps(sg).encode()
    sig = base64.b64encode(key.sign(str(now).encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    res = s.client.post("/webhooks/sendgrid", content=body, headers={
        "Content-Type": "application/json", "X-Twilio-Email-Event-Webhook-Signature": sig,
        "X-Twilio-Email-Event-Webhook-Timestamp": str(now)})
    assert res.status_code == 200, res.text
    token = "tok"
    mg = {"signature": {"timestamp": str(now), "token": token, "signature": hmac.new(
        b"mailgun-signing-key-123", f"{now}{token}".encode(), hashlib.sha256).hexdigest()},
        "event-data": {"event": "opened", "recipient": "sato@example.jp", "id": "m1", "timestamp": now,
                       "ip": "66.249.84.12", "client-info": {"user-agent": SAMPLES[2][2]},
                       "user-variables": {"nl-delivery-id": str(ids["sato@example.jp"])}}}
    assert s.client.post("/webhooks/mailgun", json=mg).status_code == 200
    pm = {"RecordType": "Click", "Recipient": "sato@example.jp", "MessageID": "p1",
          "OriginalLink": "https://news.example.jp/articles/2", "UserAgent": "Barracuda Sentinel (EE)",
          "Metadata": {"nl_delivery_id": str(ids["sato@example.jp"])}}
    auth = base64.b64encode(b"postmark:pw").decode()
    assert s.client.post("/webhooks/postmark", json=pm, headers={"Authorization": f"Basic {auth}"}).status_code == 200
    evs = s.events()
    assert [(e.source, e.kind, e.machine, e.reason, e.via_proxy) for e in evs] == [
        ("sendgrid", "delivered", False, None, False), ("sendgrid", "open", True, "apple-mpp", False),
        ("sendgrid", "click", False, None, False), ("mailgun", "open", False, None, True),
        ("postmark", "click", True, "scanner", False)]
    assert all(e.subscriber_id is not None for e in evs)
    rep = s.report()
    assert rep["provider_delivered"] == 1
    assert rep["opens"]["human"] == 1 and rep["opens"]["human_via_proxy"] == 1 and rep["opens"]["machine"] == 1
    assert rep["clicks"]["human"] == 1 and rep["clicks"]["machine"] == 1


def test_the_signup_form_says_so_when_reading_is_recorded_per_subscriber(tmp_path):
    def page(mode: str) -> str:
        cli = CLI(write_config(tmp_path / mode, f"sqlite:///{tmp_path / mode / 'n.db'}", replace={
            "full_text = false": f'full_text = false\ntracking = "{mode}"'}))
        cli("init")
        config = load_config(cli.config_path)
        client = TestClient(create_app(config, open_engine(config.storage_url)), headers={"User-Agent": BROWSER})
        return client.get("/").text

    per = page("per-subscriber")
    assert "登録者ごとに記録します" in per and "「週刊 地方行政ニュース」では" in per
    assert "登録者ごとに記録" not in page("aggregate") and "登録者ごとに記録" not in page("off")


def test_report_as_text_and_csv_for_excel(sent, tmp_path):
    sent.get(sent.clicks("yamada@example.jp")[0])
    sent.flush()
    out = sent.cli("edition", "report", "1").stdout
    assert "tracking: per-subscriber" in out and "clicks:       human 1   machine 0" in out
    assert "学校給食の無償化、来年度から全市町村で" in out
    path = tmp_path / "report.csv"
    sent.cli("edition", "report", "1", "--csv", path)
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    rows = data.decode("utf-8-sig").splitlines()
    assert rows[0].startswith("article_id,title,url,clicks_human")
    assert any("学校給食" in r and ",1,0," in r for r in rows[1:])
    svg_path = tmp_path / "hours.svg"
    sent.cli("edition", "report", "1", "--svg", svg_path)
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg_path.read_text(encoding="utf-8"))
    ns = "{http://www.w3.org/2000/svg}"
    assert root.find(f"{ns}title").text.startswith("48時間") and "clicks 1" in root.find(f"{ns}desc").text
    assert len(root.findall(f"{ns}rect")) == 1 and "http" not in svg_path.read_text().replace(
        "http://www.w3.org/2000/svg", "")  # self-contained: nothing fetched
    bad = sent.cli("edition", "report", "7", ok=False)
    assert bad.exit_code == 1 and "edition 7" in bad.output


def test_a_text_only_readers_link_survives_wrapping_and_counts_as_text(sent):
    text_part = sent.text("suzuki@example.jp")
    links = re.findall(r"^(https://news\.example\.jp/r/\S+)\r?$", text_part, re.M)
    assert links and all(len(u.split("/")) == 6 for u in links)  # whole, on a line of their own
    res = sent.get(links[0])
    assert res.status_code == 302 and res.headers["location"] == "https://news.example.jp/articles/3"
    sent.flush()
    [ev] = sent.events()
    assert (ev.part, ev.fields, ev.subscriber_id is not None) == ("text", "local-government", True)
    rep = sent.report()
    text_variant = next(v for v in rep["variants"] if v["format"] == "text")
    assert text_variant == {"format": "text", "fields": ["local-government"], "delivered": 1, "clicks_human": 1,
                            "click_events_human": 1, "click_through": 1.0}


def test_apple_mpp_is_recognised_through_a_trusted_proxy_only(tmp_path):
    s = Sent(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}", "per-subscriber",
             extra=f'\n[web]\ntrusted_proxies = ["{READER_IP}"]\n')
    apple = {"X-Forwarded-For": "17.58.100.23", "User-Agent": "Mozilla/5.0"}
    assert s.get(s.pixel("yamada@example.jp"), headers=apple).status_code == 200
    # Without the proxy in trusted_proxies, the header is the client's own word: ignored.
    plain = Sent(tmp_path / "other", f"sqlite:///{tmp_path / 'other' / 'project' / 'var' / 'n.db'}", "per-subscriber")
    assert plain.get(plain.pixel("yamada@example.jp"), headers=apple).status_code == 200
    s.flush()
    plain.flush()
    assert [(e.machine, e.reason) for e in s.events()] == [(True, "apple-mpp")]
    assert [(e.machine, e.reason) for e in plain.events()] == [(False, None)]


def test_links_are_preloaded_at_start_so_the_redirect_survives_a_database_outage(tmp_path):
    s = Sent(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}", "aggregate")
    url = s.clicks("yamada@example.jp")[0]
    with TestClient(s.app, follow_redirects=False, headers={"User-Agent": BROWSER}) as client:  # lifespan: preload
        s.app.state.svc.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none",
                                               connect_args={"connect_timeout": 1})
        res = client.get(urlsplit(url).path)
        assert res.status_code == 302 and res.headers["location"].startswith("https://news.example.jp/articles/")
        s.app.state.svc.engine = s.engine  # back before the stop, so the buffered click is written
    assert len(s.events()) == 1


def test_the_access_log_never_holds_a_tracking_token_or_reader(sent, caplog):
    caplog.set_level("INFO", logger="newsletter.web.access")
    url = sent.clicks("yamada@example.jp")[0]
    sent.get(url)
    sent.get(sent.pixel("yamada@example.jp"))
    token, reader = urlsplit(url).path.split("/")[2:4]
    lines = [r.getMessage() for r in caplog.records if r.name == "newsletter.web.access"]
    assert len(lines) == 2 and '"GET /r/…"' in lines[0] and '"GET /o/…"' in lines[1]
    assert not any(token.split(".")[-1] in line or reader.split(".")[0] + "." in line for line in lines)
