"""Re-choose and recompute the explorer sample of a shipped run (data/minilm: issue 16, item 2).

Run from the repo root: `nice -n 10 .venv/bin/python tools/regen_explorer_maps.py [--dry-run]`
(data/mpnet, issue 18: `--run data/mpnet --checkpoints runs/mpnet/checkpoints --map-examples 8`).
Per task: choose MAP_EXAMPLES examples with precompute.map_sample from the stored seq_len and
predictions of every analysed example (the shipped attribution-map examples always included),
recompute their maps with extract's own code (its batch, capture, kind-map and row functions, on
the fine-tuned checkpoint in runs/minilm2/checkpoints; no measures, they are already stored), and replace ONLY the explorer tables, each part atomically:
`maps` (kinds SHIPPED_KINDS, data/ <= 60 MB) and the explorer columns of `examples`
(in_map_sample, texts, tokens, POS, segments). Then manifest row_counts.<task>.map_examples,
config.map_examples and shipped.* say what was done.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, ".")
import effattn  # noqa: E402
from precompute import extract, glue, pos  # noqa: E402
from precompute.config import RunConfig  # noqa: E402
from precompute.finetune import load_classifier  # noqa: E402
from precompute.models import load_tokenizer  # noqa: E402
from precompute.map_sample import choose_map_sample, mispredicted  # noqa: E402
from precompute.schema import TASKS  # noqa: E402
from precompute.schema import SCHEMA_VERSION, SCHEMA_VERSION_KEY  # noqa: E402
from precompute.store import PART_NAME, RunFolder, Shard, atomic_path, conform, write_json_atomic  # noqa: E402

RUN = Path("data/minilm")  # defaults of --run, --checkpoints and --map-examples
CHECKPOINTS = Path("runs/minilm2/checkpoints")
MAP_EXAMPLES = 20  # the text-quoting limit: at most 20 examples per task carry their text
# standard and effective only: the null component is their difference; norm-weighted and efficient
# maps of 20 mostly long examples per task would take data/minilm past 60 MB
SHIPPED_KINDS = ("standard", "effective")
BATCH = 4  # examples per forward pass
LONGEST = 80  # longest example offered (beyond the required ones): map size grows with n²
MAPS_ZSTD_LEVEL = 19  # store.write_part's level 9 leaves data/minilm at 62 MB; 19 reads as fast, 15 % smaller
DETAIL = ("text_a", "text_b", "tokens", "token_pos", "segment_ids")  # per-example columns only the map sample has


def choose(examples: pl.DataFrame, task: str, d_head: int, required: list[int], seed: int, size: int) -> list[int]:
    """Example ids of the new map sample of one task."""
    offered = examples.filter((pl.col("seq_len") <= LONGEST) | pl.col("example_id").is_in(required))
    ids = offered["example_id"].to_numpy()
    wrong = mispredicted(offered["label"].to_numpy(), offered["prediction"].to_numpy(),
                         regression=TASKS[task].is_regression)
    picked = choose_map_sample(offered["seq_len"].to_numpy(), size=size, d_head=d_head, seed=seed,
                               wrong=wrong, required=[int(np.flatnonzero(ids == i)[0]) for i in required])
    return sorted(int(i) for i in ids[picked])


def recompute(task: str, ids: list[int], config: dict, checkpoints: Path) -> dict[str, pl.DataFrame]:
    """The examples (detail columns) and maps (SHIPPED_KINDS) rows of these examples, by extract's own
    batch, capture, kind and row code; only the fine-tuned model runs (no measures, no pretrained model)."""
    data = glue.load_task(task, glue_dir=Path(config["glue_dir"]), carve_train_from_dev=config["carve_train_from_dev"],
                          seed=config["seed"], max_train_examples=config["max_train_examples"],
                          max_eval_examples=config["max_eval_examples"])
    rows = data.eval.filter(pl.col("example_id").is_in(ids)).sort("example_id").with_columns(
        in_map_sample=pl.lit(True), in_efficient_sample=pl.lit(False))
    assert len(rows) == len(ids), f"{task}: eval split lacks some of {ids}"
    run_config = RunConfig(tasks=(task,), out=Path("unused"), max_seq_len=config["max_seq_len"], device="cpu",
                           threads=1, seed=config["seed"])
    checkpoint = checkpoints / task
    models = extract.Models(load_tokenizer(checkpoint), load_classifier(checkpoint, task).eval(), None,
                            pos.load_tagger(), torch.device("cpu"))
    lengths = [len(i) for i in extract.encode(models.tokenizer, *extract.texts_of(rows), run_config,
                                              padding=False)["input_ids"]]
    by_length = rows[np.argsort(lengths, kind="stable")]  # less padding per batch
    examples, maps = [], []
    for start in range(0, len(by_length), BATCH):
        batch_rows = by_length.slice(start, BATCH)
        batch = extract._make_batch(models, batch_rows, run_config)
        layers = []
        captured = effattn.capture_attention(models.finetuned, batch.inputs, on_layer=lambda capture: layers.append(
            extract._map_rows(capture.layer, {kind: m for kind, m in extract.kind_maps(capture, np.array([], int)).items()
                                              if kind in SHIPPED_KINDS}, batch)))
        logits = captured.output.logits  # prediction_effective is kept from the stored row
        examples.append(extract._example_rows(models, batch_rows, batch, logits, logits))
        maps += layers
    keys = ["example_id", "layer", "head", "kind"]
    return {"examples": pl.concat(examples).sort("example_id"),
            "maps": pl.concat(maps).with_columns(task=pl.lit(task)).sort(keys)}


def check_same_examples(task: str, stored: pl.DataFrame, fresh: pl.DataFrame) -> None:
    """The recomputed rows must be the stored examples: same length and predictions."""
    joined = stored.join(fresh, on="example_id", suffix="_new")
    assert len(joined) == len(fresh)
    assert (joined["seq_len"] == joined["seq_len_new"]).all(), f"{task}: seq_len differs from the stored run"
    assert (joined["prediction"] - joined["prediction_new"]).abs().max() < 1e-3, f"{task}: predictions differ"


def write_maps(run: RunFolder, task: str, maps: pl.DataFrame) -> None:
    """The task's one maps part, as store.write_part writes it but at MAPS_ZSTD_LEVEL, atomically."""
    path = run.root / "maps" / f"task={task}" / "part-00000-of-00001-00000.parquet"
    with atomic_path(path) as tmp:
        conform("maps", maps).write_parquet(tmp, compression="zstd", compression_level=MAPS_ZSTD_LEVEL,
                                            metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION)})


