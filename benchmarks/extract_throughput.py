"""Extraction throughput and peak memory on the embedded MiniLM, CPU, at two eval sizes.

Prints ONE JSON line. Each size runs in its own subprocess so that its peak RSS is its own;
equal peaks at both sizes show that memory stays flat as the eval set grows (extraction streams
chunk by chunk, 64 examples each). The "fine-tuned" model is MiniLM with a freshly initialised
classifier head: attention, and so the cost, does not depend on the head's weights. Inputs are
dev rows of --task from --glue-dir (default RTE, the longest inputs, so the slowest), cycled
when a size exceeds them. Besides wall-clock examples/s it reports examples per CPU-second
(user + system time of the worker), which stays meaningful on a machine shared with other jobs.

    python benchmarks/extract_throughput.py [--task rte] [--sizes 64,256] [--glue-dir ../shared/glue]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _eval_frame(glue_dir: Path, task: str, n: int):
    import polars as pl

    from precompute.glue import dev_path, read_tsv

    dev = read_tsv(task, dev_path(glue_dir, task))
    repeats = -(-n // len(dev))
    frame = pl.concat([dev] * repeats).head(n)
    return frame.with_columns(example_id=pl.int_range(n, dtype=pl.Int64))


def worker(n: int, glue_dir: Path, task: str) -> dict:
    """Extract n examples into a temporary run folder; timing and peak RSS of this process."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from precompute import extract
    from precompute.config import RunConfig, resolve_model
    from precompute.schema import TASKS
    from precompute.store import RunFolder, Shard

    base = resolve_model("minilm")
    frame = _eval_frame(glue_dir, task, n)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "checkpoint"
        torch.manual_seed(0)
        num_labels = TASKS[task].num_labels
        BertForSequenceClassification.from_pretrained(base, num_labels=num_labels).save_pretrained(checkpoint)
        AutoTokenizer.from_pretrained(base).save_pretrained(checkpoint)
        config = RunConfig(tasks=(task,), out=Path(tmp) / "run", analysis_examples=n, device="cpu")
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        extract.run_extract(RunFolder(config.out), task, checkpoint, base, frame, config, Shard())
        seconds, cpu_seconds = time.perf_counter() - started, _cpu_seconds() - cpu_started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"eval_examples": n, "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
            "examples_per_second": round(n / seconds, 2),
            "examples_per_cpu_second": round(n / cpu_seconds, 3), "peak_rss_mb": round(peak_kib / 1024, 1)}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_worker(n: int, glue_dir: Path, task: str) -> dict:
    command = [sys.executable, __file__, "--worker", str(n), "--glue-dir", str(glue_dir), "--task", task]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"worker for {n} examples failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rte", help="GLUE task whose dev rows are extracted")
    parser.add_argument("--sizes", default="64,256", help="comma-separated eval sizes, one subprocess each")
    parser.add_argument("--glue-dir", type=Path, default=REPO.parent / "shared" / "glue")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        sys.path.insert(0, str(REPO))
        print(json.dumps(worker(args.worker, args.glue_dir, args.task)))
        return 0
    runs = [_run_worker(int(size), args.glue_dir, args.task) for size in args.sizes.split(",")]
    print(json.dumps({
        "benchmark": "extract_throughput", "model": "all-MiniLM-L6-v2", "device": "cpu", "task": args.task,
        "examples_per_second": runs[-1]["examples_per_second"],
        "examples_per_cpu_second": runs[-1]["examples_per_cpu_second"],
        "peak_rss_mb": {str(run["eval_examples"]): run["peak_rss_mb"] for run in runs},
        "runs": runs,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
