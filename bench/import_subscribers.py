"""Benchmark: importing a large subscriber CSV.

    python bench/import_subscribers.py --rows 100000
    python bench/import_subscribers.py --rows 100000 --url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    python bench/import_subscribers.py --memory-check 100000,1000000    # peak RSS of the import, small vs large

Makes a temporary project (SQLite by default; with ``--url`` a temporary database
on that PostgreSQL server, dropped afterwards), writes a CSV of N made-up
subscribers spread over all 7 combinations of the 3 default fields, and times
``newsletter.subscribers.import_csv`` on it.  In the same run it measures the
baseline an import would have without batching: parse and validate each row the
same way, then insert the subscriber and its consent record and commit, one row
at a time, for a sample of min(N, 2000) rows into a fresh database, extrapolated
per row.  Prints JSON: rows, seconds, rows_per_s, naive_rows_per_s, speedup.

``--memory-check SMALL,LARGE`` runs the import alone in a child process for each
size (the CSV is written by the parent) and prints each child's peak RSS and
their ratio: a streamed import stays flat however long the file is.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from newsletter import subscribers as subs  # noqa: E402
from newsletter.config import Config, load_config  # noqa: E402
from newsletter.csvio import decode, read_rows  # noqa: E402
from newsletter.store import make_engine, upgrade  # noqa: E402
from newsletter.store.tables import consents, subscribers, utcnow  # noqa: E402

SURNAMES = "佐藤 鈴木 高橋 田中 伊藤 渡辺 山本 中村 小林 加藤 吉田 山田 佐々木 山口 松本 井上 木村 林 斎藤 清水".split()
GIVEN = "花子 一郎 美咲 健二 結衣 翔太 恵子 拓也 彩香 浩 直美 亮 陽菜 蓮 さくら 大翔 葵 湊 凛 悠真".split()
# The 7 non-empty combinations of the 3 fields, written the ways offices write them.
FIELD_CELLS = [
    "地方自治", "行政", "教育", "地方自治、行政", "local-government;education", "行政・教育",
    "地方自治、行政、教育",
]
DOMAINS = ["example.jp", "example.com", "example.org", "city.example.lg.jp", "pref.example.lg.jp"]


def write_csv(path: Path, rows: int) -> None:
    names = itertools.product(SURNAMES, GIVEN)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(["メールアドレス", "氏名", "分野", "形式"])
        for i in range(rows):
            try:
                sur, given = next(names)
            except StopIteration:
                names = itertools.product(SURNAMES, GIVEN)
                sur, given = next(names)
            w.writerow([
                f"member{i:07d}@{DOMAINS[i % len(DOMAINS)]}",
                f"{sur} {given}",
                FIELD_CELLS[i % len(FIELD_CELLS)],
                "text" if i % 5 == 0 else "html",
            ])


@contextlib.contextmanager
def database(base_url: str | None, folder: Path, name: str) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file in ``folder``, or a temporary PostgreSQL database."""
    if base_url is None or make_url(base_url).get_backend_name() == "sqlite":
        yield f"sqlite:///{folder / (name + '.db')}"
        return
    db = f"nl_bench_{name}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    try:
        yield make_url(base_url).set(database=db).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


