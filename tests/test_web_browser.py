"""The web service as people and mailbox providers meet it: a real uvicorn
server on 127.0.0.1, mail through the real SMTP test server, and

- Chromium (Debian's, headless, driven by Playwright) signing up on the page,
  confirming from the mail's link, changing fields and unsubscribing — with a
  screenshot of each page in tests/artifacts/;
- an RFC 8058 one-click unsubscribe exactly as Gmail sends it, to the URL in
  the List-Unsubscribe header of a delivered edition;
- ``newsletter serve`` itself, started as a command.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
from sqlalchemy import select
from sqlalchemy.engine import Engine

from newsletter.config import Config, load_config
from newsletter.store import open_engine
from newsletter.store.tables import consents, deliveries, subscribers
from newsletter.web import create_app
from tests.conftest import CLI, ROOT, write_config
from tests.test_editions import smtp_provider

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
AXE = ROOT / "tests" / ".axe" / "node_modules" / "axe-core" / "axe.min.js"


def need(path: Path | str, what: str) -> None:
    """Skip without ``path`` (fail in CI, where .ci/run installs it)."""
    if not Path(path).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} missing: {what}")
        pytest.skip(f"{path} missing: {what}")


class Pages:
    """Every page a browser test visits: axe-core finds no serious or critical
    violation (WCAG 2.1 A/AA rules), and a full-page screenshot at desktop (1280)
    and phone (390) width goes to ``folder``, to be looked at."""

    def __init__(self, page, folder: Path):
        self.page = page
        self.axe = AXE.read_text(encoding="utf-8")
        self.folder = folder
        self.seen: list[str] = []
        folder.mkdir(parents=True, exist_ok=True)

    def check(self, name: str) -> None:
        page = self.page
        size = page.viewport_size
        for width, label in ((1280, "desktop"), (390, "phone")):
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_load_state("networkidle")
            # evaluate() runs outside the page's Content-Security-Policy (no inline script needed).
            if not page.evaluate("() => typeof window.axe !== 'undefined'"):
                page.evaluate(self.axe + "\n;0")
            result = page.evaluate("""async () => {
                const r = await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}});
                return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                    .map(v => ({id: v.id, impact: v.impact, help: v.help,
                                nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
            }""")
            assert result == [], f"{name} ({label}): {json.dumps(result, ensure_ascii=False, indent=1)}"
            # Nothing wider than the screen: a phone reader never scrolls the page sideways.
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name}: {overflow}px wider than a {width}px screen"
            page.screenshot(path=str(self.folder / f"{name}-{label}.png"), full_page=True)
        page.set_viewport_size(size)
        self.seen.append(name)


def png_colours(png: bytes, limit: int = 64) -> int:
    """How many different colours a PNG screenshot has (counted up to ``limit``):
    a blank frame has one or two, a rendered page hundreds.  8-bit RGB(A),
    not interlaced, as Chromium writes them (RFC 2083 filters undone here)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    width, height, depth, ctype, _, _, interlace = header
    assert depth == 8 and ctype in (2, 6) and interlace == 0, header
    bpp = 3 if ctype == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, seen = bytearray(stride), set()
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        seen.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp))
        if len(seen) >= limit:
            return len(seen)
        prev = line
    return len(seen)


@dataclass
class Live:
    base: str
    port: int
    cli: CLI
    config: Config
    engine: Engine

    def subscriber(self, address: str):
        with self.engine.connect() as conn:
            return conn.execute(select(subscribers).where(subscribers.c.email == address)).first()

    def consent_events(self, address: str) -> list:
        with self.engine.connect() as conn:
            return list(conn.execute(select(consents).where(consents.c.subscriber_id == self.subscriber(address).id)
                                     .order_by(consents.c.id)))


