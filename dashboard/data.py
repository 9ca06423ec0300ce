"""Where the cached runs are and how pages read them.

A *location* is a folder or an http(s) URL: ``$EFFATTN_DATA`` if set, else the repository's
``data/``. A location that holds ``manifest.json`` is one run; otherwise each subfolder with a
manifest is a run. Tables are read with polars lazy scans (column and predicate pushdown) and
cached with ``st.cache_data`` on small keys: file paths with their mtimes and sizes, and the
selection as tuples. Problems surface as ``DashboardError`` with the file named; app.py shows
them with st.error. Torch-free: only polars, pyarrow (via precompute.store) and the stdlib.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import streamlit as st

from dashboard import remote
from dashboard.errors import DashboardError, NoCachesError
from precompute import CacheError
from precompute.schema import SCHEMA_VERSION, TABLES, TASKS
from precompute.store import RunFolder, check_schema_version

DATA_ENV = "EFFATTN_DATA"
REPO_DATA = Path(__file__).resolve().parent.parent / "data"
REMOTE_TTL_SECONDS = 300  # how long a remote listing or manifest is trusted before re-fetching
RERUN = "re-run `python -m precompute ... --force`"
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


def discover_runs() -> dict[str, str]:
    """{run name: location} of every run at data_location(); NoCachesError when there is none."""
    location = data_location()
    runs = _remote_runs(location) if remote.is_url(location) else _local_runs(location)
    if not runs:
        raise NoCachesError(f"no run folder (a folder with manifest.json) under {location}")
    return runs


def _mtime(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


@st.cache_data(show_spinner=False, max_entries=64)
def _parse_manifest(path: str, stamp: tuple) -> dict:
    try:
        return RunFolder(Path(path).parent).read_manifest()
    except CacheError as error:
        raise DashboardError(str(error)) from None
    except OSError:  # read_manifest converts only bad JSON; an unreadable file must still be named
        raise DashboardError(f"cache {path} is not valid JSON: {RERUN}") from None


@st.cache_data(ttl=REMOTE_TTL_SECONDS, show_spinner=False)
def _remote_manifest(url: str) -> dict:
    try:
        return json.loads(remote.fetch(remote.join(url, "manifest.json")) or b"")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DashboardError(f"cache {remote.join(url, 'manifest.json')} is not valid JSON: {RERUN}") from None


def load_run(name: str, location: str) -> Run:
    """The run at ``location`` with its manifest checked for the schema version."""
    if remote.is_url(location):
        manifest, where = _remote_manifest(location), remote.join(location, "manifest.json")
    else:
        path = Path(location) / "manifest.json"
        manifest, where = _parse_manifest(str(path), _mtime(path)), str(path)
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:  # read_manifest accepts a manifest without a version; the dashboard does not
        raise DashboardError(f"cache {where} has schema version {version}, this effattn reads {SCHEMA_VERSION}: {RERUN}")
    if not manifest.get("tasks"):
        manifest = {**manifest, "tasks": _tasks_on_disk(location)}
    return Run(name, location, manifest)


def _tasks_on_disk(location: str) -> list[str]:
    if remote.is_url(location):
        return []
    folders = Path(location).glob("*/task=*")
    return sorted({folder.name.removeprefix("task=") for folder in folders})


def table_files(run: Run, table: str, tasks: tuple[str, ...] | None = None) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime_ns, size) of every part file of ``table`` for ``tasks`` (all tasks when None)."""
    wanted = tuple(tasks) if tasks is not None else run.tasks
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


def _predicate(where: tuple[tuple[str, Any], ...]) -> pl.Expr | None:
    expr = None
    for column, value in where:
        term = pl.col(column).is_in(list(value)) if isinstance(value, (tuple, list)) else pl.col(column) == value
        expr = term if expr is None else expr & term
    return expr


@st.cache_data(show_spinner=False, max_entries=256)
def _read(files: tuple[tuple[str, int, int], ...], table: str, columns: tuple[str, ...] | None,
          where: tuple[tuple[str, Any], ...]) -> pl.DataFrame:
    """Scan ``files`` lazily, push ``where`` and ``columns`` down, collect. Keyed on mtimes."""
    paths = [path for path, _, _ in files]
    schema = TABLES.get(table)
    for path in paths if schema is not None else ():  # files outside the schema carry no version
        _check(path)
    if not paths:
        return pl.DataFrame(schema=schema or {})
    try:
        frame = pl.scan_parquet(paths, schema=schema, hive_partitioning=False, missing_columns="insert",
                                extra_columns="ignore")
        predicate = _predicate(where)
        if predicate is not None:
            frame = frame.filter(predicate)
        if columns:
            frame = frame.select(columns)
        return frame.collect()
    except (pl.exceptions.PolarsError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DashboardError(f"cache {Path(paths[0]).parent.parent} ({table}) cannot be read ({first_line}): {RERUN}") from None


def _check(path: str) -> None:
    try:
        check_schema_version(Path(path))
    except CacheError as error:
        raise DashboardError(str(error)) from None


def read(run: Run, table: str, *, tasks: tuple[str, ...] | None = None, columns: tuple[str, ...] | None = None,
         **where: Any) -> pl.DataFrame:
    """Rows of ``table`` for ``tasks`` matching ``where`` (column=value or column=tuple of values)."""
    clauses = tuple(sorted((column, tuple(value) if isinstance(value, (list, tuple)) else value)
                           for column, value in where.items()))
    return _read(table_files(run, table, tasks), table, tuple(columns) if columns else None, clauses)


def read_file(path: str) -> pl.DataFrame:
    """One Parquet file outside the run-folder schema (e.g. the classifier's evaluation)."""
    return _read((_mtime(Path(path)),), "", None, ())
