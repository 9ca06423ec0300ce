"""`python -m precompute --verify RUN`: check every file of a run folder, one line per problem.

Beyond what a rerun repairs by itself (precompute/repair.py: broken, copied, stray or stale parts
and gaps, found from footers and markers), verify reads every row: parts decodable, keys unique
within and across parts (schema.TABLE_KEYS), row counts as manifest.json says, a marker for the
tables on disk, a loadable checkpoint for finished fine-tuning, no leftover temporaries. Each
line ends in the command that fixes it, with the options of the run (manifest.json config).
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from precompute import CacheError
from precompute.repair import (  # noqa: F401  repair_for_rerun: the CLI imports it from here
    Finding, Gap, Part, footer_findings, gaps, lost_facts, repair_for_rerun, scan_parts, unfinished,
)
from precompute.schema import CHUNKED_STAGES, STAGES, TABLE_KEYS, TABLE_STAGE, TABLES
from precompute.store import RunFolder, Shard

__all__ = ["VerifyReport", "repair_for_rerun", "verify_command", "verify_run"]

# options that shape a run's results: a command that redoes part of a run must repeat them
_RUN_OPTIONS = ("model", "glue_dir", "carve_train_from_dev", "max_train_examples", "max_eval_examples", "epochs",
                "batch_size", "lr", "max_seq_len", "seed", "attention", "map_examples", "analysis_examples",
                "efficient_examples", "attribution_examples", "importance_examples")
# per table: columns read besides the keys, for the row-count checks
_COUNTED = {"examples": ("in_map_sample", "in_efficient_sample"), "metrics": ("n_examples",)}
_FORCE_NOTE = "--force redoes the stage and clears the later ones, so they are named too"


@dataclass(frozen=True)
class VerifyReport:
    """What verify_run found: one line per problem, and how much was checked."""

    root: Path
    problems: tuple[str, ...]
    parts: int
    rows: int
    shipped: bool  # no stages/ folder (a copy such as the shipped data/): markers and checkpoints not checked

    @property
    def sound(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        counted = f"{self.parts} parts, {self.rows} rows"
        skipped = "; no stages/ folder (a copy such as data/): stage markers and checkpoints not checked" if self.shipped else ""
        if self.sound:
            return f"run folder {self.root} is sound: {counted}{skipped}"
        return f"run folder {self.root} has {len(self.problems)} problem(s): {counted}{skipped}"


@dataclass(frozen=True)
class Redo:
    """Commands that redo stages of one run, with the options that made it."""

    root: Path
    options: tuple[str, ...] | None  # None when manifest.json does not say

    @classmethod
    def of(cls, root: Path, manifest: dict) -> "Redo":
        config = manifest.get("config")
        if not isinstance(config, dict):
            return cls(root, None)
        from precompute.config import RunConfig

        defaults = {field.name: field.default for field in dataclasses.fields(RunConfig)}
        options: list[str] = []
        for name in _RUN_OPTIONS:
            value = config.get(name)
            if value is not None and value != defaults.get(name):
                options += [f"--{name.replace('_', '-')}", str(value)]
        return cls(root, tuple(options))

    def command(self, task: str, stages: list[str], *, label: str | None = None, force: bool = False) -> str:
        words = ["python", "-m", "precompute", "--out", str(self.root), "--tasks", task, "--stages", ",".join(stages)]
        shard = Shard.from_label(label) if label else None
        if shard is not None and shard.count > 1:
            words += ["--shard", str(shard)]
        words += ["--force"] if force else []
        line = " ".join(shlex.quote(word) for word in [*words, *(self.options or ())])
        return f"`{line}`" + ("" if self.options is not None else " with the other options that made the run")


def verify_command(root: Path) -> int:
    """Print the report of ``root``; 0 when sound, 1 with problems, 2 when it cannot be checked."""
    try:
        report = verify_run(Path(root))
    except CacheError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in report.problems:
        print(line)
    print(report.summary())
    return 0 if report.sound else 1


def verify_run(root: Path) -> VerifyReport:
    """Check every file of the run folder ``root``; a CacheError when it is not a run folder."""
    run = RunFolder(root)
    if not _is_run_folder(run):
        raise CacheError(f"{root} is not a run folder (no manifest.json, stages/ or table folders): "
                         "pass the --out folder of a precompute run")
    problems, manifest = _manifest_problems(run)
    redo = Redo.of(run.root, manifest)
    parts = scan_parts(run)
    findings = footer_findings(parts, run)
    problems += [_finding_line(finding, redo) for finding in findings]
    flagged = {finding.part.path for finding in findings}
    frames, unreadable = _read_rows([part for part in parts if part.path not in flagged], redo)
    shipped = not (run.root / "stages").is_dir()
    # counts of a table are only meant to match once its stage finished, with every part readable
    incomplete = {(part.table, part.task) for part in parts if part.path in flagged or part.path in unreadable
                  or not (shipped or _finished(run, part.stage, part.task))}
    counted = {key: frame for key, frame in frames.items() if key not in incomplete}
    problems += list(unreadable.values()) + _key_problems(frames, redo) + _count_problems(counted, manifest, redo)
    if not shipped:
        problems += [_gap_line(gap, redo) for gap in gaps(parts, run, manifest, findings=findings)]
        problems += [f"{task}: {stage} of shard {label} is unfinished (parts on disk, no stage marker): run "
                     f"{redo.command(task, [stage], label=label)} (it finishes the stage)"
                     for stage, task, label in unfinished(parts, run, findings)]
        problems += _checkpoint_problems(run, redo)
    problems += [f"{path.relative_to(run.root)} is a temporary file of an interrupted write: delete it (a rerun of "
                 f"precompute on {run.root} removes it)" for path in run.leftover_temporaries()]
    rows = sum(part.footer.rows for part in parts if part.footer is not None)
    return VerifyReport(run.root, tuple(problems), len(parts), rows, shipped)


def _is_run_folder(run: RunFolder) -> bool:
    if not run.root.is_dir():
        return False
    return (run.manifest_path.exists() or (run.root / "stages").is_dir()
            or any((run.root / table).is_dir() for table in TABLES))


def _manifest_problems(run: RunFolder) -> tuple[list[str], dict]:
    """(problems of manifest.json, the manifest as far as it can be read or rebuilt)."""
    try:
        manifest = run.read_manifest()
    except CacheError as error:
        return [str(error)], {}
    if run.manifest_path.exists():
        return [], manifest
    if not manifest:
        return [f"{run.manifest_path} is missing and no stage marker remembers it: re-run the precompute command "
                f"that made {run.root} (every stage is redone), or make the run anew in another --out"], {}
    lost = lost_facts(run)
    command = Redo.of(run.root, manifest).command(",".join(manifest["tasks"]), list(STAGES))
    return [f"{run.manifest_path} is missing: run {command} (it rebuilds it from the stage markers"
            f"{'; lost: ' + '; '.join(lost) if lost else ''})"], manifest


def _finding_line(finding: Finding, redo: Redo) -> str:
    part = finding.part
    stages = finding.redone_stages()
    chunked = part.chunk is not None and part.stage in CHUNKED_STAGES
    deleted = "the part and the rest of its chunk" if chunked else "the part"
    return (f"{part.task}: {part.stage} part {part.name} {finding.what}: run "
            f"{redo.command(part.task, stages, label=part.label)} (it deletes {deleted} and redoes {' and '.join(stages)})")


def _gap_line(gap: Gap, redo: Redo) -> str:
    return f"{gap.task}: {gap.what}: run {redo.command(gap.task, [gap.stage], label=gap.label)} (it redoes what is missing)"


def _force_stages(stage: str) -> list[str]:
    """The stages a `--force --stages <stage>` run must name: --force also clears every later stage."""
    return list(STAGES[STAGES.index(stage):])


def _finished(run: RunFolder, stage: str, task: str) -> bool:
    """Whether every shard of one layout has marked ``stage`` done for ``task``."""
    shards = [Shard.from_label(marker.label) for marker in run.markers() if (marker.stage, marker.task) == (stage, task)]
    counts = {shard.count for shard in shards if shard is not None}
    return len(counts) == 1 and {shard.index for shard in shards if shard is not None} == set(range(counts.pop()))


def _read_rows(parts: list[Part], redo: Redo) -> tuple[dict[tuple[str, str], pl.DataFrame], dict[Path, str]]:
    """Decode every part in full; keep its key and counted columns per (table, task), and a
    problem line per part whose rows do not decode."""
    frames: dict[tuple[str, str], list[pl.DataFrame]] = {}
    problems = {}
    for part in parts:
        try:
            frame = pl.read_parquet(part.path)
        except (pl.exceptions.PolarsError, OSError, ValueError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
            problems[part.path] = (
                f"{part.task}: {part.stage} part {part.name} is corrupt (its rows do not decode: {first}): delete it "
                f"and run {redo.command(part.task, _force_stages(part.stage), label=part.label, force=True)} ({_FORCE_NOTE})")
            continue
        columns = [*TABLE_KEYS[part.table], *_COUNTED.get(part.table, ())]
        frames.setdefault((part.table, part.task), []).append(frame.select(columns).with_columns(part=pl.lit(part.name)))
    return {key: pl.concat(found) for key, found in frames.items()}, problems


def _key_problems(frames: dict[tuple[str, str], pl.DataFrame], redo: Redo) -> list[str]:
    problems = []
    for (table, task), frame in frames.items():
        keys = list(TABLE_KEYS[table])
        clashes = (frame.group_by(keys).agg(parts=pl.col("part").unique().sort(), n=pl.len()).filter(pl.col("n") > 1)
                   .group_by("parts").agg(n=pl.len()).sort("n", descending=True))
        stage = TABLE_STAGE[table]
        for names, n in clashes.iter_rows():
            where = f"part {names[0]} holds" if len(names) == 1 else f"parts {' and '.join(names)} hold"
            problems.append(f"{task}: {stage} {where} {n} key(s) ({', '.join(keys)}) more than once: run "
                            f"{redo.command(task, _force_stages(stage), force=True)} ({_FORCE_NOTE})")
    return problems


def _count_problems(frames: dict[tuple[str, str], pl.DataFrame], manifest: dict, redo: Redo) -> list[str]:
    """Rows per task against manifest.json row_counts (and config.analysis_examples)."""
    problems = []
    for task, counts in (manifest.get("row_counts") or {}).items():
        for table, what, found, expected, source in _counts(frames, task, counts, manifest.get("config") or {}):
            if isinstance(expected, int) and found != expected:
                problems.append(f"{task}: {table} has {found} {what}, manifest.json says {expected} ({source}): run "
                                f"{redo.command(task, _force_stages(TABLE_STAGE[table]), force=True)} ({_FORCE_NOTE})")
    return problems


_SAMPLES = (("maps", "map_examples"), ("attribution", "attribution_examples"), ("importance", "importance_examples"))


def _counts(frames: dict[tuple[str, str], pl.DataFrame], task: str, counts: dict, config: dict):
    """(table, what is counted, how many, how many the manifest says, where it says so) of one task."""
    analysed = _min_known(counts.get("eval"), config.get("analysis_examples"))
    examples = frames.get(("examples", task))
    if examples is not None:
        yield "examples", "rows", examples.height, analysed, f"row_counts.{task}.eval and config.analysis_examples"
        yield ("examples", "rows in the map sample", int(examples["in_map_sample"].sum()),
               _min_known(counts.get("map_examples"), analysed), f"row_counts.{task}.map_examples")
        yield ("examples", "rows in the efficient sample", int(examples["in_efficient_sample"].sum()),
               counts.get("efficient_examples"), f"row_counts.{task}.efficient_examples")
    for table, key in _SAMPLES:
        if (frame := frames.get((table, task))) is not None:
            yield table, "examples", frame["example_id"].n_unique(), counts.get(key), f"row_counts.{task}.{key}"
    if (metrics := frames.get(("metrics", task))) is not None:
        yield "metrics", "as n_examples", int(metrics["n_examples"].max()), counts.get("eval"), f"row_counts.{task}.eval"


def _min_known(*values) -> int | None:
    known = [value for value in values if isinstance(value, int)]
    return min(known) if len(known) == len(values) else None


def _checkpoint_problems(run: RunFolder, redo: Redo) -> list[str]:
    from precompute.models import checkpoint_problem

    problems = []
    for marker in run.markers():
        if marker.stage != "finetune":
            continue
        problem = checkpoint_problem(run.checkpoint_dir(marker.task))
        if problem is not None:
            problems.append(f"{marker.task}: finetune is marked done but its checkpoint {problem}: run "
                            f"{redo.command(marker.task, ['finetune'])} (it fine-tunes {marker.task} again; the "
                            "seeded training gives the same model, so later stages keep their rows)")
    return problems
