"""The attribute stage, between extract and analyse: attention vs gradient attribution (METHODS.md §3.3–3.4).

The sample is the first `attribution_examples` of extract's analysis permutation plus its map
sample (`attribution_sample`), so it lies inside the efficient sample whenever
efficient_examples ≥ attribution_examples; a kind extract leaves out for an example (efficient
outside the efficient sample) has no rows here either. Per batch of examples it runs, on the
fine-tuned model:
- `effattn.attribution.head_attribution`: each head's gradient attribution rows, compared with
  the head's attention rows of every kind (precompute.agreement) -> `attribution`;
- `effattn.attribution.layer_influence`: Meister et al.'s Table 1 measure per layer, averaged
  over the real queries -> `layer_influence`;
- `effattn.capture_attention` for the attention kinds (as extract computes them);
and keeps the attribution maps of the map sample -> `attribution_maps`.

Resumable like extract: fixed chunks of CHUNK_EXAMPLES, each writing `attribution_maps`,
`layer_influence` and then `attribution`, each atomically; a chunk is done once its
`attribution` part exists, so a killed run redoes at most one chunk, to identical parts
(`run_chunked`, which the importance stage shares).
The gradients dominate the cost (one backward per head × query objective, batched).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

import effattn
from effattn.attribution import head_attribution, layer_influence
from precompute import ConfigError
from precompute.agreement import MEASURES, agreement_measures
from precompute.config import RunConfig
from precompute.extract import SAMPLED_KINDS, InjectedFailure, analysis_sample, encode, kind_maps, texts_of
from precompute.finetune import load_classifier, pick_device
from precompute.models import load_tokenizer
from precompute.schema import MAP_DECIMALS
from precompute.store import RunFolder, Shard
from precompute.threads import intra_op_threads

# Examples per part file, fixed so that chunk numbers mean the same on resume. Far fewer than
# extract's 64: one MiniLM example takes 10-90 s on one CPU core here (SST-2 to RTE means; ~7 min
# at 128 tokens), so a kill loses at most ~15 minutes.
CHUNK_EXAMPLES = 8
# Examples per gradient batch on the CPU: the batched backward already sizes its matmuls to the
# CPU's caches, so batching examples only adds padded work. A GPU takes eval_batch_size.
CPU_BATCH_SIZE = 1
# The order in which a chunk's tables are written; the last one marks the chunk as done.
CHUNK_TABLES = ("attribution_maps", "layer_influence", "attribution")
_KEYS = {"attribution": ["example_id", "layer", "head", "kind"], "layer_influence": ["example_id", "layer"],
         "attribution_maps": ["example_id", "layer", "head"]}


@dataclass(frozen=True)
class Classifier:
    """What a chunk needs, loaded once per task."""

    tokenizer: object  # tokenizer of the fine-tuned checkpoint
    model: torch.nn.Module  # the fine-tuned sequence classifier, eager attention, eval mode
    device: torch.device


def attribution_sample(eval_frame: pl.DataFrame, config: RunConfig, shard: Shard) -> pl.DataFrame:
    """This shard's attributed rows: extract's analysed rows (analysis_sample) at permutation
    positions below attribution_examples, plus the map sample."""
    sample = analysis_sample(eval_frame, config, shard)
    return sample.filter((pl.col("position") < config.attribution_examples) | pl.col("in_map_sample"))


def run_attribute(run: RunFolder, task: str, model_dir: str | Path, eval_frame: pl.DataFrame, config: RunConfig,
                  shard: Shard = Shard(), *, chunk_examples: int = CHUNK_EXAMPLES,
                  fail_after_chunk: int | None = None) -> int:
    """Attribute this shard's chunks that are not on disk yet; returns how many were written.

    chunk_examples: examples per part file; a resumed run must use the same value.
    fail_after_chunk: test hook, raise InjectedFailure right after writing that chunk.
    """
    return run_chunked(ATTRIBUTE, run, task, model_dir, eval_frame, config, shard, chunk_examples=chunk_examples,
                       fail_after_chunk=fail_after_chunk)


@dataclass(frozen=True)
class ChunkedStage:
    """A stage after extract that runs the fine-tuned classifier on a sample, chunk by chunk."""

    name: str  # the stage ("attribute", "importance")
    sample_table: str  # its main table: row_counts[task][f"{sample_table}_examples"] is the sample size
    tables: tuple[str, ...]  # written per chunk in this order; the last one marks the chunk as done
    sample: Callable[[pl.DataFrame, RunConfig, Shard], pl.DataFrame]  # (eval frame, config, shard) -> rows
    # (classifier, task, rows, config, on_batch=...) -> {table: frame}; a table may be left out
    compute: Callable[..., dict[str, pl.DataFrame]]


def run_chunked(stage: ChunkedStage, run: RunFolder, task: str, model_dir: str | Path, eval_frame: pl.DataFrame,
                config: RunConfig, shard: Shard, *, chunk_examples: int, fail_after_chunk: int | None = None) -> int:
    """Compute this shard's chunks of `stage` that are not on disk yet; returns how many were written."""
    record_sample_size(run, task, stage.sample_table, len(stage.sample(eval_frame, config, Shard())))
    if run.stage_done(stage.name, task, shard):
        return 0
    if not run.stage_done("extract", task, shard):
        which = f"task {task}" + (f" shard {shard}" if shard.count > 1 else "")
        raise ConfigError(f"{which} has not been extracted in {run.root}: run with --stages extract (or without --stages) first")
    sample = stage.sample(eval_frame, config, shard)
    chunks = [sample.slice(start, chunk_examples) for start in range(0, len(sample), chunk_examples)]
    done = run.existing_chunks(stage.tables[-1], task, shard)
    todo = [(chunk, chunks[chunk]) for chunk in range(len(chunks)) if chunk not in done]
    started = time.perf_counter()
    if todo:
        # the gradients are large matmuls that threads speed up (--threads, default every core)
        with intra_op_threads(config.threads or os.cpu_count() or 1):
            classifier = load_classifier_of(model_dir, task, config)
            n_done = len(sample) - sum(len(rows) for _, rows in todo)
            with tqdm(total=len(sample), initial=n_done, unit="ex", desc=f"{stage.name} {task} {shard}") as bar:
                for chunk, rows in todo:
                    tables = stage.compute(classifier, task, rows, config, on_batch=bar.update)
                    for table in stage.tables:
                        if table in tables:  # e.g. no attribution maps outside the map sample
                            run.write_part(table, task, tables[table], shard=shard, chunk=chunk)
                    if chunk == fail_after_chunk:
                        raise InjectedFailure(f"test hook: stopped after chunk {chunk}")
    run.mark_stage_done(stage.name, task, shard, seconds=time.perf_counter() - started)
    return len(todo)


