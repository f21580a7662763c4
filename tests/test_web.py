"""The subscriber web service over HTTP (Starlette's TestClient, the real app
and database): double opt-in sign-up, confirmation, the preference center,
unsubscribe (with RFC 8058 one-click), the archive, and every kind of bad
request — each must end as a 4xx that changes nothing, never a 500."""

from __future__ import annotations

import email
import http.client
import re
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from newsletter.config import Config, load_config
from newsletter.editions import creation
from newsletter.store import open_engine
from newsletter.store.tables import consents, deliveries, editions, metadata, signups, subscribers
from newsletter.tokens import make_expiring_token, make_token
from newsletter.web import create_app
from tests.conftest import CLI, ROOT, write_config

CLIENT_IP = "198.51.100.7"
UA = "Mozilla/5.0 (X11; Linux x86_64) newsletter-tests"


class Clock:
    """The app's idea of now, movable by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


@dataclass
class Site:
    cli: CLI
    config: Config
    engine: Engine
    client: TestClient
    clock: Clock

    @property
    def folder(self) -> Path:
        return self.cli.folder

    def mails(self) -> list[EmailMessage]:
        outbox = self.folder / "var" / "outbox"
        files = sorted(outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns) if outbox.exists() else []
        return [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in files]

    def last_mail(self, to: str) -> EmailMessage:
        mine = [m for m in self.mails() if m["To"].addresses[0].addr_spec == to]
        assert mine, f"no mail to {to}"
        return mine[-1]

    def subscriber(self, address: str):
        with self.engine.connect() as conn:
            return conn.execute(select(subscribers).where(subscribers.c.email == address)).first()

    def consents(self, address: str) -> list:
        row = self.subscriber(address)
        with self.engine.connect() as conn:
            return list(conn.execute(select(consents).where(consents.c.subscriber_id == row.id)
                                     .order_by(consents.c.id)))

    def token(self, purpose: str, address: str) -> str:
        return make_token(self.config.secret(), purpose, self.subscriber(address).id)


def make_site(tmp_path: Path, storage_url: str, *, extra: str = "", replace: dict | None = None,
              client: tuple[str, int] = (CLIENT_IP, 40000), provider: str | None = None) -> Site:
    cli = CLI(write_config(tmp_path / "project", storage_url, extra=extra, replace=replace, provider=provider))
    cli("init")
    config = load_config(cli.config_path)
    engine = open_engine(config.storage_url)
    clock = Clock()
    app = create_app(config, engine, clock=clock)
    test_client = TestClient(app, client=client, follow_redirects=False, headers={"User-Agent": UA})
    return Site(cli, config, engine, test_client, clock)


@pytest.fixture
def site(tmp_path) -> Site:
    return make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}")


def dump(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of every table: what "changes nothing" is checked against."""
    with engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(select(t))), key=repr) for t in metadata.sorted_tables}


def csrf_of(html: str, form_id: str | None = None) -> str:
    if form_id:
        html = html[html.index(f'id="{form_id}"'):]
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def main_text(html: str) -> str:
    return html[html.index("<main"):html.index("</main>")]


def sign_up(site: Site, address: str, *, fields=("education",), fmt="html", name="", agree=True, **headers):
    page = site.client.get("/")
    data = {"csrf": csrf_of(page.text), "email": address, "fields": list(fields), "format": fmt, "name": name}
    if agree:
        data["agree"] = "1"
    return site.client.post("/subscribe", data=data, headers=headers)


def link_in(mail: EmailMessage, kind: str) -> str:
    body = mail.get_body(("plain",)).get_content()
    return re.search(rf"https?://\S+/{kind}/\S+", body).group(0)


def confirm(site: Site, address: str):
    path = urlsplit(link_in(site.last_mail(address), "confirm")).path
    page = site.client.get(path)
    assert page.status_code == 200, page.text
    return site.client.post(path, data={"csrf": csrf_of(page.text)})


# -- sign-up and confirmation --------------------------------------------------------

