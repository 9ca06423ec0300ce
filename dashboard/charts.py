"""Plotly figure builders and ``show``: every chart with hover values, a CSV of its table and
an image of the figure (the modebar camera button, in the sidebar's PNG/SVG format).

The one colour rule. A page says what a panel shows (``Panel.kind``), never which colours it gets:

- **diverging** (red +, blue −, white = 0; symmetric range −m…m): signed kinds (``KindInfo.signed`` in
  precompute.schema: effective, effective norm-weighted), every difference (``DIFFERENCE``: a kind − standard,
  the null component) and other signed values (``SIGNED``: a Kendall τ);
- **sequential from 0** (greens, 0…max): unsigned kinds (standard, norm-weighted, efficient) and every other
  share, probability, divergence or count (``kind=None``: top-1 agreement, share of zeros, JSD, confusion
  counts). Their 0 means "none", so a cell half as dark holds half as much;
- **sequential over the data** (greens, min…max): values whose 0 is not special (``FITTED``: the cosine
  similarity before vs after finetuning, mostly above 0.5; from 0 every cell would look alike).

The scale (``scale_toggle`` on each page, default ``SHARED``): shared = one range per group over all panels of a
figure, every task and kind, so that colours compare across panels. The attention kinds form one group with one
bound m = the largest |weight| of any of them (standard 0…m, effective −m…m: equal weights, equal strength); the
difference panels share their own symmetric range; SIGNED, share and FITTED panels each theirs; one colour bar per
colour scale of a group, at the right. ``PER_PANEL``: each panel its own range and colour bar (the paper's choice
for effective attention: each task's own min and max), to see structure inside a panel.

Figures that say what they show: ``kind_grid`` lays out the paper's Figs. 1, 3, 5, 6 (tasks across in the paper's
order, kinds and then each kind − standard down, one label style); ``figure_title`` names measure, task(s) and
kind(s), and ``heatmaps(colorbar_title=...)`` the measure and unit, so that a PNG/SVG saved by the camera button
(or the CSV of ``show``) reads on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
import polars as pl
import streamlit as st
from plotly.subplots import make_subplots

from dashboard import kinds as kind_names
from dashboard.paper import task_label
from precompute.schema import KIND_INFO, TASKS

SEQUENTIAL = "Greens"  # unsigned kinds and other values (the paper's green)
DIVERGING = "RdBu_r"  # signed kinds / null / differences: red positive, blue negative, white 0
DIFFERENCE = "difference"  # Panel.kind of a difference of two kinds or of the null component: signed
SIGNED = "signed"  # Panel.kind of another value in [-1, 1] that is not attention (a Kendall τ): diverging
FITTED = "fitted"  # Panel.kind of a value whose 0 is not special (a cosine similarity): sequential, min…max
SHARED, PER_PANEL = "shared", "per panel"  # the colour scale: one range per group of a figure, or per panel
SCALES = (SHARED, PER_PANEL)
SCALE_KEY = "scale"  # widget key and URL query parameter (?scale=per+panel)
# bars and lines per kind (a test keeps this in step with KIND_INFO)
KIND_COLORS = {"standard": "#2e8b57", "effective": "#1f5fbf", "norm": "#e08a00",
               "effective_norm": "#8e44ad", "efficient": "#c0392b"}
SOURCE_COLORS = {"ours": KIND_COLORS["effective"], "paper": "#999999"}  # ours beside the paper's numbers
PATTERN_COLORS = {"vertical": "#d62728", "diagonal": "#2ca02c", "vertical+diagonal": "#ff7f0e",
                  "block": "#1f77b4", "heterogeneous": "#9467bd"}


@dataclass
class Panel:
    """One heatmap of a multi-panel figure: z[row][col] over y (rows) and x (columns)."""

    title: str
    z: np.ndarray  # (rows, columns) float, NaN where missing; numpy keeps plotly's validation fast
    x: Sequence
    y: Sequence
    kind: str | None = None  # a KIND_INFO name, DIFFERENCE, SIGNED, FITTED or None (a share): sets the colours
    text: list[list[str]] | None = None  # optional per-cell hover text
    label: str | None = None  # the title shown above the panel, when shorter than ``title`` (a grid's task)
    hover: dict = field(default_factory=lambda: {"x": "head", "y": "layer", "z": "value"})


def diverging(kind: str | None) -> bool:
    """The colour rule: diverging for signed kinds, differences and SIGNED values, sequential for the rest."""
    if kind in (DIFFERENCE, SIGNED):
        return True
    info = KIND_INFO.get(kind) if kind is not None else None
    return info is not None and info.signed


def _group(kind: str | None) -> str:
    """Panels of one group share a range on the shared scale: all attention kinds, or one other rule."""
    return "weights" if kind in KIND_INFO else kind or "share"


def _extent(values: np.ndarray) -> tuple[float, float] | None:
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else None


def _range(kind: str | None, extent: tuple[float, float] | None) -> tuple[float, float]:
    """(zmin, zmax) of a panel of ``kind`` whose group spans ``extent`` (min, max)."""
    if extent is None:
        return (-1.0, 1.0) if diverging(kind) else (0.0, 1.0)
    low, high = extent
    bound = max(abs(low), abs(high)) or 1.0
    if diverging(kind):
        return (-bound, bound)
    if kind == FITTED:
        return (low, high) if high > low else (low - 0.5, high + 0.5)
    return (0.0, bound)  # an unsigned kind beside signed ones reaches the same magnitude m


def colour_ranges(panels: Sequence[Panel | None], scale: str = PER_PANEL) -> list[tuple[float, float] | None]:
    """(zmin, zmax) per panel (None for an empty cell) under the colour rule and ``scale``."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    values = [None if p is None else np.ravel(np.asarray(p.z, dtype=float)) for p in panels]
    by_group: dict[str, list[np.ndarray]] = {}
    for panel, z in zip(panels, values):
        if panel is not None:
            by_group.setdefault(_group(panel.kind), []).append(z)
    shared = {group: _extent(np.concatenate(zs)) for group, zs in by_group.items()}
    return [None if panel is None else _range(panel.kind, shared[_group(panel.kind)] if scale == SHARED else _extent(z))
            for panel, z in zip(panels, values)]


