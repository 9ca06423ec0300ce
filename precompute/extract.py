"""Stage 2, extract: per eval example × layer × head × kind, the measures of docs/SCHEMA.md.

The analysed examples are the first `analysis_examples` of a seeded random permutation of the
eval split (the paper used ~1,000 random dev examples); `--shard i/N` takes the i-th contiguous
slice of them. They stream through in fixed chunks of CHUNK_EXAMPLES: each chunk runs the
pretrained model (for `pretrained_cosine`) and the fine-tuned model through
`effattn.capture_attention`, and writes its `maps`, `head_measures` and `examples` parts, in that
order, each atomically. A chunk counts as done once its `examples` part exists, so a run killed
anywhere resumes by redoing at most one chunk, to byte-identical parts and no duplicate rows.
Nothing accumulates across chunks, so memory stays flat as the eval set grows.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

import effattn
from effattn.kinds import KIND_FUNCTIONS
from effattn.patterns import classify_patterns
from precompute import ConfigError, map_sample, measures, pos
from precompute.config import RunConfig
from precompute.evaluate import predictions_from_logits
from precompute.finetune import load_classifier, pick_device
from precompute.glue import second_texts
from precompute.models import load_encoder, load_tokenizer
from precompute.schema import KINDS, MAP_DECIMALS
from precompute.store import RunFolder, Shard
from precompute.threads import ThreadChooser, intra_op_threads

CHUNK_EXAMPLES = 64  # examples per part file; fixed so that chunk numbers mean the same on resume
# Kinds computed only for the efficient sample (RunConfig.efficient_examples): one linear program
# per query row of every head costs far more than the other kinds together.
SAMPLED_KINDS = ("efficient",)


class InjectedFailure(RuntimeError):
    """Raised by the `fail_after_chunk` test hook to simulate a kill mid-extraction."""


@dataclass(frozen=True)
class Models:
    """Everything a chunk needs, loaded once per task."""

    tokenizer: object  # fast tokenizer of the fine-tuned checkpoint
    finetuned: torch.nn.Module  # sequence classifier, eager attention, eval mode
    pretrained: torch.nn.Module  # the base encoder the fine-tuning started from
    tagger: object  # spaCy pipeline (precompute.pos.load_tagger)
    device: torch.device


@dataclass(frozen=True)
class Batch:
    """One model batch of a chunk; tensors on the CPU, (batch, key) unless noted."""

    example_ids: np.ndarray  # (batch,) int64
    in_map_sample: np.ndarray  # (batch,) bool
    in_efficient_sample: np.ndarray  # (batch,) bool: rows that also get the costly kinds (SAMPLED_KINDS)
    inputs: dict  # input_ids, attention_mask (and token_type_ids where the tokenizer makes them)
    real: torch.Tensor  # attention mask as bool
    segments: torch.Tensor  # (batch, key) int64: 0 up to the first separator, 1 after it
    types: dict[str, torch.Tensor]  # measures.token_type_masks
    pos_tags: list[list[str]]  # per example, one tag per real wordpiece


def analysis_sample(eval_frame: pl.DataFrame, config: RunConfig, shard: Shard) -> pl.DataFrame:
    """This shard's analysed rows in order, with their `position` in it: the map sample
    (precompute.map_sample, chosen over all analysed rows, so every shard agrees) first, then the
    rest of the seeded permutation; the efficient, attribution and importance samples take the
    first positions, so they always hold the map sample."""
    order = np.random.default_rng(config.seed).permutation(len(eval_frame))
    order = order[: config.analysis_examples]
    lengths = map_sample.estimated_lengths(*texts_of(eval_frame[order]), config.max_seq_len)
    picked = np.zeros(len(order), dtype=bool)
    picked[map_sample.choose_map_sample(lengths, size=config.map_examples, seed=config.seed,
                                        d_head=map_sample.model_d_head(config.model))] = True
    order = np.concatenate([order[picked], order[~picked]])
    positions = np.array_split(np.arange(len(order)), shard.count)[shard.index]
    in_map_sample = positions < int(picked.sum())
    return eval_frame[order[positions]].with_columns(
        position=pl.Series(positions, dtype=pl.Int64),
        in_map_sample=pl.Series(in_map_sample, dtype=pl.Boolean),
        # the map sample is always inside, so the explorer has every kind's maps
        in_efficient_sample=pl.Series((positions < config.efficient_examples) | in_map_sample, dtype=pl.Boolean),
    )


def load_models(model_dir: str | Path, base_model, task: str, config: RunConfig) -> Models:
    """Fine-tuned classifier, pretrained encoder (a path/id or an already loaded module), tagger."""
    device = pick_device(config.device)
    tokenizer = load_tokenizer(model_dir)
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"the tokenizer in {model_dir} is not a fast tokenizer: save the checkpoint with a fast (tokenizers) tokenizer")
    finetuned = load_classifier(model_dir, task).to(device).eval()
    pretrained = base_model if isinstance(base_model, torch.nn.Module) else load_pretrained(base_model)
    return Models(tokenizer, finetuned, pretrained.to(device).eval(), pos.load_tagger(), device)


# Every task of a run compares with the same base encoder, so it is read from disk once; one entry
# keeps at most one encoder alive. Extraction never changes it (capture_attention restores the
# attention implementation and training flag it sets).
@functools.lru_cache(maxsize=1)
def load_pretrained(base_model: str | Path) -> torch.nn.Module:
    """The base encoder (path or hub id) with eager attention, shared by all of a run's tasks."""
    return load_encoder(base_model)