def record_sample_size(run: RunFolder, task: str, stage_table: str, size: int) -> None:
    """Record row_counts[task][<stage_table>_examples]; a ConfigError if parts of a sample of
    another size are on disk, since their chunk numbers would mean other examples."""
    key = f"{stage_table}_examples"
    recorded = run.read_manifest().get("row_counts", {}).get(task, {}).get(key)
    if recorded is not None and recorded != size and run.part_files(stage_table, [task]):
        raise ConfigError(f"task {task} in {run.root} has {stage_table} rows of a {recorded}-example sample, this run "
                          f"asks for {size}: pass the --{key.replace('_', '-')} that made them to resume, or add "
                          f"--force --stages {'attribute' if stage_table == 'attribution' else stage_table} to redo them")
    run.update_manifest({"row_counts": {task: {key: size}}})


def load_classifier_of(model_dir: str | Path, task: str, config: RunConfig) -> Classifier:
    """The fine-tuned classifier of a task and its tokenizer, on the configured device."""
    device = pick_device(config.device)
    return Classifier(load_tokenizer(model_dir), load_classifier(model_dir, task).to(device).eval(),
                      device)


def attribute_chunk(classifier: Classifier, task: str, rows: pl.DataFrame, config: RunConfig, *,
                    on_batch: Callable[[int], object] | None = None) -> dict[str, pl.DataFrame]:
    """The `attribution`, `layer_influence` and `attribution_maps` frames of one chunk of rows
    (no `attribution_maps` when none of them is in the map sample); on_batch(n) after each batch."""
    lengths = [len(ids) for ids in encode(classifier.tokenizer, *texts_of(rows), config, padding=False)["input_ids"]]
    by_length = rows[np.argsort(lengths, kind="stable")]  # less padding per batch
    batch_size = CPU_BATCH_SIZE if classifier.device.type == "cpu" else config.eval_batch_size
    tables: dict[str, list[pl.DataFrame]] = {table: [] for table in CHUNK_TABLES}
    for start in range(0, len(by_length), batch_size):
        batch_rows = by_length.slice(start, batch_size)
        for table, frame in _attribute_batch(classifier, batch_rows, config).items():
            if frame is not None:
                tables[table].append(frame)
        if on_batch is not None:
            on_batch(len(batch_rows))
    return {table: pl.concat(frames).with_columns(task=pl.lit(task)).sort(_KEYS[table])
            for table, frames in tables.items() if frames}