def test_double_opt_in_from_form_to_active(tmp_path, storage_url):
    site = make_site(tmp_path, storage_url)
    page = site.client.get("/")
    assert page.status_code == 200
    assert 'lang="ja"' in page.text and "メールマガジン配信登録" in page.text
    for name in ("地方自治", "行政", "教育"):
        assert name in page.text  # the configured Japanese field names
    assert "nl_csrf" in page.headers["set-cookie"] and "HttpOnly" in page.headers["set-cookie"]

    res = sign_up(site, "Hanako.Sato@Example.JP", fields=("education", "administration"), fmt="text",
                  name="佐藤 花子")
    assert res.status_code == 200, res.text
    assert "確認メールをお送りしました" in res.text and "72時間" in res.text
    row = site.subscriber("hanako.sato@example.jp")
    assert row.status == "pending"  # not active until the link is opened and confirmed
    [signup] = site.consents("hanako.sato@example.jp")
    assert (signup.event, signup.ip, signup.user_agent, signup.wording_version) == ("signup", CLIENT_IP, UA, "1")

    mail = site.last_mail("hanako.sato@example.jp")
    assert mail["Subject"] == "【地方行政ニュース】メール配信登録の確認"
    assert mail["From"].addresses[0].addr_spec == "magazine@news.example.jp"
    assert mail["Auto-Submitted"] == "auto-generated"
    url = link_in(mail, "confirm")
    assert url.startswith("https://news.example.jp/confirm/")

    # Opening the link (or a scanner prefetching it) activates nothing.
    path = urlsplit(url).path
    shown = site.client.get(path)
    assert shown.status_code == 200 and "登録を確定する" in shown.text
    assert "教育" in shown.text and "行政" in shown.text and "テキスト形式" in shown.text
    assert "ha" in shown.text and "hanako.sato@example.jp" not in shown.text  # masked
    site.client.get(path)
    assert site.subscriber("hanako.sato@example.jp").status == "pending"

    done = site.client.post(path, data={"csrf": csrf_of(shown.text)})
    assert done.status_code == 200 and "登録が完了しました" in done.text
    row = site.subscriber("hanako.sato@example.jp")
    assert (row.status, row.fields, row.format, row.name) == ("active", "administration,education", "text", "佐藤 花子")
    events = site.consents("hanako.sato@example.jp")
    assert [c.event for c in events] == ["signup", "confirm"]
    assert events[1].ip == CLIENT_IP and events[1].wording_version == "1" and "signed up" in events[1].detail

    # Single use: the same link again, by GET or POST.
    assert site.client.get(path).status_code == 409
    again = site.client.post(path, data={"csrf": csrf_of(shown.text)})
    assert again.status_code == 409 and "すでに使用されました" in again.text


def test_same_page_whether_or_not_the_address_is_known(site):
    site.cli("subscriber", "add", "known@example.jp", "--fields", "education")
    unknown = sign_up(site, "nobody@example.jp")
    known = sign_up(site, "known@example.jp")
    assert unknown.status_code == known.status_code == 200
    assert main_text(unknown.text) == main_text(known.text)
    # The known address gets a notice with its preferences link, not a confirmation; nothing changes.
    notice = site.last_mail("known@example.jp")
    assert notice["Subject"] == "【地方行政ニュース】メール配信登録のお知らせ"
    assert "/preferences/" in link_in(notice, "preferences")
    assert site.subscriber("known@example.jp").status == "active"


def test_unsubscribed_address_comes_back_only_by_confirming(site):
    site.cli("subscriber", "add", "back@example.jp", "--fields", "education")
    site.cli("subscriber", "unsubscribe", "back@example.jp")
    assert sign_up(site, "back@example.jp", fields=("local-government",)).status_code == 200
    assert site.subscriber("back@example.jp").status == "unsubscribed"
    assert confirm(site, "back@example.jp").status_code == 200
    row = site.subscriber("back@example.jp")
    assert (row.status, row.fields) == ("active", "local-government")


def test_confirmation_link_expires(site):
    sign_up(site, "late@example.jp")
    path = urlsplit(link_in(site.last_mail("late@example.jp"), "confirm")).path
    page = site.client.get(path)
    site.clock.advance(hours=72, seconds=1)
    assert site.client.get(path).status_code == 410
    res = site.client.post(path, data={"csrf": csrf_of(page.text)})
    assert res.status_code == 410 and "有効期限" in res.text
    assert site.subscriber("late@example.jp").status == "pending"


def test_forged_and_foreign_tokens_are_refused(site):
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    sign_up(site, "new@example.jp")
    good = urlsplit(link_in(site.last_mail("new@example.jp"), "confirm")).path.rsplit("/", 1)[1]
    sid, expires, sig = good.split(".")
    forged = [
        f"{sid}.{int(expires) + 86400}.{sig}",  # expiry extended
        f"{int(sid) + 1}.{expires}.{sig}",  # another sign-up
        make_expiring_token(b"not the key", "confirm", int(sid), int(expires)),
        "garbage", "1.2", "１.２.３", "",
    ]
    for token in forged:
        if token:
            assert site.client.get(f"/confirm/{token}").status_code == 400, token
    unsubscribe = site.token("unsubscribe", "reader@example.jp")
    preferences = site.token("preferences", "reader@example.jp")
    assert site.client.get(f"/preferences/{unsubscribe}").status_code == 400  # another purpose
    assert site.client.get(f"/unsubscribe/{preferences}").status_code == 400
    assert site.client.get("/unsubscribe/1.AAAAAAAAAAAAAAAAAAAAAA").status_code == 400
    res = site.client.post(f"/unsubscribe/{unsubscribe[:-2]}xx", data={"List-Unsubscribe": "One-Click"})
    assert res.status_code == 400
    assert site.subscriber("reader@example.jp").status == "active"
    assert site.subscriber("new@example.jp").status == "pending"


