"""The shared sidebar: run, tasks, layers, heads, attention kinds, and the figure image format.

app.py renders it on every run, before the page, so the widgets (and their values) live across
page switches. Each widget is bound to a URL query parameter (``bind="query-params"``, keyed by
its widget key), so a link reproduces the view: ``?run=minilm&task=rte&layer=5&kind=effective``.
A value equal to the default (everything selected) is left out of the URL.

Pages that show one head (ONE_HEAD_PAGES: the explorer) get a single Layer and Head choice here
instead of the multi-selects, so that the page has one set of layer/head controls; their keys are
the page's own URL parameters (``?ex_layer=5&ex_head=3``), which links from other pages set.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from dashboard.data import Run, data_location, discover_runs, load_run
from dashboard.kinds import PROJECT_MARK, label
from precompute.schema import KIND_INFO, KINDS

IMAGE_FORMATS = ("svg", "png")  # what the modebar camera button saves
# widget keys, which are also the URL query parameters; link_params carries them to other pages
RUN_KEY, TASK_KEY, LAYER_KEY, HEAD_KEY, KIND_KEY = "run", "task", "layer", "head", "kind"
SIDEBAR_KEYS = (RUN_KEY, TASK_KEY, LAYER_KEY, HEAD_KEY, KIND_KEY)
IMAGE_FORMAT_KEY = "image_format"
ONE_LAYER_KEY, ONE_HEAD_KEY = "ex_layer", "ex_head"  # the single choice of ONE_HEAD_PAGES
ONE_HEAD_PAGES = ("explorer",)  # url paths of the pages that show one layer and head
KINDS_HELP = "Views of each head's attention, shown in figures as: " + "; ".join(
    f"{kind} = {label(kind)} ({info.source})" for kind, info in KIND_INFO.items()) + f". {PROJECT_MARK} = project-defined."


@dataclass(frozen=True)
class Selection:
    """What the sidebar selects; tuples so they can key st.cache_data."""

    run: Run
    tasks: tuple[str, ...]
    layers: tuple[int, ...]
    heads: tuple[int, ...]
    kinds: tuple[str, ...]

    def missing(self, *parts: str) -> list[str]:
        """Names of the given parts (tasks, layers, heads, kinds) that are empty."""
        return [part for part in parts if not getattr(self, part)]


def _sorted_pick(options: list, picked: list) -> tuple:
    return tuple(option for option in options if option in picked)


def current_page_path() -> str | None:
    """url_path of the page st.navigation picked for this run (app.py calls render after it); None if unknown."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:
        return None
    info = ctx.pages_manager.get_pages().get(ctx.page_script_hash) or {}
    return info.get("url_pathname")


