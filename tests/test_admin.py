"""The web console over HTTP (Starlette's TestClient, the real app and database):
sign-in, sessions and their timeouts, CSRF, the role of every route, and what
each room does.  Every refusal must change nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from newsletter.store.tables import audit_log, console_sessions
from newsletter.web import create_app
from newsletter.web.admin import auth
from tests.test_web import UA, Site, make_site

PASSWORD = "correct horse 電池"
ROLES = ("editor", "approver", "operator", "admin")


def csrf_of(html: str, action: str) -> str:
    """The CSRF token of the form that posts to ``action``."""
    m = re.search(rf'<form[^>]*action="{re.escape(action)}"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"',
                  html)
    assert m, f"no form posting to {action}"
    return m.group(1)


@dataclass
class Console:
    site: Site
    base: str = "https://testserver"  # the test config's base_url is https: cookies are Secure
    ip: str = "198.51.100.7"

    def client(self) -> TestClient:
        app = create_app(self.site.config, self.site.engine, clock=self.site.clock)
        return TestClient(app, base_url=self.base, client=(self.ip, 40000), follow_redirects=False,
                          headers={"User-Agent": UA})

    def add_user(self, name: str, role: str, password: str = PASSWORD) -> None:
        self.site.cli("user", "add", name, "--email", f"{name}@example.jp", "--role", role, input=password + "\n")

    def sign_in(self, name: str, password: str = PASSWORD, client: TestClient | None = None) -> TestClient:
        client = client or self.client()
        page = client.get("/admin/login")
        res = client.post("/admin/login", data={"csrf": csrf_of(page.text, "/admin/login"), "username": name,
                                                 "password": password})
        assert res.status_code == 303, res.text
        return client

    def count(self, table) -> int:
        with self.site.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar()


@pytest.fixture
def console(tmp_path) -> Console:
    c = Console(make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}"))
    for role in ROLES:
        c.add_user(f"{role}1", role)
    return c


# -- sign-in ---------------------------------------------------------------------------


def test_sign_in_page_is_japanese_with_labels_and_a_button(console):
    page = console.client().get("/admin/login")
    assert page.status_code == 200
    assert 'lang="ja"' in page.text
    assert re.search(r'<label for="username">ユーザー名</label>', page.text)
    assert re.search(r'<label for="password">パスワード</label>', page.text)
    assert re.search(r'<button type="submit" class="button">ログイン</button>', page.text)
    assert "script" not in page.text.lower()
    assert "'unsafe-inline'" not in page.headers["content-security-policy"].split("script-src")[-1]


def test_sign_in_then_out_sets_a_session_cookie_and_audit_rows(tmp_path, storage_url):
    console = Console(make_site(tmp_path, storage_url))
    console.add_user("tanaka", "editor")
    client = console.client()
    page = client.get("/admin/login")
    res = client.post("/admin/login", data={"csrf": csrf_of(page.text, "/admin/login"), "username": "tanaka",
                                             "password": PASSWORD})
    assert res.status_code == 303 and res.headers["location"] == "/admin/"
    cookie = res.headers["set-cookie"]
    assert cookie.startswith(f"{auth.COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Path=/admin" in cookie and "Secure" in cookie  # base_url is https
    home = client.get("/admin/")
    assert home.status_code == 200 and "ログイン中: tanaka（編集者）" in home.text
    assert console.count(console_sessions) == 1
    out = client.post("/admin/logout", data={"csrf": csrf_of(home.text, "/admin/logout")})
    assert out.status_code == 303 and out.headers["location"] == "/admin/login"
    assert console.count(console_sessions) == 0
    assert client.get("/admin/").status_code == 303
    with console.site.engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(audit_log).order_by(audit_log.c.id))]
    assert actions == ["signed in", "signed out"]


def test_cookie_is_not_secure_when_base_url_is_http(tmp_path):
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}",
                     replace={'base_url = "https://news.example.jp"': 'base_url = "http://news.example.jp"'})
    console = Console(site, base="http://testserver")
    console.add_user("tanaka", "editor")
    client = console.client()
    page = client.get("/admin/login")
    res = client.post("/admin/login", data={"csrf": csrf_of(page.text, "/admin/login"), "username": "tanaka",
                                             "password": PASSWORD})
    assert res.status_code == 303 and "Secure" not in res.headers["set-cookie"]
    assert client.get("/admin/").status_code == 200


@pytest.mark.parametrize("name,password", [("editor1", "wrong password 1"), ("nobody", PASSWORD)])
def test_unknown_user_and_wrong_password_get_the_same_answer(console, name, password):
    client = console.client()
    page = client.get("/admin/login")
    res = client.post("/admin/login", data={"csrf": csrf_of(page.text, "/admin/login"), "username": name,
                                             "password": password})
    assert res.status_code == 401
    assert "ユーザー名またはパスワードが正しくありません。" in res.text
    assert auth.COOKIE not in res.headers.get("set-cookie", "")
    assert 'aria-describedby="login-error"' in res.text and f'value="{name}"' in res.text  # input kept
    assert console.count(console_sessions) == 0


def test_disabled_user_cannot_sign_in_and_loses_its_sessions(console):
    client = console.sign_in("editor1")
    assert client.get("/admin/").status_code == 200
    console.site.cli("user", "disable", "editor1")
    assert client.get("/admin/").status_code == 303
    page = client.get("/admin/login")
    res = client.post("/admin/login", data={"csrf": csrf_of(page.text, "/admin/login"), "username": "editor1",
                                             "password": PASSWORD})
    assert res.status_code == 401


def test_sign_in_is_throttled_per_account(console):
    attacker = console.client()
    for _ in range(auth.LIMIT_ACCOUNT):
        page = attacker.get("/admin/login")
        res = attacker.post("/admin/login", data={"csrf": csrf_of(page.text, "/admin/login"),
                                                   "username": "admin1", "password": "guess guess guess"})
        assert res.status_code == 401
    # From another address, with the right password: the account is locked for the window.
    console.ip = "203.0.113.9"
    other = console.client()
    page = other.get("/admin/login")
    res = other.post("/admin/login", data={"csrf": csrf_of(page.text, "/admin/login"), "username": "admin1",
                                            "password": PASSWORD})
    assert res.status_code == 429 and "ログインの試行が多すぎます" in res.text
    assert console.count(console_sessions) == 0
    # The window passes: the right password works again.
    console.site.clock.advance(seconds=auth.WINDOW_SECONDS + 1)
    console.sign_in("admin1", client=other)


def test_sign_in_is_throttled_per_address(console):
    client = console.client()
    for i in range(auth.LIMIT_IP):
        page = client.get("/admin/login")
        client.post("/admin/login", data={"csrf": csrf_of(page.text, "/admin/login"),
                                          "username": f"guess{i}", "password": "guess guess guess"})
    page = client.get("/admin/login")
    res = client.post("/admin/login", data={"csrf": csrf_of(page.text, "/admin/login"), "username": "editor1",
                                             "password": PASSWORD})
    assert res.status_code == 429


def test_sign_in_without_csrf_token_changes_nothing(console):
    client = console.client()
    client.get("/admin/login")
    res = client.post("/admin/login", data={"username": "editor1", "password": PASSWORD})
    assert res.status_code == 403 and console.count(console_sessions) == 0


# -- sessions --------------------------------------------------------------------------


def test_session_fixation_fails(console):
    """A token planted in the browser before sign-in never becomes a signed-in session:
    sign-in makes a new one, and the planted one (even a real session of the
    attacker's own) is ended."""
    attacker = console.sign_in("editor1")
    planted = attacker.cookies.get(auth.COOKIE)
    victim = console.client()
    victim.cookies.set(auth.COOKIE, planted, domain="testserver.local", path="/admin")
    console.sign_in("admin1", client=victim)
    assert victim.cookies.get(auth.COOKIE) != planted
    assert "admin1" in victim.get("/admin/").text
    # The planted token is dead: whoever holds it is signed out, not signed in as the victim.
    assert attacker.get("/admin/").status_code == 303
    stranger = console.client()
    stranger.cookies.set(auth.COOKIE, "x" * 43, domain="testserver.local", path="/admin")
    console.sign_in("admin1", client=stranger)
    fixed = console.client()
    fixed.cookies.set(auth.COOKIE, "x" * 43, domain="testserver.local", path="/admin")
    assert fixed.get("/admin/").status_code == 303


def test_idle_timeout_and_absolute_lifetime(console):
    client = console.sign_in("editor1")
    console.site.clock.advance(minutes=29)
    assert client.get("/admin/").status_code == 200
    console.site.clock.advance(minutes=29)  # active: 29 minutes since the last request
    assert client.get("/admin/").status_code == 200
    console.site.clock.advance(minutes=31)
    assert client.get("/admin/").status_code == 303  # idle too long
    assert console.count(console_sessions) == 0

    client = console.sign_in("editor1")
    for _ in range(35):  # 11 h 40 min, a request every 20 minutes
        console.site.clock.advance(minutes=20)
        assert client.get("/admin/").status_code == 200
    console.site.clock.advance(minutes=21)
    assert client.get("/admin/").status_code == 303  # 12 hours after sign-in, however active


def test_logout_all_ends_every_session_of_the_user(console):
    one, two = console.sign_in("editor1"), console.sign_in("editor1")
    other = console.sign_in("admin1")
    res = console.site.cli("user", "logout-all", "editor1")
    assert "2 console session(s) ended" in res.output
    assert one.get("/admin/").status_code == 303 and two.get("/admin/").status_code == 303
    assert other.get("/admin/").status_code == 200
    bad = console.site.cli("user", "logout-all", "nobody", ok=False)
    assert bad.exit_code == 1 and "user nobody: no such user" in bad.output


# -- the editor's desk: articles ---------------------------------------------------------


def article_form(client: TestClient, path: str = "/admin/articles/new", **values) -> dict:
    page = client.get(path)
    assert page.status_code == 200, page.text
    data = {"csrf": csrf_of(page.text, path), "title": "", "url": "", "summary": "", "body": "", "publish_at": "",
            "priority": "0", "fields": []}
    data.update(values)
    return data


def test_editor_writes_edits_and_withdraws_an_article(tmp_path, storage_url):
    console = Console(make_site(tmp_path, storage_url))
    console.add_user("suzuki", "editor")
    client = console.sign_in("suzuki")
    data = article_form(client, title="子育て支援金の申請受付を開始します", url="https://www.example.lg.jp/kosodate/2026",
                        summary="令和8年度の子育て支援金の申請を受け付けます。", body="## 対象\n\n- 市内在住の方",
                        fields=["education", "administration"], publish_at="2026-12-01T09:00", priority="5",
                        pinned="1")
    res = client.post("/admin/articles/new", data=data)
    assert res.status_code == 303, res.text
    path = res.headers["location"].split("?")[0]
    page = client.get(res.headers["location"])
    assert "保存しました。" in page.text and 'value="子育て支援金の申請受付を開始します"' in page.text
    assert 'value="2026-12-01T09:00"' in page.text  # shown back in the site's time zone
    assert "<h2>対象</h2>" in page.text  # Markdown preview
    listing = client.get("/admin/articles?status=queued&field=education&q=子育て")
    assert "子育て支援金の申請受付を開始します" in listing.text
    assert "子育て支援金" not in client.get("/admin/articles?status=draft").text.split("<main")[1]
    assert "子育て支援金" not in client.get("/admin/articles?q=道路").text.split("<main")[1]
    assert "子育て支援金" in client.get("/admin/articles?embargo=waiting").text.split("<main")[1]

    res = client.post(path, data=article_form(client, path, title="子育て支援金（申請受付中）",
                                              url="https://www.example.lg.jp/kosodate/2026",
                                              fields=["education"], priority="5"))
    assert res.status_code == 303
    article_id = int(path.rsplit("/", 1)[1])
    shown = console.site.cli("article", "show", str(article_id)).output
    assert "子育て支援金（申請受付中）" in shown

    page = client.get(path)
    res = client.post(f"{path}/withdraw", data={"csrf": csrf_of(page.text, f"{path}/withdraw")})
    assert res.status_code == 303
    assert "withdrawn" in console.site.cli("article", "show", str(article_id)).output
    assert "記事を取り下げました。" in client.get(res.headers["location"]).text


@pytest.mark.parametrize("values,field,message", [
    ({"title": "", "url": "https://example.jp/a", "fields": ["education"]}, "title", "missing title"),
    ({"title": "見出し", "url": "javascript:alert(1)", "fields": ["education"]}, "url", "bad url"),
    ({"title": "見出し", "url": "https://example.jp/a"}, "fields", "no field given"),
    ({"title": "見出し", "url": "https://example.jp/a", "fields": ["education"], "priority": "高い"}, "priority",
     "bad priority"),
])
def test_bad_article_input_is_shown_beside_its_field_with_the_input_kept(console, values, field, message):
    client = console.sign_in("editor1")
    res = client.post("/admin/articles/new", data=article_form(client, **values))
    assert res.status_code == 400
    assert re.search(rf'<p class="error" id="{field}-error">[^<]*{re.escape(message)}', res.text), res.text
    if field != "fields":
        assert re.search(rf'id="{field}"[^>]*aria-describedby="[^"]*{field}-error"[^>]*aria-invalid="true"',
                         res.text.replace("\n", " ")) or re.search(
            rf'<textarea id="{field}"[^>]*aria-invalid="true"', res.text)
    if values.get("title"):
        assert f'value="{values["title"]}"' in res.text  # input kept
    assert console.site.cli("article", "list").output.strip() == ""


def test_html_in_article_fields_never_executes(console):
    client = console.sign_in("editor1")
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    res = client.post("/admin/articles/new", data=article_form(
        client, title=f"見出し{evil}", url="https://example.jp/evil", summary=evil, body=evil, fields=["education"]))
    assert res.status_code == 303
    for path in (res.headers["location"], "/admin/articles"):
        page = client.get(path)
        # Escaped in the fields and the list, removed from the sanitised preview: never a live tag.
        assert "<script" not in page.text and "<img" not in page.text
        assert "&lt;script&gt;" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src" not in csp and "default-src 'none'" in csp  # no script of any kind runs


# -- the editor's desk: the next edition -------------------------------------------------


def post_form(client: TestClient, page_path: str, action: str, **data):
    page = client.get(page_path)
    assert page.status_code == 200, page.text
    return client.post(action, data={"csrf": csrf_of(page.text, action), **data})


def write_article(client: TestClient, title: str, url: str, fields=("education",)) -> int:
    res = client.post("/admin/articles/new", data=article_form(client, title=title, url=url, fields=list(fields),
                                                               summary=f"{title}の概要です。"))
    assert res.status_code == 303, res.text
    return int(res.headers["location"].split("?")[0].rsplit("/", 1)[1])


def test_editor_builds_the_draft_and_the_approver_approves_and_schedules(tmp_path, storage_url):
    console = Console(make_site(tmp_path, storage_url))
    console.add_user("suzuki", "editor")
    console.add_user("kacho", "approver")
    site = console.site
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    editor = console.sign_in("suzuki")
    first = write_article(editor, "給食費の無償化について", "https://www.example.lg.jp/kyushoku")
    second = write_article(editor, "図書館の開館時間が延びます", "https://www.example.lg.jp/toshokan")

    pub = site.config.publications[0]
    res = post_form(editor, "/admin/editions", "/admin/editions/new", publication=pub.slug)
    assert res.status_code == 303, res.text
    page_path = res.headers["location"]
    page = editor.get(page_path)
    assert page.status_code == 200
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    def order(html: str) -> list[int]:
        ol = html[html.index('<ol class="edition-articles">'):html.index("</ol>")]
        return [int(i) for i in dict.fromkeys(re.findall(r'name="article_id" value="(\d+)"', ol))]

    before = order(page.text)
    assert sorted(before) == sorted([first, second])
    # Move the second article up, set the texts.
    res = editor.post(f"{page_path}/move", data={"csrf": csrf_of(page.text, f"{page_path}/move"),
                                                 "article_id": str(before[1]), "direction": "up"})
    assert res.status_code == 303
    page = editor.get(page_path)
    assert order(page.text) == before[::-1]
    # '²' passes str.isdigit() and int() refuses it: the same one line as any bad choice, never a 500.
    res = editor.post(f"{page_path}/move", data={"csrf": csrf_of(page.text, f"{page_path}/move"),
                                                 "article_id": "²", "direction": "up"})
    assert res.status_code == 400 and "article: choose an article" in res.text
    page = editor.get(page_path)
    res = post_form(editor, page_path, f"{page_path}/texts", subject="【教育だより】12月号", lead="寒くなりました。",
                    afterword="次号は1月です。")
    assert res.status_code == 303
    page = editor.get(page_path)
    assert 'value="【教育だより】12月号"' in page.text and "寒くなりました。" in page.text

    # A line break in the subject: the library's message beside the field, nothing changed.
    res = post_form(editor, page_path, f"{page_path}/texts", subject="改行\nあり", lead="", afterword="")
    assert res.status_code == 400 and "line breaks are not allowed in a subject" in res.text

    # Preview of the variant: the rendered HTML, framable only by the console, no scripts.
    src = re.search(r'src="(/admin/editions/\d+/preview\?v=[^"]+)"', page.text).group(1).replace("&amp;", "&")
    shown = editor.get(src)
    assert shown.status_code == 200 and "寒くなりました。" in shown.text
    policy = dict((d.split(" ", 1) + [""])[:2] for d in shown.headers["content-security-policy"].split("; "))
    assert policy["default-src"] == "'none'" and "script-src" not in policy
    assert policy["sandbox"] == "allow-same-origin"  # no allow-scripts, allow-forms, allow-popups, allow-top-…
    assert "frame-ancestors 'self'" in shown.headers["content-security-policy"]
    assert "テキスト版" in page.text and "配信前チェック" in page.text

    # Test message to the editor's own address.
    page = editor.get(page_path)
    variant = re.search(r'<option value="([^"]+)">', page.text[page.text.index('id="variant"'):]).group(1)
    res = editor.post(f"{page_path}/test", data={"csrf": csrf_of(page.text, f"{page_path}/test"),
                                                 "variant": variant.replace("&amp;", "&")})
    assert res.status_code == 303, res.text
    assert site.last_mail("suzuki@example.jp")["Subject"] == "【テスト】【教育だより】12月号"  # a test send says so
    assert [m for m in site.mails() if m["To"].addresses[0].addr_spec == "reader@example.jp"] == []

    # The editor has no approve button, and a forged approval is 403 and changes nothing.
    assert "承認</button>" not in page.text
    edition_id = int(page_path.rsplit("/", 1)[1])
    res = editor.post(f"{page_path}/approve", data={"csrf": csrf_of(page.text, f"{page_path}/move"), "hash": "0" * 16})
    assert res.status_code == 403

    approver = console.sign_in("kacho")
    page = approver.get(page_path)
    res = approver.post(f"{page_path}/approve", data={"csrf": csrf_of(page.text, f"{page_path}/approve"),
                                                      "hash": re.search(r'name="hash" value="([0-9a-f]+)"',
                                                                        page.text).group(1)})
    assert res.status_code == 303, res.text
    res = post_form(approver, page_path, f"{page_path}/schedule", at="2099-12-03T10:00")
    assert res.status_code == 303, res.text
    page = approver.get(page_path)
    assert "予約済み" in page.text and "2099-12-03 10:00" in page.text
    history = site.cli("edition", "history", "1").output
    assert "kacho\tconsole\tapproved" in history and "kacho\tconsole\tscheduled" in history
    assert "suzuki\tconsole\tcreated" in history and edition_id


def test_approval_of_a_changed_draft_is_refused_with_what_changed(console):
    editor = console.sign_in("editor1")
    write_article(editor, "防災訓練のお知らせ", "https://www.example.lg.jp/bousai")
    slug = console.site.config.publications[0].slug
    res = post_form(editor, "/admin/editions", "/admin/editions/new", publication=slug)
    page_path = res.headers["location"]
    approver = console.sign_in("approver1")
    seen = approver.get(page_path)
    post_form(editor, page_path, f"{page_path}/texts", subject="", lead="変更しました。", afterword="")
    res = approver.post(f"{page_path}/approve", data={"csrf": csrf_of(seen.text, f"{page_path}/approve"),
                                                      "hash": re.search(r'name="hash" value="([0-9a-f]+)"',
                                                                        seen.text).group(1)})
    assert res.status_code == 400 and "lead changed" in res.text
    assert "下書き" in res.text


# -- every route x every role ------------------------------------------------------------

# Who may use each console route (users.CAN): None = any signed-in user.
PERMISSION = {
    "/": None, "/logout": None,
    "/articles": "edit", "/articles/new": "edit", "/articles/{id:int}": "edit", "/articles/{id:int}/withdraw": "edit",
    "/editions": "edit", "/editions/new": "edit", "/editions/{id:int}": "edit", "/editions/{id:int}/preview": "edit",
    "/editions/{id:int}/texts": "edit", "/editions/{id:int}/add": "edit", "/editions/{id:int}/remove": "edit",
    "/editions/{id:int}/move": "edit", "/editions/{id:int}/test": "edit", "/editions/{id:int}/cancel": "edit",
    "/editions/{id:int}/approve": "approve", "/editions/{id:int}/unapprove": "approve",
    "/editions/{id:int}/schedule": "operate", "/editions/{id:int}/unschedule": "operate",
    "/subscribers": "subscribers", "/subscribers/export": "subscribers", "/subscribers/import": "subscribers",
    "/subscribers/import/commit": "subscribers", "/subscribers/{id:int}": "subscribers",
    "/subscribers/{id:int}/suppress": "subscribers",
    "/sending": "operate", "/sending/{id:int}": "operate", "/sending/{id:int}/pause": "operate",
    "/sending/{id:int}/resume": "operate", "/sending/{id:int}/cancel": "operate", "/sending/{id:int}/retry": "operate",
    "/audit": "audit", "/users": "users", "/users/{name}/disable": "users", "/users/{name}/logout": "users",
    "/schedules": "operate", "/schedules/{slug}/pause": "operate", "/schedules/{slug}/resume": "operate",
    "/subscribers/{id:int}/reactivate": "subscribers",
    "/sending/{id:int}/progress.json": "operate", "/sending/{id:int}/report": "operate",
    "/sending/{id:int}/report/hours.svg": "operate", "/sending/{id:int}/report/csv": "operate",
    # desk: import by upload, 配信前チェック on demand, 承認依頼
    "/articles/import": "edit", "/articles/import/commit": "edit", "/editions/{id:int}/check": "edit",
    "/editions/{id:int}/request": "edit", "/editions/{id:int}/withdraw-request": "edit",
}
PUBLIC = {"/login", "/static/{name}"}
CAN = {"edit": {"editor", "approver", "admin"}, "approve": {"approver", "admin"},
       "operate": {"operator", "approver", "admin"}, "subscribers": {"operator", "admin"},
       "audit": {"operator", "approver", "admin"}, "users": {"admin"}}


def console_routes(client: TestClient) -> list[tuple[str, str]]:
    from starlette.routing import Mount

    [mount] = [r for r in client.app.routes if isinstance(r, Mount) and r.path == "/admin"]
    return [(method, r.path) for r in mount.routes for method in sorted(r.methods - {"HEAD"})]


def concrete(path: str, ids: dict[str, str]) -> str:
    return "/admin" + path.replace("{id:int}", ids["id"]).replace("{name}", ids["name"]).replace("{slug}", "weekly")


def snapshot(console: Console) -> tuple:
    """Everything a console action could change (sessions and throttles aside)."""
    from newsletter.store.tables import articles, consents, deliveries, editions, schedules, subscribers, users

    with console.site.engine.connect() as conn:
        return tuple(tuple(tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns)))
                     for t in (articles, editions, deliveries, subscribers, consents, users, audit_log, schedules))


