"""The delivery engine's safety rules under the faults of issue 11, against the real
SMTP test server (and, for throttles, the HTTP contract servers):

- fenced results: a row cancelled while its message is in flight stays cancelled;
- lease renewal: slow DATA replies make a chunk outlive its lease, and a second run
  on the same edition must still not send anyone twice;
- a forward clock step: no lapsed claim is handed to the provider;
- provider-wide throttles (SMTP 421, HTTP 429) and server errors pause the run
  instead of deferring the list; a long throttle stops it and says until when;
- the rate limit keeps going until nothing is due, on a monotonic clock.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter import subscribers as subs
from newsletter.config import load_config
from newsletter.delivery import deliver
from newsletter.errors import ConfigError
from newsletter.providers import load_provider
from newsletter.store import open_engine
from newsletter.store.tables import deliveries, editions
from tests.conftest import CLI, write_config
from tests.test_delivery import FakeClock, Setup, addresses
from tests.test_http_providers import running


def smtp_table(server, *, timeout: float = 5, max_batch: int = 5, extra: str = "") -> str:
    return (f'[provider]\nkind = "smtp"\nhost = "{server.host}"\nport = {server.port}\n'
            f'timeout = {timeout}\nmax_batch = {max_batch}\n{extra}\n')


@pytest.fixture
def setup(tmp_path, storage_url, smtp_server):
    def factory(**kw) -> Setup:
        cli = CLI(write_config(tmp_path / "p", storage_url, provider=smtp_table(smtp_server, **kw)))
        cli("init")
        return Setup(cli, smtp_server)
    return factory


def run_in_thread(target, *args, **kw):
    box: dict = {}

    def body():
        try:
            box["report"] = target(*args, **kw)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc
    thread = threading.Thread(target=body, daemon=True)
    thread.start()

    def join():
        thread.join(timeout=60)
        assert not thread.is_alive(), "the run did not finish"
        if "error" in box:
            raise box["error"]
        return box["report"]
    return join


def send_with(s: Setup, edition: int, clock=None, **kw):
    """A second, independent run: its own engine (connections) and provider."""
    engine = open_engine(s.config.storage_url)
    try:
        if clock is not None:
            kw.update(clock=clock, sleep=clock.sleep, monotonic=clock.monotonic)
        return deliver(engine, s.config, edition, **kw)
    finally:
        engine.dispose()


def wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


# --------------------------------------------------------------------------- fencing (items 2, 4)


@pytest.mark.parametrize("answer", ["250", "451 4.3.0 Temporary local problem"])
def test_a_row_unsubscribed_while_its_message_is_in_flight_stays_cancelled(setup, smtp_server, answer):
    s = setup()
    s.subscribe("sato@example.jp", "suzuki@example.jp", "takahashi@example.jp")
    edition = s.edition()
    held = smtp_server.hold("suzuki@example.jp")
    if answer != "250":
        smtp_server.reply_to_data("suzuki@example.jp", answer)
    join = run_in_thread(s.send, edition)
    assert held.reached.wait(10)
    # The reader unsubscribes (CLI, one-click and webhooks all end here) while the server holds the mail.
    assert subs.set_status(s.engine, "suzuki@example.jp", "unsubscribed", source="web")[1] == 1
    held.release()
    report = join()
    row = s.rows()["suzuki@example.jp"]
    assert row.status == "cancelled" and row.attempts == 0  # neither 'sent' nor revived to 'pending'
    assert report.lost_lease == 1 and report.sent == 2 and report.finished
    s.clock.advance(hours=1)
    assert s.send(edition).sent == 0
    got = Counter(s.received())
    assert got["suzuki@example.jp"] == (1 if answer == "250" else 0)  # only the one already in flight
    assert got["sato@example.jp"] == got["takahashi@example.jp"] == 1


# --------------------------------------------------------------------------- lease renewal (item 4)


def test_slow_data_replies_outlive_the_lease_and_a_second_run_sends_nobody_twice(setup, smtp_server):
    """Real time: a 4-second lease and DATA replies a second late.  The first chunk
    takes about 4 s and the second 3 s, so the chunk queued behind the first outlives
    its lease at the server unless it is renewed; a second run polling the same
    edition meanwhile must find nothing of the first's."""
    s = setup(extra="lease_seconds = 4")
    people = addresses(20)
    s.subscribe(*people)
    for a in people[1:5] + people[6:9]:
        smtp_server.stall_on("data_after", a, 1.0)
    edition = s.edition()
    first = run_in_thread(send_with, s, edition)
    second_sent = 0
    time.sleep(0.3)
    while True:
        report = send_with(s, edition)
        second_sent += report.sent
        if report.finished or report.sent == 0 and _pending(s) == 0:
            break
        time.sleep(0.1)
    first_report = first()
    got = Counter(s.received())
    assert set(got) == set(people) and set(got.values()) == {1}, got  # each reader exactly once
    assert first_report.lost_lease == 0
    assert first_report.sent + second_sent == 20
    assert {r.status for r in s.rows().values()} == {"sent"}


