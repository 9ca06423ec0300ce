"""Run folders in object storage (``s3://bucket/prefix``, ``gs://bucket/prefix``): list, fetch, read.

Object stores answer range requests, so unlike a plain http server (dashboard/remote.py) nothing
is mirrored: pyarrow.dataset reads each part's footer and then only the column chunks of the row
groups a query needs, through an fsspec filesystem (s3fs, gcsfs). Credentials are found the way
those libraries always find them:

- s3://: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), or AWS_PROFILE and the
  ~/.aws/credentials and ~/.aws/config files, or an instance role; AWS_ENDPOINT_URL (or
  AWS_ENDPOINT_URL_S3) points at an S3-compatible server (MinIO, Ceph, moto); AWS_DEFAULT_REGION.
- gs://: GOOGLE_APPLICATION_CREDENTIALS (a service-account JSON file), or the gcloud default
  credentials; needs ``pip install gcsfs``.

Every request has connect and read timeouts and at most ATTEMPTS tries, so an unreachable or
silent endpoint ends in one DashboardError line within about ATTEMPTS x READ_TIMEOUT_SECONDS,
never a hung page. Listings are not cached here: data.py trusts them for REMOTE_TTL_SECONDS.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import polars as pl

from dashboard.errors import DashboardError
from precompute.checks import inspect_part

CONNECT_TIMEOUT_SECONDS = 3  # a closed port fails at once; a black-holed host after this
READ_TIMEOUT_SECONDS = 5  # an endpoint that accepts but never answers
ATTEMPTS = 2  # one retry for a dropped connection; more would only lengthen a real outage
FOOTER_GUESS_BYTES = 64 * 1024  # one tail request holds the footer of every part precompute writes
_CHECK_FIX = "or unset EFFATTN_DATA to use the local data/ folder"


@dataclass(frozen=True)
class Backend:
    """The fsspec implementation behind a URL scheme and what a user sets to reach it."""

    module: str  # the package that registers the scheme with fsspec
    pin: str  # what to install when missing: the release matching requirements.txt's fsspec (they pin each other)
    credentials: str  # the standard places the library looks for credentials
    endpoint_env: tuple[str, ...]  # env vars that move the endpoint (S3-compatible servers)


BACKENDS = {
    "s3": Backend("s3fs", "s3fs==2026.7.0", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE with "
                  "~/.aws/credentials)", ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")),
    "gs": Backend("gcsfs", "gcsfs==2026.7.0", "GOOGLE_APPLICATION_CREDENTIALS (a service-account JSON file) or "
                  "`gcloud auth application-default login`", ("STORAGE_EMULATOR_HOST",)),
}


def is_object_url(location: str) -> bool:
    return location.split("://", 1)[0] in BACKENDS and "://" in location


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _split(url: str) -> tuple[str, str]:
    """(scheme, bucket/key) of ``s3://bucket/key``."""
    scheme, _, path = url.partition("://")
    return scheme, path.strip("/")


def _options(scheme: str) -> dict:
    """Constructor options that bound every request and leave listing caches to data.py."""
    common = {"skip_instance_cache": True, "use_listings_cache": False}
    if scheme == "s3":
        retries = {"total_max_attempts": 1}  # s3fs retries itself (ATTEMPTS); botocore's would multiply them
        return {**common, "default_cache_type": "none",  # fetch exactly the ranges pyarrow asks for
                "config_kwargs": {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "read_timeout": READ_TIMEOUT_SECONDS,
                                  "retries": retries}}
    import aiohttp  # gcsfs talks to GCS through aiohttp sessions

    timeout = aiohttp.ClientTimeout(connect=CONNECT_TIMEOUT_SECONDS, sock_read=READ_TIMEOUT_SECONDS)
    return {**common, "session_kwargs": {"timeout": timeout}}


def filesystem(scheme: str):
    """The fsspec filesystem for ``scheme``, rebuilt when credentials or endpoint in the environment change."""
    backend = BACKENDS[scheme]
    try:
        importlib.import_module(backend.module)
    except ImportError:
        raise DashboardError(f"EFFATTN_DATA={scheme}://... needs the {backend.module} package, which is not installed: "
                             f"`pip install {backend.pin}`, {_CHECK_FIX}") from None
    settings = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_", "STORAGE_"))))
    return _filesystem(scheme, settings)


