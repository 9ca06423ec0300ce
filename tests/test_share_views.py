"""Shares with intervals on the dashboard (dashboard/share_views.py)."""
import polars as pl
import pytest

from dashboard.pattern_views import table2_figure
from dashboard.share_views import (HOLDS, NOT_RESOLVED, REVERSED, add_error_bars, format_share, mean_difference,
                                   pattern_verdict, table2_intervals, table2_numbers)
from precompute.schema import PATTERNS


def shares_frame(with_intervals=True):
    rows = []
    for task in ("rte", "sst2"):
        for kind, base in (("standard", 0.4), ("effective", 0.3)):
            for i, pattern in enumerate(PATTERNS):
                share = base if pattern == "vertical" else (1 - base) / 4
                row = dict(task=task, kind=kind, pattern=pattern, share=share, n_maps=720, n_examples=10)
                if with_intervals:
                    diff = None if kind == "standard" else (-0.1 if pattern == "vertical" else 0.025)
                    row.update(share_adjusted=share + 0.01, share_low=share - 0.03, share_high=share + 0.05,
                               diff_adjusted=diff, diff_low=None if diff is None else diff - 0.04,
                               diff_high=None if diff is None else diff + 0.04)
                rows.append(row)
    return pl.DataFrame(rows)


def test_format_share_writes_percent_and_interval():
    assert format_share(0.312, 0.27, 0.355) == "31.2 % (27.0–35.5)"
    assert format_share(0.312) == "31.2 %"
    assert format_share(None) == "–"


@pytest.mark.parametrize("low, high, paper, verdict", [
    (-0.2, -0.05, -0.1, HOLDS), (0.05, 0.2, -0.1, REVERSED), (-0.1, 0.02, -0.1, NOT_RESOLVED),
    (0.01, 0.03, 0.02, HOLDS), (None, None, 0.1, NOT_RESOLVED)])
def test_pattern_verdict_compares_the_interval_with_the_papers_direction(low, high, paper, verdict):
    assert pattern_verdict(low, high, paper) == verdict


def test_table2_intervals_shows_corrected_share_with_interval_for_ours_only():
    table = table2_intervals(shares_frame(), ("rte",), ("standard", "effective"))
    ours = table.filter((pl.col("source") == "ours") & (pl.col("attention") == "standard"))
    assert ours["V"][0] == "41.0 % (37.0–45.0)"
    paper_rows = table.filter(pl.col("source") == "paper")
    assert paper_rows.height == 2 and "(" not in paper_rows["V"][0]


def test_table2_intervals_without_interval_columns_shows_raw_shares():
    table = table2_intervals(shares_frame(with_intervals=False), ("rte",), ("standard",))
    assert table.filter(pl.col("source") == "ours")["V"][0] == "40.0 %"


def test_error_bars_reach_the_interval_ends_on_our_bars_only():
    shares, kinds = shares_frame(), ("standard", "effective")
    table = table2_numbers(shares, ("rte", "sst2"), kinds)
    fig = add_error_bars(table2_figure(table, kinds), table, shares, kinds)
    vertical = [t for t in fig.data if t.legendgroup == "vertical" and (t.xaxis or "x") == "x"][0]
    sources = list(vertical.x[1])
    ours = sources.index("ours")
    assert vertical.error_y.array[ours] == pytest.approx(4.0)       # 45 % − 41 %
    assert vertical.error_y.arrayminus[ours] == pytest.approx(4.0)  # 41 % − 37 %
    assert vertical.error_y.array[sources.index("paper")] == 0.0


def test_mean_difference_combines_tasks_and_narrows_the_interval():
    mean, low, high = mean_difference(shares_frame(), "vertical")
    assert mean == pytest.approx(-0.1)
    assert high - low < 0.08  # each task's interval is 0.08 wide; two independent tasks narrow it
    assert mean_difference(shares_frame(with_intervals=False), "vertical") is None
