"""The optional login (dashboard/auth.py): the allow-list rule, the [auth] checks, the gate's four
outcomes in AppTest, and the whole OpenID Connect flow in Chromium against a local provider.

The browser test starts oidc-provider-mock on 127.0.0.1 (its authorization form takes any
subject, which becomes the email claim) and `streamlit run app.py` with the secrets file in a
temporary folder, named by STREAMLIT_SECRETS_FILES: the repository never gets a secrets.toml.
"""

from __future__ import annotations

import threading
import warnings

import pytest

from cache_fixture import free_port
from chromium import CHROMEDRIVER, CHROMIUM, WAIT_SECONDS, new_browser, serve
from dashboard.auth import AllowList, LoginConfigError, allow_list, login_config

MOCK_CLIENT = {"client_id": "effattn-test", "client_secret": "any secret works with the mock"}
COOKIE_SECRET = "a test cookie secret, long enough for HS256"


def _auth(**overrides) -> dict:
    section = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": COOKIE_SECRET,
               **MOCK_CLIENT, "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration"}
    section.update(overrides)
    return {key: value for key, value in section.items() if value is not None}


# --- the allow-list rule ---------------------------------------------------------------------

def test_empty_allow_list_admits_everyone_signed_in():
    rule = allow_list({})
    assert rule.admits("anyone@anywhere.example") and rule.admits(None)


def test_listed_email_is_admitted_whatever_its_case():
    rule = allow_list({"allowed_emails": ["Alice@Lab.Example"]})
    assert rule.admits("alice@lab.example") and rule.admits("ALICE@LAB.EXAMPLE ")
    assert not rule.admits("bob@lab.example")


def test_domain_admits_exactly_its_own_addresses():
    rule = allow_list({"allowed_domains": ["@Lab.Example"]})
    assert rule.admits("bob@LAB.example")
    for outsider in ("bob@sub.lab.example", "bob@evil-lab.example", "bob@lab.example.com", "lab.example", "@lab.example"):
        assert not rule.admits(outsider), outsider


def test_emails_and_domains_add_up():
    rule = AllowList(emails=frozenset({"guest@else.example"}), domains=frozenset({"lab.example"}))
    assert rule.admits("guest@else.example") and rule.admits("x@lab.example")
    assert not rule.admits("other@else.example")


def test_missing_email_is_refused_once_a_list_is_set():
    assert not allow_list({"allowed_domains": ["lab.example"]}).admits(None)
    assert not allow_list({"allowed_emails": ["a@lab.example"]}).admits("")


def test_allow_list_must_be_strings():
    with pytest.raises(LoginConfigError, match=r"\[effattn\] allowed_emails .* must be a list of strings"):
        allow_list({"allowed_emails": [1, 2]})


# --- the [auth] section ----------------------------------------------------------------------

def test_login_is_off_without_an_auth_section():
    assert login_config({}) is None
    assert login_config({"effattn": {"allowed_domains": ["lab.example"]}}) is None


def test_complete_unnamed_provider_is_accepted():
    config = login_config({"auth": _auth(), "effattn": {"allowed_domains": ["lab.example"], "contact": "Ada"}})
    assert config.providers == (None,) and config.contact == "Ada" and config.allow.domains == {"lab.example"}


def test_named_providers_are_listed():
    auth = _auth(client_id=None, client_secret=None, server_metadata_url=None)
    auth["lab"] = {**MOCK_CLIENT, "server_metadata_url": "https://id.lab.example/.well-known/openid-configuration"}
    assert login_config({"auth": auth}).providers == ("lab",)


@pytest.mark.parametrize(("auth", "message"), [
    (_auth(cookie_secret=None), r"lacks cookie_secret; docs/LOGIN\.md"),
    (_auth(redirect_uri=None, cookie_secret=None), "lacks redirect_uri, cookie_secret"),
    (_auth(redirect_uri="http://127.0.0.1:8501/"), r"followed by /oauth2callback .* got http://127\.0\.0\.1:8501/$"),
    (_auth(client_secret=None), r"^\[auth\] in secrets\.toml lacks client_secret"),
    (_auth(client_id=None, client_secret=None, server_metadata_url=None), "names no identity provider"),
    ({**_auth(client_id=None, client_secret=None, server_metadata_url=None), "my_idp": dict(MOCK_CLIENT)},
     r"\[auth\.my_idp\] in secrets\.toml lacks server_metadata_url"),
], ids=["no_cookie_secret", "no_redirect_uri", "wrong_callback", "no_client_secret", "no_provider", "named_incomplete"])
def test_misconfigured_auth_section_is_one_line_naming_the_key(auth, message):
    with pytest.raises(LoginConfigError, match=message) as caught:
        login_config({"auth": auth})
    assert "\n" not in str(caught.value)


class _SecretsThatRaise:
    def __init__(self, error):
        self.error = error

    def to_dict(self):
        raise self.error