def run_extract(run: RunFolder, task: str, model_dir: str | Path, base_model, eval_frame: pl.DataFrame,
                config: RunConfig, shard: Shard = Shard(), *, chunk_examples: int = CHUNK_EXAMPLES,
                fail_after_chunk: int | None = None) -> int:
    """Extract this shard's chunks that are not on disk yet; returns how many were written.

    chunk_examples: examples per part file; a resumed run must use the same value.
    fail_after_chunk: test hook, raise InjectedFailure right after writing that chunk.
    """
    if run.stage_done("extract", task, shard):
        return 0
    sample = analysis_sample(eval_frame, config, shard)
    chunks = [sample.slice(start, chunk_examples) for start in range(0, len(sample), chunk_examples)]
    done = run.existing_chunks("examples", task, shard)
    todo = [chunk for chunk in range(len(chunks)) if chunk not in done]
    started = time.perf_counter()
    if todo:
        _extract_chunks(run, task, shard, load_models(model_dir, base_model, task, config),
                        [(chunk, chunks[chunk]) for chunk in todo], len(sample), config, fail_after_chunk)
    run.mark_stage_done("extract", task, shard, seconds=time.perf_counter() - started)
    return len(todo)


def _extract_chunks(run: RunFolder, task: str, shard: Shard, models: Models, todo: list[tuple[int, pl.DataFrame]],
                    n_total: int, config: RunConfig, fail_after_chunk: int | None) -> None:
    """Extract and write the chunks not on disk yet, with a progress bar over all examples."""
    n_done = n_total - sum(len(rows) for _, rows in todo)
    threads = ThreadChooser(config.threads)
    with tqdm(total=n_total, initial=n_done, unit="ex", desc=f"extract {task} {shard}") as bar:
        for chunk, rows in todo:
            count = threads.choose()
            bar.set_postfix(threads=count)
            with intra_op_threads(count):
                write_chunk(run, task, shard, chunk, extract_chunk(models, task, rows, config))
            bar.update(len(rows))
            if chunk == fail_after_chunk:
                raise InjectedFailure(f"test hook: stopped after chunk {chunk}")


def write_chunk(run: RunFolder, task: str, shard: Shard, chunk: int, tables: dict[str, pl.DataFrame]) -> None:
    """Write one chunk's parts; `examples` last, because its part marks the chunk as done."""
    for table in ("maps", "head_measures", "examples"):
        if table in tables:  # no maps outside the map sample
            run.write_part(table, task, tables[table], shard=shard, chunk=chunk)


def extract_chunk(models: Models, task: str, rows: pl.DataFrame, config: RunConfig) -> dict[str, pl.DataFrame]:
    """The `examples`, `head_measures` and `maps` frames of one chunk of rows."""
    lengths = [len(ids) for ids in encode(models.tokenizer, *texts_of(rows), config, padding=False)["input_ids"]]
    by_length = rows[np.argsort(lengths, kind="stable")]  # less padding per batch
    tables: dict[str, list[pl.DataFrame]] = {"examples": [], "head_measures": [], "maps": []}
    for start in range(0, len(by_length), config.eval_batch_size):
        batch_rows = by_length.slice(start, config.eval_batch_size)
        for table, frame in _extract_batch(models, batch_rows, config).items():
            if frame is not None:
                tables[table].append(frame)
    keys = {"examples": ["example_id"], "head_measures": ["example_id", "layer", "head", "kind"],
            "maps": ["example_id", "layer", "head", "kind"]}
    return {table: pl.concat(frames).with_columns(task=pl.lit(task)).sort(keys[table])
            for table, frames in tables.items() if frames}


def texts_of(rows: pl.DataFrame) -> tuple[list[str], list[str | None] | None]:
    """(first texts, second texts or None) of the rows, as the tokenizer and POS tagger take them."""
    return rows["text_a"].to_list(), second_texts(rows)


