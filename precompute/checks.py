"""What a run folder's files must look like: frames before they are written (conform), the
manifest's shape and schema version, each part file's footer (readable, this schema version,
exactly the columns of docs/SCHEMA.md), and what the stage markers remember of the manifest.

Shared by precompute (store, verify) and the dashboard, so torch-free; it reads files but never
writes them. Every fault is a short phrase ("is corrupt (not a Parquet file)") that callers put
after the file's name, and every fix is one that works when followed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from precompute import CacheError
from precompute.schema import SCHEMA_VERSION, SCHEMA_VERSION_KEY, TABLE_STAGE, TABLES


# ---- frames to write ---------------------------------------------------------------------
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


# columns a writer may leave out (filled with nulls): the pattern columns when nothing was classified, and
# the interval columns where no classifier evaluation was available (precompute/share_intervals.py)
_FILLABLE = {"head_measures": ("pattern", "pattern_score"),
             "pattern_shares": ("share_adjusted", "share_low", "share_high", "diff_adjusted", "diff_low", "diff_high",
                                "n_examples", "confusion")}


def _castable(source: pl.DataType, target: pl.DataType) -> bool:
    if source == pl.Null:
        return True
    if isinstance(source, pl.List) and isinstance(target, pl.List):
        return _castable(source.inner, target.inner)
    numeric = lambda dtype: dtype.is_numeric() or dtype == pl.Boolean  # noqa: E731
    return numeric(source) and numeric(target)


# ---- manifest.json -----------------------------------------------------------------------
_PER_TASK_FIELDS = ("row_counts", "stage_seconds", "metrics", "finetune", "evaluate", "carve_outs")  # {task: {...}}
_FIELD_TYPES: dict[str, type] = {"tasks": list, "config": dict, "n_layers": int, "n_heads": int, "d_head": int,
                                 **{name: dict for name in _PER_TASK_FIELDS}}
_FIELD_NAMES = {"tasks": "a list of task names", "n_layers": "an integer", "n_heads": "an integer", "d_head": "an integer",
                **{name: "an object of objects per task" for name in _PER_TASK_FIELDS}}
_JSON_TYPES = ((bool, "boolean"), (dict, "object"), (list, "list"), (str, "string"), ((int, float), "number"))


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type ("object", "list", "string", ...)."""
    return next((name for kinds, name in _JSON_TYPES if isinstance(value, kinds)), "null")


def schema_version_of(value: object) -> int | None:
    """The schema version ``value`` states: an integer, or its decimal string (Parquet metadata
    can only hold strings, so "2" means 2 in manifest.json too); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def manifest_fix(root: Path | str) -> str:
    """How to replace a broken manifest.json (a rerun rebuilds it from the stage markers)."""
    if isinstance(root, Path) and not (root / "stages").is_dir():
        return _restore_fix(root)
    return (f"delete it and re-run the precompute command that made {root} "
            f"(it rebuilds manifest.json from the stage markers in {root}/stages)")


def _restore_fix(root: Path) -> str:
    """The fix in a copy of a run without stage markers (e.g. the shipped data/): nothing to resume from."""
    return (f"restore {root} from where it came from (for the shipped data/: `git checkout -- {root}`), or re-run "
            f"the precompute command that made it (this copy has no stage markers, so every stage is redone)")


def other_version_fix(root: Path | str) -> str:
    """What to do about a run folder written by another schema version."""
    return f"re-run into a new --out, or delete {root} and re-run (--force cannot help: it keeps the old files)"


def validate_manifest(manifest: object, path: Path | str) -> dict:
    """``manifest`` (parsed JSON) if it is a manifest of this schema version, with the version as
    an integer; else a one-line CacheError naming ``path`` (a file or a URL) and the fix."""
    root = path.parent if isinstance(path, Path) else path.rsplit("/", 1)[0]
    if not isinstance(manifest, dict):
        raise CacheError(f"cache {path} holds a JSON {json_type(manifest)}, expected an object: {manifest_fix(root)}")
    raw = manifest.get("schema_version")
    version = schema_version_of(raw)
    if raw is None or version is None:
        stated = "has no schema_version" if raw is None else f"has schema_version {raw!r} (a {json_type(raw)})"
        raise CacheError(f"cache {path} {stated}, expected the integer {SCHEMA_VERSION}: write \"schema_version\": "
                         f"{SCHEMA_VERSION} into it if this effattn made {root}, else {other_version_fix(root)}")
    if version != SCHEMA_VERSION:
        raise CacheError(f"cache {path} has schema version {version}, this effattn reads {SCHEMA_VERSION}: "
                         f"{other_version_fix(root)}")
    wrong = _wrong_field(manifest)
    if wrong is not None:
        raise CacheError(f"cache {path} has a {wrong} that is not {_FIELD_NAMES.get(wrong, 'an object')}: "
                         f"{manifest_fix(root)}")
    return {**manifest, "schema_version": version}


def _wrong_field(manifest: dict) -> str | None:
    """The first field of a type that stages and pages cannot use (they call .get on objects), or None."""
    for name, kind in _FIELD_TYPES.items():
        value = manifest.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            return name
        if name in _PER_TASK_FIELDS and not all(isinstance(item, dict) for item in value.values()):
            return name
        if name == "tasks" and not all(isinstance(item, str) for item in value):
            return name
    return None


# ---- part files --------------------------------------------------------------------------
@dataclass(frozen=True)
class PartFooter:
    """What a part file's Parquet footer says, read without decoding any rows."""

    rows: int
    columns: dict[str, pl.DataType]
    version: str | None  # the effattn_schema_version metadata as stored; None without it
    tasks: tuple[str | None, str | None]  # min and max of its task column (None without statistics)
    digest: str  # hash of the footer bytes: byte-identical copies of a part share it


