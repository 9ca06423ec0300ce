"""Extraction throughput and peak memory on the embedded MiniLM, CPU, at two eval sizes.

Prints ONE JSON line. Each size runs in its own subprocess so that its peak RSS is its own;
equal peaks at both sizes show that memory stays flat as the eval set grows (extraction streams
chunk by chunk, 64 examples each). The "fine-tuned" model is MiniLM with a freshly initialised
classifier head: attention, and so the cost, does not depend on the head's weights. Inputs are
dev rows of --task from --glue-dir (default RTE, the longest inputs, so the slowest), cycled
when a size exceeds them. Besides wall-clock examples/s it reports examples per CPU-second
(user + system time of the worker), which stays meaningful on a machine shared with other jobs.

--threads compares torch thread counts at the last size ("auto" = extraction's default, the
cores other processes leave free, precompute/threads.py); --busy N runs N busy-looping processes
beside the workers, to measure the same on a loaded machine. The load average is printed too.

    python benchmarks/extract_throughput.py [--task rte] [--sizes 64,256] [--threads 1,2,auto] [--busy 0]
        [--efficient-examples 100]
"""

from __future__ import annotations

import argparse
import json
import os
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


def worker(n: int, glue_dir: Path, task: str, threads: int | None, efficient_examples: int) -> dict:
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
        config = RunConfig(tasks=(task,), out=Path(tmp) / "run", analysis_examples=n, device="cpu", threads=threads,
                           efficient_examples=efficient_examples, map_examples=min(20, efficient_examples))
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        extract.run_extract(RunFolder(config.out), task, checkpoint, base, frame, config, Shard())
        seconds, cpu_seconds = time.perf_counter() - started, _cpu_seconds() - cpu_started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"eval_examples": n, "threads": threads or "auto", "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
            "examples_per_second": round(n / seconds, 2),
            "examples_per_cpu_second": round(n / cpu_seconds, 3), "peak_rss_mb": round(peak_kib / 1024, 1)}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_worker(n: int, args, threads: str) -> dict:
    command = [sys.executable, __file__, "--worker", str(n), "--glue-dir", str(args.glue_dir), "--task", args.task,
               "--threads", threads, "--efficient-examples", str(args.efficient_examples)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"worker for {n} examples failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rte", help="GLUE task whose dev rows are extracted")
    parser.add_argument("--sizes", default="64,256", help="comma-separated eval sizes, one subprocess each")
    parser.add_argument("--glue-dir", type=Path, default=REPO.parent / "shared" / "glue")
    parser.add_argument("--threads", default="auto",
                        help="comma-separated torch thread counts (or auto) compared at the last size")
    parser.add_argument("--efficient-examples", type=int, default=100,
                        help="examples that also get the costly efficient kind (and stored maps: at most 20 of them); "
                             "0 measures the per-example cost of every other kind")
    parser.add_argument("--busy", type=int, default=0, help="busy-looping processes to run beside the workers")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        sys.path.insert(0, str(REPO))
        threads = None if args.threads == "auto" else int(args.threads)
        print(json.dumps(worker(args.worker, args.glue_dir, args.task, threads, args.efficient_examples)))
        return 0
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        sizes, counts = args.sizes.split(","), args.threads.split(",")
        runs = [_run_worker(int(size), args, counts[0]) for size in sizes]
        by_threads = {counts[0]: runs[-1]}
        by_threads |= {count: _run_worker(int(sizes[-1]), args, count) for count in counts[1:]}
    finally:
        for process in busy:
            process.kill()
    print(json.dumps({
        "benchmark": "extract_throughput", "model": "all-MiniLM-L6-v2", "device": "cpu", "task": args.task,
        "efficient_examples": args.efficient_examples, "cores": os.cpu_count(), "busy_processes": args.busy, "load_average_1m": round(os.getloadavg()[0], 2),
        "examples_per_second": runs[-1]["examples_per_second"],
        "examples_per_cpu_second": runs[-1]["examples_per_cpu_second"],
        "examples_per_second_by_threads": {count: run["examples_per_second"] for count, run in by_threads.items()},
        "peak_rss_mb": {str(run["eval_examples"]): run["peak_rss_mb"] for run in runs},
        "runs": runs + [run for count, run in by_threads.items() if count != counts[0]],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
