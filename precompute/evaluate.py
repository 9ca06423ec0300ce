"""Stage 2: dev metrics per task with standard attention and with effective attention substituted.

Because A_eff V = A V in every head, substituting A_eff must leave the logits unchanged (to
float tolerance); this stage checks that and records the time of both evaluations (the paper's
Table 3) in the ``metrics`` table and the manifest.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import polars as pl
import torch

from effattn import effective_attention_substituted
from precompute import PrecomputeError
from precompute.config import RunConfig
from precompute.finetune import collate, load_classifier, pick_device, set_torch_threads, tokenize
from precompute.schema import TASKS
from precompute.store import RunFolder, Shard

LOGIT_TOLERANCE = 1e-3  # max |logit difference| standard vs effective; float32 noise is ~1e-5


class SubstitutionMismatchError(PrecomputeError):
    """Effective attention changed the model's output, so A_eff V != A V somewhere."""


def predict_logits(model, tokenizer, frame: pl.DataFrame, *, effective: bool, batch_size: int,
                   max_seq_len: int, device: torch.device | str) -> np.ndarray:
    """Logits (example, label) in ``frame`` order; batches are length-sorted to pad little."""
    encodings = tokenize(tokenizer, frame, max_seq_len)
    order = sorted(range(len(encodings)), key=lambda i: len(encodings[i]["input_ids"]))
    logits = np.zeros((len(encodings), model.config.num_labels), dtype=np.float32)
    model.eval().to(device)
    context = effective_attention_substituted(model) if effective else nullcontext()
    with torch.no_grad(), context:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = collate(tokenizer, [encodings[i] for i in rows], None, regression=False)
            output = model(**{key: value.to(device) for key, value in batch.items()})
            logits[rows] = output.logits.float().cpu().numpy()
    return logits


def predictions_from_logits(logits: np.ndarray) -> np.ndarray:
    """Class ids (argmax) for classification, the score for regression (one output)."""
    return logits[:, 0].astype(np.float64) if logits.shape[1] == 1 else logits.argmax(axis=1).astype(np.float64)


def task_metrics(task: str, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """The task's quality metrics: accuracy (+F1 where the schema lists it), or Pearson/Spearman for STS-B."""
    # Imported here, not at the top: extract imports this module for predictions_from_logits,
    # and scipy.stats + sklearn.metrics would add ~450 ms to every extract start-up.
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score

    if TASKS[task].is_regression:
        return {"pearson": float(pearsonr(predictions, labels)[0]),
                "spearman": float(spearmanr(predictions, labels)[0])}
    metrics = {"accuracy": float(accuracy_score(labels, predictions))}
    if "f1" in TASKS[task].metrics:
        metrics["f1"] = float(f1_score(labels, predictions))
    return metrics


def _metric_rows(task: str, kind: str, metrics: dict[str, float], n: int) -> list[dict]:
    return [{"task": task, "kind": kind, "metric": name, "value": value, "n_examples": n}
            for name, value in metrics.items()]


def run_evaluate(run: RunFolder, task: str, eval_frame: pl.DataFrame, config: RunConfig) -> None:
    """Evaluate the fine-tuned checkpoint with both attention kinds; write ``metrics``."""
    if run.stage_done("evaluate", task):
        return
    started = time.perf_counter()
    set_torch_threads(config)
    from transformers import AutoTokenizer

    device = pick_device(config.device)
    model_dir = run.checkpoint_dir(task)
    model, tokenizer = load_classifier(model_dir, task), AutoTokenizer.from_pretrained(model_dir)
    labels, n = eval_frame["label"].to_numpy(), len(eval_frame)
    logits, rows, manifest = {}, [], {}
    for kind, effective in (("standard", False), ("effective", True)):
        kind_started = time.perf_counter()
        logits[kind] = predict_logits(model, tokenizer, eval_frame, effective=effective, batch_size=config.eval_batch_size,
                                      max_seq_len=config.max_seq_len, device=device)
        seconds = time.perf_counter() - kind_started
        metrics = {**task_metrics(task, labels, predictions_from_logits(logits[kind])),
                   "eval_seconds": seconds, "examples_per_second": n / max(seconds, 1e-9)}
        rows += _metric_rows(task, kind, metrics, n)
        manifest[kind] = metrics
    max_diff = float(np.abs(logits["standard"] - logits["effective"]).max()) if n else 0.0
    run.write_part("metrics", task, pl.DataFrame(rows), shard=Shard(), chunk=0)
    record = {"metrics": {task: manifest}, "evaluate": {task: {"max_logit_difference": max_diff}}}
    if max_diff > LOGIT_TOLERANCE:
        run.update_manifest(record)  # the report asks for the manifest: it must show the difference
        raise SubstitutionMismatchError(
            f"{task}: effective attention changed the logits by up to {max_diff:.3g} (tolerance {LOGIT_TOLERANCE}): "
            "the A_eff substitution is broken; report it with the run folder's manifest.json")
    # the record also goes into the stage marker, from which a deleted manifest.json is rebuilt
    run.mark_stage_done("evaluate", task, seconds=time.perf_counter() - started, record=record)
