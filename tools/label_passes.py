"""Blind, repeated labelling of attention-pattern maps by independent labellers (issue 17).

Five steps, each a sub-command:

    pool       build data/pattern_labels/pool.parquet, every map to be labelled: the issue-4 maps
               plus new maps of every kind from the fine-tuned checkpoints (and a second model)
    reference  draw the labelling guide's reference images (maps kept out of the pool)
    render     draw pass P's next numbered grid: maps in an order shuffled per pass, nothing shown
               but the map, its length and its sentence marks (no kind, layer, head, task, model)
    record     store one grid's labels in data/pattern_labels/passes.parquet
    consensus  majority labels and the agreement between passes -> consensus.parquet (labels and
               votes; the maps stay in pool.parquet, join on map_id), agreement.json

    python tools/label_passes.py pool --per-task-kind 16
    python tools/label_passes.py render --pass 1
    python tools/label_passes.py record --pass 1 --grid 0 "1=v 2=h 3=u ..."
    python tools/label_passes.py status
    python tools/label_passes.py consensus

Label codes: v vertical, d diagonal, vd vertical+diagonal, b block, h heterogeneous, u unsure
(an unsure vote is no vote). GUIDE.md beside the tables is what every labeller reads first.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from effattn.patterns import PATTERNS  # noqa: E402
from label_patterns import CODES, LABELS_PATH, draw_panel  # noqa: E402

FOLDER = REPO / "data" / "pattern_labels"
POOL_PATH = FOLDER / "pool.parquet"
PASSES_PATH = FOLDER / "passes.parquet"
CONSENSUS_PATH = FOLDER / "consensus.parquet"
AGREEMENT_PATH = FOLDER / "agreement.json"
REFERENCE_DIR = FOLDER / "reference"
GRIDS_DIR = Path(os.environ.get("EFFATTN_LABEL_GRIDS", "/tmp/effattn_label_grids"))
GLUE_DIR = Path("/work/shared/glue")
CHECKPOINTS = REPO / "runs" / "minilm" / "checkpoints"
KINDS = ("standard", "effective", "norm", "effective_norm", "efficient")
VOTE_CODES = {**CODES, "u": "unsure"}
GRID_SIZE = 30
REFERENCES_PER_CLASS = 4
KEY = ["model", "task", "example_id", "layer", "head", "kind"]
POOL_SCHEMA = {
    "map_id": pl.Int32, "model": pl.String, "task": pl.String, "example_id": pl.Int64,
    "layer": pl.Int16, "head": pl.Int16, "kind": pl.String, "seq_len": pl.Int32,
    "n_segments": pl.Int8, "segment_ids": pl.List(pl.Int8), "weights": pl.List(pl.Float32),
    "source": pl.String, "how": pl.String}
PASS_SCHEMA = {"map_id": pl.Int32, "pass": pl.Int8, "labeller": pl.String, "label": pl.String,
               "grid": pl.Int16, "panel": pl.Int16, "labelled_at": pl.String}


def _write(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)


# ----------------------------------------------------------------------------- pool
def _reference_keys(labels: pl.DataFrame) -> pl.DataFrame:
    """Maps both issue-4 passes agreed on, REFERENCES_PER_CLASS per class: the guide's examples."""
    agreed = labels.filter(pl.col("first_pattern") == pl.col("pattern"))
    return pl.concat([agreed.filter(pl.col("pattern") == p).sort(KEY).head(REFERENCES_PER_CLASS)
                      for p in PATTERNS])


def _issue4_maps() -> pl.DataFrame:
    labels = pl.read_parquet(LABELS_PATH)
    kept = labels.join(_reference_keys(labels).select(KEY), on=KEY, how="anti")
    return kept.select(*KEY, "seq_len", "n_segments", "segment_ids", "weights").with_columns(
        source=pl.lit("issue 4 sample"), how=pl.lit("issue 4: random, or a quota per preliminary rule guess (not shown)"))


