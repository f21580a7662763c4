"""Failures you can see and retry, and set-ups that fail before anything starts:
``demo`` runs the preflight of ``edition send``; ``edition failures`` and
``edition retry --failed``; a broken provider stops ``run``, ``demo`` and
``edition send`` with the file and key; a file-outbox write error is a failure
with the OS error and exit 1."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest
from sqlalchemy import select

from newsletter.config import load_config
from newsletter.store import open_engine
from newsletter.store.tables import deliveries, editions
from tests.conftest import CLI, ROOT, write_config

SMPT = '[provider]\nkind = "smpt"\nhost = "smtp.example.jp"\n'
NO_PASSWORD = ('[provider]\nkind = "smtp"\nhost = "smtp.example.jp"\nusername = "magazine"\n'
               'password_env = "NL_TEST_SMTP_PASSWORD_NOT_SET"\n')


def smtp_provider(server) -> str:
    return f'[provider]\nkind = "smtp"\nhost = "{server.host}"\nport = {server.port}\nsecurity = "none"\ntimeout = 10\n'


def load_samples(cli: CLI) -> None:
    cli("subscriber", "import", ROOT / "subscribers" / "sample.csv")
    cli("article", "import", ROOT / "articles" / "sample.json")


def demo_project(folder, provider: str | None = None, storage_url: str = "sqlite:///var/newsletter.db") -> CLI:
    cli = CLI(write_config(folder, storage_url, provider=provider))
    shutil.copytree(ROOT / "subscribers", folder / "subscribers")
    shutil.copytree(ROOT / "articles", folder / "articles")
    return cli


def rows(cli: CLI, table):
    engine = open_engine(load_config(cli.config_path).storage_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(table).order_by(table.c.id)))
    finally:
        engine.dispose()


# -- item 13: demo runs the preflight ---------------------------------------------------


def test_demo_on_a_broken_template_stops_at_the_preflight_and_creates_nothing(tmp_path):
    cli = demo_project(tmp_path / "p")
    # The project's own digest names a variable no edition has.
    (cli.folder / "templates" / "digest.html.j2").write_text("<p>{{ 存在しない変数 }}</p>\n", encoding="utf-8")
    res = cli("demo", ok=False)
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    assert "does not render" in res.stderr and "preflight check found errors" in res.stderr
    assert rows(cli, editions) == [] and rows(cli, deliveries) == []
    assert not (cli.folder / "var" / "outbox").exists()


def test_demo_whose_every_mail_fails_says_so_in_one_line_each_and_exits_1(tmp_path):
    cli = demo_project(tmp_path / "p")
    (cli.folder / "blocker").write_text("ファイルであってフォルダではない", encoding="utf-8")
    config = cli.config_path.read_text(encoding="utf-8").replace('path = "var/outbox"', 'path = "blocker/outbox"')
    cli.config_path.write_text(config, encoding="utf-8")
    res = cli("demo", ok=False)
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    failed = [line for line in res.stderr.splitlines() if line.startswith("  failed: ")]
    assert len(failed) == 12 and all("[Errno 20 ENOTDIR]" in line for line in failed)
    assert "12 failed: 'newsletter edition failures 1' lists them" in res.stderr
    assert {r.status for r in rows(cli, deliveries)} == {"failed"}


# -- item 13: edition failures / edition retry --failed -----------------------------------


@pytest.fixture
def failed_edition(tmp_path, storage_url, smtp_server):
    """第1号 of the samples with three failures: a bad address (5.1.1), a policy
    refusal (5.7.1, retryable) and one whose reader unsubscribes afterwards."""
    cli = CLI(write_config(tmp_path / "project", storage_url, provider=smtp_provider(smtp_server)))
    cli("init")
    load_samples(cli)
    smtp_server.reply_to_rcpt("ito.yui@example.com", "550 5.1.1 <ito.yui@example.com>: 宛先がありません")
    smtp_server.reply_to_rcpt("kato.hiroshi@example.jp", "550 5.7.1 Message refused by policy")
    smtp_server.reply_to_rcpt("sato.hanako@example.jp", "554 5.7.1 Spam suspected")
    res = cli("edition", "send", "weekly", ok=False)
    assert res.exit_code == 1 and "failed 3" in res.stdout
    assert "3 failed: 'newsletter edition failures 1' lists them" in res.stderr
    cli("subscriber", "unsubscribe", "sato.hanako@example.jp")
    smtp_server.clear()
    return cli


def test_edition_failures_lists_address_reason_attempts_and_last_try(failed_edition):
    cli = failed_edition
    out = cli("edition", "failures", "1")
    lines = out.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [
        "ito.yui@example.com", "kato.hiroshi@example.jp", "sato.hanako@example.jp"]
    ito, kato, sato = (line.split("\t") for line in lines)
    assert ito[1] == "550 5.1.1 <ito.yui@example.com>: 宛先がありません" and ito[2] == "attempts 1"
    assert ito[3].endswith(" JST") and ito[4] == "not retryable: bad address (5.1.x)"
    assert kato[1] == "550 5.7.1 Message refused by policy" and kato[4] == "retryable"
    assert sato[4] == "not retryable: subscriber unsubscribed"
    assert "3 failed, 1 retryable" in out.stderr

    data = json.loads(cli("edition", "failures", "1", "--json").stdout)
    assert [d["address"] for d in data] == ["ito.yui@example.com", "kato.hiroshi@example.jp", "sato.hanako@example.jp"]
    assert [d["retryable"] for d in data] == [False, True, False]
    assert data[0]["reason"].endswith("宛先がありません") and data[1]["attempts"] == 1
    last_try = datetime.fromisoformat(data[1]["last_try"])
    assert last_try.utcoffset().total_seconds() == 9 * 3600


def test_retry_failed_sends_only_the_retryable_ones_again(failed_edition, smtp_server):
    cli = failed_edition
    before = {r.email: (r.status, r.attempts) for r in rows(cli, deliveries)}
    dry = cli("edition", "retry", "1", "--failed", "--dry-run").stdout
    assert "1 failed deliveries would go back to pending" in dry and "nothing changed" in dry
    assert "1 bad address (5.1.x)" in dry and "1 subscriber unsubscribed" in dry
    assert {r.email: (r.status, r.attempts) for r in rows(cli, deliveries)} == before
    assert rows(cli, editions)[0].status == "done"

    out = cli("edition", "retry", "1", "--failed").stdout
    assert "1 failed deliveries back to pending" in out
    assert rows(cli, editions)[0].status == "sending"
    reopened = cli("edition", "history", "1").stdout.splitlines()[-1].split("\t")
    assert reopened[2] == "cli" and reopened[3].startswith("reopened  1 failed deliveries put back to pending")
    sent = cli("edition", "send", "--edition", "1").stdout
    assert "this run sent 1, failed 0" in sent
    assert [list(m.rcpt_tos) for m in smtp_server.messages] == [["kato.hiroshi@example.jp"]]
    after = {r.email: r for r in rows(cli, deliveries)}
    assert after["kato.hiroshi@example.jp"].status == "sent" and after["kato.hiroshi@example.jp"].attempts == 2
    assert after["ito.yui@example.com"].status == "failed" and after["sato.hanako@example.jp"].status == "failed"
    assert rows(cli, editions)[0].status == "done"
    again = cli("edition", "retry", "1", "--failed").stdout
    assert "0 failed deliveries back to pending" in again and rows(cli, editions)[0].status == "done"


def test_retry_needs_failed_and_refuses_a_cancelled_edition(failed_edition):
    cli = failed_edition
    assert cli("edition", "retry", "1", ok=False).exit_code == 2
    engine = open_engine(load_config(cli.config_path).storage_url)
    with engine.begin() as conn:
        conn.execute(editions.update().values(status="cancelled"))
    engine.dispose()
    res = cli("edition", "retry", "1", "--failed", ok=False)
    assert res.exit_code == 1 and "cancelled" in res.stderr
    assert [r.status for r in rows(cli, deliveries) if r.email == "kato.hiroshi@example.jp"] == ["failed"]


# -- item 14: a broken provider fails before anything starts ------------------------------


@pytest.mark.parametrize(("provider", "key"), [(SMPT, "provider.kind"), (NO_PASSWORD, "provider.password_env")])
def test_edition_send_and_demo_refuse_a_broken_provider_naming_file_and_key(tmp_path, provider, key, monkeypatch):
    monkeypatch.delenv("NL_TEST_SMTP_PASSWORD_NOT_SET", raising=False)
    cli = demo_project(tmp_path / "p", provider=provider)
    res = cli("demo", ok=False)
    assert res.exit_code == 1
    [line] = res.stderr.strip().splitlines()
    assert line.startswith(f"error: config.toml: {key}: ")
    assert not (cli.folder / "var").exists()  # not even the database

    cli("init")
    load_samples(cli)
    res = cli("edition", "send", "weekly", ok=False)
    assert res.exit_code == 1 and res.stderr.strip().startswith(f"error: config.toml: {key}: ")
    assert rows(cli, editions) == []


@pytest.mark.parametrize(("provider", "key"), [(SMPT, "provider.kind"), (NO_PASSWORD, "provider.password_env")])
def test_run_refuses_to_start_with_a_broken_provider(tmp_path, provider, key):
    cli = CLI(write_config(tmp_path / "p", f"sqlite:///{tmp_path / 'p' / 'db.sqlite'}", provider=provider))
    cli("init")
    env = {k: v for k, v in __import__("os").environ.items() if k != "NL_TEST_SMTP_PASSWORD_NOT_SET"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "--config", str(cli.config_path), "run",
                             "--poll", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # today's code: it starts happily and waits for a slot
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"newsletter run started with a broken provider:\n{err}")
    assert proc.returncode == 1
    assert err.strip().splitlines() == [err.strip().splitlines()[0]]
    assert err.startswith(f"error: config.toml: {key}: ") and "Traceback" not in err


# -- the file outbox: a write error is a failure with the OS error ------------------------


def test_file_outbox_write_error_fails_each_message_with_the_os_error_and_exit_1(tmp_path):
    cli = CLI(write_config(tmp_path / "p", f"sqlite:///{tmp_path / 'p' / 'db.sqlite'}",
                           provider='[provider]\nkind = "file"\npath = "受信箱.txt/outbox"\n'))
    (cli.folder / "受信箱.txt").write_text("a file where the outbox folder should be", encoding="utf-8")
    cli("init")
    load_samples(cli)
    res = cli("edition", "send", "weekly", ok=False)
    assert res.exit_code == 1 and "failed 12" in res.stdout
    failed = [line for line in res.stderr.splitlines() if line.startswith("  failed: ")]
    assert len(failed) == 12
    assert all("Not a directory [Errno 20 ENOTDIR]" in line and "受信箱.txt/outbox" in line for line in failed)
    assert {(r.status, r.next_attempt_at) for r in rows(cli, deliveries)} == {("failed", None)}
    # After the fix, the failures go back and out.
    (cli.folder / "受信箱.txt").unlink()
    assert "12 failed deliveries back to pending" in cli("edition", "retry", "1", "--failed").stdout
    assert "this run sent 12, failed 0" in cli("edition", "send", "--edition", "1").stdout
    assert len(list((cli.folder / "受信箱.txt" / "outbox").glob("*.eml"))) == 12
