"""Benchmark: 1, 2 and 4 ``newsletter worker`` processes on one edition, on PostgreSQL.

    python bench/scale.py --subscribers 20000               # quick
    python bench/scale.py --subscribers 100000 --claims 1,2,4,8
    python bench/scale.py --million --workers 4             # 1,000,000 end to end, 100,000 as its baseline
    python bench/scale.py --targets smtp --workers 1,2      # a subset

Steps: a fresh PostgreSQL database, N made-up subscribers imported by
``newsletter subscriber import`` (the streaming import, in its own process), one
edition created with its N delivery rows (``creation.create_edition`` in its own
process), then for each target and each worker count the deliveries are reset
to pending, the table rewritten (``VACUUM FULL``: each run starts from the table
a new edition has) and that many real ``newsletter worker`` processes (each with
2 connections) send the edition to the end.  Targets:

- ``smtp``: Postfix's ``smtp-sink`` (Debian package ``postfix``), as bench/send.py;
- ``smtp-dkim``: the same with every message DKIM-signed (RSA-2048) by the
  worker, where one worker process is CPU-bound;
- ``http``: the Postmark contract server of tests/http_servers.py in its own
  process (``--http-processes N``: N processes sharing its port), answering each
  request 50 ms late (``max_batch = 50``).

Baselines in the same run: 1 worker is the baseline of 2 and 4 (``speedup``).
For each run: messages/s (first to last result written: process start-up left
out), CPU seconds and peak RSS (VmHWM) of every worker, CPU seconds of the
PostgreSQL server processes of the database, commits/s, and the load average
before and after (the machine is shared: read every figure with its load).
``--grants 1,8``: P processes taking grants from the one shared ``rate`` token
bucket row (workers.py), each in its own transaction: what the row sustains.
``--claims 1,2,4,8``: the database alone, P processes claiming chunks of 100
and recording them as sent with no provider (claims/s: what PostgreSQL
sustains).  ``--million``: import, creation and a send into smtp-sink by
``--workers`` processes (one count; default 2) at 1,000,000 subscribers after
the same steps at ``--subscribers`` (the baseline), each phase timed, with the
peak RSS of every process (its own rusage) and the ratio million/baseline.

Prints one JSON object (progress lines on stderr).  This machine has 2 cores:
with 4 workers and the database on the same 2 cores, the figures say where the
CPU goes, not how a real cluster scales.
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


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process: /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / TICK


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages (as `uptime` prints them): the machine is shared."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def proc_hwm_mb(pid: int) -> float:
    m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else 0.0


def listener_pids(port: int) -> list[int]:
    """The processes listening on 127.0.0.1:``port`` (the provider's stand-in: smtp-sink
    or the contract server's processes), found through /proc, so their CPU is counted too."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(cols[9])
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd)[8:-1] in inodes for fd in (proc / "fd").iterdir()
                   if os.readlink(fd).startswith("socket:[")):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def postgres_cpu(engine) -> dict[int, float]:
    """CPU seconds of each server process serving this database (the workers' sessions)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars()
        out = {}
        for pid in pids:
            try:
                out[pid] = proc_cpu(pid)
            except OSError:  # gone, or another host's server
                pass
    return out


def serve_http(port_file: str, port: int) -> None:
    """Child process: the Postmark contract server, 50 ms late on every request
    (``port`` shared with the other processes of ``--http-processes``)."""
    from tests.http_servers import PostmarkServer

    server = PostmarkServer(token="pm-bench-token")
    server.keep_bodies = False
    server.render = False
    server.keep_delivered = False  # kept, 250,000 messages grew it to 22 GB (the kernel's OOM killer ended it)
    server.stall_next(10**9, 0.05)
    server.start(port, shared_port=True)
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


def run_workers(config: Path, engine, edition_id: int, n: int, env: dict, folder: Path,
                server_port: int | None = None) -> dict:
    from sqlalchemy import text

    with engine.begin() as conn:  # the same edition, every row to send again
        conn.execute(text("UPDATE deliveries SET status = 'pending', attempts = 0, lease_until = NULL, "
                          "claim_token = NULL, next_attempt_at = NULL WHERE edition_id = :e"), {"e": edition_id})
        conn.execute(text("UPDATE editions SET status = 'sending', finished_at = NULL WHERE id = :e"),
                     {"e": edition_id})
        conn.execute(text("DELETE FROM shared_limits"))
        pending = conn.execute(text("SELECT count(*) FROM deliveries WHERE edition_id = :e AND "
                                    "status = 'pending'"), {"e": edition_id}).scalar()
    # Every run starts from the table a new edition has: rewritten without the dead
    # versions the previous run and the reset left.  Without it each run paid for the
    # ones before (PostgreSQL's CPU per message 0.42 ms in the first run of a
    # 100,000 edition, 0.79 ms in a one-worker run after three others), and the later
    # runs — the ones with more workers — looked slower than they are.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (FULL, ANALYZE) deliveries"))
    commits_before = _commits(engine)
    load_before = load()
    pg_before = postgres_cpu(engine)
    pg_cpu = dict(pg_before)
    servers = listener_pids(server_port) if server_port else []
    server_before = sum(proc_cpu(p) for p in servers)
    machine_before = machine_cpu()
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
            pg_cpu.update(postgres_cpu(engine))
            with engine.connect() as conn:
                status = conn.execute(text("SELECT status FROM editions WHERE id = :e"), {"e": edition_id}).scalar()
            if status == "done":
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - start
        server_cpu = sum(proc_cpu(p) for p in servers) - server_before if servers else None
        machine = machine_cpu() - machine_before
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
    pg_seconds = sum(c - pg_before.get(pid, 0.0) for pid, c in pg_cpu.items())
    return {"workers": n, "messages": pending, "sent": sent,
            "seconds_with_start_up": round(elapsed, 2), "seconds_sending": round(sending, 2),
            # first result to last result: the start-up of the processes (imports) left out
            "messages_per_second": round(sent / sending, 1) if sending else None,
            "cpu_seconds_per_worker": [round(c, 2) for c in cpu],
            "peak_rss_mb_per_worker": [round(h, 1) for h in hwm],
            "postgres_commits_per_second": round((_commits(engine) - commits_before) / elapsed, 1),
            # the server processes of this database (sampled every 0.2 s, so a session that
            # ended between two samples lost its last fraction of a second)
            "postgres_cpu_seconds": round(pg_seconds, 2),
            # the provider's stand-in (smtp-sink, the contract server): at a real provider
            # this CPU is not ours, here it shares the 2 cores with the rest
            "server_cpu_seconds": round(server_cpu, 2) if server_cpu is not None else None,
            # CPU per message of each part, and how many of the machine's cores were busy
            # (all processes, from /proc/stat) from start to done
            "cpu_ms_per_message": {
                "workers": round(sum(cpu) * 1000 / pending, 3) if pending else None,
                "postgres": round(pg_seconds * 1000 / pending, 3) if pending else None,
                "server": round(server_cpu * 1000 / pending, 3) if pending and server_cpu is not None else None},
            "cores_busy": round(machine / elapsed, 2),
            "load_before": load_before, "load_after": load()}


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


def run_together(target, args: tuple, procs: int) -> list:
    """``procs`` processes of ``target(*args, out, ready, go)``, started at once (each
    waits for ``go`` once ready); what each put on ``out``."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out, ready, go = ctx.Queue(), ctx.Semaphore(0), ctx.Event()
    ps = [ctx.Process(target=target, args=(*args, out, ready, go)) for _ in range(procs)]
    for p in ps:
        p.start()
    for _ in ps:
        ready.acquire()
    go.set()
    results = [out.get() for _ in ps]
    for p in ps:
        p.join()
    return results