@pytest.fixture
def stocked(console) -> tuple[Console, dict[str, str]]:
    """An article, a draft edition with it, a subscriber: ids for every route."""
    site = console.site
    site.cli("subscriber", "add", "yamada@example.jp", "--fields", "education")
    site.cli("article", "add", "--title", "防災の日", "--url", "https://www.example.lg.jp/bousai",
             "--field", "education")
    site.cli("--as", "editor1", "edition", "create", site.config.publications[0].slug, ok=False)
    with site.engine.connect() as conn:
        from newsletter.store.tables import editions, subscribers

        edition_id = conn.execute(select(func.max(editions.c.id))).scalar()
        sub_id = conn.execute(select(func.max(subscribers.c.id))).scalar()
    assert edition_id and sub_id
    return console, {"id": str(edition_id), "name": "editor1", "sub": str(sub_id)}


def test_no_console_route_answers_without_a_session(stocked):
    console, ids = stocked
    client = console.client()
    before = snapshot(console)
    routes = console_routes(client)
    assert {p for _, p in routes} == set(PERMISSION) | PUBLIC  # a new route must say who may use it
    for method, path in routes:
        if path in PUBLIC:
            continue
        url = concrete(path, ids)
        res = client.request(method, url, data={"csrf": "x"} if method == "POST" else None)
        assert res.status_code == 303 and res.headers["location"] == "/admin/login", (method, url)
    assert snapshot(console) == before


