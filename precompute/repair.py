"""What a rerun must redo in a run folder, found from part footers and stage markers only, and
the repair that precompute makes at the start of every run (repair_for_rerun).

A *broken* part (unreadable, another schema version, other columns) is deleted with the rest of
its chunk and its stage's marker is cleared, so the run redoes exactly that chunk; its rows come
back identically, so later stages keep theirs. A *surplus* part (a byte-identical copy of
another, a name precompute never writes, a shard layout the finished stage does not have) is
deleted too, and the task's analysis is redone, since it may have counted those rows twice. A
*gap* (a stage marked done whose chunk lacks a part) clears the marker, so the run fills it.
A finished fine-tuning whose checkpoint is missing or damaged is redone when the run includes
the finetune stage; the later stages keep their rows (the seeded training gives the same model).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from precompute import CacheError
from precompute.checks import PartFooter, inspect_part
from precompute.schema import CHUNKED_STAGES, STAGE_ALWAYS_TABLES, STAGES, TABLE_STAGE, TABLES
from precompute.store import PART_NAME, RunFolder, Shard

_WHOLE_STAGES = ("evaluate", "analyse")  # written in one go: a broken part redoes the whole stage


@dataclass(frozen=True)
class Part:
    """One part file of a run folder and what its name and footer say."""

    path: Path
    table: str
    task: str
    label: str | None  # its shard label (00000-of-00001); None when write_part never makes such a name
    chunk: int | None
    footer: PartFooter | None  # None when unreadable
    fault: str | None  # what is wrong with the footer ("is corrupt (...)"), None when sound

    @property
    def stage(self) -> str:
        return TABLE_STAGE[self.table]

    @property
    def name(self) -> str:
        """The path inside the run folder, as reports show it."""
        return f"{self.table}/task={self.task}/{self.path.name}"


@dataclass(frozen=True)
class Finding:
    """A part that a rerun deletes and redoes."""

    part: Part
    what: str  # e.g. "is corrupt (not a Parquet file)"
    surplus: bool  # it should not be there at all, so the analysis of its rows is redone too

    def redone_stages(self) -> list[str]:
        stage = self.part.stage
        return [stage, "analyse"] if self.surplus and stage not in _WHOLE_STAGES else [stage]


@dataclass(frozen=True)
class Gap:
    """A stage marked done for a shard whose parts are not all there."""

    stage: str
    task: str
    label: str
    chunk: int | None  # the chunk to redo; None: the stage has no parts at all
    what: str


def scan_parts(run: RunFolder, tasks: list[str] | None = None) -> list[Part]:
    """Every part file of the run (of ``tasks``), with its footer read."""
    parts = []
    for table in TABLES:
        for path in run.part_files(table, tasks):
            match = PART_NAME.fullmatch(path.name)
            label = match["shard"] if match and Shard.from_label(match["shard"]) else None
            footer, fault = inspect_part(path, table)
            parts.append(Part(path, table, path.parent.name.removeprefix("task="), label,
                              int(match["chunk"]) if label else None, footer, fault))
    return parts


def footer_findings(parts: list[Part], run: RunFolder) -> list[Finding]:
    """Broken and surplus parts, one finding per part (the first reason found)."""
    findings = [Finding(part, part.fault, False) for part in parts if part.fault]
    findings += [Finding(part, "has a name precompute never writes (a copy?)", True) for part in parts
                 if part.label is None and not part.fault]
    findings += _copies(parts) + _stale_layouts(parts, run)
    first: dict[Path, Finding] = {}
    for finding in findings:
        first.setdefault(finding.part.path, finding)
    return list(first.values())


def _copies(parts: list[Part]) -> list[Finding]:
    """Every member of a group of byte-identical parts: which one is the original cannot be told."""
    groups: dict[tuple, list[Part]] = {}
    for part in parts:
        if part.footer is not None and part.fault is None:
            groups.setdefault((part.table, part.task, part.footer.digest), []).append(part)
    return [Finding(part, f"is a byte-identical copy of {', '.join(o.path.name for o in group if o is not part)}", True)
            for group in groups.values() if len(group) > 1 for part in group]


def _stale_layouts(parts: list[Part], run: RunFolder) -> list[Finding]:
    """Parts of a shard count other than the one the stage's markers have (same rows, two labels)."""
    marked: dict[tuple[str, str], set[int]] = {}
    for marker in run.markers():
        if (shard := Shard.from_label(marker.label)) is not None:
            marked.setdefault((marker.stage, marker.task), set()).add(shard.count)
    counts: dict[tuple[str, str], set[int]] = {}
    for part in parts:
        if part.label is not None:
            counts.setdefault((part.stage, part.task), set()).add(Shard.from_label(part.label).count)
    findings = []
    for (stage, task), found in counts.items():
        layouts = marked.get((stage, task), set())
        keep = next(iter(layouts)) if len(layouts) == 1 else None
        if found == {keep} or (keep is None and len(found) == 1):
            continue
        why = (f"is of a {{}}-shard layout, but the finished {stage} has {keep} shard(s)" if keep is not None
               else f"is of a {{}}-shard layout, beside parts of {len(found) - 1} other layout(s)")
        findings += [Finding(part, why.format(Shard.from_label(part.label).count), True) for part in parts
                     if part.stage == stage and part.task == task and part.label is not None
                     and Shard.from_label(part.label).count != keep]
    return findings


