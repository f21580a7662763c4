"""The operator's room in Debian's Chromium (Playwright) on a real uvicorn server:
a send proceeds slowly (``rate = "2/s"``) against the real SMTP test server while
the sending page is open, and its figures change without a reload (the static
progress.js polling progress.json; the polite live region says when it is
done); the same page with JavaScript off shows the figures and a 更新 link.  Then
the reading statistics, the schedules (一時停止 / 再開), 配信再開 of a bounced
subscriber and the audit log's date filter.

Every new page is screenshotted at desktop (1280) and phone (390) width into
tests/artifacts/console/room-*.png and checked with axe-core (serious or critical
violations fail), as tests/test_admin_browser.py does."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select

from newsletter.store.tables import deliveries
from tests.conftest import ROOT
from tests.test_admin_browser import PASSWORD, SHOTS, sign_in
from tests.test_stats_e2e import CHROME
from tests.test_web_browser import AXE, CHROMIUM, CHROMIUM_ARGS, Pages, live_server, need


def _get(url: str) -> int:
    """A reader's Chrome fetching ``url`` (the open pixel, a tracked link)."""
    target = urlsplit(url)
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
    conn.request("GET", target.path, headers={"User-Agent": CHROME})
    status = conn.getresponse().status
    conn.close()
    return status


def test_live_progress_statistics_schedules_and_reactivation_in_the_browser(tmp_path, smtp_server):
    need(Path(CHROMIUM), "Debian's chromium (apt-get install chromium)")
    need(AXE, "npm install --no-save --prefix tests/.axe axe-core@4")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    tracked = {"full_text = false": 'full_text = false\ntracking = "aggregate"',
               '# on_holiday = "send"': 'on_holiday = "next_business_day"'}
    with live_server(tmp_path / "project", smtp_server, replace=tracked) as live, sync_playwright() as p:
        cli = live.cli
        cli("user", "add", "unyo", "--email", "unyo@example.jp", "--role", "operator", input=PASSWORD + "\n")
        cli("subscriber", "import", ROOT / "subscribers" / "sample.csv")
        cli("article", "import", ROOT / "articles" / "sample.json")
        # The send runs in its own process, slowly: two messages a second.
        config = cli.config_path.read_text(encoding="utf-8")
        cli.config_path.write_text(config.replace("timeout = 10\n", 'timeout = 10\nrate = "2/s"\n'), encoding="utf-8")
        smtp_server.reply_to_rcpt("ito.yui@example.com", "550 5.1.1 <ito.yui@example.com>: 宛先がありません")
        held = smtp_server.hold("sato.hanako@example.jp")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        send = subprocess.Popen([sys.executable, "-m", "newsletter", "--config", str(cli.config_path), "edition",
                                 "send", "weekly"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(locale="ja-JP", viewport={"width": 1280, "height": 900})
        pages = Pages(page, SHOTS)
        base = live.base
        try:
            assert held.reached.wait(30), "the send never reached the held message"
            sign_in(page, base, "unyo")
            page.goto(f"{base}/admin/sending")
            page.get_by_role("link", name="第1号").first.click()
            page.wait_for_selector("h2:has-text('送信の進み具合')")
            sent = page.locator('[data-key="sent"]')
            before = int(sent.inner_text())
            assert "配信中" in page.locator("h1").inner_text()
            page.evaluate("() => { window.__notReloaded = true; }")
            held.release()
            # The figure changes in place (no navigation), then the state is announced politely.
            page.wait_for_function(f"() => document.querySelector('[data-key=\"sent\"]').textContent !== '{before}'",
                                   timeout=20000)
            assert page.evaluate("() => window.__notReloaded === true")
            page.wait_for_function("() => document.getElementById('progress-live').textContent.includes('配信完了')",
                                   timeout=60000)
            assert page.evaluate("() => window.__notReloaded === true")
            assert send.wait(60) in (0, 1), send.stdout.read().decode()
            with live.engine.connect() as conn:
                final = sum(1 for (s,) in conn.execute(select(deliveries.c.status)) if s == "sent")
            assert int(sent.inner_text()) == final > before
            assert page.locator("#progress-live").get_attribute("aria-live") == "polite"
            page.get_by_role("link", name="更新").click()  # the page as loaded now: 配信完了, the failure listed
            page.wait_for_selector("text=送信できなかったメール")
            assert "ito.yui@example.com" in page.locator("table").inner_text()
            pages.check("room-01-sending-edition")

            # JavaScript off: the same figures, and a link to update them.
            quiet = browser.new_context(java_script_enabled=False, locale="ja-JP")
            quiet.add_cookies(page.context.cookies())
            still = quiet.new_page()
            still.goto(page.url)
            assert still.locator('[data-key="sent"]').inner_text() == str(final)
            assert still.get_by_role("link", name="更新").count() == 1
            quiet.close()

            # Three readers open the mail (the pixel loads), one of them clicks an article.
            mails = {m.rcpt_tos[0]: m.message.get_body(("html",)).get_content() for m in smtp_server.messages
                     if m.message.get_body(("html",)) is not None}
            readers = sorted(mails)[:3]
            for address in readers:
                html = mails[address]
                assert _get(unescape(re.search(r'src="(http://127\.0\.0\.1:\d+/o/[^"]+)"', html).group(1))) == 200
            link = unescape(re.search(r'href="(http://127\.0\.0\.1:\d+/r/[^"]+)"', mails[readers[0]]).group(1))
            assert _get(link) == 302
            page.get_by_role("link", name="閲読の統計").click()
            page.wait_for_selector("h1:has-text('閲読の統計')")
            for _ in range(50):  # the counting buffer writes within a second
                if page.locator("dt:has-text('開封（人）') + dd").inner_text() == "3":
                    break
                page.wait_for_timeout(200)
                page.reload()
            assert page.locator("dt:has-text('開封（人）') + dd").inner_text() == "3"
            assert page.locator("dt:has-text('クリック（人）') + dd").inner_text() == "1"
            assert page.evaluate("() => document.querySelector('.chart img').naturalWidth") > 0  # the SVG loaded
            pages.check("room-02-report")

            page.goto(f"{base}/admin/schedules")
            pages.check("room-03-schedules")
            page.get_by_role("button", name="一時停止").click()
            page.wait_for_selector("text=定期配信を一時停止しました。")
            pages.check("room-04-schedules-paused")
            page.get_by_role("button", name="再開").click()
            page.wait_for_selector("text=定期配信を再開しました。")

            # The address refused with 5.1.1 is bounced; it comes back with a reason.
            page.goto(f"{base}/admin/subscribers?q=ito.yui")
            page.get_by_role("link", name="ito.yui@example.com").click()
            page.wait_for_selector("h2:has-text('配信再開')")
            pages.check("room-05-subscriber-bounced")
            page.get_by_label("再開の理由").fill("本人から電話: メールボックスを作り直した（12/1 確認）")
            page.get_by_role("button", name="配信再開").click()
            page.wait_for_selector("text=配信を再開しました。")
            assert live.subscriber("ito.yui@example.com").status == "active"

            page.goto(f"{base}/admin/audit")
            page.get_by_label("期間（開始日）").fill("2000-01-01")
            page.get_by_label("期間（終了日）").fill("1999-12-31")
            page.get_by_role("button", name="絞り込む").click()
            page.wait_for_selector("text=終了日は開始日より後にしてください。")
            pages.check("room-06-audit-dates")
        finally:
            held.release()
            if send.poll() is None:
                send.kill()
            browser.close()
    assert len(pages.seen) == 6
