"""The colour-scale toggle and the paper-style task grids on the pages (AppTest on the fixture caches)."""

from __future__ import annotations

import numpy as np
import pytest

from cache_fixture import TASKS, figures, open_page, problems
from dashboard import kinds
from dashboard.paper import task_label
from precompute.schema import KINDS

pytestmark = pytest.mark.usefixtures("fixture_caches_env")
LABELS = [task_label(task) for task in TASKS]  # the fixture's tasks, already in the paper's order


def _z(trace: dict) -> np.ndarray:
    return np.array(trace["z"], dtype=float)


def _is_difference(trace: dict) -> bool:
    return " − " in trace["name"]


@pytest.mark.parametrize("page", ["token_types", "special_tokens", "finetuning"])
def test_grid_pages_put_tasks_in_columns_kinds_then_differences_in_rows_on_one_shared_scale(page):
    at = open_page(page)
    assert problems(at) == []
    assert at.button_group(key="scale").value == "shared" and at.button_group(key="scale").proto.query_param_key == "scale"
    grid = figures(at)[1 if page == "finetuning" else 0]  # finetuning: the per-layer lines come first
    names = [trace["name"] for trace in grid["data"]]
    expected = [f"{task} · {kinds.label(kind)}" for kind in KINDS for task in LABELS]
    expected += [f"{task} · {kinds.difference(kind)}" for kind in KINDS[1:] for task in LABELS]
    assert names == expected
    headings = [note["text"] for note in grid["layout"]["annotations"] if note["text"].startswith("<b>")]
    assert headings == [f"<b>{kinds.label(kind)}</b>" for kind in KINDS] + [f"<b>{kinds.difference(kind)}</b>"
                                                                          for kind in KINDS[1:]]
    weights = [trace for trace in grid["data"] if not _is_difference(trace)]
    differences = [trace for trace in grid["data"] if _is_difference(trace)]
    for group in (weights, differences):
        assert len({abs(trace["zmax"]) for trace in group}) == 1  # one bound per group
        assert all(trace["zmin"] <= np.nanmin(_z(trace)) and np.nanmax(_z(trace)) <= trace["zmax"] for trace in group)
    assert all(trace["zmid"] == 0 and trace["zmin"] == -trace["zmax"] for trace in differences)
    assert differences[0]["zmax"] != weights[0]["zmax"]  # the differences have their own range
    title = grid["layout"]["title"]["text"]
    assert all(task in title for task in LABELS) and kinds.label("effective") in title
    bars = [trace["colorbar"]["title"]["text"] for trace in grid["data"] if trace.get("showscale")]
    assert bars and all(bars) and any(bar.startswith("Δ") for bar in bars)


@pytest.mark.parametrize("page", ["token_types", "special_tokens", "finetuning"])
def test_per_panel_scale_fits_each_panel_on_its_own(page):
    at = open_page(page, query={"scale": "per panel"})
    assert problems(at) == []
    grid = figures(at)[1 if page == "finetuning" else 0]
    traces = grid["data"]
    assert all(trace["showscale"] for trace in traces)  # every panel its own colour bar
    assert len({(trace["zmin"], trace["zmax"]) for trace in traces}) > 2
    for trace in traces:
        z = _z(trace)
        top = np.nanmax(np.abs(z)) if trace.get("zmid") == 0 or trace["zmin"] == 0 else np.nanmax(z)
        assert trace["zmax"] == pytest.approx(top)


def test_finetuning_cosine_grid_fits_the_data_and_does_not_start_at_0():
    at = open_page("finetuning")
    grid = figures(at)[1]
    cosines = [trace for trace in grid["data"] if not _is_difference(trace)]
    low = min(np.nanmin(_z(trace)) for trace in cosines)
    assert low > 0.5 and all(trace["zmin"] == pytest.approx(low) for trace in cosines)
    assert all(trace.get("zmid") is None for trace in cosines)
    spread = figures(open_page("finetuning", query={"ft_stat": "IQR"}))[1]  # a spread: from 0
    assert all(trace["zmin"] == 0 for trace in spread["data"] if not _is_difference(trace))


def test_averaging_over_tasks_leaves_one_column():
    at = open_page("special_tokens", query={"sp_view": "averaged over tasks", "kind": ["standard", "effective"]})
    assert problems(at) == []
    names = [trace["name"] for trace in figures(at)[0]["data"]]
    assert names == [f"all selected · {kinds.label('standard')}", f"all selected · {kinds.label('effective')}",
                     f"all selected · {kinds.difference('effective')}"]


def test_special_tokens_csv_holds_the_drawn_differences():
    at = open_page("special_tokens", query={"kind": ["standard", "effective"]})
    csv = at.download_button[0].proto
    assert "cls_weight" in csv.label
    traces = figures(at)[0]["data"]
    standard, effective, difference = (_z(traces[i]) for i in (0, 2, 4))  # RTE column
    np.testing.assert_allclose(difference, effective - standard, atol=1e-12)


@pytest.mark.parametrize("page", ["attribution", "patterns"])
def test_other_pages_with_heatmaps_render_per_panel(page):
    at = open_page(page, query={"scale": "per panel"})
    assert problems(at) == []
    assert at.button_group(key="scale").value == "per panel"
    heatmaps = [trace for figure in figures(at) for trace in figure["data"] if trace.get("type") == "heatmap"]
    assert heatmaps and all(trace["showscale"] for trace in heatmaps)


def test_attribution_shows_each_kinds_difference_from_standard_on_a_symmetric_scale():
    at = open_page("attribution", query={"kind": ["standard", "effective"]})
    traces = figures(at)[0]["data"]
    assert [trace["name"] for trace in traces] == [kinds.label("standard"), kinds.label("effective"),
                                                  kinds.difference("effective")]
    np.testing.assert_allclose(_z(traces[2]), _z(traces[1]) - _z(traces[0]), atol=1e-12)
    assert traces[2]["zmid"] == 0 and traces[2]["zmin"] == -traces[2]["zmax"]


def test_sparse_zero_share_grid_is_a_share_from_0_with_each_kinds_difference_below(tmp_path, monkeypatch):
    from sparse_fixture import write_sparse_root

    monkeypatch.setenv("EFFATTN_DATA", str(write_sparse_root(tmp_path)))
    at = open_page("sparse", query={"scale": "per panel", "kind": ["standard", "effective"]})
    assert problems(at) == []
    grid = next(figure for figure in figures(at) if figure["data"][0].get("type") == "heatmap")
    standard, effective, difference = grid["data"]  # the kinds across, the difference under effective
    assert [trace["name"].split(" · ")[1] for trace in grid["data"]] == [
        kinds.label("standard"), kinds.label("effective"), kinds.difference("effective")]
    for share in (standard, effective):  # a share of zeros: sequential from 0, whatever the kind
        assert share["zmin"] == 0 and share.get("zmid") is None
    assert difference["zmid"] == 0 and difference["zmin"] == -difference["zmax"]
    assert "zero" in grid["layout"]["title"]["text"]