@pytest.mark.parametrize("role", ROLES)
def test_every_route_checks_the_role_and_the_csrf_token(stocked, role):
    console, ids = stocked
    client = console.sign_in(f"{role}1")
    before = snapshot(console)
    for method, path in console_routes(client):
        if path in PUBLIC or path == "/logout":
            continue
        url = concrete(path, ids)
        if "/subscribers/{id:int}" in path:
            url = concrete(path, {**ids, "id": ids["sub"]})
        if path.endswith("/preview"):
            url += "?v=education%7Chtml%7Cutf-8"
        allowed = PERMISSION[path] is None or role in CAN[PERMISSION[path]]
        if method == "GET":
            res = client.get(url)
            assert res.status_code == (200 if allowed else 403), (role, url, res.status_code)
        else:
            # Without the token: 403 whatever the role; with a forged one: the same.
            for data in ({"reason": "x", "title": "x"}, {"csrf": "forged-token-value", "reason": "x"}):
                res = client.post(url, data=data)
                assert res.status_code == 403, (role, url, res.status_code)
                if not allowed:
                    assert "この操作を行う権限がありません。" in res.text
    assert snapshot(console) == before


# -- the operator's room ------------------------------------------------------------------


def test_operator_finds_a_failed_delivery_its_reason_and_sends_it_again(tmp_path, storage_url, smtp_server):
    from tests.test_failures import load_samples, smtp_provider

    console = Console(make_site(tmp_path, storage_url, provider=smtp_provider(smtp_server)))
    console.add_user("unyo", "operator")
    site = console.site
    load_samples(site.cli)
    smtp_server.reply_to_rcpt("ito.yui@example.com", "550 5.1.1 <ito.yui@example.com>: 宛先がありません")
    smtp_server.reply_to_rcpt("kato.hiroshi@example.jp", "550 5.7.1 Message refused by policy")
    assert site.cli("edition", "send", "weekly", ok=False).exit_code == 1
    smtp_server.clear()

    operator = console.sign_in("unyo")
    listing = operator.get("/admin/sending")
    path = re.search(r'href="(/admin/sending/\d+)"', listing.text).group(1)
    page = operator.get(path)
    assert page.status_code == 200
    rows = {m.group(1): m.group(2) for m in re.finditer(r"<tr><td>([^<]+@[^<]+)</td><td>([^<]*)</td>", page.text)}
    assert rows["kato.hiroshi@example.jp"] == "550 5.7.1 Message refused by policy"
    assert "宛先がありません" in rows["ito.yui@example.com"]
    assert "再送しません: bad address (5.1.x)" in page.text and "再送できます" in page.text
    res = operator.post(f"{path}/retry", data={"csrf": csrf_of(page.text, f"{path}/retry")})
    assert res.status_code == 303
    from newsletter.store.tables import deliveries

    with site.engine.connect() as conn:
        states = dict(conn.execute(select(deliveries.c.email, deliveries.c.status)).all())
    assert states["kato.hiroshi@example.jp"] == "pending" and states["ito.yui@example.com"] == "failed"
    audit = operator.get("/admin/audit?actor=unyo&action=retried")
    assert "1 failed deliveries back to pending" in audit.text


