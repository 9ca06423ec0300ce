"""Full attention maps of the explorer sample: load, reshape, label tokens, list and filter the examples.

``maps.weights`` is a row-major (query, key) list of seq_len² floats per example × layer ×
head × kind (every kind of precompute.schema.KINDS; efficient only for examples in its sample);
the null component is standard − effective (not stored). ``attribution_maps`` holds the same
layout for the gradient attribution of each head (attribute stage; no kind column).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from dashboard import data
from dashboard.data import Run
from precompute.map_sample import mispredicted
from precompute.schema import TASKS

TEXT_PREVIEW = 80  # characters of an example's text in the picker


def sample_examples(run: Run, task: str) -> pl.DataFrame:
    """The map sample of ``task``: example_id, seq_len, label, predictions, texts, tokens, segments, in_efficient_sample."""
    frame = data.read(run, "examples", tasks=(task,), in_map_sample=True,
                      columns=("example_id", "seq_len", "label", "prediction", "prediction_effective",
                               "text_a", "text_b", "tokens", "segment_ids", "in_efficient_sample"))
    return frame.sort("example_id")


def load_maps(run: Run, task: str, example_ids: tuple[int, ...], layers: tuple[int, ...], heads: tuple[int, ...],
              kinds: tuple[str, ...]) -> dict[tuple[int, int, int, str], np.ndarray]:
    """{(example_id, layer, head, kind): (query, key) array} for every stored combination asked for."""
    frame = data.read(run, "maps", tasks=(task,), example_id=example_ids, layer=layers, head=heads, kind=kinds,
                      columns=("example_id", "layer", "head", "kind", "seq_len", "weights"))
    out = {}
    for example_id, layer, head, kind, n, weights in frame.iter_rows():
        out[(example_id, layer, head, kind)] = np.asarray(weights, dtype=np.float32).reshape(n, n)  # (query, key)
    return out


def load_attribution(run: Run, task: str, example_id: int, layer: int, head: int) -> np.ndarray | None:
    """The (query, key) attribution map of one head on one example; None where attribution_maps has none."""
    frame = data.read(run, "attribution_maps", tasks=(task,), example_id=example_id, layer=layer, head=head,
                      columns=("seq_len", "weights"))
    if frame.is_empty():
        return None
    n, weights = frame.row(0)
    return np.asarray(weights, dtype=np.float32).reshape(n, n)  # (query, key)


def token_labels(tokens: list[str] | None, n: int, segments: list[int] | None = None) -> list[str]:
    """Unique axis labels: ``"i tok"``; tokens of the second sentence get a ``B:`` marker."""
    tokens = list(tokens) if tokens is not None else [str(i) for i in range(n)]
    segments = list(segments) if segments is not None else [0] * n
    labels = []
    for i, token in enumerate(tokens[:n]):
        mark = "B:" if i < len(segments) and segments[i] == 1 and token != "[SEP]" else ""
        labels.append(f"{i} {mark}{token}")
    return labels


def attributed_examples(run: Run, task: str) -> list[int]:
    """Example ids of a task that have attribution maps (none before the attribute stage)."""
    return sorted(data.read(run, "attribution_maps", tasks=(task,), columns=("example_id",))["example_id"].unique())


def example_table(sample: pl.DataFrame, task: str) -> pl.DataFrame:
    """The picker's rows: id, n, label, prediction, correct?, the first words of the text."""
    wrong = mispredicted(sample["label"].to_numpy(), sample["prediction"].to_numpy(),
                         regression=TASKS[task].is_regression if task in TASKS else False)
    text = sample.select(pl.col("text_a").fill_null("") + pl.when(pl.col("text_b").is_not_null())
                         .then(" ‖ " + pl.col("text_b")).otherwise(pl.lit("")))["text_a"]
    return pl.DataFrame({
        "id": sample["example_id"], "n": sample["seq_len"], "label": sample["label"],
        "prediction": sample["prediction"], "correct": ~pl.Series(wrong),
        "text": text.map_elements(_preview, return_dtype=pl.String),
    })


def _preview(text: str) -> str:
    return text if len(text) <= TEXT_PREVIEW else text[:TEXT_PREVIEW].rsplit(" ", 1)[0] + " …"


def filter_examples(table: pl.DataFrame, *, longer_than: int | None, only_wrong: bool) -> pl.DataFrame:
    """The rows with n > longer_than (None: no length filter) and, with only_wrong, the mispredicted ones."""
    if longer_than is not None:
        table = table.filter(pl.col("n") > longer_than)
    return table.filter(~pl.col("correct")) if only_wrong else table


def shipped_map_kinds(run: Run) -> tuple[str, ...] | None:
    """Kinds a shipped copy kept in its maps table (data/ size), or None when it kept every kind."""
    kinds = (run.manifest.get("shipped") or {}).get("map_kinds")
    return tuple(kinds) if kinds else None
