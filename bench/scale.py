"""Benchmark: 1, 2 and 4 ``newsletter worker`` processes on one edition, on PostgreSQL.

    python bench/scale.py --subscribers 20000               # quick
    python bench/scale.py --subscribers 100000
    python bench/scale.py --million                         # 1,000,000 end to end (long: ~tens of minutes)
    python bench/scale.py --targets smtp --workers 1,2      # a subset

Steps: a fresh PostgreSQL database, N made-up subscribers imported with the real
CSV importer (timed), one edition created (its N delivery rows: timed), then for
each target and each worker count the deliveries are reset to pending and that
many real ``newsletter worker`` processes (each with 2 connections) send the
edition to the end.  Targets:

- ``smtp``: Postfix's ``smtp-sink`` (Debian package ``postfix``), as bench/send.py;
- ``http``: the Postmark contract server of tests/http_servers.py in its own
  process, answering each request 50 ms late (``max_batch = 50``).

Baselines in the same run: 1 worker is the baseline of 2 and 4 (``speedup``).
For each run: messages/s (first to last result written: process start-up left out), CPU seconds
and peak RSS (VmHWM) of every worker, and PostgreSQL commits/s.
``--claims P``: the database alone, P processes claiming chunks of 100 and
recording them as sent with no provider (claims/s: what PostgreSQL sustains).
Prints one JSON object.  This machine has 2 cores: with 4 workers and the
database on the same 2 cores, the figures say where the CPU goes, not how
a real cluster scales.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.send import queue_articles, smtp_sink, write_subscribers  # noqa: E402

PG_ADMIN = os.environ.get("NEWSLETTER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_hwm_mb(pid: int) -> float:
    m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else 0.0


def serve_http(port_file: str) -> None:
    """Child process: the Postmark contract server, 50 ms late on every request."""
    from tests.http_servers import PostmarkServer

    server = PostmarkServer(token="pm-bench-token")
    server.keep_bodies = False
    server.render = False
    server.stall_next(10**9, 0.05)
    server.start()
    Path(port_file + ".tmp").write_text(str(server.port))
    os.replace(port_file + ".tmp", port_file)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


def write_config(folder: Path, url: str, provider: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    import shutil

    if not (folder / "templates").exists():
        shutil.copytree(ROOT / "templates", folder / "templates")
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    start, end = text.index("[provider]"), text.index("[[fields]]")
    text = text[:start] + provider + "\n" + text[end:]
    text = text.replace('url = "sqlite:///var/newsletter.db"', f'url = "{url}"')
    text = text.replace("max_articles = 20", "max_articles = 30")
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run_workers(config: Path, engine, edition_id: int, n: int, env: dict, folder: Path) -> dict:
    from sqlalchemy import text

    with engine.begin() as conn:  # the same edition, every row to send again
        conn.execute(text("UPDATE deliveries SET status = 'pending', attempts = 0, lease_until = NULL, "
                          "claim_token = NULL, next_attempt_at = NULL WHERE edition_id = :e"), {"e": edition_id})
        conn.execute(text("UPDATE editions SET status = 'sending', finished_at = NULL WHERE id = :e"),
                     {"e": edition_id})
        conn.execute(text("DELETE FROM shared_limits"))
        pending = conn.execute(text("SELECT count(*) FROM deliveries WHERE edition_id = :e AND "
                                    "status = 'pending'"), {"e": edition_id}).scalar()
    commits_before = _commits(engine)
    logs = [open(folder / f"worker{i}.log", "w") for i in range(n)]  # noqa: SIM115 - closed below
    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "newsletter", "--config", str(config), "--log-format", "json",
                               "worker", "--poll", "0.2"], stdout=subprocess.DEVNULL, stderr=logs[i], env=env)
             for i in range(n)]
    cpu = [0.0] * n
    hwm = [0.0] * n
    try:
        while True:
            for i, p in enumerate(procs):
                try:
                    cpu[i] = proc_cpu(p.pid)
                    hwm[i] = proc_hwm_mb(p.pid)
                except OSError:
                    pass
                if p.poll() is not None:
                    raise RuntimeError(f"worker {i} exited {p.returncode}: see {folder}/worker{i}.log")
            with engine.connect() as conn:
                status = conn.execute(text("SELECT status FROM editions WHERE id = :e"), {"e": edition_id}).scalar()
            if status == "done":
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - start
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
        for fh in logs:
            fh.close()
    with engine.connect() as conn:
        sent, first, last = conn.execute(text(
            "SELECT count(*), min(updated_at), max(updated_at) FROM deliveries WHERE edition_id = :e "
            "AND status = 'sent'"), {"e": edition_id}).one()
    sending = (last - first).total_seconds()
    return {"workers": n, "messages": pending, "sent": sent,
            "seconds_with_start_up": round(elapsed, 2), "seconds_sending": round(sending, 2),
            # first result to last result: the start-up of the processes (imports) left out
            "messages_per_second": round(sent / sending, 1) if sending else None,
            "cpu_seconds_per_worker": [round(c, 2) for c in cpu],
            "peak_rss_mb_per_worker": [round(h, 1) for h in hwm],
            "postgres_commits_per_second": round((_commits(engine) - commits_before) / elapsed, 1)}


def _commits(engine) -> int:
    from sqlalchemy import text

    time.sleep(0.6)  # the statistics are flushed about once a second
    with engine.connect() as conn:
        return conn.execute(text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))\
            .scalar()


def claim_worker(url: str, edition_id: int, seconds: float, out, ready, go) -> None:
    """Child process: claim chunks of 100 and record them sent, with no provider."""
    import secrets
    from datetime import timedelta

    from newsletter.store import editions as q
    from newsletter.store import make_engine
    from newsletter.store.tables import utcnow

    engine = make_engine(url)
    with engine.connect():
        pass
    token = secrets.token_hex(16)
    claims = rows = 0
    ready.release()
    go.wait()  # every process imported and connected: start together
    start = time.time()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = utcnow()
        with engine.begin() as conn:
            got = q.claim(conn, edition_id, now, 100, now + timedelta(seconds=60), token=token)
        if not got:
            break
        with engine.begin() as conn:
            q.record(conn, [{"id": r.id, "status": "sent", "attempts": 1} for r in got], utcnow(), token=token)
        claims += 1
        rows += len(got)
    out.put((claims, rows, start, time.time()))


def claims_bench(url: str, engine, edition_id: int, procs: int, seconds: float = 10.0) -> dict:
    import multiprocessing as mp

    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("UPDATE deliveries SET status = 'pending', lease_until = NULL, claim_token = NULL "
                          "WHERE edition_id = :e"), {"e": edition_id})
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    ps = [ctx.Process(target=claim_worker, args=(url, edition_id, seconds, q, ready, go)) for _ in range(procs)]
    for p in ps:
        p.start()
    for _ in ps:
        ready.acquire()
    go.set()
    results = [q.get() for _ in ps]
    for p in ps:
        p.join()
    elapsed = max(r[3] for r in results) - min(r[2] for r in results)
    claims = sum(r[0] for r in results)
    rows = sum(r[1] for r in results)
    return {"processes": procs, "claims": claims, "rows": rows, "seconds": round(elapsed, 2),
            "claims_per_second": round(claims / elapsed, 1), "rows_per_second": round(rows / elapsed, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subscribers", type=int, default=20000)
    ap.add_argument("--million", action="store_true", help="1,000,000 subscribers, end to end")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--targets", default="smtp,http")
    ap.add_argument("--claims", type=int, default=0, help="also: P processes claiming with no provider")
    ap.add_argument("--serve-http", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_http:
        return serve_http(args.serve_http)
    n = 1_000_000 if args.million else args.subscribers
    counts = [int(x) for x in args.workers.split(",")]
    targets = args.targets.split(",")

    from sqlalchemy import create_engine, text

    from newsletter import subscribers as subs
    from newsletter.config import load_config
    from newsletter.editions import creation
    from newsletter.store import make_engine, upgrade

    name = f"nl_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    out: dict = {"subscribers": n, "database": "postgresql", "cpus": os.cpu_count(), "runs": {}}
    tmp = Path(tempfile.mkdtemp(prefix="nl-scale-"))
    env = {**os.environ, "NEWSLETTER_SECRET": "bench-secret", "NL_BENCH_PM": "pm-bench-token",
           "PYTHONPATH": str(ROOT)}
    env.pop("NEWSLETTER_STORAGE_URL", None)
    try:
        config_path = write_config(tmp / "base", url, '[provider]\nkind = "file"\npath = "var/outbox"\n')
        config = load_config(config_path)
        engine = make_engine(config.storage_url)
        upgrade(engine)
        csv_path = tmp / "subscribers.csv"
        write_subscribers(csv_path, n)
        t = time.perf_counter()
        report = subs.import_csv(engine, config, csv_path)
        out["import_seconds"] = round(time.perf_counter() - t, 1)
        assert report.created == n, report
        queue_articles(engine, config)
        t = time.perf_counter()
        created = creation.create_edition(engine, config, config.publication("weekly"))
        out["create_edition_seconds"] = round(time.perf_counter() - t, 1)
        out["delivery_rows"] = created.pending
        if args.claims:
            out["claims"] = claims_bench(config.storage_url, engine, created.edition_id, args.claims)
        for target in targets:
            if target == "smtp":
                ctx = smtp_sink()
            else:
                ctx = _http_server(tmp)
            with ctx as port:
                if target == "smtp":
                    provider = (f'[provider]\nkind = "smtp"\nhost = "127.0.0.1"\nport = {port}\ntimeout = 30\n'
                                'connections = 2\nmax_batch = 100\nlease_seconds = 60\n')
                else:
                    provider = (f'[provider]\nkind = "postmark"\nbase_url = "http://127.0.0.1:{port}"\n'
                                'api_key_env = "NL_BENCH_PM"\nconnections = 2\nmax_batch = 50\n'
                                'lease_seconds = 60\n')
                path = write_config(tmp / target, url, provider)
                runs = []
                for k in counts:
                    r = run_workers(path, engine, created.edition_id, k, env, tmp / target)
                    runs.append(r)
                    print(json.dumps({"target": target, **r}, ensure_ascii=False), file=sys.stderr)
                base = runs[0]["messages_per_second"]
                for r in runs:
                    r["speedup"] = round(r["messages_per_second"] / base, 2)
                out["runs"][target] = runs
        engine.dispose()
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print(json.dumps(out, ensure_ascii=False, indent=1))


class _http_server:
    def __init__(self, tmp: Path):
        self.port_file = tmp / "http.port"

    def __enter__(self) -> int:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-http", str(self.port_file)])
        for _ in range(200):
            if self.port_file.exists():
                return int(self.port_file.read_text())
            time.sleep(0.05)
        raise RuntimeError("the HTTP contract server did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)


if __name__ == "__main__":
    main()