def project(folder: Path, url: str) -> Config:
    source = (ROOT / "config.toml").read_text(encoding="utf-8")
    source = re.sub(r'(?m)^url = ".*"$', f'url = "{url}"', source, count=1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(source, encoding="utf-8")
    return load_config(folder / "config.toml")


def timed_import(config: Config, csv_path: Path, rows: int) -> float:
    engine = make_engine(config.storage_url)
    upgrade(engine)
    start = time.perf_counter()
    report = subs.import_csv(engine, config, csv_path)
    seconds = time.perf_counter() - start
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(subscribers)).scalar_one()
        consented = conn.execute(select(func.count()).select_from(consents)).scalar_one()
    engine.dispose()
    if report.problems or report.created != rows or stored != rows or consented != rows:
        raise SystemExit(f"import went wrong: {report.problems[:3]} created={report.created} stored={stored}")
    return seconds


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; see bench/send.py)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def import_phase(config_path: str, csv_path: str, rows: int) -> dict:
    """The child of --memory-check: the import alone, then this process's peak RSS."""
    config = load_config(Path(config_path))
    seconds = timed_import(config, Path(csv_path), rows)
    return {"rows": rows, "seconds": round(seconds, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}


def memory_check(base_url: str | None, small: int, large: int) -> dict:
    results = {}
    for n in (small, large):
        with tempfile.TemporaryDirectory(prefix="nl-bench-") as tmp:
            folder = Path(tmp)
            csv_path = folder / "members.csv"
            write_csv(csv_path, n)
            with database(base_url, folder, "memory") as url:
                config = project(folder / "memory", url)
                out = subprocess.run(
                    [sys.executable, __file__, "--import-phase", str(config.path), str(csv_path), str(n)],
                    check=True, capture_output=True, text=True,
                )
            results[n] = json.loads(out.stdout.strip().splitlines()[-1])
            results[n]["csv_mb"] = round(csv_path.stat().st_size / 2**20, 1)
    ratio = results[large]["peak_rss_mb"] / results[small]["peak_rss_mb"]
    return {"memory_check": {str(k): v for k, v in results.items()},
            "peak_rss_ratio": round(ratio, 3), "flat_within_15pct": ratio <= 1.15}


def timed_naive(config: Config, csv_path: Path, sample: int) -> float:
    """Same parsing and validation, then one INSERT (+ consent) and one COMMIT per row."""
    engine = make_engine(config.storage_url)
    upgrade(engine)
    text_ = decode(csv_path.read_bytes(), "auto", csv_path.name)
    rows = itertools.islice(read_rows(text_, csv_path.name, subs.CSV_ALIASES, ("email",)), sample)
    start = time.perf_counter()
    for _line, raw in rows:
        values = subs.validate(config, raw)
        with engine.begin() as conn:
            now = utcnow()
            sid = conn.execute(
                subscribers.insert().values(**values, status="active", created_at=now, updated_at=now)
            ).inserted_primary_key[0]
            conn.execute(consents.insert().values(subscriber_id=sid, event="import", at=now, source="naive"))
    seconds = time.perf_counter() - start
    engine.dispose()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--url", help="PostgreSQL server URL (a temporary database is made on it); default SQLite")
    parser.add_argument("--memory-check", metavar="SMALL,LARGE", help="compare peak RSS of the import")
    parser.add_argument("--import-phase", nargs=3, metavar=("CONFIG", "CSV", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    os.environ.pop("NEWSLETTER_STORAGE_URL", None)  # it would override the temporary project's database
    if args.import_phase:
        config_path, csv_path, rows = args.import_phase
        print(json.dumps(import_phase(config_path, csv_path, int(rows))))
        return
    if args.memory_check:
        try:
            small, large = (int(x) for x in args.memory_check.split(","))
        except ValueError:
            parser.error("--memory-check: expected SMALL,LARGE (two row counts)")
        print(json.dumps(memory_check(args.url, small, large), indent=2))
        return

    with tempfile.TemporaryDirectory(prefix="nl-bench-") as tmp:
        folder = Path(tmp)
        csv_path = folder / "members.csv"
        write_csv(csv_path, args.rows)
        sample = min(args.rows, 2000)
        with database(args.url, folder, "batched") as url:
            config = project(folder / "batched", url)
            backend = make_url(url).get_backend_name()
            seconds = timed_import(config, csv_path, args.rows)
        with database(args.url, folder, "naive") as url:
            naive_seconds = timed_naive(project(folder / "naive", url), csv_path, sample)

    rows_per_s = args.rows / seconds
    naive_rows_per_s = sample / naive_seconds
    print(json.dumps({
        "rows": args.rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows_per_s),
        "naive_rows_per_s": round(naive_rows_per_s),
        "speedup": round(rows_per_s / naive_rows_per_s, 1),
        "backend": backend,
        "naive_sample": sample,
    }))


if __name__ == "__main__":
    main()