@lru_cache(maxsize=8)
def _filesystem(scheme: str, settings: tuple):  # settings: only the cache key
    import fsspec

    fs = fsspec.filesystem(scheme, **_options(scheme))
    fs.retries = ATTEMPTS
    return fs


def _endpoint(scheme: str) -> str:
    names = BACKENDS[scheme].endpoint_env
    return next((f"{name}={os.environ[name]}" for name in names if os.environ.get(name)), f"the default {scheme} endpoint")


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from (s3fs translates botocore's into OSErrors)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _error_code(error: BaseException) -> str:
    """The service's error code (NoSuchBucket, InvalidAccessKeyId...) behind a translated error."""
    for link in _chain(error):
        response = getattr(link, "response", None)
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        if code:
            return str(code)
    return ""


def _caused_by(error: BaseException, *words: str) -> bool:
    """Whether an error in the chain has one of ``words`` in its type name or message (lowercase)."""
    return any(word in f"{type(link).__name__} {link}".lower() for link in _chain(error) for word in words)


def _message(error: BaseException, url: str) -> str:
    """One line: what went wrong reaching ``url`` and which setting fixes it."""
    scheme, path = _split(url)
    backend, bucket, code = BACKENDS[scheme], path.split("/", 1)[0], _error_code(error)
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if code == "NoSuchBucket" or "bucket does not exist" in first.lower():
        return (f"bucket {bucket!r} of EFFATTN_DATA={url} does not exist at {_endpoint(scheme)}: check the bucket name "
                f"in EFFATTN_DATA (or the endpoint), {_CHECK_FIX}")
    if _caused_by(error, "nocredentialserror", "unable to locate credentials"):
        return f"found no credentials for {url}: set {backend.credentials}, {_CHECK_FIX}"
    if isinstance(error, PermissionError):
        reason = code or first
        return (f"{url} refused the credentials ({reason}): set {backend.credentials} to a key that may list and read "
                f"bucket {bucket!r}, {_CHECK_FIX}")
    if _caused_by(error, "timeout", "timed out"):
        return (f"{_endpoint(scheme)} did not answer within {READ_TIMEOUT_SECONDS} s ({ATTEMPTS} attempts) for {url}: "
                f"check that the endpoint is up and reachable, {_CHECK_FIX}")
    if _caused_by(error, "connect", "refused", "unreachable", "name or service not known"):
        return f"cannot reach {_endpoint(scheme)} for {url} ({first}): check the endpoint and the network, {_CHECK_FIX}"
    return f"cannot read {url} ({type(error).__name__}: {first}): check EFFATTN_DATA, {_CHECK_FIX}"


@contextmanager
def _translated(url: str) -> Iterator[None]:
    """Library errors while touching ``url`` become one DashboardError line."""
    try:
        yield
    except DashboardError:
        raise
    except Exception as error:  # noqa: BLE001 (botocore, aiohttp, fsspec and OSError all arrive here)
        raise DashboardError(_message(error, url)) from None


def _entries(fs, path: str) -> list[dict]:
    """The listing of folder ``path``; [] when it is empty or absent (a missing bucket still raises)."""
    try:
        return fs.ls(path, detail=True)
    except FileNotFoundError as error:
        if _error_code(error) == "NoSuchBucket" or "bucket does not exist" in str(error).lower():
            raise
        return []


def discover(url: str) -> dict[str, str]:
    """{run name: run URL}: ``url`` itself when it holds manifest.json, else its sub-prefixes that do."""
    scheme, path = _split(url)
    with _translated(url):
        fs = filesystem(scheme)
        entries = _entries(fs, path)
        names = {entry["name"].rstrip("/").rsplit("/", 1)[-1]: entry for entry in entries}
        if names.get("manifest.json", {}).get("type") == "file":
            return {path.rsplit("/", 1)[-1]: url.rstrip("/")}
        runs = {}
        for name, entry in sorted(names.items()):
            if entry["type"] == "directory" and fs.exists(join(entry["name"], "manifest.json")):
                runs[name] = f"{scheme}://{join(path, name)}"
        return runs


def fetch(url: str) -> bytes:
    """The whole object at ``url`` (manifest.json: small)."""
    scheme, path = _split(url)
    with _translated(url):
        return filesystem(scheme).cat_file(path)


def _stamp(entry: dict) -> str:
    """What changes when the object is rewritten: its ETag (S3) or md5/generation (GCS), else size + mtime."""
    for key in ("ETag", "etag", "md5Hash", "generation"):
        if entry.get(key):
            return str(entry[key]).strip('"')
    return f"{entry.get('size')}:{entry.get('LastModified') or entry.get('updated') or entry.get('mtime')}"


def table_parts(url: str, table: str, tasks: tuple[str, ...]) -> list[tuple[str, str, int]]:
    """(URL, stamp, size) of every part file of ``table`` for ``tasks``, in task then name order (one listing)."""
    scheme, path = _split(url)
    with _translated(url):
        found = filesystem(scheme).find(join(path, table), detail=True)
    by_task: dict[str, list[tuple[str, str, int]]] = {}
    for name, entry in sorted(found.items()):
        folder, _, file_name = name.rpartition("/")
        task = folder.rsplit("/", 1)[-1].removeprefix("task=")
        if file_name.startswith("part-") and file_name.endswith(".parquet"):
            by_task.setdefault(task, []).append((f"{scheme}://{name}", _stamp(entry), int(entry["size"])))
    return [part for task in tasks for part in by_task.get(task, [])]


def task_folders(url: str, tables: tuple[str, ...]) -> list[str]:
    """Tasks with a ``task=`` folder in any of ``tables`` (a run in progress lists tasks it has not reached)."""
    scheme, path = _split(url)
    tasks = set()
    with _translated(url):
        fs = filesystem(scheme)
        for table in tables:
            for entry in _entries(fs, join(path, table)):
                name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
                if entry["type"] == "directory" and name.startswith("task="):
                    tasks.add(name.removeprefix("task="))
    return sorted(tasks)


def inspect_remote_part(url: str, size: int, table: str) -> tuple[object, str | None]:
    """precompute.checks.inspect_part for a part in object storage, from one or two small range requests.

    inspect_part reads only a part's first four bytes and its footer, so a sparse local file of
    the part's size holding just those bytes is checked exactly like the whole part (version,
    columns, dtypes, task statistics, footer digest) without downloading its rows.
    """
    scheme, path = _split(url)
    with _translated(url):
        fs = filesystem(scheme)
        tail_start = max(0, size - FOOTER_GUESS_BYTES)
        tail = fs.cat_file(path, start=tail_start, end=size) if size else b""
        head = tail[:4] if tail_start == 0 else fs.cat_file(path, start=0, end=4)  # a small part: one request
        length = int.from_bytes(tail[-8:-4], "little") if len(tail) >= 8 else 0
        if size - length - 8 < tail_start and 12 <= length + 12 <= size:  # a footer larger than the guess
            tail_start = size - length - 8
            tail = fs.cat_file(path, start=tail_start, end=size)
    with tempfile.TemporaryDirectory(prefix="effattn-footer-") as folder:
        stub = Path(folder) / table / path.rsplit("/", 2)[-2] / path.rsplit("/", 1)[-1]  # keeps task=<task>/<name>
        stub.parent.mkdir(parents=True)
        with open(stub, "wb") as handle:
            handle.truncate(size)  # sparse: the rows are never fetched
            handle.write(head)
            handle.seek(tail_start)
            handle.write(tail)
        return inspect_part(stub, table)


def part_fix(url: str) -> str:
    """How to replace a broken part in a bucket: fix the local run folder it came from, then upload it again."""
    return ("fix the run folder it was uploaded from (`python -m precompute --verify <that folder>` names the broken "
            f"part and the command that redoes it), then upload that folder again over {url.rsplit('/', 3)[0]}")


def scan(parts: list[str], schema: dict | None) -> pl.LazyFrame:
    """A lazy frame over the Parquet objects ``parts``: filters and selected columns are pushed
    into pyarrow.dataset, which fetches only the row groups and column chunks they need."""
    import pyarrow.dataset as ds

    scheme, _ = _split(parts[0])
    with _translated(parts[0]):
        arrow_schema = pl.DataFrame(schema=schema).to_arrow().schema if schema else None
        dataset = ds.dataset([_split(part)[1] for part in parts], filesystem=filesystem(scheme), format="parquet",
                             schema=arrow_schema)
    return pl.scan_pyarrow_dataset(dataset)


def collect(frame: pl.LazyFrame, url: str) -> pl.DataFrame:
    """``frame.collect()`` with network errors as one DashboardError line naming ``url``."""
    with _translated(url):
        return frame.collect()