class _Unreadable(Exception):
    """A part file whose footer cannot be read; the message says how it is broken."""


def read_footer(path: Path) -> PartFooter:
    """The footer of the Parquet file ``path`` (raises _Unreadable)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(0)
        if size < 12 or handle.read(4) != b"PAR1":
            raise _Unreadable("is corrupt (not a Parquet file)")
        handle.seek(size - 8)
        tail = handle.read(8)
        length = int.from_bytes(tail[:4], "little")
        if tail[4:] != b"PAR1" or length > size - 12:
            raise _Unreadable("is corrupt (truncated: its Parquet footer is missing)")
        handle.seek(size - 8 - length)
        digest = hashlib.blake2b(handle.read(length), digest_size=16).hexdigest()
    try:
        metadata = pq.read_metadata(path)
        columns = dict(pl.from_arrow(metadata.schema.to_arrow_schema().empty_table()).schema)
    except (OSError, ValueError, TypeError, pl.exceptions.PolarsError) as error:
        raise _Unreadable(f"is corrupt ({type(error).__name__} reading its footer)") from None
    version = (metadata.metadata or {}).get(SCHEMA_VERSION_KEY.encode())
    return PartFooter(metadata.num_rows, columns, None if version is None else version.decode(errors="replace"),
                      _task_range(metadata), digest)


def _task_range(metadata: pq.FileMetaData) -> tuple[str | None, str | None]:
    if "task" not in metadata.schema.names or metadata.num_row_groups == 0:
        return None, None
    column = metadata.schema.names.index("task")
    lows, highs = [], []
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max:
            return None, None
        lows.append(stats.min)
        highs.append(stats.max)
    decode = lambda value: value.decode() if isinstance(value, bytes) else value  # noqa: E731
    return decode(min(lows)), decode(max(highs))


def footer_fault(footer: PartFooter, path: Path, table: str | None) -> str | None:
    """How a readable part breaks the schema ("has schema version 1, ...", "lacks column ..."), or None."""
    version = schema_version_of(footer.version)
    if footer.version is None:
        return f"has no {SCHEMA_VERSION_KEY} metadata (it was not written by precompute)"
    if version is None:
        return f"has schema version {footer.version!r}, expected the integer {SCHEMA_VERSION}"
    if version != SCHEMA_VERSION:
        return f"has schema version {version}, this effattn reads {SCHEMA_VERSION}"
    if table not in TABLES:
        return None
    schema = TABLES[table]
    for name, dtype in schema.items():
        if name not in footer.columns:
            if name in _FILLABLE.get(table, ()):  # added later to the schema: readers fill it with nulls
                continue
            return f"lacks the column {name!r} ({dtype}) that docs/SCHEMA.md lists for {table}"
        if footer.columns[name] != dtype:
            return f"has the column {name!r} as {footer.columns[name]}, docs/SCHEMA.md says {dtype}"
    extra = [name for name in footer.columns if name not in schema]
    if extra:
        return f"has the column {extra[0]!r}, which docs/SCHEMA.md does not list for {table}"
    task = path.parent.name.removeprefix("task=")
    if footer.tasks != (None, None) and footer.tasks != (task, task):
        return f"holds rows of task {footer.tasks[0]!r} in the folder of task {task!r}"
    return None


def inspect_part(path: Path, table: str | None) -> tuple[PartFooter | None, str | None]:
    """(footer, None) for a sound part of ``table``; (footer or None, what is wrong) otherwise."""
    try:
        footer = read_footer(path)
    except _Unreadable as error:
        return None, str(error)
    except OSError as error:
        return None, f"cannot be read ({error.strerror})"
    return footer, footer_fault(footer, path, table)


def part_fix(path: Path, what: str = "the broken part") -> str:
    """How to replace a broken (or surplus) part: a rerun of its stage deletes and redoes it
    (repair.repair_for_rerun); verify prints the exact command, with the run's options."""
    root, table, task = path.parent.parent.parent, path.parent.parent.name, path.parent.name.removeprefix("task=")
    stage = TABLE_STAGE.get(table, "extract")
    if not (root / "stages").is_dir():
        return _restore_fix(root)
    return (f"re-run the precompute command that made {root} with --tasks {task} --stages {stage}: it deletes "
            f"{what} and redoes the rows it lacks (`python -m precompute --verify {root}` prints that command)")


