"""Reading statistics end to end: an edition through the real SMTP test server,
a real uvicorn server counting, Chromium opening some of the messages (the
pixel loads) and clicking links in some, scanners sending HEAD and GET bursts
at others — and ``edition report 1 --json`` showing exactly those counts."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import threading
import time
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn

from newsletter.config import load_config
from newsletter.store import open_engine
from newsletter.web import create_app
from tests.conftest import CLI, write_config
from tests.test_editions import smtp_provider
from tests.test_web_browser import CHROMIUM, CHROMIUM_ARGS

# A reader's Chrome (headless Chromium announces itself as HeadlessChrome, which is a machine's agent).
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
SCANNER = "Mozilla/5.0 (compatible; Mimecast URL Protect)"
READERS = ["a", "b", "c", "d", "e", "f", "g"]  # a-g@example.jp, HTML; t@example.jp text only


def _request(base: str, method: str, url: str, agent: str) -> int:
    target = urlsplit(url)
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
    conn.request(method, target.path, headers={"User-Agent": agent})
    status = conn.getresponse().status
    conn.close()
    return status


def test_opens_clicks_and_scanners_end_to_end(tmp_path, smtp_server):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: .ci/run installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    folder = tmp_path / "project"
    cli = CLI(write_config(folder, f"sqlite:///{folder / 'var' / 'newsletter.db'}", provider=smtp_provider(smtp_server),
                           replace={'base_url = "https://news.example.jp"': f'base_url = "{base}"',
                                    "full_text = false": 'full_text = false\ntracking = "per-subscriber"'}))
    cli("init")
    for r in READERS:
        cli("subscriber", "add", f"{r}@example.jp", "--fields", "education,administration")
    cli("subscriber", "add", "t@example.jp", "--fields", "education", "--format", "text")
    folder.joinpath("a.md").write_text("本文", encoding="utf-8")
    for i, (title, field) in enumerate([("県立高校の再編計画案を公表", "education"),
                                        ("教員の働き方改革、部活動の地域移行を加速", "education"),
                                        ("行政手続のオンライン化、申請の九割に", "administration")], 1):
        cli("article", "add", "--title", title, "--url", f"{base}/archive/?article={i}", "--field", field,
            "--summary", f"{title}について。")
    cli("edition", "send", "weekly")
    mails = {m.rcpt_tos[0]: m.message for m in smtp_server.messages}
    assert len(mails) == 8

    def html(r: str) -> str:
        return mails[f"{r}@example.jp"].get_body(("html",)).get_content()

    def links(r: str) -> list[str]:
        found = [unescape(u) for u in re.findall(r'href="(http://127\.0\.0\.1:\d+/r/[^"]+)"', html(r))]
        return list(dict.fromkeys(found))  # title and 続きを読む go to the same article: one per article

    def pixel(r: str) -> str:
        return unescape(re.search(r'src="(http://127\.0\.0\.1:\d+/o/[^"]+)"', html(r)).group(1))

    config = load_config(cli.config_path)
    engine = open_engine(config.storage_url)
    server = uvicorn.Server(uvicorn.Config(create_app(config, engine), log_level="warning", access_log=False,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(user_agent=CHROME, locale="ja-JP")
            try:
                for r in ("a", "b", "c"):  # open the mail: the pixel loads
                    page = context.new_page()
                    seen: list = []
                    page.on("response", lambda res, seen=seen: seen.append((res.url, res.status)))
                    page.on("requestfailed", lambda req, seen=seen: seen.append((req.url, req.failure)))
                    page.set_content(html(r))
                    page.wait_for_load_state("networkidle")
                    assert [s for u, s in seen if "/o/" in u] == [200], seen
                    if r == "a":  # and click the first article
                        page.click("h3.article-title a")
                        page.wait_for_url(f"{base}/archive/?article=*")
                    page.close()
                page = context.new_page()  # b comes back later and reads two articles
                for url in links("b")[:2]:
                    page.goto(url)
                    assert page.url.startswith(f"{base}/archive/?article=")
                page.goto(links("d")[1])  # d reads the text... its images were off: a click, no open
                assert page.url.startswith(f"{base}/archive/?article=")
            finally:
                browser.close()
        # A security gateway checks e's mail with HEAD requests, f's with its own agent,
        # and one that pretends to be a browser follows every link in g's mail at once.
        assert _request(base, "HEAD", pixel("e"), CHROME) == 200
        for url in links("e"):
            assert _request(base, "HEAD", url, CHROME) == 302
        for url in links("f"):
            assert _request(base, "GET", url, SCANNER) == 302
        for url in links("g"):
            assert _request(base, "GET", url, CHROME) == 302
    finally:
        server.should_exit = True  # a clean stop: the buffer is written
        thread.join(10)
        sock.close()
    rep = json.loads(cli("edition", "report", "1", "--json").stdout)
    engine.dispose()
    assert rep["delivered"] == 8
    o, c = rep["opens"], rep["clicks"]
    assert (o["human"], o["machine"], o["unknown"], o["human_via_proxy"]) == (3, 1, 1, 0)
    assert (c["human"], c["machine"]) == (3, 3)
    assert (c["human_events"], c["machine_events"]) == (4, 9)
    by_url = {a["url"]: a for a in rep["articles"]}
    first = links("a")  # every HTML reader has the same articles in the same order
    order = [re.search(r"/r/\d+\.(\d+)\.", u).group(1) for u in first]
    assert len(order) == 3
    human = {f"{base}/archive/?article={i}": 0 for i in (1, 2, 3)}
    index_to_url = {lk["index"]: lk["url"] for lk in rep["links"]}
    for u in [first[0], *links("b")[:2], links("d")[1]]:
        human[index_to_url[int(re.search(r"/r/\d+\.(\d+)\.", u).group(1))]] += 1
    assert {u: a["clicks_human"] for u, a in by_url.items()} == human
    assert all(a["clicks_machine"] == 3 for a in rep["articles"])
    assert sum(h["opens_human"] for h in rep["hours"]) == 3
    html_variant = next(v for v in rep["variants"] if v["format"] == "html")
    assert html_variant["delivered"] == 7 and html_variant["clicks_human"] == 3
