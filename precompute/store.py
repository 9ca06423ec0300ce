"""RunFolder: the only code that touches run-folder paths. Every write is atomic.

Layout (docs/SCHEMA.md)::

    <run>/manifest.json
    <run>/checkpoints/<task>/                          fine-tuned model
    <run>/<table>/task=<task>/part-<shard>-<chunk>.parquet
    <run>/stages/<stage>/task=<task>/<shard>.json      "stage done" markers, one per shard

Stage markers are separate files (not manifest entries) so that N shard processes writing
into one run folder never overwrite each other's progress. Each keeps its stage's manifest
record and a copy of the manifest, so a deleted manifest.json is rebuilt from them. What the
files must look like is checked in precompute/checks.py (reading) and repaired before a rerun
in precompute/repair.py.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import polars as pl

from precompute import CacheError, ConfigError, DiskFullError
from precompute.checks import (  # noqa: F401  conform and check_part are part of this module's API
    Marker, check_part, conform, deep_merge, manifest_fix, rebuild_manifest, validate_manifest,
)
from precompute.schema import SCHEMA_VERSION, SCHEMA_VERSION_KEY, STAGE_TABLES, STAGES, TABLES

# zstd level 9 shrinks the shipped caches by about a fifth over the default at little write cost.
ZSTD_LEVEL = 9
PART_NAME = re.compile(r"part-(?P<shard>\d{5}-of-\d{5})-(?P<chunk>\d{5})\.parquet")  # what write_part names
SHARD_LABEL = re.compile(r"(?P<index>\d{5})-of-(?P<count>\d{5})")


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

    @classmethod
    def from_label(cls, label: str) -> "Shard | None":
        """The shard of a file-name label such as ``00001-of-00004``; None for anything else."""
        match = SHARD_LABEL.fullmatch(label)
        if not match or not 0 <= int(match["index"]) < int(match["count"]):
            return None
        return cls(int(match["index"]), int(match["count"]))

    @property
    def label(self) -> str:
        """File-name form, e.g. ``00000-of-00004``."""
        return f"{self.index:05d}-of-{self.count:05d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _file_mode() -> int:
    """0o666 less the umask: what open() would give, where mkstemp gives 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# mkstemp's 0o600 would keep a dashboard that runs as another user (a container) from reading the run
FILE_MODE = _file_mode()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place with os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    locked = _lock_or_close(fd)  # while locked, a rerun's cleanup (leftover_temporaries) leaves it alone
    try:
        with disk_full_as_error(f"writing {path}"):
            yield tmp
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        if locked:
            os.close(fd)


def _lock_or_close(fd: int) -> bool:
    """Lock the open temporary ``fd`` and keep it open (True), or close it where there is no fcntl."""
    try:
        import fcntl
    except ImportError:  # Windows: an open file could be neither replaced nor deleted there
        os.close(fd)
        return False
    fcntl.flock(fd, fcntl.LOCK_EX)
    return True


def in_use(path: Path) -> bool:
    """Whether a running atomic_path write holds the temporary ``path`` (a killed one holds nothing)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except FileNotFoundError:  # its write finished meanwhile
        return True
    return False


def disk_full_message(where: str) -> str:
    """The one-line report of a full disk; `where` says what was being written."""
    return f"disk full {where}: free some space or choose another --out"


@contextmanager
def disk_full_as_error(doing: str) -> Iterator[None]:
    """Turn a full disk inside the block into a one-line DiskFullError about `doing`: an OSError
    with ENOSPC, or a polars, pyarrow, torch or safetensors error caused by one."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as error:
        if caused_by_full_disk(error):
            raise DiskFullError(disk_full_message(f"while {doing}")) from None
        raise