def test_no_secrets_file_means_login_off(monkeypatch):
    from streamlit.errors import StreamlitSecretNotFoundError

    from dashboard import auth

    monkeypatch.setattr(auth.st, "secrets", _SecretsThatRaise(StreamlitSecretNotFoundError(
        "No secrets found. Valid paths: {paths}", paths="/x", error_id="no-secrets-found")))
    assert auth._secrets() == {}


def test_unreadable_secrets_file_is_one_line_not_an_open_dashboard(monkeypatch):
    from streamlit.errors import StreamlitSecretNotFoundError

    from dashboard import auth

    monkeypatch.setattr(auth.st, "secrets", _SecretsThatRaise(StreamlitSecretNotFoundError(
        "Error parsing secrets file at {path}:\n{error}", path="/srv/secrets.toml", error="Expected '=' (line 3)",
        error_id="failed-parsing-secrets-file")))
    with pytest.raises(LoginConfigError, match=r"^Error parsing secrets file at /srv/secrets\.toml: Expected '=' "
                                               r"\(line 3\); fix the file or remove it$"):
        auth._secrets()


# --- the gate in AppTest (app.py with secrets and st.user set by the test) -------------------

def _app(secrets: dict, user: dict):
    from streamlit.testing.v1 import AppTest

    from cache_fixture import APP, APP_TIMEOUT_SECONDS

    at = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_SECONDS)
    at.secrets.update(secrets)
    at.user = user
    return at.run()


SECRETS = {"auth": _auth(), "effattn": {"allowed_domains": ["lab.example"], "contact": "the lab admin"}}


def test_secrets_without_auth_leave_the_dashboard_open(fixture_caches_env):
    at = _app({"something_else": {"token": "x"}}, {})
    assert [t.value for t in at.title] == ["Effective vs standard attention"] and not at.error


def test_logged_out_visitor_gets_only_the_login_page(fixture_caches_env):
    at = _app(SECRETS, {"is_logged_in": False})
    assert [t.value for t in at.title] == ["effattn: effective vs standard attention"]
    assert [b.label for b in at.button] == ["Log in"]
    assert len(at.sidebar.children) == 0 and not at.dataframe and not at.metric and not at.exception


def test_allowed_user_gets_the_dashboard_and_a_log_out_button(fixture_caches_env):
    at = _app(SECRETS, {"is_logged_in": True, "email": "Alice@lab.example"})
    assert at.title[0].value == "Effective vs standard attention" and not at.error and not at.exception
    assert "Signed in as **Alice@lab.example**" in [c.value for c in at.sidebar.caption]
    assert "Log out" in [b.label for b in at.sidebar.button]


def test_user_outside_the_allow_list_is_refused_with_one_line(fixture_caches_env):
    at = _app(SECRETS, {"is_logged_in": True, "email": "mallory@elsewhere.example"})
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    assert "mallory@elsewhere.example is not on this dashboard's allow-list; ask the lab admin" in at.error[0].value
    assert [b.label for b in at.button] == ["Log out"]
    assert not at.title and len(at.sidebar.children) == 0


def test_refusal_shows_an_address_with_underscores_literally(fixture_caches_env):
    at = _app(SECRETS, {"is_logged_in": True, "email": "first_last_name@elsewhere.example"})
    assert at.error[0].value.startswith(r"first\_last\_name@elsewhere.example is not")  # markdown-escaped, not italics


def test_missing_login_package_is_named_in_one_line(fixture_caches_env, monkeypatch):
    from dashboard import auth

    monkeypatch.setattr(auth, "LOGIN_MODULES", ("authlib", "no_such_module_for_effattn_login"))
    at = _app(SECRETS, {"is_logged_in": True, "email": "alice@lab.example"})
    assert [e.value for e in at.error] == ["Login is on ([auth] in secrets.toml) but no_such_module_for_effattn_login is "
                                           "not installed; run pip install 'streamlit[auth]' (requirements.txt pins it)"]
    assert not at.title and not at.exception


def test_address_the_provider_has_not_verified_is_refused(fixture_caches_env):
    at = _app(SECRETS, {"is_logged_in": True, "email": "alice@lab.example", "email_verified": False})
    assert len(at.error) == 1 and "has not verified the address alice@lab.example" in at.error[0].value
    assert not at.title


def test_misconfigured_auth_is_one_error_line_not_a_traceback(fixture_caches_env):
    at = _app({"auth": _auth(cookie_secret=None)}, {"is_logged_in": False})
    assert not at.exception and not at.title and not at.button
    assert [e.value for e in at.error] == [
        "The [auth] section of secrets.toml lacks cookie_secret; docs/LOGIN.md shows a complete one"]


# --- end to end: Chromium, streamlit and a local OpenID Connect provider ----------------------

ALLOWED, OUTSIDER = "alice@lab.example", "mallory@elsewhere.example"
_no_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver; .ci/run does)")
_mock_deprecations = pytest.mark.filterwarnings(  # Authlib's warnings about the mock's legacy hooks
    "ignore:get_jwt_config:DeprecationWarning")


