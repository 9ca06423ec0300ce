"""Bad command-line inputs of `python -m precompute`: each is one `error: ...` line naming the fix and
exit code 2 (never a traceback), or, where an input used to be silently wrong, the right result."""

import json
import os
import shutil
import subprocess

import polars as pl
import pytest
from safetensors.torch import load_file

from conftest import tiny_run_argv
from precompute.cli import main


def assert_one_error_line(capsys, code: int, fix: str) -> str:
    """Exit code 2, stderr exactly one non-empty `error:` line that names `fix`, no traceback."""
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert "Traceback" not in captured.out + captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert fix in lines[0], lines[0]
    return lines[0]


def _copy(source, target, *, drop=(), replace=None):
    shutil.copytree(source, target)
    for name in drop:
        (target / name).unlink()
    for name, text in (replace or {}).items():
        (target / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return target


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_bert_dir, glue_dir) -> dict:
    """Good inputs (tiny model, fixture GLUE) and one broken variant of each, built once."""
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "empty_model").mkdir()
    (root / "not_a_model").mkdir()
    (root / "not_a_model" / "notes.txt").write_text("a folder without config.json\n")
    t5 = {"model_type": "t5", "is_encoder_decoder": True, "d_model": 32, "num_layers": 1, "num_heads": 2, "d_kv": 16,
          "d_ff": 37, "vocab_size": 100}
    (root / "a_file").write_text("not a folder\n")
    rte_dev = (glue_dir / "RTE" / "dev.tsv").read_text(encoding="utf-8")
    rte_train = (glue_dir / "RTE" / "train.tsv").read_bytes()
    line_3 = rte_train.index(b"\n", rte_train.index(b"\n") + 1) + 1  # start of the file's third line
    return {
        "tiny": tiny_bert_dir, "glue": glue_dir, "out": root / "run", "a_file": root / "a_file",
        "empty_model": root / "empty_model", "not_a_model": root / "not_a_model",
        "missing_model": root / "no_such_folder",
        "bad_json": _copy(tiny_bert_dir, root / "bad_json", replace={"config.json": "{not json"}),
        "no_model_type": _copy(tiny_bert_dir, root / "no_model_type", replace={"config.json": '{"hidden_size": 32}'}),
        "encoder_decoder": _copy(tiny_bert_dir, root / "t5", drop=["model.safetensors"],
                                 replace={"config.json": json.dumps(t5)}),
        "no_weights": _copy(tiny_bert_dir, root / "no_weights", drop=["model.safetensors"]),
        "no_tokenizer": _copy(tiny_bert_dir, root / "no_tokenizer", drop=["tokenizer.json", "tokenizer_config.json"]),
        "header_only_glue": _copy(glue_dir, root / "header_only", replace={"RTE/dev.tsv": rte_dev.splitlines()[0] + "\n"}),
        "empty_glue": _copy(glue_dir, root / "empty_glue", replace={"RTE/dev.tsv": ""}),
        "latin1_glue": _copy(glue_dir, root / "latin1", replace={"RTE/train.tsv": rte_train[:line_3] + b"caf\xe9 "
                                                                  + rte_train[line_3:]}),
    }


def _options(**options):
    return lambda p: tiny_run_argv("rte", p["out"], p["glue"], p["tiny"], **options)


def _model(name, **options):
    return lambda p: tiny_run_argv("rte", p["out"], p["glue"], p.get(name, name), **options)


def _glue(name, **options):
    return lambda p: tiny_run_argv("rte", p["out"], p[name], p["tiny"], **options)