def test_operator_stops_mail_to_a_subscriber_with_a_reason_and_exports(tmp_path, storage_url):
    console = Console(make_site(tmp_path, storage_url))
    console.add_user("unyo", "operator")
    site = console.site
    site.cli("subscriber", "add", "takahashi@example.jp", "--fields", "education", "--name", "高橋 一郎")
    site.cli("subscriber", "add", "watanabe@example.jp", "--fields", "administration")
    operator = console.sign_in("unyo")
    found = operator.get("/admin/subscribers?q=高橋")
    assert "takahashi@example.jp" in found.text and "watanabe@example.jp" not in found.text
    assert "watanabe@example.jp" not in operator.get("/admin/subscribers?field=education").text
    path = re.search(r'href="(/admin/subscribers/\d+)"', found.text).group(1)
    page = operator.get(path)
    assert "同意の記録" in page.text

    res = operator.post(f"{path}/suppress", data={"csrf": csrf_of(page.text, f"{path}/suppress"), "reason": " "})
    assert res.status_code == 400 and 'id="reason-error"' in res.text
    assert site.subscriber("takahashi@example.jp").status == "active"
    res = operator.post(f"{path}/suppress", data={"csrf": csrf_of(page.text, f"{path}/suppress"),
                                                  "reason": "本人から電話で停止の依頼"})
    assert res.status_code == 303
    assert site.subscriber("takahashi@example.jp").status == "unsubscribed"
    last = site.consents("takahashi@example.jp")[-1]
    assert (last.event, last.source, last.detail) == ("unsubscribed", "console", "by unyo: 本人から電話で停止の依頼")
    assert "本人から電話で停止の依頼" in operator.get(path).text

    listing = operator.get("/admin/subscribers")
    res = operator.post("/admin/subscribers/export", data={"csrf": csrf_of(listing.text, "/admin/subscribers/export"),
                                                           "status": ""})
    assert res.status_code == 200 and res.content.startswith(b"\xef\xbb\xbf")
    body = res.content.decode("utf-8-sig")
    assert body.splitlines()[0].startswith("メールアドレス") and "watanabe@example.jp" in body and "\r\n" in body
    assert "attachment" in res.headers["content-disposition"]
    with site.engine.connect() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.action == "exported")).one()
    assert row.actor == "unyo" and row.interface == "console" and row.detail.startswith("2 subscribers")


