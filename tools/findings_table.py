"""Print the README's Findings and per-task tables (Markdown) from a run folder's caches.

    python tools/findings_table.py data/minilm
    python tools/findings_table.py data/minilm --vs data/mpnet   # one column per run, their common tasks

Uses the dashboard's own findings and readers (and, with --vs, the Compare runs page's table), so
the README and the dashboard cannot disagree.
"""

import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from dashboard import data, paper  # noqa: E402
from dashboard.findings import (NORM_MEASURES, eval_times, final_cls_row, findings, layer_head_means,  # noqa: E402
                                read_head_summary)


def markdown(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return header + "\n".join("| " + " | ".join(str(value) for value in row) + " |"
                              for row in frame.iter_rows())


def per_task(run: data.Run, tasks: tuple[str, ...]) -> pl.DataFrame:
    # the Findings' own reads and filters: these per-task numbers come from the rows the Findings average
    shares = data.read(run, "pattern_shares", tasks=tasks)
    head_summary = read_head_summary(run, tasks)
    cls_row = final_cls_row(run, head_summary)
    means = layer_head_means(head_summary, (*NORM_MEASURES, "support_share"))
    summary = data.read(run, "task_summary", tasks=tasks)
    ratios = dict(eval_times(data.read(run, "metrics", tasks=tasks), tasks).select("task", "ratio").iter_rows())
    rows = []
    for task in tasks:
        def share(kind, pattern):
            value = shares.filter(task=task, kind=kind, pattern=pattern)["share"]
            return f"{value[0]:.1%}" if len(value) else "–"

        def cls(kind, measure):
            value = cls_row.filter(task=task, kind=kind, measure=measure)["mean"].mean()
            return f"{value:.3f}" if value is not None else "–"

        def mean(kind, measure, column="mean", digits=3):
            value = means.filter(task=task, kind=kind, measure=measure)[column]
            return f"{value[0]:.{digits}f}" if len(value) and value[0] is not None else "–"

        task_row = summary.filter(pl.col("task") == task)
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
            **{f"{token} std→norm": f"{mean('standard', measure)}→{mean('norm', measure)}"
               for measure, token in NORM_MEASURES.items()},
            "efficient n": mean("efficient", "support_share", "n", 0),
            "support std→efficient": f"{mean('standard', 'support_share')}→{mean('efficient', 'support_share')}",
            "vertical std→efficient": f"{share('standard', 'vertical')}→{share('efficient', 'vertical')}",
            "eval time eff/std": f"{ratios[task]:.2f}×" if ratios[task] is not None else "–",
            "n ≤ d_head": f"{task_row['share_le_d_head'][0]:.0%}" if len(task_row) else "–",
            "mean n": f"{task_row['mean_seq_len'][0]:.0f}" if len(task_row) else "–",
        })
    return pl.DataFrame(rows)


def _load(folder: str) -> data.Run:
    return data.load_run(Path(folder).name, str(Path(folder).resolve()))


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--vs") or argv[0] in ("-h", "--help"):
        print("usage: python tools/findings_table.py RUN_FOLDER [--vs OTHER_RUN_FOLDER]", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    run = _load(argv[0])
    if len(argv) == 3:
        from dashboard import run_compare

        other = _load(argv[2])
        pair = (run, other)
        tasks = run_compare.split_tasks(run.tasks_with_data(), other).common
        print(markdown(run_compare.facts(pair, tasks)))
        print()
        print(markdown(run_compare.findings_side_by_side(pair, tasks)))
        return 0
    tasks = run.tasks_with_data()
    print(markdown(findings(run, tasks)))
    print()
    print(markdown(per_task(run, tasks)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
