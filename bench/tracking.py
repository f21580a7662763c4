"""Benchmark: the tracked-click redirect ``/r/`` on SQLite and PostgreSQL.

    python bench/tracking.py --requests 3000
    python bench/tracking.py --requests 500 --stores sqlite

For each store: a project with ``tracking = "per-subscriber"`` sends an edition
to the file outbox; the web app (create_app on uvicorn, as ``newsletter
serve`` runs it) is started in a child process with one extra route, a static
302 — the baseline, measured against the same server in the same run.  Client
threads with keep-alive connections request the mails' ``/r/`` links, then the
static route.  The server is then stopped cleanly (SIGTERM: its event buffer is
written) and the stored click events are counted: ``events_stored`` must equal
``requests``.  (A ``kill -9`` loses at most the events of one flush interval,
one second; see README.)

Client and server share this machine's cores; the ratio is the point.  Prints JSON.
"""

from __future__ import annotations

import argparse
import email
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from email import policy
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("NEWSLETTER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _serve(config_path: str, port: int) -> None:
    """The child process: the app plus a static 302 on /static-302."""
    import uvicorn
    from starlette.responses import RedirectResponse
    from starlette.routing import Route

    from newsletter.config import load_config
    from newsletter.web import create_app

    app = create_app(load_config(config_path))

    async def static(request):
        return RedirectResponse("https://news.example.jp/articles/1", status_code=302)

    app.router.routes.append(Route("/static-302", static, methods=["GET"]))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")


def _project(folder: Path, url: str, subscribers: int) -> Path:
    from tests.conftest import CLI, write_config

    tracking = 'full_text = false\ntracking = "per-subscriber"'
    cli = CLI(write_config(folder, url, replace={"full_text = false": tracking}))
    cli("init")
    csv = folder / "subs.csv"
    csv.write_text("email,name,fields,format\n" + "".join(
        f"r{i}@example.jp,読者{i},education;administration,html\n" for i in range(subscribers)), encoding="utf-8")
    cli("subscriber", "import", csv)
    for i in range(1, 4):
        cli("article", "add", "--title", f"記事{i}：県の新しい施策", "--url", f"https://news.example.jp/articles/{i}",
            "--field", "education" if i < 3 else "administration", "--summary", "概要です。")
    cli("edition", "send", "weekly")
    return cli.config_path


def _links(folder: Path) -> list[str]:
    out = []
    for p in sorted((folder / "var" / "outbox").glob("*.eml")):
        m = email.message_from_bytes(p.read_bytes(), policy=policy.default)
        out += [urlsplit(unescape(u)).path for u in re.findall(r'href="(https://news\.example\.jp/r/[^"]+)"',
                                                                 m.get_body(("html",)).get_content())]
    return out


def _hammer(port: int, paths: list[str], threads: int) -> float:
    """Requests per second over ``paths`` with ``threads`` keep-alive clients."""
    chunks = [paths[i::threads] for i in range(threads)]
    errors: list[str] = []

    def run(chunk: list[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for path in chunk:
            conn.request("GET", path, headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0"})
            res = conn.getresponse()
            res.read()
            if res.status != 302:
                errors.append(f"{path}: {res.status}")
        conn.close()

    workers = [threading.Thread(target=run, args=(c,)) for c in chunks]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"unexpected answers: {errors[:3]}")
    return len(paths) / elapsed


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not start")


def run_store(kind: str, requests: int, subscribers: int, threads: int) -> dict:
    from sqlalchemy import create_engine, func, select, text

    from newsletter.store.tables import stats_events

    tmp = Path(tempfile.mkdtemp(prefix=f"bench-tracking-{kind}-"))
    pg_name = None
    admin = None
    try:
        if kind == "sqlite":
            url = f"sqlite:///{tmp / 'project' / 'var' / 'newsletter.db'}"
        else:
            pg_name = f"nl_bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{pg_name}"'))
            url = re.sub(r"/[^/]*$", f"/{pg_name}", PG_ADMIN_URL)
        config_path = _project(tmp / "project", url, subscribers)
        links = _links(tmp / "project")
        paths = [links[i % len(links)] for i in range(requests)]
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen([sys.executable, __file__, "--serve", str(config_path), "--port", str(port)], env=env)
        try:
            _wait_port(port)
            _hammer(port, paths[: min(200, len(paths))], threads)  # warm-up (counted too)
            redirect_rps = _hammer(port, paths, threads)
            static_rps = _hammer(port, ["/static-302"] * requests, threads)
        finally:
            child.send_signal(signal.SIGTERM)  # a clean stop: the buffer is written
            child.wait(60)
        engine = create_engine(url)
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(stats_events)).scalar()
        engine.dispose()
        sent = requests + min(200, len(paths))
        return {"requests": sent, "events_stored": stored, "lost": sent - stored,
                "redirect_per_s": round(redirect_rps, 1), "static_302_per_s": round(static_rps, 1),
                "ratio_to_static": round(redirect_rps / static_rps, 3)}
    finally:
        if admin is not None and pg_name:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
            admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--subscribers", type=int, default=50)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        _serve(args.serve, args.port)
        return
    out = {"requests": args.requests, "threads": args.threads}
    for kind in args.stores.split(","):
        out[kind] = run_store(kind, args.requests, args.subscribers, args.threads)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
