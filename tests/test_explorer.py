"""The example explorer on fixture caches: every token labelled, a row-range view, the example
picker and its filters, one set of layer/head controls, equal maps drawn once, shared hover."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest

from cache_fixture import SEQ_LENS, figures, open_page, problems
from dashboard.kinds import label
from precompute.store import RunFolder, Shard

LONG = 1  # fixture example with n = 12 > d_head = 8
SHORT = 0  # n = 6 ≤ d_head: effective == standard


@pytest.fixture(scope="module")
def long_page(fixture_caches):
    import os

    os.environ["EFFATTN_DATA"] = str(fixture_caches)  # module scope: one page run for several tests
    try:
        yield open_page("explorer", query={"ex_example": str(LONG), "ex_layer": "2", "ex_head": "1"})
    finally:
        del os.environ["EFFATTN_DATA"]


def _picker_ids(at) -> list[int]:
    return at.dataframe[0].value["id"].to_list()


def test_long_example_renders_without_problems(long_page):
    assert problems(long_page) == []
    assert any(f"Example {LONG}** (n = {SEQ_LENS[LONG]} tokens) · layer 2, head 1" in m.value for m in long_page.markdown)


def test_every_token_is_a_tick_on_both_axes(long_page):
    layout = figures(long_page)[0]["layout"]
    n = SEQ_LENS[LONG]
    axes = [value for key, value in layout.items() if key.startswith(("xaxis", "yaxis")) and value.get("visible", True)]
    assert len(axes) == 2 * len(figures(long_page)[0]["data"]) and all(len(axis["tickvals"]) == n and axis["tickmode"] == "array" for axis in axes)


def test_row_range_view_starts_with_the_last_rows_and_shows_exactly_them(long_page):
    full, rows = figures(long_page)[0]["data"][0], figures(long_page)[1]["data"][0]
    n = SEQ_LENS[LONG]
    assert rows["y"] == full["y"][n - 8:]
    np.testing.assert_allclose(np.array(rows["z"]), np.array(full["z"])[n - 8:], atol=1e-6)


@pytest.mark.usefixtures("fixture_caches_env")
def test_row_range_view_follows_the_slider():
    at = open_page("explorer", query={"ex_example": str(LONG)})
    at.slider(key=f"ex_rows_rte_{LONG}").set_value((3, 5)).run()
    full, rows = figures(at)[0]["data"][0], figures(at)[1]["data"][0]
    assert rows["y"] == full["y"][3:6]
    layout = figures(at)[1]["layout"]
    assert all(len(layout[key]["tickvals"]) == 3 for key in layout if key.startswith("yaxis"))


def test_one_set_of_layer_and_head_controls(long_page):
    labels = [w.label for kind in ("selectbox", "button_group", "multiselect", "slider", "toggle")
              for w in long_page.get(kind) if hasattr(w, "label")]
    repeated = [name for name, count in Counter(labels).items() if count > 1]
    assert repeated == []
    assert "Layer" in labels and "Head" in labels and "Layers" not in labels and "Heads" not in labels
    assert [w.key for w in long_page.sidebar.selectbox if w.label in ("Layer", "Head")] == ["ex_layer", "ex_head"]


def test_every_other_page_keeps_the_multi_select_layers_and_heads(fixture_caches_env):
    at = open_page("patterns")
    assert {w.key for w in at.button_group} >= {"layer", "head"}
    assert not any(w.key == "ex_layer" for w in at.selectbox)


def test_attention_panels_share_one_scale_and_every_hover_shows_every_panel(long_page):
    traces = figures(long_page)[0]["data"]
    names = [trace["name"] for trace in traces]
    for trace in traces:
        assert np.array(trace["customdata"]).shape == (SEQ_LENS[LONG], SEQ_LENS[LONG], len(traces))
        assert all(name in trace["hovertemplate"] for name in names)
    layout = figures(long_page)[0]["layout"]
    assert all(layout[key].get("matches") in ("x", "y") for key in layout if key.startswith(("xaxis", "yaxis"))
               and key not in ("xaxis", "yaxis") and layout[key].get("visible", True))


@pytest.mark.usefixtures("fixture_caches_env")
def test_page_says_when_effective_equals_standard_and_draws_it_once():
    at = open_page("explorer", query={"ex_example": str(SHORT)})
    assert problems(at) == []
    names = [trace["name"] for trace in figures(at)[0]["data"]]
    assert label("standard") in names and label("effective") not in names and "null A − A_eff" not in names
    captions = " ".join(caption.value for caption in at.caption)
    assert f"{label('effective')} = {label('standard')}" in captions and "null component A − A_eff is 0" in captions
    assert any("identical to standard" in info.value for info in at.info)


@pytest.mark.usefixtures("fixture_caches_env")
def test_picker_lists_length_label_prediction_and_text_and_the_length_filter_narrows_it():
    at = open_page("explorer")
    table = at.dataframe[0].value
    assert table.columns.tolist() == ["id", "n", "label", "prediction", "correct", "text"]
    assert _picker_ids(at) == [SHORT, LONG] and table["n"].tolist() == [SEQ_LENS[SHORT], SEQ_LENS[LONG]]
    at.toggle(key="ex_long").set_value(True).run()
    assert _picker_ids(at) == [LONG] and at.selectbox(key="ex_example").options == [str(LONG)]


def test_mispredicted_filter_keeps_only_the_wrong_examples(run_dir):
    run = RunFolder(run_dir)
    for path in run.part_files("examples", ["rte"]):
        frame = pl.read_parquet(path, hive_partitioning=False)
        wrong = frame.with_columns(prediction=pl.when(pl.col("example_id") == LONG).then(1 - pl.col("label"))
                                   .otherwise(pl.col("prediction")))
        run.write_part("examples", "rte", wrong, shard=Shard(), chunk=int(path.stem[-5:]))
    at = open_page("explorer", query={"ex_wrong": "true"})
    assert problems(at) == [] and _picker_ids(at) == [LONG]
    assert at.dataframe[0].value["correct"].tolist() == [False]


def test_filters_that_leave_nothing_say_so(run_dir):
    at = open_page("explorer", query={"ex_wrong": "true"})  # the fixture predicts every example right
    assert problems(at) == []
    assert any("matches the filters" in info.value for info in at.info)