def test_rotated_keys_keep_old_links_working(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", "old-key-2024")
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}")
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    old_unsubscribe = site.token("unsubscribe", "reader@example.jp")
    old_preferences = site.token("preferences", "reader@example.jp")
    sign_up(site, "pending@example.jp")
    old_confirm = urlsplit(link_in(site.last_mail("pending@example.jp"), "confirm")).path

    monkeypatch.setenv("NEWSLETTER_SECRET", "new-key-2025")
    monkeypatch.setenv("NEWSLETTER_OLD_SECRETS", "older-key, old-key-2024")
    rotated = TestClient(create_app(site.config, site.engine, clock=site.clock), client=(CLIENT_IP, 1),
                         follow_redirects=False)
    assert rotated.get(f"/preferences/{old_preferences}").status_code == 200
    assert rotated.get(f"/unsubscribe/{old_unsubscribe}").status_code == 200
    assert rotated.get(old_confirm).status_code == 200
    # New links are signed with the new key.
    page = rotated.get("/")
    rotated.post("/subscribe", data={"csrf": csrf_of(page.text), "email": "fresh@example.jp",
                                     "fields": "education", "agree": "1"})
    token = link_in(site.last_mail("fresh@example.jp"), "confirm").rsplit("/", 1)[1]
    sid, expires, _ = token.split(".")
    assert token == make_expiring_token(b"new-key-2025", "confirm", int(sid), int(expires))
    monkeypatch.delenv("NEWSLETTER_OLD_SECRETS")
    dropped = TestClient(create_app(site.config, site.engine, clock=site.clock), follow_redirects=False)
    assert dropped.get(f"/preferences/{old_preferences}").status_code == 400


@pytest.mark.parametrize(("address", "fields", "agree", "message"), [
    ("not-an-address", ("education",), True, "メールアドレスの形式が正しくありません"),
    ("taro@", ("education",), True, "メールアドレスの形式が正しくありません"),
    ("taro@example.jp\r\nBcc: x@example.jp", ("education",), True, "メールアドレスの形式が正しくありません"),
    # A non-ASCII local part cannot be mailed: refused before anything is written
    # (it used to become a pending subscriber, then a 500 when the mail was built).
    ("すずき@example.jp", ("education",), True, "メールアドレスの形式が正しくありません"),
    ("ｽｽﾞｷ@example.jp", ("education",), True, "メールアドレスの形式が正しくありません"),
    ("", ("education",), True, "メールアドレスを入力してください"),
    ("taro@example.jp", ("sports",), True, "不明な分野が指定されました: sports"),
    ("taro@example.jp", (), True, "分野を1つ以上選んでください"),
    ("taro@example.jp", ("education",), False, "同意事項を確認し"),
])
def test_bad_sign_up_input_is_a_400_that_writes_nothing(site, address, fields, agree, message):
    res = sign_up(site, address, fields=fields, agree=agree)
    assert res.status_code == 400
    assert message in res.text
    assert 'name="csrf"' in res.text  # the form again, to correct
    assert not any(dump(site.engine).values())  # not a row in any table
    assert site.mails() == []


def _tied(html: str, element_id: str) -> tuple[str | None, str, list[str]]:
    """(aria-invalid, the text aria-describedby ties to the element, the error summary's link targets)."""
    import lxml.html

    doc = lxml.html.document_fromstring(html)
    [element] = doc.xpath(f"//*[@id='{element_id}']")
    described = " ".join(doc.get_element_by_id(i).text_content()
                         for i in (element.get("aria-describedby") or "").split())
    summary = [a.get("href") for a in doc.xpath("//*[contains(@class, 'error-summary')]//a")]
    return element.get("aria-invalid"), described, summary


@pytest.mark.parametrize(("data", "element", "link", "message"), [
    ({"email": ""}, "email", "#email", "メールアドレスを入力してください。"),
    ({"name": "改行\nあり"}, "name", "#name", "お名前が長すぎるか"),
    ({"fields": []}, "fields-group", "#fields-local-government", "分野を1つ以上選んでください。"),
    ({"agree": None}, "agree", "#agree", "同意事項を確認し、チェックを入れてください。"),
])
def test_sign_up_errors_stand_beside_their_fields(site, data, element, link, message):
    """Each error is tied to its field (aria-describedby, aria-invalid) and linked
    from the summary at the top; what the reader typed is kept."""
    page = site.client.get("/")
    form = {"csrf": csrf_of(page.text), "email": "taro@example.jp", "name": "山田 太郎", "fields": ["education"],
            "format": "html", "agree": "1"} | data
    res = site.client.post("/subscribe", data={k: v for k, v in form.items() if v is not None})
    assert res.status_code == 400
    invalid, described, summary = _tied(res.text, element)
    assert invalid == "true" and described.startswith(message) and summary == [link]
    if element != "email":
        assert 'value="taro@example.jp"' in res.text


def test_preference_errors_stand_beside_their_group(site):
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    path = f"/preferences/{site.token('preferences', 'reader@example.jp')}"
    page = site.client.get(path)
    res = site.client.post(path, data={"csrf": csrf_of(page.text, "preferences-form"), "format": "pdf",
                                       "fields": ["education"]})
    assert res.status_code == 400
    assert _tied(res.text, "format-group") == ("true", "メールの形式が正しくありません。", ["#format-html"])


