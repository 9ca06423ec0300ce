"""Compare pattern classifiers on the consensus labels by nested cross-validation (issue 17).

Outer folds are grouped by example (model, task, example_id): no map of a held-out example is
ever trained on. Each model picks its hyper-parameters by an inner grouped CV inside the outer
training fold only. Models:
    lr    the shipped feature model: multinomial logistic regression on effattn.patterns
          FEATURES (tools/label_patterns.py's fit_logistic, archetypes added to training)
    gbt   gradient-boosted trees (HistGradientBoostingClassifier) on the same features plus an
          8 × 8 thumbnail of the row-normalised map and the sentence count
    cnn   a small CNN on 32 × 32 thumbnails (row-normalised |A| / max, special-token columns,
          same-sentence mask), trained with torch on CPU
Writes data/pattern_labels/classifier_comparison.parquet (long: model, metric, kind,
true_pattern, predicted_pattern, value, n) and, for the kept model and for the classifier that
labelled the shipped caches, data/pattern_labels/classifier_eval.parquet (column classifier:
'shipped' = held-out predictions of the kept model; 'caches' = the issue-4 FITTED parameters
applied to the consensus maps they were not fitted on). --write-model refits the kept LR on all
consensus labels into effattn/patterns.py (FITTED).

    python tools/label_passes.py consensus
    python tools/compare_pattern_classifiers.py --write-model
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

# a class with fewer labels than folds (block, early on) is expected; the counts are reported
warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from effattn.patterns import ISSUE4_FITTED, PATTERNS, normalise_rows, pattern_scores  # noqa: E402
from label_passes import AGREEMENT_PATH, CONSENSUS_PATH, FOLDER, KEY, POOL_PATH  # noqa: E402
from label_patterns import LABELS_PATH, fit_logistic, label_features, write_model  # noqa: E402

COMPARISON_PATH = FOLDER / "classifier_comparison.parquet"
EVAL_PATH = FOLDER / "classifier_eval.parquet"
CLEAR_MARGIN = 0.03  # a learned model replaces the LR only if better by this much (and > 1 sd)
LR_GRID = [dict(C=C, balanced=b) for C in (0.3, 1.0, 3.0) for b in (False, True)]
GBT_GRID = [dict(learning_rate=0.1, max_depth=3), dict(learning_rate=0.2, max_depth=2)]
CNN_GRID = [dict(epochs=40, weight_decay=1e-4), dict(epochs=80, weight_decay=1e-3)]
LONG = {"model": pl.String, "metric": pl.String, "kind": pl.String, "true_pattern": pl.String,
        "predicted_pattern": pl.String, "value": pl.Float64, "n": pl.Int64}


# ----------------------------------------------------------------------------- inputs
def thumbnails(labels: pl.DataFrame, size: int) -> np.ndarray:
    """-> (map, 3, size, size) float32: |A| row-normalised / its max, special-token columns,
    same-sentence mask; each averaged over the cells of a size × size grid."""
    import torch
    import torch.nn.functional as F

    out = []
    for w, n, s in zip(labels["weights"], labels["seq_len"], labels["segment_ids"]):
        p = normalise_rows(np.asarray(w, np.float32).reshape(n, n))
        seg = np.asarray(s)
        ends = [int(np.flatnonzero(seg == v)[-1]) for v in np.unique(seg)]
        special = np.zeros(n, np.float32)
        special[[0, *ends]] = 1
        planes = np.stack([p / max(p.max(), 1e-9), np.broadcast_to(special, (n, n)),
                           (seg[:, None] == seg[None, :]).astype(np.float32)])
        out.append(F.adaptive_avg_pool2d(torch.from_numpy(planes), size).numpy())
    return np.stack(out).astype(np.float32)


def inputs(labels: pl.DataFrame) -> dict:
    """Everything the models read, computed once: features, thumbnails, classes, groups."""
    features, y, two = label_features(labels)
    thumbs = thumbnails(labels, 32)
    small = thumbs[:, 0].reshape(len(y), 4, 8, 4, 8).mean((2, 4)).reshape(len(y), -1)
    groups = (labels["model"] + "/" + labels["task"] + "/" + labels["example_id"].cast(pl.String))
    return dict(features=features, rich=np.hstack([features, small, two[:, None]]), thumbs=thumbs,
                y=y, two=two, groups=groups.to_numpy(), kinds=labels["kind"].to_numpy())


# ----------------------------------------------------------------------------- models
def _mask_block(prob: np.ndarray, two: np.ndarray) -> np.ndarray:
    """One-sentence inputs are never block (as effattn.patterns does)."""
    prob = prob.copy()
    prob[~two, PATTERNS.index("block")] = 0
    return prob


def lr_fit(data, idx, params):
    return fit_logistic(data["features"][idx], data["y"][idx], **params)


def lr_predict(model, data, idx):
    return pattern_scores(data["features"][idx], data["two"][idx], model=model)


def gbt_fit(data, idx, params):
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=8, class_weight="balanced",
                                           early_stopping=False, random_state=0, **params)
    return model.fit(data["rich"][idx], data["y"][idx])


def gbt_predict(model, data, idx):
    prob = np.zeros((len(idx), len(PATTERNS)))
    prob[:, model.classes_] = model.predict_proba(data["rich"][idx])
    return _mask_block(prob, data["two"][idx])


def cnn_fit(data, idx, params):
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),      # (8, 16, 16)
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # (16, 8, 8)
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),                     # (32, 8, 8)
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, len(PATTERNS)))
    x, y = torch.from_numpy(data["thumbs"][idx]), torch.from_numpy(data["y"][idx])
    counts = np.bincount(data["y"][idx], minlength=len(PATTERNS))
    weight = torch.tensor(len(idx) / (len(PATTERNS) * np.maximum(counts, 1)), dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=params["weight_decay"])
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    gen = torch.Generator().manual_seed(0)
    for _ in range(params["epochs"]):
        for batch in torch.randperm(len(idx), generator=gen).split(32):
            opt.zero_grad()
            loss_fn(net(x[batch]), y[batch]).backward()
            opt.step()
    return net.eval()


def cnn_predict(model, data, idx):
    import torch

    with torch.no_grad():
        prob = torch.softmax(model(torch.from_numpy(data["thumbs"][idx])), -1).numpy()
    return _mask_block(prob, data["two"][idx])


MODELS = {"lr": (lr_fit, lr_predict, LR_GRID), "gbt": (gbt_fit, gbt_predict, GBT_GRID),
          "cnn": (cnn_fit, cnn_predict, CNN_GRID)}


# ----------------------------------------------------------------------------- nested CV
def _folds(data, idx, n_splits, seed):
    from sklearn.model_selection import StratifiedGroupKFold

    split = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
    return [(idx[a], idx[b]) for a, b in split.split(idx, data["y"][idx], data["groups"][idx])]


# inner folds per model: the learned models cost 10-100x an LR fit, and the machine is shared
INNER_SPLITS = {"lr": 3, "gbt": 2, "cnn": 2}


def select_and_fit(name, data, train, *, seed=0):
    """Inner grouped CV on the training rows picks the grid point; refit on all of them."""
    from sklearn.metrics import f1_score

    fit, predict, grid = MODELS[name]
    if len(grid) == 1:
        return fit(data, train, grid[0]), grid[0]
    folds = _folds(data, train, INNER_SPLITS[name], seed)
    scores = []
    for params in grid:
        pred = np.concatenate([predict(fit(data, a, params), data, b).argmax(-1) for a, b in folds])
        truth = np.concatenate([data["y"][b] for _, b in folds])
        scores.append(f1_score(truth, pred, average="macro"))
    best = grid[int(np.argmax(scores))]
    return fit(data, train, best), best


def nested_predictions(name, data, *, repeats, n_splits=5):
    """-> (predictions (repeat, map), per-fold macro-F1 list, chosen params per fold)."""
    from sklearn.metrics import f1_score

    idx = np.arange(len(data["y"]))
    preds, fold_f1, chosen = np.full((repeats, len(idx)), -1), [], []
    for r in range(repeats):
        for train, test in _folds(data, idx, n_splits, seed=r):
            model, params = select_and_fit(name, data, train, seed=r)
            preds[r, test] = MODELS[name][1](model, data, test).argmax(-1)
            fold_f1.append(f1_score(data["y"][test], preds[r, test], average="macro",
                                    labels=np.unique(data["y"][test])))
            chosen.append(params)
    return preds, fold_f1, chosen


# ----------------------------------------------------------------------------- tables
def score_rows(y, pred, kinds, *, fold_f1=None) -> list[dict]:
    """Long rows: macro-F1 (and mean/sd over outer folds), accuracy, per-kind macro-F1, per-class
    F1/precision/recall, confusion overall and per kind."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    rows = []
    add = lambda metric, value, n, kind="all", t=None, p=None: rows.append(  # noqa: E731
        dict(metric=metric, kind=kind, true_pattern=t, predicted_pattern=p, value=float(value), n=int(n)))
    classes = list(range(len(PATTERNS)))
    add("macro_f1", f1_score(y, pred, average="macro", labels=np.unique(y)), len(y))
    if fold_f1 is not None:
        add("macro_f1_mean", np.mean(fold_f1), len(y))
        add("macro_f1_std", np.std(fold_f1), len(y))
    add("accuracy", (pred == y).mean(), len(y))
    for kind in sorted(set(kinds)):
        m = kinds == kind
        add("macro_f1", f1_score(y[m], pred[m], average="macro", labels=np.unique(y[m])), m.sum(), kind)
        for i, true in enumerate(PATTERNS):
            for j, predicted in enumerate(PATTERNS):
                add("confusion", ((y[m] == i) & (pred[m] == j)).sum(), (y[m] == i).sum(), kind, true, predicted)
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=classes, zero_division=0)
    for i, pattern in enumerate(PATTERNS):
        for metric, values in (("f1", f1), ("precision", prec), ("recall", rec)):
            add(metric, values[i], support[i], t=pattern)
        for j, predicted in enumerate(PATTERNS):
            add("confusion", ((y == i) & (pred == j)).sum(), support[i], t=pattern, p=predicted)
    return rows