def encode(tokenizer, texts_a: list[str], texts_b: list[str | None] | None, config: RunConfig, *, padding: bool,
           **extra):
    """The run's tokenisation (truncated to max_seq_len); padded batches as tensors. extra: more
    tokenizer outputs (e.g. return_special_tokens_mask=True)."""
    return tokenizer(
        texts_a, texts_b,
        truncation=True, max_length=config.max_seq_len, padding=padding,
        return_offsets_mapping=padding, return_tensors="pt" if padding else None, **extra,
    )


def _make_batch(models: Models, rows: pl.DataFrame, config: RunConfig) -> Batch:
    texts_a, texts_b = texts_of(rows)
    encoding = encode(models.tokenizer, texts_a, texts_b, config, padding=True)
    pos_tags = pos.wordpiece_pos(models.tagger, encoding, texts_a, texts_b,
                                 models.tokenizer.cls_token_id, models.tokenizer.sep_token_id)
    real = encoding["attention_mask"].bool()
    inputs = {name: encoding[name] for name in ("input_ids", "attention_mask", "token_type_ids") if name in encoding}
    return Batch(rows["example_id"].to_numpy(), rows["in_map_sample"].to_numpy(),
                 rows["in_efficient_sample"].to_numpy(), inputs, real,
                 segment_ids(encoding["input_ids"], models.tokenizer.sep_token_id, texts_b is not None),
                 measures.token_type_masks(pos_tags, real.shape[1]), pos_tags)


def segment_ids(input_ids: torch.Tensor, sep_token_id: int, pairs: bool) -> torch.Tensor:
    """(batch, key) sentence of each word piece: 0 through the first separator, 1 after it.

    From the tokenizer's separator, not from token_type_ids, which RoBERTa- and MPNet-style
    tokenizers do not make: BERT's `[CLS] A [SEP] B [SEP]` and RoBERTa's `<s> A </s></s> B </s>`
    both give 0 for the first sentence with its separator and 1 for the rest, as BERT's
    token_type_ids do. Padding gets the last sentence's id (it is cropped before use)."""
    if not pairs:
        return torch.zeros_like(input_ids)
    is_sep = input_ids == sep_token_id
    seps_before = torch.cumsum(is_sep, dim=-1) - is_sep.long()  # separators strictly before each position
    return (seps_before > 0).long()


def kind_maps(capture, sampled_rows: np.ndarray) -> dict[str, torch.Tensor]:
    """kind -> (batch, head, query, key) map on the CPU; SAMPLED_KINDS only for `sampled_rows`
    (indices into the batch), so their first dimension is len(sampled_rows)."""
    maps = {}
    for kind in KINDS:
        if kind in SAMPLED_KINDS:
            if not len(sampled_rows):
                continue
            capture = _rows_of(capture, sampled_rows)
        maps[kind] = KIND_FUNCTIONS[kind](capture).detach().cpu()
    return maps


def _rows_of(capture, rows: np.ndarray):
    """The capture restricted to some examples of its batch (every batched tensor indexed)."""
    index = torch.as_tensor(rows, device=capture.attn.device)
    fields = {name: value.index_select(0, index) if name not in ("layer", "output_weight") and value is not None
              else value for name, value in vars(capture).items()}
    return type(capture)(**fields)


def _extract_batch(models: Models, rows: pl.DataFrame, config: RunConfig) -> dict[str, pl.DataFrame]:
    batch = _make_batch(models, rows, config)
    inputs = {name: tensor.to(models.device) for name, tensor in batch.inputs.items()}
    sampled_rows = np.flatnonzero(batch.in_efficient_sample)
    pretrained: dict[int, dict[str, torch.Tensor]] = {}
    effattn.capture_attention(models.pretrained, inputs, on_layer=lambda capture: pretrained.__setitem__(
        capture.layer, kind_maps(capture, sampled_rows)))
    measure_frames, map_frames = [], []

    def on_layer(capture) -> None:
        maps = kind_maps(capture, sampled_rows)
        reference = pretrained.pop(capture.layer)  # drop the pretrained layer once compared
        measure_frames.append(_measure_rows(capture, maps, reference, batch))
        map_frames.append(_map_rows(capture.layer, maps, batch))

    captured = effattn.capture_attention(models.finetuned, inputs, on_layer=on_layer)
    with torch.no_grad(), effattn.effective_attention_substituted(models.finetuned):
        logits_effective = models.finetuned(**inputs).logits
    return {
        "examples": _example_rows(models, rows, batch, captured.output.logits, logits_effective),
        "head_measures": pl.concat(measure_frames),
        "maps": pl.concat(map_frames) if any(frame is not None for frame in map_frames) else None,
    }


def _kind_rows(kind: str, batch: Batch) -> np.ndarray:
    """Batch rows that have maps of this kind (see kind_maps)."""
    return np.flatnonzero(batch.in_efficient_sample) if kind in SAMPLED_KINDS else np.arange(len(batch.example_ids))


