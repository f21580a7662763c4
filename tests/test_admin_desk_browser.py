"""The editor's desk in Debian's Chromium (Playwright) on a real uvicorn server:
an editor imports articles from a CSV file by upload — the per-item report
first (nothing written), then 取り込む — previews an article without saving,
builds the draft and asks for approval; the approver finds it waiting on the
home page and runs 配信前チェック.

Each page is screenshotted at desktop (1280) and phone (390) width into
tests/artifacts/console-desk/, and axe-core finds no serious or critical
violation on any of them (tests/test_admin_browser.py's Pages)."""

from __future__ import annotations

from pathlib import Path

from tests.test_admin_browser import PASSWORD, sign_in, sign_out
from tests.test_web_browser import ARTIFACTS, AXE, CHROMIUM, CHROMIUM_ARGS, Pages, live_server, need

SHOTS = ARTIFACTS / "console-desk"

CSV = ("タイトル,URL,分野,概要\r\n"
       "県立図書館の開館時間を延長します,https://www.pref.example.lg.jp/news/1,教育,12月から平日は午後8時まで開館します。\r\n"
       "子ども医療費助成の申請が電子化されます,https://www.pref.example.lg.jp/news/2,教育・行政,窓口に来なくても申請できます。\r\n"
       "リンクの壊れた記事,javascript:alert(1),教育,\r\n"
       "分野の違う記事,https://www.pref.example.lg.jp/news/4,観光,\r\n")


def test_the_editor_imports_articles_by_upload_and_asks_for_approval(tmp_path, smtp_server):
    need(Path(CHROMIUM), "Debian's chromium (apt-get install chromium)")
    need(AXE, "npm install --no-save --prefix tests/.axe axe-core@4")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with live_server(tmp_path / "project", smtp_server) as live, sync_playwright() as p:
        cli = live.cli
        cli("user", "add", "suzuki", "--email", "suzuki@example.jp", "--role", "editor", input=PASSWORD + "\n")
        cli("user", "add", "kacho", "--email", "kacho@example.jp", "--role", "approver", input=PASSWORD + "\n")
        cli("subscriber", "import", Path(__file__).parent.parent / "subscribers" / "sample.csv")
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(locale="ja-JP", viewport={"width": 1280, "height": 900})
        pages = Pages(page, SHOTS)
        base = live.base
        try:
            sign_in(page, base, "suzuki")
            page.goto(f"{base}/admin/articles")
            page.get_by_role("link", name="ファイルから取り込む").click()
            page.wait_for_selector("h1:has-text('記事の取り込み')")
            pages.check("01-import-form")

            page.get_by_label("ファイル（CSV・JSON・RSS/Atom・Markdown）").set_input_files(files=[{
                "name": "県政ニュース.csv", "mimeType": "text/csv", "buffer": CSV.encode()}])
            page.get_by_role("button", name="内容を確認する").click()
            page.wait_for_selector("text=確認の結果: 県政ニュース.csv")
            assert page.get_by_text("4 件: 新規 2 件、更新 0 件、変更なし 0 件、取り込めない 2 件").count() == 1
            refused = page.locator("tr", has_text="リンクの壊れた記事")
            assert "取り込めない" in refused.inner_text() and "bad url" in refused.inner_text()
            assert cli("article", "list").output.strip() == ""  # the report wrote nothing
            pages.check("02-import-report")

            page.get_by_role("button", name="取り込む").click()
            page.wait_for_selector("text=取り込みました: 新規 2 件、更新 0 件。")
            pages.check("03-import-done")
            listing = cli("article", "list").output
            assert "県立図書館の開館時間を延長します" in listing and "子ども医療費助成の申請が電子化されます" in listing

            # プレビュー on an imported article: rendered on the server, nothing saved.
            page.goto(f"{base}/admin/articles")
            page.get_by_role("link", name="県立図書館の開館時間を延長します").click()
            page.get_by_label("本文").fill("## 開館時間\n\n- 平日: 午前9時から午後8時\n- 土日: 午後5時まで")
            page.get_by_role("button", name="プレビュー").click()
            page.wait_for_selector("text=プレビューを表示しています。まだ保存していません。")
            assert page.locator(".preview h2").inner_text() == "開館時間"
            assert "平日: 午前9時から午後8時" not in cli("article", "show", "1").output
            pages.check("04-article-preview")
            page.get_by_role("button", name="保存", exact=True).click()
            page.wait_for_selector("text=保存しました。")

            # The draft, then 承認を依頼 on its page.
            page.goto(f"{base}/admin/editions")
            page.get_by_role("button", name="次号の下書きを作る").first.click()
            page.wait_for_selector("text=掲載する記事")
            page.get_by_role("button", name="承認を依頼").click()
            page.wait_for_selector("text=承認を依頼しました。")
            assert "下書き・承認待ち" in page.locator("h1").inner_text()
            for frame in ("iframe.frame-desktop", "iframe.frame-phone"):
                page.frame_locator(frame).first.locator("text=12月から平日は午後8時まで開館します").first.wait_for()
            pages.check("05-edition-waiting")
            edition_url = page.url.split("?")[0]
            sign_out(page)

            # The approver: 承認待ち on the home page, 配信前チェック on demand.
            sign_in(page, base, "kacho")
            assert page.get_by_role("heading", name="承認待ちの号").count() == 1
            pages.check("06-approver-home")
            page.get_by_role("link", name="週刊 地方行政ニュース 第1号（suzuki が").click()
            page.wait_for_url(lambda url: url.split("?")[0] == edition_url, timeout=10000)
            assert page.get_by_text("まだ実行していません。").count() == 1
            page.get_by_role("button", name="配信前チェック").click()
            page.wait_for_selector("#check li, #check p:has-text('問題は見つかりませんでした。')")
            assert page.get_by_text("まだ実行していません。").count() == 0
            page.frame_locator("iframe.frame-phone").first.locator("text=12月から平日は午後8時まで開館します").first.wait_for()
            page.locator("#check").scroll_into_view_if_needed()
            pages.check("07-edition-checked")
        finally:
            browser.close()
    assert len(pages.seen) == 7