def _pending(s: Setup) -> int:
    return sum(1 for r in s.rows().values() if r.status == "pending")


# --------------------------------------------------------------------------- clock steps (item 4)


def test_a_forward_clock_step_never_hands_over_a_lapsed_claim(setup, smtp_server):
    s = setup()
    s.subscribe(*addresses(15))
    edition = s.edition()
    provider = load_provider(s.config.provider.kind, s.config.provider.options, s.config.base_dir)
    inner = provider.send
    lapsed: list[int] = []
    calls = [0]

    def send(batch):
        with s.engine.connect() as conn:
            leases = dict(conn.execute(select(deliveries.c.id, deliveries.c.lease_until)
                                       .where(deliveries.c.id.in_([m.delivery_id for m in batch]))).all())
        lapsed.extend(i for i, until in leases.items() if until is None or until <= s.clock())
        results = inner(batch)
        calls[0] += 1
        if calls[0] == 1:
            s.clock.step(minutes=10)  # NTP corrects the clock: every lease taken before has lapsed
        return results

    provider.send = send
    report = deliver(s.engine, s.config, edition, opener=lambda: provider, clock=s.clock, sleep=s.clock.sleep,
                     monotonic=s.clock.monotonic)  # one connection: the engine opens (and closes) this one
    assert lapsed == []
    assert report.finished and sorted(s.received()) == sorted(addresses(15))


def test_a_forward_clock_step_mid_send_and_a_second_run_send_nobody_twice(setup, smtp_server):
    s = setup()
    people = addresses(15)
    s.subscribe(*people)
    edition = s.edition()
    held = smtp_server.hold(people[2])  # chunk 1 is at the server, chunk 2 waits behind it
    first = run_in_thread(s.send, edition)
    assert held.reached.wait(10)
    s.clock.step(minutes=10)  # every lease of the first run has lapsed by the clock

    def reasserted() -> bool:
        with s.engine.connect() as conn:
            leases = conn.execute(select(deliveries.c.lease_until)
                                  .where(deliveries.c.lease_until.is_not(None))).scalars().all()
        return bool(leases) and all(until > s.clock() for until in leases)

    wait_for(reasserted, 5)
    second = send_with(s, edition, clock=s.clock)  # another worker, same clock
    held.release()
    report = first()
    got = Counter(s.received())
    assert set(got) == set(people) and set(got.values()) == {1}, got
    assert report.sent + second.sent == 15


def test_a_backward_clock_step_does_not_stall_a_rate_limited_send(setup, smtp_server):
    s = setup(extra='rate = "10/s"')
    s.subscribe(*addresses(40))
    edition = s.edition()
    s.clock.sleep_limit = 60.0
    steps = []

    def on_batch(report):
        if not steps:
            steps.append(1)
            s.clock.step(hours=-1)

    report = s.send(edition, on_batch=on_batch)
    assert report.finished and report.sent == 40
    assert s.clock.slept < 10  # 40 at 10 a second, not an hour


# --------------------------------------------------------------------------- rate limit (item 6)


def test_a_rate_limited_send_keeps_going_until_nothing_is_due(setup, smtp_server):
    """Real time passes while the engine works (the clock ticks on every reading): the
    bucket refills between the budget check and the wait, which used to end the run."""
    s = setup(max_batch=100, extra='rate = "200/s"\nbatch_size = 100')
    s.clock = FakeClock(datetime.now(UTC), tick=0.0004)
    s.subscribe(*addresses(600))
    report = s.send(s.edition())
    assert report.finished and report.sent == 600
    assert sorted(s.received()) == sorted(addresses(600))


# --------------------------------------------------------------------------- throttles (item 5)


def test_smtp_421_too_many_connections_pauses_and_carries_on(setup, smtp_server):
    s = setup()
    people = addresses(12)
    s.subscribe(*people)
    edition = s.edition()
    smtp_server.refuse_connections(3)
    report = s.send(edition)
    assert report.finished and report.sent == 12 and report.deferred == 0 and report.throttled > 0
    assert s.clock.slept >= 5  # paused (5 s when the server names no window), not deferred for minutes
    rows = s.rows()
    assert {r.attempts for r in rows.values()} == {1}  # a throttle is not a delivery attempt
    assert sorted(s.received()) == sorted(people)


def _http_setup(kit, tmp_path: Path, storage: str, n: int, batch: int):
    cli = CLI(write_config(tmp_path / "p", storage, provider=kit.toml(batch_size=batch, max_batch=batch)))
    cli("init")
    s = Setup(cli, None)
    for i in range(n):
        subs.add(s.engine, s.config, {"email": f"dokusha{i:04d}@example.jp", "fields": "education",
                                      "name": f"読者 {i}", "format": "html" if i % 3 == 0 else "text"})
    return s


