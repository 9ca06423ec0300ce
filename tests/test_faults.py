"""Faults during `python -m precompute`: kill -9 at several points, two processes on one --out, and
a full disk all end, after a rerun, with caches identical to an uninterrupted run.

Importing torch, transformers and spaCy costs a `python -m precompute` process many seconds, so
the runs that get killed or race each other are forked from one helper process that imported
them once (a "zygote"; it runs nothing before forking, so no thread pool of polars or torch is
copied half-held into a child). Each child is a separate process running `precompute.cli.main`,
so SIGKILL and the run-folder locks act on it as on `python -m precompute`. A kill point is a
hook installed in the child only: SIGKILL right after the first file a stage writes, an exact
point with no polling and no sleeps.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from conftest import tiny_run_argv
from precompute.cli import main
from precompute.schema import STAGE_TABLES, TABLES

TIMING_METRICS = ("eval_seconds", "examples_per_second")  # wall-clock, differ between any two runs

# The helper process: imports everything once, then per request line (JSON) forks a child that
# installs its hooks and runs main(argv) with stdout and stderr in a log file, or waits for one.
ZYGOTE = r"""
import json, os, signal, sys, traceback
import polars, torch, transformers
from precompute import analyse, attribute, evaluate, extract, finetune, importance, pos, store
from precompute.cli import main
from precompute.schema import STAGE_TABLES
pos.load_tagger()  # cached for every child; loading spaCy starts no threads

def kill_after(stage):
    kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if stage == "finetune":  # after the first saved training state
        save = finetune._save_state
        def save_then_die(*args, **kwargs):
            save(*args, **kwargs)
            kill()
        finetune._save_state = save_then_die
        return
    write = store.RunFolder.write_part
    def write_then_die(self, table, *args, **kwargs):  # after the stage's first part file
        path = write(self, table, *args, **kwargs)
        if table in STAGE_TABLES[stage]:
            kill()
        return path
    store.RunFolder.write_part = write_then_die

def log_trainings(log):
    build = finetune._build_trainer
    def build_and_log(*args, **kwargs):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return build(*args, **kwargs)
    finetune._build_trainer = build_and_log

