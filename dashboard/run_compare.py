"""Two runs side by side (issue 18): their facts, the Findings table with a column per run, and
the per-run panels of pattern shares, token-type weights and special-token attention.

Everything here reads through dashboard/data.py and builds on the shared views (findings,
pattern_views, share_views, charts); no Streamlit calls, so that the Compare runs page stays a
short script and the tests call these directly. Runs may differ in shape (all-MiniLM-L6-v2:
6 layers × 12 heads at d_head 32; MPNet-base: 12 × 12 at d_head 64), so each run keeps its own
layer axis and its own final layer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import plotly.graph_objects as go
import polars as pl

from dashboard import charts, data, kinds, paper
from dashboard.data import Run
from dashboard.findings import NORM_MEASURES, TOKEN_TYPES, findings, model_of
from dashboard.pattern_views import table2_figure
from dashboard.share_views import add_error_bars, table2_numbers
from precompute.schema import TABLE_STAGE, TASKS

MISSING = "—"  # a Findings claim or a fact one run lacks
SPECIAL_TOKENS = {measure: NORM_MEASURES[measure] for measure in ("cls_weight", "sep_weight", "punct_weight")}
# a claim that names the run's own d_head ("n ≤ d_head = 32") is the same claim in every run
_RUN_NUMBER_IN_CLAIM = re.compile(r"d_head = (\d+)")
_SUMMARY_COLUMNS = ("task", "layer", "head", "kind", "measure", "mean", "std", "n")




def default_partner(first: Run, others: Sequence[Run]) -> Run | None:
    """The run to compare ``first`` with by default: the first of ``others`` made from another
    model (the question is "does it hold on another model?"), else the first of ``others``."""
    return next((run for run in others if model_of(run) != model_of(first)), others[0] if others else None)


@dataclass(frozen=True)
class TaskSplit:
    """The sidebar's tasks that both runs have results for, and those left out."""

    common: tuple[str, ...]
    dropped: tuple[str, ...]


def split_tasks(selected: Sequence[str], second: Run) -> TaskSplit:
    """``selected`` (the first run's sidebar tasks) split by whether ``second`` has results for them."""
    present = set(second.tasks_with_data())
    return TaskSplit(tuple(t for t in selected if t in present), tuple(t for t in selected if t not in present))


def dropped_note(split: TaskSplit, second: Run) -> str | None:
    """The sentence saying which sidebar tasks are not compared and why, or None when none is dropped."""
    if not split.dropped:
        return None
    names = ", ".join(map(paper.task_label, split.dropped))
    return f"Not compared: {names} (selected in the sidebar, but {second.name} has no results for {'it' if len(split.dropped) == 1 else 'them'})."


def short_inputs(run: Run, tasks: tuple[str, ...]) -> pl.DataFrame:
    """task, n_eval, d_head, share_le_d_head (share of analysed examples with n ≤ d_head, where effective
    = standard attention) per task of ``tasks`` that has them, in order: from task_summary (the analyse
    stage), else counted from the examples' seq_len (the extract stage)."""
    columns = ("task", "n_eval", "d_head", "share_le_d_head")
    summary = data.read(run, "task_summary", tasks=tasks, columns=columns).select(columns)  # an empty read has every column
    missing = tuple(task for task in tasks if task not in set(summary["task"]))
    if missing and run.d_head is not None:
        lengths = data.read(run, "examples", tasks=missing, columns=("task", "seq_len")).select("task", "seq_len")
        counted = lengths.group_by("task", maintain_order=True).agg(
            n_eval=pl.len().cast(pl.Int64), d_head=pl.lit(run.d_head, pl.Int64),
            share_le_d_head=(pl.col("seq_len") <= run.d_head).mean())
        summary = pl.concat([summary, counted.select(columns)], how="vertical_relaxed")
    order = {task: i for i, task in enumerate(tasks)}
    return summary.sort(pl.col("task").replace_strict(order, default=len(order)))


def pooled_share(shorts: pl.DataFrame) -> float | None:
    """The share of n ≤ d_head over all examples of ``shorts``' tasks (each task weighted by its n_eval)."""
    if shorts.is_empty() or shorts["n_eval"].sum() == 0:
        return None
    return float((shorts["share_le_d_head"] * shorts["n_eval"]).sum() / shorts["n_eval"].sum())


def d_head_of(run: Run, shorts: pl.DataFrame) -> int | None:
    """d_head from the manifest, else from task_summary (runs whose manifest lacks it)."""
    if run.d_head is not None:
        return int(run.d_head)
    return int(shorts["d_head"].max()) if not shorts.is_empty() and shorts["d_head"].max() is not None else None