def _colour_bar_title(kind: str | None, title: str | None, two_scales: bool) -> str | None:
    if title is None:
        return None
    if kind == DIFFERENCE:
        return f"Δ {title}, kind − {kind_names.label(kind_names.BASE)}"
    return f"{title} (signed kinds)" if two_scales and diverging(kind) else title


def _colour_bars(panels: Sequence[Panel | None], scale: str, title: str | None, boxes: list) -> list:
    """Per panel: its colour bar (dict), or None where another panel of its group draws the shared one.

    ``boxes``: per panel (x0, x1, y0, y1), its plot area in figure fractions. Shared bars sit at the right edge,
    beside the rows of their group (a group drawn in two colour scales splits its rows' height), or stacked
    down the whole height when groups share rows.
    """
    if scale == PER_PANEL:  # titled in the last column only: between panels a title would run into the next one
        right = max(box[1] for box in boxes)
        return [None if p is None else {"x": x1 + 0.004, "y": (y0 + y1) / 2, "len": 0.95 * (y1 - y0), "lenmode": "fraction",
                                        "thickness": 10, "title": {"text": _colour_bar_title(p.kind, title, False)
                                                                   if x1 == right else None, "side": "right",
                                                                   "font": {"size": 10}}}
                for p, (_, x1, y0, y1) in zip(panels, boxes)]
    drawn = [(p, box) for p, box in zip(panels, boxes) if p is not None]
    keys = list(dict.fromkeys((_group(p.kind), diverging(p.kind)) for p, _ in drawn))
    spans = {}
    for p, (_, _, y0, y1) in drawn:
        low, high = spans.get(_group(p.kind), (y0, y1))
        spans[_group(p.kind)] = (min(low, y0), max(high, y1))
    ordered = sorted(spans.values(), key=lambda span: -span[1])
    apart = all(upper[0] >= lower[1] for upper, lower in zip(ordered, ordered[1:]))  # no two groups share a row
    slots = {}
    for key in keys:
        siblings = [k for k in keys if k[0] == key[0]] if apart else keys
        low, high = spans[key[0]] if apart else (0.0, 1.0)
        size = (high - low) / len(siblings)
        slots[key] = (high - (siblings.index(key) + 0.5) * size, 0.92 * size)
    bars, placed = [], set()
    for panel in panels:
        key = None if panel is None else (_group(panel.kind), diverging(panel.kind))
        if key is None or key in placed:
            bars.append(None)
            continue
        placed.add(key)
        two = sum(1 for group, _ in keys if group == key[0]) > 1
        y, length = slots[key]
        bars.append({"x": 1.01, "y": y, "len": length, "lenmode": "fraction", "thickness": 12,
                     "title": {"text": _colour_bar_title(panel.kind, title, two), "side": "right"}})
    return bars


