"""Small synthetic but schema-valid run folders for the dashboard tests.

Everything goes through ``precompute.store.RunFolder.write_part`` (schema-validated, atomic),
so a schema change breaks these fixtures the same way it breaks real caches. The numbers are
random but shaped like the real thing: standard maps are row-stochastic, effective maps are the
standard maps minus their projection onto the left null space of a random value matrix (so they
equal the standard maps when seq_len <= d_head), norm-weighted maps weight each key by a random
positive value norm (small on [CLS], [SEP] and punctuation, as Kobayashi et al. found) divided by
the row sums, effective norm-weighted ones weight A_eff the same way by the same row sums, and
efficient maps keep the rank(V) + 1 largest entries of each standard row, renormalised (sparse,
and equal to standard when n <= d_head), for the first EFFICIENT_EXAMPLES examples only. The
attribute stage's tables come from tests/attribution_fixture.py, on the same maps of the first
ATTRIBUTION_EXAMPLES examples. The analysis tables are aggregated from the per-head rows exactly
as stage 3 would.

Use ``write_run(root)``; torch-free (numpy + polars only).
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import polars as pl

import attribution_fixture
from attribution_fixture import ATTRIBUTION_EXAMPLES
from precompute.schema import HEAD_MEASURES, KINDS, PATTERNS
from precompute.store import RunFolder, Shard

N_LAYERS, N_HEADS, D_HEAD = 6, 4, 8  # tiny model: 6 layers x 4 heads, d_head 8
TASKS = ("rte", "sst2")  # one two-sentence task, one single-sentence task
SEQ_LENS = (6, 12, 10, 7, 14, 9)  # examples 0..5; example 0 has n <= d_head (effective == standard)
MAP_SAMPLE = (0, 1)  # examples whose full maps are stored
EFFICIENT_EXAMPLES = 4  # efficient attention only for examples 0..3 (manifest config.efficient_examples)
SPECIAL = ("[CLS]", "[SEP]", ".")  # keys with small value norms in the norm-weighted maps
WORDS = ("the", "new", "drug", "works", "against", "bacteria", "it", "is", "good", ".", "a", "film")
POS = {"the": "DET", "new": "ADJ", "drug": "NOUN", "works": "VERB", "against": "ADP", "bacteria": "NOUN",
       "it": "PRON", "is": "AUX", "good": "ADJ", ".": "PUNCT", "a": "DET", "film": "NOUN"}


def _tokens(task: str, n: int) -> tuple[list[str], list[str], list[int]]:
    """Wordpieces (with [CLS]/[SEP]), their POS and segment ids for an n-token input."""
    two = task != "sst2"
    body = n - (3 if two else 2)
    words = [WORDS[i % len(WORDS)] for i in range(body)]
    if two:
        half = body // 2
        tokens = ["[CLS]", *words[:half], "[SEP]", *words[half:], "[SEP]"]
        segments = [0] * (half + 2) + [1] * (body - half + 1)
    else:
        tokens = ["[CLS]", *words, "[SEP]"]
        segments = [0] * n
    pos = [POS.get(token, "") for token in tokens]
    return tokens, pos, segments


def _maps(rng: np.random.Generator, tokens: list[str]) -> tuple[dict[str, np.ndarray], int]:
    """({kind: (query, key) map} of one head for every kind, rank of V); the caller keeps efficient for its sample."""
    n = len(tokens)
    logits = rng.normal(size=(n, n)) * 2
    logits[:, 0] += 2  # some weight on [CLS] like real heads
    attn = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    values = rng.normal(size=(n, D_HEAD))  # (key, d_head)
    u, s, _ = np.linalg.svd(values, full_matrices=True)
    rank = int((s > 1e-8).sum())
    null_basis = u[:, rank:]  # (key, nullity): left null space of values
    attn_eff = attn - attn @ null_basis @ null_basis.T
    norms = np.where(np.isin(tokens, SPECIAL), 0.2, rng.uniform(0.8, 1.5, size=n))  # ‖f(x_j)‖ per key
    row_mass = (attn * norms).sum(axis=1, keepdims=True)  # the norm-weighted standard row sums
    keep = np.argsort(-attn, axis=1)[:, :rank + 1]  # (query, rank + 1): the largest entries per row
    efficient = np.zeros_like(attn)
    np.put_along_axis(efficient, keep, np.take_along_axis(attn, keep, axis=1), axis=1)
    efficient /= efficient.sum(axis=1, keepdims=True)
    return {"standard": attn, "effective": attn_eff, "norm": attn * norms / row_mass,
            "effective_norm": attn_eff * norms / row_mass, "efficient": efficient}, rank


def _examples(task: str) -> pl.DataFrame:
    rows = []
    for example_id, n in enumerate(SEQ_LENS):
        sampled = example_id in MAP_SAMPLE
        tokens, pos, segments = _tokens(task, n)
        rows.append({
            "task": task, "example_id": example_id, "label": float(example_id % 2),
            "prediction": float(example_id % 2), "prediction_effective": float((example_id // 2) % 2),
            "seq_len": n, "n_segments": 1 if task == "sst2" else 2, "in_map_sample": sampled,
            "in_efficient_sample": example_id < EFFICIENT_EXAMPLES,
            "text_a": " ".join(t for t, s in zip(tokens[1:], segments[1:]) if s == 0 and t != "[SEP]") if sampled else None,
            "text_b": (" ".join(t for t, s in zip(tokens, segments) if s == 1 and t != "[SEP]") or None) if sampled else None,
            "tokens": tokens if sampled else None, "token_pos": pos if sampled else None,
            "segment_ids": segments if sampled else None,
        })
    return pl.DataFrame(rows)


def _measures_and_maps(task: str, rng: np.random.Generator, classified: bool) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """head_measures rows, maps rows, and {(example_id, layer, head): {kind: map}} of the attribution sample."""
    measure_rows, map_rows, attribution_sample = [], [], {}
    for example_id, n in enumerate(SEQ_LENS):
        tokens = _tokens(task, n)[0]
        punct = np.array([token == "." for token in tokens])
        for layer in range(N_LAYERS):
            for head in range(N_HEADS):
                by_kind, rank = _maps(rng, tokens)
                null_norm = float(np.linalg.norm(by_kind["standard"] - by_kind["effective"]))
                if example_id < ATTRIBUTION_EXAMPLES:
                    attribution_sample[(example_id, layer, head)] = by_kind
                for kind in KINDS:
                    if kind == "efficient" and example_id >= EFFICIENT_EXAMPLES:
                        continue  # efficient attention is computed on a sample only
                    weights = by_kind[kind]
                    row = {"task": task, "example_id": example_id, "layer": layer, "head": head, "kind": kind,
                           "seq_len": n, "rank": rank, "nullity": n - rank,
                           "cls_weight": float(weights[:, 0].mean()), "sep_weight": float(weights[:, -1].mean()),
                           "punct_weight": float(weights[:, punct].sum(axis=1).mean()) if punct.any() else None,
                           "support_share": float((weights != 0).mean()),
                           "null_norm": null_norm,
                           "pretrained_cosine": float(1 - 0.05 * layer * rng.random() - (0.1 if kind == "effective" else 0)),
                           "entropy": float(rng.random() * 2)}
                    for name in ("noun", "pron", "verb", "sep", "cls", "punct"):
                        row[f"cls_row_{name}"] = None if (name == "pron" and example_id % 3 == 0) else float(weights[0, :].max() * rng.random())
                    if classified:
                        row["pattern"] = PATTERNS[(layer + head + example_id + KINDS.index(kind)) % len(PATTERNS)]
                        row["pattern_score"] = float(rng.random())
                    measure_rows.append(row)
                    if example_id in MAP_SAMPLE:
                        map_rows.append({"task": task, "example_id": example_id, "layer": layer, "head": head,
                                         "kind": kind, "seq_len": n, "weights": weights.astype(np.float32).ravel().tolist()})
    return pl.DataFrame(measure_rows, infer_schema_length=None), pl.DataFrame(map_rows), attribution_sample


def _head_summary(measures: pl.DataFrame) -> pl.DataFrame:
    long = measures.unpivot(index=["task", "layer", "head", "kind"], on=list(HEAD_MEASURES),
                            variable_name="measure", value_name="x").drop_nulls("x")
    return long.group_by(["task", "layer", "head", "kind", "measure"]).agg(
        mean=pl.col("x").mean(), std=pl.col("x").std(), q25=pl.col("x").quantile(0.25),
        q50=pl.col("x").median(), q75=pl.col("x").quantile(0.75), n=pl.len())


def _pattern_tables(measures: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    counts = measures.group_by(["task", "kind", "pattern"]).agg(n=pl.len())
    shares = counts.with_columns(n_maps=pl.col("n").sum().over(["task", "kind"])).with_columns(
        share=pl.col("n") / pl.col("n_maps")).drop("n")
    per_head = measures.group_by(["task", "layer", "head", "kind", "pattern"]).agg(n=pl.len())
    grid = (per_head.with_columns(dominant_share=pl.col("n") / pl.col("n").sum().over(["task", "layer", "head", "kind"]))
            .sort(["n", "pattern"], descending=[True, False])
            .group_by(["task", "layer", "head", "kind"], maintain_order=True).first()
            .rename({"pattern": "dominant_pattern"}).drop("n"))
    return shares, grid


def _metrics(task: str) -> pl.DataFrame:
    rows = []
    for kind, quality, seconds in (("standard", 0.8, 10.0), ("effective", 0.7, 21.0)):
        for metric, value in (("accuracy", quality), ("f1", quality - 0.05), ("eval_seconds", seconds),
                              ("examples_per_second", len(SEQ_LENS) / seconds)):
            rows.append({"task": task, "kind": kind, "metric": metric, "value": value, "n_examples": len(SEQ_LENS)})
    return pl.DataFrame(rows)


def write_run(root: str | Path, *, classified: bool = True, attributed: bool = True, seed: int = 0) -> Path:
    """Write a complete synthetic run folder at ``root``; return its path.

    ``classified=False`` leaves the pattern columns null and writes no pattern tables (the state
    before issue 4's classifier has run); ``attributed=False`` writes none of the attribute stage's
    tables (a run made before that stage).
    """
    rng = np.random.default_rng(seed)
    attribution_rng = np.random.default_rng(seed + 1000)  # its own stream: the other tables stay as they were
    run = RunFolder(root)
    shard = Shard(0, 1)
    for task in TASKS:
        examples = _examples(task)
        measures, maps, attribution_sample = _measures_and_maps(task, rng, classified)
        run.write_part("examples", task, examples, shard=shard, chunk=0)
        half = measures.height // 2  # two chunks, like a resumed extraction
        run.write_part("head_measures", task, measures[:half], shard=shard, chunk=0)
        run.write_part("head_measures", task, measures[half:], shard=shard, chunk=1)
        run.write_part("maps", task, maps, shard=shard, chunk=0)
        run.write_part("metrics", task, _metrics(task), shard=shard, chunk=0)
        run.write_part("head_summary", task, _head_summary(measures), shard=shard, chunk=0)
        le = sum(n <= D_HEAD for n in SEQ_LENS) / len(SEQ_LENS)
        run.write_part("task_summary", task, pl.DataFrame([{
            "task": task, "n_eval": len(SEQ_LENS), "d_head": D_HEAD, "share_le_d_head": le,
            "mean_seq_len": float(np.mean(SEQ_LENS)), "prediction_agreement": 0.5}]), shard=shard, chunk=0)
        if classified:
            shares, grid = _pattern_tables(measures)
            run.write_part("pattern_shares", task, shares, shard=shard, chunk=0)
            run.write_part("pattern_grid", task, grid, shard=shard, chunk=0)
        if attributed:
            for table, frame in attribution_fixture.tables(task, attribution_sample, MAP_SAMPLE, N_LAYERS,
                                                           attribution_rng).items():
                run.write_part(table, task, frame, shard=shard, chunk=0)
        run.mark_stage_done("analyse", task, shard, seconds=1.5)
    run.update_manifest({
        "created": "2025-01-01T00:00:00", "model": "fixture-minilm", "model_source": "fixture-minilm",
        "tasks": list(TASKS), "data_source": "glue-dir:/fixture", "device": "cpu",
        "d_head": D_HEAD, "n_layers": N_LAYERS, "n_heads": N_HEADS, "seeds": [0],
        "row_counts": {task: {"train": 100, "dev": len(SEQ_LENS), "eval": len(SEQ_LENS), "map_examples": len(MAP_SAMPLE),
                              **({"attribution_examples": ATTRIBUTION_EXAMPLES} if attributed else {})} for task in TASKS},
        "versions": {"python": "3.11", "torch": "none"},
        "metrics": {task: {"standard": {"accuracy": 0.8}, "effective": {"accuracy": 0.7}} for task in TASKS},
        "config": {"max_length": 128, "epochs": 3, "efficient_examples": EFFICIENT_EXAMPLES,
                   **({"attribution_examples": ATTRIBUTION_EXAMPLES} if attributed else {})},
    })
    return Path(root)


def write_classifier_eval(data_root: Path) -> Path:
    """The classifier's held-out scores, in the shared labels folder beside the runs.

    Same long format as data/pattern_labels/classifier_eval.parquet (issue 4's labelling tool
    writes it; it is not a run-folder table, so it is written directly).
    """
    rows = [{"metric": "macro_f1", "kind": kind, "true_pattern": None, "predicted_pattern": None, "value": value, "n": n}
            for kind, value, n in (("all", 0.8, 100), ("standard", 0.75, 50), ("effective", 0.85, 50))]
    rows.append({"metric": "accuracy", "kind": "all", "true_pattern": None, "predicted_pattern": None, "value": 0.82, "n": 100})
    for i, true in enumerate(PATTERNS):
        for j, predicted in enumerate(PATTERNS):
            rows.append({"metric": "confusion", "kind": "all", "true_pattern": true, "predicted_pattern": predicted,
                         "value": 16.0 if i == j else 1.0, "n": 20})
    path = Path(data_root) / "pattern_labels" / "classifier_eval.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(path)
    return path


def write_data_root(root: str | Path) -> Path:
    """A data folder like ``data/``: two softmax runs (one classified, one not yet) and a
    sparsemax run of the same tasks (with the importance stage's tables) beside them."""
    from sparse_fixture import write_sparse_run  # it builds on write_run

    root = Path(root)
    write_run(root / "minilm", classified=True, seed=0)
    write_run(root / "unclassified", classified=False, seed=1)
    write_sparse_run(root / "minilm-sparsemax", "sparsemax", seed=2)
    write_classifier_eval(root)
    return root


# ---- AppTest helpers (shared by tests/test_app_*.py) ---------------------------------------
APP = Path(__file__).resolve().parent.parent / "app.py"
APP_TIMEOUT_SECONDS = 180  # per script run; generous because CI machines are shared and slow


PAGES = ("overview", "patterns", "token_types", "special_tokens", "attribution", "sparse", "finetuning", "compare_runs",
         "explorer", "cost")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def open_page(page: str | None = None, *, query: dict | None = None):
    """Run app.py with ``query`` as the URL's parameters, then switch to ``page``.

    ``page`` is a file under dashboard/pages/ without ".py" ("overview" or None = the default
    page). Returns the AppTest.
    EFFATTN_DATA must already be set (tests use monkeypatch.setenv). Sidebar values are set
    through the URL, as a shared link would.
    """
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_SECONDS)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    if page not in (None, "overview"):
        at.switch_page(f"dashboard/pages/{page}.py").run()
    return at


def figures(at) -> list[dict]:
    """The plotly figure specs (data + layout) of every chart on the page, in order.

    Numeric arrays come back as nested lists (plotly ships numpy arrays as base64 "bdata").
    """
    import json

    return [_decode(json.loads(element.proto.spec)) for element in at.get("plotly_chart")]


def _decode(value):
    import base64

    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
            if "shape" in value:
                array = array.reshape([int(n) for n in str(value["shape"]).split(",")])
            return array.tolist()
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def chart_configs(at) -> list[dict]:
    import json

    return [json.loads(element.proto.config) for element in at.get("plotly_chart")]


def problems(at) -> list[str]:
    """Exceptions and st.error messages on the page (both must be absent on a healthy page)."""
    return [str(e.value) for e in at.exception] + [str(e.value) for e in at.error]
