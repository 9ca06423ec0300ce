"""Load a GLUE task as polars frames, from GLUE TSV files (--glue-dir) or the Hugging Face hub.

Every split comes back as one frame with columns ``example_id`` (i64, the row index in the
source split), ``text_a`` (str), ``text_b`` (str, null for one-sentence tasks) and ``label``
(f64: class id, or the STS-B score). Class ids follow the hub's ``nyu-mll/glue`` convention
(RTE/QNLI: entailment = 0, not_entailment = 1).

When the source has no train split (QNLI in the shipped GLUE folder), ``carve_train_from_dev``
splits dev with a seeded shuffle into disjoint train and eval rows; eval rows keep their dev
row index as ``example_id``, so nothing is ever evaluated on a training row.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from precompute import DataError
from precompute.schema import TASKS

FRAME_SCHEMA = {"example_id": pl.Int64, "text_a": pl.String, "text_b": pl.String, "label": pl.Float64}

# Per task: (text_a column, text_b column or None, label column) in the GLUE TSV header.
_TSV_COLUMNS = {
    "rte": ("sentence1", "sentence2", "label"),
    "mrpc": ("#1 String", "#2 String", "Quality"),
    "qnli": ("question", "sentence", "label"),
    "sst2": ("sentence", None, "label"),
    "stsb": ("sentence1", "sentence2", "score"),
}
_HUB_COLUMNS = {
    "rte": ("sentence1", "sentence2"), "mrpc": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"), "sst2": ("sentence", None), "stsb": ("sentence1", "sentence2"),
}
_NLI_LABELS = {"entailment": 0.0, "not_entailment": 1.0}
HUB_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class TaskData:
    """One task's training and evaluation rows plus where they came from."""

    task: str
    train: pl.DataFrame
    eval: pl.DataFrame
    source: str  # "hub" or "glue-dir:<path>"
    carve_out: dict | None = None  # {from, train_rows, eval_rows, seed} when train was carved from dev
    row_counts: dict = field(default_factory=dict)  # {train, train_available, dev, eval}


def _parse_label(task: str, raw: str, where: str) -> float:
    try:
        if task in ("rte", "qnli"):
            return _NLI_LABELS[raw]
        value = float(raw)
    except (KeyError, ValueError):
        raise DataError(f"{where}: label {raw!r} is not valid for {task}: check the file is the GLUE {TASKS[task].folder} TSV") from None
    if task != "stsb" and value not in (0.0, 1.0):
        raise DataError(f"{where}: label {raw!r} is not 0 or 1: check the file is the GLUE {TASKS[task].folder} TSV")
    return value


def dev_path(glue_dir: Path, task: str) -> Path:
    """Where ``task``'s dev split lives in a folder with the GLUE TSV layout (DIR/RTE/dev.tsv)."""
    return Path(glue_dir) / TASKS[task].folder / "dev.tsv"


def read_tsv(task: str, path: Path) -> pl.DataFrame:
    """Parse one GLUE TSV file (no quoting; every row must have the header's column count)."""
    if not path.is_file():
        raise DataError(f"GLUE file {path} is missing: pass --glue-dir pointing at a folder with {TASKS[task].folder}/train.tsv and dev.tsv")
    col_a, col_b, col_label = _TSV_COLUMNS[task]
    rows = {"example_id": [], "text_a": [], "text_b": [], "label": []}
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header is None:
        raise DataError(f"GLUE file {path} is empty: re-download the GLUE {TASKS[task].folder} files into --glue-dir")
    missing = [c for c in (col_a, col_b, col_label) if c and c not in header]
    if missing:
        raise DataError(f"{path}: header lacks column {missing[0]!r}: check the file is the GLUE {TASKS[task].folder} TSV")
    idx_a, idx_label = header.index(col_a), header.index(col_label)
    idx_b = header.index(col_b) if col_b else None
    for line, row in enumerate(reader, start=2):
        where = f"{path}:{line}"
        if len(row) != len(header):
            raise DataError(f"{where}: expected {len(header)} tab-separated fields, found {len(row)}: repair or re-download the file")
        rows["example_id"].append(line - 2)
        rows["text_a"].append(row[idx_a])
        rows["text_b"].append(row[idx_b] if idx_b is not None else None)
        rows["label"].append(_parse_label(task, row[idx_label], where))
    if not rows["example_id"]:
        raise DataError(f"GLUE file {path} has a header but no rows: re-download the GLUE {TASKS[task].folder} files into --glue-dir")
    return pl.DataFrame(rows, schema=FRAME_SCHEMA)