def heatmaps(panels: list[Panel | None], *, height: int | None = None, x_title: str = "head", y_title: str = "layer",
             cols: int | None = None, shared_y: bool = True, square: bool = False, shared_range: bool = False,
             scale: str | None = None, title: str | None = None, colorbar_title: str | None = None,
             row_titles: Sequence[str] | None = None) -> go.Figure:
    """Heatmaps in a grid of ``cols`` columns, coloured by the module's rule; ``shared_y`` when all panels have the
    same rows.

    Rows run top-down like a matrix: the first layer (or query) on top. A None leaves its cell empty (so that a
    panel can sit under the one it belongs to). ``scale``: SHARED or PER_PANEL (default: SHARED when the older
    ``shared_range`` says so). ``title`` names task(s), measure and kind(s) so that an exported image says what it
    shows; ``colorbar_title`` the measure and unit; ``row_titles`` one heading per grid row, above it on the left
    (the paper's style: tasks over the columns, kinds on the rows).
    """
    scale = scale or (SHARED if shared_range else PER_PANEL)
    cols = cols or len(panels)
    rows = -(-len(panels) // cols)
    height = height or 120 + 260 * rows
    top = (80 if title else 50) + (30 if row_titles else 0)
    # between rows: the tick labels, the panel titles and the row heading need about this many pixels
    spacing = min(0.32 / rows, 60 / height) if not row_titles else min(0.5 / rows, 92 / (height - top - 10))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[(p.label or p.title) if p else "" for p in panels],
                        shared_yaxes=shared_y, horizontal_spacing=(0.07 if scale == PER_PANEL else 0.025) if cols > 1 else 0.02,
                        vertical_spacing=spacing if rows > 1 else 0.1)
    boxes = [(*fig.layout[f"xaxis{i + 1 if i else ''}"].domain, *fig.layout[f"yaxis{i + 1 if i else ''}"].domain)
             for i in range(len(panels))]
    ranges = colour_ranges(panels, scale)
    bars = _colour_bars(panels, scale, colorbar_title, boxes)
    traces, axes = [], {}
    for i, (panel, zrange, bar) in enumerate(zip(panels, ranges, bars)):
        row, col = divmod(i, cols)
        suffix = str(i + 1) if i else ""  # make_subplots names axes x, x2, x3, ... row by row
        if panel is None:
            axes[f"xaxis{suffix}"] = axes[f"yaxis{suffix}"] = {"visible": False}
            continue
        signed = diverging(panel.kind)
        labels = panel.hover
        template = f"{labels['y']} %{{y}}<br>{labels['x']} %{{x}}<br>{labels['z']} %{{z:.4f}}"
        if panel.text is not None:
            template += "<br>%{text}"
        traces.append(go.Heatmap(
            z=np.asarray(panel.z, dtype=float), x=list(panel.x), y=list(panel.y), text=panel.text,
            zmin=zrange[0], zmax=zrange[1], colorscale=DIVERGING if signed else SEQUENTIAL, zmid=0 if signed else None,
            hovertemplate=f"{template}<extra>{panel.title}</extra>", name=panel.title, xaxis=f"x{suffix}",
            yaxis=f"y{suffix}", showscale=bar is not None, colorbar=bar))
        # one cell = one square with ``square``: maps keep their shape however wide the page is
        axes[f"xaxis{suffix}"] = {"title": {"text": x_title if row == rows - 1 else None}, "type": "category",
                                  **({"constrain": "domain"} if square else {})}
        first = all(panels[row * cols + c] is None for c in range(col))  # leftmost drawn panel of its row
        axes[f"yaxis{suffix}"] = {"title": {"text": y_title if first else None}, "type": "category",
                                  "autorange": "reversed", **({"showticklabels": True} if first else {}),
                                  **({"scaleanchor": f"x{suffix}", "constrain": "domain"} if square else {})}
    fig.add_traces(traces)  # one call: plotly validates per call, and this is the slow part of a page
    fig.update_annotations(font_size=14 if cols <= 3 else 12)  # the subplot titles; narrower panels, smaller titles
    for row, heading in enumerate(row_titles or ()):
        fig.add_annotation(text=f"<b>{heading}</b>", x=0, xref="paper", xanchor="left", y=boxes[row * cols][3],
                           yref="paper", yanchor="bottom", yshift=20, showarrow=False, font={"size": 13})
    fig.update_layout(axes, height=height, margin={"l": 10, "r": 110 if colorbar_title else 40,
                                                   "t": top, "b": 10},
                      title={"text": title, "font": {"size": 15}} if title else None)
    return fig


