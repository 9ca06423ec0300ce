"""Optional sign-in for a hosted dashboard: Streamlit's OpenID Connect login plus an allow-list.

Off unless Streamlit's secrets (``.streamlit/secrets.toml`` beside the working directory or in
``~/.streamlit/``, or the files named by ``--secrets.files``) have an ``[auth]`` section; the
repository ships none. docs/LOGIN.md shows a complete secrets file. The allow-list lives in the
same file, in ``[effattn]``: ``allowed_emails`` and ``allowed_domains`` (both empty or absent:
everyone the provider signs in may look), and ``contact``, who a refused visitor should ask.

``gate()`` runs first in app.py's main(), before any page or sidebar widget, and stops the
script unless the visitor may see the dashboard.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass

import streamlit as st

from dashboard.errors import DashboardError

ALLOW_SECTION = "effattn"  # [effattn] in secrets.toml: allowed_emails, allowed_domains, contact
SHARED_KEYS = ("redirect_uri", "cookie_secret")  # what every provider needs, in [auth]
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")  # [auth] or [auth.NAME]
CALLBACK_PATH = "/oauth2callback"  # Streamlit's fixed route for the provider's redirect
DEFAULT_CONTACT = "whoever runs this dashboard"
LOGIN_MODULES = ("authlib", "httpx")  # what streamlit[auth] adds; st.login needs both
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-!|~$])")


class LoginConfigError(DashboardError):
    """The [auth] or [effattn] section of the secrets file is incomplete or malformed."""


@dataclass(frozen=True)
class AllowList:
    """Who may see the dashboard once signed in; both sets empty means everyone signed in."""

    emails: frozenset[str] = frozenset()  # whole addresses, lower case
    domains: frozenset[str] = frozenset()  # the part after "@", lower case, exact (no subdomains)

    def admits(self, email: str | None) -> bool:
        if not self.emails and not self.domains:
            return True
        if not email:
            return False
        email = email.strip().lower()
        local, at, domain = email.rpartition("@")
        return email in self.emails or bool(local and at and domain in self.domains)


@dataclass(frozen=True)
class LoginConfig:
    providers: tuple[str | None, ...]  # None: the unnamed provider configured directly in [auth]
    allow: AllowList
    contact: str


def _strings(section: Mapping, key: str) -> list[str]:
    value = section.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise LoginConfigError(f"[{ALLOW_SECTION}] {key} in secrets.toml must be a list of strings, "
                               f"e.g. {key} = [\"a@example.org\"]; got {value!r}")
    return [item.strip().lower() for item in value if item.strip()]


def allow_list(section: Mapping) -> AllowList:
    """The allow-list from the [effattn] section (a domain may be written with a leading "@")."""
    emails = _strings(section, "allowed_emails")
    domains = [domain.removeprefix("@") for domain in _strings(section, "allowed_domains")]
    return AllowList(frozenset(emails), frozenset(domains))


def _check_provider(name: str | None, keys: Mapping) -> None:
    where = "[auth]" if name is None else f"[auth.{name}]"
    missing = [key for key in PROVIDER_KEYS if not keys.get(key)]
    if missing:
        raise LoginConfigError(f"{where} in secrets.toml lacks {', '.join(missing)}; copy them from the "
                               "identity provider's client registration (docs/LOGIN.md)")
    if name is not None and "_" in name:
        raise LoginConfigError(f"[auth.{name}] in secrets.toml: Streamlit does not accept an underscore in a "
                               f"provider name; rename it, e.g. [auth.{name.replace('_', '')}]")


def _providers(auth: Mapping) -> tuple[str | None, ...]:
    """The unnamed provider (keys directly in [auth]) and the named ones ([auth.NAME] tables)."""
    providers: list[str | None] = [None] if any(key in auth for key in PROVIDER_KEYS) else []
    providers += [name for name, value in auth.items() if isinstance(value, Mapping) and name != "client_kwargs"]
    if not providers:
        raise LoginConfigError("The [auth] section of secrets.toml names no identity provider: add client_id, "
                               "client_secret and server_metadata_url to it (or to an [auth.NAME] section)")
    for name in providers:
        _check_provider(name, auth if name is None else auth[name])
    return tuple(providers)


def login_config(secrets: Mapping) -> LoginConfig | None:
    """The login settings, or None when the secrets have no [auth] section (login off)."""
    auth = secrets.get("auth")
    if auth is None:
        return None
    if not isinstance(auth, Mapping):
        raise LoginConfigError(f"secrets.toml: expected an [auth] section (a table), got auth = {auth!r}")
    missing = [key for key in SHARED_KEYS if not auth.get(key)]
    if missing:
        raise LoginConfigError(f"The [auth] section of secrets.toml lacks {', '.join(missing)}; "
                               "docs/LOGIN.md shows a complete one")
    redirect = str(auth["redirect_uri"])
    if not redirect.endswith(CALLBACK_PATH):
        raise LoginConfigError(f"[auth] redirect_uri in secrets.toml must be the dashboard's address followed by "
                               f"{CALLBACK_PATH} (e.g. https://dash.example.org{CALLBACK_PATH}); got {redirect}")
    providers = _providers(auth)
    section = secrets.get(ALLOW_SECTION, {})
    if not isinstance(section, Mapping):
        raise LoginConfigError(f"secrets.toml: expected an [{ALLOW_SECTION}] section (a table), got {section!r}")
    return LoginConfig(providers, allow_list(section), str(section.get("contact") or DEFAULT_CONTACT))


def _secrets() -> Mapping:
    """Streamlit's secrets as a plain dict; empty when there is no secrets file at all."""
    from streamlit.errors import StreamlitSecretNotFoundError

    try:
        return st.secrets.to_dict()
    except StreamlitSecretNotFoundError as error:
        if getattr(error, "error_id", None) == "no-secrets-found":
            return {}
        # a broken secrets file may have been meant to turn login on: refuse rather than open up
        raise LoginConfigError(f"{' '.join(str(error).split())}; fix the file or remove it") from None


