"""Several colleagues at once: N concurrent real browser sessions open every dashboard page;
prints ONE JSON line.

    python benchmarks/load_test.py [--sessions 8] [--data DIR_OR_URL] [--timeout 600] [--pages overview,cost]
    python benchmarks/load_test.py --url http://127.0.0.1:8501 [--server-pid PID]   # a running server

`streamlit run app.py` as README's command starts it (tests/chromium.py's serve: the
repository's .streamlit/config.toml), on the shipped caches (or --data); or --url measures a
server that already runs (the Docker image, a team server), with its memory if --server-pid. Three passes, each
browser a fresh headless Chromium (own profile, nothing cached) that opens every page in turn:
1. warm-up: one session, so that the server's st.cache_data caches hold every page's tables
   (`warmup_s`; a team server answers most requests from them);
2. single session: one session alone, the baseline (`single_session_*`);
3. concurrent: N sessions in threads, each with its own browser, released together once every
   browser has started; each starts at a different page so the pages' scripts overlap.
Time to content runs from the request until the page's heading is shown, its charts are drawn,
the script has stopped and two more frames are painted (tests/chromium.py's wait_for_page);
starting Chromium is not counted. Errors are exception boxes and st.error boxes in the page,
pages not ready within wait_for_page's limit, browsers that fail, and pages not opened because
--timeout ran out (checked before each page, so a run ends at most one page wait after it).
--page-wait sets how long one page may take (tests/chromium.py's 60 s by default; a machine
busy with other work may need more to measure anything but timeouts).
The server's memory is its resident set plus its child processes', sampled every 0.2 s.
Goal (issue 19): no errors and concurrent p95 <= 3x the single-session p95 on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO)]  # run from a checkout, no install

import chromium  # noqa: E402
from chromium import CHROMIUM, PAGES, WAIT_SECONDS, new_browser, serve, wait_for_page  # noqa: E402

GOAL_RATIO = 3.0
MESSAGES_KEPT = 5  # first error messages in the JSON line; the count has them all
SAMPLE_SECONDS = 0.2


@dataclass(frozen=True)
class Visit:
    """One page opened by one session: seconds to content, or the problem that stopped it."""

    phase: str
    session: int
    page: str
    seconds: float | None
    problem: str | None = None


def page_problems(driver) -> list[str]:
    """Exception boxes and st.error boxes on the page, as the user sees them."""
    from selenium.webdriver.common.by import By

    boxes = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"], [data-testid="stAlertContentError"]')
    return [" ".join(box.text.split())[:300] for box in boxes]


def open_page(driver, url: str, path: str, heading: str, where: str) -> tuple[float | None, str | None]:
    from selenium.common.exceptions import TimeoutException, WebDriverException

    started = time.perf_counter()
    try:
        driver.get(f"{url}/{path}")
        wait_for_page(driver, heading)
        seconds = time.perf_counter() - started
        problems = page_problems(driver)
    except TimeoutException:  # an st.error without the page's heading lands here too: show it
        shown = page_problems(driver)
        return None, f"{where}: no content within {chromium.WAIT_SECONDS} s" + (f" (page shows: {shown[0]})" if shown else "")
    except WebDriverException as error:
        return None, f"{where}: browser failed ({type(error).__name__}: {str(error.msg).splitlines()[0][:200]})"
    return seconds, (f"{where}: " + " | ".join(problems)) if problems else None


# chromedrivers started at the same moment from several threads can pick the same free port and
# kill each other's session ("Remote end closed connection without response")
BROWSER_START = threading.Lock()


def run_session(url: str, pages: list[tuple[str, str]], phase: str, session: int, deadline: float,
                start: threading.Barrier | None = None) -> list[Visit]:
    """One fresh browser opening `pages` in order; waits at `start` (if given) before the first."""
    visits = []
    try:
        with contextlib.ExitStack() as stack:
            with BROWSER_START:  # started one at a time, measured together (after the barrier)
                driver = stack.enter_context(new_browser())
            if start is not None:
                try:
                    start.wait(timeout=max(deadline - time.monotonic(), 1.0))
                except threading.BrokenBarrierError:
                    pass  # another browser failed to start (reported by its session); measure anyway
            for path, heading in pages:
                name = path or "overview"
                where = f"{phase} session {session} page {name}"
                if time.monotonic() > deadline:
                    visits.append(Visit(phase, session, name, None, f"{where}: not opened, --timeout reached"))
                    continue
                seconds, problem = open_page(driver, url, path, heading, where)
                visits.append(Visit(phase, session, name, seconds, problem))
    except Exception as error:  # chromedriver or Chromium did not start: one error, others go on
        if start is not None:
            start.abort()
        first_line = (str(error).splitlines() or [""])[0][:200]
        visits.append(Visit(phase, session, "browser", None,
                            f"{phase} session {session}: browser failed ({type(error).__name__}: {first_line})"))
    return visits


def run_concurrent(url: str, pages: list[tuple[str, str]], sessions: int, deadline: float) -> list[Visit]:
    """`sessions` threads, each its own browser; session i starts at page i (mod the page count)."""
    start = threading.Barrier(sessions)
    results: list[list[Visit]] = [[] for _ in range(sessions)]

    def work(i: int) -> None:
        rotated = pages[i % len(pages):] + pages[:i % len(pages)]
        results[i] = run_session(url, rotated, "concurrent", i, deadline, start)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(sessions)]
    for thread in threads:
        thread.start()
    for i, thread in enumerate(threads):  # a page wait may run past the deadline, never longer
        thread.join(timeout=max(deadline - time.monotonic(), 0) + chromium.WAIT_SECONDS + 60)
        if thread.is_alive():
            results[i] = [Visit("concurrent", i, "session", None, f"concurrent session {i}: still running at the end")]
    return [visit for session in results for visit in session]


class PeakMemory(threading.Thread):
    """Samples the resident memory of a process and its children until stopped; keeps the peak."""

    def __init__(self, process: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.process, self.stopped = process, threading.Event()
        self.idle_mb = self.peak_mb = self.sample()

    def sample(self) -> float:
        total = 0
        try:
            family = [self.process, *self.process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        for process in family:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue  # a child that just ended
        return total / 2**20

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_SECONDS):
            self.peak_mb = max(self.peak_mb, self.sample())

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


def server_process(url: str) -> psutil.Process:
    """The `streamlit run` process serve() started for `url` (found by its --server.port)."""
    port = url.rsplit(":", 1)[1]
    for child in psutil.Process().children(recursive=True):
        try:
            command = child.cmdline()
        except psutil.Error:
            continue
        if "streamlit" in command and port in command:
            return child
    raise RuntimeError(f"no streamlit process listening on port {port} among this process's children")


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[94]


def summary(visits: list[Visit]) -> dict:
    seconds = [v.seconds for v in visits if v.seconds is not None]
    return {"p50_s": round(statistics.median(seconds), 2) if seconds else None,
            "p95_s": round(p95(seconds), 2) if seconds else None,
            "max_s": round(max(seconds), 2) if seconds else None}


def by_page(visits: list[Visit], pick) -> dict[str, float | None]:
    pages = dict.fromkeys(v.page for v in visits)
    return {page: (round(pick(s), 2) if (s := [v.seconds for v in visits if v.page == page and v.seconds is not None])
                   else None) for page in pages}


def selected_pages(names: str | None) -> list[tuple[str, str]]:
    if not names:
        return list(PAGES)
    known = {path or "overview": (path, heading) for path, heading in PAGES}
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise SystemExit(f"error: --pages expected names from {', '.join(known)}; got {names!r}: "
                         "pass a comma-separated list of those, or leave --pages out for every page")
    return [known[name] for name in wanted]


def chromium_version() -> str | None:
    """The version number `chromium --version` prints (e.g. 156.0.8078.114); None when it does not answer."""
    try:
        words = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30).stdout.split()
    except (OSError, TypeError, subprocess.SubprocessError):
        return None
    return next((word for word in words if word[:1].isdigit()), None)


def check_reachable(url: str) -> None:
    try:
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=10)
    except OSError as error:
        raise SystemExit(f"error: --url expected a running dashboard; {url}/_stcore/health answered "
                         f"{getattr(error, 'reason', error)}: start it (docker run ...) or check the URL") from None


def first_of_each_kind(problems: list[str]) -> list[str]:
    """One message per distinct problem (the part after "<phase> session i page p: "), in order."""
    kinds = {}
    for problem in problems:
        kinds.setdefault(problem.split(": ", 1)[-1], problem)
    return list(kinds.values())


def progress(phase: str, visits: list[Visit]) -> list[Visit]:
    """One line on stderr per pass (stdout carries only the JSON line)."""
    problems = sum(v.problem is not None for v in visits)
    print(f"load_test: {phase}: {len(visits)} page visits, {problems} with problems", file=sys.stderr)
    return visits


def measure(url: str, server: psutil.Process | None, pages: list[tuple[str, str]], sessions: int,
            timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    memory = PeakMemory(server) if server is not None else None
    if memory is not None:
        memory.start()
    try:
        warmup = progress("warm-up", run_session(url, pages, "warm-up", 0, deadline))
        single = progress("single session", run_session(url, pages, "single", 0, deadline))
        concurrent = progress(f"{sessions} concurrent sessions", run_concurrent(url, pages, sessions, deadline))
    finally:
        if memory is not None:
            memory.stop()
    problems = [v.problem for v in (*warmup, *single, *concurrent) if v.problem]
    alone, together = summary(single), summary(concurrent)
    ratio = (round(together["p95_s"] / alone["p95_s"], 2)
             if together["p95_s"] is not None and alone["p95_s"] else None)
    return {
        "warmup_s": by_page(warmup, max), "single_session_s": by_page(single, max),
        "single_session_p50_s": alone["p50_s"], "single_session_p95_s": alone["p95_s"],
        "concurrent_p50_s": together["p50_s"], "concurrent_p95_s": together["p95_s"],
        "concurrent_max_s": together["max_s"], "concurrent_p95_by_page_s": by_page(concurrent, p95),
        "concurrent_visits": sum(v.seconds is not None for v in concurrent),
        "ratio_p95": ratio, "goal_ratio": GOAL_RATIO, "errors": len(problems),
        "error_messages": first_of_each_kind(problems)[:MESSAGES_KEPT],
        "server_rss_idle_mb": round(memory.idle_mb, 1) if memory else None,
        "server_rss_peak_mb": round(memory.peak_mb, 1) if memory else None,
        "meets_goal": not problems and ratio is not None and ratio <= GOAL_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8, help="concurrent browser sessions (default 8)")
    parser.add_argument("--data", default=None,
                        help="data folder or http(s) URL (default: the repository's data/)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds for all three passes; pages not opened by then count as errors (default 600)")
    parser.add_argument("--pages", default=None, help="comma-separated page names (default: every page)")
    parser.add_argument("--page-wait", type=float, default=WAIT_SECONDS,
                        help=f"seconds one page may take before it counts as an error (default {WAIT_SECONDS})")
    parser.add_argument("--url", default=None,
                        help="measure a server already running there (e.g. the Docker image) instead of starting one")
    parser.add_argument("--server-pid", type=int, default=None,
                        help="with --url: the server's process id, for its memory (docker inspect -f '{{.State.Pid}}')")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.timeout <= 0:
        parser.error(f"--sessions expected >= 1 and --timeout > 0; got {args.sessions} and {args.timeout}")
    if args.server_pid and not psutil.pid_exists(args.server_pid):
        parser.error(f"--server-pid expected a running process; {args.server_pid} is not one: "
                     "give the server's pid (docker inspect -f '{{.State.Pid}}' CONTAINER) or leave it out")
    pages = selected_pages(args.pages)
    chromium.WAIT_SECONDS = args.page_wait  # wait_for_page reads it at each call
    load_before, version, started = os.getloadavg(), chromium_version(), time.monotonic()
    if args.url:
        check_reachable(args.url.rstrip("/"))
        server = psutil.Process(args.server_pid) if args.server_pid else None
        result = measure(args.url.rstrip("/"), server, pages, args.sessions, args.timeout)
    else:
        with tempfile.TemporaryDirectory() as logs, serve(args.data, Path(logs)) as url:
            result = measure(url, server_process(url), pages, args.sessions, args.timeout)
    print(json.dumps({
        "benchmark": "load_test", "url": args.url, "data": None if args.url else str(args.data or REPO / "data"),
        "sessions": args.sessions,
        "pages": [path or "overview" for path, _ in pages], **result,
        "wall_s": round(time.monotonic() - started, 1), "cores": os.cpu_count(),
        "chromium": version,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
