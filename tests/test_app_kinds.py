"""Every attention kind of precompute.schema.KIND_INFO on every page: labels, the one colour rule,
the explorer's panels, the difference panels, the norm-weighting and efficient findings, and old caches."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest

from cache_fixture import EFFICIENT_EXAMPLES, PAGES, TASKS, figures, open_page, problems
from dashboard import charts, kinds
from dashboard.attribution_views import RECIPE
from dashboard.charts import DIFFERENCE, Panel
from precompute.schema import KIND_INFO, KINDS, SCHEMA_VERSION_KEY

NEW_KINDS = ("norm", "effective_norm", "efficient")
NULL_TITLE = "null A − A_eff"


def _rewrite(run_dir, table: str, change, version: str | None = None) -> None:
    """Apply ``change`` (DataFrame -> DataFrame) to every part file of ``table``, keeping its schema version."""
    for part in run_dir.glob(f"{table}/task=*/*.parquet"):
        metadata = pl.read_parquet_metadata(part)
        frame = change(pl.read_parquet(part))
        frame.write_parquet(part, metadata={SCHEMA_VERSION_KEY: version or metadata[SCHEMA_VERSION_KEY]})


def _assert_colour_rule(trace: dict, kind: str | None) -> None:
    if charts.diverging(kind):
        assert trace["zmid"] == 0 and trace["zmin"] == -trace["zmax"], trace["name"]
    else:
        assert trace.get("zmid") is None and trace["zmin"] == 0, trace["name"]


def test_every_kind_has_a_colour_and_a_label_that_marks_project_defined_kinds():
    assert set(charts.KIND_COLORS) == set(KINDS)
    for kind, info in KIND_INFO.items():
        assert kinds.label(kind).startswith(info.label)
        assert kinds.label(kind).endswith(kinds.PROJECT_MARK) == info.project_defined


def test_colour_rule_follows_the_signed_fact_of_each_kind():
    z = np.array([[0.2, 0.5], [0.1, 0.7]])  # non-negative: an unsigned scale must still start at 0
    panels = [Panel(kind, z, [0, 1], [0, 1], kind=kind) for kind in KINDS]
    figure = charts.heatmaps([*panels, Panel("difference", z - 0.3, [0, 1], [0, 1], kind=DIFFERENCE)])
    for trace, kind in zip(figure.data, [*KINDS, DIFFERENCE]):
        signed = kind == DIFFERENCE or KIND_INFO[kind].signed
        assert (trace.zmid == 0 and trace.zmin == -trace.zmax) if signed else (trace.zmid is None and trace.zmin == 0)
        assert trace.colorscale == figure.data[1 if signed else 0].colorscale  # effective is signed, standard not


@pytest.mark.usefixtures("fixture_caches_env")
def test_explorer_shows_every_kind_beside_the_null_component_with_the_kinds_colour_rule():
    at = open_page("explorer", query={"ex_example": "1", "ex_layer": "2", "ex_head": "1"})
    assert problems(at) == []
    traces = figures(at)[0]["data"]
    expected = [kinds.label("standard"), kinds.label("effective"), NULL_TITLE,
                *(kinds.label(kind) for kind in NEW_KINDS), RECIPE]  # the head's attribution map last
    assert [trace["name"] for trace in traces] == expected
    # the explorer's colour rule: every attention panel on one scale (diverging: effective has negative
    # weights here), the attribution panel (not attention) sequential on its own
    scales = {(trace["zmin"], trace["zmax"], trace.get("zmid"), str(trace["colorscale"])) for trace in traces[:-1]}
    assert len(scales) == 1 and traces[0]["zmid"] == 0 and traces[0]["zmin"] == -traces[0]["zmax"]
    _assert_colour_rule(traces[-1], None)
    efficient = np.array(traces[-2]["z"], dtype=float)
    assert (efficient == 0).any() and np.allclose(efficient.sum(axis=1), 1, atol=1e-2)  # sparse rows of a distribution
    notes = " ".join(caption.value for caption in at.caption)
    assert "project-defined" in notes and f"first {EFFICIENT_EXAMPLES} analysed examples" in notes


def test_explorer_says_why_a_kinds_map_is_missing_and_shows_the_rest(run_dir):
    _rewrite(run_dir, "maps", lambda frame: frame.filter(pl.col("kind") != "norm"))
    at = open_page("explorer", query={"ex_example": "1"})
    assert problems(at) == []
    assert any("No norm-weighted map" in info.value and "re-run" in info.value for info in at.info)
    assert len(figures(at)[0]["data"]) == len(KINDS) + 1  # the other four kinds, the null component, attribution


def test_explorer_names_the_efficient_sample_when_an_example_is_outside_it(run_dir):
    _rewrite(run_dir, "maps", lambda frame: frame.filter(~((pl.col("kind") == "efficient") & (pl.col("example_id") == 1))))
    _rewrite(run_dir, "examples", lambda frame: frame.with_columns(
        in_efficient_sample=pl.col("in_efficient_sample") & (pl.col("example_id") != 1)))
    at = open_page("explorer", query={"ex_example": "1"})
    assert problems(at) == []
    assert any("outside the efficient sample" in info.value for info in at.info)


@pytest.mark.usefixtures("fixture_caches_env")
@pytest.mark.parametrize("name", PAGES)
def test_a_selection_of_only_the_new_kinds_renders_every_page(name):
    at = open_page(name, query={"kind": list(NEW_KINDS)})
    assert problems(at) == []
    if name == "overview":  # the fixture evaluated standard and effective only: no dev metrics to draw
        assert any("No dev metrics for the selected kinds" in info.value for info in at.info)
    else:
        assert figures(at), f"{name} draws no chart"


@pytest.mark.usefixtures("fixture_caches_env")
def test_special_tokens_draw_every_kind_and_its_difference_from_standard_for_cls_sep_and_punctuation():
    at = open_page("special_tokens")
    assert problems(at) == []
    cls_panels, sep_panels, punct_panels = figures(at)[:3]
    for task in ("RTE", "SST-2"):  # one grid column per task: "RTE · standard", ..., "RTE · effective − standard"
        traces = {trace["name"].removeprefix(f"{task} · "): trace for trace in cls_panels["data"]
                  if trace["name"].startswith(f"{task} · ")}
        assert list(traces) == [*(kinds.label(kind) for kind in KINDS), *(kinds.difference(kind) for kind in KINDS[1:])]
        standard = np.array(traces[kinds.label("standard")]["z"], dtype=float)
        for kind in KINDS[1:]:
            difference = np.array(traces[kinds.difference(kind)]["z"], dtype=float)
            np.testing.assert_allclose(difference, np.array(traces[kinds.label(kind)]["z"], dtype=float) - standard,
                                       atol=1e-12)
            _assert_colour_rule(traces[kinds.difference(kind)], DIFFERENCE)
    assert len(punct_panels["data"]) == len(cls_panels["data"])


@pytest.mark.usefixtures("fixture_caches_env")
def test_findings_compare_norm_weighting_and_efficient_attention_with_standard_in_numbers():
    at = open_page("overview")
    table = at.table[0].value
    norm = table[table["claim"].str.startswith("With norm-weighting")]
    assert len(norm) == 3 and set(norm["verdict"]) == {"✓ holds"}  # the fixture's norms are small on those tokens
    assert all(re.search(r"\d\.\d{3} → \d\.\d{3}", ours) for ours in norm["ours"])
    assert all("Kobayashi et al. 2020" in text for text in norm["paper"])
    efficient = table[table["claim"].str.startswith("Efficient attention")]
    assert len(efficient) == 2 and set(efficient["verdict"]) == {"context"}
    support = efficient["ours"].iloc[0]
    assert support.startswith("1.000 → 0.") and f"{EFFICIENT_EXAMPLES * len(TASKS)} examples" in support
    assert re.search(r"\d+\.\d% → \d+\.\d%", efficient["ours"].iloc[1])


@pytest.mark.usefixtures("fixture_caches_env")
def test_sidebar_and_legends_use_the_kinds_labels():
    at = open_page("token_types", query={"tt_view": "averaged over tasks"})
    sidebar_kinds = at.button_group(key="kind")
    assert sidebar_kinds.options == list(KINDS)  # names, so that links keep ?kind=effective
    assert all(kinds.label(kind) in sidebar_kinds.help for kind in KINDS)
    heatmaps, bars = figures(at)[:2]
    assert [trace["name"] for trace in heatmaps["data"]] == [
        *(f"all selected · {kinds.label(kind)}" for kind in KINDS),
        *(f"all selected · {kinds.difference(kind)}" for kind in KINDS[1:])]
    assert [trace["name"] for trace in bars["data"]] == [kinds.label(kind) for kind in KINDS]


@pytest.mark.usefixtures("fixture_caches_env")
def test_patterns_put_the_papers_rows_only_beside_the_kinds_it_reports():
    at = open_page("patterns")
    table = at.dataframe[0].value
    paper_kinds = set(table[table["source"] == "paper"]["attention"])
    assert paper_kinds == {"standard", "effective"}
    assert set(table[table["source"] == "ours"]["attention"]) == set(KINDS)


def test_caches_of_schema_version_1_give_the_one_line_rerun_error(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 1}))
    at = open_page(None)
    assert list(at.exception) == []
    (error,) = at.error
    assert "schema version 1, this effattn reads 2" in error.value and "new --out" in error.value
    assert "\n" not in error.value


def test_a_parquet_part_of_schema_version_1_is_named_in_the_error(run_dir):
    _rewrite(run_dir, "head_summary", lambda frame: frame, version="1")
    at = open_page("special_tokens")
    assert list(at.exception) == []
    assert "schema version 1, this effattn reads 2" in at.error[0].value and "head_summary" in at.error[0].value
