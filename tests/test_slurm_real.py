"""cluster/submit.sh through a real single-node Slurm (tests/slurm_fixture.py): the finetune job,
the two-task shard array and the analyse job run as Slurm schedules them, and the caches equal
one in-process run's. Marked `slurm` (`pytest -m slurm` runs only these); skipped, with the
reason, where slurm-wlm is not installed or the tests do not run as root."""

import re
import sys
import time
import warnings
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from conftest import tiny_run_argv
from precompute.cli import main
from slurm_fixture import log_tails, missing_requirement, slurm_cluster  # noqa: F401  (the fixture, found by name)
from test_faults import cache_tables

with warnings.catch_warnings():  # until the marker is registered in pyproject.toml
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    # skipped before the session's tiny model is built, which costs seconds
    pytestmark = [pytest.mark.slurm, pytest.mark.skipif(bool(missing_requirement()), reason=str(missing_requirement()))]

REPO = Path(__file__).resolve().parents[1]
JOBS_SECONDS = 600  # about 40 s of CPU in all; minutes where other work shares the cores
DONE_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}


@pytest.fixture(scope="module")
def argv_for(glue_dir, tiny_bert_dir):
    """A tiny run of every stage, small enough that two shards each get examples."""
    return lambda out: tiny_run_argv("rte", out, glue_dir, tiny_bert_dir, batch_size=2, analysis_examples=4,
                                     map_examples=2, efficient_examples=2, attribution_examples=2,
                                     importance_examples=2)


def submit(cluster, shards: int, options: list[str], logs: Path) -> list[str]:
    """cluster/submit.sh from the repository root; the job ids (finetune, array, analyse)."""
    env = {**cluster.env, "EFFATTN_PYTHON": sys.executable, "HF_HUB_OFFLINE": "1",
           # the node has 2 CPUs and 4 GB, not precompute.sbatch's 4 and 16G
           "EFFATTN_SBATCH_OPTIONS": "--cpus-per-task=1 --mem=1500M", "EFFATTN_LOG_DIR": str(logs)}
    done = cluster.run(["bash", str(REPO / "cluster" / "submit.sh"), str(shards), "--", *options], cwd=REPO,
                       env=env)
    # "submitted: finetune+evaluate 1, shards 2 (0-1), analyse 3"
    found = re.fullmatch(r"submitted: finetune\+evaluate (\d+), shards (\d+) \(0-\d+\), analyse (\d+)\n", done.stdout)
    assert found, done.stdout
    return list(found.groups())


def wait_until(cluster, finished, what: str) -> None:
    deadline = time.monotonic() + JOBS_SECONDS
    while not finished():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {JOBS_SECONDS} s\n{log_tails(cluster.root)}")
        time.sleep(0.5)


def job_logs(logs: Path) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()}" for log in sorted(logs.glob("*.log")))


def test_submit_sh_on_real_slurm_gives_the_one_process_caches(slurm_cluster, argv_for, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    first, array, last = submit(slurm_cluster, 2, argv_for(tmp_path / "sharded"), logs)
    assert main(argv_for(tmp_path / "one-process")) == 0  # while Slurm runs the jobs
    jobs = lambda: [slurm_cluster.job(first), *slurm_cluster.jobs(array), slurm_cluster.job(last)]  # noqa: E731
    wait_until(slurm_cluster, lambda: all(job["JobState"] in DONE_STATES for job in jobs()), "the three jobs")
    states = [(job["JobName"], job.get("ArrayTaskId", "-"), job["JobState"], job["ExitCode"]) for job in jobs()]
    expected = [("effattn-finetune", "-"), ("effattn-shards", "0"), ("effattn-shards", "1"), ("effattn-analyse", "-")]
    assert sorted(states) == sorted((*job, "COMPLETED", "0:0") for job in expected), f"{states}\n{job_logs(logs)}"
    # each array task ran its own shard, in a process of its own
    shard_logs = sorted(logs.glob("effattn-shards-*.log"))
    assert len(shard_logs) == 2, job_logs(logs)

    reference, sharded = cache_tables(tmp_path / "one-process"), cache_tables(tmp_path / "sharded")
    assert {path.split("/")[-1].split("-")[3] for path in sharded["parts"] if "examples/" in path} == {"00002"}
    assert set(sharded["tables"]) == set(reference["tables"])
    for table, frame in reference["tables"].items():
        # the same rows; floats to 1e-5, because each shard pads its own batches
        assert_frame_equal(sharded["tables"][table], frame, check_exact=False, rel_tol=1e-5, abs_tol=1e-6)


def test_a_failed_finetune_job_keeps_the_shards_and_analyse_from_running(slurm_cluster, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    # a task precompute does not know: it stops at once, before importing torch, with its one-line error
    options = ["--tasks", "nosuchtask", "--out", str(tmp_path / "run")]
    first, array, last = submit(slurm_cluster, 2, options, logs)
    wait_until(slurm_cluster, lambda: slurm_cluster.job(first)["JobState"] in DONE_STATES, "the finetune job")
    finetune = slurm_cluster.job(first)
    assert (finetune["JobState"], finetune["ExitCode"]) == ("FAILED", "2:0"), job_logs(logs)
    assert "error: unknown task 'nosuchtask'" in job_logs(logs) and "Traceback" not in job_logs(logs), job_logs(logs)
    wait_until(slurm_cluster, lambda: slurm_cluster.job(array)["Reason"] == "DependencyNeverSatisfied",
               "the shard array to be marked DependencyNeverSatisfied")
    assert all(job["JobState"] == "PENDING" for job in slurm_cluster.jobs(array)), slurm_cluster.jobs(array)
    assert slurm_cluster.job(last)["JobState"] == "PENDING"
    assert not (tmp_path / "run" / "stages" / "extract").exists()
    slurm_cluster.run(["scancel", array, last])
