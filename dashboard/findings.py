"""The Findings table: each claim of the paper, its number, ours from the analysis tables, a verdict.

Ours are computed over the selected tasks from pattern_shares, head_summary, metrics and
task_summary (never from per-example rows), so the Overview stays fast.
"""

from __future__ import annotations

import polars as pl

from dashboard import data, paper
from dashboard.data import Run

HOLDS, FAILS, OPEN = "holds", "does not hold", "not computed yet"
_COLUMNS = {"claim": pl.String, "paper": pl.String, "ours": pl.String, "verdict": pl.String}


def _row(claim: str, paper_text: str, ours: str, verdict: str) -> dict:
    return {"claim": claim, "paper": paper_text, "ours": ours, "verdict": verdict}


def _patterns(run: Run, tasks: tuple[str, ...]) -> list[dict]:
    shares = data.read(run, "pattern_shares", tasks=tasks)
    rows = []
    for pattern, fewer in (("vertical", True), ("block", False)):
        claim = f"Effective attention shows {'fewer' if fewer else 'more'} {pattern} patterns"
        paper_text = f"{paper.table2_mean('standard', pattern):.1%} → {paper.table2_mean('effective', pattern):.1%} (mean of 5 tasks)"
        mean = {kind: shares.filter((pl.col("kind") == kind) & (pl.col("pattern") == pattern))["share"].mean()
                for kind in ("standard", "effective")}
        if shares.is_empty() or None in mean.values():
            rows.append(_row(claim, paper_text, "patterns not classified yet", OPEN))
            continue
        better = mean["effective"] < mean["standard"] if fewer else mean["effective"] > mean["standard"]
        rows.append(_row(claim, paper_text, f"{mean['standard']:.1%} → {mean['effective']:.1%} (mean of {len(tasks)} tasks)",
                         HOLDS if better else FAILS))
    return rows


def _cls_row(run: Run, tasks: tuple[str, ...]) -> list[dict]:
    last = run.n_layers - 1
    summary = data.read(run, "head_summary", tasks=tasks, layer=last,
                        measure=("cls_row_sep", "cls_row_punct", "cls_row_cls"))
    rows = []
    for measure, label, loses in (("cls_row_sep", "[SEP]", True), ("cls_row_punct", "punctuation", True),
                                  ("cls_row_cls", "[CLS]", False)):
        claim = f"Final-layer [CLS] row: {label} {'loses weight' if loses else 'keeps its weight'} with effective attention"
        paper_text = "lower with effective (Fig. 1; all tasks but SST-2 for [SEP])" if loses else "about the same (Fig. 1)"
        mean = {kind: summary.filter((pl.col("kind") == kind) & (pl.col("measure") == measure))["mean"].mean()
                for kind in ("standard", "effective")}
        if None in mean.values():
            rows.append(_row(claim, paper_text, "no head_summary rows", OPEN))
            continue
        change = mean["effective"] - mean["standard"]
        relative = abs(change) / max(abs(mean["standard"]), 1e-9)
        ok = change < 0 if loses else relative <= 0.25  # "about the same": within 25 % of standard
        rows.append(_row(claim, paper_text, f"{mean['standard']:.3f} → {mean['effective']:.3f} (layer {last}, mean over heads and tasks)",
                         HOLDS if ok else FAILS))
    return rows


def _finetuning(run: Run, tasks: tuple[str, ...]) -> list[dict]:
    summary = data.read(run, "head_summary", tasks=tasks, measure="pretrained_cosine")
    claim = "The last two layers change most with finetuning (lowest cosine to pretrained)"
    if summary.is_empty():
        return [_row(claim, "yes, both kinds (Fig. 3)", "no pretrained_cosine rows", OPEN)]
    last_two = {run.n_layers - 2, run.n_layers - 1}
    parts, ok = [], True
    for kind in ("standard", "effective"):
        per_layer = (summary.filter(pl.col("kind") == kind).group_by("layer").agg(pl.col("mean").mean())
                     .sort("mean"))
        lowest = per_layer["layer"].head(2).to_list()
        ok = ok and set(lowest) == last_two
        parts.append(f"{kind}: layers {', '.join(map(str, sorted(lowest)))}")
    return [_row(claim, "yes, both kinds (Fig. 3)", "lowest: " + "; ".join(parts), HOLDS if ok else FAILS)]


def _cost(run: Run, tasks: tuple[str, ...]) -> list[dict]:
    metrics = data.read(run, "metrics", tasks=tasks, metric="eval_seconds")
    claim = "Effective attention costs about 2× the evaluation time"
    wide = metrics.pivot(on="kind", index="task", values="value") if not metrics.is_empty() else metrics
    if metrics.is_empty() or not {"standard", "effective"} <= set(wide.columns):
        return [_row(claim, "1.92–2.03× (Table 3)", "no eval_seconds rows", OPEN)]
    ratios = (wide["effective"] / wide["standard"]).drop_nulls()
    ours = f"{ratios.min():.2f}–{ratios.max():.2f}× ({len(ratios)} tasks)"
    return [_row(claim, "1.92–2.03× (Table 3)", ours, HOLDS if 1.5 <= ratios.mean() <= 2.5 else FAILS)]


def _short_inputs(run: Run, tasks: tuple[str, ...]) -> list[dict]:
    summary = data.read(run, "task_summary", tasks=tasks)
    if summary.is_empty():
        return []
    d_head = summary["d_head"].max()
    per_task = ", ".join(f"{paper.task_label(t)} {s:.0%}" for t, s in summary.select("task", "share_le_d_head").iter_rows())
    return [_row(f"Share of examples with n ≤ d_head = {d_head} (effective = standard there)",
                 "d_head 64, few GLUE inputs that short", per_task, "context")]


def findings(run: Run, tasks: tuple[str, ...]) -> pl.DataFrame:
    """One row per claim: claim, paper, ours, verdict."""
    rows = [*_patterns(run, tasks), *_cls_row(run, tasks), *_finetuning(run, tasks), *_cost(run, tasks),
            *_short_inputs(run, tasks)]
    return pl.DataFrame(rows, schema=_COLUMNS)