def claims_bench(url: str, engine, edition_id: int, procs: int, seconds: float = 10.0) -> dict:

    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("UPDATE deliveries SET status = 'pending', lease_until = NULL, claim_token = NULL "
                          "WHERE edition_id = :e"), {"e": edition_id})
    load_before = load()
    results = run_together(claim_worker, (url, edition_id, seconds), procs)
    elapsed = max(r[3] for r in results) - min(r[2] for r in results)
    claims = sum(r[0] for r in results)
    rows = sum(r[1] for r in results)
    return {"processes": procs, "claims": claims, "rows": rows, "seconds": round(elapsed, 2),
            "claims_per_second": round(claims / elapsed, 1), "rows_per_second": round(rows / elapsed, 1),
            "load_before": load_before, "load_after": load()}


def run_phase(args: list[str], env: dict, log: Path) -> dict:
    """A child process to its end: wall seconds, CPU seconds and peak RSS (its own
    rusage, so the figure is that process's alone).  Its output goes to ``log``."""
    with open(log, "w") as fh:
        start = time.monotonic()
        proc = subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args[1:4])} exited {proc.returncode}: see {log}")
    return {"seconds": round(seconds, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "output": log.read_text(encoding="utf-8").strip()}


def create_edition_child(config_path: str) -> None:
    """Child process: the next edition of "weekly" with its delivery rows (the library
    call 'edition send' makes), timed inside so that interpreter start-up is left out."""
    from newsletter.config import load_config
    from newsletter.editions import creation
    from newsletter.store import make_engine

    config = load_config(Path(config_path))
    engine = make_engine(config.storage_url)
    t = time.perf_counter()
    created = creation.create_edition(engine, config, config.publication("weekly"))
    print(json.dumps({"edition_id": created.edition_id, "pending": created.pending,
                      "create_edition_seconds": round(time.perf_counter() - t, 1)}))


class Database:
    """A fresh PostgreSQL database with N imported subscribers and one edition of
    them, dropped on exit.  The import (``newsletter subscriber import``, the streaming
    import) and the creation run in child processes: their time and peak RSS are
    their own."""

    def __init__(self, admin, n: int, folder: Path, env: dict):
        self.admin, self.n, self.folder, self.env = admin, n, folder, env
        self.name = f"nl_bench_{uuid.uuid4().hex[:8]}"
        self.url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.name

    def __enter__(self) -> Database:
        from sqlalchemy import text

        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{self.name}"'))
        try:
            return self._fill()
        except BaseException:
            self.__exit__()
            raise

    def _fill(self) -> Database:
        from newsletter.config import load_config
        from newsletter.store import make_engine, upgrade

        self.engine = None
        self.config_path = write_config(self.folder / "base", self.url,
                                        '[provider]\nkind = "file"\npath = "var/outbox"\n')
        config = load_config(self.config_path)
        self.engine = make_engine(config.storage_url)
        upgrade(self.engine)
        csv_path = self.folder / "subscribers.csv"
        write_subscribers(csv_path, self.n)
        self.phases: dict = {"load_before": load()}
        self.phases["import"] = run_phase(
            [sys.executable, "-m", "newsletter", "--config", str(self.config_path), "subscriber", "import",
             str(csv_path)], self.env, self.folder / "import.log")
        csv_path.unlink()
        queue_articles(self.engine, config)
        create = run_phase([sys.executable, __file__, "--create-edition", str(self.config_path)], self.env,
                           self.folder / "create.log")
        created = json.loads(create.pop("output").splitlines()[-1])
        self.phases["create"] = {**create, **created}
        self.phases["load_after"] = load()
        self.edition_id = created["edition_id"]
        return self

    def __exit__(self, *exc) -> None:
        from sqlalchemy import text

        if getattr(self, "engine", None) is not None:
            self.engine.dispose()
        with self.admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


def provider_config(target: str, port: int, folder: Path | None = None) -> str:
    if target in ("smtp", "smtp-dkim"):
        table = (f'[provider]\nkind = "smtp"\nhost = "127.0.0.1"\nport = {port}\ntimeout = 30\n'
                 'connections = 2\nmax_batch = 100\nlease_seconds = 60\n')
        if target == "smtp-dkim":  # RSA-2048 signing in the worker: one process is CPU-bound
            from newsletter.dkim_signer import generate_key, private_pem

            assert folder is not None
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "rsa.pem").write_bytes(private_pem(generate_key("rsa-sha256")))
            table += '\n[dkim]\nselector = "bench"\nprivate_key_file = "rsa.pem"\n'
        return table
    return (f'[provider]\nkind = "postmark"\nbase_url = "http://127.0.0.1:{port}"\n'
            'api_key_env = "NL_BENCH_PM"\nconnections = 2\nmax_batch = 50\nlease_seconds = 60\n')