def test_editor_and_approver_never_see_personal_data(console):
    console.site.cli("subscriber", "add", "secret@example.jp", "--fields", "education")
    for role in ("editor1", "approver1"):
        client = console.sign_in(role)
        assert client.get("/admin/subscribers").status_code == 403
        home = client.get("/admin/")
        assert "/admin/subscribers" not in home.text and "secret@example.jp" not in home.text


def test_admin_adds_a_user_with_errors_beside_the_field(console):
    admin = console.sign_in("admin1")
    page = admin.get("/admin/users")
    res = admin.post("/admin/users", data={"csrf": csrf_of(page.text, "/admin/users"), "name": "sato",
                                           "email": "sato@example.jp", "role": "editor", "password": "短い"})
    assert res.status_code == 400 and 'id="password-error"' in res.text and "at least 10 characters" in res.text
    assert 'value="sato"' in res.text
    res = admin.post("/admin/users", data={"csrf": csrf_of(page.text, "/admin/users"), "name": "sato",
                                           "email": "sato@example.jp", "role": "approver", "password": PASSWORD})
    assert res.status_code == 303
    assert "sato\tsato@example.jp\tapprover\tactive" in console.site.cli("user", "list").output
    console.sign_in("sato")


def test_ids_past_the_integer_column_are_404_not_500(stocked):
    console, ids = stocked
    client = console.sign_in("admin1")
    for path in ("/admin/articles/99999999999999999999", "/admin/editions/4294967296",
                 "/admin/subscribers/0", "/admin/sending/2147483648", "/admin/editions/123456/preview?v=x"):
        assert client.get(path).status_code == 404, path
    assert client.get("/admin/users/no-such-user/disable").status_code == 405


# -- property: whatever text an editor types, the form answers with a page, never a 500 --


def test_any_article_text_saves_or_is_refused_beside_its_field(console):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client = console.sign_in("editor1")
    page = client.get("/admin/articles/new")
    token = csrf_of(page.text, "/admin/articles/new")
    text = st.text(st.characters(codec="utf-8"), max_size=80)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(title=text, summary=text, body=text, priority=st.one_of(text, st.integers().map(str)),
           publish_at=text)
    def check(title, summary, body, priority, publish_at):
        res = client.post("/admin/articles/new", data={
            "csrf": token, "title": title, "url": "https://www.example.lg.jp/p", "summary": summary, "body": body,
            "priority": priority, "publish_at": publish_at, "fields": ["education"]})
        assert res.status_code in (303, 400), res.status_code
        if res.status_code == 400:
            assert re.search(r'<p class="error" id="[a-z_]+-error">', res.text) or 'class="error-summary"' in res.text

    check()


def test_operator_imports_a_csv_after_a_dry_run_report(console):
    site = console.site
    operator = console.sign_in("operator1")
    page = operator.get("/admin/subscribers/import")
    csv = ("メールアドレス,名前,分野\r\n"
           "ito@example.jp,伊藤 さくら,教育\r\n"
           "not-an-address,誰か,教育\r\n"
           "ＮＡＫＡＭＵＲＡ@example.jp,中村 健,行政\r\n").encode()
    res = operator.post("/admin/subscribers/import", data={"csrf": csrf_of(page.text, "/admin/subscribers/import")},
                        files={"file": ("../../etc/会員名簿.csv", csv, "text/csv")})
    assert res.status_code == 200, res.text
    assert "3 行: 新規 2 人、更新 0 人、エラー 1 行" in res.text
    assert "会員名簿.csv:3" in res.text and "etc/" not in res.text  # the user's name, shown only
    assert site.subscriber("ito@example.jp") is None  # a dry run writes nothing
    uploads = list((site.folder / "var" / "console-uploads").iterdir())
    assert len(uploads) == 1 and re.fullmatch(r"[A-Za-z0-9_-]{32}\.csv", uploads[0].name)

    token = re.search(r'name="upload" value="([^"]+)"', res.text).group(1)
    commit_csrf = csrf_of(res.text, "/admin/subscribers/import/commit")
    res = operator.post("/admin/subscribers/import/commit", data={
        "csrf": commit_csrf, "upload": token, "name": "会員名簿.csv"})
    assert res.status_code == 200 and "取り込みました: 新規 2 人" in res.text
    assert site.subscriber("ito@example.jp").status == "active"
    assert site.subscriber("nakamura@example.jp").name == "中村 健"
    assert not list((site.folder / "var" / "console-uploads").iterdir())
    with site.engine.connect() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.action == "imported")).one()
    assert row.actor == "operator1" and row.detail.startswith("会員名簿.csv: 2 new")
    # The same token again, or one that is not ours: nothing to import, nothing read.
    for bad in (token, "../../config", "x" * 32):
        res = operator.post("/admin/subscribers/import/commit", data={"csrf": commit_csrf, "upload": bad})
        assert res.status_code == 400 and "確認したファイルが見つかりません" in res.text


