"""End to end: `streamlit run app.py` on fixture caches, every page opened in headless Chromium.

Fails on any exception or error box; saves a screenshot of each page to tests/artifacts/.
Skipped (with the reason) only when chromium or chromedriver is not installed; `.ci/run`
installs both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from cache_fixture import APP, free_port

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_SECONDS = 60  # first page load compiles plotly in the browser on a busy 2-core machine

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver; .ci/run does)",
)

PAGES = [  # (url path, heading); every page draws at least one plotly chart
    ("", "Effective vs standard attention"),
    ("patterns", "Attention patterns"),
    ("token_types", "Token types in the [CLS] row"),
    ("special_tokens", "Attention to [CLS] and [SEP]"),
    ("attribution", "Attention vs gradient attribution"),
    ("sparse", "Sparse attention"),
    ("finetuning", "What finetuning changes"),
    ("explorer", "Example explorer"),
    ("cost", "What effective attention costs"),
]


def _serve(data: Path | None, log_folder: Path):
    """`streamlit run app.py` on `data` (None: the repository's shipped data/); yields its URL."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "EFFATTN_DATA"}
    if data is not None:
        env["EFFATTN_DATA"] = str(data)
    log = open(log_folder / "streamlit.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=APP.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        process.terminate()
        log.seek(0)
        pytest.fail(f"streamlit did not start within {WAIT_SECONDS} s:\n{log.read()}")
    yield url
    process.terminate()
    process.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def server(fixture_caches, tmp_path_factory):
    yield from _serve(fixture_caches, tmp_path_factory.mktemp("log"))


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    if not (APP.parent / "data" / "minilm" / "manifest.json").is_file():
        pytest.skip("no shipped data/minilm in this checkout")
    yield from _serve(None, tmp_path_factory.mktemp("shipped_log"))


@pytest.fixture(scope="module")
def browser():
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
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait_for_page(driver, heading: str) -> None:
    """Wait until the heading is shown, charts are drawn and the script has stopped running."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d) -> bool:
        titles = [h.text for h in d.find_elements(By.CSS_SELECTOR, "h1")]
        if not any(heading in title for title in titles):
            return bool(d.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'))
        if not d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg"):
            return False
        return not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]')

    WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.3).until(ready)
    _next_frames(driver)  # let plotly finish laying out before the screenshot


def _next_frames(driver) -> None:
    """Block until the browser has painted twice more (an event, not a fixed sleep)."""
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "requestAnimationFrame(() => requestAnimationFrame(() => done()));")


def _screenshot(driver, name: str) -> None:
    """Save the whole page: grow the window to the content's height first (Streamlit scrolls inside)."""
    height = driver.execute_script(
        "return Math.max(...['stMain', 'stMainBlockContainer', 'stAppViewContainer']"
        ".map(id => document.querySelector(`[data-testid=\"${id}\"]`)?.scrollHeight || 0))")
    driver.set_window_size(1500, min(max(height + 120, 900), 9000))
    _next_frames(driver)  # plotly redraws on resize
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    driver.set_window_size(1500, 1900)


def _problems(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    boxes = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')
    return [box.text[:500] for box in [*boxes, *errors]]


@pytest.mark.parametrize(("path", "heading"), PAGES, ids=[p[0] or "overview" for p in PAGES])
def test_page_renders_in_chromium_without_errors(server, browser, path, heading):
    browser.get(f"{server}/{path}")
    _wait_for_page(browser, heading)
    _screenshot(browser, path or "overview")
    assert _problems(browser) == []


def test_url_reproduces_the_view_in_chromium(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{server}/explorer?task=sst2&ex_task=sst2&ex_example=1&ex_layer=2&ex_head=3")
    _wait_for_page(browser, "Example explorer")
    text = browser.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text
    assert "Example 1 (n = 12 tokens)" in text
    titles = browser.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => p.data.map(t => t.name).join('|'))")
    assert any("effective A_eff" in title for title in titles)
    _screenshot(browser, "explorer_from_url")
    assert _problems(browser) == []


def test_sidebar_selection_survives_a_page_switch_in_chromium(server, browser):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server}/?task=sst2&kind=effective")
    _wait_for_page(browser, "Effective vs standard attention")

    def click_link(d) -> bool:
        link = next(a for a in d.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a')
                    if "Special tokens" in a.text)
        link.click()
        return True

    # the sidebar may re-render between finding the link and clicking it: find it again then
    WebDriverWait(browser, WAIT_SECONDS, ignored_exceptions=(StaleElementReferenceException,)).until(click_link)
    _wait_for_page(browser, "Attention to [CLS] and [SEP]")
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: "special_tokens" in d.current_url)
    assert "task=sst2" in browser.current_url and "kind=effective" in browser.current_url
    main = browser.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text
    assert "mean [CLS] weight, effective" in main and "mean [CLS] weight, standard" not in main
    assert _problems(browser) == []


def test_clicking_a_grid_square_shows_maps_of_that_head_and_class_in_chromium(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server}/patterns?pt_task=rte")
    _wait_for_page(browser, "Attention patterns")
    squares = lambda d: [p for p in d.find_elements(By.CSS_SELECTOR, ".scatterlayer .point")]  # noqa: E731
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: len(squares(d)) >= 4)
    ActionChains(browser).move_to_element(squares(browser)[3]).click().perform()
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: "pt_layer=" in d.current_url and "pt_head=" in d.current_url)
    _wait_for_page(browser, "Attention patterns")
    layer = browser.current_url.split("pt_layer=")[1].split("&")[0]
    head = browser.current_url.split("pt_head=")[1].split("&")[0]
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda d: f"layer {layer} · head {head}" in d.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text)
    assert _problems(browser) == []


SHIPPED_PAGES = [("attribution", "Attention vs gradient attribution"), ("sparse", "Sparse attention"),
                 ("explorer", "Example explorer")]


@pytest.mark.parametrize(("path", "heading"), SHIPPED_PAGES, ids=[p[0] for p in SHIPPED_PAGES])
def test_new_pages_render_the_shipped_data_in_chromium(shipped_server, browser, path, heading):
    """The shipped caches (data/), not fixtures: real attribution maps and sparse runs."""
    browser.get(f"{shipped_server}/{path}")
    _wait_for_page(browser, heading)
    _screenshot(browser, f"shipped_{path}")
    assert _problems(browser) == []