BAD_INPUTS = [
    # numeric options: one table of rules (precompute.config.OPTION_RULES)
    pytest.param(_options(max_seq_len=0), "--max-seq-len", id="max-seq-len-0"),
    pytest.param(_options(map_examples=-1), "--map-examples", id="map-examples-negative"),
    pytest.param(_options(analysis_examples=0), "--analysis-examples", id="analysis-examples-0"),
    pytest.param(_options(efficient_examples=-1), "--efficient-examples", id="efficient-examples-negative"),
    pytest.param(_options(max_eval_examples=0), "--max-eval-examples", id="eval-cap-0"),
    pytest.param(_options(max_train_examples=-5), "--max-train-examples", id="train-cap-negative"),
    pytest.param(_options(batch_size=0), "--batch-size", id="batch-size-0"),
    pytest.param(_options(epochs="nan"), "--epochs", id="epochs-nan"),
    pytest.param(_options(epochs="inf"), "--epochs", id="epochs-inf"),
    pytest.param(_options(epochs=0), "--epochs", id="epochs-0"),
    pytest.param(_options(epochs="three"), "--epochs", id="epochs-not-a-number"),
    pytest.param(_options(lr="nan"), "--lr", id="lr-nan"),
    pytest.param(_options(lr="inf"), "--lr", id="lr-inf"),
    pytest.param(_options(lr=0), "--lr", id="lr-0"),
    pytest.param(_options(lr=-1e-5), "--lr must be a positive", id="lr-negative"),
    pytest.param(_options(lr="-inf"), "--lr must be a positive", id="lr-minus-inf"),
    pytest.param(_options(threads=-1), "--threads", id="threads-negative"),
    pytest.param(_options(threads=0), "--threads", id="threads-0"),
    pytest.param(_options(seed=-1), "--seed", id="seed-negative"),
    pytest.param(_options(seed=2**32), "--seed", id="seed-too-large"),
    pytest.param(_options(carve_train_from_dev="nan"), "--carve-train-from-dev", id="carve-nan"),
    # --max-seq-len against the model: a pair's special tokens plus one wordpiece each, its positions
    pytest.param(_options(max_seq_len=1), "--max-seq-len", id="max-seq-len-below-special-tokens"),
    pytest.param(_options(max_seq_len=4), "at least 5", id="max-seq-len-4"),
    pytest.param(_options(max_seq_len=129), "at most 128", id="max-seq-len-past-positions"),
    pytest.param(_options(max_seq_len=1024), "--max-seq-len 128 or less", id="max-seq-len-1024"),
    # the model: precompute.models
    pytest.param(_model("no-such-org/no-such-model"), "--model minilm", id="unknown-hub-id"),
    pytest.param(_model("missing_model"), "(no such folder): pass --model minilm", id="missing-model-folder"),
    pytest.param(_model("empty_model"), "is empty", id="empty-model-folder"),
    pytest.param(_model("not_a_model"), "no config.json", id="folder-is-not-a-model"),
    pytest.param(_model("a_file"), "--model minilm", id="model-is-a-file"),
    pytest.param(_model("bad_json"), "not valid JSON", id="invalid-config-json"),
    pytest.param(_model("no_model_type"), "save_pretrained", id="config-without-model-type"),
    pytest.param(_model("encoder_decoder"), "only encoder models", id="encoder-decoder"),
    pytest.param(_model("no_weights"), "has no weights", id="model-without-weights"),
    pytest.param(_model("no_tokenizer"), "tokenizer.save_pretrained", id="model-without-tokenizer"),
    # input data: precompute.glue
    pytest.param(_glue("header_only_glue"), "dev.tsv has a header but no rows", id="dev-header-only"),
    pytest.param(_glue("empty_glue"), "dev.tsv is empty", id="dev-empty"),
    pytest.param(_glue("latin1_glue"), "train.tsv:3: byte 0xe9 is not UTF-8", id="non-utf8-bytes"),
    pytest.param(lambda p: ["--tasks", "qnli", "--glue-dir", str(p["glue"]), "--model", str(p["tiny"]), "--out",
                            str(p["out"]), "--carve-train-from-dev", "0.01"], "--carve-train-from-dev",
                 id="carve-leaves-no-train-rows"),
    # the run folder
    pytest.param(lambda p: tiny_run_argv("rte", p["a_file"], p["glue"], p["tiny"]), "--out", id="out-is-a-file"),
    pytest.param(lambda p: tiny_run_argv("rte", p["a_file"] / "run", p["glue"], p["tiny"]), "lies under the file",
                 id="out-under-a-file"),
    pytest.param(lambda p: ["--tasks", "rte"], "--out", id="out-missing"),
]