def browser_only(test):
    return _no_browser(_mock_deprecations(test))


@pytest.fixture(scope="module")
def provider():
    """oidc-provider-mock on 127.0.0.1 in a thread; yields its base URL."""
    import authlib.deprecate  # noqa: F401  (installs its "always" warning filter; ours below goes first)
    import werkzeug.serving

    with warnings.catch_warnings():  # the mock imports authlib.jose, which Authlib deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        import oidc_provider_mock

    server = werkzeug.serving.make_server("127.0.0.1", free_port(), oidc_provider_mock.app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def login_server(provider, fixture_caches, tmp_path_factory):
    """`streamlit run app.py` with login on: its secrets file lives in a temporary folder."""
    secrets = tmp_path_factory.mktemp("secrets") / "secrets.toml"
    secrets.write_text(f"""
[auth]
redirect_uri = "http://127.0.0.1:{{port}}/oauth2callback"  # streamlit puts its --server.port here
cookie_secret = "{COOKIE_SECRET}"
client_id = "{MOCK_CLIENT['client_id']}"
client_secret = "{MOCK_CLIENT['client_secret']}"
server_metadata_url = "{provider}/.well-known/openid-configuration"

[effattn]
allowed_domains = ["lab.example"]
contact = "the lab admin"
""")
    with pytest.MonkeyPatch.context() as patch:  # serve() hands its environment to streamlit
        patch.setenv("STREAMLIT_SECRETS_FILES", str(secrets))
        with serve(fixture_caches, tmp_path_factory.mktemp("login_log")) as url:
            yield url


@pytest.fixture(scope="module")
def browser():
    with new_browser() as driver:
        yield driver


def _wait(driver, condition):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # Streamlit redraws elements between a find and a read: a stale element means "look again"
    return WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def _login_button(driver):
    from selenium.webdriver.common.by import By

    buttons = driver.find_elements(By.XPATH, "//button[contains(., 'Log in')]")
    return buttons[0] if buttons else None


def _open_logged_out(driver, url: str, path: str = "") -> None:
    driver.get(url)
    driver.delete_all_cookies()  # streamlit's identity cookie and the provider's, both on 127.0.0.1
    driver.get(f"{url}/{path}")
    _wait(driver, _login_button)


def _log_in_as(driver, email: str) -> None:
    from selenium.webdriver.common.by import By

    _login_button(driver).click()
    field = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'input[name="sub"]'))[0]
    field.send_keys(email)  # the mock makes the typed subject the email claim
    driver.find_element(By.XPATH, "//button[text()='Authorize']").click()


def _main_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text


def _headings(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [h.text for h in driver.find_elements(By.CSS_SELECTOR, "h1")]


def _sidebars(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"]')


@browser_only
def test_in_chromium_visitor_not_logged_in_sees_only_the_login_page(login_server, browser):
    _open_logged_out(browser, login_server, "explorer?ex_example=1")  # a deep link shows no data either
    from selenium.webdriver.common.by import By

    assert _headings(browser) == ["effattn: effective vs standard attention"]
    assert _sidebars(browser) == []
    assert "Example" not in _main_text(browser) and "Run" not in browser.find_element(By.TAG_NAME, "body").text


@browser_only
def test_in_chromium_allowed_user_logs_in_and_sees_the_dashboard(login_server, browser):
    _open_logged_out(browser, login_server)
    _log_in_as(browser, ALLOWED)
    _wait(browser, lambda d: "Effective vs standard attention" in _headings(d))  # the overview page's own title

    def sidebar_drawn(driver) -> bool:
        sidebars = _sidebars(driver)
        return bool(sidebars) and all(part in sidebars[0].text for part in (f"Signed in as {ALLOWED}", "Log out", "Run"))

    assert _wait(browser, sidebar_drawn)


@browser_only
def test_in_chromium_user_outside_the_allow_list_is_refused_with_one_line_and_can_log_out(login_server, browser):
    from selenium.webdriver.common.by import By

    _open_logged_out(browser, login_server)
    _log_in_as(browser, OUTSIDER)
    errors = _wait(browser, lambda d: d.find_elements(  # the message, without the icon's ligature text
        By.CSS_SELECTOR, '[data-testid="stAlertContentError"] [data-testid="stMarkdownContainer"]'))
    assert [e.text for e in errors] == [f"{OUTSIDER} is not on this dashboard's allow-list; ask the lab admin to "
                                        "add it, or log out and use another account."]
    assert _headings(browser) == [] and _sidebars(browser) == []
    assert "Effective vs standard attention" not in _main_text(browser)

    browser.find_element(By.XPATH, "//button[contains(., 'Log out')]").click()
    _wait(browser, lambda d: d.find_elements(By.XPATH, "//button[text()='End session']"))[0].click()  # the mock asks
    _wait(browser, _login_button)  # back on the login page, the identity cookie gone
    assert _headings(browser) == ["effattn: effective vs standard attention"] and _sidebars(browser) == []