# -- the operator's room: schedules, 配信再開, live progress, statistics, audit dates --------


def test_schedules_page_says_the_cron_in_words_with_holiday_moves_and_pauses(tmp_path, storage_url):
    from datetime import UTC, datetime

    from newsletter.store.tables import schedules

    console = Console(make_site(tmp_path, storage_url, replace={
        '# on_holiday = "send"': 'on_holiday = "next_business_day"'}))
    console.add_user("unyo", "operator")
    site = console.site
    site.clock.now = datetime(2026, 12, 25, 0, 0, tzinfo=UTC)  # Friday; Tuesday 12/29 is in the year-end closure
    operator = console.sign_in("unyo")
    page = operator.get("/admin/schedules")
    assert page.status_code == 200
    text = page.text
    assert "<dd>毎週火曜 9:00</dd>" in text and "<code>0 9 * * TUE</code>" in text
    assert "翌営業日の同じ時刻に配信" in text and "<dd>有効</dd>" in text
    slots = re.findall(r"<li>(.*?)</li>", text[text.index('<ol class="slots">'):])
    assert slots[0] == ("<strong>2027年1月4日（月）9:00</strong> "
                        "（2026年12月29日（火）9:00 から移動: 年末年始 12/29–1/3）")
    assert slots[1] == "2027年1月5日（火）9:00"
    assert "まだ実行されていません。" in text

    res = operator.post("/admin/schedules/weekly/pause", data={"csrf": csrf_of(text, "/admin/schedules/weekly/pause")})
    assert res.status_code == 303 and res.headers["location"] == "/admin/schedules?done=schedule_pause"
    page = operator.get(res.headers["location"])
    assert "定期配信を一時停止しました。" in page.text and "一時停止中" in page.text
    assert "（一時停止中のため配信されません）" in page.text
    assert "weekly\tpaused" in site.cli("schedule", "list").output  # the CLI sees the same state
    res = operator.post("/admin/schedules/weekly/resume",
                        data={"csrf": csrf_of(page.text, "/admin/schedules/weekly/resume")})
    assert res.status_code == 303
    assert "weekly\tactive" in site.cli("schedule", "list").output
    with site.engine.connect() as conn:
        rows = [(r.actor, r.interface, r.action, r.publication) for r in
                conn.execute(select(audit_log).where(audit_log.c.action.like("schedule%")).order_by(audit_log.c.id))]
        paused = conn.execute(select(schedules.c.paused)).scalar()
    assert rows == [("unyo", "console", "schedule paused", "weekly"), ("unyo", "console", "schedule resumed", "weekly")]
    assert paused is False
    # The CLI's pause is the same library function: an audit row with its user.
    site.cli("--as", "unyo", "schedule", "pause", "weekly")
    assert "already paused" in site.cli("schedule", "pause", "weekly").output
    with site.engine.connect() as conn:
        last = conn.execute(select(audit_log).order_by(audit_log.c.id.desc())).first()
    assert (last.actor, last.interface, last.action) == ("unyo", "cli", "schedule paused")
    # A token is good for its own form only: another publication's path is refused before anything.
    page = operator.get("/admin/schedules")
    assert operator.post("/admin/schedules/nope/pause",
                         data={"csrf": csrf_of(page.text, "/admin/schedules/weekly/resume")}).status_code == 403


def test_schedules_page_in_english(tmp_path):
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}",
                     replace={'language = "ja"': 'language = "en"'})
    console = Console(site)
    console.add_user("unyo", "operator")
    page = console.sign_in("unyo").get("/admin/schedules")
    assert page.status_code == 200 and 'lang="en"' in page.text
    assert "<dd>Every Tuesday at 9:00</dd>" in page.text and "Pause</button>" in page.text


def test_operator_resumes_mail_only_with_a_reason_and_never_after_a_complaint(tmp_path, storage_url):
    from newsletter.bounces import MailEvent, apply_events

    console = Console(make_site(tmp_path, storage_url))
    console.add_user("unyo", "operator")
    site = console.site
    site.cli("subscriber", "add", "kimura@example.jp", "--fields", "education")
    site.cli("subscriber", "add", "hayashi@example.jp", "--fields", "education")
    site.cli("subscriber", "unsubscribe", "kimura@example.jp")
    operator = console.sign_in("unyo")
    path = re.search(r'href="(/admin/subscribers/\d+)"', operator.get("/admin/subscribers?q=kimura").text).group(1)
    page = operator.get(path)
    assert '<label for="reactivate-reason">再開の理由（必須）</label>' in page.text

    # No reason: the message beside the field, nothing changed.
    before = snapshot(console)
    res = operator.post(f"{path}/reactivate", data={"csrf": csrf_of(page.text, f"{path}/reactivate"), "reason": "  "})
    assert res.status_code == 400 and 'id="reactivate-reason-error"' in res.text
    assert "再開の理由を入力してください。" in res.text and 'aria-invalid="true"' in res.text
    assert snapshot(console) == before

    reason = "本人から電話で再開の依頼（12/1 10:00、折り返しで本人確認）"
    res = operator.post(f"{path}/reactivate", data={"csrf": csrf_of(page.text, f"{path}/reactivate"),
                                                    "reason": reason})
    assert res.status_code == 303
    assert "配信を再開しました。" in operator.get(res.headers["location"]).text
    assert site.subscriber("kimura@example.jp").status == "active"
    last = site.consents("kimura@example.jp")[-1]
    assert (last.event, last.source) == ("reactivated", "console")
    assert last.detail == f"by unyo: {reason}"
    with site.engine.connect() as conn:
        audit = conn.execute(select(audit_log).where(audit_log.c.action == "subscriber reactivated")).one()
    assert (audit.actor, audit.interface) == ("unyo", "console")
    assert audit.detail == f"subscriber #{site.subscriber('kimura@example.jp').id} (was unsubscribed)"
    assert "kimura" not in audit.detail  # approvers read the audit log: no address in it
    # The same form again (the address is active now): nothing to resume, said at the top, nothing changed.
    before = snapshot(console)
    res = operator.post(f"{path}/reactivate", data={"csrf": csrf_of(page.text, f"{path}/reactivate"),
                                                    "reason": reason})
    assert res.status_code == 400 and "この方は配信中か確認待ちのため、再開の操作はありません。" in res.text
    assert snapshot(console) == before

    # A complaint: refused with a clear message, in the console and the CLI.
    apply_events(site.engine, site.config, [MailEvent("arf", "c-1", "complaint", email="hayashi@example.jp")])
    assert site.subscriber("hayashi@example.jp").status == "complained"
    sid = site.subscriber("hayashi@example.jp").id
    page = operator.get(f"/admin/subscribers/{sid}")
    assert "迷惑メールとして報告した方には、管理画面から配信を再開できません。" in page.text
    assert f'action="/admin/subscribers/{sid}/reactivate"' not in page.text
    bad = site.cli("subscriber", "reactivate", "hayashi@example.jp", "--reason", "本人の依頼", ok=False)
    assert bad.exit_code == 1 and "reported our mail as spam (a complaint)" in bad.output
    assert site.subscriber("hayashi@example.jp").status == "complained"