def test_one_look_for_readers_and_officials(site):
    """One copy of the design tokens, served once, linked by the readers' pages and
    the console alike; the console adds its own layout only."""
    tokens = site.client.get("/static/tokens.css")
    assert tokens.status_code == 200 and tokens.headers["content-type"].startswith("text/css")
    assert tokens.text == (ROOT / "templates" / "admin" / "dads-tokens-1.1.9.css").read_text(encoding="utf-8")
    assert site.client.get("/admin/static/tokens.css").status_code == 404
    assert site.client.get("/static/other.css").status_code == 404
    assert site.client.get("/admin/static/console.css").status_code == 200
    for path, extra in (("/", []), ("/archive/", []), ("/admin/login", ["/admin/static/console.css"])):
        sheets = re.findall(r'<link rel="stylesheet" href="([^"]+)">', site.client.get(path).text)
        assert sheets == ["/static/tokens.css", "/static/site.css", *extra], path


def test_csrf_is_required_on_every_form(site):
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    pref = f"/preferences/{site.token('preferences', 'reader@example.jp')}"
    unsub = f"/unsubscribe/{site.token('unsubscribe', 'reader@example.jp')}"
    form = {"email": "x@example.jp", "fields": "education", "agree": "1"}
    assert site.client.post("/subscribe", data=form).status_code == 403  # no token, no cookie
    page = site.client.get("/")
    assert site.client.post("/subscribe", data=form).status_code == 403  # cookie, no token
    assert site.client.post("/subscribe", data={**form, "csrf": "x" * 24}).status_code == 403
    # A token made for another form does not work here.
    other = csrf_of(site.client.get(pref).text)
    assert site.client.post("/subscribe", data={**form, "csrf": other}).status_code == 403
    # A token without its cookie (another browser) does not work.
    fresh = TestClient(site.client.app, client=(CLIENT_IP, 2), follow_redirects=False)
    res = fresh.post("/subscribe", data={**form, "csrf": csrf_of(page.text)})
    assert res.status_code == 403 and "再読み込み" in res.text
    assert site.client.post(pref, data={"fields": "local-government", "format": "text"}).status_code == 403
    assert site.client.post(unsub, data={"confirm": "1"}).status_code == 403
    row = site.subscriber("reader@example.jp")
    assert (row.status, row.fields) == ("active", "education")
    assert site.subscriber("x@example.jp") is None


def test_oversized_bodies_are_refused(site):
    page = site.client.get("/")
    big = {"csrf": csrf_of(page.text), "email": "a@example.jp", "fields": "education", "agree": "1",
           "name": "x" * 70_000}
    res = site.client.post("/subscribe", data=big)
    assert res.status_code == 413

    def chunks():  # no Content-Length: counted as it streams
        yield b"email=a%40example.jp&name="
        for _ in range(100):
            yield b"y" * 1000

    res = site.client.post("/subscribe", content=chunks(),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert res.status_code == 413 and "大きすぎます" in res.text
    assert site.subscriber("a@example.jp") is None


def test_wrong_methods_and_content_types(site):
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    unsub = f"/unsubscribe/{site.token('unsubscribe', 'reader@example.jp')}"
    assert site.client.get("/subscribe").status_code == 405
    assert site.client.put("/").status_code == 405
    assert site.client.delete(unsub).status_code == 405
    assert site.client.get("/webhooks/sendgrid").status_code == 405
    res = site.client.patch("/archive/")
    assert res.status_code == 405 and "HTTPメソッド" in res.text
    res = site.client.post(unsub, content=b'{"List-Unsubscribe": "One-Click"}',
                           headers={"Content-Type": "application/json"})
    assert res.status_code == 415
    res = site.client.post(unsub, content=b"List-Unsubscribe=One-Click", headers={"Content-Type": "text/plain"})
    assert res.status_code == 415
    assert site.client.get("/no/such/page").status_code == 404
    assert site.subscriber("reader@example.jp").status == "active"


def test_rate_limits_per_ip_and_per_address(tmp_path):
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}",
                     extra='\n[web]\nsignup_limit_ip = "3/h"\nsignup_limit_address = "2/d"\n')
    for i in range(3):
        assert sign_up(site, f"p{i}@example.jp").status_code == 200
    res = sign_up(site, "p3@example.jp")
    assert res.status_code == 429 and int(res.headers["Retry-After"]) > 3000
    assert site.subscriber("p3@example.jp") is None
    site.clock.advance(hours=1, seconds=1)  # a new window for this IP
    assert sign_up(site, "p3@example.jp").status_code == 200

    # Per address, whichever IP asks: no subscription bombing of one mailbox.
    for i, ip in enumerate(("192.0.2.1", "192.0.2.2", "192.0.2.3")):
        other = TestClient(site.client.app, client=(ip, 1), follow_redirects=False)
        page = other.get("/")
        res = other.post("/subscribe", data={"csrf": csrf_of(page.text), "email": "victim@example.jp",
                                             "fields": "education", "agree": "1"})
        assert res.status_code == (200 if i < 2 else 429)
    with site.engine.connect() as conn:  # two confirmation mails, not three
        assert len(conn.execute(select(signups).where(
            signups.c.subscriber_id == site.subscriber("victim@example.jp").id)).all()) == 2


