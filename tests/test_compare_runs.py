"""The Compare runs page (dashboard/pages/compare_runs.py) and its frames (dashboard/run_compare.py),
on synthetic runs of two shapes: cache_fixture's 6 layers × 4 heads at d_head 8 (tasks RTE, SST-2)
beside a run of 8 layers × 2 heads at d_head 12 with SST-2 only, made from another model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import cache_fixture
from cache_fixture import SEQ_LENS, figures, open_page, problems, write_run
from dashboard import run_compare
from dashboard.data import load_run
from dashboard.findings import findings
from precompute.store import RunFolder

WIDE_LAYERS, WIDE_HEADS, WIDE_D_HEAD = 8, 2, 12
WIDE_SHARE = sum(n <= WIDE_D_HEAD for n in SEQ_LENS) / len(SEQ_LENS)  # 5 of the 6 fixture lengths
NARROW_SHARE = sum(n <= cache_fixture.D_HEAD for n in SEQ_LENS) / len(SEQ_LENS)  # 2 of 6


def _write_wide_run(folder: Path) -> Path:
    """cache_fixture's run in another shape, with one task, from another model, without the attribute stage."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (("N_LAYERS", WIDE_LAYERS), ("N_HEADS", WIDE_HEADS), ("D_HEAD", WIDE_D_HEAD),
                            ("TASKS", ("sst2",))):
            patch.setattr(cache_fixture, name, value)
        write_run(folder, attributed=False, seed=5)
    RunFolder(folder).update_manifest({"model": "fixture-wide", "model_source": "fixture-wide"})
    return folder


@pytest.fixture(scope="module")
def compare_root(tmp_path_factory) -> Path:
    """minilm (6 × 4, d_head 8), unclassified (the same model, no pattern tables), wide (8 × 2, d_head 12)."""
    root = tmp_path_factory.mktemp("compare")
    write_run(root / "minilm", seed=0)
    write_run(root / "unclassified", classified=False, seed=1)
    _write_wide_run(root / "wide")
    return root


@pytest.fixture(scope="module")
def runs(compare_root) -> dict:
    return {name: load_run(name, str(compare_root / name)) for name in ("minilm", "unclassified", "wide")}


@pytest.fixture
def compare_env(monkeypatch, compare_root) -> Path:
    monkeypatch.setenv("EFFATTN_DATA", str(compare_root))
    return compare_root


# ---- run_compare -----------------------------------------------------------------------------

def test_the_default_partner_is_the_first_run_of_another_model(runs):
    assert run_compare.default_partner(runs["minilm"], [runs["unclassified"], runs["wide"]]).name == "wide"
    assert run_compare.default_partner(runs["minilm"], [runs["unclassified"]]).name == "unclassified"
    assert run_compare.default_partner(runs["minilm"], []) is None


def test_tasks_the_second_run_lacks_are_dropped_and_named(runs):
    split = run_compare.split_tasks(("rte", "sst2"), runs["wide"])
    assert split == run_compare.TaskSplit(common=("sst2",), dropped=("rte",))
    note = run_compare.dropped_note(split, runs["wide"])
    assert "RTE" in note and "wide has no results for it" in note
    assert run_compare.dropped_note(run_compare.split_tasks(("sst2",), runs["wide"]), runs["wide"]) is None


def test_the_share_of_n_le_d_head_follows_the_example_lengths_and_d_head(runs, tmp_path):
    (short,) = run_compare.short_inputs(runs["wide"], ("sst2",)).iter_rows(named=True)
    assert short == {"task": "sst2", "n_eval": len(SEQ_LENS), "d_head": WIDE_D_HEAD, "share_le_d_head": WIDE_SHARE}
    assert run_compare.short_inputs(runs["minilm"], ("sst2",))["share_le_d_head"].to_list() == [NARROW_SHARE]
    # without task_summary (no analyse stage yet), counted from the examples' lengths
    copy = Path(shutil.copytree(runs["wide"].location, tmp_path / "wide"))
    shutil.rmtree(copy / "task_summary")
    counted = run_compare.short_inputs(load_run("wide", str(copy)), ("sst2",))
    assert counted.row(0, named=True) == short


