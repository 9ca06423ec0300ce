"""The pattern classifier's measured accuracy (issue 4): macro-F1 and the confusion matrix.

Read from the shared labels folder beside the runs (``<data>/pattern_labels/classifier_eval.parquet``,
written by tools/label_patterns.py); run folders hold no such table. Long format:
``metric, kind, true_pattern, predicted_pattern, value, n`` with metric ∈ macro_f1, accuracy,
confusion (a count per true × predicted class), labeller_self_agreement_*.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import streamlit as st

from dashboard import charts, data, remote
from dashboard.charts import Panel
from dashboard.data import Run
from precompute.schema import PATTERNS

LABELS_FILE = Path("pattern_labels") / "classifier_eval.parquet"


def load(run: Run) -> pl.DataFrame:
    """The evaluation rows (empty frame when the classifier has not been evaluated)."""
    if remote.is_url(run.location):  # the labels folder is not mirrored from a remote location
        return pl.DataFrame()
    path = Path(run.location).parent / LABELS_FILE
    if not path.is_file():
        return pl.DataFrame()
    frame = data.read_file(str(path))
    # the file also scores the classifier that labelled the shipped caches (rows "caches"): show the shipped one
    return frame.filter(pl.col("classifier") == "shipped") if "classifier" in frame.columns else frame


def _value(frame: pl.DataFrame, metric: str, kind: str = "all") -> tuple[float | None, int | None]:
    row = frame.filter((pl.col("metric") == metric) & (pl.col("kind") == kind))
    return (row["value"][0], row["n"][0]) if not row.is_empty() else (None, None)


def show(run: Run) -> None:
    """Headline macro-F1 (overall and per kind), accuracy, labeller agreement, confusion matrix."""
    frame = load(run)
    if frame.is_empty() or not {"metric", "kind", "value"} <= set(frame.columns):
        st.info("The classifier's measured F1 is not available yet (no classifier_eval table).")
        return
    if "n" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, pl.Int64).alias("n"))
    cols = st.columns(5)
    for col, (label, metric, kind) in zip(cols, [
        ("Macro-F1, held-out", "macro_f1", "all"), ("Macro-F1, standard maps", "macro_f1", "standard"),
        ("Macro-F1, effective maps", "macro_f1", "effective"), ("Accuracy", "accuracy", "all"),
        ("Labeller self-agreement (macro-F1)", "labeller_self_agreement_macro_f1", "all")]):
        value, n = _value(frame, metric, kind)
        col.metric(label, "–" if value is None else f"{value:.3f}", help=None if n is None else f"{n} labelled maps")
    st.caption("Kovaleva et al. report F1 0.86 for their CNN (labels and weights never published). Ours is measured "
               "only on held-out labels (cross-validation).")
    per_class = frame.filter(pl.col("metric").is_in(["precision", "recall", "f1"]) & (pl.col("kind") == "all"))
    if not per_class.is_empty() and "true_pattern" in per_class.columns:
        st.dataframe(per_class.pivot(on="metric", index="true_pattern", values="value").rename({"true_pattern": "class"}),
                     hide_index=True)
    confusion = frame.filter((pl.col("metric") == "confusion") & (pl.col("kind") == "all"))
    if confusion.is_empty() or not {"true_pattern", "predicted_pattern"} <= set(confusion.columns):
        return
    rows, cols_, z = charts.matrix(confusion, "value", rows="true_pattern", cols="predicted_pattern",
                                   row_values=PATTERNS, col_values=PATTERNS)
    fig = charts.heatmaps([Panel("confusion (count of maps)", z, cols_, rows,
                                 hover={"x": "predicted", "y": "true", "z": "maps"})],
                          x_title="predicted class", y_title="true class", height=380)
    charts.show(fig, confusion.select("true_pattern", "predicted_pattern", "value"), "classifier_confusion")