def caused_by_full_disk(error: BaseException | None) -> bool:
    """Whether a full disk is behind `error` or its causes. polars, pyarrow, torch and safetensors
    wrap ENOSPC in their own exceptions, some keeping only the OS message."""
    for _ in range(16):  # chains are short; the bound only guards against a cycle
        if error is None:
            return False
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if any(text in str(error) for text in ("No space left on device", "os error 28")):
            return True
        error = error.__cause__ or error.__context__
    return False


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
            if PART_NAME.fullmatch(path.name)
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
            check_part(path, table)
        if not files:
            return pl.LazyFrame(schema=TABLES[table])
        return pl.scan_parquet(files, hive_partitioning=False, schema=TABLES[table])

    # ---- manifest ----------------------------------------------------------------------
    def read_manifest(self) -> dict:
        """The manifest as a dict: rebuilt from the stage markers when manifest.json is missing
        (``{}`` in a new folder). A file that is not a manifest of this schema is a CacheError."""
        path = self.manifest_path
        if not path.exists():
            return self.rebuilt_manifest()
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CacheError(f"cache {path} is not valid JSON: {manifest_fix(self.root)}") from None
        except OSError as error:
            raise CacheError(f"cache {path} cannot be read ({error.strerror}): {manifest_fix(self.root)}") from None
        return validate_manifest(manifest, path)

    def update_manifest(self, patch: dict) -> dict:
        """Deep-merge ``patch`` into the manifest, write it atomically and return it.

        Read-merge-write runs under an exclusive lock on ``.manifest.lock`` (where the OS has
        fcntl), so shard processes or stages running side by side do not lose each other's updates.
        """
        with _manifest_lock(self.root):
            merged = deep_merge(self.read_manifest(), patch)
            merged["schema_version"] = SCHEMA_VERSION
            write_json_atomic(self.manifest_path, merged)
        return merged

    def rebuilt_manifest(self) -> dict:
        """The manifest as the stage markers remember it ({} without markers); see checks.rebuild_manifest."""
        return rebuild_manifest(self.markers(), self.root / "checkpoints", self.manifest_path)

    # ---- stages ------------------------------------------------------------------------
    def stage_done(self, stage: str, task: str, shard: Shard = Shard()) -> bool:
        return self._marker(stage, task, shard).exists()

    def mark_stage_done(self, stage: str, task: str, shard: Shard = Shard(), seconds: float = 0.0,
                        record: dict | None = None) -> None:
        """Record that ``stage`` finished for ``task``/``shard``.

        ``record`` is the stage's manifest patch (e.g. evaluate's metrics): it is merged into the
        manifest with the stage's seconds, and kept in the marker file together with a copy of the
        merged manifest, so that a deleted manifest.json can be rebuilt (rebuilt_manifest).
        """
        seconds = round(seconds, 3)
        manifest = self.update_manifest(deep_merge(record or {}, {"stage_seconds": {task: {stage: seconds}}}))
        write_json_atomic(self._marker(stage, task, shard),
                          {"seconds": seconds, "shard": str(shard), "record": record or {}, "manifest": manifest})

    def markers(self) -> list["Marker"]:
        """Every stage marker of the run, in pipeline order of the stages."""
        found = [Marker(path.parent.parent.name, path.parent.name.removeprefix("task="), path.stem, path)
                 for path in (self.root / "stages").glob("*/task=*/*.json")]
        order = {stage: index for index, stage in enumerate(STAGES)}
        return sorted(found, key=lambda marker: (order.get(marker.stage, len(order)), marker.task, marker.label))

    def clear_marker(self, stage: str, task: str, label: str | None = None) -> None:
        """Forget that ``stage`` finished for one shard of ``task`` (its label, e.g. ``00000-of-00001``),
        or for every shard (None); its tables stay, so a rerun redoes only what is missing."""
        folder = self.root / "stages" / stage / f"task={task}"
        if label is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            (folder / f"{label}.json").unlink(missing_ok=True)

    def delete_chunk(self, stage: str, task: str, label: str, chunk: int) -> None:
        """Delete one chunk's part files in every table of ``stage``, so that a rerun redoes the chunk."""
        for table in STAGE_TABLES[stage]:
            (self._partition_dir(table, task) / f"part-{label}-{chunk:05d}.parquet").unlink(missing_ok=True)

    def clear(self, name: str, task: str) -> None:
        """Delete a table's partition for ``task``, or everything a stage produced (for --force).
        A name of both (``importance``) means the stage: its marker and both its tables."""
        if name in TABLES and name not in STAGES:
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

    def leftover_temporaries(self) -> list[Path]:
        """Temporaries of atomic writes that a killed process left behind (not those of a running one)."""
        return [path for path in sorted(self.root.rglob(".*.tmp")) if path.is_file() and not in_use(path)]


def check_schema_version(path: Path) -> None:
    """Raise CacheError unless ``path`` is a readable Parquet file of this schema version."""
    check_part(path, None)
