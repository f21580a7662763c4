"""Many processes on one database (issue 16, newsletter/workers.py):

- a stopping run finishes the chunk at the provider and releases the queued ones at
  once (a fenced UPDATE by its token), so another run need not wait for the lease;
- the named lease: taken only when free or lapsed, renewed only by its holder;
- shared token buckets never grant more than the rate, however many processes ask;
- real processes on PostgreSQL: 3 ``worker`` + 2 ``run`` on one edition, kill -9 of
  a worker and of the scheduler holder mid-send: every subscriber exactly once,
  duplicates bounded by what was in flight, the standby takes the scheduler over;
- the global ``rate`` measured over a run of 3 workers is the configured one (±10 %).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.config import Rate, load_config
from newsletter.store import make_engine, open_engine, upgrade
from newsletter.store import workers as wstore
from newsletter.store.tables import deliveries, editions, shared_limits
from newsletter.subscribers import import_csv
from newsletter.workers import SharedBucket, heartbeat_every, pause_everyone
from tests.conftest import CLI, ROOT, write_config
from tests.test_daemon import Sink, wait_until
from tests.test_delivery_safety import run_in_thread
from tests.test_delivery_safety import setup as setup  # noqa: PLC0414 - the fixture, by its name

# -- the drain on SIGTERM (delivery.py, "stopping") ----------------------------------------


def test_a_stopping_run_finishes_the_chunk_at_the_provider_and_releases_the_queued_one(setup, smtp_server):
    s = setup(max_batch=5, extra="connections = 1\nlease_seconds = 600")
    s.subscribe(*[f"dokusha{i:02d}@example.jp" for i in range(20)])
    edition = s.edition()
    held = smtp_server.hold("dokusha00@example.jp")
    stop = threading.Event()
    join = run_in_thread(s.send, edition, stop=stop)
    assert held.reached.wait(10)

    def leased():
        with s.engine.connect() as conn:
            return conn.execute(select(deliveries.c.id).where(deliveries.c.lease_until.is_not(None))).all()
    # One chunk at the server, one queued behind it (connections × 2 in flight).
    assert wait_until(lambda: len(leased()) == 10, 10, "two chunks claimed")
    stop.set()  # SIGTERM
    held.release()
    report = join()
    assert report.sent == 5 and report.released == 5 and not report.finished
    rows = s.rows()
    pending = [r for r in rows.values() if r.status == "pending"]
    assert len(pending) == 15
    # Released at once: no lease to wait for, no token left behind.
    assert all(r.lease_until is None and r.claim_token is None and r.attempts == 0 for r in pending)
    assert len(s.received()) == 5
    again = s.send(edition)  # another run, at the same instant: the released rows are claimable now
    assert again.sent == 15 and again.finished
    assert Counter(s.received()) == Counter(set(rows))  # everybody exactly once


# -- the named lease and the shared buckets (store/workers.py) ---------------------------------


def fresh(url: str):
    engine = make_engine(url)
    upgrade(engine)
    return engine


def test_a_lease_is_taken_only_when_free_or_lapsed_and_renewed_only_by_its_holder(storage_url):
    engine = fresh(storage_url)

    def acquire(holder, seconds=30.0):
        with engine.begin() as conn:
            return wstore.acquire(conn, "scheduler", holder, seconds)

    assert acquire("東京:1") and acquire("東京:1")  # taken, then renewed
    assert not acquire("大阪:2")
    assert acquire("東京:1", 0.3)  # renewed for a short while only ...
    time.sleep(0.5)
    assert acquire("大阪:2")  # ... and once it lapsed, the standby takes it
    assert not acquire("東京:1")  # the old holder cannot renew what it lost
    with engine.begin() as conn:
        assert wstore.lease_holder(conn, "scheduler").holder == "大阪:2"
        wstore.release(conn, "scheduler", "東京:1")  # not the holder: nothing happens
        assert wstore.lease_holder(conn, "scheduler").holder == "大阪:2"
        wstore.release(conn, "scheduler", "大阪:2")
        assert wstore.lease_holder(conn, "scheduler") is None
    assert acquire("東京:1")  # a released lease is free at once
    engine.dispose()


def test_shared_buckets_never_grant_more_than_the_rate_to_all_processes_together(storage_url):
    engine = fresh(storage_url)
    engines = [engine] + [make_engine(storage_url) for _ in range(2)]
    rate = Rate(20, 1.0)
    buckets = [SharedBucket(e, "rate", rate, time.monotonic()) for e in engines]
    granted = [0, 0, 0]
    start = time.monotonic()

    def spend(i):
        b = buckets[i]
        while time.monotonic() - start < 1.5:
            now = time.monotonic()
            n = b.available(now)
            if n:
                b.take(n, now)
                granted[i] += n
            else:
                time.sleep(min(b.wait(now), 0.05))
    threads = [threading.Thread(target=spend, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    # A full bucket (one second's worth) plus the refill: never more, whoever asks.
    assert sum(granted) <= 20 + elapsed * 20 + 1
    assert all(granted), granted  # nobody starved
    assert sum(b.asked for b in buckets) < sum(granted)  # grants, not one round trip per token
    for e in engines:
        e.dispose()


def test_a_throttle_met_by_one_process_holds_every_process_back(setup, smtp_server):
    s = setup(max_batch=5, extra="connections = 1")
    s.subscribe(*[f"hisho{i}@example.jp" for i in range(5)])
    edition = s.edition()
    # Another process met a 421 and said so in the database: this run waits it out first.
    pause_everyone(s.engine, 3, "421 4.7.0 mta.test Error: too many connections from 127.0.0.1")
    report = s.send(edition, shared=True)
    assert report.sent == 5 and report.finished
    assert s.clock.slept >= 2  # it slept the window (the row's end is the database's clock)

    # And a run that meets the throttle itself tells the others.
    with s.engine.begin() as conn:
        conn.execute(shared_limits.delete())
    second = s.edition()
    smtp_server.refuse_connections(3)
    report = s.send(second, shared=True)
    assert report.sent == 5 and report.throttled
    with s.engine.connect() as conn:
        [row] = wstore.all_limits(conn)
    assert row.key == "throttle" and "421" in row.reason and row.until is not None


def test_detach_leaves_the_edition_to_the_workers_and_says_when_none_runs(project):
    project("article", "import", ROOT / "articles" / "sample.json")
    project("subscriber", "add", "yamada@example.jp", "--fields", "education", "--name", "山田 花子")
    out = project("edition", "send", "weekly", "--detach")
    assert "created weekly 第1号" in out.stdout
    assert "1 pending, left for the workers — none is running now" in out.stderr
    engine = open_engine(load_config(project.config_path).storage_url)
    with engine.connect() as conn:
        assert conn.execute(select(editions.c.status)).scalar() == "sending"
        assert conn.execute(select(deliveries.c.status)).scalar() == "pending"
    engine.dispose()


# -- real processes on PostgreSQL ------------------------------------------------------------

MAX_BATCH = 10
CONNECTIONS = 2
LEASE = 3


class Cluster:
    """A project on one database, its subscribers, and ``run``/``worker`` processes."""

    def __init__(self, tmp_path: Path, url: str, port: int, subscribers: int, rate: str, extra: str = ""):
        provider = (f'[provider]\nkind = "smtp"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
                    f'timeout = 10\nmax_batch = {MAX_BATCH}\nconnections = {CONNECTIONS}\n'
                    f'lease_seconds = {LEASE}\nrate = "{rate}"\n{extra}')
        self.tmp = tmp_path
        self.cli = CLI(write_config(tmp_path / "project", url, provider=provider))
        self.cli("init")
        config = load_config(self.cli.config_path)
        self.engine = open_engine(config.storage_url)
        csv = tmp_path / "readers.csv"
        csv.write_text("email,name,fields\n" + "".join(
            f"reader{i:05d}@example.jp,読者 {i},education\n" for i in range(subscribers)), encoding="utf-8")
        assert import_csv(self.engine, config, csv).rows == subscribers
        self.emails = {f"reader{i:05d}@example.jp" for i in range(subscribers)}
        self.cli("article", "import", ROOT / "articles" / "sample.json")
        self.env = {k: v for k, v in os.environ.items() if k != "NEWSLETTER_STORAGE_URL"}
        self.env["NEWSLETTER_SECRET"] = "test-secret"
        self.procs: list[Proc] = []

    def start(self, role: str, name: str) -> Proc:
        p = Proc(self, role, name)
        self.procs.append(p)
        return p

    def edition_status(self) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(editions.c.status)).scalar()

    def statuses(self) -> Counter:
        with self.engine.connect() as conn:
            return Counter(conn.execute(select(deliveries.c.status)).scalars())

    def scheduler(self) -> str | None:
        with self.engine.connect() as conn:
            row = wstore.lease_holder(conn, "scheduler")
        return row.holder if row else None

    def sent_times(self) -> list[float]:
        with self.engine.connect() as conn:
            return sorted(t.timestamp() for t in conn.execute(
                select(deliveries.c.updated_at).where(deliveries.c.status == "sent")).scalars())

    def close(self) -> None:
        for p in self.procs:
            p.kill()
        self.engine.dispose()


class Proc:
    def __init__(self, cluster: Cluster, role: str, name: str):
        self.log = cluster.tmp / f"{name}.log"
        self._fh = open(self.log, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "--config", str(cluster.cli.config_path), "--log-format", "json",
             role, "--poll", "0.5", "--stop-timeout", "30"],
            stdout=subprocess.DEVNULL, stderr=self._fh, env=cluster.env, cwd=cluster.tmp,
        )
        self.pid = self.proc.pid

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines() if line.strip()]

    def has(self, event: str) -> dict | None:
        return next((e for e in self.events() if e.get("event") == event), None)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._fh.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.wait()


@pytest.fixture
def pg_cluster(tmp_path, storage_url):
    made: list[Cluster] = []
    sink = Sink(tmp_path)

    def factory(subscribers: int, rate: str) -> Cluster:
        c = Cluster(tmp_path, storage_url, sink.port, subscribers, rate)
        made.append(c)
        return c
    yield factory, sink
    for c in made:  # a failed test must not leave processes behind
        c.close()
    sink.stop()


@pytest.mark.slow
@pytest.mark.parametrize("storage_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_three_workers_and_two_schedulers_kill_9_mid_send_everyone_exactly_once(storage_url, pg_cluster):
    factory, sink = pg_cluster
    cluster = factory(20000, "800/s")
    runs = [cluster.start("run", f"run{i}") for i in range(2)]
    workers = [cluster.start("worker", f"worker{i}") for i in range(3)]
    for p in runs + workers:
        wait_until(lambda p=p: p.has("daemon.started"), 60, "every process to start", p.proc)
    holder = wait_until(cluster.scheduler, 20, "a scheduler")
    assert sum(str(p.pid) == holder.split(":")[1] for p in runs) == 1  # one of the two, and only one
    status = cluster.cli("status").stdout
    assert status.count("\tworker\trunning") == 3 and status.count("\trun (scheduler)\trunning") == 1

    out = cluster.cli("edition", "send", "weekly", "--detach")
    assert "20000 pending, handed to 5 running worker process(es)" in out.stdout
    wait_until(lambda: len(sink.received()) >= 4000, 60, "4000 messages at the sink")
    # kill -9 one worker and the scheduler holder, mid-send.
    leader = next(p for p in runs if str(p.pid) == holder.split(":")[1])
    standby = next(p for p in runs if p is not leader)
    leader.proc.send_signal(signal.SIGKILL)
    workers[0].proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert leader.wait() == -signal.SIGKILL and workers[0].wait() == -signal.SIGKILL
    assert cluster.statuses()["pending"], "the kill should have come mid-send"

    new = wait_until(lambda: (cluster.scheduler() or "").startswith(f"{holder.split(':')[0]}:{standby.pid}:"),
                     4 * LEASE + 10, "the standby to take the scheduler over", standby.proc)
    assert new and standby.has("scheduler.acquired")
    took = time.monotonic() - killed_at
    wait_until(lambda: cluster.edition_status() == "done", 180, "the edition to finish", standby.proc)

    received = Counter(sink.received())
    assert set(received) == cluster.emails  # nobody lost, nobody else
    duplicates = sum(n - 1 for n in received.values())
    # Each killed process had at most connections × 2 chunks of max_batch in flight.
    assert duplicates <= 2 * CONNECTIONS * 2 * MAX_BATCH
    assert cluster.statuses() == Counter(sent=20000)
    wait_until(lambda: cluster.cli("status").stdout.count("\tLOST\t") == 2, 2 * LEASE + 10,
               "the killed processes shown as lost")
    for p in [standby, *workers[1:]]:
        p.proc.send_signal(signal.SIGTERM)
        assert p.wait() == 0, p.log.read_text(encoding="utf-8")[-3000:]
    status = cluster.cli("status").stdout
    shown = status.split("workers:\n")[1].split("\n\n")[0].splitlines()
    assert len(shown) == 2 and all("\tLOST\t" in line for line in shown)  # the clean stops left
    print(f"scheduler taken over {took:.1f} s after kill -9 (lease {LEASE} s, heartbeat "
          f"{heartbeat_every(LEASE):.1f} s); {duplicates} duplicates")


@pytest.mark.slow
@pytest.mark.parametrize("storage_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_the_rate_is_global_three_workers_together_send_at_the_configured_rate(storage_url, pg_cluster):
    factory, sink = pg_cluster
    cluster = factory(1200, "60/s")
    workers = [cluster.start("worker", f"worker{i}") for i in range(3)]
    for p in workers:
        wait_until(lambda p=p: p.has("daemon.started"), 60, "every worker to start", p.proc)
    cluster.cli("edition", "send", "weekly", "--detach")
    wait_until(lambda: cluster.edition_status() == "done", 90, "the edition to finish")
    assert Counter(sink.received()) == Counter(cluster.emails)
    times = cluster.sent_times()
    busy = [p for p in workers if any(e.get("event") == "delivery.started" for e in p.events())]
    assert len(busy) == 3  # all three took part
    # The steady rate: the least-squares slope of messages over time, after the first
    # second's burst a full bucket allows (a slope, so that one chunk recorded late
    # at either end does not move it as it would move a first-to-last ratio).
    points = list(enumerate(times))[60:]
    mean_t = sum(t for _, t in points) / len(points)
    mean_i = sum(i for i, _ in points) / len(points)
    rate = (sum((t - mean_t) * (i - mean_i) for i, t in points)
            / sum((t - mean_t) ** 2 for _, t in points))
    print(f"3 workers, rate 60/s: measured {rate:.1f}/s")
    assert 54 <= rate <= 66, rate
    for p in workers:
        p.proc.send_signal(signal.SIGTERM)
        assert p.wait() == 0, p.log.read_text(encoding="utf-8")[-3000:]


# -- fair sharing between editions sending at once (daemon.py) --------------------------------


def test_two_editions_sending_at_once_progress_side_by_side(setup, smtp_server):
    from newsletter.daemon import Daemon

    s = setup(max_batch=5, extra='connections = 1\nrate = "40/s"')
    s.subscribe(*[f"kensyu{i:02d}@example.jp" for i in range(60)])
    first = s.edition()
    second = s.edition()  # a second edition (new article) while the first is still sending
    daemon = Daemon(s.cli.config_path, poll_seconds=0.5)
    daemon.fair_slice = 0.5
    daemon.scheduler.hold()
    assert daemon.deliver_due()  # one pass: each edition has its turn

    def counts(edition):
        with s.engine.connect() as conn:
            return Counter(conn.execute(select(deliveries.c.status).where(deliveries.c.edition_id == edition))
                           .scalars())
    one, two = counts(first), counts(second)
    # Neither waited for the other to finish: both sent some, both have some left.
    assert one["sent"] and one["pending"] and two["sent"] and two["pending"], (one, two)
    while daemon.deliver_due():  # later passes finish both
        pass
    assert counts(first) == counts(second) == Counter(sent=60)
    assert Counter(s.received()) == Counter({f"kensyu{i:02d}@example.jp": 2 for i in range(60)})
    daemon.engine.dispose()
