"""``newsletter doctor`` against a real DNS server on 127.0.0.1: each record
missing, wrong and right gives the right verdict; offline says so; preflight
turns a failing authentication into an error for large Gmail/Yahoo audiences."""

from __future__ import annotations

import json
import re
import socket

import pytest

from newsletter.config import load_config
from newsletter.dkim_signer import DkimKey, generate_key, private_pem
from newsletter.doctor import diagnose, org_domain
from tests.conftest import CLI, write_config
from tests.dns_server import LocalDNS

DOMAIN = "news.example.jp"
RELAY_IP = "192.0.2.25"


@pytest.fixture
def key():
    return generate_key("rsa-sha256")


@pytest.fixture
def good_zone(key):
    return {
        (DOMAIN, "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
        (DOMAIN, "MX"): ["10 mx.news.example.jp"],
        ("mx.news.example.jp", "A"): ["192.0.2.10"],
        (f"nl2026._domainkey.{DOMAIN}", "TXT"): [DkimKey("nl2026", "rsa-sha256", key).public_record()],
        (f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=quarantine; rua=mailto:dmarc@news.example.jp"],
        ("smtp.news.example.jp", "A"): [RELAY_IP],
        ("25.2.0.192.in-addr.arpa", "PTR"): ["smtp.news.example.jp"],
    }


@pytest.fixture
def dns(good_zone):
    server = LocalDNS(dict(good_zone)).start()
    yield server
    server.stop()


def _project(tmp_path, monkeypatch, key, *, dkim=True, provider=None, replace=None, language=None):
    monkeypatch.setenv("NL_TEST_DKIM", private_pem(key).decode())
    provider = provider or '[provider]\nkind = "smtp"\nhost = "smtp.news.example.jp"\nport = 587\n'
    extra = '\n[dkim]\nselector = "nl2026"\nprivate_key_env = "NL_TEST_DKIM"\n' if dkim else ""
    replace = dict(replace or {})
    if language:
        replace['language = "ja"'] = f'language = "{language}"'
    folder = tmp_path / "project"
    return CLI(write_config(folder, f"sqlite:///{folder / 'var' / 'newsletter.db'}", provider=provider,
                            extra=extra, replace=replace))


def _verdicts(cli, dns) -> dict[str, bool | None]:
    checks = diagnose(load_config(cli.config_path), [dns.address])
    return {c.code: c.ok for c in checks}


def test_everything_right(tmp_path, monkeypatch, key, dns):
    cli = _project(tmp_path, monkeypatch, key)
    assert _verdicts(cli, dns) == {"one-click": True, "spf": True, "dkim": True, "dmarc": True,
                                   "alignment": True, "ptr": True, "mx": True}
    res = cli("doctor", "--nameserver", dns.address)
    assert res.exit_code == 0
    assert res.stdout.count("✓") == 7 and "✗" not in res.stdout
    assert "必須項目はすべて満たされています" in res.stdout


@pytest.mark.parametrize("record, value, code, words", [
    ((DOMAIN, "TXT"), None, "spf", "SPF レコードがありません"),
    ((DOMAIN, "TXT"), ["v=spf1 ip4:198.51.100.0/24 -all"], "spf", "許可していません"),
    ((DOMAIN, "TXT"), ["v=spf1 a -all", "v=spf1 mx -all"], "spf", "SPF レコードが 2 件"),
    ((f"nl2026._domainkey.{DOMAIN}", "TXT"), None, "dkim", "DKIM の公開鍵がありません"),
    ((f"_dmarc.{DOMAIN}", "TXT"), None, "dmarc", "DMARC レコードがありません"),
    ((f"_dmarc.{DOMAIN}", "TXT"), ["v=DMARC1; p=maybe"], "dmarc", "DMARC レコードが不正です"),
    (("25.2.0.192.in-addr.arpa", "PTR"), None, "ptr", "逆引きがないか"),
    (("25.2.0.192.in-addr.arpa", "PTR"), ["other.example.net"], "ptr", "逆引きがないか"),
])
def test_each_record_missing_or_wrong(tmp_path, monkeypatch, key, dns, record, value, code, words):
    if value is None:
        del dns.zone[record]
    else:
        dns.zone[record] = value
    cli = _project(tmp_path, monkeypatch, key)
    verdicts = _verdicts(cli, dns)
    assert verdicts[code] is False
    assert [c for c, ok in verdicts.items() if ok is False] == [code]
    res = cli("doctor", "--nameserver", dns.address, ok=False)
    assert res.exit_code == 1
    line = next(line for line in res.stdout.splitlines() if line.startswith(f"✗ {code}:"))
    assert words in line
    fix = res.stdout.splitlines()[res.stdout.splitlines().index(line) + 1]
    assert fix.startswith("    → ")
    assert "1 件の必須項目が満たされていません" in res.stderr


def test_a_dkim_record_for_another_key_is_a_mismatch(tmp_path, monkeypatch, key, dns):
    dns.zone[(f"nl2026._domainkey.{DOMAIN}", "TXT")] = [
        DkimKey("nl2026", "rsa-sha256", generate_key("rsa-sha256")).public_record()]
    cli = _project(tmp_path, monkeypatch, key)
    res = cli("doctor", "--nameserver", dns.address, "--json", ok=False)
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    dkim = next(c for c in report["checks"] if c["code"] == "dkim")
    assert report["ok"] is False and dkim["ok"] is False and "一致しません" in dkim["message"]
    assert DkimKey("nl2026", "rsa-sha256", key).public_record() in dkim["fix"]


def test_no_dkim_with_an_smtp_relay_fails_and_says_how(tmp_path, monkeypatch, key, dns):
    cli = _project(tmp_path, monkeypatch, key, dkim=False, language="en")
    verdicts = _verdicts(cli, dns)
    assert verdicts["dkim"] is False
    # SPF still aligns the envelope domain with From, so DMARC can pass on SPF alone.
    assert verdicts["alignment"] is True
    res = cli("doctor", "--nameserver", dns.address, ok=False)
    assert "✗ dkim: no DKIM signing configured" in res.stdout and "newsletter dkim keygen" in res.stdout


def test_alignment_fails_when_neither_domain_matches_from(tmp_path, monkeypatch, key, dns):
    dns.zone[("other-sender.example.net", "TXT")] = ["v=spf1 ip4:192.0.2.0/24 -all"]
    dns.zone[("nl2026._domainkey.other-sender.example.net", "TXT")] = [
        DkimKey("nl2026", "rsa-sha256", key).public_record()]
    cli = _project(tmp_path, monkeypatch, key, replace={
        '# bounce_address = "bounces@news.example.jp"': 'bounce_address = "bounces@other-sender.example.net"'})
    text = cli.config_path.read_text().replace('[dkim]\n', '[dkim]\ndomain = "other-sender.example.net"\n')
    cli.config_path.write_text(text)
    verdicts = _verdicts(cli, dns)
    assert verdicts["spf"] is True and verdicts["dkim"] is True
    assert verdicts["alignment"] is False


def test_http_providers_are_checked_by_their_spf_include(tmp_path, monkeypatch, key, dns):
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")
    dns.zone[(DOMAIN, "TXT")] = ["v=spf1 include:_spf.news.example.jp ~all"]
    dns.zone[("_spf.news.example.jp", "TXT")] = ["v=spf1 include:sendgrid.net -all"]
    cli = _project(tmp_path, monkeypatch, key, dkim=False, provider='[provider]\nkind = "sendgrid"\n')
    verdicts = _verdicts(cli, dns)
    assert verdicts["spf"] is True
    assert verdicts["dkim"] is None  # SendGrid signs with its own domain authentication: said, not judged
    dns.zone[("_spf.news.example.jp", "TXT")] = ["v=spf1 include:mailgun.org -all"]
    assert _verdicts(cli, dns)["spf"] is False


def test_organisational_domains_of_japanese_public_bodies():
    assert org_domain("news.example.jp") == "example.jp"
    assert org_domain("mail.city.chiyoda.lg.jp") == "chiyoda.lg.jp"
    assert org_domain("www.soumu.go.jp") == "soumu.go.jp"


def test_offline_says_so_instead_of_failing(tmp_path, monkeypatch, key):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing answers here once the socket is closed
    cli = _project(tmp_path, monkeypatch, key)
    res = cli("doctor", "--nameserver", f"127.0.0.1:{port}", "--timeout", "0.5")
    assert res.exit_code == 0
    assert "? dns: DNS に到達できないため確認できません（オフライン）" in res.stdout
    assert "✗" not in res.stdout


def test_preflight_errors_for_a_large_gmail_audience_without_dmarc(tmp_path, monkeypatch, key, dns):
    from newsletter import doctor
    from newsletter.store import open_engine
    from newsletter.store import subscribers as sq

    del dns.zone[(f"_dmarc.{DOMAIN}", "TXT")]
    cli = _project(tmp_path, monkeypatch, key)
    cli("init")
    monkeypatch.setattr(doctor, "_ONLINE", {})
    monkeypatch.setattr(doctor.DNS, "__init__", _pointing_at(dns, doctor.DNS.__init__))
    cli("article", "add", "--field", "education", "--title", "教育の記事", "--url", "https://news.example.jp/e/1")
    engine = open_engine(load_config(cli.config_path).storage_url)
    with engine.begin() as conn:
        sq.insert_many(conn, [{"email": f"reader{i}@gmail.com", "fields": "education", "format": "html",
                               "status": "active"} for i in range(doctor.BULK_SENDER_THRESHOLD)])
    res = cli("edition", "check", "weekly")
    assert re.search(r"warning +deliverability: DMARC レコードがありません", res.stdout)
    with engine.begin() as conn:
        sq.insert_many(conn, [{"email": "one-more@yahoo.co.jp", "fields": "education", "format": "html",
                               "status": "active"}])
    res = cli("edition", "check", "weekly", ok=False)
    assert res.exit_code == 1
    assert re.search(r"ERROR +deliverability: DMARC レコードがありません", res.stdout) and "5001 readers" in res.stdout
    send = cli("edition", "send", "weekly", ok=False)
    assert send.exit_code == 1 and cli("edition", "list").stdout == ""
    engine.dispose()


def _pointing_at(server, original):
    def init(self, nameservers=(), timeout=3.0):
        original(self, nameservers or [server.address], timeout)

    return init
