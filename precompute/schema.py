"""The cache schema: the one place that names run-folder tables, columns and tasks.

Torch-free on purpose: the Streamlit dashboard imports this module. docs/SCHEMA.md documents
every column; keep the two in step and bump ``SCHEMA_VERSION`` on any incompatible change.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

SCHEMA_VERSION = 1  # written into every Parquet file and manifest.json
SCHEMA_VERSION_KEY = "effattn_schema_version"  # Parquet key-value metadata key

KINDS = ("standard", "effective")  # attention kinds; new kinds add rows, never tables
# Full maps (the explorer sample) are rounded to this many decimals: a heatmap cannot show
# finer differences, and rounded maps compress ~4x better, which keeps the shipped data/ small.
MAP_DECIMALS = 3
PATTERNS = ("vertical", "diagonal", "vertical+diagonal", "block", "heterogeneous")
STAGES = ("finetune", "evaluate", "extract", "analyse")

_KEY = {"task": pl.String, "example_id": pl.Int64, "layer": pl.Int16, "head": pl.Int16, "kind": pl.String}

_F32_MEASURES = (
    "cls_weight", "sep_weight",
    "cls_row_noun", "cls_row_pron", "cls_row_verb", "cls_row_sep", "cls_row_cls", "cls_row_punct",
    "entropy", "null_norm", "pretrained_cosine",
)
HEAD_MEASURES = _F32_MEASURES  # the f32 measures summarised in head_summary

TABLES: dict[str, dict[str, pl.DataType]] = {
    "examples": {
        "task": pl.String, "example_id": pl.Int64,
        "label": pl.Float64, "prediction": pl.Float64, "prediction_effective": pl.Float64,
        "seq_len": pl.Int32, "n_segments": pl.Int8, "in_map_sample": pl.Boolean,
        "text_a": pl.String, "text_b": pl.String,
        "tokens": pl.List(pl.String), "token_pos": pl.List(pl.String),
        "segment_ids": pl.List(pl.Int8),
    },
    "head_measures": {
        **_KEY,
        "seq_len": pl.Int32, "rank": pl.Int16, "nullity": pl.Int16,
        **{name: pl.Float32 for name in _F32_MEASURES},
        "pattern": pl.String, "pattern_score": pl.Float32,
    },
    "maps": {**_KEY, "seq_len": pl.Int32, "weights": pl.List(pl.Float32)},
    "metrics": {
        "task": pl.String, "kind": pl.String, "metric": pl.String,
        "value": pl.Float64, "n_examples": pl.Int64,
    },
    "head_summary": {
        "task": pl.String, "layer": pl.Int16, "head": pl.Int16, "kind": pl.String,
        "measure": pl.String, "mean": pl.Float64, "std": pl.Float64,
        "q25": pl.Float64, "q50": pl.Float64, "q75": pl.Float64, "n": pl.Int64,
    },
    "task_summary": {
        "task": pl.String, "n_eval": pl.Int64, "d_head": pl.Int64, "share_le_d_head": pl.Float64,
        "mean_seq_len": pl.Float64, "prediction_agreement": pl.Float64,
    },
    "pattern_shares": {
        "task": pl.String, "kind": pl.String, "pattern": pl.String,
        "share": pl.Float64, "n_maps": pl.Int64,
    },
    "pattern_grid": {
        "task": pl.String, "layer": pl.Int16, "head": pl.Int16, "kind": pl.String,
        "dominant_pattern": pl.String, "dominant_share": pl.Float64,
    },
}

@dataclass(frozen=True)
class TaskInfo:
    """What the pipeline needs to know about one GLUE task."""

    name: str  # canonical lower-case GLUE name, the `task` column value
    folder: str  # folder name in the GLUE TSV layout
    num_labels: int  # 1 = regression (STS-B)
    metrics: tuple[str, ...]  # quality metrics, headline metric first
    two_sentences: bool  # whether text_b is used

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


TASKS: dict[str, TaskInfo] = {
    "rte": TaskInfo("rte", "RTE", 2, ("accuracy",), True),
    "mrpc": TaskInfo("mrpc", "MRPC", 2, ("f1", "accuracy"), True),
    "qnli": TaskInfo("qnli", "QNLI", 2, ("accuracy",), True),
    "sst2": TaskInfo("sst2", "SST-2", 2, ("accuracy",), False),
    "stsb": TaskInfo("stsb", "STS-B", 1, ("pearson", "spearman"), True),
}

# Every spelling accepted on the command line (compared case-insensitively).
TASK_ALIASES: dict[str, str] = {
    **{name: name for name in TASKS},
    **{info.folder.lower(): name for name, info in TASKS.items()},
    "sst-2": "sst2", "sst_2": "sst2", "sts-b": "stsb", "sts_b": "stsb",
}


def canonical_task(name: str) -> str | None:
    """Map any accepted spelling of a task ("STS-B", "sts-b", "stsb") to its canonical name."""
    return TASK_ALIASES.get(name.strip().lower())

# Which tables each stage writes (what --force clears). Stage "finetune" writes the checkpoint.
STAGE_TABLES: dict[str, tuple[str, ...]] = {
    "finetune": (),
    "evaluate": ("metrics",),
    "extract": ("examples", "head_measures", "maps"),
    "analyse": ("head_summary", "task_summary", "pattern_shares", "pattern_grid"),
}