def test_trusted_proxy_gives_the_client_address(tmp_path):
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}",
                     extra='\n[web]\ntrusted_proxies = ["127.0.0.1"]\n', client=("127.0.0.1", 5000))
    sign_up(site, "proxied@example.jp", **{"X-Forwarded-For": "10.9.9.9, 203.0.113.50"})
    assert site.consents("proxied@example.jp")[0].ip == "203.0.113.50"
    untrusted = make_site(tmp_path / "other", f"sqlite:///{tmp_path / 'other' / 'n.db'}")
    sign_up(untrusted, "direct@example.jp", **{"X-Forwarded-For": "203.0.113.50"})
    assert untrusted.consents("direct@example.jp")[0].ip == CLIENT_IP


# -- preference center ---------------------------------------------------------------

def test_preference_center_changes_fields_and_format_without_login(site):
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education", "--format", "html")
    path = f"/preferences/{site.token('preferences', 'reader@example.jp')}"
    page = site.client.get(path)
    assert page.status_code == 200 and "配信設定" in page.text
    assert re.search(r'value="education" checked', page.text)
    assert not re.search(r'value="administration" checked', page.text)
    res = site.client.post(path, data={"csrf": csrf_of(page.text, "preferences-form"),
                                       "fields": ["administration", "local-government"], "format": "text"})
    assert res.status_code == 303 and res.headers["location"] == f"{path}?saved=1"
    row = site.subscriber("reader@example.jp")
    assert (row.fields, row.format, row.status) == ("local-government,administration", "text", "active")
    change = site.consents("reader@example.jp")[-1]
    assert change.event == "change" and change.ip == CLIENT_IP and "fields=" in change.detail
    assert "設定を保存しました" in site.client.get(res.headers["location"]).text

    token = csrf_of(page.text, "preferences-form")
    for data, message in [({"fields": ["sports"], "format": "html"}, "不明な分野"),
                          ({"format": "html"}, "分野を1つ以上"),
                          ({"fields": ["education"], "format": "pdf"}, "メールの形式")]:
        bad = site.client.post(path, data={"csrf": token, **data})
        assert bad.status_code == 400 and message in bad.text
    row = site.subscriber("reader@example.jp")
    assert (row.fields, row.format) == ("local-government,administration", "text")


def test_preferences_of_a_suppressed_address(site):
    site.cli("subscriber", "add", "gone@example.jp", "--fields", "education")
    site.cli("subscriber", "unsubscribe", "gone@example.jp")
    path = f"/preferences/{site.token('preferences', 'gone@example.jp')}"
    page = site.client.get(path)
    assert page.status_code == 200 and "配信停止済み" in page.text and 'name="csrf"' not in page.text
    token = csrf_of(site.client.get("/").text)  # any valid cookie; the token is for another path
    assert site.client.post(path, data={"csrf": token, "fields": "education"}).status_code == 403
    site.cli("subscriber", "delete", "gone@example.jp", "--yes")
    assert site.client.get(path).status_code == 410


# -- unsubscribe ----------------------------------------------------------------------

def pending_delivery(site: Site, address: str) -> None:
    site.cli("article", "add", "--field", "education", "--title", "県立高校の入試日程を公表",
             "--url", "https://news.example.jp/edu/1")
    # Created and ready to send ('edition send' without the send); 'edition create' makes a draft.
    creation.create_edition(site.engine, site.config, site.config.publication("weekly"))
    with site.engine.connect() as conn:
        assert conn.execute(select(deliveries.c.status).where(deliveries.c.email == address)).scalar() == "pending"


def delivery_status(site: Site, address: str) -> str:
    with site.engine.connect() as conn:
        return conn.execute(select(deliveries.c.status).where(deliveries.c.email == address)).scalar()


