"""Run folders served over HTTP(S): list and mirror their files into a local cache folder.

polars reads Parquet over HTTP only from servers that answer range requests; a plain static
server (``python -m http.server``) does not. So a remote run is mirrored file by file into a
local folder (whole-file GETs) and then read exactly like a local run, with pushdown.
Part files are found from the server's directory listing (``<a href=...>`` links); without a
listing, the default single-shard names ``part-00000-of-00001-<chunk>.parquet`` are probed.
Object stores (``s3://``, ``gs://``) do answer range requests: dashboard/object_store.py reads
them in place, fetching only the columns and row groups a page needs.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from dashboard.errors import DashboardError

TIMEOUT_SECONDS = 10  # one request; an unreachable host must not hang the page
_HREF = re.compile(r'href="([^"?#]+)"', re.IGNORECASE)


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def fetch(url: str, *, missing_ok: bool = False) -> bytes | None:
    """GET ``url``; None when it is 404 and ``missing_ok``; DashboardError when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 (http(s) only)
            return response.read()
    except urllib.error.HTTPError as error:
        if missing_ok and error.code == 404:
            return None
        raise DashboardError(f"{url} answered HTTP {error.code}: check EFFATTN_DATA and that the server shares the run folder") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DashboardError(f"cannot reach {url} ({reason}): check EFFATTN_DATA or unset it to use the local data/ folder") from None


def listing(url: str) -> list[str]:
    """Names linked from a directory listing at ``url`` (empty when the server gives none)."""
    body = fetch(url.rstrip("/") + "/", missing_ok=True)
    if not body:
        return []
    names = []
    for href in _HREF.findall(body.decode("utf-8", "replace")):
        name = urllib.request.url2pathname(href.rstrip("/").rsplit("/", 1)[-1])
        if name and name not in ("..", ".") and not href.startswith(("http:", "https:", "/")):
            names.append(name)
    return names


def discover(url: str) -> dict[str, str]:
    """{run name: run URL}: ``url`` itself when it holds manifest.json, else its listed subfolders that do."""
    if fetch(join(url, "manifest.json"), missing_ok=True) is not None:
        return {url.rstrip("/").rsplit("/", 1)[-1] or url: url.rstrip("/")}
    runs = {}
    for name in listing(url):
        if fetch(join(url, name, "manifest.json"), missing_ok=True) is not None:
            runs[name] = join(url, name)
    return runs


def _part_names(url: str, table: str, task: str) -> list[str]:
    folder = join(url, table, f"task={task}")
    names = [name for name in listing(folder) if name.endswith(".parquet")]
    if names:
        return sorted(names)
    probed, chunk = [], 0
    while fetch(join(folder, f"part-00000-of-00001-{chunk:05d}.parquet"), missing_ok=True) is not None:
        probed.append(f"part-00000-of-00001-{chunk:05d}.parquet")
        chunk += 1
    return probed


def mirror_table(url: str, table: str, tasks: tuple[str, ...]) -> list[Path]:
    """Download the part files of ``table`` for ``tasks`` into a local mirror; return their paths."""
    root = Path(tempfile.gettempdir()) / "effattn-dashboard" / hashlib.sha1(url.encode()).hexdigest()[:16]
    paths = []
    for task in tasks:
        for name in _part_names(url, table, task):
            target = root / table / f"task={task}" / name
            if not target.exists():
                body = fetch(join(url, table, f"task={task}", name))
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(body or b"")
                tmp.replace(target)
            paths.append(target)
    return paths