def check_part(path: Path, table: str | None = None) -> None:
    """Raise a one-line CacheError unless ``path`` is a readable part of this schema version and,
    when ``table`` is given, with exactly its columns and dtypes."""
    _, fault = inspect_part(path, table)
    if fault is not None:
        raise CacheError(f"cache {path} {fault}: {part_fix(path)}")

# ---- stage markers -----------------------------------------------------------------------
# effattn.routing.CONFIG_ATTRIBUTE: the attention map a checkpoint's config.json records (read
# here without importing effattn, which loads torch)
CHECKPOINT_ATTENTION_KEY = "attention_map"


@dataclass(frozen=True)
class Marker:
    """One "stage done" marker file: ``<run>/stages/<stage>/task=<task>/<label>.json``."""

    stage: str
    task: str
    label: str  # the shard's file-name label, e.g. 00000-of-00001
    path: Path

    def read(self) -> dict | None:
        """Its JSON object; None when it is not one (stage_done only asks whether the file exists)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def rebuild_manifest(markers: list[Marker], checkpoints: Path, path: Path) -> dict:
    """The manifest ``path`` as the stage markers remember it ({} without markers).

    Every marker holds the manifest as it was when its stage finished, and the stage's own
    record (e.g. evaluate's metrics); they are merged oldest first, records last, so the newest
    facts win. Markers of older versions hold neither: only stage_seconds and tasks come back,
    and the attention map from a checkpoint's config.json.
    """
    dated = sorted(((marker.path.stat().st_mtime_ns, str(marker.path), marker, marker.read() or {}) for marker in markers),
                   key=lambda item: item[:2])
    if not dated:
        return {}
    manifest: dict = {}
    for *_, data in dated:
        if isinstance(data.get("manifest"), dict):
            manifest = deep_merge(manifest, data["manifest"])
    for *_, marker, data in dated:
        if isinstance(data.get("record"), dict):
            manifest = deep_merge(manifest, data["record"])
        if isinstance(data.get("seconds"), (int, float)):
            manifest = deep_merge(manifest, {"stage_seconds": {marker.task: {marker.stage: data["seconds"]}}})
    tasks = manifest.get("tasks") if isinstance(manifest.get("tasks"), list) else []
    manifest["tasks"] = sorted(set(tasks) | {marker.task for marker in markers})
    if "attention" not in manifest and (attention := _checkpoint_attention(checkpoints)):
        manifest["attention"] = attention
    manifest.setdefault("schema_version", SCHEMA_VERSION)
    return validate_manifest(manifest, path)


def _checkpoint_attention(checkpoints: Path) -> str | None:
    """The attention map a fine-tuned checkpoint under ``checkpoints`` records (None without one)."""
    for config in sorted(checkpoints.glob("*/config.json")):
        try:
            attention = json.loads(config.read_text()).get(CHECKPOINT_ATTENTION_KEY)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(attention, str):
            return attention
    return None


def deep_merge(base: dict, patch: dict) -> dict:
    merged = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