def _identity() -> str:
    """Who is signed in, escaped for st.markdown (an address like first_last@... is not italics)."""
    who = str(st.user.get("email") or st.user.get("name") or st.user.get("sub") or "this account")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", who)


def _login_page(config: LoginConfig) -> None:
    st.title("effattn: effective vs standard attention")
    st.write("This dashboard is private. Log in to see it.")
    for provider in config.providers:
        label = "Log in" if provider is None else f"Log in with {provider}"
        if st.button(label, type="primary", icon=":material/login:", key=f"_login_{provider or 'default'}"):
            st.login(provider)


def _refusal(reason: str) -> None:
    st.error(f"{reason}, or log out and use another account.", icon=":material/block:")
    st.button("Log out", icon=":material/logout:", on_click=st.logout, key="_logout")


def _refusal_reason(config: LoginConfig) -> str | None:
    """Why the signed-in visitor may not look, or None when they may."""
    if st.user.get("email_verified") is False:  # the provider does not vouch for the address
        return f"The identity provider has not verified the address {_identity()}; verify it there first"
    if not config.allow.admits(st.user.get("email")):
        return f"{_identity()} is not on this dashboard's allow-list; ask {config.contact} to add it"
    return None


def gate() -> None:
    """Let the script go on only if login is off or the visitor is signed in and allowed."""
    try:
        config = login_config(_secrets())
        missing = [name for name in LOGIN_MODULES if importlib.util.find_spec(name) is None]
        if config is not None and missing:
            raise LoginConfigError(f"Login is on ([auth] in secrets.toml) but {', '.join(missing)} is not installed; "
                                   "run pip install 'streamlit[auth]' (requirements.txt pins it)")
    except LoginConfigError as error:
        st.error(str(error), icon=":material/error:")
        st.stop()
    if config is None:
        return
    if not st.user.get("is_logged_in", False):
        _login_page(config)
        st.stop()
    reason = _refusal_reason(config)
    if reason is not None:
        _refusal(reason)
        st.stop()
    st.sidebar.caption(f"Signed in as **{_identity()}**")
    st.sidebar.button("Log out", icon=":material/logout:", on_click=st.logout, key="_logout")