@pytest.mark.parametrize("kind", ["sendgrid", "mailgun", "postmark", "ses"])
def test_http_429s_with_a_short_window_pause_and_the_edition_finishes_in_one_run(kind, tmp_path, monkeypatch):
    with running(kind, monkeypatch) as kit:
        s = _http_setup(kit, tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", 300, 50)
        edition = s.edition()
        if kind == "sendgrid":
            kit.server.rate_limit_reset = 2  # X-RateLimit-Reset two seconds ahead, no Retry-After
            kit.server.fail_next(4, 429, after=1)
        else:
            kit.server.fail_next(4, 429, retry_after=2, after=1)
        report = deliver(s.engine, s.config, edition, opener=kit.provider, clock=s.clock, sleep=s.clock.sleep,
                         monotonic=s.clock.monotonic)
        assert kit.server.failures_left() == 0
        assert report.finished and report.sent == 300 and report.deferred == 0 and report.throttled > 0
        assert 4 <= s.clock.slept < 60
        got = Counter(kit.server.recipients())
        assert len(got) == 300 and set(got.values()) == {1}
        assert {r.attempts for r in s.rows().values()} == {1}


@pytest.mark.parametrize("kind", ["sendgrid", "mailgun", "postmark", "ses"])
def test_http_5xx_twice_then_ok_is_sent_in_the_same_run(kind, tmp_path, monkeypatch):
    with running(kind, monkeypatch) as kit:
        s = _http_setup(kit, tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", 20, 10)
        edition = s.edition()
        kit.server.fail_next(2, 503)
        report = deliver(s.engine, s.config, edition, opener=kit.provider, clock=s.clock, sleep=s.clock.sleep,
                         monotonic=s.clock.monotonic)
        assert report.finished and report.sent == 20 and report.deferred == 0
        assert 3 <= s.clock.slept < 10  # 1 s, then 2 s
        assert {r.attempts for r in s.rows().values()} == {1}
        assert sorted(kit.server.recipients()) == sorted(f"dokusha{i:04d}@example.jp" for i in range(20))


def test_http_5xx_that_persists_is_deferred_after_three_quick_retries(tmp_path, monkeypatch):
    with running("postmark", monkeypatch) as kit:
        s = _http_setup(kit, tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", 5, 5)
        edition = s.edition()
        kit.server.fail_next(4, 500)
        report = s.send(edition)
        assert kit.server.requests == 4 and report.deferred == 5 and not report.finished
        assert {r.attempts for r in s.rows().values()} == {1}
        assert 7 <= s.clock.slept < 10  # 1 + 2 + 4


def test_a_long_throttle_stops_the_run_and_says_when_to_resume(tmp_path, monkeypatch):
    with running("sendgrid", monkeypatch) as kit:
        s = _http_setup(kit, tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", 30, 10)
        kit.server.fail_next(1, 429, retry_after=600, after=1)
        s.cli("article", "add", "--field", "education", "--title", "教員の働き方改革、県が新指針",
              "--url", "https://news.example.jp/e/1", "--summary", "概要です。")
        out = s.cli("edition", "send", "weekly")
        assert "the provider throttles sending for 600 s" in out.stdout and "resumes after" in out.stdout
        rows = s.rows()
        sent = [r for r in rows.values() if r.status == "sent"]
        waiting = [r for r in rows.values() if r.status == "pending"]
        assert 0 < len(sent) < 30 and len(sent) + len(waiting) == 30
        assert f"this run sent {len(sent)}, failed 0, deferred 0" in out.stdout
        assert {r.attempts for r in waiting} == {0}  # a throttle is not an attempt
        with s.engine.connect() as conn:
            edition = conn.execute(select(editions)).one()
        assert edition.status == "sending" and "resumes after" in edition.note
        # The throttled rows wait for the window's end (about ten minutes), not for a backoff.
        throttled = [r for r in waiting if r.last_reply and r.last_reply.startswith("429")]
        assert throttled
        for r in throttled:
            assert timedelta(minutes=9) < r.next_attempt_at - datetime.now(UTC) <= timedelta(minutes=10)
        assert len(kit.server.delivered) == len(sent)


def test_max_throttle_wait_is_read_from_the_provider_table(tmp_path):
    storage_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path = write_config(tmp_path / "a", storage_url, extra="", replace={'format = "eml"': 'format = "eml"\n'
                                                                       'max_throttle_wait = "2m"'})
    assert load_config(path).delivery.max_throttle_wait_seconds == 120
    assert "max_throttle_wait" not in load_config(path).provider.options
    path = write_config(tmp_path / "b", storage_url, replace={'format = "eml"': 'format = "eml"\n'
                                                              'max_throttle_wait = "soon"'})
    with pytest.raises(ConfigError, match=r"provider\.max_throttle_wait"):
        load_config(path)