def heading(run: Run, shorts: pl.DataFrame, extra: str = "") -> str:
    """A panel title: "minilm · d_head 32 · n ≤ d_head 41 %" (the share over ``shorts``' tasks)."""
    d_head, share = d_head_of(run, shorts), pooled_share(shorts)
    parts = [run.name, *([extra] if extra else []), f"d_head {d_head if d_head is not None else '?'}",
             f"n ≤ d_head {MISSING if share is None else f'{share:.0%}'}"]
    return " · ".join(parts)


def _dev_results(run: Run, tasks: tuple[str, ...]) -> dict[str, str]:
    """{task: "accuracy 0.549 (effective 0.549)"}: each task's headline dev metric, standard then effective."""
    metrics = data.read(run, "metrics", tasks=tasks)
    cells = {}
    for task in tasks:
        headline = TASKS[task].metrics[0] if task in TASKS else None
        values = dict(metrics.filter(task=task, metric=headline).select("kind", "value").iter_rows())
        if kinds.BASE not in values:
            cells[task] = MISSING
            continue
        effective = f" (effective {values['effective']:.3f})" if values.get("effective") is not None else ""
        cells[task] = f"{headline} {values[kinds.BASE]:.3f}{effective}"
    return cells


def facts(runs: Sequence[Run], tasks: tuple[str, ...]) -> pl.DataFrame:
    """One row per fact, one String column per run: model, layers × heads, d_head, attention map,
    then per task its dev result, analysed examples and share of n ≤ d_head."""
    columns = {}
    for run in runs:
        shorts = short_inputs(run, tasks)
        by_task = {row["task"]: row for row in shorts.iter_rows(named=True)}
        dev = _dev_results(run, tasks)
        d_head = d_head_of(run, shorts)
        cells = [model_of(run), f"{run.n_layers} × {run.n_heads}", MISSING if d_head is None else str(d_head), run.attention]
        for task in tasks:
            short = by_task.get(task)
            cells += [dev[task], MISSING if short is None else str(short["n_eval"]),
                      MISSING if short is None else f"{short['share_le_d_head']:.1%}"]
        columns[run.name] = cells
    names = ["model", "layers × heads", "d_head", "attention map"]
    for task in tasks:
        label = paper.task_label(task)
        names += [f"{label}: dev result", f"{label}: analysed examples", f"{label}: share with n ≤ d_head"]
    return pl.DataFrame({"fact": names, **columns}, schema={"fact": pl.String, **{name: pl.String for name in columns}})


def _claims(run: Run, tasks: tuple[str, ...]) -> pl.DataFrame:
    """claim (with the run's own numbers taken out, so that runs join on it), paper, and the run's cell
    "verdict: ours" (the number taken out of the claim goes back into the cell)."""
    rows = []
    for claim, paper_text, ours, verdict in findings(run, tasks).iter_rows():
        number = _RUN_NUMBER_IN_CLAIM.search(claim)
        key = _RUN_NUMBER_IN_CLAIM.sub("d_head", claim)
        rows.append({"claim": key, "paper": paper_text,
                     run.name: f"{verdict}: {ours}" + (f" (d_head {number.group(1)})" if number else "")})
    frame = pl.DataFrame(rows, schema={"claim": pl.String, "paper": pl.String, run.name: pl.String})
    return frame.unique("claim", keep="first", maintain_order=True)


def findings_side_by_side(runs: Sequence[Run], tasks: tuple[str, ...]) -> pl.DataFrame:
    """claim, paper (once), then one column per run named after it: "holds: 3.3 % → 4.2 % …", or "—"
    where that run has no such row. Claims in the first run's order, then those only later runs have."""
    table = None
    for run in runs:
        claims = _claims(run, tasks)
        if table is None:
            table = claims
            continue
        table = (table.join(claims, on="claim", how="full", coalesce=True, maintain_order="left_right")
                 .with_columns(pl.coalesce("paper", "paper_right").alias("paper")).drop("paper_right"))
    return table.with_columns(pl.col(run.name).fill_null(MISSING) for run in runs)


def stage_hint(run: Run, table: str, tasks: Sequence[str]) -> str:
    """One line: which run lacks which table for which tasks, and the precompute stage that makes it."""
    stage = TABLE_STAGE.get(table, "?")
    return (f"{run.name} has no {table} rows for {', '.join(map(paper.task_label, tasks))}: the {stage} stage makes "
            f"them (`python -m precompute --tasks {','.join(tasks)} --stages {stage} --out {run.location}`).")


