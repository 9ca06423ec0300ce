"""The Attribution page, the explorer's attribution map and Pascual et al.'s findings, on fixture caches;
numbers are recomputed here from the Parquet tables with polars."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import kendalltau

from cache_fixture import N_LAYERS, TASKS, figures, open_page, problems, write_run
from attribution_fixture import ATTRIBUTION_EXAMPLES
from dashboard.attribution_views import RECIPE, kendall_tau
from dashboard.kinds import difference, label
from precompute.schema import KINDS
from precompute.store import RunFolder

HOW_TO = "python -m precompute --stages attribute,analyse"


def _table(root, table: str) -> pl.DataFrame:
    return RunFolder(root / "minilm").scan(table).collect()


@pytest.fixture
def unattributed(tmp_path, monkeypatch):
    """A data folder with one run made before the attribute stage (none of its tables)."""
    write_run(tmp_path / "data" / "minilm", attributed=False)
    monkeypatch.setenv("EFFATTN_DATA", str(tmp_path / "data"))


def test_kendall_tau_matches_scipys_tau_b_with_ties():
    x, y = [0, 1, 2, 3, 4, 5], [0.3, 0.1, 0.1, 0.5, 0.9, 0.7]
    assert kendall_tau(x, y) == pytest.approx(kendalltau(x, y).statistic)
    assert kendall_tau(x, [1.0] * 6) is None


@pytest.mark.usefixtures("fixture_caches_env")
def test_heatmaps_show_every_kinds_mean_jsd_per_layer_and_head_on_one_scale(fixture_caches):
    at = open_page("attribution")
    assert problems(at) == []
    traces = figures(at)[0]["data"]
    # every kind in the first row, then each kind − standard
    assert [trace["name"] for trace in traces] == [label(kind) for kind in KINDS] + [difference(kind) for kind in KINDS[1:]]
    weights, differences = traces[:len(KINDS)], traces[len(KINDS):]
    expected = (_table(fixture_caches, "attribution_summary").filter(kind="standard", measure="jsd")
                .group_by("layer", "head").agg(pl.col("mean").mean()).sort("layer", "head"))
    z = np.array(traces[0]["z"], dtype=float)
    np.testing.assert_allclose(z.ravel(), expected["mean"].to_numpy(), rtol=1e-9)  # mean over both tasks
    assert len({trace["zmax"] for trace in weights}) == 1 and all(trace["zmin"] == 0 for trace in weights)
    assert all(trace["zmid"] == 0 and trace["zmin"] == -trace["zmax"] for trace in differences)
    assert f"{ATTRIBUTION_EXAMPLES} examples" in [metric.value for metric in at.metric]
    assert any("project-chosen definition" in caption.value for caption in at.caption)


@pytest.mark.usefixtures("fixture_caches_env")
def test_kendall_tau_heatmaps_are_diverging_for_one_task():
    at = open_page("attribution", query={"at_measure": "kendall_tau", "at_task": "rte"})
    assert problems(at) == []
    traces = figures(at)[0]["data"]
    assert all(trace["zmid"] == 0 and trace["zmin"] == -trace["zmax"] for trace in traces)
    assert at.subheader[0].value == "Kendall τ-b per layer × head"


@pytest.mark.usefixtures("fixture_caches_env")
def test_per_layer_lines_and_the_sentence_follow_the_summary(fixture_caches):
    at = open_page("attribution")
    lines = figures(at)[1]["data"]
    assert [line["name"] for line in lines] == [label(kind) for kind in KINDS]
    assert all(len(line["error_y"]["array"]) == N_LAYERS for line in lines)  # spread across heads
    heads = (_table(fixture_caches, "attribution_summary").filter(measure="jsd")
             .group_by("kind", "layer", "head").agg(pl.col("mean").mean()))
    layers = heads.group_by("kind", "layer").agg(pl.col("mean").mean()).sort("layer")
    standard = layers.filter(kind="standard")
    assert lines[0]["y"] == pytest.approx(standard["mean"].to_list())
    best = heads.group_by("kind").agg(pl.col("mean").mean()).sort("mean")["kind"][0]
    text = " ".join(md.value for md in at.markdown)
    assert f"**{label(best)}** agrees best with attribution" in text
    tau = kendalltau(standard["layer"].to_list(), standard["mean"].to_list()).statistic
    table = at.dataframe[0].value
    assert table["tau_layer"].iloc[0] == pytest.approx(tau)
    assert table["mismatch with depth"].iloc[0] == ("grows" if tau >= 0.5 else "no clear trend")


@pytest.mark.usefixtures("fixture_caches_env")
def test_influence_chart_shows_own_share_with_its_chance_level_and_entropy(fixture_caches):
    at = open_page("attribution")
    influence = figures(at)[2]
    assert [trace["name"] for trace in influence["data"]] == ["RTE", "RTE", "SST-2", "SST-2"]
    own = _table(fixture_caches, "influence_summary").filter(task="rte", measure="own_share").sort("layer")
    assert influence["data"][0]["y"] == pytest.approx(own["mean"].to_list())
    sizes = _table(fixture_caches, "layer_influence").filter(task="rte", layer=0)
    chance = [shape["y0"] for shape in influence["layout"]["shapes"]]
    assert chance[0] == pytest.approx((1 / sizes["seq_len"]).mean())


def test_a_run_without_attribution_tables_says_how_to_make_them(unattributed):
    at = open_page("attribution")
    assert problems(at) == []
    assert any(HOW_TO in info.value for info in at.info)
    assert figures(at) == []
    overview = open_page("overview")
    assert not any("attribution" in claim for claim in overview.table[0].value["claim"])
    explorer = open_page("explorer", query={"ex_example": "1"})
    assert problems(explorer) == []
    assert RECIPE not in [trace["name"] for trace in figures(explorer)[0]["data"]]


@pytest.mark.usefixtures("fixture_caches_env")
def test_explorer_shows_the_attribution_map_of_the_same_head(fixture_caches):
    at = open_page("explorer", query={"ex_example": "1", "ex_layer": "2", "ex_head": "1"})
    assert problems(at) == []
    traces = {trace["name"]: trace for trace in figures(at)[0]["data"]}
    stored = _table(fixture_caches, "attribution_maps").filter(task="rte", example_id=1, layer=2, head=1)
    n = stored["seq_len"][0]
    z = np.array(traces[RECIPE]["z"], dtype=float)
    np.testing.assert_allclose(z, np.array(stored["weights"][0]).reshape(n, n), atol=1e-6)
    assert traces[RECIPE].get("zmid") is None and traces[RECIPE]["zmin"] == 0  # a distribution: sequential
    assert len(traces[RECIPE]["x"]) == len(traces[label("standard")]["x"])


@pytest.mark.usefixtures("fixture_caches_env")
def test_findings_answer_pascual_et_al_with_numbers_from_attribution_summary(fixture_caches):
    table = open_page("overview").table[0].value
    rows = {claim: (ours, verdict) for claim, ours, verdict in zip(table["claim"], table["ours"], table["verdict"])}
    summary = _table(fixture_caches, "attribution_summary").filter(kind="standard")
    top1 = summary.filter(measure="top1_agreement")["mean"].mean()
    jsd = summary.filter(measure="jsd")["mean"].mean()
    ours, verdict = rows["Attention differs markedly from gradient attribution (mixing of context)"]
    assert f"mean JSD {jsd:.3f}, top-1 agreement {top1:.1%}" in ours
    assert f"{ATTRIBUTION_EXAMPLES * len(TASKS)} examples" in ours
    assert verdict == ("✓ holds" if top1 < 0.5 else "✗ does not hold")
    layers = summary.filter(measure="jsd").group_by("layer").agg(pl.col("mean").mean()).sort("layer")
    tau = kendalltau(layers["layer"].to_list(), layers["mean"].to_list()).statistic
    ours, verdict = rows["The mismatch grows with depth"]
    assert f"{tau:+.2f}" in ours and verdict == ("✓ holds" if tau >= 0.5 else "✗ does not hold")
    persist = next(claim for claim in rows if claim.startswith("Some patterns persist through all layers"))
    assert rows[persist][1] == "✓ holds" and f"in {N_LAYERS * len(TASKS)} of {N_LAYERS * len(TASKS)}" in rows[persist][0]
    ours, verdict = rows["Which kind agrees best with attribution (our question, no paper claim)"]
    best = (_table(fixture_caches, "attribution_summary").filter(measure="jsd").group_by("kind")
            .agg(pl.col("mean").mean()).sort("mean"))
    assert ours.startswith(f"mean JSD, best first: {label(best['kind'][0])} {best['mean'][0]:.3f}")
    assert verdict == "context"


def test_explorer_names_the_attributed_examples_when_this_one_has_none(run_dir):
    import polars as pl

    from cache_fixture import open_page, problems
    from precompute.store import RunFolder, Shard

    run = RunFolder(run_dir)
    maps = pl.read_parquet(run.part_files("attribution_maps", ["rte"]))
    kept = maps["example_id"].min()
    run.write_part("attribution_maps", "rte", maps.filter(pl.col("example_id") == kept), shard=Shard(), chunk=0)
    other = maps["example_id"].max()
    at = open_page("explorer", query={"task": "rte", "ex_task": "rte", "ex_example": str(other)})
    assert problems(at) == []
    assert any(f"stored for examples {kept} of rte" in caption.value for caption in at.caption)
