"""The importance stage, after attribute: does a head's [CLS] row rank the inputs as their
importance for the output does? (Meister et al. 2021, Eq. 4–6; METHODS.md §3.4.)

The sample is the first `importance_examples` of extract's analysis permutation plus its map
sample, as for attribute. Per example, `effattn.output_importance` gives the importance of each
token for the fine-tuned model's output ŷ (input gradient, leave-one-out, and the gradient
w.r.t. the vectors each layer's attention mixes); each head's attention row at query [CLS] — the
position the classifier reads, the analogue of Meister et al.'s single attention over the
encoder states — is compared with them by Kendall τ-b, for every kind extract computes:
- `importance`: τ-b per example × layer × head × kind × target, over the content tokens only
  ([CLS] and [SEP] are never deleted, so leave-one-out is undefined for them, and every target
  uses the same keys), n_keys of them;
- `output_dispersion`: normalised entropy (Shannon / log n_keys) of the input-gradient and
  leave-one-out rows of each example, over the same keys.
Resumable like attribute (attribute.run_chunked): fixed chunks, `output_dispersion` then
`importance` per chunk.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import torch

import effattn
from precompute.agreement import kendall_tau_b
from precompute.attribute import Classifier, ChunkedStage, run_chunked
from precompute.config import RunConfig
from precompute.extract import SAMPLED_KINDS, analysis_sample, encode, kind_maps, texts_of
from precompute.schema import IMPORTANCE_TARGETS
from precompute.store import RunFolder, Shard

CHUNK_EXAMPLES = 32  # examples per part file (~1 s each on one core for SST-2)
BATCH_SIZE = 8  # examples per forward (leave-one-out runs each example's deletions as one batch)
CHUNK_TABLES = ("output_dispersion", "importance")  # written in this order: the last marks a chunk done
_KEYS = {"importance": ["example_id", "layer", "head", "kind", "target"], "output_dispersion": ["example_id", "target"]}


def importance_sample(eval_frame: pl.DataFrame, config: RunConfig, shard: Shard) -> pl.DataFrame:
    """This shard's rows: extract's analysed rows below importance_examples, plus the map sample."""
    sample = analysis_sample(eval_frame, config, shard)
    return sample.filter((pl.col("position") < config.importance_examples) | pl.col("in_map_sample"))


def run_importance(run: RunFolder, task: str, model_dir, eval_frame: pl.DataFrame, config: RunConfig,
                   shard: Shard = Shard()) -> int:
    """Compute this shard's chunks that are not on disk yet; returns how many were written."""
    return run_chunked(IMPORTANCE, run, task, model_dir, eval_frame, config, shard, chunk_examples=CHUNK_EXAMPLES)


def importance_chunk(classifier: Classifier, task: str, rows: pl.DataFrame, config: RunConfig, *,
                     on_batch=None) -> dict[str, pl.DataFrame]:
    """The `importance` and `output_dispersion` frames of some rows."""
    frames: dict[str, list[pl.DataFrame]] = {table: [] for table in CHUNK_TABLES}
    for start in range(0, len(rows), BATCH_SIZE):
        batch_rows = rows.slice(start, BATCH_SIZE)
        for table, frame in _importance_batch(classifier, batch_rows, config).items():
            frames[table].append(frame)
        if on_batch is not None:
            on_batch(len(batch_rows))
    return {table: pl.concat(parts).with_columns(task=pl.lit(task)).sort(_KEYS[table]) for table, parts in frames.items()}


IMPORTANCE = ChunkedStage("importance", "importance", CHUNK_TABLES, importance_sample, importance_chunk)


def _importance_batch(classifier: Classifier, rows: pl.DataFrame, config: RunConfig) -> dict[str, pl.DataFrame]:
    texts_a, texts_b = texts_of(rows)
    encoding = encode(classifier.tokenizer, texts_a, texts_b, config, padding=True, return_special_tokens_mask=True)
    inputs = {name: encoding[name].to(classifier.device)
              for name in ("input_ids", "attention_mask", "token_type_ids") if name in encoding}
    content = (encoding["special_tokens_mask"] == 0) & encoding["attention_mask"].bool()  # (batch, key)
    importance = effattn.output_importance(classifier.model, inputs, content.to(classifier.device))
    in_efficient = rows["in_efficient_sample"].to_numpy()
    layers: list[dict[str, torch.Tensor]] = []  # per layer: kind -> [CLS] rows (rows of that kind, head, key)
    effattn.capture_attention(classifier.model, inputs, on_layer=lambda capture: layers.append(
        {kind: maps[:, :, 0] for kind, maps in kind_maps(capture, np.flatnonzero(in_efficient)).items()}))
    targets = {"input_gradient": importance.input_gradient.cpu(), "leave_one_out": importance.leave_one_out.cpu()}
    sampled = {int(row): index for index, row in enumerate(np.flatnonzero(in_efficient))}
    taus, dispersion = [], []
    for row, example_id in enumerate(rows["example_id"].to_list()):
        keys = content[row].nonzero()[:, 0]
        kinds = [kind for kind in layers[0] if kind not in SAMPLED_KINDS or row in sampled]
        # (kind, layer, head, key): every kind's [CLS] rows of this example on its content keys
        cls_rows = torch.stack([torch.stack([layer[kind][sampled[row] if kind in SAMPLED_KINDS else row][:, keys]
                                             for layer in layers]) for kind in kinds])
        per_target = {target: kendall_tau_b(cls_rows, rows_of[row, keys].expand(cls_rows.shape[1:]))
                      for target, rows_of in targets.items()}
        # each layer's heads against the importance of that layer's own input vectors
        intermediate = importance.intermediate_gradient[row][:, keys].cpu()  # (layer, key)
        per_target["intermediate_gradient"] = kendall_tau_b(cls_rows, intermediate[:, None].expand(cls_rows.shape[1:]))
        n_kind, n_layer, n_head = cls_rows.shape[:3]
        for target in IMPORTANCE_TARGETS:
            taus.append(pl.DataFrame({
                "example_id": example_id, "layer": np.repeat(np.tile(np.arange(n_layer), n_kind), n_head),
                "head": np.tile(np.arange(n_head), n_kind * n_layer), "kind": np.repeat(kinds, n_layer * n_head),
                "target": target, "kendall_tau": per_target[target].reshape(-1).float().numpy(), "n_keys": len(keys),
            }).fill_nan(None))
        for target, rows_of in targets.items():
            dispersion.append(pl.DataFrame({"example_id": [example_id], "target": [target],
                                            "entropy": [_normalised_entropy(rows_of[row, keys])],
                                            "n_keys": [len(keys)]}))
    schema = {"layer": pl.Int16, "head": pl.Int16, "kendall_tau": pl.Float32, "n_keys": pl.Int32}
    return {"importance": pl.concat(taus).cast(schema),
            "output_dispersion": pl.concat(dispersion).cast({"entropy": pl.Float32, "n_keys": pl.Int32})}


def _normalised_entropy(weights: torch.Tensor) -> float | None:
    """Shannon entropy / log n of a distribution over n ≥ 2 keys (1 = uniform, 0 = one key)."""
    if len(weights) < 2:
        return None
    total = weights.sum()
    if total <= 0:
        return None
    p = (weights / total).double()
    return float(-torch.xlogy(p, p).sum() / math.log(len(p)))
