"""Limits shared by several processes (delivery.py ``_quota_room``, workers.py):

- ``hourly_quota``/``daily_quota`` count what every process has claimed and not yet
  recorded as used, and counting and claiming is one step under the ``quota`` row's
  lock: three worker processes on one database, with a slow SMTP server so that their
  claims overlap, never send more than the quota together.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest
from sqlalchemy import select

from newsletter.store.tables import deliveries, editions
from tests.conftest import ROOT
from tests.test_daemon import Sink, wait_until
from tests.test_delivery_safety import setup as setup  # noqa: PLC0414 - the fixture, by its name
from tests.test_workers import Cluster

QUOTA = 45  # not a multiple of a chunk: the last claim must be cut to fit


@pytest.fixture
def slow_cluster(tmp_path, storage_url):
    made: list[Cluster] = []
    # Each message takes 0.2 s at the server: a chunk of 10 is at the provider for 2 s,
    # long enough for every other process to claim meanwhile.
    sink = Sink(tmp_path, delay=0.2)

    def factory(subscribers: int, extra: str) -> Cluster:
        c = Cluster(tmp_path, storage_url, sink.port, subscribers, "1000/s", extra)
        made.append(c)
        return c
    yield factory, sink
    for c in made:
        c.close()
    sink.stop()


@pytest.mark.slow
@pytest.mark.parametrize("storage_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_three_workers_together_never_send_more_than_the_hourly_quota(storage_url, slow_cluster):
    factory, sink = slow_cluster
    cluster = factory(150, f"hourly_quota = {QUOTA}\n")
    workers = [cluster.start("worker", f"worker{i}") for i in range(3)]
    for p in workers:
        wait_until(lambda p=p: p.has("daemon.started"), 60, "every worker to start", p.proc)
    cluster.cli("edition", "send", "weekly", "--detach")
    # Every worker takes its turn and stops at the quota (the edition waits for the window).
    for p in workers:
        wait_until(lambda p=p: p.has("delivery.waiting"), 60, "every worker to reach the quota", p.proc)

    def leased() -> int:
        with cluster.engine.connect() as conn:
            return len(conn.execute(select(deliveries.c.id).where(deliveries.c.lease_until.is_not(None),
                                                                  deliveries.c.status == "pending")).all())
    wait_until(lambda: leased() == 0, 30, "what was in flight to be recorded")
    received = Counter(sink.received())
    statuses = cluster.statuses()
    print(f"3 workers, hourly_quota {QUOTA}: {sum(received.values())} received, {statuses['sent']} recorded sent")
    assert sum(received.values()) <= QUOTA, (sum(received.values()), statuses)
    assert statuses["sent"] == QUOTA == sum(received.values())  # the quota is used, not wasted
    assert max(received.values()) == 1
    busy = [p for p in workers if any(e.get("event") == "delivery.started" for e in p.events())]
    assert len(busy) == 3
    waiting = workers[0].has("delivery.waiting")
    assert "quota reached" in waiting["msg"]
    with cluster.engine.connect() as conn:
        status, note = conn.execute(select(editions.c.status, editions.c.note)).one()
    assert status == "sending" and note.startswith(f"quota of {QUOTA} per hour reached; resumes after ")
    assert f"(quota of {QUOTA} per hour reached" in cluster.cli("status").stdout
    for p in workers:
        p.proc.send_signal(signal.SIGTERM)
        assert p.wait() == 0, p.log.read_text(encoding="utf-8")[-3000:]


# -- one registry of processes: migration 0013 drops ``daemons`` -----------------------------


def test_upgrading_from_0011_with_rows_present_drops_daemons_and_keeps_the_rest(storage_url):
    from datetime import timedelta

    from alembic import command
    from sqlalchemy import column, insert, inspect, table

    from newsletter.store import _alembic_config, make_engine, schema_head, schema_revision, upgrade
    from newsletter.store.tables import UTCDateTime, utcnow

    engine = make_engine(storage_url)
    now = utcnow()
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0011")
    # Only the columns that existed at 0011, named here: later migrations may add others.
    daemons = table("daemons", column("id"), column("host"), column("pid"), column("started_at", UTCDateTime),
                    column("seen_at", UTCDateTime))
    old_editions = table("editions", column("id"), column("publication"), column("number"), column("status"),
                         column("created_at", UTCDateTime), column("content"))
    old_events = table("stats_events", column("edition_id"), column("kind"), column("machine"),
                       column("via_proxy"), column("source"), column("at", UTCDateTime))
    old_deliveries = table("deliveries", column("edition_id"), column("email"), column("variant"),
                           column("status"), column("attempts"), column("created_at", UTCDateTime),
                           column("updated_at", UTCDateTime), column("lease_until", UTCDateTime),
                           column("claim_token"))
    with engine.begin() as conn:
        conn.execute(insert(daemons).values(id="kancho:4242:1", host="kancho", pid=4242, started_at=now,
                                            seen_at=now))
        conn.execute(insert(old_editions).values(id=1, publication="weekly", number=1, status="sending",
                                                 created_at=now, content="{}"))
        conn.execute(insert(old_events), [
            {"edition_id": 1, "kind": "click", "machine": False, "via_proxy": False, "source": "web", "at": now},
            {"edition_id": 1, "kind": "open", "machine": True, "via_proxy": False, "source": "sendgrid", "at": now}])
        conn.execute(insert(old_deliveries).values(edition_id=1, email="yamada@example.jp", variant="v",
                                                   status="pending", attempts=0, created_at=now, updated_at=now,
                                                   lease_until=now + timedelta(minutes=5), claim_token="t" * 32))
    upgrade(engine)
    assert schema_revision(engine) == schema_head()
    names = inspect(engine).get_table_names()
    assert "daemons" not in names and "workers" in names
    assert "ix_deliveries_lease_until" in {i["name"] for i in inspect(engine).get_indexes("deliveries")}
    from newsletter.store import editions as q
    from newsletter.store.tables import stats_events

    with engine.connect() as conn:
        events = conn.execute(select(stats_events.c.source, stats_events.c.kind, stats_events.c.event_id)
                              .order_by(stats_events.c.id)).all()
        assert [tuple(e) for e in events] == [("web", "click", None), ("sendgrid", "open", None)]
        assert q.claimed_now(conn, now) == 1  # the live claim counts against a quota
    engine.dispose()


def test_status_schedule_list_and_run_now_read_the_one_registry(project):
    from datetime import timedelta

    from sqlalchemy import update

    from newsletter import __version__
    from newsletter.config import load_config
    from newsletter.store import open_engine
    from newsletter.store.tables import utcnow, workers
    from newsletter.workers import Registry, SchedulerLease

    engine = open_engine(load_config(project.config_path).storage_url)
    assert "daemon:   not running" in project("status").stdout
    assert "scheduler: none (no 'newsletter run' is running" in project("schedule", "list").stdout
    now = utcnow()
    run = Registry(engine, "run", 30, started_at=now - timedelta(minutes=5))
    worker = Registry(engine, "worker", 30, started_at=now - timedelta(minutes=4))
    gone = Registry(engine, "worker", 30, started_at=now - timedelta(minutes=3))
    for r in (run, worker, gone):
        r.beat()
    assert SchedulerLease(engine, run.id, 30).hold()
    worker.state = "draining"
    worker.beat()
    with engine.begin() as conn:  # killed -9 a minute ago: its heartbeat is older than its lease
        conn.execute(update(workers).where(workers.c.id == gone.id).values(seen_at=now - timedelta(minutes=1)))
    out = project("status").stdout
    summary = out.splitlines()[0]
    assert summary.startswith(f"daemon:   1 running, 1 draining; scheduler: {run.host} pid {run.pid} since ")
    lines = out.split("workers:\n")[1].split("\n\n")[0].splitlines()
    assert len(lines) == 3
    assert [line.split("\t")[2:4] for line in lines] == [["run (scheduler)", "running"], ["worker", "draining"],
                                                         ["worker", "LOST"]]
    assert all(f"\tv{__version__}\tsince " in line and line.rstrip().endswith("s ago") for line in lines)
    assert "seen 60s ago" in lines[2] or "seen 61s ago" in lines[2]
    assert project("schedule", "list").stdout.splitlines()[-1].startswith(f"scheduler: {run.host} pid {run.pid}")
    project("article", "import", ROOT / "articles" / "sample.json")
    project("subscriber", "add", "yamada@example.jp", "--fields", "education")
    out = project("schedule", "run-now", "weekly").stdout
    assert f"the running daemon ({run.host}, pid {run.pid}, run) sends it within seconds" in out
    engine.dispose()


# -- the daemon runs the preflight check before an edition starts sending --------------------


@pytest.fixture
def daemon_project(tmp_path):
    from tests.test_daemon import Project

    sink = Sink(tmp_path)
    project = Project(tmp_path, sink.port, 30, rate="500/s")
    started: list = []
    yield project, sink, started
    for d in started:
        d.kill()
    sink.stop()
    project.engine.dispose()


def approve_unchecked(engine, config_path, digest: str) -> None:
    """An approval without the preflight that ``edition approve`` and the console now run
    first (preflight.approve): one given by an older release, or before the data went bad.
    The daemon's own check is what stands between it and the readers."""
    from newsletter.config import load_config
    from newsletter.editions import state
    from newsletter.users import Actor

    state.approve(engine, load_config(config_path), 1, Actor(None), digest)


