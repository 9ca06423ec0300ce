"""precompute.verify and precompute.repair: every kind of damage to a finished run is reported by
`--verify` with the file and the stage to redo, and a rerun repairs it to exactly the rows of
the undamaged run.

One tiny finished run (tiny BERT, fixture GLUE, RTE) is made once per module; each test damages
its own copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from conftest import tiny_run_argv
from precompute.cli import main
from precompute.schema import SCHEMA_VERSION_KEY, TABLE_KEYS, TABLES
from precompute.store import RunFolder
from precompute.verify import repair_for_rerun, verify_command, verify_run

OPTIONS = {"map_examples": 2, "attribution_examples": 2, "importance_examples": 2}
TIMINGS = ("eval_seconds", "examples_per_second")  # metrics rows that measure this machine, not the model


@pytest.fixture(scope="module")
def finished(tmp_path_factory, glue_dir, tiny_bert_dir) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(tiny_run_argv("rte", out, glue_dir, tiny_bert_dir, **OPTIONS)) == 0
    return out


@pytest.fixture(scope="module")
def finished_rows(finished) -> dict[str, pl.DataFrame]:
    return rows(finished)


@pytest.fixture
def run(tmp_path, finished) -> Path:
    """A copy of the finished run for one test to damage."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


@pytest.fixture
def rerun(glue_dir, tiny_bert_dir):
    """rerun(run, *extra) -> exit code of the same precompute command on ``run``."""
    return lambda run, *extra: main([*tiny_run_argv("rte", run, glue_dir, tiny_bert_dir, **OPTIONS), *extra])


def rows(run: Path) -> dict[str, pl.DataFrame]:
    """Every table's rows sorted by its keys (the metrics' timings left out)."""
    tables = {}
    for table in TABLES:
        files = sorted((run / table).glob("task=*/*.parquet"))
        if files:
            frame = pl.read_parquet(files)
            if table == "metrics":
                frame = frame.filter(~pl.col("metric").is_in(TIMINGS))
            tables[table] = frame.sort(list(TABLE_KEYS[table]))
    return tables


def assert_same_rows(run: Path, expected: dict[str, pl.DataFrame]) -> None:
    """The same tables, keys and values; floats to 1e-12 relative, since the analysis aggregates
    with polars' streaming engine, whose summation order may vary with the machine's load."""
    got = rows(run)
    assert set(got) == set(expected)
    for table, frame in expected.items():
        assert got[table].select(TABLE_KEYS[table]).equals(frame.select(TABLE_KEYS[table])), table
        assert_frame_equal(got[table], frame, rel_tol=1e-12, abs_tol=1e-15)


def part(run: Path, table: str, index: int = 0) -> Path:
    return sorted((run / table).glob("task=rte/part-*.parquet"))[index]


def report(capsys, run: Path) -> tuple[int, list[str]]:
    code = verify_command(run)
    return code, capsys.readouterr().out.splitlines()


def _rewrite(path: Path, change) -> None:
    change(pl.read_parquet(path)).write_parquet(path, metadata={SCHEMA_VERSION_KEY: "2"})


# ---- damages: damage(run) -> (what the report line names, as it appears in it; words of that
# line). A part is named by its path inside the run: "/<file name> " ------------------------------
def truncate(run):
    path = part(run, "head_measures")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return f"/{path.name} ", ["truncated", "--stages extract"]


def garbage(run):
    part(run, "examples").write_bytes(b"garbage" * 100)
    return f"/{part(run, 'examples').name} ", ["not a Parquet file", "--stages extract"]


def wrong_schema_version(run):
    path = part(run, "layer_influence")
    pl.read_parquet(path).write_parquet(path, metadata={SCHEMA_VERSION_KEY: "1"})
    return f"/{path.name} ", ["schema version 1, this effattn reads 2", "--stages attribute"]


def missing_column(run):
    path = part(run, "head_summary")
    _rewrite(path, lambda frame: frame.drop("std"))
    return f"/{path.name} ", ["lacks the column 'std'", "--stages analyse"]


def copied_part(run):
    shutil.copy(part(run, "maps"), part(run, "maps").with_name("part-00000-of-00001-00007.parquet"))
    return "/part-00000-of-00001-00007.parquet ", ["byte-identical copy", "--stages extract,analyse"]


def copied_part_stray_name(run):
    shutil.copy(part(run, "attribution"), part(run, "attribution").with_name("part-00000-of-00001-00000 (1).parquet"))
    return "/part-00000-of-00001-00000 (1).parquet ", ["never writes", "--stages attribute,analyse"]


def same_rows_under_two_shard_labels(run):
    source = part(run, "examples")  # as if a 2-shard run had written them too: other bytes, same rows
    pl.read_parquet(source).write_parquet(source.with_name("part-00001-of-00002-00000.parquet"), compression="snappy",
                                          metadata={SCHEMA_VERSION_KEY: "2"})
    return "/part-00001-of-00002-00000.parquet ", ["2-shard layout", "--stages extract,analyse"]


def missing_marker(run):
    (run / "stages/extract/task=rte/00000-of-00001.json").unlink()
    return "shard 00000-of-00001", ["extract", "unfinished", "--stages extract"]


def missing_part(run):
    part(run, "head_measures").unlink()
    return "chunk 0 has no head_measures part", ["--stages extract"]


def leftover_temporary(run):
    (part(run, "maps").parent / ".part-00000-of-00001-00001.parquet.x1y2z3.tmp").write_bytes(b"half a part")
    return "/.part-00000-of-00001-00001.parquet.x1y2z3.tmp ", ["interrupted write"]


def deleted_checkpoint(run):
    shutil.rmtree(run / "checkpoints" / "rte")
    return "checkpoints/rte is missing", ["--stages finetune"]