def end_to_end(admin, n: int, workers: int, tmp: Path, env: dict) -> dict:
    """Import, creation and a send into smtp-sink by ``workers`` processes, each phase
    timed, with the peak RSS of every process."""
    with Database(admin, n, tmp / f"e2e-{n}", env) as db:
        with smtp_sink() as port:
            path = write_config(tmp / f"e2e-{n}" / "smtp", db.url, provider_config("smtp", port))
            send = run_workers(path, db.engine, db.edition_id, workers, env, tmp / f"e2e-{n}" / "smtp",
                               server_port=port)
    import_ = {k: v for k, v in db.phases["import"].items() if k != "output"}
    whole = db.phases["import"]["seconds"] + db.phases["create"]["seconds"] + send["seconds_with_start_up"]
    return {"subscribers": n, "import": import_, "create": db.phases["create"], "send": send,
            "whole_seconds": round(whole, 1), "load_before": db.phases["load_before"], "load_after": load()}


def grant_worker(url: str, seconds: float, out, ready, go) -> None:
    """Child process: take grants from one shared token bucket row as fast as it can
    (the row's lock serialises them), each in its own transaction as workers do."""
    from newsletter.store import make_engine
    from newsletter.store import workers as store

    engine = make_engine(url)
    with engine.connect():
        pass
    grants = 0
    ready.release()
    go.wait()
    start = time.time()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with engine.begin() as conn:  # a rate no grant can empty: every call is granted
            got, _ = store.take_tokens(conn, "rate", 1e9, 1e9, 25)
        grants += got > 0
    out.put((grants, start, time.time()))


