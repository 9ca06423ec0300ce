"""cluster/submit.sh chains three Slurm jobs (finetune+evaluate → shard array → analyse), and
precompute.sbatch turns an array task into --shard i/N. Slurm is not installed here, so sbatch is
a stand-in that records its arguments; the jobs' own work is tested in test_faults.py."""

import os
import subprocess
from pathlib import Path

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def test_submit_chains_finetune_then_the_shard_array_then_analyse(tmp_path):
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    # prints a job id per call (100, 101, ...) and records its arguments, one call per line
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\necho $((100 + $(wc -l < {calls}) - 1))\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(CLUSTER / "submit.sh"), "4", "--", "--tasks", "rte", "--out", "/shared/run"],
                          capture_output=True, text=True, env=env, check=True)
    first, array, last = calls.read_text().splitlines()
    assert "--stages finetune,evaluate" in first and "--dependency" not in first
    assert "--dependency=afterok:100" in array and "--array=0-3" in array and "EFFATTN_SHARDS=4" in array
    assert "--stages extract,attribute,importance" in array
    assert "--dependency=afterok:101" in last and "--stages analyse" in last
    assert all("--tasks rte --out /shared/run" in call for call in (first, array, last))
    assert "analyse 102" in done.stdout


def test_an_array_task_runs_its_own_shard_with_its_own_cores(tmp_path):
    env = {**os.environ, "EFFATTN_PYTHON": "echo", "SLURM_ARRAY_TASK_ID": "2", "EFFATTN_SHARDS": "4",
           "SLURM_CPUS_PER_TASK": "3"}
    done = subprocess.run(["bash", str(CLUSTER / "precompute.sbatch"), "--tasks", "rte", "--stages", "extract"],
                          capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["-m", "precompute", "--tasks", "rte", "--stages", "extract", "--shard", "2/4",
                                   "--threads", "3"]