def test_the_daemon_holds_back_a_scheduled_edition_that_fails_preflight_and_sends_it_once_fixed(daemon_project):
    from datetime import timedelta

    from sqlalchemy import update

    from newsletter.store import audit as audit_q
    from newsletter.store.tables import articles, utcnow

    project, sink, started = daemon_project
    cli = project.cli
    # Stored before input was checked (or by hand): a URL with a control character cannot render.
    with project.engine.begin() as conn:
        article_id = conn.execute(select(articles.c.id).order_by(articles.c.id)).scalars().first()
        good_url = conn.execute(select(articles.c.url).where(articles.c.id == article_id)).scalar()
        conn.execute(update(articles).where(articles.c.id == article_id).values(url=good_url + "\x01"))

    def approve_and_schedule(checked: bool = True) -> None:
        with project.engine.connect() as conn:
            digest = conn.execute(select(editions.c.content_hash)).scalar()
        if checked:
            cli("edition", "approve", "1", "--hash", digest)
        else:
            approve_unchecked(project.engine, cli.config_path, digest)
        cli("edition", "schedule", "1", "--at", (utcnow() + timedelta(seconds=2)).isoformat(timespec="seconds"))

    cli("edition", "create", "weekly")
    approve_and_schedule(checked=False)
    daemon = project.start("daemon")
    started.append(daemon)
    held = daemon.wait_for("edition.held_back", 30)
    assert held["edition"] == 1 and held["level"] == "ERROR"
    assert "the preflight check found " in held["msg"] and f"article {article_id} " in held["msg"]
    time.sleep(1.5)  # polls go by: nothing is sent, and the edition is not tried again and again
    assert sink.received() == []
    with project.engine.connect() as conn:
        row = conn.execute(select(editions)).one()
        assert conn.execute(select(deliveries)).first() is None
        history = [(a.action, a.actor, a.interface) for a in audit_q.for_edition(conn, 1)]
    assert (row.status, row.scheduled_for) == ("approved", None)
    assert row.note.startswith("not sent at its time ") and "cannot render" in row.note
    assert history.count(("held back", None, "daemon")) == 1 and ("sending", None, "daemon") not in history
    assert daemon.events().count(held) == 1
    status = cli("status").stdout
    assert "held back (not sent; fix, then send or schedule again):" in status
    assert "weekly 第1号\tapproved\tnot sent at its time" in status

    # The operator fixes the article (the edition goes back to draft), approves and schedules it again.
    cli("article", "edit", str(article_id), "--url", good_url)
    with project.engine.connect() as conn:
        assert conn.execute(select(editions.c.status)).scalar() == "draft"
    approve_and_schedule()
    daemon.wait_for("delivery.finished", 60)
    assert sorted(sink.received()) == sorted(project.emails)
    assert project.edition_status() == "done"
    assert "held back" not in cli("status").stdout
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_at_a_slot_an_edition_that_fails_preflight_is_neither_created_nor_sent(tmp_path):
    from datetime import UTC, datetime

    from sqlalchemy import update

    from newsletter.store import audit as audit_q
    from newsletter.store.tables import articles
    from tests.test_scheduling import Bench

    b = Bench(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}")
    b.add_article()
    with b.engine.begin() as conn:
        conn.execute(update(articles).values(title="記事\x1b 1"))
    core = b.core()
    core.tick(datetime(2026, 5, 11, tzinfo=UTC))
    # approval = "none": the slot would create an edition from the queue and send it at once.
    [run] = core.tick(datetime(2026, 5, 12, 0, 0, 1, tzinfo=UTC))  # Tue 09:00 JST
    assert run.outcome == "skipped" and run.reason.startswith("no edition created: the preflight check found ")
    assert b.editions() == []
    assert b.state().last_result == run.describe() and "title has a control character" in run.describe()
    with b.engine.connect() as conn:
        [entry] = audit_q.search(conn, action="not created")
    assert (entry.publication, entry.edition_id, entry.interface) == ("weekly", None, "daemon")
    assert "title has a control character" in entry.detail

    # An approved edition at a slot: not sent, kept approved with why, for a person to fix.
    b.cli("edition", "create", "weekly")
    with b.engine.connect() as conn:
        digest = conn.execute(select(editions.c.content_hash)).scalar()
    approve_unchecked(b.engine, b.cli.config_path, digest)
    [run] = core.tick(datetime(2026, 5, 19, 0, 0, 1, tzinfo=UTC))
    assert run.outcome == "skipped" and run.reason.startswith("第1号 not sent: the preflight check found ")
    with b.engine.connect() as conn:
        row = conn.execute(select(editions)).one()
        assert conn.execute(select(deliveries)).first() is None
        actions = [a.action for a in audit_q.for_edition(conn, row.id)]
    assert row.status == "approved" and row.note.startswith("not sent at the slot 2026-05-19 09:00 JST: ")
    assert "held back" in actions and "sending" not in actions
    assert "held back (not sent" in b.cli("status").stdout
    b.engine.dispose()


