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
