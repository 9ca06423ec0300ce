"""Command line of ``python -m precompute``: parse options, run the stages, report errors in one line."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import sys
import time
from pathlib import Path

from precompute import ConfigError, PrecomputeError
from precompute.config import EMBEDDED_MODEL, RunConfig, parse_stages, parse_tasks, resolve_model
from precompute.schema import STAGES, TASKS
from precompute.store import RunFolder, Shard, disk_full_message

DESCRIPTION = """\
Fine-tune a model on GLUE tasks, then extract standard and effective attention measurements
into a versioned Parquet run folder that the dashboard reads (schema: docs/SCHEMA.md).
Every stage is resumable: re-running the same command after Ctrl-C or kill -9 continues where
it stopped, and re-running a finished command does nothing (use --force to redo)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m precompute", description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS),
                   help="comma-separated GLUE tasks, case-insensitive; GLUE folder names (RTE, SST-2, STS-B) work too")
    p.add_argument("--model", default=EMBEDDED_MODEL,
                   help="'minilm' (the embedded all-MiniLM-L6-v2), a Hugging Face id such as bert-base-uncased, or a local folder")
    p.add_argument("--glue-dir", type=Path, default=None,
                   help="folder in the GLUE TSV layout (DIR/RTE/train.tsv, DIR/RTE/dev.tsv, ...); default: the Hugging Face hub (nyu-mll/glue)")
    p.add_argument("--carve-train-from-dev", type=float, default=None, metavar="FRACTION",
                   help="for tasks whose source has no train split (QNLI in some GLUE folders): train on this seeded random "
                        "share of dev and evaluate only on the remaining dev rows (recorded in manifest.json carve_outs)")
    p.add_argument("--out", type=Path, required=True, help="run folder (created if missing; reused to resume)")
    p.add_argument("--max-train-examples", type=int, default=None, help="cap training rows (seeded random subset); default all")
    p.add_argument("--max-eval-examples", type=int, default=None, help="cap eval rows (first rows of dev); default all")
    p.add_argument("--epochs", type=float, default=3.0, help="training epochs (fractions train part of the last epoch)")
    p.add_argument("--batch-size", type=int, default=8, help="training batch size")
    p.add_argument("--lr", type=float, default=2e-5, help="AdamW learning rate, linear decay without warmup")
    p.add_argument("--max-seq-len", type=int, default=128, help="truncate inputs to this many wordpieces")
    p.add_argument("--seed", type=int, default=42, help="seed for model init, data order, caps and carve-outs")
    p.add_argument("--attention", default="softmax", metavar="MAP",
                   help="attention map of every head for fine-tuning and all later stages: softmax, sparsemax or "
                        "sparsegen:<λ> (sparsegen-lin, λ < 1, larger is sparser); one map per run folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available, else cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for finetune, evaluate and attribute (default: all cores); 1 is much faster when "
                        "other jobs share the cores. extract always uses one thread per process: use --shard i/N for more cores")
    p.add_argument("--shard", default="0/1", metavar="i/N",
                   help="process only shard i (0-based) of N of the eval examples in extract and attribute; run finetune,evaluate "
                        "once first")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {', '.join(STAGES)}")
    p.add_argument("--force", action="store_true", help="redo the selected stages for the selected tasks")
    p.add_argument("--map-examples", type=int, default=20, help="examples per task whose full attention maps are stored")
    p.add_argument("--analysis-examples", type=int, default=1000, help="random eval examples per task for map-level analyses")
    p.add_argument("--efficient-examples", type=int, default=100,
                   help="analysed examples per task (the first ones, plus the map sample) that also get the costly efficient kind")
    p.add_argument("--attribution-examples", type=int, default=50,
                   help="analysed examples per task (the first ones, plus the map sample) whose heads' attention is compared "
                        "with gradient attribution (stage attribute; 10-90 s per MiniLM example on one CPU core)")
    p.add_argument("--importance-examples", type=int, default=100,
                   help="analysed examples per task (the first ones, plus the map sample) whose [CLS] attention rows are "
                        "compared with input importance for the output (stage importance; gradients and leave-one-out)")
    return p


