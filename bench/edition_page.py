"""Benchmark: the console's edition page with N subscribers — a page view (reader
counts from one GROUP BY, one render for the text part) against the full
preflight its 配信前チェック button runs (every reader walked, every variant
rendered: what each page view used to cost), in the same run.

    python bench/edition_page.py --subscribers 100000
    python bench/edition_page.py --subscribers 2000          # what CI runs

Steps: a temporary project (SQLite), N made-up subscribers over all 7 field
combinations, both formats and both charsets (inserted in bulk: the import is
bench/import_subscribers.py's subject), 10 queued articles per field, a draft
made by the library, an editor signed in through the real app (Starlette's
TestClient); then GET of the page and POST of 配信前チェック, each timed.  The
reader counts of the page are checked against the full plan's.  Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from send import FIELDS, queue_articles, write_project  # noqa: E402

COMBOS = [c for c in (",".join(f for j, f in enumerate(FIELDS) if m >> j & 1) for m in range(1, 8))]
PASSWORD = "bench password 2026"


def add_subscribers(engine, n: int) -> None:
    from newsletter.store.tables import subscribers, utcnow

    now = utcnow()
    rows = [{"email": f"reader{i:07d}@example.jp", "name": "", "fields": COMBOS[i % 7],
             "format": "html" if (i // 7) % 2 == 0 else "text", "charset": "iso-2022-jp" if i % 5 == 0 else None,
             "status": "active", "created_at": now, "updated_at": now} for i in range(n)]
    with engine.begin() as conn:
        for i in range(0, n, 10_000):
            conn.execute(subscribers.insert(), rows[i:i + 10_000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--views", type=int, default=5, help="Page views timed (the median is reported).")
    args = parser.parse_args()

    from starlette.testclient import TestClient

    from newsletter import preflight, users
    from newsletter.config import load_config
    from newsletter.editions import state
    from newsletter.store import editions as q
    from newsletter.store import make_engine, upgrade
    from newsletter.users import Actor
    from newsletter.web import create_app

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = load_config(write_project(folder, "file", None, 1))
        engine = make_engine(config.storage_url)
        upgrade(engine)
        config.create_secret()
        add_subscribers(engine, args.subscribers)
        queue_articles(engine, config)
        users.add_user(engine, "henshu", "henshu@example.jp", "editor", PASSWORD)
        draft = state.create_draft(engine, config, config.publication("weekly"), Actor("henshu", "cli", "editor"))
        with engine.connect() as conn:
            row = q.get_edition(conn, draft.edition_id)

        client = TestClient(create_app(config, engine), base_url="https://testserver", follow_redirects=False)
        page = client.get("/admin/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        assert client.post("/admin/login", data={"csrf": token, "username": "henshu",
                                                 "password": PASSWORD}).status_code == 303
        path = f"/admin/editions/{draft.edition_id}"
        views = []
        for _ in range(args.views):
            t = time.perf_counter()
            page = client.get(path)
            views.append(time.perf_counter() - t)
            assert page.status_code == 200, page.status_code
        shown = {m.group(1): int(m.group(2)) for m in re.finditer(r"<h3>([^<]+)（読者 (\d+) 人）</h3>", page.text)}

        token = re.search(rf'action="{path}/check"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"',
                          page.text).group(1)
        t = time.perf_counter()
        checked = client.post(f"{path}/check", data={"csrf": token})
        check_seconds = time.perf_counter() - t
        assert checked.status_code == 200, checked.status_code

        plan = preflight.plan_send(engine, config, config.publication("weekly"), edition=row)
        assert sum(shown.values()) == sum(plan.variants.values()) and len(shown) == len(plan.variants), \
            (shown, plan.variants)
        views.sort()
        print(json.dumps({
            "subscribers": args.subscribers, "variants": len(plan.variants),
            "page_view_seconds_median": round(views[len(views) // 2], 4),
            "preflight_check_seconds": round(check_seconds, 4),
            "check_over_view": round(check_seconds / views[len(views) // 2], 1),
        }, indent=1))
        engine.dispose()


if __name__ == "__main__":
    main()