def deleted_manifest(run):
    (run / "manifest.json").unlink()
    return "manifest.json is missing", ["rebuilds it from the stage markers"]


DAMAGES = [truncate, garbage, wrong_schema_version, missing_column, copied_part, copied_part_stray_name,
           same_rows_under_two_shard_labels, missing_marker, missing_part, leftover_temporary, deleted_checkpoint,
           deleted_manifest]


def test_a_finished_run_is_sound(capsys, finished):
    code, lines = report(capsys, finished)
    assert code == 0
    assert lines == [f"run folder {finished} is sound: {verify_run(finished).parts} parts, {verify_run(finished).rows} rows"]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda damage: damage.__name__)
def test_verify_names_the_file_and_the_stage_to_redo(capsys, run, damage):
    named, words = damage(run)
    code, lines = report(capsys, run)
    assert code == 1
    (problem,) = [line for line in lines if named in line]
    assert all(word in problem for word in words), problem
    copies = 2 if damage in (copied_part, copied_part_stray_name) else 1  # both copies are reported
    assert lines[-1].startswith(f"run folder {run} has {copies} problem(s)"), lines


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda damage: damage.__name__)
def test_a_rerun_repairs_the_damage_to_the_same_rows(capsys, run, rerun, finished_rows, damage):
    damage(run)
    notes = repair_for_rerun(RunFolder(run), ["rte"])
    assert notes or damage is missing_marker  # a missing marker needs no repair: the rerun finishes the stage
    err = capsys.readouterr().err
    assert all(f"note: {note}\n" in err for note in notes)
    assert rerun(run) == 0
    assert_same_rows(run, finished_rows)
    assert verify_command(run) == 0, capsys.readouterr().out


def test_a_rebuilt_manifest_keeps_metrics_finetune_facts_and_stage_seconds(run, rerun, finished):
    before = json.loads((finished / "manifest.json").read_text())
    (run / "manifest.json").unlink()
    assert rerun(run) == 0
    after = json.loads((run / "manifest.json").read_text())
    for key in ("metrics", "evaluate", "finetune", "stage_seconds", "created", "row_counts", "attention", "d_head"):
        assert after[key] == before[key], key


def test_a_retrained_checkpoint_is_the_same_model(run, rerun, finished):
    shutil.rmtree(run / "checkpoints" / "rte")
    assert rerun(run) == 0
    weights = "checkpoints/rte/model.safetensors"
    assert (run / weights).read_bytes() == (finished / weights).read_bytes()


def test_a_manifest_that_is_a_list_is_one_line_and_deleting_it_works(capsys, run, rerun, finished_rows):
    (run / "manifest.json").write_text("[1, 2]")
    code, lines = report(capsys, run)
    assert code == 1 and f"{run / 'manifest.json'} holds a JSON list, expected an object: delete it" in lines[0]
    assert rerun(run) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert error.startswith("error: cache ") and "holds a JSON list" in error
    (run / "manifest.json").unlink()  # what the message says to do
    assert rerun(run) == 0
    assert_same_rows(run, finished_rows)


@pytest.mark.parametrize(("version", "sound"), [("2", True), (2, True), ("two", False), (True, False), (None, False)])
def test_a_schema_version_is_the_integer_or_its_string(capsys, run, version, sound):
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "schema_version": version}))
    code, lines = report(capsys, run)
    assert code == (0 if sound else 1), lines
    if not sound:
        assert "expected the integer 2" in lines[0] and "manifest.json" in lines[0]


def test_duplicate_keys_inside_a_part_are_named_and_force_redoes_them(capsys, run, rerun, finished_rows):
    path = part(run, "examples")
    _rewrite(path, lambda frame: pl.concat([frame, frame.head(2)]))
    code, lines = report(capsys, run)
    assert code == 1
    (line,) = [line for line in lines if "more than once" in line]
    assert path.name in line and "--stages extract,attribute,importance,analyse --force" in line
    assert rerun(run, "--stages", "extract,attribute,importance,analyse", "--force") == 0  # what the line says
    assert_same_rows(run, finished_rows)


def test_row_counts_are_checked_against_the_manifest(capsys, run):
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["row_counts"]["rte"]["map_examples"] = 3
    (run / "manifest.json").write_text(json.dumps(manifest))
    code, lines = report(capsys, run)
    assert code == 1
    assert any("maps has 2 examples, manifest.json says 3" in line for line in lines), lines


def test_a_folder_that_is_no_run_is_exit_2_and_one_line(capsys, tmp_path):
    assert verify_command(tmp_path / "nowhere") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "not a run folder" in line and "--out" in line


def test_the_redo_command_repeats_the_runs_options(capsys, run):
    truncate(run)
    _, lines = report(capsys, run)
    assert "--max-eval-examples 6" in lines[0] and "--map-examples 2" in lines[0] and f"--out {run}" in lines[0]


def test_a_part_whose_rows_do_not_decode_is_named_and_force_redoes_it(capsys, run, rerun, finished_rows):
    path = part(run, "maps")
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 4: len(damaged) // 4 + 200] = bytes(200)  # the footer stays readable
    path.write_bytes(bytes(damaged))
    code, lines = report(capsys, run)
    assert code == 1 and len(lines) == 2, lines
    assert f"/{path.name} is corrupt (its rows do not decode" in lines[0]
    assert "--stages extract,attribute,importance,analyse --force" in lines[0]
    path.unlink()  # what the line says to do
    assert rerun(run, "--stages", "extract,attribute,importance,analyse", "--force") == 0
    assert_same_rows(run, finished_rows)


def test_precompute_verify_runs_the_check(capsys, finished, run):
    assert main(["--verify", str(finished)]) == 0
    truncate(run)
    assert main(["--verify", str(run)]) == 1
    assert "truncated" in capsys.readouterr().out
