"""The "Your own input" page (dashboard/pages/own_input.py) and its live computation (dashboard/live.py).

The page runs on its own here (AppTest.from_file on the page script): app.py only adds the shared
sidebar, whose kinds selection the page takes as its default (set through session state below).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cache_fixture import figures, problems
from dashboard import live, maps
from dashboard.attribution_views import RECIPE
from dashboard.errors import DashboardError
from dashboard.kinds import PROJECT_MARK, label
from precompute.schema import KIND_INFO, KINDS

PAGE = Path(__file__).resolve().parent.parent / "dashboard" / "pages" / "own_input.py"
TIMEOUT_SECONDS = 300  # the first run loads torch and the base model on a shared 2-core machine
CHECKPOINT_LABEL = "tiny · RTE (fine-tuned checkpoint)"
PAIR = ("The new drug, tested on more than two thousand patients in twelve hospitals, works against most of the "
        "bacteria that cause pneumonia in children.", "Doctors say it is a good antibiotic for young patients.")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, tiny_bert_dir) -> Path:
    """One run folder with the tiny BERT as its RTE checkpoint and a broken SST-2 one; EFFATTN_DATA points here."""
    root = tmp_path_factory.mktemp("own_input_data")
    run = root / "tiny"
    run.mkdir()
    # the page only looks for run folders (a manifest.json) and their checkpoints, never reads a table
    (run / "manifest.json").write_text(json.dumps({"tasks": ["rte", "sst2"]}))
    shutil.copytree(tiny_bert_dir, run / "checkpoints" / "rte")
    (run / "checkpoints" / "sst2").mkdir()
    (run / "checkpoints" / "sst2" / "config.json").write_text("{}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EFFATTN_DATA", str(root))
        yield root


def open_page(data_root, *, query: dict | None = None, sidebar_kinds: tuple[str, ...] | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PAGE), default_timeout=TIMEOUT_SECONDS)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    if sidebar_kinds is not None:  # what app.py stores for the page: the sidebar's selection
        at.session_state["_selection"] = SimpleNamespace(kinds=sidebar_kinds)
    return at.run()


def metric(at, name: str) -> str:
    return next(m.value for m in at.metric if m.label == name)


@pytest.fixture(scope="module")
def base_page(data_root):
    """The page as it opens: the base model on the default sentence pair."""
    return open_page(data_root)


def test_every_kind_is_drawn_with_one_label_per_token(base_page):
    assert problems(base_page) == []
    n = int(metric(base_page, "tokens n"))
    (figure,) = figures(base_page)
    names = [trace["name"] for trace in figure["data"]]
    assert names == [label("standard"), label("effective"), "null A − A_eff", *map(label, KINDS[2:])]
    for trace in figure["data"]:
        assert len(trace["x"]) == len(trace["y"]) == n
        assert np.asarray(trace["z"]).shape == (n, n)


def test_a_pair_gets_two_segments_and_one_sentence_one(data_root, base_page):
    labels = figures(base_page)[0]["data"][0]["x"]
    second = [text for text in labels if " B:" in text]
    assert second and labels.index(second[0]) > labels.index(next(t for t in labels if t.endswith("[SEP]")))
    single = open_page(data_root, query={"own_text_b": ""})
    assert problems(single) == [] and not [text for text in figures(single)[0]["data"][0]["x"] if " B:" in text]


def test_project_defined_kinds_are_named_under_the_maps(base_page):
    note = next(c.value for c in base_page.caption if c.value.startswith("Project-defined kinds"))
    named = [line.split(" (")[0] for line in note.split("  \n")[1:]]
    assert named == [f"{PROJECT_MARK} {KIND_INFO[kind].label}" for kind in KINDS if KIND_INFO[kind].project_defined]
    assert named == ["† effective norm-weighted", "† efficient"]


def test_the_sidebar_kinds_are_the_default_and_a_pick_limits_the_panels(data_root):
    at = open_page(data_root, sidebar_kinds=("efficient",))
    assert at.multiselect(key="own_kind").value == ["efficient"]
    assert [trace["name"] for trace in figures(at)[0]["data"]] == [label("efficient")]


def test_an_empty_sentence_gives_one_line_and_no_maps(data_root):
    at = open_page(data_root, query={"own_text_a": "   "})
    assert [info.value for info in at.info] == [
        "The sentence is empty: type one in the first box (the second box is only for the second sentence of a pair)."]
    assert figures(at) == [] and problems(at) == []


def test_a_too_long_input_is_cut_to_the_page_limit_and_says_so(data_root):
    at = open_page(data_root, query={"own_text_a": "word " * 400, "own_text_b": "", "own_kind": "standard"})
    (warning,) = [w.value for w in at.warning]
    assert warning.startswith("Your input has 402 tokens; this page reads at most 128") and "cut to 128" in warning
    assert metric(at, "tokens n") == "128"


def test_a_run_checkpoint_is_offered_and_predicts_its_task(data_root):
    at = open_page(data_root, query={"own_model": CHECKPOINT_LABEL})
    assert problems(at) == []
    assert at.selectbox(key="own_model").options == [
        "all-MiniLM-L6-v2 (embedded base model, no classifier)", CHECKPOINT_LABEL]
    assert "sst2 has no tokenizer_config.json" in next(c.value for c in at.caption if c.value.startswith("Checkpoints"))
    assert at.selectbox(key="own_layer").options == ["0", "1"] and len(at.selectbox(key="own_head").options) == 4
    assert metric(at, "prediction").split(" (")[0] in ("entailment", "not entailment")


def test_a_smaller_model_keeps_the_layer_and_head_pickers_in_range(data_root):
    at = open_page(data_root)
    at.selectbox(key="own_head").set_value(11).run()
    at.selectbox(key="own_model").set_value(CHECKPOINT_LABEL).run()
    assert problems(at) == []
    assert int(at.selectbox(key="own_layer").value) < 2 and int(at.selectbox(key="own_head").value) < 4


def test_gradient_attribution_is_drawn_only_on_request(data_root):
    at = open_page(data_root, query={"own_model": CHECKPOINT_LABEL})
    assert RECIPE not in [trace["name"] for trace in figures(at)[0]["data"]]
    at.toggle(key="own_attribution").set_value(True).run()
    assert problems(at) == []
    attribution = figures(at)[0]["data"][-1]
    assert attribution["name"] == RECIPE
    np.testing.assert_allclose(np.asarray(attribution["z"]).sum(-1), 1, atol=1e-4)  # shares of the input tokens


def test_live_effective_and_efficient_attention_keep_every_head_output():
    capture = live.capture_input(live.load_model(live.BASE_SOURCE), *PAIR)
    assert capture.n_tokens > 32  # more tokens than d_head: A_eff differs from A
    values = capture.values.astype(np.float64)
    head_output = capture.maps["standard"] @ values  # (layer, head, query, d_head)
    assert np.abs(capture.maps["effective"] - capture.maps["standard"]).max() > 1e-3
    np.testing.assert_allclose(capture.maps["effective"] @ values, head_output, atol=2e-4)
    for layer in range(values.shape[0]):
        efficient = live.efficient_layer(capture, layer).astype(np.float64)
        assert efficient.min() >= 0 and np.allclose(efficient.sum(-1), 1, atol=1e-5)
        np.testing.assert_allclose(efficient @ values[layer], head_output[layer], atol=2e-4)


def test_compute_views_gives_every_kind_of_one_head_and_the_tokens():
    model = live.load_model(live.BASE_SOURCE)
    views, capture = live.compute_views(model.model, model.tokenizer, *PAIR, layer=5, head=3)
    assert list(views) == list(KINDS)
    assert all(view.shape == (capture.n_tokens,) * 2 for view in views.values())
    assert capture.prediction is None and capture.tokens[0] == "[CLS]"
    assert set(capture.segment_ids) == {0, 1}
    assert maps.token_labels(list(capture.tokens), capture.n_tokens, list(capture.segment_ids))[-2].startswith(
        f"{capture.n_tokens - 2} B:")


def test_a_checkpoint_folder_not_named_after_a_task_is_a_one_line_error(tiny_bert_dir):
    with pytest.raises(DashboardError, match=r"^checkpoint folder .* is not named after a task: expected checkpoints/<task>/"):
        live.read_model(str(tiny_bert_dir))
