"""cluster/submit.sh chains three Slurm jobs (finetune+evaluate → shard array → analyse), and
precompute.sbatch turns an array task into --shard i/N. Here sbatch is a stand-in that records
its arguments, so these run anywhere; test_slurm_real.py submits the jobs to a real Slurm, and
test_faults.py runs the same steps as plain processes."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"


def fake_sbatch(tmp_path) -> tuple[dict, Path]:
    """An sbatch on PATH that prints a job id per call (100, 101, ...) and records its arguments,
    one call per line in the returned file."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\necho $((100 + $(wc -l < {calls}) - 1))\n')
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}, calls


def submit(env, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER / "submit.sh"), "4", "--", "--tasks", "rte", "--out", "/shared/run"],
                          capture_output=True, text=True, env=env, cwd=cwd)


def test_submit_chains_finetune_then_the_shard_array_then_analyse(tmp_path):
    env, calls = fake_sbatch(tmp_path)
    done = submit(env)
    assert done.returncode == 0, done.stderr
    first, array, last = calls.read_text().splitlines()
    assert "--stages finetune,evaluate" in first and "--dependency" not in first
    assert "--dependency=afterok:100" in array and "--array=0-3" in array and "EFFATTN_SHARDS=4" in array
    assert "--stages extract,attribute,importance" in array
    assert "--dependency=afterok:101" in last and "--stages analyse" in last
    assert all("--tasks rte --out /shared/run" in call for call in (first, array, last))
    assert "analyse 102" in done.stdout


def test_site_options_and_the_log_folder_reach_every_job(tmp_path):
    env, calls = fake_sbatch(tmp_path)
    env |= {"EFFATTN_SBATCH_OPTIONS": "--cpus-per-task=1 --mem=2G", "EFFATTN_LOG_DIR": str(tmp_path / "logs")}
    assert submit(env).returncode == 0
    first, array, last = calls.read_text().splitlines()
    assert all("--cpus-per-task=1 --mem=2G" in call for call in (first, array, last))
    assert f"--output={tmp_path}/logs/%x-%j.log" in first and f"--output={tmp_path}/logs/%x-%A_%a.log" in array
    assert (tmp_path / "logs").is_dir()


def test_submit_outside_the_repository_says_where_to_run_it(tmp_path):
    env, calls = fake_sbatch(tmp_path)
    done = submit(env, cwd=tmp_path)
    assert done.returncode == 2 and not calls.exists()
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and f"cd {REPO} first" in done.stderr


def test_an_array_task_runs_its_own_shard_with_its_own_cores(tmp_path):
    env = {**os.environ, "EFFATTN_PYTHON": "echo", "SLURM_ARRAY_TASK_ID": "2", "EFFATTN_SHARDS": "4",
           "SLURM_CPUS_PER_TASK": "3"}
    done = subprocess.run(["bash", str(CLUSTER / "precompute.sbatch"), "--tasks", "rte", "--stages", "extract"],
                          capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["-m", "precompute", "--tasks", "rte", "--stages", "extract", "--shard", "2/4",
                                   "--threads", "3"]