def _measure_rows(capture, maps: dict, reference: dict, batch: Batch) -> pl.DataFrame:
    """head_measures rows of one layer: (rows × head) rows per kind, rows as in _kind_rows."""
    n_head = capture.rank.shape[1]
    # capture.attn_null, taken from the CPU maps at hand instead of subtracting on the device
    # and copying a third map over: the same float32 differences.
    heads = measures.head_properties(capture, maps["standard"] - maps["effective"])
    patterns = _pattern_columns(maps, batch)
    frames = []
    for kind in maps:
        rows = _kind_rows(kind, batch)
        real, types = batch.real[rows], {name: mask[rows] for name, mask in batch.types.items()}
        columns = {**{name: values[rows] for name, values in heads.items()},
                   **measures.map_measures(maps[kind], reference[kind], real, types), **patterns[kind]}
        frames.append(pl.DataFrame({
            "example_id": np.repeat(batch.example_ids[rows], n_head), "head": np.tile(np.arange(n_head), len(rows)),
            "layer": capture.layer, "kind": kind,
            **{name: values.reshape(-1) for name, values in columns.items()},
        }).fill_nan(None))
    return pl.concat(frames)


def _pattern_columns(maps: dict, batch: Batch) -> dict[str, dict[str, np.ndarray]]:
    """kind -> pattern / pattern_score (rows, head), rows as in _kind_rows."""
    columns = {}
    for kind, kind_maps in maps.items():
        labels, scores = [], []
        for index, row in enumerate(_kind_rows(kind, batch)):
            n = int(batch.real[row].sum())
            label, probabilities = classify_patterns(
                kind_maps[index, :, :n, :n].numpy(), segment_ids=batch.segments[row, :n].numpy())
            labels.append(label)
            scores.append(probabilities.max(axis=-1))  # confidence of the chosen class
        columns[kind] = {"pattern": np.stack(labels), "pattern_score": np.stack(scores)}
    return columns


def _map_rows(layer: int, maps: dict, batch: Batch) -> pl.DataFrame | None:
    """maps rows (row-major float32 weights, MAP_DECIMALS) of the batch's examples in the map sample."""
    frames = []
    for kind, kind_maps in maps.items():
        for index, row in enumerate(_kind_rows(kind, batch)):
            if not batch.in_map_sample[row]:
                continue
            n = int(batch.real[row].sum())
            weights = kind_maps[index, :, :n, :n].reshape(-1, n * n).to(torch.float32).numpy()
            frames.append(pl.DataFrame({
                "example_id": batch.example_ids[row], "layer": layer, "head": np.arange(len(weights)),
                "kind": kind, "seq_len": n,
                "weights": pl.Series(np.round(weights, MAP_DECIMALS)).cast(pl.List(pl.Float32)),
            }))
    return pl.concat(frames) if frames else None


def _predict(logits: torch.Tensor) -> np.ndarray:
    return predictions_from_logits(logits.detach().cpu().float().numpy())


def _example_rows(models: Models, rows: pl.DataFrame, batch: Batch, logits, logits_effective) -> pl.DataFrame:
    """examples rows; text, tokens, POS and segments only for the map sample."""
    seq_len = batch.real.sum(dim=-1)
    sample = batch.in_map_sample
    detail = [{
        "tokens": models.tokenizer.convert_ids_to_tokens(batch.inputs["input_ids"][row, :n].tolist()),
        "token_pos": batch.pos_tags[row],
        "segment_ids": batch.segments[row, :n].tolist(),
    } if sample[row] else {"tokens": None, "token_pos": None, "segment_ids": None}
        for row, n in enumerate(seq_len.tolist())]
    return pl.DataFrame({
        "example_id": batch.example_ids, "label": rows["label"],
        "prediction": _predict(logits), "prediction_effective": _predict(logits_effective),
        "seq_len": seq_len.numpy(), "n_segments": np.where(rows["text_b"].is_null(), 1, 2),
        "in_map_sample": sample, "in_efficient_sample": batch.in_efficient_sample,
        "text_a": rows["text_a"].zip_with(pl.Series(sample), pl.Series([None] * len(rows), dtype=pl.String)),
        "text_b": rows["text_b"].zip_with(pl.Series(sample), pl.Series([None] * len(rows), dtype=pl.String)),
        "tokens": pl.Series([d["tokens"] for d in detail], dtype=pl.List(pl.String)),
        "token_pos": pl.Series([d["token_pos"] for d in detail], dtype=pl.List(pl.String)),
        "segment_ids": pl.Series([d["segment_ids"] for d in detail], dtype=pl.List(pl.Int8)),
    })
