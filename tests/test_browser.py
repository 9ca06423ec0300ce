"""End to end: `streamlit run app.py` on fixture caches, every page opened in headless Chromium.

Fails on any exception or error box; saves a screenshot of each page to tests/artifacts/.
Skipped (with the reason) only when chromium or chromedriver is not installed; `.ci/run`
installs both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chromium import CHROMEDRIVER, CHROMIUM, PAGES, WAIT_SECONDS, new_browser, next_frames, serve
from chromium import wait_for_page as _wait_for_page

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver; .ci/run does)",
)


@pytest.fixture(scope="module")
def server(fixture_caches, tmp_path_factory):
    with serve(fixture_caches, tmp_path_factory.mktemp("log")) as url:
        yield url


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    if not (Path(__file__).resolve().parent.parent / "data" / "minilm" / "manifest.json").is_file():
        pytest.skip("no shipped data/minilm in this checkout")
    with serve(None, tmp_path_factory.mktemp("shipped_log")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with new_browser() as driver:
        yield driver


def _screenshot(driver, name: str) -> None:
    """Save the whole page: grow the window to the content's height first (Streamlit scrolls inside)."""
    height = driver.execute_script(
        "return Math.max(...['stMain', 'stMainBlockContainer', 'stAppViewContainer']"
        ".map(id => document.querySelector(`[data-testid=\"${id}\"]`)?.scrollHeight || 0))")
    driver.set_window_size(1500, min(max(height + 120, 900), 9000))
    next_frames(driver)  # plotly redraws on resize
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
                 ("explorer", "Example explorer"), ("compare_runs", "Compare runs")]


@pytest.mark.parametrize(("path", "heading"), SHIPPED_PAGES, ids=[p[0] for p in SHIPPED_PAGES])
def test_new_pages_render_the_shipped_data_in_chromium(shipped_server, browser, path, heading):
    """The shipped caches (data/), not fixtures: real attribution maps and sparse runs."""
    browser.get(f"{shipped_server}/{path}")
    _wait_for_page(browser, heading)
    _screenshot(browser, f"shipped_{path}")
    assert _problems(browser) == []