def test_reactivation_is_refused_for_a_complaint_after_an_unsubscribe(tmp_path, storage_url):
    """Unsubscribed first, then a complaint (status and consent history stay as they
    were): the page showed the form before the complaint came, the POST is refused."""
    from newsletter.bounces import MailEvent, apply_events

    console = Console(make_site(tmp_path, storage_url))
    site = console.site
    site.cli("subscriber", "add", "mori@example.jp", "--fields", "education")
    site.cli("subscriber", "unsubscribe", "mori@example.jp")
    sid = site.subscriber("mori@example.jp").id
    console.add_user("unyo", "operator")
    operator = console.sign_in("unyo")
    page = operator.get(f"/admin/subscribers/{sid}")
    assert f'action="/admin/subscribers/{sid}/reactivate"' in page.text
    apply_events(site.engine, site.config, [MailEvent("arf", "c-2", "complaint", email="mori@example.jp")])
    assert site.subscriber("mori@example.jp").status == "unsubscribed"
    before = snapshot(console)
    res = operator.post(f"/admin/subscribers/{sid}/reactivate",
                        data={"csrf": csrf_of(page.text, f"/admin/subscribers/{sid}/reactivate"),
                              "reason": "本人の依頼"})
    assert res.status_code == 400 and "迷惑メールとして報告した方には" in res.text and 'role="alert"' in res.text
    assert snapshot(console) == before
    res = site.cli("subscriber", "reactivate", "mori@example.jp", "--reason", "本人の依頼", ok=False)
    assert res.exit_code == 1 and "a complaint" in res.output
    assert site.cli("subscriber", "reactivate", "mori@example.jp", ok=False).exit_code == 2  # --reason is required
    res = site.cli("subscriber", "reactivate", "nobody@example.jp", "--reason", "x", ok=False)
    assert res.exit_code == 1 and "no such subscriber" in res.output
    assert snapshot(console) == before


def test_progress_json_bounces_and_the_reading_report_of_a_send(tmp_path, storage_url, smtp_server):
    import json
    from datetime import UTC, datetime, timedelta

    from newsletter.bounces import MailEvent, apply_events
    from newsletter.store.tables import deliveries
    from tests.test_failures import load_samples, smtp_provider

    console = Console(make_site(tmp_path, storage_url, provider=smtp_provider(smtp_server),
                                replace={"full_text = false": 'full_text = false\ntracking = "aggregate"'}))
    console.add_user("unyo", "operator")
    console.add_user("kacho", "approver")
    site = console.site
    load_samples(site.cli)
    smtp_server.reply_to_rcpt("ito.yui@example.com", "550 5.1.1 <ito.yui@example.com>: 宛先がありません")
    smtp_server.reply_to_rcpt("kato.hiroshi@example.jp", "451 4.3.0 Try again later")
    site.cli("edition", "send", "weekly", ok=False)
    site.clock.now = datetime.now(UTC)
    with site.engine.connect() as conn:
        states = dict(conn.execute(select(deliveries.c.email, deliveries.c.status)).all())
        edition_id = conn.execute(select(func.max(deliveries.c.edition_id))).scalar()
    sent = sum(1 for s in states.values() if s == "sent")
    assert sent >= 5 and states["kato.hiroshi@example.jp"] == "pending" and states["ito.yui@example.com"] == "failed"

    operator = console.sign_in("unyo")
    res = operator.get(f"/admin/sending/{edition_id}/progress.json")
    assert res.status_code == 200 and res.headers["content-type"] == "application/json"
    p = res.json()
    assert (p["status"], p["sent"], p["pending"], p["deferred"], p["failed"]) == ("sending", sent, 0, 1, 1)
    assert p["per_minute"] > 0 and p["window_minutes"] == 5
    retry = datetime.fromisoformat(p["next_retry"])
    assert retry > site.clock.now and datetime.fromisoformat(p["eta"]) >= retry  # not before the retry is due
    # The page shows the same figures, and the bounce at sending.
    page = operator.get(f"/admin/sending/{edition_id}")
    assert f'<dd data-key="sent">{sent}</dd>' in page.text and '<dd data-key="deferred">1</dd>' in page.text
    assert re.search(r"<dt>宛先不明（送信時）</dt><dd>1</dd>", page.text)
    assert re.search(r"<dt>迷惑メール報告</dt><dd>0</dd>", page.text)
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "<script src=\"/admin/static/progress.js\"" \
        in page.text and "<script>" not in page.text
    script = operator.get("/admin/static/progress.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    # Reports that come later count for the people this edition went to.
    apply_events(site.engine, site.config, [
        MailEvent("arf", "c-9", "complaint", email="sato.hanako@example.jp"),
        MailEvent("dsn", "d-9", "hard", email="suzuki.ichiro@example.com", detail="failed 5.1.1 user unknown")])
    page = operator.get(f"/admin/sending/{edition_id}")
    assert re.search(r"<dt>迷惑メール報告</dt><dd>1</dd>", page.text)
    assert re.search(r"<dt>バウンス（後から届いた通知）</dt><dd>1</dd>", page.text)
    # Ten minutes on, nothing sent since: no rate, no estimate; the retry is due now (pending, not deferred).
    site.clock.advance(minutes=10)
    p = operator.get(f"/admin/sending/{edition_id}/progress.json").json()
    assert p["per_minute"] == 0 and p["eta"] is None and (p["pending"], p["deferred"]) == (1, 0)
    assert "直近 5 分の送信はありません" in operator.get(f"/admin/sending/{edition_id}").text
    assert operator.get(f"/admin/sending/{edition_id + 1}/progress.json").status_code == 404
    site.clock.now = datetime.now(UTC) + timedelta(seconds=1)

    # The reading statistics: the numbers of `edition report`, for an operator and an approver alike.
    cli_report = json.loads(site.cli("edition", "report", "1", "--json").output)
    for who in (operator, console.sign_in("kacho")):
        page = who.get(f"/admin/sending/{edition_id}/report")
        assert page.status_code == 200
        main = page.text[page.text.index("<main"):]
        assert f"<dt>配信数</dt><dd>{cli_report['delivered']}</dd>" in main
        assert f"<dt>配信できなかった数</dt><dd>{cli_report['bounced']}</dd>" in main
        assert f"<dt>開封（人）</dt><dd>{cli_report['opens']['human']}</dd>" in main
        assert "@example" not in main  # aggregates only: no subscriber on this page
        assert f'<img src="/admin/sending/{edition_id}/report/hours.svg" alt="' in main
    svg = operator.get(f"/admin/sending/{edition_id}/report/hours.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg") and "<script" not in svg.text
    page = operator.get(f"/admin/sending/{edition_id}/report")
    res = operator.post(f"/admin/sending/{edition_id}/report/csv",
                        data={"csrf": csrf_of(page.text, f"/admin/sending/{edition_id}/report/csv")})
    assert res.status_code == 200 and res.content.startswith(b"\xef\xbb\xbf")
    assert 'filename="report-weekly-1.csv"' in res.headers["content-disposition"]
    lines = res.content.decode("utf-8-sig").split("\r\n")
    assert lines[0] == "article_id,title,url,clicks_human,clicks_machine,click_events_human,click_events_machine"
    assert len([x for x in lines[1:] if x]) == len(cli_report["articles"])
    with site.engine.connect() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.action == "report exported")).one()
    assert (row.actor, row.interface, row.publication, row.edition_id) == ("unyo", "console", "weekly", edition_id)