def parse_config(argv: list[str]) -> RunConfig:
    """Turn command-line arguments into a validated RunConfig (raises ConfigError)."""
    args = build_parser().parse_args(argv)
    if args.carve_train_from_dev is not None and not 0 < args.carve_train_from_dev < 1:
        raise ConfigError(f"--carve-train-from-dev must be between 0 and 1, got {args.carve_train_from_dev}: pass e.g. 0.6")
    for name in ("max_train_examples", "max_eval_examples", "batch_size", "max_seq_len"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}: pass a positive number")
    for name, example in (("efficient_examples", 100), ("attribution_examples", 50), ("importance_examples", 100)):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}: pass e.g. {example}")
    if args.epochs <= 0:
        raise ConfigError(f"--epochs must be positive, got {args.epochs}: pass e.g. 3")
    return RunConfig(
        tasks=parse_tasks(args.tasks), out=args.out, model=args.model, glue_dir=args.glue_dir,
        carve_train_from_dev=args.carve_train_from_dev, max_train_examples=args.max_train_examples,
        max_eval_examples=args.max_eval_examples, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, max_seq_len=args.max_seq_len, seed=args.seed, device=args.device,
        shard=Shard.parse(args.shard), stages=parse_stages(args.stages), force=args.force,
        map_examples=args.map_examples, analysis_examples=args.analysis_examples, threads=args.threads,
        efficient_examples=args.efficient_examples, attribution_examples=args.attribution_examples,
        importance_examples=args.importance_examples, attention=args.attention,
    )


def run_task(run: RunFolder, task: str, config: RunConfig, base_model: str) -> None:
    """Run the per-task stages (finetune, evaluate, extract, attribute, importance) for one task."""
    from precompute import finetune, glue, manifest

    data = glue.load_task(task, glue_dir=config.glue_dir, carve_train_from_dev=config.carve_train_from_dev,
                          seed=config.seed, max_train_examples=config.max_train_examples,
                          max_eval_examples=config.max_eval_examples)
    manifest.record_task_data(run, data, config)
    if config.force:  # a redone stage makes every later stage stale too
        first = min(STAGES.index(stage) for stage in config.stages)
        for stage in STAGES[first:]:
            run.clear(stage, task)
    sharded = config.shard.count > 1
    if "finetune" in config.stages and not sharded:
        if not finetune.run_finetune(run, task, data.train, base_model, config):
            return  # stopped early by the test hook; a rerun resumes
    if not run.stage_done("finetune", task):
        raise ConfigError(f"task {task} has no fine-tuned checkpoint in {run.root}: run with --stages finetune first")
    if "evaluate" in config.stages and not sharded:
        from precompute import evaluate

        evaluate.run_evaluate(run, task, data.eval, config)
    if "extract" in config.stages:
        from precompute import extract

        extract.run_extract(run, task, run.checkpoint_dir(task), base_model, data.eval, config, config.shard)
    if "attribute" in config.stages:
        from precompute import attribute

        if attribute.run_attribute(run, task, run.checkpoint_dir(task), data.eval, config, config.shard):
            run.clear("analyse", task)  # new attribution rows make the task's analysis stale: redo it
    if "importance" in config.stages:
        from precompute import importance

        if importance.run_importance(run, task, run.checkpoint_dir(task), data.eval, config, config.shard):
            run.clear("analyse", task)


def run_pipeline(config: RunConfig) -> None:
    """All selected stages for all selected tasks, then the cross-task analysis."""
    from precompute import finetune, manifest

    from effattn import parse_attention_map

    # canonical, so that one map has one name in the manifest (an unknown one: one-line error)
    config = dataclasses.replace(config, attention=parse_attention_map(config.attention))
    run = RunFolder(config.out)
    base_model = resolve_model(config.model)
    device = str(finetune.pick_device(config.device))
    manifest.record_run(run, config, base_model, device)
    for task in config.tasks:
        run_task(run, task, config, base_model)
    todo = [task for task in config.tasks if not run.stage_done("analyse", task)]
    if "analyse" in config.stages and todo:
        if config.shard.count > 1:  # other shards may still be extracting
            print(f"note: shard {config.shard} done; run --stages analyse once every shard has finished", file=sys.stderr)
            return
        from precompute import analyse

        for task in todo:
            started = time.perf_counter()
            analyse.run_analyse(run, [task])
            run.mark_stage_done("analyse", task, seconds=time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """Entry point; project errors become one line on stderr and exit code 2."""
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv)  # --help exits here, before torch loads
    except PrecomputeError as error:
        return _report(error)
    from effattn.errors import EffattnError

    try:
        run_pipeline(config)
    except (PrecomputeError, EffattnError) as error:
        return _report(error)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        return _report(disk_full_message(f"({error.filename or 'while writing'})"))
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def _report(error: Exception | str) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 2