def test_the_pooled_share_weights_each_task_by_its_examples():
    import polars as pl

    shorts = pl.DataFrame({"task": ["rte", "sst2"], "n_eval": [2, 6], "d_head": [8, 8], "share_le_d_head": [0.5, 1.0]})
    assert run_compare.pooled_share(shorts) == pytest.approx(7 / 8)
    assert run_compare.pooled_share(shorts.clear()) is None


def test_facts_have_one_column_per_run_with_its_shape_and_short_inputs(runs):
    table = run_compare.facts([runs["minilm"], runs["wide"]], ("sst2",))
    assert table.columns == ["fact", "minilm", "wide"]
    facts = {row[0]: row[1:] for row in table.iter_rows()}
    assert facts["model"] == ("fixture-minilm", "fixture-wide")
    assert facts["layers × heads"] == ("6 × 4", f"{WIDE_LAYERS} × {WIDE_HEADS}")
    assert facts["d_head"] == ("8", str(WIDE_D_HEAD))
    assert facts["SST-2: share with n ≤ d_head"] == (f"{NARROW_SHARE:.1%}", f"{WIDE_SHARE:.1%}")
    assert facts["SST-2: dev result"] == ("accuracy 0.800 (effective 0.700)",) * 2  # cache_fixture's metrics


def test_findings_join_on_the_claim_with_a_column_per_run(runs):
    minilm, wide = runs["minilm"], runs["wide"]
    table = run_compare.findings_side_by_side([minilm, wide], ("sst2",))
    assert table.columns == ["claim", "paper", "minilm", "wide"]
    assert table["claim"].n_unique() == table.height
    for run in (minilm, wide):  # every claim of a run, with its verdict and number, under that run's column
        for claim, _, ours, verdict in findings(run, ("sst2",)).iter_rows():
            if "d_head =" in claim:
                continue
            (cell,) = table.filter(claim=claim)[run.name]
            assert cell == f"{verdict}: {ours}"
    attribution = table.filter(claim="Attention differs markedly from gradient attribution (mixing of context)")
    assert attribution["wide"].to_list() == [run_compare.MISSING]  # wide has no attribute stage
    assert attribution["minilm"][0] != run_compare.MISSING
    (short,) = table.filter(claim="Share of examples with n ≤ d_head (effective = standard there)").iter_rows(named=True)
    assert short["minilm"].endswith("(d_head 8)") and short["wide"].endswith(f"(d_head {WIDE_D_HEAD})")
    assert f"{WIDE_SHARE:.0%}" in short["wide"] and f"{NARROW_SHARE:.0%}" in short["minilm"]


def test_side_by_side_panels_alternate_runs_each_on_its_own_layer_axis(runs):
    minilm, wide = runs["minilm"], runs["wide"]
    kinds = ("standard", "effective")
    parts = [(run, run.name, run_compare.special_token_summary(run, "sst2", kinds, "cls_weight")) for run in (minilm, wide)]
    grid = run_compare.side_by_side(parts, "mean", kinds, rows="layer", measure="weight on [CLS]",
                                    row_values=[list(range(run.n_layers)) for run in (minilm, wide)])
    assert [panel.label for panel in grid.panels] == ["minilm", "wide"] * 3  # standard, effective, their difference
    assert grid.row_titles[-1].endswith("− standard A")
    assert [len(panel.y) for panel in grid.panels[:2]] == [6, WIDE_LAYERS]
    assert [len(panel.x) for panel in grid.panels[:2]] == [4, WIDE_HEADS]
    assert set(grid.table["run"]) == {"minilm", "wide"}


def test_the_top_of_stacked_bars_counts_the_error_bar_above_the_stack():
    import plotly.graph_objects as go

    fig = go.Figure([go.Bar(x=["RTE", "SST-2"], y=[60.0, 10.0]),
                     go.Bar(x=["RTE", "SST-2"], y=[30.0, 20.0], error_y={"type": "data", "array": [25.0, 1.0]})])
    assert run_compare.bar_top(fig.update_layout(barmode="stack")) == pytest.approx(115.0)
    assert run_compare.bar_top(go.Figure([go.Bar(x=["RTE"], y=[40.0])])) == 100.0  # shares: never below 100 %