def test_audit_log_filters_by_user_action_publication_and_dates(console):
    from datetime import UTC, datetime

    from newsletter.store import audit as audit_q

    site = console.site
    with site.engine.begin() as conn:
        for day, actor, action, pub in ((1, "editor1", "created", "weekly"), (2, "approver1", "approved", "weekly"),
                                        (3, "operator1", "exported", None), (5, "approver1", "approved", None),
                                        (6, None, "finished", "weekly")):
            # 23:30 JST on the 1st, 2nd, ... of December: the day in the site's time zone, not UTC's.
            audit_q.add(conn, at=datetime(2026, 12, day, 14, 30, tzinfo=UTC), actor=actor,
                        interface="console" if actor else "delivery", action=action, publication=pub,
                        detail=f"row {day}")
    client = console.sign_in("operator1")

    def details(query: str) -> list[str]:
        page = client.get(f"/admin/audit?{query}")
        assert page.status_code == 200, page.text
        return re.findall(r"<td>(row \d)</td>", page.text)

    assert details("") == ["row 6", "row 5", "row 3", "row 2", "row 1"]
    assert details("interface=delivery") == ["row 6"]  # the engine's own rows
    assert details("interface=console&to=2026-12-05") == ["row 5", "row 3", "row 2", "row 1"]
    page = client.get("/admin/audit?interface=delivery")
    assert '<option value="delivery" selected>配信処理</option>' in page.text and "<td>配信処理</td>" in page.text
    assert '<option value="approver1">' in page.text  # the user names to choose from (a datalist)
    assert details("actor=approver1") == ["row 5", "row 2"]
    assert details("action=approv&publication=weekly") == ["row 2"]
    # The actions read in Japanese, and a Japanese word finds the ones it names.
    page = client.get("/admin/audit")
    assert "<td>承認</td>" in page.text and "<td>配信完了</td>" in page.text and "<td>approved</td>" not in page.text
    assert details("action=承認") == ["row 5", "row 2"]
    assert details("action=書き出し") == ["row 3"]
    assert details("from=2026-12-02&to=2026-12-03") == ["row 3", "row 2"]
    assert details("from=2026-12-04") == ["row 6", "row 5"]
    assert details("to=2026-12-01") == ["row 1"]
    assert details("actor=approver1&from=2026-12-03") == ["row 5"]
    page = client.get("/admin/audit?from=2026-13-01&to=2026-12-02")
    assert page.status_code == 400
    assert re.search(r'<p class="error" id="a-from-error">日付は 2026-12-01 の形で入力してください。</p>', page.text)
    assert 'aria-describedby="a-from-error"' in page.text and 'value="2026-13-01"' in page.text  # input kept
    assert re.findall(r"<td>(row \d)</td>", page.text) == ["row 2", "row 1"]  # the good end still applies
    page = client.get("/admin/audit?from=2026-12-03&to=2026-12-01")
    assert page.status_code == 400 and "終了日は開始日より後にしてください。" in page.text


def test_resend_puts_back_only_the_retryable_failures(tmp_path, storage_url, smtp_server):
    """再送: a policy refusal goes back to pending; a bad address, and a refusal whose
    reader has since unsubscribed, stay failed — the button counts only the first."""
    from newsletter.store.tables import deliveries, editions
    from tests.test_failures import load_samples, smtp_provider

    console = Console(make_site(tmp_path, storage_url, provider=smtp_provider(smtp_server)))
    console.add_user("unyo", "operator")
    site = console.site
    load_samples(site.cli)
    smtp_server.reply_to_rcpt("ito.yui@example.com", "550 5.1.1 <ito.yui@example.com>: no such user")
    smtp_server.reply_to_rcpt("kato.hiroshi@example.jp", "550 5.7.1 Message refused by policy")
    smtp_server.reply_to_rcpt("sato.hanako@example.jp", "554 5.7.1 Rejected by content filter")
    site.cli("edition", "send", "weekly", ok=False)
    site.cli("subscriber", "unsubscribe", "sato.hanako@example.jp")
    with site.engine.connect() as conn:
        edition_id, status = conn.execute(select(editions.c.id, editions.c.status)).one()
    assert status == "done"
    operator = console.sign_in("unyo")
    path = f"/admin/sending/{edition_id}"
    page = operator.get(path)
    assert "再送（1 件）" in page.text
    assert "再送しません: subscriber unsubscribed" in page.text and "再送しません: bad address (5.1.x)" in page.text
    res = operator.post(f"{path}/retry", data={"csrf": csrf_of(page.text, f"{path}/retry")})
    assert res.status_code == 303
    with site.engine.connect() as conn:
        states = dict(conn.execute(select(deliveries.c.email, deliveries.c.status)).all())
        status = conn.execute(select(editions.c.status)).scalar()
    assert (states["kato.hiroshi@example.jp"], states["ito.yui@example.com"], states["sato.hanako@example.jp"]) == (
        "pending", "failed", "failed")
    assert status == "sending"  # reopened, so the daemon or 'edition send' delivers it
    page = operator.get(res.headers["location"])
    assert "再送の対象を送信待ちに戻しました。" in page.text and "再送（" not in page.text  # nothing left to retry
    assert '<dd data-key="pending">1</dd>' in page.text
    smtp_server.clear()
    site.cli("edition", "send", "--edition", "1", "--publication", "weekly", ok=False)
    assert [m.rcpt_tos for m in smtp_server.messages] == [("kato.hiroshi@example.jp",)]