def _read_text(path: Path) -> str:
    """The file as text; bytes that are not UTF-8 are a DataError naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # utf-8-sig: MRPC starts with a BOM
    except UnicodeDecodeError as error:
        undecoded = error.object  # without the BOM, which error.start does not count
        line = undecoded[:error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: byte 0x{undecoded[error.start]:02x} is not UTF-8 text: save the file as UTF-8 "
                        f"(the GLUE files are) or re-download it") from None


def load_hub_split(task: str, split: str) -> pl.DataFrame | None:
    """One split of ``nyu-mll/glue`` through ``datasets`` (None when the hub has no such split)."""
    try:
        import datasets

        dataset = datasets.load_dataset(HUB_DATASET, task, split=split)
    except ValueError as error:
        if "split" in str(error).lower():
            return None
        raise DataError(f"could not load {task} from the Hugging Face hub ({_first_line(error)}): pass --glue-dir DIR with the GLUE TSV files") from None
    except Exception as error:  # offline, network or cache errors: all mean "use local files"
        raise DataError(f"could not load {task} from the Hugging Face hub ({_first_line(error)}): pass --glue-dir DIR with the GLUE TSV files") from None
    col_a, col_b = _HUB_COLUMNS[task]
    n = len(dataset)
    return pl.DataFrame(
        {
            "example_id": range(n),
            "text_a": dataset[col_a],
            "text_b": dataset[col_b] if col_b else [None] * n,
            "label": [float(v) for v in dataset["label"]],
        },
        schema=FRAME_SCHEMA,
    )


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__


def carve(dev: pl.DataFrame, fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ``dev`` into disjoint (train, eval) frames; ``fraction`` of the rows go to train."""
    n_train = int(round(len(dev) * fraction))
    shuffled = dev.sample(fraction=1.0, shuffle=True, seed=seed)
    train = shuffled.head(n_train).sort("example_id")
    evaluation = shuffled.slice(n_train).sort("example_id")
    return train, evaluation


def second_texts(frame: pl.DataFrame) -> list[str | None] | None:
    """The text_b column as a list, or None when no row has one.

    Tokenizers take None as "single sentences"; a list of only None would ask for pairs.
    """
    texts_b = frame["text_b"].to_list()
    return texts_b if any(text is not None for text in texts_b) else None


def cap(frame: pl.DataFrame, limit: int | None, seed: int | None = None) -> pl.DataFrame:
    """At most ``limit`` rows: a seeded random subset (kept in source order) or the first rows."""
    if limit is None or len(frame) <= limit:
        return frame
    if seed is None:
        return frame.head(limit)
    return frame.sample(n=limit, shuffle=False, seed=seed).sort("example_id")


def load_task(
    task: str,
    *,
    glue_dir: Path | None,
    carve_train_from_dev: float | None = None,
    seed: int = 42,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
) -> TaskData:
    """Load ``task``: train capped to a seeded random subset, eval capped to its first rows."""
    folder = TASKS[task].folder
    if glue_dir is not None:
        source = f"glue-dir:{glue_dir}"
        dev = read_tsv(task, dev_path(glue_dir, task))
        train_path = Path(glue_dir) / folder / "train.tsv"
        train = read_tsv(task, train_path) if train_path.exists() else None
    else:
        source = "hub"
        dev = load_hub_split(task, "validation")
        train = load_hub_split(task, "train")
    carve_out = None
    if train is None:
        if carve_train_from_dev is None:
            raise DataError(f"{task} has no train split in {source} (no {folder}/train.tsv): add it, or pass --carve-train-from-dev FRACTION to train on part of dev")
        train, evaluation = carve(dev, carve_train_from_dev, seed)
        if not len(train) or not len(evaluation):
            raise DataError(f"--carve-train-from-dev {carve_train_from_dev} of {task}'s {len(dev)} dev rows leaves "
                            f"{len(train)} train and {len(evaluation)} eval rows: pass a fraction that leaves both, e.g. 0.6")
        carve_out = {"from": "dev", "fraction": carve_train_from_dev, "train_rows": len(train), "eval_rows": len(evaluation), "seed": seed}
    else:
        evaluation = dev
    train_used, eval_used = cap(train, max_train_examples, seed), cap(evaluation, max_eval_examples)
    counts = {"train": len(train_used), "train_available": len(train), "dev": len(dev), "eval": len(eval_used)}
    return TaskData(task, train_used, eval_used, source, carve_out, counts)
