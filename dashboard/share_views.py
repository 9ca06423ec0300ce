"""Pattern shares with their 95 % intervals, for the Patterns page and the Findings table (issue 17).

pattern_shares carries, besides the raw share, the share corrected for the classifier's errors
(share_adjusted), its interval (share_low/high) and the paired difference kind − standard with its
interval (diff_adjusted, diff_low/high); precompute/share_intervals.py says how they are made. Runs
analysed before issue 17, and the sparse runs (no per-map labels kept), have null interval columns:
every function here then falls back to the raw share without an interval.
"""
from __future__ import annotations

import math

import plotly.graph_objects as go
import polars as pl

from dashboard import paper
from dashboard.pattern_views import SHORT

HOLDS, REVERSED, NOT_RESOLVED = "holds", "reversed", "not resolved"
Z95 = 1.959964  # a 95 % interval is ± Z95 standard deviations under the normal approximation


def has_intervals(shares: pl.DataFrame) -> bool:
    return "share_low" in shares.columns and shares["share_low"].null_count() < shares.height


def format_share(share: float | None, low: float | None = None, high: float | None = None) -> str:
    """0.312, 0.27, 0.355 -> "31.2 % (27.0–35.5)"; without an interval just "31.2 %"."""
    if share is None or (isinstance(share, float) and math.isnan(share)):
        return "–"
    if low is None or high is None:
        return f"{100 * share:.1f} %"
    return f"{100 * share:.1f} % ({100 * low:.1f}–{100 * high:.1f})"


def _headline(shares: pl.DataFrame) -> pl.DataFrame:
    """share_shown/low/high: the corrected share and its interval where known, else the raw share."""
    if not has_intervals(shares):
        return shares.with_columns(share_shown=pl.col("share"), low=pl.lit(None, pl.Float64),
                                   high=pl.lit(None, pl.Float64))
    return shares.with_columns(share_shown=pl.coalesce("share_adjusted", "share"),
                               low=pl.col("share_low"), high=pl.col("share_high"))


def table2_intervals(shares: pl.DataFrame, tasks: tuple[str, ...], kinds: tuple[str, ...]) -> pl.DataFrame:
    """Table 2 as text: one row per task × kind × source, "31.2 % (27.0–35.5)" per class for ours
    (corrected share and 95 % interval), the paper's percentages beside them."""
    shown = _headline(shares)
    rows = []
    for task in tasks:
        for kind in kinds:
            ours = shown.filter((pl.col("task") == task) & (pl.col("kind") == kind))
            cells = {p: format_share(s, lo, hi) for p, s, lo, hi in ours.select("pattern", "share_shown", "low", "high").iter_rows()}
            rows.append({"task": paper.task_label(task), "attention": kind, "source": "ours",
                         "n_examples": ours["n_examples"].max() if "n_examples" in ours.columns and not ours.is_empty() else None,
                         **{SHORT[p]: cells.get(p, "–") for p in paper.TABLE2_PATTERNS}})
            if paper.table2_share(task, kind, paper.TABLE2_PATTERNS[0]) is not None:
                rows.append({"task": paper.task_label(task), "attention": kind, "source": "paper", "n_examples": None,
                             **{SHORT[p]: format_share(paper.table2_share(task, kind, p)) for p in paper.TABLE2_PATTERNS}})
    schema = {"task": pl.String, "attention": pl.String, "source": pl.String, "n_examples": pl.Int64,
              **{SHORT[p]: pl.String for p in paper.TABLE2_PATTERNS}}
    return pl.DataFrame(rows, schema=schema)


def table2_numbers(shares: pl.DataFrame, tasks: tuple[str, ...], kinds: tuple[str, ...]) -> pl.DataFrame:
    """The frame pattern_views.table2 would give, with ours = the corrected shares (where known),
    so that bars and error bars (add_error_bars) describe the same number."""
    from dashboard.pattern_views import table2

    return table2(_headline(shares).with_columns(share=pl.col("share_shown")), tasks, kinds)


def add_error_bars(fig: go.Figure, table: pl.DataFrame, shares: pl.DataFrame, kinds: tuple[str, ...]) -> go.Figure:
    """Error bars (95 %) on the 'ours' bars of pattern_views.table2_figure(table, kinds); the paper's
    bars get none. Traces are matched by their legend group (pattern) and panel (kind)."""
    if not has_intervals(shares):
        return fig
    shown = _headline(shares)
    label_to_task = {paper.task_label(t): t for t in shown["task"].unique().to_list()}
    for trace in fig.data:
        axis = trace.xaxis or "x"
        col = int(axis[1:] or 1)
        kind, pattern = kinds[col - 1], trace.legendgroup
        part = table.filter(pl.col("attention") == kind)
        plus, minus = [], []
        for task_label, source, value in zip(part["task"], part["source"], part[SHORT[pattern]]):
            row = shown.filter((pl.col("task") == label_to_task.get(task_label)) & (pl.col("kind") == kind)
                               & (pl.col("pattern") == pattern))
            if source != "ours" or row.is_empty() or row["low"][0] is None or value is None:
                plus.append(0.0), minus.append(0.0)
                continue
            plus.append(max(100 * row["high"][0] - value, 0.0))
            minus.append(max(value - 100 * row["low"][0], 0.0))
        trace.error_y = dict(type="data", array=plus, arrayminus=minus, visible=True, thickness=1, width=3)
    return fig


def pattern_verdict(diff_low: float | None, diff_high: float | None, paper_difference: float) -> str:
    """Our interval of effective − standard against the paper's direction: 'holds' when the whole
    interval lies on the paper's side of 0, 'reversed' when it lies on the other side, 'not resolved'
    when it contains 0 (or is unknown)."""
    if diff_low is None or diff_high is None or paper_difference == 0 or diff_low <= 0 <= diff_high:
        return NOT_RESOLVED
    ours_positive = diff_low > 0
    return HOLDS if ours_positive == (paper_difference > 0) else REVERSED


def mean_difference(shares: pl.DataFrame, pattern: str, *, kind: str = "effective") -> tuple[float, float, float] | None:
    """(mean, low, high) over the tasks in `shares` of the corrected difference kind − standard of
    one class. The tasks' examples are independent samples, so their bootstrap intervals combine
    as normal ones (sd = interval width / (2 · Z95)); None without intervals."""
    rows = shares.filter((pl.col("kind") == kind) & (pl.col("pattern") == pattern))
    if not has_intervals(shares) or rows.is_empty() or rows["diff_low"].null_count():
        return None
    k = rows.height
    mean = rows["diff_adjusted"].mean()
    sd = math.sqrt(sum(((h - lo) / (2 * Z95)) ** 2 for lo, h in zip(rows["diff_low"], rows["diff_high"]))) / k
    return mean, mean - Z95 * sd, mean + Z95 * sd
