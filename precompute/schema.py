"""The cache schema: the one place that names run-folder tables, columns and tasks.

Torch-free on purpose: the Streamlit dashboard imports this module. docs/SCHEMA.md documents
every column; keep the two in step and bump ``SCHEMA_VERSION`` on any incompatible change.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

SCHEMA_VERSION = 2  # written into every Parquet file and manifest.json; 2 added the kinds norm, effective_norm, efficient
SCHEMA_VERSION_KEY = "effattn_schema_version"  # Parquet key-value metadata key



@dataclass(frozen=True)
class KindInfo:
    """Display facts of one attention kind; the dashboard reads labels and colour rules from here."""

    name: str  # the `kind` column value
    label: str  # short label for legends and panel titles
    signed: bool  # entries can be negative: diverging colour scale centred at 0, else sequential from 0
    source: str  # where the view comes from
    project_defined: bool  # True: our definition, not the paper's (say so wherever it is shown)
    description: str  # one sentence for captions


# The attention kinds, in display order; new kinds add rows, never tables. effattn.kinds computes
# each one from a captured layer (same names, same order; a test keeps the two in step).
KIND_INFO: dict[str, KindInfo] = {info.name: info for info in (
    KindInfo("standard", "standard A", False, "softmax attention", False,
             "the attention probabilities the model computes"),
    KindInfo("effective", "effective A_eff", True, "Brunner et al. 2020; Sun & Marasović 2021", False,
             "A minus its projection on the left null space of V: the part that reaches the head output"),
    KindInfo("norm", "norm-weighted", False, "Kobayashi et al. 2020", False,
             "α_ij·‖f(x_j)‖ with f(x_j) = (x_j W_V + b_V) W_O, each row divided by its sum (share of the row's norm mass)"),
    KindInfo("effective_norm", "effective norm-weighted", True, "project-defined, after Kobayashi et al. 2020", True,
             "A_eff,ij·‖f(x_j)‖, divided by the same row sums as norm-weighted (norm = effective_norm + null part)"),
    KindInfo("efficient", "efficient", False, "project-defined, after Naim & Asher 2024", True,
             "the sparse distribution p ≥ 0, Σp = 1, pV = aV that keeps most of a's mass (an LP vertex)"),
)}
KINDS = tuple(KIND_INFO)  # the one shared list of kind names
# Full maps (the explorer sample) are rounded to this many decimals: a heatmap cannot show
# finer differences, and rounded maps compress ~4x better, which keeps the shipped data/ small.
MAP_DECIMALS = 3
PATTERNS = ("vertical", "diagonal", "vertical+diagonal", "block", "heterogeneous")
STAGES = ("finetune", "evaluate", "extract", "attribute", "importance", "analyse")

_KEY = {"task": pl.String, "example_id": pl.Int64, "layer": pl.Int16, "head": pl.Int16, "kind": pl.String}

_F32_MEASURES = (
    "cls_weight", "sep_weight", "punct_weight", "support_share",
    "cls_row_noun", "cls_row_pron", "cls_row_verb", "cls_row_sep", "cls_row_cls", "cls_row_punct",
    "entropy", "null_norm", "pretrained_cosine",
)
HEAD_MEASURES = _F32_MEASURES  # the f32 measures summarised in head_summary
# attention row vs gradient attribution row (stage attribute), summarised in attribution_summary
ATTRIBUTION_MEASURES = ("jsd", "kendall_tau", "top1_agreement")
INFLUENCE_MEASURES = ("own_share", "entropy")  # of layer_influence, summarised in influence_summary
# what a head's [CLS] row is compared with (stage importance, Meister et al. Eq. 4–6), the
# `target` column of `importance`
IMPORTANCE_TARGETS = ("input_gradient", "leave_one_out", "intermediate_gradient")
# per layer × head of each kind, from head_measures (stage analyse): the sparsity of the maps
SPARSITY_MEASURES = ("zero_share", "support_size")

TABLES: dict[str, dict[str, pl.DataType]] = {
    "examples": {
        "task": pl.String, "example_id": pl.Int64,
        "label": pl.Float64, "prediction": pl.Float64, "prediction_effective": pl.Float64,
        "seq_len": pl.Int32, "n_segments": pl.Int8, "in_map_sample": pl.Boolean,
        "in_efficient_sample": pl.Boolean,
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
        # issue 17: the share corrected for the classifier's held-out confusion, its 95 % interval
        # (examples bootstrapped, confusion drawn from its Dirichlet), and the paired difference
        # kind − standard of the corrected shares with its interval (null for standard); all null
        # where no classifier evaluation was available (precompute/share_intervals.py)
        "share_adjusted": pl.Float64, "share_low": pl.Float64, "share_high": pl.Float64,
        "diff_adjusted": pl.Float64, "diff_low": pl.Float64, "diff_high": pl.Float64,
        "n_examples": pl.Int64,
        "confusion": pl.String,  # which confusion matrix corrected it: the kind's own or "pooled"
    },
    "pattern_grid": {
        "task": pl.String, "layer": pl.Int16, "head": pl.Int16, "kind": pl.String,
        "dominant_pattern": pl.String, "dominant_share": pl.Float64,
    },
    "attribution": {**_KEY, **{name: pl.Float32 for name in ATTRIBUTION_MEASURES}},
    "layer_influence": {
        "task": pl.String, "example_id": pl.Int64, "layer": pl.Int16,
        **{name: pl.Float32 for name in INFLUENCE_MEASURES}, "seq_len": pl.Int32,
    },
    "attribution_maps": {
        "task": pl.String, "example_id": pl.Int64, "layer": pl.Int16, "head": pl.Int16,
        "seq_len": pl.Int32, "weights": pl.List(pl.Float32),
    },
    "attribution_summary": {
        "task": pl.String, "layer": pl.Int16, "head": pl.Int16, "kind": pl.String,
        "measure": pl.String, "mean": pl.Float64, "std": pl.Float64, "n": pl.Int64,
    },
    "influence_summary": {
        "task": pl.String, "layer": pl.Int16,
        "measure": pl.String, "mean": pl.Float64, "std": pl.Float64, "n": pl.Int64,
    },
    "importance": {**_KEY, "target": pl.String, "kendall_tau": pl.Float32, "n_keys": pl.Int32},
    "output_dispersion": {
        "task": pl.String, "example_id": pl.Int64, "target": pl.String, "entropy": pl.Float32, "n_keys": pl.Int32,
    },
    "importance_summary": {
        "task": pl.String, "layer": pl.Int16, "head": pl.Int16, "kind": pl.String, "target": pl.String,
        "mean": pl.Float64, "std": pl.Float64, "n": pl.Int64,
    },
    "sparsity_summary": {
        "task": pl.String, "layer": pl.Int16, "head": pl.Int16, "kind": pl.String,
        "measure": pl.String, "mean": pl.Float64, "std": pl.Float64, "n": pl.Int64,
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
    "attribute": ("attribution", "layer_influence", "attribution_maps"),
    "importance": ("importance", "output_dispersion"),
    "analyse": ("head_summary", "task_summary", "pattern_shares", "pattern_grid",
                "attribution_summary", "influence_summary", "importance_summary", "sparsity_summary"),
}

# The columns that identify a row of each table: no two rows of a run share them (verify checks it).
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "examples": ("task", "example_id"),
    "head_measures": tuple(_KEY),
    "maps": tuple(_KEY),
    "metrics": ("task", "kind", "metric"),
    "head_summary": ("task", "layer", "head", "kind", "measure"),
    "task_summary": ("task",),
    "pattern_shares": ("task", "kind", "pattern"),
    "pattern_grid": ("task", "layer", "head", "kind"),
    "attribution": tuple(_KEY),
    "layer_influence": ("task", "example_id", "layer"),
    "attribution_maps": ("task", "example_id", "layer", "head"),
    "attribution_summary": ("task", "layer", "head", "kind", "measure"),
    "influence_summary": ("task", "layer", "measure"),
    "importance": (*_KEY, "target"),
    "output_dispersion": ("task", "example_id", "target"),
    "importance_summary": ("task", "layer", "head", "kind", "target"),
    "sparsity_summary": ("task", "layer", "head", "kind", "measure"),
}
TABLE_STAGE: dict[str, str] = {table: stage for stage, tables in STAGE_TABLES.items() for table in tables}
# The tables a finished stage always has for a task; for the chunked stages every chunk writes them,
# in this order, and the last one's part marks the chunk done (the others, e.g. maps, are optional).
STAGE_ALWAYS_TABLES: dict[str, tuple[str, ...]] = {
    "evaluate": ("metrics",),
    "extract": ("head_measures", "examples"),
    "attribute": ("layer_influence", "attribution"),
    "importance": ("output_dispersion", "importance"),
    "analyse": ("head_summary", "task_summary", "sparsity_summary"),
}
CHUNKED_STAGES = ("extract", "attribute", "importance")  # their part files are numbered chunks of a sample
