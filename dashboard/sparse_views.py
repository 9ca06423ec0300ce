"""The sparse-attention comparison across runs (Meister et al. 2021, METHODS.md §3.4): which runs
differ only in their attention map, and the numbers the Sparse attention page and the Findings
table show. Torch-free: the cached tables and scipy's Kendall τ."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from dashboard import attribution_views, data
from dashboard.data import Run
from precompute.schema import TASKS

SOFTMAX = "softmax"  # Run.attention of a run made with the model's own map
# Meister et al.'s numbers on SST (their Tables 1, 2 and 6; METHODS.md §3.4), for comparison only:
# a 2-layer, 1-head Transformer trained from scratch, attention over the encoder states.
THEIRS = {
    "entropy_softmax": 0.73, "entropy_sparsemax": 0.63,  # Table 1, Transformer (BiLSTM: 0.93 / 0.91)
    "tau_lambda_entropy": -0.81,  # Table 2, Transformer (BiLSTM: −0.87)
    "tau_input_gradient_softmax": 0.72, "tau_input_gradient_sparsemax": 0.67,  # Table 6
}
THEIR_SETUP = ("Meister et al.: a 2-layer, 1-head Transformer (and a BiLSTM) trained from scratch on SST, one "
               "attention over the encoder states feeding the classifier. Ours: all-MiniLM-L6-v2 (6 layers × 12 "
               "heads, pretrained with softmax), every head switched to the sparse map and then fine-tuned on "
               "GLUE SST-2; a head's attention is its [CLS] row, the position the classifier reads.")


def sparsegen_lambda(attention: str) -> float | None:
    """λ of sparsegen-lin (0 for sparsemax), None for softmax: the x axis of the λ sweep."""
    if attention == "sparsemax":
        return 0.0
    name, _, value = attention.partition(":")
    return float(value) if name == "sparsegen" else None


@dataclass(frozen=True)
class Comparison:
    """The runs with one task that differ in their attention map, softmax first, then by λ."""

    task: str
    runs: tuple[Run, ...]

    @property
    def attentions(self) -> tuple[str, ...]:
        return tuple(run.attention for run in self.runs)


def comparisons() -> list[Comparison]:
    """Per task with runs of at least two attention maps: those runs (first run of each map)."""
    runs = [data.load_run(name, location) for name, location in data.discover_runs().items()]
    found = []
    for task in TASKS:
        by_map: dict[str, Run] = {}
        for run in runs:
            if task in run.tasks_with_data():
                by_map.setdefault(run.attention, run)
        if len(by_map) >= 2:
            ordered = sorted(by_map.items(), key=lambda item: (item[0] != SOFTMAX, sparsegen_lambda(item[0]) or 0.0))
            found.append(Comparison(task, tuple(run for _, run in ordered)))
    return found


def _per_run(comparison: Comparison, table: str, **where) -> pl.DataFrame:
    frames = []
    for run in comparison.runs:
        frame = data.read(run, table, tasks=(comparison.task,), **where)
        if not frame.is_empty():
            frames.append(frame.with_columns(run=pl.lit(run.name), attention=pl.lit(run.attention)))
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def headline_metrics(run: Run, tasks: tuple[str, ...]) -> pl.DataFrame:
    """task, metric, value: each task's headline dev metric of the standard forward pass."""
    metrics = data.read(run, "metrics", tasks=tasks, kind=("standard",), columns=("task", "metric", "value"))
    rows = [metrics.filter(pl.col("task") == task, pl.col("metric") == TASKS[task].metrics[0]).head(1)
            for task in tasks if task in TASKS]
    return pl.concat(rows) if rows else metrics


def overview(comparison: Comparison) -> pl.DataFrame:
    """One row per run: attention, λ, headline dev metric (standard and effective forward), mean
    zero share and support size of the standard maps over heads, and the importance sample."""
    metric = TASKS[comparison.task].metrics[0]
    rows = []
    for run in comparison.runs:
        metrics = {kind: {row["metric"]: row["value"] for row in frame.iter_rows(named=True)}
                   for (kind,), frame in data.read(run, "metrics", tasks=(comparison.task,)).group_by("kind")}
        sparsity = data.read(run, "sparsity_summary", tasks=(comparison.task,), kind=("standard",))
        mean = {measure: sparsity.filter(pl.col("measure") == measure)["mean"].mean() for measure in ("zero_share", "support_size")}
        counts = run.manifest.get("row_counts", {}).get(comparison.task, {})
        finetune = run.manifest.get("finetune", {}).get(comparison.task, {})
        rows.append({"run": run.name, "attention": run.attention, "λ": sparsegen_lambda(run.attention),
                     metric: metrics.get("standard", {}).get(metric), f"{metric} (effective)": metrics.get("effective", {}).get(metric),
                     "zero share": mean["zero_share"], "support size": mean["support_size"],
                     "epochs": finetune.get("epochs"), "train rows": finetune.get("train_rows"),
                     "attributed examples": counts.get("attribution_examples"),
                     "importance examples": counts.get("importance_examples")})
    return pl.DataFrame(rows, infer_schema_length=None)


def sparsity_by_layer(comparison: Comparison) -> pl.DataFrame:
    """run, attention, layer, measure, mean over heads (standard kind)."""
    frame = _per_run(comparison, "sparsity_summary", kind=("standard",))
    if frame.is_empty():
        return frame
    return frame.group_by("run", "attention", "layer", "measure").agg(pl.col("mean").mean()).sort("run", "layer")


def influence_entropy(comparison: Comparison) -> pl.DataFrame:
    """run, attention, layer, mean, std: Meister's Table 1 measure per layer."""
    frame = _per_run(comparison, "influence_summary", measure=("entropy",))
    return frame.select("run", "attention", "layer", "mean", "std", "n").sort("run", "layer") if not frame.is_empty() else frame


