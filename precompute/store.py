"""RunFolder: the only code that touches run-folder paths. Every write is atomic.

Layout (docs/SCHEMA.md)::

    <run>/manifest.json
    <run>/checkpoints/<task>/                          fine-tuned model
    <run>/<table>/task=<task>/part-<shard>-<chunk>.parquet
    <run>/stages/<stage>/task=<task>/<shard>.json      "stage done" markers, one per shard

Stage markers are separate files (not manifest entries) so that N shard processes writing
into one run folder never overwrite each other's progress.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import polars as pl
import pyarrow.parquet as pq

from precompute import CacheError, ConfigError, DiskFullError
from precompute.schema import SCHEMA_VERSION, SCHEMA_VERSION_KEY, STAGE_TABLES, STAGES, TABLES

_RERUN = "re-run `python -m precompute ... --force`"
# zstd level 9 shrinks the shipped caches by about a fifth over the default at little write cost.
ZSTD_LEVEL = 9


@dataclass(frozen=True)
class Shard:
    """This process's share of the eval examples: shard ``index`` (0-based) of ``count``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise ConfigError(f"shard {self.index}/{self.count} is out of range: use --shard i/N with 0 <= i < N")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """Parse ``"i/N"``, e.g. ``"0/4"``."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ConfigError(f"--shard expects i/N (e.g. 0/4), got {text!r}: pass two integers separated by '/'") from None
        return cls(index, count)

    @property
    def label(self) -> str:
        """File-name form, e.g. ``00000-of-00004``."""
        return f"{self.index:05d}-of-{self.count:05d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place with os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with disk_full_as_error(f"writing {path}"):
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def disk_full_message(where: str) -> str:
    """The one-line report of a full disk; `where` says what was being written."""
    return f"disk full {where}: free some space or choose another --out"


@contextmanager
def disk_full_as_error(doing: str) -> Iterator[None]:
    """Turn a full disk (ENOSPC) inside the block into a one-line DiskFullError about `doing`."""
    try:
        yield
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise DiskFullError(disk_full_message(f"while {doing}")) from None
        raise


@contextmanager
def _manifest_lock(root: Path) -> Iterator[None]:
    """Exclusive advisory lock for manifest updates (a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: one writer at a time is then the caller's job
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".manifest.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _deep_merge(base: dict, patch: dict) -> dict:
    merged = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def conform(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Return ``frame`` with exactly the columns and dtypes of ``TABLES[table]``, in order.

    Numeric columns are cast (strictly: overflow is an error); anything else that differs is
    an error naming the column. Missing columns are an error, except all-null ones that the
    caller may leave out (e.g. ``pattern`` before classification) — those must be nullable by
    docs/SCHEMA.md and are filled with nulls.
    """
    schema = TABLES[table]
    extra = [name for name in frame.columns if name not in schema]
    if extra:
        raise CacheError(f"table {table} has no column {extra[0]!r}: drop it or add it to precompute/schema.py")
    columns = []
    for name, dtype in schema.items():
        if name not in frame.columns:
            if name not in _FILLABLE.get(table, ()):
                raise CacheError(f"table {table} needs column {name!r} ({dtype}): add it to the frame before writing")
            columns.append(pl.lit(None, dtype=dtype).alias(name))
        elif frame.schema[name] == dtype:
            columns.append(pl.col(name))
        elif _castable(frame.schema[name], dtype):
            columns.append(pl.col(name).cast(dtype, strict=True))
        else:
            raise CacheError(f"column {table}.{name} is {frame.schema[name]}, expected {dtype}: convert it before writing")
    try:
        return frame.select(columns)
    except pl.exceptions.PolarsError as error:
        raise CacheError(f"table {table}: a value does not fit its column type ({str(error).splitlines()[0]}): check the ranges") from None


_FILLABLE = {"head_measures": ("pattern", "pattern_score")}


def _castable(source: pl.DataType, target: pl.DataType) -> bool:
    if source == pl.Null:
        return True
    if isinstance(source, pl.List) and isinstance(target, pl.List):
        return _castable(source.inner, target.inner)
    numeric = lambda dtype: dtype.is_numeric() or dtype == pl.Boolean  # noqa: E731
    return numeric(source) and numeric(target)