def test_unsubscribe_page_get_never_unsubscribes(site):
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    pending_delivery(site, "reader@example.jp")
    path = f"/unsubscribe/{site.token('unsubscribe', 'reader@example.jp')}"
    for _ in range(3):
        page = site.client.get(path)
        assert page.status_code == 200 and "配信を停止する" in page.text
    assert site.subscriber("reader@example.jp").status == "active"
    res = site.client.post(path, data={"csrf": csrf_of(page.text)})
    assert res.status_code == 200 and "配信を停止しました" in res.text
    assert site.subscriber("reader@example.jp").status == "unsubscribed"
    assert delivery_status(site, "reader@example.jp") == "cancelled"
    assert "すでに停止" in site.client.get(path).text


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_post(site, encoding):
    """RFC 8058 §3.1: the POST body is ``List-Unsubscribe=One-Click``, as
    application/x-www-form-urlencoded or multipart/form-data; no cookies."""
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    pending_delivery(site, "reader@example.jp")
    path = f"/unsubscribe/{site.token('unsubscribe', 'reader@example.jp')}"
    client = TestClient(site.client.app, client=("209.85.220.41", 1), follow_redirects=False)  # no cookies
    if encoding == "urlencoded":
        send = lambda: client.post(path, content=b"List-Unsubscribe=One-Click",  # noqa: E731
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    else:
        send = lambda: client.post(path, files={"List-Unsubscribe": (None, "One-Click")})  # noqa: E731
    res = send()
    assert res.status_code == 200 and "set-cookie" not in res.headers
    assert site.subscriber("reader@example.jp").status == "unsubscribed"
    assert delivery_status(site, "reader@example.jp") == "cancelled"
    assert send().status_code == 200  # a repeat is harmless
    events = [c for c in site.consents("reader@example.jp") if c.event == "unsubscribed"]
    assert len(events) == 1 and events[0].source == "one-click" and events[0].ip == "209.85.220.41"
    bad = client.post(path, content=b"List-Unsubscribe=Yes",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert bad.status_code == 400


@contextmanager
def served(app) -> Iterator[int]:
    """``app`` on a real uvicorn server on 127.0.0.1 (in a thread); yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           backlog=512))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_concurrent_one_click_posts_write_one_consent_row(tmp_path, storage_url):
    """200 one-click POSTs on one link at the same moment (a mailbox provider
    retrying, a scanner and the reader): all answered 200, and the consent
    record says once that the reader unsubscribed — one row per actual change
    (it used to get a dozen)."""
    site = make_site(tmp_path, storage_url)
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    pending_delivery(site, "reader@example.jp")
    path = f"/unsubscribe/{site.token('unsubscribe', 'reader@example.jp')}"
    n = 200
    barrier = threading.Barrier(n)

    def one_click(port: int) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.connect()
        barrier.wait()  # every connection open, then all requests at once
        conn.request("POST", path, body=b"List-Unsubscribe=One-Click",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        status = conn.getresponse().status
        conn.close()
        return status

    with served(site.client.app) as port, ThreadPoolExecutor(n) as pool:
        statuses = list(pool.map(one_click, [port] * n))
    assert statuses == [200] * n
    assert site.subscriber("reader@example.jp").status == "unsubscribed"
    assert delivery_status(site, "reader@example.jp") == "cancelled"
    events = [c.event for c in site.consents("reader@example.jp")]
    assert events == ["subscribe", "unsubscribed"]


def test_unsubscribe_of_an_erased_subscriber_is_harmless(site):
    site.cli("subscriber", "add", "erased@example.jp", "--fields", "education")
    path = f"/unsubscribe/{site.token('unsubscribe', 'erased@example.jp')}"
    site.cli("subscriber", "delete", "erased@example.jp", "--yes")
    res = site.client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert res.status_code == 200
    assert site.client.get(path).status_code == 410


# -- consent record ------------------------------------------------------------------

def test_consent_record_survives_unsubscribe_and_is_shown_by_the_cli(site):
    sign_up(site, "kept@example.jp")
    confirm(site, "kept@example.jp")
    path = f"/unsubscribe/{site.token('unsubscribe', 'kept@example.jp')}"
    site.client.post(path, data={"List-Unsubscribe": "One-Click"})
    out = site.cli("subscriber", "consent", "kept@example.jp").stdout
    assert "kept@example.jp (unsubscribed)" in out
    lines = out.splitlines()
    signup = next(line for line in lines if " signup " in line)
    confirmed = next(line for line in lines if " confirm " in line)
    assert f"ip={CLIENT_IP}" in signup and "wording=1" in signup and "newsletter-tests" in signup
    assert f"ip={CLIENT_IP}" in confirmed and "signed up" in confirmed
    assert any(" unsubscribed " in line and "one-click" in line for line in lines)


# -- security headers, errors, logs -------------------------------------------------------

def test_security_headers_and_no_secrets(site, caplog, monkeypatch):
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    secret = site.config.secret().decode()
    token = site.token("unsubscribe", "reader@example.jp")
    caplog.set_level("INFO", logger="newsletter.web.access")
    for path in ["/", f"/unsubscribe/{token}", f"/preferences/{site.token('preferences', 'reader@example.jp')}",
                 "/archive/", "/nowhere", "/confirm/1.2.x"]:
        res = site.client.get(path)
        csp = res.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "script-src" not in csp
        assert res.headers["x-frame-options"] == "DENY"
        assert res.headers["x-content-type-options"] == "nosniff"
        assert res.headers["referrer-policy"] == "no-referrer"
        assert secret not in res.text
        assert "<script" not in res.text and "style=" not in res.text
    assert site.client.get(f"/unsubscribe/{token}").headers["cache-control"] == "no-store"
    assert token not in caplog.text and "/unsubscribe/…" in caplog.text
    assert site.client.get("/static/site.css").headers["content-type"].startswith("text/css")


def test_hostile_tokens_and_csrf_values_are_a_4xx_that_changes_nothing(site):
    """Tokens and CSRF values a client can write: digits outside ASCII ('²'.isdigit()
    is true, int('²') fails), non-ASCII signatures (hmac.compare_digest raises
    on a non-ASCII str) — each was a 500."""
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    unsub = site.token("unsubscribe", "reader@example.jp")
    sid, sig = unsub.split(".")
    page = site.client.get("/")
    before = dump(site.engine)
    one_click = {"Content-Type": "application/x-www-form-urlencoded"}
    for token in (f"².{sig}", f"{sid}.{sig[:-1]}é", f"{sid}.署名", "１.２", f"{sid}.{sig}%0A", f"{sid}.{sig}.x",
                  f"٣.{sig}", f"{sid}"):
        for purpose in ("unsubscribe", "preferences"):
            assert site.client.get(f"/{purpose}/{token}").status_code == 400, (purpose, token)
        res = site.client.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click", headers=one_click)
        assert res.status_code == 400, token
    for token in ("1.2.é", "².2.AAAAAAAAAAAAAAAAAAAAAA", "1.²2.AAAAAAAAAAAAAAAAAAAAAA", "1.2.署名"):
        assert site.client.get(f"/confirm/{token}").status_code == 400, token
    form = {"email": "taro@example.jp", "fields": "education", "agree": "1"}
    pref = f"/preferences/{site.token('preferences', 'reader@example.jp')}"
    for csrf in ("é" * 24, "署名", csrf_of(page.text)[:-1] + "²", "\udcff"):
        for path, data in (("/subscribe", form), (pref, {"fields": "administration"}), (f"/unsubscribe/{unsub}", {})):
            body = "&".join(f"{k}={v}" for k, v in {**data, "csrf": csrf}.items()).encode("utf-8", "surrogatepass")
            res = site.client.post(path, content=body, headers=one_click)
            assert res.status_code == 403, (path, csrf)
    stranger = TestClient(site.client.app, client=(CLIENT_IP, 3))
    for cookie in ("é" * 30, "署名" * 12, "a" * 24 + "\n"):
        res = stranger.post("/subscribe", content=b"csrf=x&email=a%40example.jp", headers={
            **one_click, "Cookie": b"nl_csrf=" + cookie.encode()})
        assert res.status_code == 403, cookie
    assert dump(site.engine) == before


def test_an_unexpected_error_is_logged_and_answered_without_insides(tmp_path, caplog):
    """The last resort, for a bug (here: the provider hand-over raising): a plain
    500 page in the site's language with the security headers, the traceback in
    the log only."""
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}")

    def broken(config, message):
        raise RuntimeError("internal detail /srv/secret/path")

    client = TestClient(create_app(site.config, site.engine, clock=site.clock, send_mail=broken),
                        client=(CLIENT_IP, 1), raise_server_exceptions=False)
    page = client.get("/")
    caplog.set_level("ERROR", logger="newsletter.web.app")
    res = client.post("/subscribe", data={"csrf": csrf_of(page.text), "email": "taro@example.jp",
                                          "fields": "education", "agree": "1"})
    assert res.status_code == 500
    assert "サーバーで問題が発生しました" in res.text
    assert "Traceback" not in res.text and "secret" not in res.text and "RuntimeError" not in res.text
    assert res.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in res.headers["content-security-policy"]
    assert "RuntimeError" in caplog.text and "internal detail" in caplog.text  # the operator sees what happened
    # Even when the error page itself cannot be made: plain text, still nothing of the insides.
    (site.folder / "templates" / "web" / "message.html.j2").unlink()
    res = client.post("/subscribe", data={"csrf": csrf_of(page.text), "email": "hanako@example.jp",
                                          "fields": "education", "agree": "1"})
    assert (res.status_code, res.text) == (500, "error: internal error\n")
    assert res.headers["x-frame-options"] == "DENY"


def test_malformed_requests_never_give_a_500(site):
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    page = site.client.get("/")
    token = csrf_of(page.text)
    form = "application/x-www-form-urlencoded"
    pref = f"/preferences/{site.token('preferences', 'reader@example.jp')}"
    attempts = [
        ("POST", "/subscribe", b"csrf=" + token.encode() + b"&email=%ZZ%&fields=education&agree=1", form),
        ("POST", "/subscribe", b"csrf=" + token.encode() + b"&email=\xff\xfe@example.jp&agree=1", form),
        ("POST", "/subscribe", b"&&&===&", form),
        ("POST", "/subscribe",
         b"--x\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\r\nhi\r\n--x--\r\n",
         "multipart/form-data; boundary=x"),
        ("POST", "/subscribe", b"garbage", "multipart/form-data"),
        ("POST", "/subscribe", b"garbage", "multipart/form-data; boundary=zz"),
        ("POST", "/subscribe", b"&".join(b"f%d=1" % i for i in range(500)), "multipart/form-data; boundary=q"),
        ("POST", pref, b"csrf=x&fields=%00", form),
        ("POST", "/confirm/1.99999999999.AAAA", b"csrf=x", form),
        ("GET", "/confirm/" + "9" * 40 + ".1.x", None, None),
        ("GET", "/preferences/%00", None, None),
        ("GET", "/unsubscribe/" + "a" * 5000, None, None),
        ("GET", "/archive/weekly/999999999999999999999/", None, None),
        ("GET", "/archive/nope/feed.atom", None, None),
        ("POST", "/webhooks/sendgrid", b"[]", "application/json"),
        ("POST", "/webhooks/nothing", b"{}", "application/json"),
    ]
    for method, path, body, ctype in attempts:
        headers = {"Content-Type": ctype} if ctype else {}
        res = site.client.request(method, path, content=body, headers=headers)
        assert 400 <= res.status_code < 500, (method, path, body, res.status_code)
    res = site.client.post("/subscribe", content=b"x", headers={"Content-Type": form, "Content-Length": "abc"})
    assert res.status_code == 400
    assert site.subscriber("reader@example.jp").status == "active"


# -- archive --------------------------------------------------------------------------

def test_archive_lists_and_shows_editions_without_personal_tokens(site):
    site.cli("subscriber", "import", ROOT / "subscribers" / "sample.csv")
    site.cli("article", "import", ROOT / "articles" / "sample.json")
    site.cli("edition", "send", "weekly")
    # An edition still sending stays out of the archive.
    site.cli("article", "add", "--field", "education", "--title", "未送信の記事", "--url", "https://news.example.jp/x/9")
    site.cli("edition", "create", "weekly")
    index = site.client.get("/archive/")
    assert index.status_code == 200 and "週刊 地方行政ニュース" in index.text and "第1号" in index.text
    assert 'href="/archive/weekly/1/"' in index.text
    page = site.client.get("/archive/weekly/1/")
    assert page.status_code == 200
    html = page.text
    assert "読者の皆さま" in html and "%%NL_" not in html
    assert "/unsubscribe/" not in html and "/preferences/" not in html
    words = re.sub(r"<[^>]+>", "", html)  # headlines carry <wbr> and phrase spans
    for article in (ROOT / "articles" / "sample.json").read_text(encoding="utf-8").split('"title": "')[1:4]:
        assert article.split('"')[0].split()[0] in words
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script" not in page.headers["content-security-policy"]

    feed = site.client.get("/archive/weekly/feed.atom")
    assert feed.headers["content-type"].startswith("application/atom+xml")
    ns = {"a": "http://www.w3.org/2005/Atom"}
    root = ET.fromstring(feed.content)
    entries = root.findall("a:entry", ns)
    assert len(entries) == 1
    assert entries[0].find("a:title", ns).text.startswith("【週刊 地方行政ニュース】第1号")
    assert entries[0].find("a:link", ns).get("href") == "https://news.example.jp/archive/weekly/1/"
    assert ET.fromstring(site.client.get("/archive/feed.atom").content).find("a:entry", ns) is not None
    assert site.client.get("/archive/weekly/2/").status_code == 404
    assert "第2号" not in index.text
    assert site.client.get("/archive/monthly/").status_code == 404


def test_archive_sanitizes_article_html(site):
    site.cli("subscriber", "add", "reader@example.jp", "--fields", "education")
    site.cli("article", "add", "--field", "education", "--title", "安全な記事", "--url", "https://news.example.jp/e/1")
    site.cli("edition", "send", "weekly")
    with site.engine.begin() as conn:
        row = conn.execute(select(editions)).one()
        evil = ('"body_html": "<p>本文</p><script>alert(1)</script><a href=\\"javascript:alert(2)\\">x</a>'
                '<img src=x onerror=alert(3)>"')
        content = row.content.replace('"full_text": false', '"full_text": true').replace('"body_html": ""', evil)
        conn.execute(update(editions).values(content=content))
    html = site.client.get("/archive/weekly/1/").text
    assert "本文" in html
    assert "<script" not in html and "javascript:" not in html and "onerror" not in html


def test_pending_signup_rows_keep_the_request(site):
    sign_up(site, "rows@example.jp", fields=("education", "local-government"), fmt="text")
    with site.engine.connect() as conn:
        row = conn.execute(select(signups)).one()
    assert (row.fields, row.format, row.ip, row.confirmed_at) == ("local-government,education", "text", CLIENT_IP, None)
    assert row.expires_at - row.created_at == timedelta(hours=72)


def test_english_pages(tmp_path):
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}",
                     replace={'language = "ja"': 'language = "en"'})
    page = site.client.get("/")
    assert 'lang="en"' in page.text and "Subscribe to the newsletter" in page.text
    res = sign_up(site, "en@example.jp")
    assert "Check your inbox" in res.text
    assert site.last_mail("en@example.jp")["Subject"] == "[地方行政ニュース] Please confirm your subscription"
    assert "Confirm subscription" in site.client.get(
        urlsplit(link_in(site.last_mail("en@example.jp"), "confirm")).path).text