# -- small fixes: numbers written by someone else are ASCII digits --------------------------------


@pytest.mark.parametrize(("expr", "message"), [
    ("0 9 * * ²", "invalid day of week '²' in '0 9 * * ²'"),
    ("0 9 * * 1-5/²", "invalid step '²' in '0 9 * * 1-5/²'"),
])
def test_a_cron_field_of_superscript_digits_is_named_as_invalid(expr, message):
    from newsletter.cron import cron_trigger

    with pytest.raises(ValueError) as caught:
        cron_trigger(expr, "Asia/Tokyo")
    assert str(caught.value) == message


# -- small fixes: a provider's webhook retry of a reading event is stored once --------------------


@pytest.mark.parametrize("mode", ["per-subscriber", "aggregate"])
def test_webhook_retries_of_the_same_reading_event_are_stored_once(tmp_path, storage_url, monkeypatch, mode):
    import base64
    import hashlib
    import hmac
    import json
    import time as clock

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from newsletter.store.tables import stats_events
    from tests.test_stats import BROWSER, READER_IP, Sent

    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    monkeypatch.setenv("MG_SIGNING_KEY", "mailgun-signing-key-123")
    monkeypatch.setenv("PM_WEBHOOK_PASSWORD", "pw")
    s = Sent(tmp_path, storage_url, mode, extra=f"""
[web.webhooks]
sendgrid_public_key = "{public}"
mailgun_signing_key_env = "MG_SIGNING_KEY"
postmark_username = "postmark"
postmark_password_env = "PM_WEBHOOK_PASSWORD"
""")
    with s.engine.connect() as conn:
        ids = dict(conn.execute(select(deliveries.c.email, deliveries.c.id)).all())
    now = int(clock.time())
    yamada, sato = str(ids["yamada@example.jp"]), str(ids["sato@example.jp"])

    def sendgrid(events: list[dict]) -> None:
        body = json.dumps(events).encode()
        sig = base64.b64encode(key.sign(str(now).encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
        res = s.client.post("/webhooks/sendgrid", content=body, headers={
            "Content-Type": "application/json", "X-Twilio-Email-Event-Webhook-Signature": sig,
            "X-Twilio-Email-Event-Webhook-Timestamp": str(now)})
        assert res.status_code == 200, res.text

    def mailgun(event_id: str) -> None:
        token = f"tok-{event_id}"
        assert s.client.post("/webhooks/mailgun", json={
            "signature": {"timestamp": str(now), "token": token, "signature": hmac.new(
                b"mailgun-signing-key-123", f"{now}{token}".encode(), hashlib.sha256).hexdigest()},
            "event-data": {"event": "opened", "recipient": "sato@example.jp", "id": event_id, "timestamp": now,
                           "ip": READER_IP, "client-info": {"user-agent": BROWSER},
                           "user-variables": {"nl-delivery-id": sato}}}).status_code == 200

    def postmark(record: str, at: str, link: str | None = None) -> None:
        auth = base64.b64encode(b"postmark:pw").decode()
        body = {"RecordType": record, "Recipient": "sato@example.jp", "MessageID": "pm-1", "ReceivedAt": at,
                "UserAgent": BROWSER, "Metadata": {"nl_delivery_id": sato}}
        if link:
            body["OriginalLink"] = link
        assert s.client.post("/webhooks/postmark", json=body,
                             headers={"Authorization": f"Basic {auth}"}).status_code == 200

    open_event = {"email": "yamada@example.jp", "event": "open", "sg_event_id": "sg-open-1", "timestamp": now,
                  "useragent": BROWSER, "ip": READER_IP, "nl_delivery_id": yamada}
    click_event = {"email": "yamada@example.jp", "event": "click", "sg_event_id": "sg-click-1", "timestamp": now,
                   "url": "https://news.example.jp/articles/1", "useragent": BROWSER, "ip": READER_IP,
                   "nl_delivery_id": yamada}
    sendgrid([open_event, click_event, open_event])  # the same event twice in one batch, too
    mailgun("mg-1")
    postmark("Open", "2026-11-27T04:00:00.1234567Z")
    postmark("Click", "2026-11-27T04:00:05.0000001Z", "https://news.example.jp/articles/2")
    first = sorted((e.source, e.kind) for e in s.events())
    assert first == [("mailgun", "open"), ("postmark", "click"), ("postmark", "open"), ("sendgrid", "click"),
                     ("sendgrid", "open")]
    # The providers retry (a timeout on their side, a 5xx from a proxy): the same events again.
    sendgrid([open_event, click_event])
    mailgun("mg-1")
    postmark("Open", "2026-11-27T04:00:00.1234567Z")
    postmark("Click", "2026-11-27T04:00:05.0000001Z", "https://news.example.jp/articles/2")
    assert sorted((e.source, e.kind) for e in s.events()) == first
    # Real new events of the same messages are new rows: a second open, another link at the same instant.
    sendgrid([dict(open_event, sg_event_id="sg-open-2")])
    mailgun("mg-2")
    postmark("Open", "2026-11-27T04:10:00.5Z")
    postmark("Click", "2026-11-27T04:00:05.0000001Z", "https://news.example.jp/articles/1")
    assert len(s.events()) == len(first) + 4
    assert Counter(e.kind for e in s.events()) == {"open": 6, "click": 3}
    with s.engine.connect() as conn:
        kept = conn.execute(select(stats_events.c.event_id)).scalars().all()
    # Keyed: no provider id (Postmark's names the message) is stored as it came.
    assert len(set(kept)) == len(kept) and all(len(k) == 32 and "pm-1" not in k for k in kept)
    s.engine.dispose()


def test_a_quota_with_shared_domain_buckets_counts_and_claims_without_locking_itself_out(setup, smtp_server):
    # The quota lock is taken first in the claim's transaction; a shared domain bucket
    # asks the database for tokens on a connection of its own, before that (on SQLite
    # the other way round would wait for its own process's write lock).
    s = setup(max_batch=5, extra='connections = 1\nhourly_quota = 12\nlease_seconds = 30\n'
                                 '[[provider.domain_limits]]\ndomains = ["docomo.ne.jp"]\nrate = "100/s"')
    s.subscribe(*[f"keitai{i:02d}@docomo.ne.jp" for i in range(10)], *[f"pc{i:02d}@example.jp" for i in range(10)])
    edition = s.edition()
    report = s.send(edition, shared=True)
    assert report.sent == 12 and report.waiting_for == "quota reached" and not report.finished
    assert len(s.received()) == 12


def test_run_now_of_an_edition_that_fails_preflight_is_one_line_and_creates_nothing(project):
    from sqlalchemy import update

    from newsletter.config import load_config
    from newsletter.store import open_engine
    from newsletter.store.tables import articles

    project("article", "add", "--field", "行政", "--title", "庁舎の休館日", "--url",
            "https://www.city.asagiri.example.jp/kyukan")
    project("subscriber", "add", "sato@example.jp")
    engine = open_engine(load_config(project.config_path).storage_url)
    with engine.begin() as conn:
        conn.execute(update(articles).values(url="https://www.city.asagiri.example.jp/kyu\x01kan"))
    result = project("schedule", "run-now", "weekly", ok=False)
    assert result.exit_code == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: weekly: slot skipped: no edition created: the preflight check found ")
    with engine.connect() as conn:
        assert conn.execute(select(editions)).first() is None
    engine.dispose()
