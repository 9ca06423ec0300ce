"""Print the README's Findings and per-task tables (Markdown) from a run folder's caches.

    python tools/findings_table.py data/minilm

Uses the dashboard's own findings and readers, so the README and the Overview page cannot
disagree.
"""

import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from dashboard import data, paper  # noqa: E402
from dashboard.findings import findings  # noqa: E402


def markdown(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return header + "\n".join("| " + " | ".join(str(value) for value in row) + " |"
                              for row in frame.iter_rows())


def per_task(run: data.Run, tasks: tuple[str, ...]) -> pl.DataFrame:
    shares = data.read(run, "pattern_shares", tasks=tasks)
    cls_row = data.read(run, "head_summary", tasks=tasks, layer=run.n_layers - 1,
                        measure=("cls_row_sep", "cls_row_punct", "cls_row_cls"))
    summary = data.read(run, "task_summary", tasks=tasks)
    metrics = data.read(run, "metrics", tasks=tasks)
    rows = []
    for task in tasks:
        def share(kind, pattern):
            value = shares.filter((pl.col("task") == task) & (pl.col("kind") == kind)
                                  & (pl.col("pattern") == pattern))["share"]
            return f"{value[0]:.1%}" if len(value) else "–"

        def cls(kind, measure):
            value = cls_row.filter((pl.col("task") == task) & (pl.col("kind") == kind)
                                   & (pl.col("measure") == measure))["mean"].mean()
            return f"{value:.3f}" if value is not None else "–"

        def seconds(kind):
            value = metrics.filter((pl.col("task") == task) & (pl.col("kind") == kind)
                                   & (pl.col("metric") == "eval_seconds"))["value"]
            return value[0] if len(value) else None

        task_row = summary.filter(pl.col("task") == task)
        standard, effective = seconds("standard"), seconds("effective")
        rows.append({
            "task": paper.task_label(task),
            "vertical std→eff (paper)": f"{share('standard', 'vertical')}→{share('effective', 'vertical')} "
                                        f"({paper.table2_share(task, 'standard', 'vertical'):.1%}→"
                                        f"{paper.table2_share(task, 'effective', 'vertical'):.1%})",
            "block std→eff (paper)": f"{share('standard', 'block')}→{share('effective', 'block')} "
                                     f"({paper.table2_share(task, 'standard', 'block'):.1%}→"
                                     f"{paper.table2_share(task, 'effective', 'block'):.1%})",
            "[CLS]→[SEP] std→eff": f"{cls('standard', 'cls_row_sep')}→{cls('effective', 'cls_row_sep')}",
            "[CLS]→punct std→eff": f"{cls('standard', 'cls_row_punct')}→{cls('effective', 'cls_row_punct')}",
            "[CLS]→[CLS] std→eff": f"{cls('standard', 'cls_row_cls')}→{cls('effective', 'cls_row_cls')}",
            "eval time eff/std": f"{effective / standard:.2f}×" if standard and effective else "–",
            "n ≤ d_head": f"{task_row['share_le_d_head'][0]:.0%}" if len(task_row) else "–",
            "mean n": f"{task_row['mean_seq_len'][0]:.0f}" if len(task_row) else "–",
        })
    return pl.DataFrame(rows)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tools/findings_table.py RUN_FOLDER", file=sys.stderr)
        return 2
    run = data.load_run(Path(argv[0]).name, str(Path(argv[0]).resolve()))
    tasks = run.tasks_with_data()
    print(markdown(findings(run, tasks)))
    print()
    print(markdown(per_task(run, tasks)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