def write_examples(run: RunFolder, task: str, ids: list[int], fresh: pl.DataFrame) -> None:
    """Rewrite each examples part with the new in_map_sample flag and detail columns."""
    detail = fresh.select("example_id", *DETAIL)
    for path in run.part_files("examples", [task]):
        part = pl.read_parquet(path, hive_partitioning=False)
        chosen = pl.col("example_id").is_in(ids)
        updated = (part.drop(DETAIL).join(detail, on="example_id", how="left")
                   .with_columns(in_map_sample=chosen).select(part.columns))
        match = PART_NAME.fullmatch(path.name)
        index, count = match["shard"].split("-of-")
        shard, chunk = Shard.parse(f"{int(index)}/{int(count)}"), int(match["chunk"])
        run.write_part("examples", task, updated, shard=shard, chunk=chunk)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="only print the chosen samples")
    parser.add_argument("--recompress", action="store_true", help="only rewrite the stored maps at MAPS_ZSTD_LEVEL")
    parser.add_argument("--tasks", default=None, help="comma-separated subset (default: all of the run)")
    parser.add_argument("--run", type=Path, default=RUN, help="the shipped run folder to rewrite")
    parser.add_argument("--checkpoints", type=Path, default=CHECKPOINTS, help="its fine-tuned checkpoints")
    parser.add_argument("--map-examples", type=int, default=MAP_EXAMPLES, help="examples per task")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = RunFolder(args.run)
    manifest = json.loads((args.run / "manifest.json").read_text())
    config, d_head = manifest["config"], manifest["d_head"]
    tasks = args.tasks.split(",") if args.tasks else manifest["tasks"]
    if args.recompress:
        for task in tasks:
            write_maps(run, task, run.scan("maps", [task]).collect())
        return 0
    for task in tasks:
        started = time.perf_counter()
        examples = run.scan("examples", [task]).collect()
        required = (sorted(run.scan("attribution_maps", [task]).select("example_id").unique().collect()["example_id"])
                    if run.part_files("attribution_maps", [task]) else [])  # a run without the attribute stage
        ids = choose(examples, task, d_head, required, config["seed"], args.map_examples)
        lengths = examples.filter(pl.col("example_id").is_in(ids))["seq_len"].sort().to_list()
        print(f"{task}: ids {ids}\n  n {lengths}, required {required}", flush=True)
        if args.dry_run:
            continue
        tables = recompute(task, ids, config, args.checkpoints)
        check_same_examples(task, examples, tables["examples"])
        maps = tables["maps"]
        for path in run.part_files("maps", [task]):  # one part per task in the shipped copy; replaced below
            if path.name != "part-00000-of-00001-00000.parquet":
                path.unlink()
        write_maps(run, task, maps)
        write_examples(run, task, ids, tables["examples"])
        manifest["row_counts"][task]["map_examples"] = len(ids)
        print(f"  {len(maps)} map rows in {time.perf_counter() - started:.0f} s", flush=True)
    if not args.dry_run:
        manifest["config"]["map_examples"] = args.map_examples
        manifest.setdefault("shipped", {}).update(
            map_kinds=list(SHIPPED_KINDS), map_longest=LONGEST,
            map_sample="precompute.map_sample.choose_map_sample on the stored seq_len and predictions "
                       "(tools/regen_explorer_maps.py), with the attribution-map examples")
        write_json_atomic(args.run / "manifest.json", manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