def scale_toggle(container=None) -> str:
    """The page's one colour-scale choice (SHARED by default), kept in the URL as ?scale=."""
    return (container or st).segmented_control(
        "Colour scale", SCALES, default=SHARED, required=True, key=SCALE_KEY, bind="query-params",
        help="shared: one colour range over every panel of a figure (all tasks and kinds; the differences their "
             "own), so that colours compare across panels; per panel: each panel its own range, to see the "
             "structure inside one panel")


def paper_order(tasks: Sequence[str]) -> list[str]:
    """Tasks in the paper's order (RTE, MRPC, QNLI, SST-2, STS-B); other names (e.g. 'all selected') after them."""
    order = list(TASKS)
    return sorted(dict.fromkeys(tasks), key=lambda task: order.index(task) if task in order else len(order))


def figure_title(measure: str, tasks: Sequence[str], kinds: Sequence[str] = ()) -> str:
    """Title of an exported figure: the measure, then the task(s) and kind(s) it shows (a smaller second line)."""
    names = [", ".join(task_label(task) for task in paper_order(tasks)), ", ".join(map(kind_names.label, kinds))]
    return f"{measure}<br><sup>{' · '.join(name for name in names if name)}</sup>"


@dataclass(frozen=True)
class Grid:
    """Panels of a paper-style task grid, its column count, and the long table it draws (differences included)."""

    panels: list[Panel]  # row by row; each titled "RTE · standard A", labelled with its task only
    cols: int
    table: pl.DataFrame
    row_titles: list[str]  # one per grid row: the kind, or "kind − standard"
    rows_per_panel: int  # row labels in one panel (layers, token types): sets the figure height

    def height(self) -> int:
        return 140 + len(self.row_titles) * (92 + 19 * self.rows_per_panel)


def kind_grid(frame: pl.DataFrame, value: str, kinds: Sequence[str], *, rows: str = "layer", cols: str = "head",
              row_values: Sequence, col_values: Sequence, colour: str | None = "kind", measure: str = "value",
              detail: Sequence[str] = ()) -> Grid:
    """The paper's Figs. 1, 3, 5 and 6 as one grid: one column per task of ``frame`` in the paper's order, one row
    per kind, then one row per other kind's difference from standard (when standard is among ``kinds``).

    ``frame``: long, with task, kind, ``rows``, ``cols``, ``value`` (and the ``detail`` columns, shown on hover).
    ``colour``: "kind" when ``value`` is attention weights (each row coloured by its kind's rule), else the
    Panel.kind of every kind row (FITTED, SIGNED, None for a share); the difference rows are always DIFFERENCE.
    """
    tasks = paper_order(frame["task"].unique(maintain_order=True).to_list())
    others = [kind for kind in kinds if kind != kind_names.BASE] if kind_names.BASE in kinds else []
    hover = {"x": cols, "y": rows, "z": measure}
    cells = {}
    for (task, kind), part in frame.filter(pl.col("kind").is_in(list(kinds))).group_by("task", "kind"):
        _, _, (z, *extra) = matrices(part, (value, *detail), rows=rows, cols=cols, row_values=row_values,
                                     col_values=col_values)
        text = [[", ".join(f"{name} {_number(v[r][c])}" for name, v in zip(detail, extra) if np.isfinite(v[r][c]))
                 for c in range(len(col_values))] for r in range(len(row_values))] if detail else None
        cells[task, kind] = (z, text)
    empty = (np.full((len(row_values), len(col_values)), np.nan), None)
    panels = []
    for kind in kinds:
        for task in tasks:
            z, text = cells.get((task, kind), empty)
            panels.append(Panel(f"{task_label(task)} · {kind_names.label(kind)}", z, list(col_values), list(row_values),
                                kind=kind if colour == "kind" else colour, text=text, label=task_label(task),
                                hover=hover))
    for kind in others:
        for task in tasks:
            z = cells.get((task, kind), empty)[0] - cells.get((task, kind_names.BASE), empty)[0]
            panels.append(Panel(f"{task_label(task)} · {kind_names.difference(kind)}", z, list(col_values),
                                list(row_values), kind=DIFFERENCE, label=task_label(task),
                                hover={**hover, "z": f"Δ {measure}"}))
    row_titles = [*map(kind_names.label, kinds), *map(kind_names.difference, others)]
    return Grid(panels, len(tasks), _with_differences(frame, value, others, ("task", rows, cols)), row_titles,
                len(row_values))


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"  # counts whole, the rest to 3 digits


