"""Synthetic runs that differ only in their attention map, for the Sparse attention page.

Each is a cache_fixture run (its own seed) with the manifest's `attention` set and the tables of
the importance stage and of analyse's sparsity_summary added, shaped like the real thing: the
sparser the map (softmax < sparsegen λ < 0 < sparsemax < λ > 0), the more exact zeros, the smaller
the support and, as Meister et al. report, the lower the entropy of input influence. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from cache_fixture import N_HEADS, N_LAYERS, SEQ_LENS, TASKS, write_run
from precompute.schema import IMPORTANCE_TARGETS, KINDS
from precompute.store import RunFolder, Shard

# run folder name -> (attention map, how sparse: 0 = softmax … 1 = very sparse)
RUNS = {"fixture-softmax": ("softmax", 0.0), "fixture-sparsegen_-2": ("sparsegen:-2", 0.4),
        "fixture-sparsemax": ("sparsemax", 0.6), "fixture-sparsegen_0.5": ("sparsegen:0.5", 0.8)}
IMPORTANCE_EXAMPLES = 4  # examples 0..3


def _grid(**columns) -> pl.DataFrame:
    layers, heads, kinds = np.meshgrid(np.arange(N_LAYERS), np.arange(N_HEADS), np.arange(len(KINDS)), indexing="ij")
    frame = pl.DataFrame({"layer": layers.ravel(), "head": heads.ravel(), "kind": np.array(KINDS)[kinds.ravel()]})
    return frame.with_columns(**columns).cast({"layer": pl.Int16, "head": pl.Int16})


def _add_tables(run: RunFolder, attention: str, sparseness: float, rng: np.random.Generator) -> None:
    shard = Shard(0, 1)
    for task in TASKS:
        cells = N_LAYERS * N_HEADS * len(KINDS)
        zero = np.clip(sparseness + rng.normal(0, 0.05, cells), 0, 0.95)
        zero[_grid()["kind"].to_numpy() == "effective"] = 0.0  # A_eff fills A's zeros in (where n > d_head)
        sparsity = pl.concat([
            _grid(measure=pl.lit("zero_share"), mean=pl.Series(zero)),
            _grid(measure=pl.lit("support_size"), mean=pl.Series((1 - zero) * np.mean(SEQ_LENS))),
        ]).with_columns(task=pl.lit(task), std=pl.lit(0.05), n=pl.lit(len(SEQ_LENS), dtype=pl.Int64))
        run.write_part("sparsity_summary", task, sparsity, shard=shard, chunk=0)
        importance = pl.concat([_grid(target=pl.lit(target), mean=pl.Series(rng.uniform(-0.3, 0.6, cells)))
                                for target in IMPORTANCE_TARGETS])
        run.write_part("importance_summary", task, importance.with_columns(
            task=pl.lit(task), std=pl.lit(0.1), n=pl.lit(IMPORTANCE_EXAMPLES, dtype=pl.Int64)), shard=shard, chunk=0)
        dispersion = pl.DataFrame({
            "task": task, "example_id": np.repeat(np.arange(IMPORTANCE_EXAMPLES), 2),
            "target": ["input_gradient", "leave_one_out"] * IMPORTANCE_EXAMPLES,
            "entropy": np.clip(0.9 - 0.3 * sparseness + rng.normal(0, 0.03, 2 * IMPORTANCE_EXAMPLES), 0, 1),
            "n_keys": np.repeat(np.array(SEQ_LENS[:IMPORTANCE_EXAMPLES]) - 2, 2),
        }).cast({"entropy": pl.Float32, "n_keys": pl.Int32})
        run.write_part("output_dispersion", task, dispersion, shard=shard, chunk=0)
        # entropy of input influence falls with sparsity (their Table 2's negative τ)
        influence = pl.read_parquet(run.part_files("layer_influence", [task]))
        influence = influence.with_columns(entropy=(pl.col("entropy") * (1 - 0.4 * sparseness)).cast(pl.Float32))
        run.write_part("layer_influence", task, influence, shard=shard, chunk=0)
        summary = (influence.group_by("task", "layer").agg(mean=pl.col("entropy").mean(), std=pl.col("entropy").std(),
                                                          n=pl.len().cast(pl.Int64))
                   .with_columns(measure=pl.lit("entropy")))
        old = pl.read_parquet(run.part_files("influence_summary", [task])).filter(pl.col("measure") != "entropy")
        run.write_part("influence_summary", task, pl.concat([old, summary], how="diagonal_relaxed"), shard=shard, chunk=0)
    manifest = run.read_manifest()
    counts = {task: {**manifest["row_counts"][task], "importance_examples": IMPORTANCE_EXAMPLES} for task in TASKS}
    run.update_manifest({"attention": attention, "config": {"attention": attention}, "row_counts": counts,
                         "finetune": {task: {"epochs": 2, "train_rows": 100} for task in TASKS}})


def write_sparse_run(folder: str | Path, attention: str, *, seed: int, sparseness: float = 0.6) -> Path:
    """A full synthetic run with the attention map `attention` and the sparse-attention tables."""
    run = RunFolder(write_run(folder, seed=seed))
    _add_tables(run, attention, sparseness, np.random.default_rng(100 + seed))
    return Path(folder)


def write_sparse_root(root: str | Path) -> Path:
    """A data root with the RUNS."""
    for seed, (name, (attention, sparseness)) in enumerate(RUNS.items()):
        write_sparse_run(Path(root) / name, attention, seed=seed, sparseness=sparseness)
    return Path(root)
