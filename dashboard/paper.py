"""Numbers from Sun & Marasović (2021), "Effective Attention Sheds Light On Interpretability".

Typed in from the paper (shared/papers/sun-marasovic-2021-effective-attention.md): Table 2
(pattern percentages, BERT-base, ~1,000 dev examples per task) and Table 3 (evaluation clock
time, minutes:seconds, on one GTX 1070). Shown beside our numbers, never mixed into them.
"""

from __future__ import annotations

from precompute.schema import TASKS

TASK_LABELS = {task: info.folder for task, info in TASKS.items()}  # the GLUE folder names are the paper's labels

# Table 2 column order: block (B), diagonal (D), vertical+diagonal (V+D), heterogeneous (H), vertical (V)
TABLE2_PATTERNS = ("block", "diagonal", "vertical+diagonal", "heterogeneous", "vertical")
TABLE2_PERCENT = {  # task -> kind -> percentages in TABLE2_PATTERNS order
    "rte": {"standard": (4.50, 7.40, 15.20, 45.10, 27.90), "effective": (32.60, 12.80, 2.80, 40.30, 11.50)},
    "mrpc": {"standard": (3.40, 10.20, 14.90, 39.80, 31.80), "effective": (25.50, 17.40, 3.60, 40.40, 13.00)},
    "qnli": {"standard": (4.70, 7.40, 15.20, 45.10, 27.90), "effective": (29.30, 15.80, 3.40, 46.40, 5.10)},
    "sst2": {"standard": (38.50, 6.10, 0.00, 37.80, 17.60), "effective": (33.80, 11.50, 0.80, 39.40, 14.60)},
    "stsb": {"standard": (4.00, 8.20, 1.80, 50.40, 35.50), "effective": (36.00, 10.30, 0.60, 39.40, 13.60)},
}

# Table 3: evaluation clock time in seconds (paper gives m:ss)
TABLE3_SECONDS = {
    "rte": {"standard": 29, "effective": 58},
    "mrpc": {"standard": 45, "effective": 87},
    "qnli": {"standard": 659, "effective": 1265},
    "sst2": {"standard": 101, "effective": 200},
    "stsb": {"standard": 174, "effective": 353},
}

PAPER_MODEL = "bert-base-uncased (d_head 64, 12 layers x 12 heads), max length 128"


def task_label(task: str) -> str:
    return TASK_LABELS.get(task, task)


def table2_share(task: str, kind: str, pattern: str) -> float | None:
    """The paper's share (0..1) of ``pattern`` for ``task`` and ``kind``; None when not reported."""
    row = TABLE2_PERCENT.get(task, {}).get(kind)
    if row is None or pattern not in TABLE2_PATTERNS:
        return None
    return row[TABLE2_PATTERNS.index(pattern)] / 100


def table2_tasks(tasks=None) -> tuple[str, ...]:
    """The paper's Table 2 tasks among ``tasks`` (all five when None or none of them is there)."""
    chosen = tuple(task for task in (tasks or ()) if task in TABLE2_PERCENT)
    return chosen or tuple(TABLE2_PERCENT)


def table2_mean(kind: str, pattern: str, tasks=None) -> float:
    """The paper's share of ``pattern`` averaged over ``tasks`` (table2_tasks: like for like with
    ours when a subset is selected; all five by default)."""
    shares = [table2_share(task, kind, pattern) for task in table2_tasks(tasks)]
    return sum(shares) / len(shares)


def mmss(seconds: float | None) -> str:
    """Seconds as the paper's m:ss ("0:29", "21:05")."""
    if seconds is None:
        return "–"
    whole = int(round(seconds))
    return f"{whole // 60}:{whole % 60:02d}"
