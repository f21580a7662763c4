"""The week of a magazine in the console, in Debian's Chromium (Playwright) on a
real uvicorn server, mail through the real SMTP test server:

an admin adds an editor, an approver and an operator (CLI); the editor signs in,
writes two articles, builds the draft, previews it — the desktop and phone
frames show the mail — and sends a test message to herself; the approver
approves it and schedules it for a time two days ahead; the daemon's own loop
(``newsletter run``'s scheduler tick and delivery pass, ``Daemon`` with an
injected clock set past that time) sends it to the SMTP test server, which
refuses one address; the operator finds the failed delivery and its reason.

Every step goes through labels and button names, as a screen reader would.
Every page is screenshotted at desktop (1280) and phone (390) width into
tests/artifacts/console/, and axe-core (tests/.axe, installed by .ci/run) must
find no serious or critical violation on any of them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from newsletter.daemon import Daemon
from newsletter.store.tables import deliveries
from tests.conftest import ROOT
from tests.test_web_browser import ARTIFACTS, AXE, CHROMIUM, CHROMIUM_ARGS, Pages, live_server, need, png_colours

SHOTS = ARTIFACTS / "console"
PASSWORD = "correct horse 電池"
TOKYO = ZoneInfo("Asia/Tokyo")


def previews_painted(page) -> None:
    """The edition page's preview frames show the mail on the screen, not only in
    the DOM: a sandboxed frame with an opaque origin, in a process of its own,
    was painted blank in screenshots."""
    page.wait_for_load_state("networkidle")
    for frame in ("iframe.frame-desktop", "iframe.frame-phone"):
        page.frame_locator(frame).first.locator("text=師走に入り").wait_for()
        assert png_colours(page.locator(frame).first.screenshot()) >= 64, f"{frame}: blank"


def sign_in(page, base: str, name: str) -> None:
    page.goto(f"{base}/admin/login")
    page.get_by_label("ユーザー名").fill(name)
    page.get_by_label("パスワード").fill(PASSWORD)
    page.get_by_role("button", name="ログイン").click()
    page.wait_for_selector("text=ログイン中")


def sign_out(page) -> None:
    page.get_by_role("button", name="ログアウト").click()
    page.wait_for_selector("h1:has-text('ログイン')")


def test_the_week_of_a_magazine_in_the_console(tmp_path, smtp_server):
    need(CHROMIUM, "Debian's chromium (apt-get install chromium)")
    need(AXE, "npm install --no-save --prefix tests/.axe axe-core@4")
    from playwright.sync_api import sync_playwright

    with live_server(tmp_path / "project", smtp_server) as live, sync_playwright() as p:
        cli = live.cli
        cli("user", "add", "chief", "--email", "chief@example.jp", "--role", "admin", input=PASSWORD + "\n")
        cli("user", "add", "suzuki", "--email", "suzuki@example.jp", "--role", "editor", input=PASSWORD + "\n")
        cli("user", "add", "kacho", "--email", "kacho@example.jp", "--role", "approver", input=PASSWORD + "\n")
        cli("user", "add", "unyo", "--email", "unyo@example.jp", "--role", "operator", input=PASSWORD + "\n")
        cli("subscriber", "import", ROOT / "subscribers" / "sample.csv")
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(locale="ja-JP", viewport={"width": 1280, "height": 900})
        pages = Pages(page, SHOTS)
        base = live.base
        try:
            page.goto(f"{base}/admin/")
            page.wait_for_selector("h1:has-text('ログイン')")  # no session: the sign-in page
            pages.check("01-login")
            page.get_by_label("ユーザー名").fill("suzuki")
            page.get_by_label("パスワード").fill("wrong password")
            page.get_by_role("button", name="ログイン").click()
            page.wait_for_selector("text=ユーザー名またはパスワードが正しくありません。")
            pages.check("01b-login-failed")

            # -- the editor
            sign_in(page, base, "suzuki")
            pages.check("02-home-editor")
            titles = ("県立図書館の開館時間を延長します", "子ども医療費助成の申請が電子化されます")
            for i, title in enumerate(titles):
                page.goto(f"{base}/admin/articles/new")
                page.get_by_label("タイトル").fill(title)
                page.get_by_label("URL").fill(f"https://www.pref.example.lg.jp/news/{i + 1}")
                page.get_by_label("概要").fill(f"{title}。詳しくはリンク先をご覧ください。")
                page.get_by_label("本文").fill("## お知らせ\n\n- 対象: 県内にお住まいの方\n- 期間: 12月から")
                page.get_by_label("教育").check()
                page.get_by_role("button", name="保存").click()
                page.wait_for_selector("text=保存しました。")
                if i == 0:
                    pages.check("03-article-form")
            page.goto(f"{base}/admin/articles")
            pages.check("04-articles")

            page.goto(f"{base}/admin/editions")
            pages.check("04b-editions")
            page.get_by_role("button", name="次号の下書きを作る").first.click()
            page.wait_for_selector("text=掲載する記事")
            page.get_by_label("件名", exact=True).fill("【県政だより】12月号 図書館と医療費助成")
            page.get_by_label("巻頭言", exact=True).fill("師走に入り、寒さが一段と厳しくなりました。")
            page.get_by_role("button", name="保存").click()
            page.wait_for_selector("text=件名・巻頭言・編集後記を保存しました。")
            previews_painted(page)
            pages.check("05-edition-draft")
            page.get_by_role("button", name="テスト送信").click()
            page.wait_for_selector("text=テストメールを送りました。")
            test_mail = [m for m in smtp_server.messages if m.rcpt_tos == ("suzuki@example.jp",)]
            assert len(test_mail) == 1  # and a test send says so in its subject
            assert test_mail[0].message["Subject"] == "【テスト】【県政だより】12月号 図書館と医療費助成"
            assert not page.get_by_role("button", name="承認", exact=True).count()  # not an editor's button
            edition_url = page.url.split("?")[0]
            sign_out(page)

            # -- the approver
            sign_in(page, base, "kacho")
            page.goto(edition_url)
            page.get_by_role("button", name="承認", exact=True).click()
            page.wait_for_selector("text=承認しました。")
            at = (datetime.now(TOKYO) + timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
            page.get_by_label("配信日時").fill(at.strftime("%Y-%m-%dT%H:%M"))
            page.get_by_role("button", name="予約配信").click()
            page.wait_for_selector(f"text=配信予定: {at:%Y-%m-%d %H:%M}")
            previews_painted(page)
            pages.check("06-edition-scheduled")
            sign_out(page)

            # -- the daemon sends it when its clock passes that time; the SMTP server refuses one reader
            smtp_server.reply_to_rcpt("kato.hiroshi@example.jp", "550 5.7.1 Message refused by policy")
            before = len(smtp_server.messages)
            clock = [at.astimezone(UTC) - timedelta(minutes=1)]
            daemon = Daemon(cli.config_path, clock=lambda: clock[0])
            try:
                daemon.beat(catch_up=False)  # takes the scheduler lease, as `newsletter run` does first
                daemon.tick()
                assert not daemon.deliver_due() and len(smtp_server.messages) == before  # not yet
                clock[0] = at.astimezone(UTC) + timedelta(seconds=5)
                daemon.tick()
                assert daemon.deliver_due()
            finally:
                daemon.engine.dispose()
            with live.engine.connect() as conn:
                rows = {r.email: r.status for r in conn.execute(select(deliveries.c.email, deliveries.c.status))}
            received = [m for m in smtp_server.messages[before:]]
            assert sorted(m.rcpt_tos[0] for m in received) == sorted(a for a, st in rows.items() if st == "sent")
            assert rows.pop("kato.hiroshi@example.jp") == "failed" and len(rows) >= 2
            assert {m.message["Subject"] for m in received} == {"【県政だより】12月号 図書館と医療費助成"}

            # -- the operator
            sign_in(page, base, "unyo")
            page.goto(f"{base}/admin/sending")
            pages.check("07-sending")
            page.get_by_role("link", name="第1号").first.click()
            page.wait_for_selector("text=送信できなかったメール")
            row = page.locator("tr", has_text="kato.hiroshi@example.jp")
            assert "550 5.7.1 Message refused by policy" in row.inner_text()
            pages.check("08-sending-edition")
            page.goto(f"{base}/admin/subscribers")
            pages.check("09-subscribers")
            page.get_by_role("link", name="kato.hiroshi@example.jp").click()
            page.wait_for_selector("text=同意の記録")
            pages.check("10-subscriber")
            page.goto(f"{base}/admin/subscribers/import")
            page.get_by_label("CSV ファイル").set_input_files(files=[{
                "name": "新規登録.csv", "mimeType": "text/csv",
                "buffer": "メールアドレス,名前,分野\r\nkimura@example.jp,木村 愛,教育\r\nbad,x,教育\r\n".encode()}])
            page.get_by_role("button", name="内容を確認する").click()
            page.wait_for_selector("text=確認の結果")
            pages.check("10b-subscribers-import")
            page.get_by_role("button", name="取り込む").click()
            page.wait_for_selector("text=取り込みました: 新規 1 人")
            assert live.subscriber("kimura@example.jp").status == "active"
            page.goto(f"{base}/admin/audit")
            pages.check("11-audit")
            sign_out(page)

            sign_in(page, base, "chief")
            page.goto(f"{base}/admin/users")
            pages.check("12-users")
        finally:
            browser.close()
    assert len(pages.seen) == 15
