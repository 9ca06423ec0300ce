"""First-render time of every dashboard page on the shipped caches; prints ONE JSON line.

    python benchmarks/page_render.py [--data DIR_OR_URL] [--repeats N]

Each page is run through Streamlit's AppTest (the real script run, without a browser) and
timed by app.py itself (``st.session_state["_render_seconds"]``: router + sidebar + page, what a
server spends before the browser draws; AppTest's own polling is excluded). Imports are warmed
once (``import_s``); then for every page the st.cache_data caches are cleared and the page is
run once ("first render": cold caches, every Parquet scan done) and once more ("cached
render"). The best of ``--repeats`` is reported, to damp noise from other jobs on a shared
machine; ``load_avg`` says how busy the machine was. Target: every first render <= 1 s (issue 5).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# every cached page app.py routes; the live page (torch, a model load) is timed by benchmarks/own_input.py
PAGES = tuple(sorted(path.stem for path in (REPO / "dashboard" / "pages").glob("*.py") if path.stem != "own_input"))
TARGET_SECONDS = 1.0


def _render(at, page: str) -> tuple[float, list[str]]:
    """Seconds app.py spent on one run of ``page``, and the problems (exceptions, errors) shown."""
    at.switch_page(f"dashboard/pages/{page}.py")
    at.run()
    shown = [str(e.value)[:200] for e in at.exception] + [str(e.value)[:200] for e in at.error]
    return at.session_state["_render_seconds"], shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("EFFATTN_DATA") or str(REPO / "data"),
                        help="data folder or URL (default: $EFFATTN_DATA or the repository's data/)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per page; the best is reported")
    args = parser.parse_args(argv)
    os.environ["EFFATTN_DATA"] = args.data
    sys.path.insert(0, str(REPO))
    local = Path(args.data)
    if not args.data.startswith(("http://", "https://")) and not (
            (local / "manifest.json").is_file() or any(local.glob("*/manifest.json"))):
        print(json.dumps({"benchmark": "page_render", "data": args.data,
                          "error": "no run folder (with manifest.json) there: run `python -m precompute` first"}))
        return 2

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    start = time.perf_counter()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300).run()  # warms imports and file cache
    import_seconds = time.perf_counter() - start

    first, cached, problems = {}, {}, {}
    for page in PAGES:
        best_first = best_cached = float("inf")
        for _ in range(args.repeats):
            st.cache_data.clear()
            seconds, shown = _render(at, page)
            best_first = min(best_first, seconds)
            best_cached = min(best_cached, _render(at, page)[0])
            if shown:
                problems[page] = shown
        first[page], cached[page] = round(best_first, 3), round(best_cached, 3)

    print(json.dumps({
        "benchmark": "page_render", "data": args.data, "first_render_s": first, "cached_render_s": cached,
        "max_first_render_s": max(first.values()), "target_s": TARGET_SECONDS,
        "meets_target": max(first.values()) <= TARGET_SECONDS, "import_s": round(import_seconds, 3),
        "problems": problems, "load_avg": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