def lambda_sweep(comparison: Comparison) -> pl.DataFrame:
    """One row per example of every sparsegen/sparsemax run: λ, the example's input-influence
    entropy averaged over layers (Table 1's measure) and its output's input-gradient entropy."""
    frames = []
    for run in comparison.runs:
        lam = sparsegen_lambda(run.attention)
        if lam is None:
            continue
        influence = data.read(run, "layer_influence", tasks=(comparison.task,), columns=("example_id", "entropy"))
        output = data.read(run, "output_dispersion", tasks=(comparison.task,), target=("input_gradient",),
                           columns=("example_id", "entropy"))
        if influence.is_empty():
            continue
        per_example = influence.group_by("example_id").agg(influence_entropy=pl.col("entropy").mean())
        if not output.is_empty():
            per_example = per_example.join(output.rename({"entropy": "output_entropy"}), on="example_id", how="left")
        frames.append(per_example.with_columns(run=pl.lit(run.name), attention=pl.lit(run.attention),
                                               **{"λ": pl.lit(lam)}))
    return pl.concat(frames, how="diagonal_relaxed").sort("λ", "example_id") if frames else pl.DataFrame()


def kendall_tau(x, y) -> float | None:
    """Kendall's τ-b over the pairs where both values are known; None when undefined."""
    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
    return attribution_views.kendall_tau(*map(list, zip(*pairs))) if len(pairs) >= 2 else None


def importance_by_layer(comparison: Comparison, kinds: tuple[str, ...]) -> pl.DataFrame:
    """run, attention, kind, target, layer, mean τ-b over heads (each head: mean over examples)."""
    frame = _per_run(comparison, "importance_summary", kind=kinds)
    if frame.is_empty():
        return frame
    return (frame.group_by("run", "attention", "kind", "target", "layer")
            .agg(pl.col("mean").mean(), spread=pl.col("mean").std()).sort("run", "kind", "target", "layer"))


def mean_tau(by_layer: pl.DataFrame, attention: str, target: str, *, kind: str = "standard",
             layer: int | None = None) -> float | None:
    """Mean τ of one run's heads for a target (one layer, or all layers)."""
    if by_layer.is_empty():
        return None
    part = by_layer.filter(pl.col("attention") == attention, pl.col("target") == target, pl.col("kind") == kind)
    if layer is not None:
        part = part.filter(pl.col("layer") == layer)
    return part["mean"].mean()


def _mean_entropy(entropy: pl.DataFrame, attention: str) -> float | None:
    part = entropy.filter(pl.col("attention") == attention) if not entropy.is_empty() else entropy
    return None if part.is_empty() else part["mean"].mean()


def beside_theirs(comparison: Comparison) -> pl.DataFrame:
    """measure, theirs, ours: the numbers of their Tables 1, 2 and 6 that our runs answer."""
    numbers = findings_numbers(comparison)
    sparse = "sparsemax"
    rows = [
        ("input-influence entropy, softmax (Table 1)", THEIRS["entropy_softmax"], numbers["entropy"].get(SOFTMAX)),
        ("input-influence entropy, sparsemax (Table 1)", THEIRS["entropy_sparsemax"], numbers["entropy"].get(sparse)),
        ("Kendall τ, λ vs input-influence entropy (Table 2)", THEIRS["tau_lambda_entropy"], numbers["tau_sweep"]),
        ("Kendall τ, attention vs input-gradient importance, softmax (Table 6)", THEIRS["tau_input_gradient_softmax"],
         numbers["input"].get(SOFTMAX)),
        ("Kendall τ, attention vs input-gradient importance, sparsemax (Table 6)",
         THEIRS["tau_input_gradient_sparsemax"], numbers["input"].get(sparse)),
        ("Kendall τ, attention vs importance of the layer's input vectors, softmax", None,
         numbers["intermediate"].get(SOFTMAX)),
        ("Kendall τ, attention vs importance of the layer's input vectors, sparsemax", None,
         numbers["intermediate"].get(sparse)),
    ]
    ours = f"ours ({TASKS[comparison.task].folder}, MiniLM)"
    return pl.DataFrame({"measure": [row[0] for row in rows], "theirs (SST, Transformer)": [row[1] for row in rows],
                         ours: [row[2] for row in rows]},
                        schema_overrides={"theirs (SST, Transformer)": pl.Float64, ours: pl.Float64})


# Verdict rules of the Findings rows (their paper gives ranges, not thresholds): "dispersed" = mean
# normalised entropy of input influence ≥ 0.5 in every run (more than half-way from one input to
# uniform; their Table 1 spans 0.46–0.93); the λ sweep "matches" when τ(λ, entropy) has their sign.
DISPERSED = 0.5
MEISTER = "Meister et al. 2021, SST, 2-layer Transformer trained from scratch (METHODS §3.4)"


def findings_numbers(comparison: Comparison) -> dict[str, object]:
    """The numbers the Findings rows quote, for one task's comparison."""
    entropy = influence_entropy(comparison)
    by_layer = importance_by_layer(comparison, ("standard",))
    sweep = lambda_sweep(comparison)
    return {
        "entropy": {attention: _mean_entropy(entropy, attention) for attention in comparison.attentions},
        "tau_sweep": (kendall_tau(sweep["λ"].to_list(), sweep["influence_entropy"].to_list())
                      if not sweep.is_empty() else None),
        "n_lambdas": sweep["λ"].n_unique() if not sweep.is_empty() else 0,
        "input": {attention: mean_tau(by_layer, attention, "input_gradient") for attention in comparison.attentions},
        "intermediate": {attention: mean_tau(by_layer, attention, "intermediate_gradient")
                         for attention in comparison.attentions},
    }
