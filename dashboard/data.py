"""Where the cached runs are and how pages read them.

A *location* is a folder, an http(s) URL (dashboard/remote.py mirrors it) or an object-store URL
``s3://bucket/prefix`` / ``gs://bucket/prefix`` (dashboard/object_store.py reads it in place):
``$EFFATTN_DATA`` if set, else the repository's ``data/``. A location that holds ``manifest.json``
is one run; otherwise each subfolder (sub-prefix) with a manifest is a run. Tables are read with
lazy scans (column and predicate pushdown) and cached with ``st.cache_data`` on small keys: file
paths with their mtimes (object stores: ETags) and sizes, and the selection as tuples; remote
listings and manifests are trusted for REMOTE_TTL_SECONDS. Problems surface as ``DashboardError``
with the file named; app.py shows them with st.error. Torch-free: only polars, pyarrow (via
precompute.store), the stdlib and, for object stores, fsspec with s3fs or gcsfs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import streamlit as st

from dashboard import object_store, remote
from dashboard.errors import DashboardError, NoCachesError
from precompute import CacheError
from precompute.checks import inspect_part, manifest_fix, part_fix, validate_manifest
from precompute.schema import TABLES, TASKS
from precompute.store import PART_NAME, RunFolder, Shard

DATA_ENV = "EFFATTN_DATA"
REPO_DATA = Path(__file__).resolve().parent.parent / "data"
REMOTE_TTL_SECONDS = 300  # how long a remote listing or manifest is trusted before re-fetching
_TASK_TABLES = ("metrics", "examples", "head_summary")  # any of these means a task has results


@dataclass(frozen=True)
class Run:
    """One run folder: its display name, location (path or URL) and manifest."""

    name: str
    location: str
    manifest: dict

    @property
    def tasks(self) -> tuple[str, ...]:
        """The run's tasks in the paper's order (RTE, MRPC, QNLI, SST-2, STS-B), others after."""
        order = list(TASKS)  # the schema lists tasks in the paper's column order
        tasks = self.manifest.get("tasks") or ()
        return tuple(sorted(tasks, key=lambda t: (order.index(t) if t in order else len(order), t)))

    def tasks_with_data(self) -> tuple[str, ...]:
        """Tasks that already have cached rows (a run in progress lists tasks it has not reached)."""
        if remote.is_url(self.location):
            return self.tasks
        if object_store.is_object_url(self.location):
            present = _object_task_folders(self.location, _TASK_TABLES)
            return tuple(t for t in self.tasks if t in present)
        root = Path(self.location)
        return tuple(t for t in self.tasks if any((root / table / f"task={t}").is_dir() for table in _TASK_TABLES))

    @property
    def attention(self) -> str:
        """The attention map every head ran with (runs made before `--attention` existed: softmax)."""
        return self.manifest.get("attention") or "softmax"

    @property
    def n_layers(self) -> int:
        return int(self.manifest.get("n_layers") or 0)

    @property
    def n_heads(self) -> int:
        return int(self.manifest.get("n_heads") or 0)

    @property
    def d_head(self) -> int | None:
        return self.manifest.get("d_head")


def data_location() -> str:
    return os.environ.get(DATA_ENV) or str(REPO_DATA)


def _local_runs(location: str) -> dict[str, str]:
    root = Path(location)
    if not root.is_dir():
        raise NoCachesError(f"{DATA_ENV}={location} is not a folder")
    if (root / "manifest.json").is_file():
        return {root.name: str(root)}
    return {path.parent.name: str(path.parent) for path in sorted(root.glob("*/manifest.json"))}


@st.cache_data(ttl=REMOTE_TTL_SECONDS, show_spinner=False)
def _remote_runs(location: str) -> dict[str, str]:
    return remote.discover(location)


@st.cache_data(ttl=REMOTE_TTL_SECONDS, show_spinner=False)
def _object_runs(location: str) -> dict[str, str]:
    return object_store.discover(location)


def discover_runs() -> dict[str, str]:
    """{run name: location} of every run at data_location(); NoCachesError when there is none."""
    location = data_location()
    if object_store.is_object_url(location):
        runs = _object_runs(location)
    else:
        runs = _remote_runs(location) if remote.is_url(location) else _local_runs(location)
    if not runs:
        raise NoCachesError(f"no run folder (a folder with manifest.json) under {location}")
    return runs


def _mtime(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


@st.cache_data(show_spinner=False, max_entries=64)
def _parse_manifest(path: str, stamp: tuple) -> dict:
    """manifest.json checked like precompute checks it (an object of this schema version, fields
    of the right types), so pages may trust its shape."""
    try:
        return RunFolder(Path(path).parent).read_manifest()
    except CacheError as error:
        raise DashboardError(str(error)) from None


@st.cache_data(ttl=REMOTE_TTL_SECONDS, show_spinner=False)
def _remote_manifest(url: str) -> dict:
    where = remote.join(url, "manifest.json")
    try:
        return validate_manifest(json.loads(remote.fetch(where) or b""), where)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DashboardError(f"cache {where} is not valid JSON: {manifest_fix(url)}") from None
    except CacheError as error:
        raise DashboardError(str(error)) from None


@st.cache_data(ttl=REMOTE_TTL_SECONDS, show_spinner=False)
def _object_manifest(url: str) -> dict:
    where = object_store.join(url, "manifest.json")
    try:
        return validate_manifest(json.loads(object_store.fetch(where)), where)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DashboardError(f"cache {where} is not valid JSON: upload the run's manifest.json again") from None
    except CacheError as error:
        raise DashboardError(str(error)) from None


@st.cache_data(ttl=REMOTE_TTL_SECONDS, show_spinner=False)
def _object_task_folders(url: str, tables: tuple[str, ...]) -> frozenset[str]:
    return frozenset(object_store.task_folders(url, tables))


def load_run(name: str, location: str) -> Run:
    """The run at ``location`` with its manifest checked (schema version, shape)."""
    if remote.is_url(location):
        manifest = _remote_manifest(location)
    elif object_store.is_object_url(location):
        manifest = _object_manifest(location)
    else:
        path = Path(location) / "manifest.json"
        manifest = _parse_manifest(str(path), _mtime(path))
    if not manifest.get("tasks"):
        manifest = {**manifest, "tasks": _tasks_on_disk(location)}
    return Run(name, location, manifest)


def _tasks_on_disk(location: str) -> list[str]:
    if remote.is_url(location):
        return []
    if object_store.is_object_url(location):
        return sorted(_object_task_folders(location, tuple(TABLES)))
    folders = Path(location).glob("*/task=*")
    return sorted({folder.name.removeprefix("task=") for folder in folders})


def table_files(run: Run, table: str, tasks: tuple[str, ...] | None = None) -> tuple[tuple[str, int | str, int], ...]:
    """(path, mtime_ns, size) of every part file of ``table`` for ``tasks`` (all tasks when None);
    in object storage (URL, ETag, size)."""
    wanted = tuple(tasks) if tasks is not None else run.tasks
    if object_store.is_object_url(run.location):
        return _object_parts(run.location, table, wanted)
    if remote.is_url(run.location):
        paths = _mirror(run.location, table, wanted)
    else:
        by_task: dict[str, list[Path]] = {}
        for path in RunFolder(run.location).part_files(table, list(wanted)):  # one listing of the table folder
            by_task.setdefault(path.parent.name.removeprefix("task="), []).append(path)
        paths = [path for task in wanted for path in by_task.get(task, [])]  # rows in the wanted task order
    return tuple(_mtime(Path(path)) for path in paths)


@st.cache_data(ttl=REMOTE_TTL_SECONDS, show_spinner=False)
def _mirror(url: str, table: str, tasks: tuple[str, ...]) -> list[str]:
    return [str(path) for path in remote.mirror_table(url, table, tasks)]


@st.cache_data(ttl=REMOTE_TTL_SECONDS, show_spinner=False)
def _object_parts(url: str, table: str, tasks: tuple[str, ...]) -> tuple[tuple[str, str, int], ...]:
    return tuple(object_store.table_parts(url, table, tasks))


def _predicate(where: tuple[tuple[str, Any], ...]) -> pl.Expr | None:
    expr = None
    for column, value in where:
        term = pl.col(column).is_in(list(value)) if isinstance(value, (tuple, list)) else pl.col(column) == value
        expr = term if expr is None else expr & term
    return expr


def _query(frame: pl.LazyFrame, columns: tuple[str, ...] | None, where: tuple[tuple[str, Any], ...]) -> pl.LazyFrame:
    predicate = _predicate(where)
    if predicate is not None:
        frame = frame.filter(predicate)
    return frame.select(columns) if columns else frame


@st.cache_data(show_spinner=False, max_entries=256)
def _read(files: tuple[tuple[str, int | str, int], ...], table: str, columns: tuple[str, ...] | None,
          where: tuple[tuple[str, Any], ...]) -> pl.DataFrame:
    """Scan ``files`` lazily, push ``where`` and ``columns`` down, collect. Keyed on mtimes."""
    paths = [path for path, _, _ in files]
    schema = TABLES.get(table)
    if schema is not None:  # files outside the schema (read_file) carry no version
        _check_parts(files, table)
    if not paths:
        return pl.DataFrame(schema=schema or {})
    if object_store.is_object_url(paths[0]):
        return object_store.collect(_query(object_store.scan(paths, schema), columns, where), paths[0])
    try:
        frame = pl.scan_parquet(paths, schema=schema, hive_partitioning=False, missing_columns="insert",
                                extra_columns="ignore")
        return _query(frame, columns, where).collect()
    except (pl.exceptions.PolarsError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        root = Path(paths[0]).parent.parent.parent
        raise DashboardError(f"cache {Path(paths[0]).parent.parent} ({table}) cannot be read ({first_line}): run "
                             f"`python -m precompute --verify {root}`, which names the broken part and the command that "
                             "redoes it") from None


@st.cache_data(show_spinner=False, max_entries=4096)
def _part_facts(path: str, mtime_ns: int | str, size: int, table: str) -> tuple[str | None, str | None]:
    """(what is wrong with the part's footer, or None; its footer digest), keyed on mtime (ETag) and size."""
    if object_store.is_object_url(path):  # the same checks, on the footer fetched with range requests
        footer, fault = object_store.inspect_remote_part(path, size, table)
    else:
        footer, fault = inspect_part(Path(path), table)
    return fault, None if footer is None else footer.digest


def _check_parts(files: tuple[tuple[str, int | str, int], ...], table: str) -> None:
    """A DashboardError naming the first part that is broken (docs/SCHEMA.md: version, columns,
    dtypes), stray, a copy of another, or of a second shard layout (the same rows twice)."""
    copies: dict[str | None, Path] = {}  # footer digest -> the part that has it
    layouts: dict[tuple[str, int], Path] = {}  # (task folder, shard count) -> a part of that layout
    for path, mtime_ns, size in files:
        fault, digest = _part_facts(path, mtime_ns, size, table)
        fault, deleted = (fault, "the broken part") if fault else _surplus(Path(path), digest, copies, layouts)
        if fault is not None:
            fix = object_store.part_fix(path) if object_store.is_object_url(path) else part_fix(Path(path), deleted)
            raise DashboardError(f"cache {path} {fault}: {fix}")


def _surplus(part: Path, digest: str | None, copies: dict, layouts: dict) -> tuple[str | None, str]:
    """(why a readable part should not be there, what a rerun deletes), or (None, ""), in which
    case the part is remembered for the next ones."""
    match = PART_NAME.fullmatch(part.name)
    shard = Shard.from_label(match["shard"]) if match else None
    if shard is None:
        return "has a name precompute never writes (a copy?)", "the stray part"
    if digest in copies:
        return f"is a byte-identical copy of {copies[digest].name}", "both copies"
    other = next((seen for (task, count), seen in layouts.items() if task == part.parent.name and count != shard.count),
                 None)
    if other is not None:
        return f"is of a {shard.count}-shard layout but {other.name} is not (the same rows twice?)", "the stale layout"
    copies[digest] = part
    layouts.setdefault((part.parent.name, shard.count), part)
    return None, ""


def read(run: Run, table: str, *, tasks: tuple[str, ...] | None = None, columns: tuple[str, ...] | None = None,
         **where: Any) -> pl.DataFrame:
    """Rows of ``table`` for ``tasks`` matching ``where`` (column=value or column=tuple of values)."""
    clauses = tuple(sorted((column, tuple(value) if isinstance(value, (list, tuple)) else value)
                           for column, value in where.items()))
    return _read(table_files(run, table, tasks), table, tuple(columns) if columns else None, clauses)


def read_file(path: str) -> pl.DataFrame:
    """One Parquet file outside the run-folder schema (e.g. the classifier's evaluation)."""
    return _read((_mtime(Path(path)),), "", None, ())