def gaps(parts: list[Part], run: RunFolder, manifest: dict, tasks: list[str] | None = None,
         findings: list[Finding] = ()) -> list[Gap]:
    """Stages marked done for a shard whose always-written tables lack a part (shards with
    ``findings`` are left out: repairing those clears their markers anyway)."""
    present: dict[tuple[str, str, str], set[int]] = {}
    for part in parts:
        if part.label is not None:
            present.setdefault((part.table, part.task, part.label), set()).add(part.chunk)
    repaired = {(f.part.stage, f.part.task, f.part.label) for f in findings}
    found = []
    for marker in run.markers():
        shard = Shard.from_label(marker.label)
        if (marker.stage not in STAGE_ALWAYS_TABLES or shard is None or (tasks is not None and marker.task not in tasks)
                or (marker.stage, marker.task, marker.label) in repaired):
            continue
        always = STAGE_ALWAYS_TABLES[marker.stage]
        key = (marker.task, marker.label)
        done = present.get((always[-1], *key), set())
        where = f"{marker.stage} of shard {marker.label} is marked done but"
        if not done:
            if _expects_rows(marker.stage, marker.task, shard, manifest):
                found.append(Gap(marker.stage, marker.task, marker.label, None, f"{where} has no {always[-1]} parts"))
            continue
        if marker.stage not in CHUNKED_STAGES:
            found += [Gap(marker.stage, marker.task, marker.label, None, f"{where} has no {table} part")
                      for table in always if not present.get((table, *key))]
            continue
        missing = {chunk: always[-1] for chunk in range(max(done) + 1) if chunk not in done}
        for table in always[:-1]:
            missing.update({chunk: table for chunk in done - present.get((table, *key), set())})
        found += [Gap(marker.stage, marker.task, marker.label, chunk, f"{where} chunk {chunk} has no {table} part")
                  for chunk, table in sorted(missing.items())]
    return found


def _expects_rows(stage: str, task: str, shard: Shard, manifest: dict) -> bool:
    """Whether a finished stage must have written parts for this shard (a shard's share of a small
    sample may be empty: the samples are prefixes of the analysis order, split into blocks)."""
    counts = (manifest.get("row_counts") or {}).get(task) or {}
    if stage in _WHOLE_STAGES:
        return True
    size = counts.get({"extract": "eval", "attribute": "attribution_examples", "importance": "importance_examples"}[stage])
    if not isinstance(size, int):
        return stage == "extract" and shard.count == 1
    return size > 0 and (shard.count == 1 or (stage == "extract" and size >= shard.count))


def unfinished(parts: list[Part], run: RunFolder, findings: list[Finding] = ()) -> list[tuple[str, str, str]]:
    """(stage, task, shard label) of parts on disk whose stage has no marker for that shard (those
    with ``findings`` left out)."""
    marked = {(marker.stage, marker.task, marker.label) for marker in run.markers()}
    repaired = {(f.part.stage, f.part.task, f.part.label) for f in findings}
    return sorted({(part.stage, part.task, part.label) for part in parts if part.label is not None}
                  - marked - repaired)


