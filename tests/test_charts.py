"""The one colour rule of dashboard/charts.py: shared vs per-panel ranges, difference panels, fitted ranges,
self-describing figures and the paper-style task grid."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dashboard import charts, kinds
from dashboard.charts import DIFFERENCE, FITTED, PER_PANEL, SHARED, SIGNED, Panel

AXIS = [0, 1, 2]


def _panel(title: str, z, kind: str | None) -> Panel:
    return Panel(title, np.asarray(z, dtype=float), AXIS, AXIS[: len(z)], kind=kind)


def _weights_and_differences() -> list[Panel]:
    """Standard (0…0.2), effective (±0.13) and their difference, as on the shipped token-types page."""
    standard = np.array([[0.0, 0.1, 0.2], [0.05, 0.02, 0.01]])
    effective = np.array([[0.13, -0.1, 0.05], [-0.13, 0.02, 0.0]])
    return [_panel("standard", standard, "standard"), _panel("effective", effective, "effective"),
            _panel("difference", effective - standard, DIFFERENCE)]


def _covers(zrange: tuple[float, float], z: np.ndarray) -> bool:
    return zrange[0] <= np.nanmin(z) and np.nanmax(z) <= zrange[1]


def test_shared_range_covers_every_panels_data_and_is_one_bound_for_all_kinds():
    panels = _weights_and_differences()
    ranges = charts.colour_ranges(panels, SHARED)
    assert all(_covers(zrange, panel.z) for zrange, panel in zip(ranges, panels))
    (standard, effective, _) = ranges
    assert standard == (0.0, 0.2) and effective == (-0.2, 0.2)  # equal weights, equal strength of colour


def test_per_panel_ranges_fit_each_panel_and_differ_from_the_shared_ones():
    panels = _weights_and_differences()
    per_panel = charts.colour_ranges(panels, PER_PANEL)
    assert all(_covers(zrange, panel.z) for zrange, panel in zip(per_panel, panels))
    assert per_panel[1] == pytest.approx((-0.13, 0.13))  # effective on its own range, as the paper draws it
    assert per_panel[:2] != charts.colour_ranges(panels, SHARED)[:2]


def test_difference_panels_are_symmetric_around_0_on_their_own_shared_range():
    rng = np.random.default_rng(0)
    differences = [_panel(f"d{i}", rng.normal(0.3 * i, 0.1, (2, 3)), DIFFERENCE) for i in range(3)]
    panels = [*_weights_and_differences()[:2], *differences]
    ranges = charts.colour_ranges(panels, SHARED)
    bound = max(np.abs(panel.z).max() for panel in differences)
    assert all(zrange == pytest.approx((-bound, bound)) for zrange in ranges[2:])
    assert ranges[2] != ranges[1]  # not the kinds' range
    for zrange in charts.colour_ranges(panels, PER_PANEL)[2:]:
        assert zrange[0] == -zrange[1]
    figure = charts.heatmaps(panels, cols=2, scale=SHARED)
    assert all(trace.zmid == 0 and trace.zmin == -trace.zmax for trace in figure.data[2:])


def test_fitted_range_of_cosines_in_half_to_one_does_not_start_at_0():
    cosines = [_panel("standard", [[0.55, 0.9, 1.0]], FITTED), _panel("effective", [[0.62, 0.7, 0.95]], FITTED)]
    assert charts.colour_ranges(cosines, SHARED) == [(0.55, 1.0), (0.55, 1.0)]
    assert charts.colour_ranges(cosines, PER_PANEL)[1] == pytest.approx((0.62, 0.95))
    trace = charts.heatmaps(cosines).data[0]
    assert trace.zmin == pytest.approx(0.55) and trace.zmid is None


def test_shares_start_at_0_and_signed_values_are_symmetric():
    share, tau = _panel("top-1", [[0.4, 0.6]], None), _panel("τ", [[-0.2, 0.5]], SIGNED)
    assert charts.colour_ranges([share, tau], SHARED) == [(0.0, 0.6), (-0.5, 0.5)]


def test_empty_panels_and_cells_without_data_get_a_default_range():
    nothing = _panel("nothing", [[np.nan, np.nan]], "standard")
    assert charts.colour_ranges([None, nothing], SHARED) == [None, (0.0, 1.0)]


def test_an_unknown_scale_is_refused():
    with pytest.raises(ValueError, match="scale must be one of"):
        charts.colour_ranges(_weights_and_differences(), "global")


def test_shared_scale_draws_one_titled_colour_bar_per_colour_scale_of_a_group():
    panels = _weights_and_differences()
    figure = charts.heatmaps(panels, scale=SHARED, title="Attention to [SEP]<br><sup>RTE</sup>",
                             colorbar_title="weight on [SEP]")
    assert "Attention to [SEP]" in figure.layout.title.text
    bars = [trace.colorbar.title.text for trace in figure.data if trace.showscale]
    assert bars == ["weight on [SEP]", "weight on [SEP] (signed kinds)",
                    f"Δ weight on [SEP], kind − {kinds.label(kinds.BASE)}"]


def test_per_panel_scale_gives_every_panel_its_colour_bar_titled_in_the_last_column():
    figure = charts.heatmaps(_weights_and_differences(), cols=2, scale=PER_PANEL, colorbar_title="weight")
    assert all(trace.showscale for trace in figure.data)
    assert [trace.colorbar.title.text for trace in figure.data] == [None, "weight", None]


def test_the_older_shared_range_flag_still_means_the_shared_scale():
    panels = _weights_and_differences()
    assert [(t.zmin, t.zmax) for t in charts.heatmaps(panels, shared_range=True).data] == \
        charts.colour_ranges(panels, SHARED)
    assert [(t.zmin, t.zmax) for t in charts.heatmaps(panels).data] == charts.colour_ranges(panels, PER_PANEL)


def test_figure_title_names_the_measure_tasks_in_the_papers_order_and_kinds():
    title = charts.figure_title("Attention to [SEP]", ["stsb", "rte", "sst2"], ["standard", "effective"])
    assert title == (f"Attention to [SEP]<br><sup>RTE, SST-2, STS-B · {kinds.label('standard')}, "
                     f"{kinds.label('effective')}</sup>")


@pytest.fixture(scope="module")
def long_frame() -> pl.DataFrame:
    """task × kind × layer × head weights; sst2 first so that the grid has to reorder the tasks."""
    rng = np.random.default_rng(1)
    rows = [{"task": task, "kind": kind, "layer": layer, "head": head, "mean": float(rng.uniform(0, 0.5)),
             "n": 10, "measure": "sep_weight"} for task in ("sst2", "mrpc", "rte") for kind in ("standard", "effective", "norm")
            for layer in range(2) for head in range(3)]
    return pl.DataFrame(rows)


def test_kind_grid_puts_tasks_in_columns_in_the_papers_order_and_kinds_then_differences_in_rows(long_frame):
    grid = charts.kind_grid(long_frame, "mean", ("standard", "effective", "norm"), row_values=[0, 1],
                            col_values=[0, 1, 2], measure="weight", detail=("n",))
    assert grid.cols == 3
    titles = [panel.title for panel in grid.panels]
    assert titles[:3] == [f"{task} · {kinds.label('standard')}" for task in ("RTE", "MRPC", "SST-2")]
    assert titles[-1] == f"SST-2 · {kinds.difference('norm')}"
    assert len(titles) == 3 * (3 + 2)
    rte = long_frame.filter(task="rte")
    standard, effective = (rte.filter(kind=k).sort("layer", "head")["mean"].to_numpy().reshape(2, 3)
                           for k in ("standard", "effective"))
    difference = grid.panels[9]  # first difference row, first task
    assert difference.kind == DIFFERENCE and difference.title.startswith("RTE")
    np.testing.assert_allclose(difference.z, effective - standard)
    assert grid.panels[0].text[0][0] == "n 10"
    drawn = grid.table.filter(task="rte", kind="effective − standard").sort("layer", "head")
    np.testing.assert_allclose(drawn["mean"].to_numpy().reshape(2, 3), effective - standard)
    assert set(drawn["measure"]) == {"sep_weight"}  # a column constant over the figure says what the rows are


def test_kind_grid_without_standard_has_no_difference_rows_and_colours_by_the_given_rule(long_frame):
    grid = charts.kind_grid(long_frame, "mean", ("effective", "norm"), row_values=[0, 1], col_values=[0, 1, 2],
                            colour=FITTED)
    assert len(grid.panels) == 2 * 3 and {panel.kind for panel in grid.panels} == {FITTED}
    assert grid.table.filter(pl.col("kind").str.contains("−")).is_empty()
