"""The Sparse attention page on synthetic runs that differ only in their attention map."""

import polars as pl
import pytest
import scipy.stats

from cache_fixture import figures, open_page, problems
from sparse_fixture import RUNS, write_sparse_root


@pytest.fixture(scope="module")
def sparse_root(tmp_path_factory):
    return write_sparse_root(tmp_path_factory.mktemp("sparse_root"))


@pytest.fixture
def sparse_page(sparse_root, monkeypatch):
    monkeypatch.setenv("EFFATTN_DATA", str(sparse_root))
    return open_page("sparse")


def test_the_page_renders_every_section_without_problems(sparse_page):
    at = sparse_page
    assert not problems(at)
    headings = [element.value for element in at.subheader]
    assert any("Table 1" in text for text in headings) and any("Table 6" in text for text in headings)
    overview = at.dataframe[0].value
    assert list(overview["attention"]) == ["softmax", "sparsegen:-2", "sparsemax", "sparsegen:0.5"]  # softmax, then by λ
    assert len(figures(at)) >= 5


def test_zero_share_per_run_is_the_mean_of_its_summary(sparse_page, sparse_root):
    overview = sparse_page.dataframe[0].value
    for name, (attention, _) in RUNS.items():
        summary = pl.read_parquet(sparse_root / name / "sparsity_summary" / "task=sst2" / "*.parquet")
        expected = summary.filter(pl.col("kind") == "standard", pl.col("measure") == "zero_share")["mean"].mean()
        shown = overview.loc[overview["attention"] == attention, "zero share"].item()
        assert shown == pytest.approx(expected)


def test_lambda_sweep_tau_is_scipys_over_every_example(sparse_page, sparse_root):
    lams, entropies = [], []
    for name, (attention, _) in RUNS.items():
        if attention == "softmax":
            continue
        lam = 0.0 if attention == "sparsemax" else float(attention.split(":")[1])
        influence = pl.read_parquet(sparse_root / name / "layer_influence" / "task=sst2" / "*.parquet")
        per_example = influence.group_by("example_id").agg(pl.col("entropy").mean())
        lams += [lam] * len(per_example)
        entropies += per_example["entropy"].to_list()
    expected = scipy.stats.kendalltau(lams, entropies).statistic
    metric = next(m for m in sparse_page.metric if "input-influence entropy" in m.label)
    assert float(metric.value) == pytest.approx(expected, abs=0.005)
    assert expected < 0  # the fixture is built like their finding


def test_ours_beside_theirs_has_their_numbers(sparse_page):
    table = sparse_page.dataframe[-1].value
    theirs = dict(zip(table["measure"], table["theirs (SST, Transformer)"]))
    assert theirs["Kendall τ, λ vs input-influence entropy (Table 2)"] == -0.81
    assert theirs["input-influence entropy, sparsemax (Table 1)"] == 0.63


def test_a_single_run_says_how_to_make_a_sparse_one(run_dir):
    at = open_page("sparse")
    assert not problems(at)
    assert any("--attention sparsemax" in info.value for info in at.info)


def test_the_sidebar_shows_the_runs_attention_map(sparse_root, monkeypatch):
    monkeypatch.setenv("EFFATTN_DATA", str(sparse_root))
    at = open_page("sparse", query={"run": "fixture-sparsemax"})
    assert any("attention: **sparsemax**" in caption.value for caption in at.sidebar.caption)


def test_findings_answer_meisters_claims_with_the_runs_numbers(sparse_root, monkeypatch):
    from dashboard import findings, sparse_views
    from dashboard.data import discover_runs, load_run

    monkeypatch.setenv("EFFATTN_DATA", str(sparse_root))
    run = load_run("fixture-softmax", discover_runs()["fixture-softmax"])
    table = findings.findings(run, ("sst2",))
    sparse_rows = table.filter(pl.col("paper").str.contains("Meister"))
    claims = " ".join(sparse_rows["claim"])
    assert "dispersed" in claims and "larger λ" in claims and "Sparsemax lowers" in claims
    sweep = sparse_rows.filter(pl.col("claim").str.contains("larger λ")).row(0, named=True)
    comparison = next(c for c in sparse_views.comparisons() if c.task == "sst2")
    tau = sparse_views.findings_numbers(comparison)["tau_sweep"]
    assert f"τ {tau:+.2f}" in sweep["ours"] and sweep["verdict"] == "holds"  # the fixture's entropy falls with λ