@pytest.mark.parametrize("make_argv, fix", BAD_INPUTS)
def test_bad_input_is_one_error_line_naming_the_fix(make_argv, fix, paths, capsys):
    assert_one_error_line(capsys, main([str(arg) for arg in make_argv(paths)]), fix)


@pytest.fixture(scope="module")
def read_only_dir(tmp_path_factory):
    """A folder nobody may write into: chmod for a normal user, a read-only tmpfs for root
    (root ignores permissions)."""
    folder = tmp_path_factory.mktemp("read_only")
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("running as root, whom permissions do not stop, and `mount -t tmpfs -o ro` is not permitted here")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("inside", [False, True], ids=["out-read-only", "out-under-read-only"])
def test_read_only_out_is_one_error_line(inside, read_only_dir, paths, capsys):
    out = read_only_dir / "run" if inside else read_only_dir
    assert_one_error_line(capsys, main(tiny_run_argv("rte", out, paths["glue"], paths["tiny"])), "--out")


def test_shortest_max_seq_len_truncates_every_input(tmp_path, paths, capsys):
    """--max-seq-len 1 used to exit 0 with untruncated inputs; the smallest allowed length truncates."""
    argv = tiny_run_argv("rte", tmp_path, paths["glue"], paths["tiny"], max_seq_len=1)
    text = assert_one_error_line(capsys, main(argv), "--max-seq-len")
    shortest = int(text.split("at least ")[1].split()[0])
    argv = tiny_run_argv("rte", tmp_path, paths["glue"], paths["tiny"], max_seq_len=shortest, analysis_examples=3,
                         map_examples=1)
    assert main(argv + ["--stages", "finetune,extract"]) == 0
    seq_len = pl.read_parquet(tmp_path / "examples" / "**" / "*.parquet")["seq_len"]
    assert seq_len.len() == 3 and seq_len.max() == shortest
    assert json.loads((tmp_path / "manifest.json").read_text())["config"]["max_seq_len"] == shortest


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, paths):
    """A run folder whose finetune stage is done (nothing after it)."""
    out = tmp_path_factory.mktemp("fine_tuned") / "run"
    assert main(tiny_run_argv("rte", out, paths["glue"], paths["tiny"]) + ["--stages", "finetune"]) == 0
    return out


def _break_checkpoint(run, how: str) -> None:
    checkpoint = run / "checkpoints" / "rte"
    if how == "deleted":
        shutil.rmtree(checkpoint)
    else:
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_broken_checkpoint_of_a_finished_task_is_fine_tuned_again(how, fine_tuned, tmp_path, paths, capsys):
    run = shutil.copytree(fine_tuned, tmp_path / "run")
    _break_checkpoint(run, how)
    capsys.readouterr()
    assert main(tiny_run_argv("rte", run, paths["glue"], paths["tiny"]) + ["--stages", "finetune,evaluate"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert any("checkpoint" in line for line in notes), notes
    redone, original = (load_file(folder / "checkpoints" / "rte" / "model.safetensors") for folder in (run, fine_tuned))
    assert redone.keys() == original.keys() and all((redone[key] == original[key]).all() for key in original)
    assert (run / "metrics").is_dir()


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_broken_checkpoint_without_the_finetune_stage_names_it(how, fine_tuned, tmp_path, paths, capsys):
    run = shutil.copytree(fine_tuned, tmp_path / "run")
    _break_checkpoint(run, how)
    code = main(tiny_run_argv("rte", run, paths["glue"], paths["tiny"]) + ["--stages", "evaluate"])
    assert_one_error_line(capsys, code, "--stages finetune")
    assert (run / "stages" / "finetune" / "task=rte").exists()  # not cleared: this run cannot redo it


def test_verify_needs_no_other_option(fine_tuned, capsys):
    code = main(["--verify", str(fine_tuned)])
    captured = capsys.readouterr()
    assert code == 0 and "sound" in captured.out and "error" not in captured.err, captured