class RunFolder:
    """One run folder on disk; see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ---- paths -------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def checkpoint_dir(self, task: str) -> Path:
        return self.root / "checkpoints" / task

    def training_state_dir(self, task: str) -> Path:
        """Where fine-tuning keeps its resumable training state (inside the checkpoints)."""
        return self.root / "checkpoints" / f"{task}.training-state"

    def _partition_dir(self, table: str, task: str) -> Path:
        if table not in TABLES:
            raise CacheError(f"unknown table {table!r}: choose from {', '.join(TABLES)}")
        return self.root / table / f"task={task}"

    def _marker(self, stage: str, task: str, shard: Shard) -> Path:
        return self.root / "stages" / stage / f"task={task}" / f"{shard.label}.json"

    # ---- tables ------------------------------------------------------------------------
    def write_part(self, table: str, task: str, frame: pl.DataFrame, *, shard: Shard, chunk: int) -> Path:
        """Validate ``frame`` against the schema and write it as one zstd Parquet part file."""
        frame = conform(table, frame)
        tasks = frame["task"].unique().to_list()
        if tasks and tasks != [task]:
            raise CacheError(f"frame for table {table} has task values {tasks}, expected only {task!r}: filter it first")
        path = self._partition_dir(table, task) / f"part-{shard.label}-{chunk:05d}.parquet"
        with atomic_path(path) as tmp:
            frame.write_parquet(tmp, compression="zstd", compression_level=ZSTD_LEVEL, metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION)})
        return path

    def existing_chunks(self, table: str, task: str, shard: Shard) -> set[int]:
        """Chunk numbers this shard has already written for ``table``/``task``."""
        prefix = f"part-{shard.label}-"
        return {
            int(path.stem[len(prefix):])
            for path in self._partition_dir(table, task).glob(f"{prefix}*.parquet")
        }

    def part_files(self, table: str, tasks: list[str] | None = None) -> list[Path]:
        """All part files of ``table`` (every shard), optionally only for ``tasks``."""
        folder = self.root / table
        files = sorted(folder.glob("task=*/part-*.parquet"))
        if tasks is not None:
            files = [path for path in files if path.parent.name.removeprefix("task=") in tasks]
        return files

    def scan(self, table: str, tasks: list[str] | None = None) -> pl.LazyFrame:
        """All shards' part files of ``table`` as one lazy frame (empty frame when none exist)."""
        files = self.part_files(table, tasks)
        for path in files:
            check_schema_version(path)
        if not files:
            return pl.LazyFrame(schema=TABLES[table])
        return pl.scan_parquet(files, hive_partitioning=False, schema=TABLES[table])

    # ---- manifest ----------------------------------------------------------------------
    def read_manifest(self) -> dict:
        """The manifest as a dict ({} before the first write)."""
        if not self.manifest_path.exists():
            return {}
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CacheError(f"cache {self.manifest_path} is not valid JSON: delete it or {_RERUN}") from None
        version = manifest.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise CacheError(f"cache {self.manifest_path} has schema version {version}, this effattn reads {SCHEMA_VERSION}: {_RERUN}")
        return manifest

    def update_manifest(self, patch: dict) -> None:
        """Deep-merge ``patch`` into the manifest and write it atomically.

        Read-merge-write runs under an exclusive lock on ``.manifest.lock`` (where the OS has
        fcntl), so shard processes or stages running side by side do not lose each other's updates.
        """
        with _manifest_lock(self.root):
            merged = _deep_merge(self.read_manifest(), patch)
            merged["schema_version"] = SCHEMA_VERSION
            write_json_atomic(self.manifest_path, merged)

    # ---- stages ------------------------------------------------------------------------
    def stage_done(self, stage: str, task: str, shard: Shard = Shard()) -> bool:
        return self._marker(stage, task, shard).exists()

    def mark_stage_done(self, stage: str, task: str, shard: Shard = Shard(), seconds: float = 0.0) -> None:
        """Record that ``stage`` finished for ``task``/``shard``, and its time in the manifest."""
        write_json_atomic(self._marker(stage, task, shard), {"seconds": round(seconds, 3), "shard": str(shard)})
        self.update_manifest({"stage_seconds": {task: {stage: round(seconds, 3)}}})

    def clear(self, name: str, task: str) -> None:
        """Delete a table's partition for ``task``, or everything a stage produced (for --force)."""
        if name in TABLES:
            shutil.rmtree(self._partition_dir(name, task), ignore_errors=True)
            return
        if name not in STAGES:
            raise CacheError(f"cannot clear {name!r}: name a stage ({', '.join(STAGES)}) or a table")
        shutil.rmtree(self.root / "stages" / name / f"task={task}", ignore_errors=True)
        for table in STAGE_TABLES[name]:
            shutil.rmtree(self._partition_dir(table, task), ignore_errors=True)
        if name == "finetune":
            shutil.rmtree(self.checkpoint_dir(task), ignore_errors=True)
            shutil.rmtree(self.training_state_dir(task), ignore_errors=True)


def check_schema_version(path: Path) -> None:
    """Raise CacheError unless ``path`` is a readable Parquet file of this schema version."""
    try:
        metadata = pq.read_metadata(path).metadata or {}
    except (OSError, ValueError) as error:
        raise CacheError(f"cache {path} is corrupt ({type(error).__name__}): delete it or {_RERUN}") from None
    version = metadata.get(SCHEMA_VERSION_KEY.encode(), b"missing").decode()
    if version != str(SCHEMA_VERSION):
        raise CacheError(f"cache {path} has schema version {version}, this effattn reads {SCHEMA_VERSION}: {_RERUN}")