HOOKS = {"kill_after": kill_after, "log_trainings": log_trainings}
for line in sys.stdin:
    request = json.loads(line)
    if request["do"] == "wait":
        _, status = os.waitpid(request["pid"], 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"code": code}), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(log, 1)
            os.dup2(log, 2)
            for name, argument in request["hooks"]:
                HOOKS[name](argument)
            code = main(request["argv"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
"""


class Zygote:
    """Starts children that run main(argv) and waits for them (see the module docstring)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, cwd=Path(__file__).parents[1], env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def _ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, f"the helper process ended (exit code {self.process.wait()})"
        return json.loads(answer)

    def start(self, argv: list[str], log: Path, hooks=()) -> int:
        """Fork a child running main(argv) (output into `log`); returns its pid."""
        return self._ask({"do": "start", "argv": argv, "log": str(log), "hooks": list(hooks)})["pid"]

    def wait(self, pid: int) -> int:
        """The child's exit code, or minus the signal that ended it."""
        return self._ask({"do": "wait", "pid": pid})["code"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


@pytest.fixture(scope="module")
def zygote():
    helper = Zygote()
    yield helper
    helper.close()


@pytest.fixture(scope="module")
def argv_for(glue_dir, tiny_bert_dir):
    """Arguments of one tiny run into `out`: 8 train rows in batches of 2 for 2 epochs (a training
    state is saved after step 4 of 8), every stage, a few analysed examples."""
    return lambda out: tiny_run_argv("rte", out, glue_dir, tiny_bert_dir, batch_size=2, epochs=2, analysis_examples=4,
                                     map_examples=2, efficient_examples=2, attribution_examples=2, importance_examples=2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, argv_for) -> dict:
    """The caches of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(argv_for(out)) == 0
    return cache_tables(out)


def cache_tables(run) -> dict:
    """Every table of a run folder (rows sorted by their non-list columns, timings left out), the
    part files and the stage markers."""
    tables = {}
    for table, schema in TABLES.items():
        files = sorted(run.glob(f"{table}/task=*/part-*.parquet"))
        if not files:
            continue
        frame = pl.concat([pl.read_parquet(path) for path in files])
        if table == "metrics":
            frame = frame.filter(~pl.col("metric").is_in(TIMING_METRICS))
        tables[table] = frame.sort([name for name, dtype in schema.items() if not isinstance(dtype, pl.List)])
    parts = sorted(str(path.relative_to(run)) for path in run.glob("*/task=*/part-*.parquet"))
    markers = sorted(str(path.relative_to(run)) for path in run.glob("stages/*/task=*/*.json"))
    return {"tables": tables, "parts": parts, "markers": markers}


def assert_same_caches(run, reference) -> None:
    caches = cache_tables(run)
    assert caches["parts"] == reference["parts"] and caches["markers"] == reference["markers"]
    for table, frame in reference["tables"].items():
        assert_frame_equal(caches["tables"][table], frame, check_exact=True)


KILL_POINTS = ("finetune", "extract", "analyse")  # in training, between a chunk's parts, in the analysis


def left_behind(out, stage: str) -> bool:
    """Whether a kill landed where it should: the stage wrote its first file, and was not done."""
    if (out / "stages" / stage / "task=rte").exists():
        return False
    if stage == "finetune":
        return (out / "checkpoints" / "rte.training-state" / "state.pt").exists()
    return any(list(out.glob(f"{table}/task=rte/part-*.parquet")) for table in STAGE_TABLES[stage])


@pytest.mark.parametrize("stage", KILL_POINTS)
def test_kill_9_then_rerun_gives_the_uninterrupted_caches(stage, tmp_path, zygote, argv_for, reference):
    out = tmp_path / "run"
    assert zygote.wait(zygote.start(argv_for(out), tmp_path / "log", [("kill_after", stage)])) == -signal.SIGKILL
    assert left_behind(out, stage)
    assert main(argv_for(out)) == 0
    assert_same_caches(out, reference)


def test_two_processes_started_together_train_once_and_both_end_well(tmp_path, zygote, argv_for, reference):
    out, trainings = tmp_path / "run", tmp_path / "trainings.log"
    logs = [tmp_path / f"process-{index}.log" for index in range(2)]
    pids = [zygote.start(argv_for(out), log, [("log_trainings", str(trainings))]) for log in logs]
    codes = [zygote.wait(pid) for pid in pids]
    output = "".join(log.read_text() for log in logs)
    assert codes == [0, 0] and "Traceback" not in output, output
    assert len(trainings.read_text().splitlines()) == 1  # the second waited for the first, then found it done
    assert_same_caches(out, reference)


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs as --out's disk, resized with `resize(bytes)`; root only (mount)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("a small disk needs `mount -t tmpfs`, which only root may run (and only where it is permitted)")

    def resize(size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True, capture_output=True)

    yield folder, resize
    subprocess.run(["umount", str(folder)], check=True)


def _used_bytes(folder) -> int:
    stats = os.statvfs(folder)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


def assert_disk_full_line(capsys, code: int) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and "Traceback" not in err, err
    assert len(errors) == 1 and errors[0].startswith("error: disk full ") and "--out" in errors[0], err
    return errors[0]


def test_full_disk_while_saving_the_training_state_is_one_line_and_a_rerun_completes(small_disk, argv_for, reference,
                                                                                     capsys):
    disk, resize = small_disk
    resize(1 << 20)  # room for the manifest, not for a training state (model + optimizer: megabytes)
    assert "state.pt" in assert_disk_full_line(capsys, main(argv_for(disk / "run")))
    resize(64 << 20)
    assert main(argv_for(disk / "run")) == 0
    assert_same_caches(disk / "run", reference)


def test_full_disk_during_extract_is_one_line_and_a_rerun_completes(small_disk, argv_for, reference, capsys):
    disk, resize = small_disk
    assert main(argv_for(disk / "run") + ["--stages", "finetune,evaluate"]) == 0
    resize(_used_bytes(disk) + (16 << 10))  # manifest updates (3 kB) fit, the first extract part (maps, 28 kB) does not
    assert_disk_full_line(capsys, main(argv_for(disk / "run")))
    assert not (disk / "run" / "stages" / "extract").exists()
    resize(64 << 20)
    assert main(argv_for(disk / "run")) == 0
    assert_same_caches(disk / "run", reference)
    assert not [path for path in (disk / "run").rglob("*.tmp")]  # no half-written temporaries left


def test_full_disk_while_saving_the_checkpoint_is_one_line_and_a_rerun_completes(small_disk, argv_for, capsys):
    disk, resize = small_disk
    resize(1 << 20)  # half an epoch saves no training state: the checkpoint (safetensors) is the first large write
    argv = argv_for(disk / "run") + ["--epochs", "0.5", "--stages", "finetune"]
    assert_disk_full_line(capsys, main(argv))
    assert not (disk / "run" / "checkpoints" / "rte").exists()
    resize(64 << 20)
    assert main(argv) == 0
    assert (disk / "run" / "stages" / "finetune" / "task=rte").exists()


def test_shards_in_separate_processes_then_analyse_give_the_one_process_caches(tmp_path, zygote, argv_for, reference):
    """What cluster/submit.sh runs as Slurm jobs: finetune and evaluate once, extract, attribute and
    importance as N shard processes side by side, then analyse once every shard has finished."""
    out = tmp_path / "run"
    assert main(argv_for(out) + ["--stages", "finetune,evaluate"]) == 0
    shard_stages = ["--stages", "extract,attribute,importance"]
    pids = [zygote.start(argv_for(out) + ["--shard", f"{index}/2", *shard_stages], tmp_path / f"shard-{index}.log")
            for index in range(2)]
    codes = [zygote.wait(pid) for pid in pids]
    output = "".join((tmp_path / f"shard-{index}.log").read_text() for index in range(2))
    assert codes == [0, 0] and "Traceback" not in output, output
    assert main(argv_for(out) + ["--stages", "analyse"]) == 0
    sharded = cache_tables(out)
    assert {path.split("/")[-1].split("-")[3] for path in sharded["parts"] if "examples/" in path} == {"00002"}
    assert set(sharded["tables"]) == set(reference["tables"])
    for table, frame in reference["tables"].items():
        # the same rows; floats to 1e-5, because each shard pads its own batches
        assert_frame_equal(sharded["tables"][table], frame, check_exact=False, rel_tol=1e-5, abs_tol=1e-6)
