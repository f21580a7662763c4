"""Limits shared by several processes (delivery.py ``_quota_room``, workers.py):

- ``hourly_quota``/``daily_quota`` count what every process has claimed and not yet
  recorded as used, and counting and claiming is one step under the ``quota`` row's
  lock: three worker processes on one database, with a slow SMTP server so that their
  claims overlap, never send more than the quota together.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest
from sqlalchemy import select

from newsletter.store.tables import deliveries, editions
from tests.conftest import ROOT
from tests.test_daemon import Sink, wait_until
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


# -- one registry of processes: migration 0014 drops ``daemons`` -----------------------------


def test_upgrading_from_0011_with_rows_present_drops_daemons_and_keeps_the_rest(storage_url):
    from datetime import timedelta

    from alembic import command
    from sqlalchemy import column, inspect, insert, table

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
