"""The week of a magazine in the console, in Debian's Chromium (Playwright) on a
real uvicorn server, mail through the real SMTP test server:

an admin adds an editor, an approver and an operator (CLI); the editor signs in,
writes two articles, builds the draft, previews it and sends a test message to
herself; the approver approves and schedules it; it goes out (``edition send``,
to the SMTP test server, which refuses one address); the operator finds the
failed delivery and its reason.

Every page is screenshotted at desktop (1280) and phone (390) width into
tests/artifacts/console/, and axe-core (tests/.axe, installed by .ci/run) must
find no serious or critical violation on any of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_web_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, live_server

AXE = ROOT / "tests" / ".axe" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = ARTIFACTS / "console"
PASSWORD = "correct horse 電池"


def _need(path: Path, what: str) -> None:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} missing: {what}")
        pytest.skip(f"{path} missing: {what}")


class Pages:
    """Screenshots at two widths and an axe-core check of every page visited."""

    def __init__(self, page, axe_source: str):
        self.page = page
        self.axe = axe_source
        self.seen: list[str] = []

    def check(self, name: str) -> None:
        page = self.page
        # evaluate() runs outside the page's Content-Security-Policy (no inline script needed).
        if not page.evaluate("() => typeof window.axe !== 'undefined'"):
            page.evaluate(self.axe + "\n;0")
        result = page.evaluate("""async () => {
            const r = await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}});
            return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                .map(v => ({id: v.id, impact: v.impact, help: v.help,
                            nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
        }""")
        assert result == [], f"{name}: {json.dumps(result, ensure_ascii=False, indent=1)}"
        for width, label in ((1280, "desktop"), (390, "phone")):
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_load_state("networkidle")  # the preview frames reload at a new width
            page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        self.seen.append(name)


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
    _need(Path(CHROMIUM), "Debian's chromium (apt-get install chromium)")
    _need(AXE, "npm install --no-save --prefix tests/.axe axe-core@4")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with live_server(tmp_path / "project", smtp_server) as live, sync_playwright() as p:
        cli = live.cli
        cli("user", "add", "chief", "--email", "chief@example.jp", "--role", "admin", input=PASSWORD + "\n")
        cli("user", "add", "suzuki", "--email", "suzuki@example.jp", "--role", "editor", input=PASSWORD + "\n")
        cli("user", "add", "kacho", "--email", "kacho@example.jp", "--role", "approver", input=PASSWORD + "\n")
        cli("user", "add", "unyo", "--email", "unyo@example.jp", "--role", "operator", input=PASSWORD + "\n")
        cli("subscriber", "import", ROOT / "subscribers" / "sample.csv")
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(locale="ja-JP", viewport={"width": 1280, "height": 900})
        pages = Pages(page, AXE.read_text(encoding="utf-8"))
        base = live.base
        try:
            page.goto(f"{base}/admin/")
            page.wait_for_selector("h1:has-text('ログイン')")  # no session: the sign-in page
            pages.check("01-login")

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
            page.get_by_role("button", name="次号の下書きを作る").first.click()
            page.wait_for_selector("text=掲載する記事")
            page.get_by_label("件名", exact=True).fill("【県政だより】12月号 図書館と医療費助成")
            page.get_by_label("巻頭言", exact=True).fill("師走に入り、寒さが一段と厳しくなりました。")
            page.get_by_role("button", name="保存").click()
            page.wait_for_selector("text=件名・巻頭言・編集後記を保存しました。")
            for frame in ("iframe.frame-desktop", "iframe.frame-phone"):
                page.frame_locator(frame).first.locator("text=師走に入り").wait_for()
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
            page.get_by_label("配信日時").fill("2099-12-03T10:00")
            page.get_by_role("button", name="予約配信").click()
            page.wait_for_selector("text=配信予定: 2099-12-03 10:00")
            pages.check("06-edition-scheduled")
            sign_out(page)

            # -- it goes out; the SMTP server refuses one reader
            smtp_server.reply_to_rcpt("kato.hiroshi@example.jp", "550 5.7.1 Message refused by policy")
            assert cli("edition", "send", "weekly", ok=False).exit_code == 1

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
    assert len(pages.seen) == 13