def _checkpoint_maps(task: str, model_dir: Path, model_name: str, n_examples: int, per_kind: int,
                     rng: np.random.Generator) -> list[dict]:
    """Maps of every kind from one model on random dev examples of `task`, per kind an equal
    quota per class the shipped classifier predicts (never shown), so rare classes get labelled."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from effattn import attention_kind, capture_attention, classify_patterns
    from precompute.extract import segment_ids as segments_from_separators
    from precompute.glue import dev_path, read_tsv

    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dev = read_tsv(task, dev_path(GLUE_DIR, task))
    ids = sorted(int(i) for i in rng.choice(dev.height, size=min(n_examples, dev.height), replace=False))
    candidates = {kind: [] for kind in KINDS}
    for example_id in ids:
        text_a, text_b = dev["text_a"][example_id], dev["text_b"][example_id]
        encoded = tokenizer(text_a, text_b, truncation=True, max_length=128, return_tensors="pt")
        pair = text_b is not None
        segments = segments_from_separators(encoded["input_ids"], tokenizer.sep_token_id, pair)[0].numpy()
        with torch.no_grad():
            layers = capture_attention(model, {k: v for k, v in encoded.items()}).layers
        for capture in layers:
            for kind in KINDS:
                maps = attention_kind(capture, kind)[0].float().numpy()  # (head, query, key)
                guesses, _ = classify_patterns(maps, segment_ids=segments)
                for head, guess in enumerate(guesses):
                    candidates[kind].append(dict(
                        model=model_name, task=task, example_id=example_id, layer=capture.layer, head=head,
                        kind=kind, seq_len=maps.shape[-1], n_segments=int(np.unique(segments).size),
                        segment_ids=segments.astype(np.int8).tolist(), weights=maps[head].ravel().tolist(),
                        guess=str(guess)))
    chosen = []
    for kind, rows in candidates.items():
        order = rng.permutation(len(rows))
        quota = {p: per_kind // len(PATTERNS) for p in PATTERNS}
        picked = []
        for i in order:  # an equal share per predicted class first, then random maps
            if quota.get(rows[i]["guess"], 0) > 0:
                quota[rows[i]["guess"]] -= 1
                picked.append(int(i))
        rest = [int(i) for i in order if int(i) not in set(picked)]
        picked += rest[: per_kind - len(picked)]
        for i in picked:
            row = dict(rows[i])
            row.pop("guess")
            chosen.append({**row, "source": f"issue 17 sample ({model_name})",
                           "how": "equal quota per class the shipped classifier predicted (not shown), then random"})
    return chosen


def pool(args) -> int:
    """Write pool.parquet: the issue-4 maps (less the guide's references) and new maps."""
    rng = np.random.default_rng(args.seed)
    frames = [_issue4_maps()]
    for task in args.tasks.split(","):
        model_dir = CHECKPOINTS / task
        rows = _checkpoint_maps(task, model_dir, f"minilm-finetuned-{task}", args.examples, args.per_task_kind, rng)
        frames.append(pl.DataFrame(rows, schema={k: v for k, v in POOL_SCHEMA.items() if k != "map_id"}))
        print(f"{task}: {len(rows)} maps", flush=True)
    for spec in args.extra_model or ():
        name, folder, task = spec.split(":")
        rows = _checkpoint_maps(task, Path(folder), name, args.examples, args.per_task_kind, rng)
        frames.append(pl.DataFrame(rows, schema={k: v for k, v in POOL_SCHEMA.items() if k != "map_id"}))
        print(f"{name} {task}: {len(rows)} maps", flush=True)
    maps = pl.concat([f.select([k for k in POOL_SCHEMA if k != "map_id"]).cast(
        {k: v for k, v in POOL_SCHEMA.items() if k != "map_id"}) for f in frames]).unique(KEY, keep="first")
    maps = maps.sort(KEY).with_row_index("map_id").with_columns(pl.col("map_id").cast(pl.Int32))
    if PASSES_PATH.exists() and POOL_PATH.exists():
        raise SystemExit(f"{PASSES_PATH} exists: labels refer to map_ids of the current pool; "
                         "delete passes.parquet first if you really mean to rebuild the pool")
    _write(maps.select(POOL_SCHEMA.keys()), POOL_PATH)
    print(f"{maps.height} maps in {POOL_PATH}: " + ", ".join(
        f"{k} {c}" for k, c in maps["kind"].value_counts().sort("kind").iter_rows()))
    return 0


def reference(args) -> int:
    """Draw one strip of reference maps per class for GUIDE.md (maps not in the pool)."""
    from PIL import Image, ImageDraw

    refs = _reference_keys(pl.read_parquet(LABELS_PATH))
    REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
    for pattern in PATTERNS:
        rows = refs.filter(pl.col("pattern") == pattern).to_dicts()
        panels = [draw_panel(np.asarray(r["weights"], np.float32).reshape(r["seq_len"], r["seq_len"]),
                             np.asarray(r["segment_ids"]), size=args.size) for r in rows]
        sheet = Image.new("RGB", (len(panels) * (args.size + 12), args.size + 30), (235, 235, 235))
        draw = ImageDraw.Draw(sheet)
        for i, (panel, row) in enumerate(zip(panels, rows)):
            sheet.paste(panel, (i * (args.size + 12) + 4, 20))
            draw.text((i * (args.size + 12) + 4, 4), f"n={row['seq_len']}  {row['n_segments']} sent", fill="black")
        sheet.save(REFERENCE_DIR / f"{pattern.replace('+', '_')}.png")
    print(f"reference images in {REFERENCE_DIR}")
    return 0


# ----------------------------------------------------------------------------- render / record
def _order(pass_number: int, n_maps: int) -> np.ndarray:
    """Map ids in pass `pass_number`'s own shuffled order (so no two passes see the same grids)."""
    return np.random.default_rng(1000 + pass_number).permutation(n_maps)


def _grid_ids(pass_number: int, grid: int) -> list[int]:
    n_maps = pl.scan_parquet(POOL_PATH).select(pl.len()).collect().item()
    return [int(i) for i in _order(pass_number, n_maps)[grid * GRID_SIZE:(grid + 1) * GRID_SIZE]]


def _done_grids(pass_number: int) -> set[int]:
    if not PASSES_PATH.exists():
        return set()
    return set(pl.read_parquet(PASSES_PATH).filter(pl.col("pass") == pass_number)["grid"].unique().to_list())


def render(args) -> int:
    """Draw pass P's grid (the first one not recorded yet unless --grid) and print its path."""
    from PIL import Image, ImageDraw

    n_maps = pl.scan_parquet(POOL_PATH).select(pl.len()).collect().item()
    n_grids = -(-n_maps // GRID_SIZE)
    grid = args.grid
    if grid is None:
        todo = sorted(set(range(n_grids)) - _done_grids(args.pass_number))
        if not todo:
            print(f"pass {args.pass_number}: all {n_grids} grids recorded")
            return 0
        grid = todo[0]
    ids = _grid_ids(args.pass_number, grid)
    maps = pl.read_parquet(POOL_PATH).filter(pl.col("map_id").is_in(ids))
    by_id = {row["map_id"]: row for row in maps.iter_rows(named=True)}
    cols, size, pad = 6, args.size, 22
    width, height = size + 10, size + 8 + pad
    sheet = Image.new("RGB", (cols * width, -(-len(ids) // cols) * height), (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    for i, map_id in enumerate(ids):
        row = by_id[map_id]
        n = row["seq_len"]
        panel = draw_panel(np.asarray(row["weights"], np.float32).reshape(n, n), np.asarray(row["segment_ids"]), size=size)
        x, y = (i % cols) * width, (i // cols) * height
        sheet.paste(panel, (x + 4, y + pad - 4))
        draw.text((x + 4, y + 2), f"#{i + 1}  n={n}  {row['n_segments']} sent", fill="black")
    folder = GRIDS_DIR / f"pass{args.pass_number}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"grid{grid:02d}.png"
    sheet.save(path)
    print(f"{path}  (pass {args.pass_number}, grid {grid} of {n_grids - 1}, {len(ids)} panels)")
    return 0


def record(args) -> int:
    """Store the labels of one grid ("1=v 2=h ... 30=u"); a grid recorded again replaces its labels."""
    ids = _grid_ids(args.pass_number, args.grid)
    given = {}
    for item in " ".join(args.labels).replace(",", " ").split():
        panel, _, code = item.partition("=")
        if code not in VOTE_CODES:
            raise SystemExit(f"panel {panel}: label {code!r} is not one of {', '.join(VOTE_CODES)}")
        given[int(panel)] = VOTE_CODES[code]
    if sorted(given) != list(range(1, len(ids) + 1)):
        missing = sorted(set(range(1, len(ids) + 1)) - set(given))
        raise SystemExit(f"give one label per panel 1..{len(ids)}; missing {missing}, extra {sorted(set(given) - set(range(1, len(ids) + 1)))}")
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    new = pl.DataFrame([dict(map_id=map_id, **{"pass": args.pass_number}, labeller=args.labeller, label=given[panel],
                             grid=args.grid, panel=panel, labelled_at=now)
                        for panel, map_id in enumerate(ids, start=1)], schema=PASS_SCHEMA)
    old = pl.read_parquet(PASSES_PATH) if PASSES_PATH.exists() else new.clear()
    merged = pl.concat([old.join(new.select("map_id", "pass"), on=["map_id", "pass"], how="anti"), new])
    _write(merged.sort("pass", "grid", "panel"), PASSES_PATH)
    counts = new["label"].value_counts().sort("label")
    print(f"pass {args.pass_number} grid {args.grid}: {new.height} labels ("
          + ", ".join(f"{l} {c}" for l, c in counts.iter_rows()) + f"); pass has {len(_done_grids(args.pass_number))} grids")
    return 0


def status(args) -> int:
    n_maps = pl.scan_parquet(POOL_PATH).select(pl.len()).collect().item()
    n_grids = -(-n_maps // GRID_SIZE)
    for p in (1, 2, 3):
        done = _done_grids(p)
        print(f"pass {p}: {len(done)}/{n_grids} grids; next {min(set(range(n_grids)) - done, default='none')}")
    return 0


# ----------------------------------------------------------------------------- consensus
def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' κ of an (item, category) count matrix with the same number of raters per item."""
    raters = counts.sum(1)[0]
    p_category = counts.sum(0) / counts.sum()
    p_item = ((counts * (counts - 1)).sum(1)) / (raters * (raters - 1))
    p_bar, p_expected = p_item.mean(), (p_category ** 2).sum()
    return float((p_bar - p_expected) / (1 - p_expected))


def consensus_table(pool_maps: pl.DataFrame, passes: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """Per map: the votes, the majority label (≥ 2 of the passes, unsure votes not counted) or
    'ambiguous'; and the agreement between passes (maps every pass labelled)."""
    from sklearn.metrics import cohen_kappa_score

    wide = passes.pivot(on="pass", index="map_id", values="label")
    pass_columns = sorted(c for c in wide.columns if c != "map_id")
    votes = wide.select("map_id", *pass_columns).to_dicts()
    rows = []
    for row in votes:
        cast = [row[c] for c in pass_columns if row[c] not in (None, "unsure")]
        tally = {p: cast.count(p) for p in set(cast)}
        best = max(tally.values(), default=0)
        winners = [p for p, c in tally.items() if c == best]
        label = winners[0] if best >= 2 and len(winners) == 1 else "ambiguous"
        rows.append(dict(map_id=row["map_id"], votes=[row[c] for c in pass_columns], n_votes=len(cast),
                         agreeing=best, pattern=label))
    # the maps themselves stay in pool.parquet (join on map_id): data/ carries each map once
    table = pool_maps.drop("weights", "segment_ids").join(pl.DataFrame(rows, schema={"map_id": pl.Int32, "votes": pl.List(pl.String),
                                                      "n_votes": pl.Int8, "agreeing": pl.Int8,
                                                      "pattern": pl.String}), on="map_id")
    full = wide.drop_nulls()
    categories = [*PATTERNS, "unsure"]
    counts = np.array([[sum(r[c] == cat for c in pass_columns) for cat in categories]
                       for r in full.iter_rows(named=True)])
    agreement = {
        "passes": len(pass_columns), "maps": pool_maps.height, "maps_every_pass": full.height,
        "fleiss_kappa": fleiss_kappa(counts) if full.height else None,
        "cohen_kappa": {f"{a}-{b}": float(cohen_kappa_score(full[a], full[b]))
                        for i, a in enumerate(pass_columns) for b in pass_columns[i + 1:]},
        "all_agree": float(np.mean([len({r[c] for c in pass_columns}) == 1 for r in full.iter_rows(named=True)]))
        if full.height else None,
        "consensus_counts": dict(table["pattern"].value_counts().sort("pattern").iter_rows()),
    }
    return table, agreement


def consensus(args) -> int:
    table, agreement = consensus_table(pl.read_parquet(POOL_PATH), pl.read_parquet(PASSES_PATH))
    _write(table, CONSENSUS_PATH)
    tmp = AGREEMENT_PATH.with_suffix(".tmp")
    tmp.write_text(json.dumps(agreement, indent=2) + "\n")
    tmp.replace(AGREEMENT_PATH)
    print(json.dumps(agreement, indent=2))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pool", help="build the pool of maps to label")
    p.add_argument("--tasks", default="rte,mrpc,qnli,sst2,stsb")
    p.add_argument("--examples", type=int, default=8, help="dev examples per task")
    p.add_argument("--per-task-kind", type=int, default=16, help="new maps per task and kind")
    p.add_argument("--extra-model", action="append", help="NAME:FOLDER:TASK, maps of another model")
    p.add_argument("--seed", type=int, default=17)
    p = sub.add_parser("reference", help="draw the guide's reference images")
    p.add_argument("--size", type=int, default=160)
    for name, help_text in (("render", "draw a pass's next grid"), ("record", "record a grid's labels")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--pass", dest="pass_number", type=int, choices=(1, 2, 3), required=True)
        p.add_argument("--grid", type=int, default=None, required=name == "record")
        if name == "render":
            p.add_argument("--size", type=int, default=160)
        else:
            p.add_argument("--labeller", default="AI assistant (Claude), independent context")
            p.add_argument("labels", nargs="+", help='"1=v 2=h ..." (v, d, vd, b, h, u)')
    sub.add_parser("status", help="grids recorded per pass")
    sub.add_parser("consensus", help="majority labels and agreement")
    args = parser.parse_args(argv)
    commands = {"pool": pool, "reference": reference, "render": render, "record": record, "status": status,
                "consensus": consensus}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