def render(page_path: str | None = None) -> Selection:
    """Draw the sidebar and return the selection (raises DashboardError / NoCachesError).

    page_path: url path of the page about to run (``st.navigation(...).url_path``); found from
    Streamlit's script context when not given."""
    sidebar = st.sidebar
    one_head = (page_path if page_path is not None else current_page_path()) in ONE_HEAD_PAGES
    one_keys = (ONE_LAYER_KEY, ONE_HEAD_KEY) if one_head else ()
    # what the URL asked for, before the bound widgets drop values they do not offer
    requested = {key: st.query_params.get_all(key) for key in (*SIDEBAR_KEYS, IMAGE_FORMAT_KEY, *one_keys)}
    runs = discover_runs()
    names = list(runs)
    # options are the folder names (a URL-bound widget matches ?run= against what it displays); the
    # run's other identity, its attention map, is the caption under it
    name = sidebar.selectbox("Run", names, key=RUN_KEY, bind="query-params",
                             help=f"Run folders found under {data_location()}")
    run = load_run(name, runs[name])
    sidebar.caption(f"{run.manifest.get('model_source') or run.manifest.get('model', '?')} · attention: **{run.attention}**")
    tasks = list(run.tasks)
    ready = list(run.tasks_with_data()) or tasks  # default: the tasks that have results
    picked_tasks = sidebar.multiselect("Tasks", tasks, default=ready, key=TASK_KEY, bind="query-params",
                                       help="Tasks of this run; by default those with cached results")
    layers, heads = list(range(run.n_layers)), list(range(run.n_heads))
    if one_head:  # the last layer first: the paper's Fig. 2 and most effective-attention changes are there
        picked_layers = [sidebar.selectbox("Layer", layers, index=len(layers) - 1, key=ONE_LAYER_KEY,
                                           bind="query-params", help="The layer of the head shown")]
        picked_heads = [sidebar.selectbox("Head", heads, key=ONE_HEAD_KEY, bind="query-params",
                                          help="The head shown, within that layer")]
    else:
        picked_layers = sidebar.pills("Layers", layers, selection_mode="multi", default=layers,
                                      key=LAYER_KEY, bind="query-params")
        picked_heads = sidebar.pills("Heads", heads, selection_mode="multi", default=heads,
                                     key=HEAD_KEY, bind="query-params")
    # options are the kind names, not their labels: a URL-bound widget writes what it displays into the
    # URL, and links must keep reading ?kind=effective; the help maps each name to its label
    picked_kinds = sidebar.pills("Attention kinds", list(KINDS), selection_mode="multi", default=list(KINDS),
                                 key=KIND_KEY, bind="query-params", help=KINDS_HELP)
    sidebar.segmented_control("Figure download format", IMAGE_FORMATS, default="svg", required=True,
                              key=IMAGE_FORMAT_KEY, bind="query-params", format_func=str.upper,
                              help="Format of the camera button in each chart's toolbar")
    offered = {RUN_KEY: names, TASK_KEY: tasks, LAYER_KEY: layers, HEAD_KEY: heads, KIND_KEY: list(KINDS),
               IMAGE_FORMAT_KEY: list(IMAGE_FORMATS), ONE_LAYER_KEY: layers, ONE_HEAD_KEY: heads}
    ignored = ignored_url_values(requested, offered)
    if ignored:
        sidebar.warning(f"Ignored from the link: {ignored}. The sidebar shows what was used instead.")
    sidebar.caption(f"Data: `{data_location()}`")
    return Selection(run, _sorted_pick(tasks, picked_tasks), _sorted_pick(layers, picked_layers),
                     _sorted_pick(heads, picked_heads), _sorted_pick(list(KINDS), picked_kinds))


def ignored_url_values(requested: dict[str, list[str]], offered: dict[str, list]) -> str:
    """'task=nosuchtask (choose from rte, sst2); layer=99 (...)' for URL values no widget offers, or ''."""
    notes = []
    for key, values in requested.items():
        choices = [str(option) for option in offered[key]]
        bad = [value for value in values if value not in choices]
        if bad:
            notes.append(f"{key}={', '.join(bad)} (choose from {', '.join(choices)})")
    return "; ".join(notes)


def ignored_filter_note(selection: Selection, view: str, *parts: str) -> str | None:
    """A sentence saying that `view` does not apply the sidebar's `parts` filters (e.g. layers,
    heads), or None when those filters select everything and nothing is ignored."""
    full = {"layers": selection.run.n_layers, "heads": selection.run.n_heads}
    narrowed = [part for part in parts if len(getattr(selection, part)) < full[part]]
    if not narrowed:
        return None
    return (f"{view} counts every {' and every '.join(part.rstrip('s') for part in narrowed)}: the sidebar's "
            f"{' and '.join(narrowed)} filter{'s do' if len(narrowed) > 1 else ' does'} not apply to it.")


def link_params(**page_params) -> dict[str, str | list[str]]:
    """Query parameters for a link to another page that keeps the sidebar selection."""
    keep = {key: st.query_params.get_all(key) for key in SIDEBAR_KEYS if key in st.query_params}
    return {**keep, **{key: str(value) for key, value in page_params.items()}}


def current() -> Selection:
    """The selection app.py stored for this run of the page."""
    return st.session_state["_selection"]


def require(selection: Selection, *parts: str) -> None:
    """Stop the page with a hint when any of ``parts`` is empty."""
    empty = selection.missing(*parts)
    if empty:
        st.info(f"Select at least one of: {', '.join(empty)} in the sidebar to see this page.")
        st.stop()


def page(title: str, caption: str, *required: str) -> Selection:
    """The header every page but the Overview starts with: title, caption, then ``require(*required)``."""
    selection = current()
    st.title(title)
    st.caption(caption)
    require(selection, *required)
    return selection
