"""Headless Chromium against `streamlit run app.py`: what the browser test and
benchmarks/browser_render.py share (starting the server, a fresh browser, waiting for content)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cache_fixture import free_port

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_SECONDS = 90  # first load compiles plotly in the browser (and the live page imports torch) on a busy 2-core machine
PAGES = [  # (url path, heading); every page draws at least one plotly chart
    ("", "Effective vs standard attention"),
    ("patterns", "Attention patterns"),
    ("token_types", "Token types in the [CLS] row"),
    ("special_tokens", "Attention to [CLS] and [SEP]"),
    ("attribution", "Attention vs gradient attribution"),
    ("sparse", "Sparse attention"),
    ("finetuning", "What finetuning changes"),
    ("compare_runs", "Compare runs"),
    ("explorer", "Example explorer"),
    ("own_input", "Your own input"),  # live: the first view imports torch and loads the model
    ("cost", "What effective attention costs"),
]


@contextmanager
def serve(data: Path | None, log_folder: Path) -> Iterator[str]:
    """`streamlit run app.py` on `data` (None: the repository's shipped data/), with the
    repository's .streamlit/config.toml, as README's command runs it; yields its URL."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "EFFATTN_DATA"}
    if data is not None:
        env["EFFATTN_DATA"] = str(data)
    log = open(log_folder / "streamlit.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
         "127.0.0.1"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"streamlit did not start within {WAIT_SECONDS} s:\n{log.read()}") from None
                time.sleep(0.3)  # polling a starting server, not waiting for a result
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@contextmanager
def new_browser() -> Iterator[object]:
    """A headless Chromium with a fresh profile (nothing cached), driven by chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="effattn-chromium-")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1500,1900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for_page(driver, heading: str) -> None:
    """Wait until the heading is shown, charts are drawn and the script has stopped running."""
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d) -> bool:
        titles = [h.text for h in d.find_elements(By.CSS_SELECTOR, "h1")]
        if not any(heading in title for title in titles):
            return bool(d.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'))
        if not d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg"):
            return False
        return not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]')

    # Streamlit redraws elements between a find and a read: a stale element means "look again"
    WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)).until(ready)
    next_frames(driver)  # let plotly finish laying out


def next_frames(driver) -> None:
    """Block until the browser has painted twice more (an event, not a fixed sleep)."""
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "requestAnimationFrame(() => requestAnimationFrame(() => done()));")