def grants_bench(url: str, procs: int, seconds: float = 5.0) -> dict:
    """What the shared ``rate`` row sustains: grants/s with ``procs`` processes taking them."""

    load_before = load()
    results = run_together(grant_worker, (url, seconds), procs)
    elapsed = max(r[2] for r in results) - min(r[1] for r in results)
    grants = sum(r[0] for r in results)
    return {"processes": procs, "grants": grants, "seconds": round(elapsed, 2),
            "grants_per_second": round(grants / elapsed, 1), "load_before": load_before, "load_after": load()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subscribers", type=int, default=20000)
    ap.add_argument("--million", action="store_true",
                    help="1,000,000 subscribers end to end, after the same steps at --subscribers as the baseline")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--targets", default="smtp,smtp-dkim,http")
    ap.add_argument("--claims", default="", help="also: P processes claiming with no provider (a list: 1,2,4,8)")
    ap.add_argument("--grants", default="", help="also: P processes taking grants from the shared rate row "
                    "(a list: 1,8)")
    ap.add_argument("--http-processes", type=int, default=1,
                    help="processes of the contract server sharing its port (1: one Python process, whose "
                         "GIL serialises the parsing of concurrent requests)")
    ap.add_argument("--serve-http", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--create-edition", help=argparse.SUPPRESS)
    ap.add_argument("--million-size", type=int, default=1_000_000, help=argparse.SUPPRESS)  # the test's small run
    args = ap.parse_args()
    if args.serve_http:
        return serve_http(args.serve_http, args.port)
    if args.create_edition:
        return create_edition_child(args.create_edition)
    counts = [int(x) for x in args.workers.split(",")]
    targets = args.targets.split(",")

    from sqlalchemy import create_engine

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    tmp = Path(tempfile.mkdtemp(prefix="nl-scale-"))
    env = {**os.environ, "NEWSLETTER_SECRET": "bench-secret", "NL_BENCH_PM": "pm-bench-token",
           "PYTHONPATH": str(ROOT)}
    env.pop("NEWSLETTER_STORAGE_URL", None)
    out: dict = {"database": "postgresql", "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M UTC",
                 time.gmtime()), "load_start": load()}
    try:
        if args.million:
            workers = counts[-1] if len(counts) == 1 else 2
            runs = {}
            for n in (args.subscribers, args.million_size):
                runs[n] = end_to_end(admin, n, workers, tmp, env)
                print(json.dumps({"end_to_end": runs[n]}, ensure_ascii=False), file=sys.stderr)
            small, big = runs[args.subscribers], runs[args.million_size]
            out["end_to_end"] = {"workers": workers, "baseline": small, "million": big,
                                 # peak RSS at 1,000,000 over the same process at the baseline size
                                 "peak_rss_ratio": {
                                     "import": round(big["import"]["peak_rss_mb"] / small["import"]["peak_rss_mb"], 3),
                                     "create": round(big["create"]["peak_rss_mb"] / small["create"]["peak_rss_mb"], 3),
                                     "workers": [round(b / a, 3) for a, b in zip(
                                         small["send"]["peak_rss_mb_per_worker"],
                                         big["send"]["peak_rss_mb_per_worker"], strict=True)]}}
            return
        out["subscribers"] = args.subscribers
        out["http_processes"] = args.http_processes
        out["runs"] = {}
        with Database(admin, args.subscribers, tmp / "db", env) as db:
            out["import_seconds"] = db.phases["import"]["seconds"]
            out["create_edition_seconds"] = db.phases["create"]["create_edition_seconds"]
            out["delivery_rows"] = db.phases["create"]["pending"]
            out["phases"] = {k: {x: y for x, y in v.items() if x != "output"} if isinstance(v, dict) else v
                             for k, v in db.phases.items()}
            if args.claims:
                out["claims"] = []
                for p in (int(x) for x in args.claims.split(",")):
                    out["claims"].append(claims_bench(db.url, db.engine, db.edition_id, p))
                    print(json.dumps({"claims": out["claims"][-1]}), file=sys.stderr)
            if args.grants:
                out["grants"] = []
                for p in (int(x) for x in args.grants.split(",")):
                    out["grants"].append(grants_bench(db.url, p))
                    print(json.dumps({"grants": out["grants"][-1]}), file=sys.stderr)
            for target in targets:
                with (_http_server(tmp, args.http_processes) if target == "http" else smtp_sink()) as port:
                    path = write_config(tmp / target, db.url, provider_config(target, port, tmp / target))
                    runs = []
                    for k in counts:
                        r = run_workers(path, db.engine, db.edition_id, k, env, tmp / target, server_port=port)
                        runs.append(r)
                        print(json.dumps({"target": target, **r}, ensure_ascii=False), file=sys.stderr)
                    base = runs[0]["messages_per_second"]
                    for r in runs:
                        r["speedup"] = round(r["messages_per_second"] / base, 2)
                    out["runs"][target] = runs
    finally:
        admin.dispose()
        out["load_end"] = load()
        print(json.dumps(out, ensure_ascii=False, indent=1))


class _http_server:
    def __init__(self, tmp: Path, processes: int = 1):
        self.tmp, self.processes = tmp, processes

    def __enter__(self) -> int:
        from tests.http_servers import free_port

        port = free_port()
        files = [self.tmp / f"http.{i}.port" for i in range(self.processes)]
        self.procs = [subprocess.Popen([sys.executable, __file__, "--serve-http", str(f), "--port", str(port)])
                      for f in files]
        for _ in range(200):
            if all(f.exists() for f in files):
                return port
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("the HTTP contract server did not start")

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(10)


if __name__ == "__main__":
    main()
