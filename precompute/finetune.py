"""Stage 1: fine-tune the base model on one task, resumably, into the run folder's checkpoint.

Plain PyTorch loop with the paper's settings (AdamW, lr 2e-5, linear decay without warmup as
in transformers' defaults, batch 8, max length 128, dynamic padding per batch). The data
order of epoch e is a permutation seeded by ``seed + e``, so a training state only needs the
step counter plus model/optimizer/scheduler/RNG states to resume exactly (after Ctrl-C or
kill -9). States are saved atomically every ``save_every_steps`` steps and at epoch ends.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from effattn import attention_map_of, set_attention_map
from effattn.errors import UnsupportedModelError
from precompute import ConfigError
from precompute.config import RunConfig
from precompute.glue import second_texts
from precompute.models import load_sequence_classifier, load_tokenizer
from precompute.schema import TASKS
from precompute.store import RunFolder, atomic_path, disk_full_as_error

STATE_FILE = "state.pt"
hf_logging.set_verbosity_error()  # the "classifier weights newly initialised" report is expected here


def pick_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA GPU is visible: use --device cpu or auto")
    return torch.device(device)


def set_torch_threads(config: RunConfig) -> None:
    """Torch CPU threads for a stage: --threads, else every core."""
    torch.set_num_threads(config.threads or os.cpu_count() or 1)


def load_classifier(model_path: str | Path, task: str, *, new_head: bool = False,
                    attention: str | None = None) -> torch.nn.Module:
    """A sequence-classification model with eager attention, checked to return attention weights.

    new_head: the model is a base for fine-tuning, so a classifier head of another size (a base
    that was itself fine-tuned with other labels) is replaced by a freshly initialised one.
    attention: the attention map to run (RunConfig.attention) for a base; None = the one a
    fine-tuned checkpoint was trained with (its config's attention_map, softmax if none).
    """
    info = TASKS[task]
    extra = {"problem_type": "regression"} if info.is_regression else {}
    if new_head:
        extra["ignore_mismatched_sizes"] = True
    model = load_sequence_classifier(model_path, num_labels=info.num_labels, **extra)
    check_returns_attention(model, model_path)
    return set_attention_map(model, attention or attention_map_of(model))


def check_returns_attention(model: torch.nn.Module, name: str | Path) -> None:
    """Raise UnsupportedModelError unless ``model(..., output_attentions=True)`` gives maps."""
    model.eval()
    with torch.no_grad():
        output = model(input_ids=torch.tensor([[model.config.pad_token_id or 0] * 3]), output_attentions=True)
    attentions = getattr(output, "attentions", None)
    if not attentions or any(a is None for a in attentions):
        raise UnsupportedModelError(f"model {name} does not return attention weights with output_attentions=True: use a model with eager attention (e.g. BERT)")


def tokenize(tokenizer, frame: pl.DataFrame, max_seq_len: int) -> list[dict]:
    """One unpadded encoding per row (truncated to ``max_seq_len`` tokens)."""
    encoded = tokenizer(
        frame["text_a"].to_list(),
        second_texts(frame),
        truncation=True,
        max_length=max_seq_len,
    )
    keys = list(encoded.keys())
    return [{key: encoded[key][i] for key in keys} for i in range(len(frame))]


def collate(tokenizer, encodings: list[dict], labels: list[float] | None, regression: bool) -> dict:
    """Pad one batch to its longest member (dynamic padding) and attach labels."""
    batch = tokenizer.pad(encodings, return_tensors="pt")
    if labels is not None:
        batch["labels"] = torch.tensor(labels, dtype=torch.float32 if regression else torch.long)
    return dict(batch)


@functools.lru_cache(maxsize=1)  # every step of an epoch asks again; drawn once per epoch
def epoch_order(n: int, epoch: int, seed: int) -> tuple[int, ...]:
    """The row order of ``epoch`` (a permutation seeded by seed + epoch)."""
    generator = torch.Generator().manual_seed(seed + epoch)
    return tuple(torch.randperm(n, generator=generator).tolist())


def _save_state(path: Path, model, optimizer, scheduler, step: int, seconds: float) -> None:
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "step": step, "seconds": seconds,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        try:
            # through a Python file, so that a failed write (a full disk) is an OSError in the
            # context of torch's RuntimeError; atomic_path reports ENOSPC as one line
            torch.save(state, handle)
        except RuntimeError as error:
            if isinstance(error.__context__, OSError):
                raise error.__context__ from None
            raise


def _load_state(path: Path, model, optimizer, scheduler) -> tuple[int, float]:
    """Restore a saved training state; returns (steps done, training seconds so far)."""
    if not path.exists():
        return 0, 0.0
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a damaged file: its steps are lost, the rest of the run is not
        print(f"note: training state {path} does not load ({type(error).__name__}): fine-tuning from step 0", file=sys.stderr)
        return 0, 0.0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"]), float(state.get("seconds", 0.0))


def total_steps(n_train: int, config: RunConfig) -> tuple[int, int]:
    """(steps per epoch, total steps); fractional --epochs train a share of the last epoch."""
    per_epoch = math.ceil(n_train / config.batch_size)
    return per_epoch, max(1, math.ceil(per_epoch * config.epochs))


def _save_final(run: RunFolder, task: str, model, tokenizer) -> None:
    """save_pretrained into a temporary folder, then move it into place."""
    final = run.checkpoint_dir(task)
    tmp = final.with_name(f".{task}.saving")
    shutil.rmtree(tmp, ignore_errors=True)
    with disk_full_as_error(f"saving the {task} checkpoint to {final}"):  # save_pretrained writes its files outside atomic_path
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


@dataclass
class _Trainer:
    """Everything one fine-tuning run needs; ``step`` counts optimizer steps done so far."""

    model: torch.nn.Module
    tokenizer: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    encodings: list[dict]
    labels: list[float]
    regression: bool
    per_epoch: int
    n_steps: int
    device: torch.device
    step: int = 0

    def train_step(self, config: RunConfig) -> float:
        """One optimizer step on the next batch of the seeded epoch order; returns the loss."""
        epoch, index = divmod(self.step, self.per_epoch)
        order = epoch_order(len(self.encodings), epoch, config.seed)
        rows = order[index * config.batch_size:(index + 1) * config.batch_size]
        batch = collate(self.tokenizer, [self.encodings[i] for i in rows], [self.labels[i] for i in rows], self.regression)
        loss = self.model(**{key: value.to(self.device) for key, value in batch.items()}).loss
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.step += 1
        return loss.item()


def _build_trainer(task: str, train: pl.DataFrame, base_model: str | Path, config: RunConfig) -> _Trainer:
    set_torch_threads(config)
    torch.manual_seed(config.seed)  # classifier-head init and dropout
    device = pick_device(config.device)
    tokenizer = load_tokenizer(base_model)
    model = load_classifier(base_model, task, new_head=True, attention=config.attention).to(device)
    per_epoch, n_steps = total_steps(len(train), config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=n_steps)
    return _Trainer(model, tokenizer, optimizer, scheduler, tokenize(tokenizer, train, config.max_seq_len),
                    train["label"].to_list(), TASKS[task].is_regression, per_epoch, n_steps, device)


def run_finetune(run: RunFolder, task: str, train: pl.DataFrame, base_model: str | Path, config: RunConfig) -> bool:
    """Fine-tune ``base_model`` on ``train`` into ``run.checkpoint_dir(task)``; resume if interrupted.

    Returns True when the stage is done (now or before), False when ``config.stop_after_steps``
    stopped it early (a test hook that stands in for an interruption).
    """
    if run.stage_done("finetune", task):
        return True
    started = time.perf_counter()
    trainer = _build_trainer(task, train, base_model, config)
    state_path = run.training_state_dir(task) / STATE_FILE
    trainer.step, seconds_before = _load_state(state_path, trainer.model, trainer.optimizer, trainer.scheduler)
    first_step, loop_started, loss_avg = trainer.step, time.perf_counter(), None
    trainer.model.train()
    with tqdm(total=trainer.n_steps, initial=trainer.step, desc=f"finetune {task}", unit="step", dynamic_ncols=True) as progress:
        while trainer.step < trainer.n_steps:
            if config.stop_after_steps is not None and trainer.step >= config.stop_after_steps:
                return False
            loss = trainer.train_step(config)
            loss_avg = loss if loss_avg is None else 0.98 * loss_avg + 0.02 * loss
            progress.update(1)
            progress.set_postfix(epoch=(trainer.step - 1) // trainer.per_epoch + 1, loss=f"{loss_avg:.4f}")
            if trainer.step % config.save_every_steps == 0 or trainer.step % trainer.per_epoch == 0:
                _save_state(state_path, trainer.model, trainer.optimizer, trainer.scheduler, trainer.step,
                            seconds_before + time.perf_counter() - started)
    steps_per_second = (trainer.n_steps - first_step) / max(time.perf_counter() - loop_started, 1e-9)
    _save_final(run, task, trainer.model.eval().cpu(), trainer.tokenizer)
    record = {"finetune": {task: {
        "steps": trainer.n_steps, "epochs": config.epochs, "train_rows": len(train), "resumed_at_step": first_step,
        "batch_size": config.batch_size, "lr": config.lr, "max_seq_len": config.max_seq_len, "seed": config.seed,
        "final_loss_avg": loss_avg, "steps_per_second": round(steps_per_second, 3)}}}
    run.mark_stage_done("finetune", task, seconds=seconds_before + time.perf_counter() - started, record=record)
    shutil.rmtree(run.training_state_dir(task), ignore_errors=True)
    return True
