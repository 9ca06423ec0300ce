"""benchmarks/load_test.py end to end, small: 2 concurrent browser sessions on the fixture caches.

Asserts the JSON line's fields and that no session saw an error; never its times (a shared
machine's timings are the benchmark's business, not a test's). Skipped only when chromium or
chromedriver is not installed; `.ci/run` installs both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chromium import CHROMEDRIVER, CHROMIUM

REPO = Path(__file__).resolve().parent.parent
PAGES = ("overview",)  # one page keeps it quick (4 browsers, 4 page loads); the benchmark's default is every page

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver; .ci/run does)",
)


@pytest.fixture(scope="module")
def report(fixture_caches) -> dict:
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "load_test.py"), "--sessions", "2", "--data", str(fixture_caches),
         "--pages", ",".join(PAGES), "--timeout", "240"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    assert len(lines) == 1, completed.stdout  # ONE JSON line, nothing else on stdout
    return json.loads(lines[0])


def test_load_test_reports_no_errors_with_two_sessions(report):
    assert report["errors"] == 0, report["error_messages"]
    assert report["error_messages"] == []


def test_load_test_times_every_page_of_every_session(report):
    assert report["sessions"] == 2 and report["pages"] == list(PAGES)
    assert report["concurrent_visits"] == 2 * len(PAGES)
    for field in ("warmup_s", "single_session_s", "concurrent_p95_by_page_s"):
        assert set(report[field]) == set(PAGES) and all(v > 0 for v in report[field].values()), field
    for field in ("single_session_p50_s", "single_session_p95_s", "concurrent_p50_s", "concurrent_p95_s", "ratio_p95"):
        assert report[field] > 0, field
    assert report["single_session_p50_s"] <= report["single_session_p95_s"]
    assert report["concurrent_p50_s"] <= report["concurrent_p95_s"] <= report["concurrent_max_s"]


def test_load_test_reports_server_memory_load_and_browser(report):
    assert 0 < report["server_rss_idle_mb"] <= report["server_rss_peak_mb"]
    assert len(report["load_average_before"]) == 3 and len(report["load_average_after"]) == 3
    assert report["chromium"] and report["chromium"][0].isdigit()
    assert report["meets_goal"] in (True, False) and report["goal_ratio"] == 3.0


def test_load_test_rejects_an_unknown_page_in_one_line():
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "load_test.py"), "--pages", "overview,nope"],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert completed.returncode != 0
    message = completed.stderr.strip()
    assert "\n" not in message and "--pages" in message and "'overview,nope'" in message and "explorer" in message