def _with_differences(frame: pl.DataFrame, value: str, others: Sequence[str], keys: Sequence[str]) -> pl.DataFrame:
    """``frame`` and, per other kind, rows kind = 'effective − standard' with ``value`` = kind − standard (and the
    columns that are one constant over ``frame``, e.g. its layer or measure, so that the CSV says what they are)."""
    constant = [c for c in frame.columns if c not in (*keys, value, "kind") and frame[c].n_unique() == 1]
    base = frame.filter(pl.col("kind") == kind_names.BASE).select(*keys, pl.col(value).alias("_base"))
    diffs = [frame.filter(pl.col("kind") == kind).join(base, on=list(keys))
             .select(*keys, *constant, pl.lit(f"{kind} − {kind_names.BASE}").alias("kind"),
                     (pl.col(value) - pl.col("_base")).alias(value))
             for kind in others]
    return pl.concat([frame, *diffs], how="diagonal_relaxed")


def matrix(frame: pl.DataFrame, value: str, *, rows: str = "layer", cols: str = "head",
           row_values: Sequence | None = None, col_values: Sequence | None = None) -> tuple[list, list, np.ndarray]:
    """(row labels, column labels, z) of ``value`` from a long frame; NaN where missing."""
    row_values, col_values, (z,) = matrices(frame, (value,), rows=rows, cols=cols, row_values=row_values,
                                            col_values=col_values)
    return row_values, col_values, z


def matrices(frame: pl.DataFrame, values: Sequence[str], *, rows: str = "layer", cols: str = "head",
             row_values: Sequence | None = None,
             col_values: Sequence | None = None) -> tuple[list, list, list[np.ndarray]]:
    """(row labels, column labels, one z per column of ``values``) from one pass over a long frame."""
    row_values = list(row_values if row_values is not None else sorted(frame[rows].unique().to_list()))
    col_values = list(col_values if col_values is not None else sorted(frame[cols].unique().to_list()))
    lookup = {(r, c): cell for r, c, *cell in frame.select(rows, cols, *values).iter_rows()}
    missing = [None] * len(values)
    cube = np.array([[lookup.get((r, c), missing) for c in col_values] for r in row_values], dtype=float).reshape(
        len(row_values), len(col_values), len(values))  # None -> NaN
    return row_values, col_values, [np.ascontiguousarray(cube[:, :, i]) for i in range(len(values))]


def bars(frame: pl.DataFrame, *, x: str, y: str, color: str, colors: dict | None = None, names: dict | None = None,
         y_title: str | None = None, height: int = 380, hover_format: str = ".3f") -> go.Figure:
    """Grouped bars of ``y`` over ``x``, one colour per ``color`` value (legend names from ``names``)."""
    fig = go.Figure()
    groups = frame[color].unique(maintain_order=True).to_list()
    order = list(colors or {})  # legend order follows the colour map (standard before effective)
    for group in sorted(groups, key=lambda g: order.index(g) if g in order else len(order)):
        part = frame.filter(pl.col(color) == group)
        fig.add_trace(go.Bar(
            x=part[x].to_list(), y=part[y].to_list(), name=(names or {}).get(group, str(group)),
            marker_color=(colors or {}).get(group),
            hovertemplate=f"{x} %{{x}}<br>{color} {(names or {}).get(group, group)}<br>{y} %{{y:{hover_format}}}<extra></extra>",
        ))
    fig.update_layout(barmode="group", height=height, yaxis_title=y_title or y, xaxis_title=x,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend_title_text=color)
    return fig


def show(fig: go.Figure, table: pl.DataFrame, name: str, *, key: str | None = None,
         on_select=None):
    """Render ``fig`` with an image button (PNG/SVG) and a CSV download of ``table``."""
    fmt = st.session_state.get("image_format") or "svg"
    config = {"displaylogo": False, "toImageButtonOptions": {"format": fmt, "filename": name, "scale": 2}}
    kwargs = {"on_select": on_select, "selection_mode": ("points",)} if on_select else {}
    event = st.plotly_chart(fig, config=config, key=key or f"chart-{name}", **kwargs)
    st.download_button(f"CSV: {name}", data=table.write_csv(), file_name=f"{name}.csv", mime="text/csv",
                       key=f"csv-{name}", on_click="ignore", icon=":material/download:")
    return event
