"""How the dashboard names attention kinds: labels, the project-defined mark and the notes under a figure.

Every fact comes from ``precompute.schema.KIND_INFO`` (the one shared kinds list), so a new kind
shows up here without touching a page. The colour rule lives in dashboard/charts.py.
"""

from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

from dashboard.data import Run
from precompute.schema import KIND_INFO

PROJECT_MARK = "†"  # marks a project-defined kind wherever its label is shown; the note below explains it
BASE = "standard"  # difference panels compare each other kind with standard attention
SAMPLED = "efficient"  # the one kind computed on a sample of examples only (too costly for all)


def label(kind: str) -> str:
    """The kind's display label, with † when the kind is our definition, not a paper's."""
    info = KIND_INFO.get(kind)
    if info is None:  # not a kind (e.g. a difference): shown as it is
        return kind
    return info.label + (PROJECT_MARK if info.project_defined else "")


def difference(kind: str) -> str:
    """Title of the panel ``kind − standard``."""
    return f"{label(kind)} − {label(BASE)}"


LABELS = {kind: label(kind) for kind in KIND_INFO}  # legend names of bars and lines


def efficient_examples(run: Run) -> int | None:
    """K: efficient attention is computed on the first K analysed examples per task (manifest config)."""
    value = (run.manifest.get("config") or {}).get("efficient_examples")
    return int(value) if value is not None else None


def sample_note(run: Run) -> str:
    """Why efficient numbers rest on fewer examples than the other kinds."""
    k = efficient_examples(run)
    first = f"the first {k} analysed examples" if k is not None else "a sample of the analysed examples"
    return (f"{label(SAMPLED)} is computed only on {first} per task (a linear program per query row; "
            "`config.efficient_examples` in the manifest), so its averages are over that sample; every "
            "explorer example of a full run is in it.")


def _origin(source: str) -> str:
    """The source with the words "project-defined" exactly once (some sources say it already)."""
    return source if "project-defined" in source else f"project-defined, {source}"


def notes(run: Run, kinds: Iterable[str]) -> list[str]:
    """One line per shown project-defined kind (its source and definition), and the efficient sample."""
    kinds = list(kinds)
    lines = [f"{PROJECT_MARK} {info.label} ({_origin(info.source)}): {info.description}."
             for kind, info in KIND_INFO.items() if kind in kinds and info.project_defined]
    if SAMPLED in kinds:
        lines.append(sample_note(run))
    return lines


def show_notes(run: Run, kinds: Iterable[str]) -> None:
    """The notes as one caption under a figure; nothing when no shown kind needs one."""
    lines = notes(run, kinds)
    if lines:
        st.caption("  \n".join(lines))