def pattern_figure(run: Run, shares: pl.DataFrame, tasks: tuple[str, ...], kinds_shown: tuple[str, ...],
                   title: str) -> tuple[go.Figure, pl.DataFrame]:
    """The Patterns page's Table 2 figure of one run (its shares only; the paper's are on that page),
    with 95 % error bars where the run has intervals, titled ``title``; and the table it draws."""
    table = table2_numbers(shares, tasks, kinds_shown).filter(pl.col("source") == "ours")
    fig = add_error_bars(table2_figure(table, kinds_shown), table, shares, kinds_shown)
    # half a page wide: one source ("ours") needs no second axis level, and the kinds' titles wrap
    for trace in fig.data:
        trace.x = list(trace.x[0])
    for note in fig.layout.annotations:
        note.update(text=note.text.replace(" ", "<br>"), font_size=11)
    fig.update_layout(title=charts.figure_title(title, tasks, kinds_shown), height=460, margin={"t": 120},
                      legend={"orientation": "h", "y": -0.12, "x": 0, "title_text": ""})
    return fig, table.with_columns(pl.lit(run.name).alias("run"))


def bar_top(fig: go.Figure) -> float:
    """The highest point of a stacked-bar figure in percent, its error bars included (at least 100), so
    that the two runs' pattern figures can share one y range."""
    tops, stacked = [100.0], {}
    for trace in fig.data:
        plus = trace.error_y.array if trace.error_y and trace.error_y.array is not None else [0.0] * len(trace.y)
        for x, y, above in zip(trace.x, trace.y, plus):
            stacked[trace.xaxis, x] = stacked.get((trace.xaxis, x), 0.0) + (y or 0.0)
            tops.append(stacked[trace.xaxis, x] + above)
    return max(tops)


def token_type_summary(run: Run, task: str, kinds_shown: tuple[str, ...]) -> pl.DataFrame:
    """head_summary's [CLS]-row weight per token type at the run's final layer (the paper's Fig. 1),
    with a token_type column."""
    summary = data.read(run, "head_summary", tasks=(task,), layer=run.n_layers - 1, kind=kinds_shown,
                        measure=tuple(TOKEN_TYPES), columns=_SUMMARY_COLUMNS)
    return summary.with_columns(pl.col("measure").replace_strict(TOKEN_TYPES).alias("token_type"))


def special_token_summary(run: Run, task: str, kinds_shown: tuple[str, ...], measure: str) -> pl.DataFrame:
    """head_summary's weight on one special token's column (a SPECIAL_TOKENS measure), every layer × head."""
    return data.read(run, "head_summary", tasks=(task,), kind=kinds_shown, measure=measure, columns=_SUMMARY_COLUMNS)


@dataclass(frozen=True)
class SideBySide:
    """One faceted figure's parts: per kind (and kind − standard) a row, per run a column."""

    panels: list[charts.Panel]
    row_titles: list[str]
    height: int
    table: pl.DataFrame  # what the panels draw, with a run column (the CSV)


def side_by_side(parts: Sequence[tuple[Run, str, pl.DataFrame]], value: str, kinds_shown: tuple[str, ...], *,
                 rows: str, row_values: Sequence[Sequence], measure: str) -> SideBySide:
    """charts.kind_grid of each run's one-task frame, put in columns: row i of the figure is row i of every
    run's grid, each run on its own ``rows`` axis (``row_values`` per run: e.g. 6 vs 12 layers).

    ``parts``: (run, panel heading, frame) per run, the frame long with task, kind, head, ``rows``, ``value``."""
    grids = [charts.kind_grid(frame, value, kinds_shown, rows=rows, row_values=values,
                              col_values=list(range(run.n_heads)), measure=measure, detail=("std", "n"))
             for (run, _, frame), values in zip(parts, row_values)]
    panels = [replace(panel, title=f"{run.name} · {panel.title}", label=title)
              for row in zip(*(grid.panels for grid in grids)) for (run, title, _), panel in zip(parts, row)]
    tables = [grid.table.with_columns(pl.lit(run.name).alias("run")) for (run, _, _), grid in zip(parts, grids)]
    return SideBySide(panels, grids[0].row_titles, max(grid.height() for grid in grids),
                      pl.concat(tables, how="diagonal_relaxed"))


def separate_columns(fig: go.Figure, n_panels: int, *, same_rows: bool) -> go.Figure:
    """Room for the right-hand run's own row labels in a two-column charts.heatmaps figure: its plots move
    right (layers: each run has its own); with ``same_rows`` (token types) its labels go, the left ones serve."""
    for i in range(1, n_panels, 2):  # the right column; make_subplots names panel i's axes x{i+1}, y{i+1}
        if same_rows:
            fig.layout[f"yaxis{i + 1}"].showticklabels = False
        else:
            low, high = fig.layout[f"xaxis{i + 1}"].domain
            fig.layout[f"xaxis{i + 1}"].domain = (low + 0.03, high)
    return fig
