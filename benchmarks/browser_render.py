"""Time to content of every dashboard page in a real browser; prints ONE JSON line.

    python benchmarks/browser_render.py [--data DIR]

`streamlit run app.py` as README's command starts it (the repository's .streamlit/config.toml:
no file watcher), on the shipped caches (or --data). For each page a fresh headless Chromium
(new profile, nothing cached) opens its URL, and the time runs from the request until the
page's heading is shown, its charts are drawn, the script has stopped and two more frames are
painted (tests/chromium.py's wait_for_page). Each page is opened twice, in two fresh browsers:
`first_s` with the server's caches cold for that page, `warm_server_s` with them filled, as a
second colleague opening the same page sees it. Starting Chromium itself is not counted.
Goal (issue 16): every page's content <= 2 s in a fresh browser session on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO)]  # run from a checkout, no install

from chromium import PAGES, new_browser, serve, wait_for_page  # noqa: E402

GOAL_SECONDS = 2.0


def time_to_content(url: str, heading: str) -> float:
    with new_browser() as driver:
        started = time.perf_counter()
        driver.get(url)
        wait_for_page(driver, heading)
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: the repository's data/)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    first, warm = {}, {}
    with tempfile.TemporaryDirectory() as logs, serve(args.data, Path(logs)) as url:
        for path, heading in PAGES:
            name = path or "overview"
            first[name] = round(time_to_content(f"{url}/{path}", heading), 2)
            warm[name] = round(time_to_content(f"{url}/{path}", heading), 2)
    worst = max(first.values())
    print(json.dumps({
        "benchmark": "browser_render", "data": str(args.data or REPO / "data"), "first_s": first,
        "warm_server_s": warm, "max_first_s": worst, "max_warm_server_s": max(warm.values()),
        "goal_s": GOAL_SECONDS, "meets_goal": worst <= GOAL_SECONDS, "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