@contextmanager
def live_server(folder: Path, smtp_server, replace: dict | None = None) -> Iterator[Live]:
    """What ``newsletter serve`` runs (create_app on uvicorn), in a thread, with
    base_url pointing at it so that the links in mails lead here (``replace``:
    more config.toml edits, as write_config takes them)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    cli = CLI(write_config(folder, f"sqlite:///{folder / 'var' / 'newsletter.db'}", provider=smtp_provider(smtp_server),
                           replace={'base_url = "https://news.example.jp"': f'base_url = "{base}"', **(replace or {})}))
    cli("init")
    config = load_config(cli.config_path)
    engine = open_engine(config.storage_url)
    server = uvicorn.Server(uvicorn.Config(create_app(config, engine), log_level="warning", access_log=False,
                                           lifespan="off", proxy_headers=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Live(base, port, cli, config, engine)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        engine.dispose()


@pytest.fixture
def live(tmp_path, smtp_server) -> Iterator[Live]:
    with live_server(tmp_path / "project", smtp_server) as server:
        yield server


def confirmation_url(smtp_server, address: str) -> str:
    mail = [m for m in smtp_server.messages if m.rcpt_tos == (address,)][-1].message
    return re.search(r"http://\S+/confirm/\S+", mail.get_body(("plain",)).get_content()).group(0)


def described_by(page, locator) -> str:
    """The text of what ``aria-describedby`` ties to an element (its error)."""
    return locator.evaluate("e => (e.getAttribute('aria-describedby') || '').split(' ').filter(Boolean)"
                            ".map(i => document.getElementById(i).textContent).join(' ')")


def test_a_reader_signs_up_confirms_changes_fields_and_leaves(live, smtp_server):
    """Each page found by its labels and button names, checked by axe-core and
    screenshotted at 1280 and 390 px into tests/artifacts/reader/."""
    need(CHROMIUM, ".ci/run installs Debian's chromium (apt-get install chromium)")
    need(AXE, "npm install --no-save --prefix tests/.axe axe-core@4")
    from playwright.sync_api import sync_playwright

    address = "browser.reader@example.jp"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(locale="ja-JP", viewport={"width": 1280, "height": 900})
        pages = Pages(page, ARTIFACTS / "reader")
        try:
            page.goto(f"{live.base}/")
            assert page.title().startswith("メールマガジン配信登録")
            pages.check("01-signup")
            # Keyboard: the first Tab reaches the skip link, drawn with the focus ring; Enter goes to the form.
            page.keyboard.press("Tab")
            focused = "(p) => getComputedStyle(document.activeElement)[p]"
            assert page.evaluate("() => document.activeElement.textContent") == "本文へ移動"
            assert page.evaluate(focused, "outlineStyle") == "solid" and page.evaluate(focused, "outlineWidth") == "4px"
            page.keyboard.press("Enter")
            # The fragment navigation lands after the key press returns; wait for it (a bare read raced in CI).
            page.wait_for_url(re.compile(r"#main$"), timeout=5000)
            page.get_by_label("メールアドレス").fill(address)
            page.get_by_label("お名前").fill("山田 太郎")
            for name in ("地方自治", "行政", "教育"):
                page.get_by_label(name, exact=True).uncheck()
            page.get_by_label("上記に同意して").check()
            page.get_by_role("button", name="確認メールを送る").click()
            # No field chosen: the error is beside the group, tied to it, and in the summary; input kept.
            group = page.get_by_role("group", name="配信を希望する分野")
            assert group.get_attribute("aria-invalid") == "true"
            assert described_by(page, group) == "⚠ 分野を1つ以上選んでください。".removeprefix("⚠ ")
            assert page.get_by_role("alert").get_by_role("link", name="分野を1つ以上選んでください。").count() == 1
            assert page.get_by_label("メールアドレス").input_value() == address
            assert live.subscriber(address) is None
            pages.check("01b-signup-error")
            page.get_by_label("教育", exact=True).check()
            page.get_by_label("上記に同意して").check()
            page.get_by_role("button", name="確認メールを送る").click()
            page.wait_for_selector("text=確認メールをお送りしました")
            pages.check("02-check-your-inbox")
            row = live.subscriber(address)
            assert (row.status, row.fields) == ("pending", "education")
            signup = live.consent_events(address)[0]
            assert signup.event == "signup" and signup.ip == "127.0.0.1" and "Chrome" in signup.user_agent

            url = confirmation_url(smtp_server, address)
            assert url.startswith(f"{live.base}/confirm/")
            page.goto(url)
            page.wait_for_selector("#confirm-form")
            pages.check("03-confirm")
            assert live.subscriber(address).status == "pending"  # opening the link is not enough
            page.get_by_role("button", name="登録を確定する").click()
            page.wait_for_selector("text=登録が完了しました")
            pages.check("04-confirmed")
            row = live.subscriber(address)
            assert (row.status, row.fields, row.name) == ("active", "education", "山田 太郎")
            assert [c.event for c in live.consent_events(address)] == ["signup", "confirm"]

            page.get_by_role("link", name="配信設定を変更する").click()
            page.wait_for_selector("#preferences-form")
            pages.check("05-preferences")
            page.get_by_label("地方自治", exact=True).check()
            page.get_by_label("教育", exact=True).uncheck()
            page.get_by_label("テキスト形式").check()
            page.keyboard.press("Tab")  # from the radio group to the button
            assert page.evaluate("() => document.activeElement.textContent") == "設定を保存する"
            assert page.evaluate(focused, "outlineStyle") == "solid"
            page.keyboard.press("Enter")  # saved by keyboard alone
            page.wait_for_selector("text=設定を保存しました")
            pages.check("06-preferences-saved")
            row = live.subscriber(address)
            assert (row.status, row.fields, row.format) == ("active", "local-government", "text")

            unsubscribe_path = page.locator("#unsubscribe-form").get_attribute("action")
            page.goto(f"{live.base}{unsubscribe_path}")  # the page a mail's 配信停止 link opens
            pages.check("07-unsubscribe")
            page.get_by_role("button", name="配信を停止する").click()
            page.wait_for_selector("text=配信を停止しました")
            pages.check("08-unsubscribed")
            assert live.subscriber(address).status == "unsubscribed"
            assert [c.event for c in live.consent_events(address)] == ["signup", "confirm", "change", "unsubscribed"]

            live.cli("article", "import", ROOT / "articles" / "sample.json")
            live.cli("subscriber", "add", "someone@example.jp", "--fields", "education")
            live.cli("edition", "send", "weekly")
            page.goto(f"{live.base}/archive/")
            page.wait_for_selector("text=第1号")
            pages.check("09-archive")
            page.get_by_role("link", name="第1号").click()
            page.wait_for_selector("text=読者の皆さま")
            pages.check("10-archive-edition")
            # The magazine layout holds inside the site's frame (issue 17): no headline breaks inside a phrase.
            from tests.test_render_browser import HEADLINES, MEASURE

            page.set_viewport_size({"width": 390, "height": 900})
            assert page.evaluate("(s) => document.querySelectorAll(s).length", HEADLINES) > 0
            assert [b for b in page.evaluate(MEASURE, HEADLINES) if b["width"] <= b["box"]] == []
            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto(f"{live.base}/confirm/1.not-a-token")
            pages.check("11-bad-link")
        finally:
            browser.close()
    assert len(pages.seen) == 12


def test_rfc8058_one_click_exactly_as_gmail_sends_it(live, smtp_server):
    live.cli("subscriber", "import", ROOT / "subscribers" / "sample.csv")
    live.cli("article", "import", ROOT / "articles" / "sample.json")
    live.cli("edition", "send", "weekly")
    received = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    assert len(received) == 12
    address, message = sorted(received.items())[0]
    assert message.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The header as it is on the wire (folded between its two URIs, never inside one).
    raw = message.data.decode("ascii", "replace")
    header = re.search(r"^List-Unsubscribe: (.*?)\r\n(?! )", raw, re.S | re.M).group(1)
    url = re.search(r"<(https?://[^>]+)>", header).group(1)
    assert url.startswith(f"{live.base}/unsubscribe/")
    target = urlsplit(url)

    def post() -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        body = b"List-Unsubscribe=One-Click"
        conn.request("POST", target.path, body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(len(body)),
            "User-Agent": "Mozilla/5.0 (compatible; Google-One-Click-Unsubscribe)"})
        res = conn.getresponse()
        res.read()
        conn.close()
        return res

    res = post()
    assert res.status == 200  # RFC 8058: no redirect, no cookie, no page to click through
    assert res.getheader("Location") is None and res.getheader("Set-Cookie") is None
    assert live.subscriber(address).status == "unsubscribed"
    assert post().status == 200
    assert live.subscriber(address).status == "unsubscribed"
    [event] = [c for c in live.consent_events(address) if c.event == "unsubscribed"]
    assert event.source == "one-click"
    others = [a for a in received if a != address]
    assert all(live.subscriber(a).status == "active" for a in others)

    # A GET on another reader's link (a scanner's prefetch) shows a page and changes nothing.
    other_url = re.search(r"<(https?://[^>]+)>", received[others[0]].data.decode("ascii", "replace")
                          .split("List-Unsubscribe: ", 1)[1]).group(1)
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
    conn.request("GET", urlsplit(other_url).path)
    assert conn.getresponse().status == 200
    conn.close()
    assert live.subscriber(others[0]).status == "active"
    with live.engine.connect() as conn:
        assert conn.execute(select(deliveries.c.status).where(deliveries.c.email == address)).scalar() == "sent"


def test_newsletter_serve_command(tmp_path):
    """``newsletter serve --host --port`` as an operator starts it."""
    cli = CLI(write_config(tmp_path / "project", f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}"))
    cli("init")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "--config", str(cli.config_path), "serve",
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/")
                res = conn.getresponse()
                body = res.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "newsletter serve did not start"
                time.sleep(0.1)
        assert res.status == 200 and "メールマガジン配信登録" in body
        assert res.getheader("X-Frame-Options") == "DENY" and res.getheader("Server") is None
        # The console, where `newsletter demo` says it is: /admin/ leads to its sign-in page.
        conn.request("GET", "/admin/")
        res = conn.getresponse()
        res.read()
        assert res.status == 303 and res.getheader("Location").endswith("/admin/login")
        conn.request("GET", "/admin/login")
        res = conn.getresponse()
        assert res.status == 200 and "ユーザー名" in res.read().decode()
        conn.request("GET", "/unsubscribe/1.secretlookingtoken0000")
        conn.getresponse().read()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0].decode()
    assert f"serving 地方行政ニュース on http://127.0.0.1:{port}/" in out
    assert "secretlookingtoken" not in out  # the access log never has tokens
    assert '"GET /unsubscribe/…" 400' in out
