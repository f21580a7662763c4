"""``newsletter run`` in a subprocess, sending to a real SMTP server in another
process (tests/smtp_sink.py): SIGKILL mid-send loses nobody and duplicates at most
what was in flight; SIGTERM exits 0 with nothing lost and nothing sent twice;
``edition pause/resume`` reach a running send; logs are JSON lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.config import load_config
from newsletter.store import open_engine
from newsletter.store.tables import deliveries, editions
from newsletter.subscribers import import_csv
from tests.conftest import CLI, ROOT, write_config

SINK = Path(__file__).with_name("smtp_sink.py")
CONNECTIONS = 2
MAX_BATCH = 20


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Sink:
    def __init__(self, tmp_path: Path, delay: float = 0.0):
        self.file = tmp_path / "received.txt"
        port_file = tmp_path / "sink.port"
        self.proc = subprocess.Popen([sys.executable, str(SINK), str(self.file), str(port_file), str(delay)])
        wait_until(port_file.exists, 20, "the SMTP sink to listen", self.proc)
        self.port = int(port_file.read_text())

    def received(self) -> list[str]:
        if not self.file.exists():
            return []
        return [line for line in self.file.read_text(encoding="utf-8").splitlines() if line]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def sink(tmp_path):
    s = Sink(tmp_path)
    yield s
    s.stop()


class Project:
    def __init__(self, tmp_path: Path, port: int, subscribers: int, rate: str):
        provider = (f'[provider]\nkind = "smtp"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
                    f'timeout = 10\nmax_batch = {MAX_BATCH}\nconnections = {CONNECTIONS}\nlease_seconds = 2\n'
                    f'rate = "{rate}"\n')
        self.tmp = tmp_path
        db = tmp_path / "project" / "var" / "newsletter.db"
        self.cli = CLI(write_config(tmp_path / "project", f"sqlite:///{db}", provider=provider))
        self.cli("init")
        config = load_config(self.cli.config_path)
        self.engine = open_engine(config.storage_url)
        fields = ["education", "local-government", "administration;education"]
        rows = ["email,name,fields,format"] + [
            f"reader{i:05d}@example.jp,読者 {i},{fields[i % 3]},{'html' if i % 2 else 'text'}"
            for i in range(subscribers)
        ]
        csv = tmp_path / "readers.csv"
        csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
        report = import_csv(self.engine, config, csv)
        assert report.rows == subscribers and not report.problems
        self.emails = {f"reader{i:05d}@example.jp" for i in range(subscribers)}
        self.cli("article", "import", ROOT / "articles" / "sample.json")
        self.env = {k: v for k, v in os.environ.items() if k != "NEWSLETTER_STORAGE_URL"}
        self.env["NEWSLETTER_SECRET"] = "test-secret"

    def start(self, name: str) -> Daemon:
        return Daemon(self, name)

    def statuses(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            for email, status in conn.execute(select(deliveries.c.email, deliveries.c.status)):
                out.setdefault(status, []).append(email)
        return out

    def edition_status(self) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(editions.c.status)).scalar()

    def leased_pending(self) -> int:
        with self.engine.connect() as conn:
            rows = conn.execute(select(deliveries.c.id).where(
                deliveries.c.status == "pending", deliveries.c.lease_until.is_not(None))).all()
        return len(rows)


class Daemon:
    def __init__(self, project: Project, name: str):
        self.log = project.tmp / f"{name}.log"
        self._fh = open(self.log, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "--config", str(project.cli.config_path), "--log-format", "json",
             "run", "--poll", "0.5", "--stop-timeout", "30"],
            stdout=subprocess.DEVNULL, stderr=self._fh, env=project.env, cwd=project.tmp,
        )

    def events(self) -> list[dict]:
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def has(self, event: str) -> dict | None:
        return next((e for e in self.events() if e.get("event") == event), None)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        return wait_until(lambda: self.has(event), timeout, f"log event {event}", self.proc)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

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
def daemons():
    started: list[Daemon] = []
    yield started
    for d in started:  # a failed test must not leave a daemon behind
        d.kill()


def test_sigkill_mid_send_loses_nobody_and_duplicates_at_most_what_was_in_flight(tmp_path, sink, daemons):
    project = Project(tmp_path, sink.port, 3000, rate="600/s")
    first = project.start("first")
    daemons.append(first)
    first.wait_for("daemon.started")
    out = project.cli("schedule", "run-now", "weekly").stdout
    assert "weekly 第1号 created: 12 articles, 3000 to send" in out
    assert "the running daemon" in out  # its heartbeat is in the database
    wait_until(lambda: len(sink.received()) >= 900, 60, "900 messages at the sink", first.proc)
    first.signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    statuses = project.statuses()
    assert statuses.get("pending"), "the kill should have come mid-send"
    assert first.has("edition.created") is None  # run-now created it, in the CLI process
    started = first.has("delivery.started")
    assert started["edition"] == 1 and started["counts"]["pending"] == 3000

    second = project.start("second")
    daemons.append(second)
    resumed = second.wait_for("delivery.resume")
    assert resumed["counts"]["pending"] == len(statuses["pending"])
    second.wait_for("delivery.finished", 120)
    assert project.edition_status() == "done"
    second.signal(signal.SIGTERM)
    assert second.wait() == 0

    received = Counter(sink.received())
    assert set(received) == project.emails  # nobody missing, nobody else
    duplicates = sum(n - 1 for n in received.values())
    # The engine keeps at most two chunks per connection in flight (one sending, one
    # queued or waiting to be recorded), each at most max_batch messages.
    assert duplicates <= 2 * CONNECTIONS * MAX_BATCH
    final = project.statuses()
    assert set(final) == {"sent"} and len(final["sent"]) == 3000


def test_sigterm_exits_0_with_nothing_lost_and_nothing_twice(tmp_path, sink, daemons):
    project = Project(tmp_path, sink.port, 1000, rate="150/s")
    first = project.start("first")
    daemons.append(first)
    first.wait_for("daemon.started")
    project.cli("schedule", "run-now", "weekly")
    wait_until(lambda: len(sink.received()) >= 200, 60, "200 messages at the sink", first.proc)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    assert first.has("daemon.stopping") and first.has("daemon.stopped")

    statuses = project.statuses()
    received = Counter(sink.received())
    assert statuses.get("pending"), "SIGTERM should have come mid-send"
    assert set(received) == set(statuses["sent"])  # what was sent is recorded, and only that
    assert max(received.values()) == 1
    assert project.leased_pending() == 0  # in-flight work was finished, not left leased

    # A second daemon finishes the edition; an operator pauses and resumes it on the way.
    second = project.start("second")
    daemons.append(second)
    wait_until(lambda: len(sink.received()) >= len(received) + 100, 60, "sending to resume", second.proc)
    project.cli("edition", "pause", "1")
    paused = second.wait_for("delivery.paused", 20)
    assert paused["edition"] == 1
    count = len(sink.received())
    time.sleep(1.5)
    assert len(sink.received()) == count  # nothing goes out while paused
    project.cli("edition", "resume", "1")
    second.wait_for("delivery.finished", 60)
    second.signal(signal.SIGINT)
    assert second.wait() == 0

    received = Counter(sink.received())
    assert set(received) == project.emails and max(received.values()) == 1
    assert set(project.statuses()) == {"sent"}
    status = project.cli("status").stdout
    assert "daemon:   not running" in status and "weekly 第1号\tdone" in status
    for event in second.events():  # every line is one JSON event with the basics
        assert {"ts", "level", "logger", "msg"} <= set(event)
    finished = second.has("delivery.finished")
    assert finished["counts"]["sent"] == 1000 and finished["counts"]["pending"] == 0