def agreement_rows() -> list[dict]:
    if not AGREEMENT_PATH.exists():
        return []
    agreement = json.loads(AGREEMENT_PATH.read_text())
    return [dict(metric="label_fleiss_kappa", kind="all", true_pattern=None, predicted_pattern=None,
                 value=float(agreement["fleiss_kappa"]), n=int(agreement["maps_every_pass"]))]


def caches_classifier_rows(labels: pl.DataFrame, data: dict) -> list[dict]:
    """The classifier that labelled the shipped caches (ISSUE4_FITTED), on the consensus maps it
    was not fitted on (the issue-4 maps were its training labels)."""
    fitted_on = pl.read_parquet(LABELS_PATH, columns=KEY)
    unseen = labels.with_row_index("row").join(fitted_on, on=KEY, how="anti")["row"].to_numpy()
    pred = pattern_scores(data["features"][unseen], data["two"][unseen], model=ISSUE4_FITTED).argmax(-1)
    return score_rows(data["y"][unseen], pred, data["kinds"][unseen])


def keep(summary: dict) -> str:
    """The LR unless a learned model beats its mean macro-F1 by CLEAR_MARGIN and by > 1 sd."""
    lr_mean, lr_sd = summary["lr"]
    best = max((m for m in summary if m != "lr"), key=lambda m: summary[m][0], default=None)
    if best and summary[best][0] - lr_mean >= max(CLEAR_MARGIN, lr_sd, summary[best][1]):
        return best
    return "lr"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--consensus", type=Path, default=CONSENSUS_PATH)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=2, help="outer 5-fold CV repeats")
    parser.add_argument("--write-model", action="store_true",
                        help="refit the kept LR on all consensus labels into effattn/patterns.py")
    args = parser.parse_args(argv)
    if "lr" not in args.models:
        raise SystemExit(f"--models {' '.join(args.models)} leaves out lr, the baseline every model "
                         "is compared with: add lr")
    if not args.consensus.exists():
        raise SystemExit(f"no consensus labels at {args.consensus}: run "
                         "`python tools/label_passes.py consensus` first.")
    every = pl.read_parquet(args.consensus)
    if "weights" not in every.columns:  # consensus.parquet holds labels; the maps are in pool.parquet
        every = every.join(pl.read_parquet(POOL_PATH,
                                           columns=["map_id", "segment_ids", "weights"]), on="map_id")
    labels = every.filter(pl.col("pattern") != "ambiguous").sort(KEY)
    print(f"{labels.height} consensus labels; {every.height - labels.height} ambiguous maps excluded")
    data = inputs(labels)
    rows, summary, preds = [], {}, {}
    for name in args.models:
        started = time.perf_counter()
        pred, fold_f1, chosen = nested_predictions(name, data, repeats=args.repeats)
        summary[name], preds[name] = (float(np.mean(fold_f1)), float(np.std(fold_f1))), pred[0]
        rows += [{"model": name, **r} for r in score_rows(data["y"], pred[0], data["kinds"], fold_f1=fold_f1)]
        print(f"{name}: macro-F1 {summary[name][0]:.3f} ± {summary[name][1]:.3f} over "
              f"{len(fold_f1)} outer folds ({time.perf_counter() - started:.0f} s); chosen {chosen}")
    comparison = pl.DataFrame(rows, schema=LONG)
    _write(comparison, COMPARISON_PATH)
    kept = keep(summary)
    print(f"kept: {kept}" + ("" if kept == "lr" else " (not yet shippable: only the LR has numpy inference here)"))
    shipped = [{"classifier": "shipped", **r} for r in
               score_rows(data["y"], preds[kept], data["kinds"],
                          fold_f1=None) + agreement_rows()]
    mean_sd = comparison.filter(pl.col("model") == kept, pl.col("metric").is_in(["macro_f1_mean", "macro_f1_std"]))
    shipped += [{"classifier": "shipped", **r} for r in mean_sd.drop("model").to_dicts()]
    caches = [{"classifier": "caches", **r} for r in caches_classifier_rows(labels, data)]
    _write(pl.DataFrame(shipped + caches, schema={"classifier": pl.String, **{k: v for k, v in LONG.items() if k != "model"}}), EVAL_PATH)
    with pl.Config(tbl_rows=60):
        print(comparison.filter(pl.col("metric").is_in(["macro_f1", "macro_f1_mean", "macro_f1_std", "f1"]))
              .pivot(on="model", index=["metric", "kind", "true_pattern"], values="value"))
    if args.write_model and kept == "lr":
        idx = np.arange(len(data["y"]))
        model, params = select_and_fit("lr", data, idx)
        write_model({**model, "n": len(idx)})
        print(f"refitted the LR ({params}) on {len(idx)} consensus labels into effattn/patterns.py")
    return 0


def _write(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
