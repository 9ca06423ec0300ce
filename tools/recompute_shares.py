"""Recompute only the pattern_shares table of finished runs, with the issue-17 intervals.

Runs that have head_measures (data/minilm) get their shares recomputed from the per-map labels
and corrected with the held-out confusion of the classifier that labelled them
(data/pattern_labels/classifier_eval.parquet, classifier 'caches'). Runs without head_measures
(the sparse runs data/minilm-*) keep their shares; the interval columns are added as nulls so the
table matches the schema. Every part is written atomically through precompute.store.

    python tools/recompute_shares.py                 # data/minilm and data/minilm-*
    python tools/recompute_shares.py data/minilm     # one run
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from precompute import PrecomputeError  # noqa: E402
from precompute.analyse import pattern_shares, with_intervals  # noqa: E402
from precompute.schema import TABLES  # noqa: E402
from precompute.share_intervals import CACHE_CLASSIFIER, DEFAULT_CLASSIFIER_EVAL  # noqa: E402
from precompute.store import RunFolder, Shard  # noqa: E402


def recompute(run: RunFolder, classifier_eval: Path) -> str:
    """Rewrite run's pattern_shares parts; -> one line saying what was done."""
    tasks = sorted(p.name.removeprefix("task=") for p in (run.root / "pattern_shares").glob("task=*"))
    with_measures = [t for t in tasks if run.part_files("head_measures", [t])]
    for task in tasks:
        if task in with_measures:
            measures = run.scan("head_measures", [task])
            # data/minilm's maps were labelled by the issue-4 classifier: correct with its confusion
            shares = with_intervals(pattern_shares(measures).collect(), measures, classifier_eval,
                                    classifier=CACHE_CLASSIFIER)
        else:  # no per-map labels to bootstrap: keep the shares, intervals stay null
            old = pl.concat([pl.read_parquet(p) for p in run.part_files("pattern_shares", [task])])
            shares = old.select("task", "kind", "pattern", "share", "n_maps")
        shares = shares.with_columns(pl.lit(None, dtype).alias(name) for name, dtype in
                                     TABLES["pattern_shares"].items() if name not in shares.columns)
        for stale in run.part_files("pattern_shares", [task]):
            if stale.name != "part-00000-of-00001-00000.parquet":
                stale.unlink()  # analyse writes one part per task; never leave two
        run.write_part("pattern_shares", task, shares, shard=Shard(), chunk=0)
    return (f"{run.root}: {len(with_measures)} tasks with intervals, "
            f"{len(tasks) - len(with_measures)} without (no head_measures)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders (default: data/minilm*)")
    parser.add_argument("--classifier-eval", type=Path, default=DEFAULT_CLASSIFIER_EVAL)
    args = parser.parse_args(argv)
    runs = args.runs or sorted((REPO / "data").glob("minilm*"))
    try:
        for root in runs:
            print(recompute(RunFolder(root), args.classifier_eval))
    except PrecomputeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
