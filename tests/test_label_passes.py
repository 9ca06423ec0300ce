"""tools/label_passes.py: Fleiss' κ, the majority rule, and the shipped consensus labels (issue 17)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDER = REPO / "data" / "pattern_labels"


@pytest.fixture(scope="module")
def tool():
    sys.path.insert(0, str(REPO / "tools"))
    spec = importlib.util.spec_from_file_location("label_passes", REPO / "tools" / "label_passes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fleiss_kappa_matches_the_worked_example_and_the_extremes(tool):
    # Fleiss (1971) as worked in Wikipedia's "Fleiss' kappa": 10 items, 14 raters, 5 categories -> 0.210
    counts = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                       [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert tool.fleiss_kappa(counts) == pytest.approx(0.210, abs=5e-4)
    assert tool.fleiss_kappa(np.array([[3, 0], [0, 3], [3, 0]])) == pytest.approx(1.0)


def test_majority_needs_two_votes_and_unsure_is_no_vote(tool):
    pool = pl.DataFrame({"map_id": [0, 1, 2, 3], "weights": [[1.0]] * 4, "segment_ids": [[0]] * 4},
                        schema_overrides={"map_id": pl.Int32})
    votes = {0: ["vertical", "vertical", "diagonal"], 1: ["vertical", "diagonal", "block"],
             2: ["unsure", "unsure", "diagonal"], 3: ["block", "unsure", "block"]}
    passes = pl.DataFrame([{"map_id": m, "pass": p + 1, "label": label}
                           for m, labels in votes.items() for p, label in enumerate(labels)],
                          schema={"map_id": pl.Int32, "pass": pl.Int8, "label": pl.String})
    table, agreement = tool.consensus_table(pool, passes)
    assert dict(zip(table["map_id"], table["pattern"])) == {0: "vertical", 1: "ambiguous", 2: "ambiguous", 3: "block"}
    assert "weights" not in table.columns  # the maps stay in pool.parquet
    assert agreement["passes"] == 3 and agreement["maps_every_pass"] == 4


def test_shipped_consensus_has_three_blind_passes_over_every_kind_and_task():
    pool = pl.read_parquet(FOLDER / "pool.parquet", columns=["map_id", "kind", "task", "model"])
    passes = pl.read_parquet(FOLDER / "passes.parquet")
    consensus = pl.read_parquet(FOLDER / "consensus.parquet")
    assert pool.height >= 800 and consensus.height == pool.height
    assert passes.group_by("map_id").agg(pl.col("pass").n_unique())["pass"].min() == 3
    assert set(pool["kind"]) == {"standard", "effective", "norm", "effective_norm", "efficient"}
    assert set(pool["task"]) == {"rte", "mrpc", "qnli", "sst2", "stsb"}
    assert pool["model"].n_unique() > 1  # pretrained and fine-tuned
    ambiguous = consensus.filter(pl.col("pattern") == "ambiguous")
    assert (ambiguous["agreeing"] < 2).all() and (consensus.filter(pl.col("pattern") != "ambiguous")["agreeing"] >= 2).all()
