"""The explorer's figures: every view of one head on one example, readable at any length.

- One colour rule for every attention panel of a figure (`attention_scale`): one shared range,
  diverging around 0 when any shown panel has a negative entry (effective attention, the null
  component), else sequential from 0; so two equal maps always look equal. The gradient
  attribution panel is not attention: it keeps a sequential scale of its own.
- Every token is a tick on both axes (`tick_font` shrinks with n); panels grow with n, one per
  row past LONG_N tokens.
- Hovering any cell shows that (query, key) cell of every panel; the panels' axes are linked, so a
  zoom or pan moves them all.
- `row_maps` redraws only a range of query rows (the paper's Fig. 2 shows the last ones), each
  panel at full width, rows tall enough to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.charts import DIVERGING, SEQUENTIAL

LONG_N = 48  # past this many tokens, one panel per row
SAME_TOLERANCE = 1.5e-3  # maps are stored rounded to 3 decimals (MAP_DECIMALS): closer than this is equal
ROW_PX = 26  # height of one query row in the row-range view


@dataclass(frozen=True)
class MapPanel:
    """One (query, key) heatmap: z over the queries (rows) and keys (columns) of one example."""

    title: str
    z: np.ndarray  # (query, key) float
    attention: bool = True  # False: not attention weights (gradient attribution), own colour scale


def same_map(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to the stored rounding (e.g. A_eff = A when n ≤ d_head)."""
    return a.shape == b.shape and bool(np.nanmax(np.abs(a - b), initial=0.0) <= SAME_TOLERANCE)


def attention_scale(panels: Sequence[MapPanel]) -> dict:
    """zmin, zmax, zmid and colorscale shared by every attention panel."""
    values = np.concatenate([np.ravel(p.z) for p in panels if p.attention] or [np.zeros(1)])
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if low < -SAME_TOLERANCE:  # signed: white is 0, red positive, blue negative
        bound = max(-low, high) or 1.0
        return {"zmin": -bound, "zmax": bound, "zmid": 0, "colorscale": DIVERGING}
    return {"zmin": 0.0, "zmax": high or 1.0, "colorscale": SEQUENTIAL}


def tick_font(n: int) -> int:
    """Tick label size that still fits one label per token."""
    return 12 if n <= 24 else 11 if n <= 40 else 10 if n <= 64 else 9 if n <= 96 else 8


def panels_per_row(n: int, count: int) -> int:
    """Panels side by side: three for short inputs, one past LONG_N tokens."""
    return min(count, 3 if n <= 24 else 2 if n <= LONG_N else 1)


def full_maps(panels: Sequence[MapPanel], labels: Sequence[str]) -> go.Figure:
    """Every panel over all n queries and keys, cells roughly square, every token labelled."""
    n = len(labels)
    cols = panels_per_row(n, len(panels))
    side = max(320, min(1100 if cols == 1 else 1000 // cols, 40 + 16 * n))  # px per panel
    return _figure(panels, labels, list(labels), np.arange(n), cols=cols, panel_height=side, x_angle=-90 if n > 12 else -45)


def row_maps(panels: Sequence[MapPanel], labels: Sequence[str], first: int, last: int) -> go.Figure:
    """Query rows first..last (inclusive) of every panel, one panel per row at full width."""
    rows = np.arange(first, last + 1)
    height = 90 + ROW_PX * len(rows) + 6 * max(len(s) for s in labels)  # rows + the upright key labels
    return _figure([MapPanel(p.title, p.z[rows], p.attention) for p in panels], labels,
                   [labels[i] for i in rows], rows, cols=1, panel_height=height, x_angle=-90)


def _figure(panels: Sequence[MapPanel], keys: Sequence[str], queries: Sequence[str], rows: np.ndarray, *, cols: int,
            panel_height: int, x_angle: int) -> go.Figure:
    n_rows = -(-len(panels) // cols)
    gap = 60 + 6 * max(len(k) for k in keys)  # px between panel rows: the upright key labels stand under each panel
    height = n_rows * panel_height + (n_rows - 1) * gap + 80
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=[p.title for p in panels],
                        horizontal_spacing=0.12 / cols if cols > 1 else 0.0,
                        vertical_spacing=gap / height if n_rows > 1 else 0.0)
    scale = attention_scale(panels)
    shared = np.stack([p.z for p in panels], axis=-1)  # (query, key, panel): every panel's value in each hover
    every = "<br>".join(f"{p.title}: %{{customdata[{i}]:.3f}}" for i, p in enumerate(panels))
    font = tick_font(len(keys))
    traces, axes = [], {}
    for i, panel in enumerate(panels):
        suffix = str(i + 1) if i else ""
        own = scale if panel.attention else {"zmin": 0.0, "zmax": float(np.nanmax(panel.z)) or 1.0,
                                              "colorscale": SEQUENTIAL}
        domain = fig.layout[f"xaxis{suffix}"].domain or (0, 1)
        y_domain = fig.layout[f"yaxis{suffix}"].domain or (0, 1)
        show_bar = i == 0 or not panel.attention  # one bar for the shared scale, one for attribution
        traces.append(go.Heatmap(
            z=panel.z, x=list(keys), y=list(queries), customdata=shared, name=panel.title, **own,
            showscale=show_bar, xaxis=f"x{suffix}", yaxis=f"y{suffix}",
            hovertemplate=f"query %{{y}}<br>key %{{x}}<br><b>{panel.title}: %{{z:.3f}}</b><br>—<br>{every}<extra></extra>",
            colorbar={"x": domain[1] + 0.01, "y": sum(y_domain) / 2, "len": y_domain[1] - y_domain[0],
                      "thickness": 12, "title": {"text": "weight" if panel.attention else "share"}},
        ))
        common = {"type": "category", "tickmode": "array", "tickfont": {"size": font}, "showspikes": True,
                  "spikemode": "across", "spikesnap": "cursor", "spikethickness": 1, "spikecolor": "#444"}
        axes[f"xaxis{suffix}"] = {**common, "tickvals": list(keys), "ticktext": list(keys), "tickangle": x_angle,
                                  **({"matches": "x"} if i else {}),
                                  "title": {"text": "key" if i // cols == n_rows - 1 else None}}  # under the last row only
        axes[f"yaxis{suffix}"] = {**common, "tickvals": list(queries), "ticktext": list(queries),
                                  "autorange": "reversed", **({"matches": "y"} if i else {}),
                                  "title": {"text": "query" if i % cols == 0 else None}}
    for i in range(len(panels), n_rows * cols):  # the empty cells after the last panel
        axes[f"xaxis{i + 1}"] = axes[f"yaxis{i + 1}"] = {"visible": False}
    fig.add_traces(traces)
    fig.update_layout(axes, height=height, hovermode="closest", margin={"l": 10, "r": 10, "t": 40, "b": 10})
    fig.update_annotations(font_size=14)
    return fig