ATTRIBUTE = ChunkedStage("attribute", "attribution", CHUNK_TABLES, attribution_sample, attribute_chunk)


def _attribute_batch(classifier: Classifier, rows: pl.DataFrame, config: RunConfig) -> dict[str, pl.DataFrame | None]:
    encoding = encode(classifier.tokenizer, *texts_of(rows), config, padding=True)
    inputs = {name: encoding[name].to(classifier.device)
              for name in ("input_ids", "attention_mask", "token_type_ids") if name in encoding}
    example_ids = rows["example_id"].to_numpy()
    n_real = encoding["attention_mask"].sum(-1).tolist()
    in_efficient = rows["in_efficient_sample"].to_numpy()
    attribution = head_attribution(classifier.model, inputs).detach().cpu()  # (batch, layer, head, query, key)
    influence = layer_influence(classifier.model, inputs)
    frames = []

    def on_layer(capture) -> None:
        maps = kind_maps(capture, np.flatnonzero(in_efficient))
        frames.append(_agreement_rows(capture.layer, maps, attribution[:, capture.layer], example_ids, n_real,
                                      in_efficient))

    effattn.capture_attention(classifier.model, inputs, on_layer=on_layer)
    in_map_sample = rows["in_map_sample"].to_numpy()
    return {
        "attribution": pl.concat(frames),
        "layer_influence": _influence_rows(influence, example_ids, n_real),
        "attribution_maps": _map_rows(attribution, example_ids, n_real, in_map_sample),
    }


def _agreement_rows(layer: int, maps: dict[str, torch.Tensor], attribution: torch.Tensor, example_ids: np.ndarray,
                    n_real: list[int], in_efficient: np.ndarray) -> pl.DataFrame:
    """attribution rows of one layer. maps: kind -> (rows of that kind, head, query, key) as
    extract's kind_maps returns them; attribution: (batch, head, query, key) of this layer."""
    sampled = {int(row): index for index, row in enumerate(np.flatnonzero(in_efficient))}
    frames = []
    for row, n in enumerate(n_real):
        kinds = [kind for kind in maps if kind not in SAMPLED_KINDS or row in sampled]
        blocks = torch.stack([maps[kind][sampled[row] if kind in SAMPLED_KINDS else row, :, :n, :n]
                              for kind in kinds])  # (kind, head, query, key)
        measures = agreement_measures(blocks, attribution[row, :, :n, :n])
        n_head = blocks.shape[1]
        frames.append(pl.DataFrame({
            "example_id": example_ids[row], "layer": layer,
            "head": np.tile(np.arange(n_head), len(kinds)), "kind": np.repeat(kinds, n_head),
            **{name: measures[name].reshape(-1).to(torch.float32).numpy() for name in MEASURES},
        }).fill_nan(None))
    return pl.concat(frames)


def _influence_rows(influence, example_ids: np.ndarray, n_real: list[int]) -> pl.DataFrame:
    """layer_influence rows: own_share and entropy (batch, layer, query) averaged over real queries."""
    own_share, entropy = influence.own_share.detach().cpu(), influence.entropy.detach().cpu()
    n_layer = own_share.shape[1]
    return pl.DataFrame({
        "example_id": np.repeat(example_ids, n_layer), "layer": np.tile(np.arange(n_layer), len(n_real)),
        "own_share": torch.cat([own_share[row, :, :n].mean(-1) for row, n in enumerate(n_real)]).float().numpy(),
        "entropy": torch.cat([entropy[row, :, :n].mean(-1) for row, n in enumerate(n_real)]).float().numpy(),
        "seq_len": np.repeat(n_real, n_layer),
    })


def _map_rows(attribution: torch.Tensor, example_ids: np.ndarray, n_real: list[int],
              in_map_sample: np.ndarray) -> pl.DataFrame | None:
    """attribution_maps rows (row-major float32 weights, MAP_DECIMALS) of the map sample."""
    n_layer, n_head = attribution.shape[1:3]
    frames = []
    for row in np.flatnonzero(in_map_sample):
        n = n_real[row]
        weights = attribution[row, :, :, :n, :n].reshape(n_layer * n_head, n * n).to(torch.float32).numpy()
        frames.append(pl.DataFrame({
            "example_id": example_ids[row], "layer": np.repeat(np.arange(n_layer), n_head),
            "head": np.tile(np.arange(n_head), n_layer), "seq_len": n,
            "weights": pl.Series(np.round(weights, MAP_DECIMALS)).cast(pl.List(pl.Float32)),
        }))
    return pl.concat(frames) if frames else None