def test_a_missing_table_names_the_stage_that_makes_it(runs):
    hint = run_compare.stage_hint(runs["unclassified"], "pattern_shares", ("rte", "sst2"))
    assert "unclassified has no pattern_shares rows for RTE, SST-2" in hint
    assert "the analyse stage" in hint and "--stages analyse" in hint


# ---- the page --------------------------------------------------------------------------------

@pytest.mark.usefixtures("compare_env")
def test_page_compares_with_another_model_by_default_on_the_common_tasks():
    at = open_page("compare_runs", query={"run": "minilm"})
    assert problems(at) == []
    assert at.selectbox(key="vs").value == "wide" and at.selectbox(key="vs").proto.query_param_key == "vs"
    assert any("Not compared: RTE" in info.value for info in at.info)
    assert at.dataframe[0].value.columns.tolist() == ["fact", "minilm", "wide"]
    assert at.table[0].value.columns.tolist() == ["claim", "paper", "minilm", "wide"]
    patterns_minilm, patterns_wide, token_types, special = figures(at)
    assert patterns_minilm["layout"]["title"]["text"].startswith(f"minilm · d_head 8 · n ≤ d_head {NARROW_SHARE:.0%}")
    assert patterns_wide["layout"]["title"]["text"].startswith(f"wide · d_head {WIDE_D_HEAD} · n ≤ d_head {WIDE_SHARE:.0%}")
    assert patterns_minilm["layout"]["yaxis"]["range"] == patterns_wide["layout"]["yaxis"]["range"]
    titles = [note["text"] for note in special["layout"]["annotations"]]
    assert f"wide · d_head {WIDE_D_HEAD} · n ≤ d_head {WIDE_SHARE:.0%}" in titles
    standard_minilm, standard_wide = special["data"][:2]
    assert len(standard_minilm["y"]) == 6 and len(standard_wide["y"]) == WIDE_LAYERS  # each its own layers
    assert standard_minilm["zmax"] == standard_wide["zmax"]  # one colour scale over both runs
    assert any(f"layer {WIDE_LAYERS - 1}" in note["text"] for note in token_types["layout"]["annotations"])
    assert any("own layer axis" in caption.value for caption in at.caption)


@pytest.mark.usefixtures("compare_env")
def test_the_second_run_comes_from_the_url():
    at = open_page("compare_runs", query={"run": "minilm", "vs": "unclassified"})
    assert at.selectbox(key="vs").value == "unclassified"
    assert at.dataframe[0].value.columns.tolist() == ["fact", "minilm", "unclassified"]


@pytest.mark.usefixtures("compare_env")
def test_the_same_run_twice_is_a_warning_and_the_default_is_shown():
    at = open_page("compare_runs", query={"run": "minilm", "vs": "minilm"})
    assert problems(at) == []
    (warning,) = [w.value for w in at.warning]
    assert "?vs=minilm is the sidebar's run itself" in warning and "showing wide" in warning


@pytest.mark.usefixtures("compare_env")
def test_no_common_task_is_a_warning():
    at = open_page("compare_runs", query={"run": "minilm", "task": "rte", "vs": "wide"})
    assert problems(at) == []
    assert any("no task in common" in w.value and "SST-2" in w.value for w in at.warning)
    assert figures(at) == [] and len(at.table) == 0


@pytest.mark.usefixtures("compare_env")
def test_a_run_without_pattern_tables_names_the_stage_that_makes_them():
    at = open_page("compare_runs", query={"run": "minilm", "vs": "unclassified"})
    assert problems(at) == []
    assert any(w.value.startswith("unclassified has no pattern_shares rows") and "analyse stage" in w.value
               for w in at.warning)
    assert len(figures(at)) == 3  # minilm's pattern shares, and both per-head figures


def test_only_one_run_says_how_to_make_another(run_dir):
    at = open_page("compare_runs")
    assert problems(at) == []
    (info,) = [i.value for i in at.info]
    assert info.startswith("Only one run (minilm)") and "python -m precompute" in info and "--out data/<name>" in info
    assert at.dataframe[0].value.columns.tolist() == ["fact", "minilm"]