def repair_for_rerun(run: RunFolder, tasks, stages=STAGES) -> list[str]:
    """Prepare ``run`` for a rerun of ``stages`` on ``tasks``: rebuild a missing manifest.json from
    the markers, delete broken and surplus parts and clear the markers of their stages, clear markers
    with gaps, redo fine-tuning whose checkpoint is broken (when ``stages`` has finetune), remove
    leftover temporaries. Prints one note per repair on stderr and returns the notes.
    Cheap (footers and markers only), so precompute calls it at the start of every run; it must
    run alone in the folder (the CLI holds the run folder's lock), since it deletes files."""
    tasks = list(tasks)
    notes = _rebuild_manifest(run)
    try:
        manifest = run.read_manifest()
    except CacheError:  # the run's first read of the manifest reports it
        manifest = {}
    parts = scan_parts(run, tasks)
    findings = footer_findings(parts, run)
    notes += [_repair(run, finding) for finding in findings]
    notes += [_fill(run, gap) for gap in gaps(parts, run, manifest, tasks, findings)]
    if "finetune" in stages:
        notes += _redo_broken_checkpoints(run, tasks)
    leftovers = run.leftover_temporaries()
    for path in leftovers:
        path.unlink(missing_ok=True)
    if leftovers:
        notes.append(f"removed {len(leftovers)} temporary file(s) of interrupted writes, "
                     f"e.g. {leftovers[0].relative_to(run.root)}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return notes


def _rebuild_manifest(run: RunFolder) -> list[str]:
    if run.manifest_path.exists() or not run.markers():
        return []
    try:
        run.update_manifest({})  # read_manifest rebuilds it from the markers; this writes it
    except CacheError as error:
        return [f"{run.manifest_path} is missing and cannot be rebuilt ({error})"]
    lost = lost_facts(run)
    return [f"{run.manifest_path} was missing: rebuilt it from the stage markers"
            + (f" (lost: {'; '.join(lost)})" if lost else "")]


def lost_facts(run: RunFolder) -> list[str]:
    """What a manifest rebuilt from the markers lacks: facts that only markers of older versions miss."""
    markers = [(marker, marker.read() or {}) for marker in run.markers()]
    lost = []
    if any("manifest" not in data for _, data in markers):
        lost.append("the run's options, versions and creation time, from markers written before they kept them "
                    "(the rerun records its own)")
    lost += [f"the {marker.stage} facts of {marker.task} (only a --force run from {marker.stage} on brings them back)"
             for marker, data in markers if marker.stage in ("finetune", "evaluate") and not data.get("record")]
    return lost


def _repair(run: RunFolder, finding: Finding) -> str:
    part = finding.part
    if part.stage in _WHOLE_STAGES:
        run.clear(part.stage, part.task)  # its tables and marker: the stage rewrites them all
    elif part.label is not None:
        run.delete_chunk(part.stage, part.task, part.label, part.chunk)
        run.clear_marker(part.stage, part.task, part.label)
    else:
        part.path.unlink(missing_ok=True)
        run.clear_marker(part.stage, part.task)
    if finding.surplus and part.stage not in _WHOLE_STAGES:
        run.clear("analyse", part.task)
    redone = " and ".join(finding.redone_stages())
    return f"{part.task} {part.stage} part {part.name} {finding.what}: deleted it; redoing {redone} for {part.task}"


def _fill(run: RunFolder, gap: Gap) -> str:
    if gap.stage in _WHOLE_STAGES:
        run.clear(gap.stage, gap.task)
    else:
        if gap.chunk is not None:
            run.delete_chunk(gap.stage, gap.task, gap.label, gap.chunk)
        run.clear_marker(gap.stage, gap.task, gap.label)
    return f"{gap.task} {gap.what}: redoing {gap.stage} for {gap.task}"


def _redo_broken_checkpoints(run: RunFolder, tasks: list[str]) -> list[str]:
    from precompute.models import checkpoint_problem  # reads config.json and safetensors headers only

    notes = []
    for task in tasks:
        if run.stage_done("finetune", task) and (problem := checkpoint_problem(run.checkpoint_dir(task))) is not None:
            run.clear("finetune", task)  # its marker, the broken checkpoint and any training state
            notes.append(f"{task} finetune is marked done but its checkpoint {problem}: redoing finetune for {task} "
                         "(later stages keep their rows: the seeded training gives the same model)")
    return notes
