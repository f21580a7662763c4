"""The benchmarks run with small numbers so they cannot rot (no timing is asserted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HAVE_SINK = bool(shutil.which("smtp-sink") or os.path.exists("/usr/sbin/smtp-sink"))


def run(*args: str) -> dict:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout[out.stdout.index("{"):])


@pytest.mark.skipif(not HAVE_SINK and os.environ.get("CI") != "true",
                    reason="Postfix's smtp-sink is not installed (apt-get install postfix)")
def test_send_benchmark_small():
    result = run("bench/send.py", "--subscribers", "2000", "--naive-sample", "30")
    assert result["sent"] == 2000 and result["failed"] == 0
    assert result["variants"] == 14 and result["renders"] == 7  # once per field set, not per recipient
    for key in ("import_seconds", "assemble_render_seconds", "send_seconds", "messages_per_s",
                "avg_message_bytes", "peak_rss_mb", "limit_messages_per_s", "naive_messages_per_s",
                "ratio_to_limit", "speedup_vs_naive"):
        assert result[key] > 0, key


def test_send_benchmark_file_provider():
    result = run("bench/send.py", "--subscribers", "500", "--provider", "file")
    assert result["sent"] == 500 and result["messages_per_s"] > 0


def test_import_benchmark_small():
    result = run("bench/import_subscribers.py", "--rows", "1000")
    assert result["rows"] == 1000 and result["rows_per_s"] > 0 and result["naive_rows_per_s"] > 0


def test_import_memory_check_small():
    result = run("bench/import_subscribers.py", "--memory-check", "500,2000")
    assert set(result["memory_check"]) == {"500", "2000"}
    for size in ("500", "2000"):
        assert result["memory_check"][size]["peak_rss_mb"] > 0
    assert result["peak_rss_ratio"] > 0


def test_tracking_benchmark_small():
    result = run("bench/tracking.py", "--requests", "200", "--subscribers", "10", "--stores", "sqlite")
    sqlite = result["sqlite"]
    assert sqlite["lost"] == 0 and sqlite["events_stored"] == sqlite["requests"] > 0
    assert sqlite["redirect_per_s"] > 0 and sqlite["static_302_per_s"] > 0


@pytest.mark.postgres
@pytest.mark.skipif(not HAVE_SINK and os.environ.get("CI") != "true",
                    reason="Postfix's smtp-sink is not installed (apt-get install postfix)")
def test_scale_benchmark_small():
    from tests.conftest import PG_AVAILABLE

    if not PG_AVAILABLE and os.environ.get("NEWSLETTER_REQUIRE_POSTGRES") != "1":
        pytest.skip("PostgreSQL not reachable")
    result = run("bench/scale.py", "--subscribers", "300", "--workers", "1,2", "--targets", "smtp",
                 "--claims", "2", "--grants", "2")
    runs = result["runs"]["smtp"]
    assert [r["workers"] for r in runs] == [1, 2] and all(r["sent"] == 300 for r in runs)
    assert runs[0]["speedup"] == 1.0 and all(len(r["cpu_seconds_per_worker"]) == r["workers"] for r in runs)
    assert [c["processes"] for c in result["claims"]] == [2]
    assert result["claims"][0]["rows"] == 300 and result["delivery_rows"] == 300
    assert result["grants"][0]["processes"] == 2 and result["grants"][0]["grants"] > 0


@pytest.mark.postgres
@pytest.mark.skipif(not HAVE_SINK and os.environ.get("CI") != "true",
                    reason="Postfix's smtp-sink is not installed (apt-get install postfix)")
def test_scale_benchmark_end_to_end_small():
    """--million's code path (import, creation, send, each timed, RSS against the baseline size)."""
    from tests.conftest import PG_AVAILABLE

    if not PG_AVAILABLE and os.environ.get("NEWSLETTER_REQUIRE_POSTGRES") != "1":
        pytest.skip("PostgreSQL not reachable")
    result = run("bench/scale.py", "--million", "--million-size", "400", "--subscribers", "200")
    e2e = result["end_to_end"]
    small, big = e2e["baseline"], e2e["million"]
    assert (small["create"]["pending"], big["create"]["pending"]) == (200, 400)
    assert (small["send"]["sent"], big["send"]["sent"]) == (200, 400)
    for run_ in (small, big):
        assert run_["import"]["peak_rss_mb"] > 0 and run_["create"]["peak_rss_mb"] > 0 and run_["whole_seconds"] > 0
    assert e2e["workers"] == 2 and len(e2e["peak_rss_ratio"]["workers"]) == 2
    assert len(result["load_start"]) == 3


def test_edition_page_benchmark_small():
    result = run("bench/edition_page.py", "--subscribers", "300", "--views", "2")
    assert result["subscribers"] == 300 and result["variants"] > 1
    assert result["page_view_seconds_median"] > 0 and result["preflight_check_seconds"] > 0
