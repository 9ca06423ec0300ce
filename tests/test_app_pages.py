"""AppTest per dashboard page on fixture caches, asserting on the charts' data (figure spec JSON)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from cache_fixture import D_HEAD, N_HEADS, N_LAYERS, PAGES, chart_configs, figures, open_page, problems
from dashboard.kinds import difference, label
from dashboard.pattern_views import clicked_cell
from precompute.schema import KINDS
from precompute.store import RunFolder



pytestmark = pytest.mark.usefixtures("fixture_caches_env")



@pytest.mark.parametrize("name", PAGES)
def test_page_renders_every_chart_with_csv_and_image_options(name):
    at = open_page(name)
    assert problems(at) == []
    configs = chart_configs(at)
    assert configs, f"{name} draws no chart"
    assert len(at.download_button) >= len(configs)
    assert all(config["toImageButtonOptions"]["format"] == "svg" for config in configs)


def test_image_format_follows_the_sidebar():
    at = open_page("cost", query={"image_format": "PNG"})
    assert {config["toImageButtonOptions"]["format"] for config in chart_configs(at)} == {"png"}


def test_overview_shows_manifest_findings_and_headline_metrics():
    at = open_page("overview")
    assert [m.value for m in at.metric][:3] == ["fixture-minilm", f"{N_LAYERS} × {N_HEADS}", str(D_HEAD)]
    findings = at.table[0].value
    assert "Effective attention shows fewer vertical patterns" in findings["claim"].tolist()
    assert any("2.10" in ours for ours in findings["ours"])  # 21 s / 10 s in the fixture metrics
    bars = figures(at)[0]["data"]
    assert [trace["name"] for trace in bars] == [label("standard"), label("effective")]  # the kinds evaluated
    assert bars[0]["y"] == [0.8, 0.8] and bars[1]["y"] == [0.7, 0.7]  # accuracy, the headline of RTE and SST-2


def test_patterns_table2_puts_the_papers_numbers_beside_ours():
    at = open_page("patterns")
    shares = figures(at)[0]
    vertical = [trace for trace in shares["data"] if trace["name"] == "vertical"]
    standard = vertical[0]
    assert standard["x"][1] == ["ours", "paper", "ours", "paper"]
    assert standard["y"][1] == pytest.approx(27.9)  # paper, RTE, standard, V
    assert 0 < standard["y"][0] < 100


def test_patterns_grid_has_one_square_per_selected_head_and_kind():
    at = open_page("patterns", query={"layer": ["1", "2"], "head": ["0", "3"]})
    grid = figures(at)[2]
    cells = {(t["customdata"][i][0], y, x) for t in grid["data"] for i, (x, y) in enumerate(zip(t["x"], t["y"]))}
    assert len(cells) == 2 * 2 * len(KINDS)
    assert {layer for _, layer, _ in cells} == {1, 2} and {head for _, _, head in cells} == {0, 3}


def test_patterns_example_maps_are_of_the_chosen_class_and_kind():
    at = open_page("patterns", query={"pt_class": "block", "pt_kind": "effective", "pt_layer": "3"})
    maps = figures(at)[3]
    titles = [trace["name"] for trace in maps["data"]]
    assert titles and all("L3" in title for title in titles)
    assert all(trace["zmid"] == 0 for trace in maps["data"])  # effective maps on a diverging scale
    links = [link.proto.page for link in at.get("page_link")]
    assert links and all(link.endswith("explorer") for link in links)


def test_patterns_show_the_classifiers_measured_f1_and_confusion_matrix():
    at = open_page("patterns")
    assert [m.value for m in at.metric][:4] == ["0.800", "0.750", "0.850", "0.820"]
    (confusion,) = figures(at)[1]["data"]
    assert confusion["name"] == "confusion (count of maps)"
    assert [confusion["z"][i][i] for i in range(5)] == [16.0] * 5


def test_clicked_grid_square_is_read_from_the_selection_event():
    event = {"selection": {"points": [{"x": 2, "y": 5, "customdata": ["effective", "block", 0.4]}]}}
    assert clicked_cell(event) == ("effective", 5, 2, "block")
    assert clicked_cell({"selection": {"points": []}}) is None


def test_patterns_say_not_classified_yet_when_pattern_columns_are_null():
    at = open_page("patterns", query={"run": "unclassified"})
    assert problems(at) == []
    assert any("not classified yet" in info.value for info in at.info)
    assert figures(at) == []


def test_token_types_show_the_final_layer_by_default_with_head_summary_values(fixture_caches):
    at = open_page("token_types")
    heatmaps = figures(at)[0]["data"]
    # the paper's grid, row by row: one row per kind, then one per kind − standard; tasks across
    assert [t["name"] for t in heatmaps] == ([f"{task} · {label(kind)}" for kind in KINDS for task in ("RTE", "SST-2")]
                                             + [f"{task} · {difference(kind)}" for kind in KINDS[1:]
                                                for task in ("RTE", "SST-2")])
    summary = RunFolder(fixture_caches / "minilm").scan("head_summary").filter(
        (pl.col("task") == "rte") & (pl.col("kind") == "standard") & (pl.col("layer") == N_LAYERS - 1)
        & (pl.col("measure") == "cls_row_sep")).sort("head").collect()
    sep_row = heatmaps[0]["y"].index("[SEP]")
    assert heatmaps[0]["z"][sep_row] == pytest.approx(summary["mean"].to_list())


def test_token_types_can_average_over_tasks_at_another_layer():
    at = open_page("token_types", query={"tt_view": "averaged over tasks", "tt_layer": "2"})
    heatmaps = figures(at)[0]["data"]
    assert [t["name"] for t in heatmaps] == ([f"all selected · {label(kind)}" for kind in KINDS]
                                             + [f"all selected · {difference(kind)}" for kind in KINDS[1:]])
    assert "layer2" in at.download_button[0].proto.label


def test_special_tokens_difference_is_effective_minus_standard():
    at = open_page("special_tokens", query={"kind": ["standard", "effective"]})
    cls_panels = figures(at)[0]["data"]
    tasks = ("RTE", "SST-2")
    assert [t["name"] for t in cls_panels] == [f"{task} · {name}" for name in (
        label("standard"), label("effective"), difference("effective")) for task in tasks]
    for column in range(len(tasks)):  # row by row: standard, effective, effective − standard
        standard, effective, diff = (np.array(cls_panels[row * len(tasks) + column]["z"], dtype=float) for row in range(3))
        np.testing.assert_allclose(diff, effective - standard, atol=1e-12)
        diff_panel = cls_panels[2 * len(tasks) + column]
        assert diff_panel["zmid"] == 0 and diff_panel["zmin"] == -diff_panel["zmax"]


def test_finetuning_lines_carry_the_spread_across_examples():
    at = open_page("finetuning")
    lines = figures(at)[0]["data"]
    assert len(lines) == 2 * len(KINDS)  # tasks x kinds
    assert all(len(line["error_y"]["array"]) == N_LAYERS for line in lines)
    spread = open_page("finetuning", query={"ft_stat": "IQR", "task": "sst2"})
    grid = figures(spread)[1]
    assert [t["name"] for t in grid["data"]] == ([f"SST-2 · {label(kind)}" for kind in KINDS]
                                                 + [f"SST-2 · {difference(kind)}" for kind in KINDS[1:]])
    assert grid["layout"]["title"]["text"].startswith("IQR")  # the statistic shown, named in the exported figure


def test_explorer_null_component_is_standard_minus_effective_on_one_shared_diverging_scale():
    at = open_page("explorer", query={"ex_example": "1", "ex_layer": "2", "ex_head": "1"})
    standard, effective, null = figures(at)[0]["data"][:3]
    np.testing.assert_allclose(np.array(null["z"]), np.array(standard["z"]) - np.array(effective["z"]), atol=1e-6)
    scales = {(trace["zmin"], trace["zmax"], trace["zmid"], str(trace["colorscale"])) for trace in (standard, effective, null)}
    assert len(scales) == 1 and standard["zmid"] == 0 and standard["zmin"] == -standard["zmax"]
    assert len(set(standard["x"])) == len(standard["x"]) == 12  # unique labels, both sentences
    assert any(label.split(" ", 1)[1].startswith("B:") for label in standard["x"])
    assert not any("identical" in info.value for info in at.info)


def test_explorer_notes_that_effective_equals_standard_when_n_le_d_head():
    at = open_page("explorer", query={"ex_example": "0"})
    assert any("identical to standard" in info.value for info in at.info)


def test_cost_puts_ours_beside_the_papers_table3():
    at = open_page("cost")
    table = at.dataframe[0].value
    assert table["paper standard"].tolist() == ["0:29", "1:41"] and table["paper effective"].tolist() == ["0:58", "3:20"]
    assert table["ours standard"].tolist() == ["0:10", "0:10"] and table["ours ratio"].tolist() == pytest.approx([2.1, 2.1])
    ratio = figures(at)[0]["data"]
    assert [t["name"] for t in ratio] == ["ours", "paper"]


def test_pattern_verdicts_split_direction_from_size():
    from dashboard.findings import FAILS, HOLDS, size_verdict

    assert size_verdict(0.009, 0.20) == "direction holds, size 1/22 of the paper's"  # 3.3 % → 4.2 % vs 11 % → 31 %
    assert size_verdict(0.12, 0.20) == HOLDS
    assert size_verdict(-0.01, 0.20) == FAILS and size_verdict(0.0, 0.20) == FAILS


def test_the_papers_pattern_numbers_are_over_the_selected_tasks():
    from dashboard import paper

    assert paper.table2_tasks(("rte", "sst2")) == ("rte", "sst2")
    assert paper.table2_tasks(("nosuch",)) == tuple(paper.TABLE2_PERCENT)
    subset = paper.table2_mean("effective", "block", ("rte",))
    assert subset == paper.table2_share("rte", "effective", "block")
