"""The dashboard's bad and empty states: each ends in a message, never a traceback."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading

import polars as pl
import pytest

from cache_fixture import PAGES, figures, free_port, open_page, problems, write_run
from precompute.schema import SCHEMA_VERSION_KEY


def _no_traceback(at) -> None:
    assert list(at.exception) == []


def test_no_caches_shows_how_to_run_precompute(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFATTN_DATA", str(tmp_path))
    at = open_page(None)
    _no_traceback(at)
    assert at.title[0].value == "No cached results yet"
    assert any("python -m precompute" in md.value for md in at.markdown)


def test_missing_data_folder_shows_how_to_run_precompute(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFATTN_DATA", str(tmp_path / "nowhere"))
    at = open_page(None)
    _no_traceback(at)
    assert "nowhere" in at.warning[0].value


def test_corrupt_parquet_file_is_named_in_the_error(run_dir):
    broken = sorted((run_dir / "head_summary" / "task=rte").glob("*.parquet"))[0]
    broken.write_bytes(b"not a parquet file")
    at = open_page("token_types")
    _no_traceback(at)
    assert str(broken) in at.error[0].value


def test_parquet_of_another_schema_version_is_named_in_the_error(run_dir):
    old = sorted((run_dir / "metrics" / "task=sst2").glob("*.parquet"))[0]
    pl.read_parquet(old).write_parquet(old, metadata={SCHEMA_VERSION_KEY: "0"})
    at = open_page("cost")
    _no_traceback(at)
    assert str(old) in at.error[0].value and "schema version 0" in at.error[0].value


def test_manifest_of_another_schema_version_is_named_in_the_error(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    at = open_page(None)
    _no_traceback(at)
    assert "manifest.json" in at.error[0].value and "schema version 99" in at.error[0].value


def test_unreadable_manifest_is_named_in_the_error(run_dir):
    (run_dir / "manifest.json").write_text("{not json")
    at = open_page(None)
    _no_traceback(at)
    assert "manifest.json" in at.error[0].value and "not valid JSON" in at.error[0].value


def test_a_schema_version_written_as_a_string_is_accepted(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**manifest, "schema_version": "2"}))
    assert problems(open_page(None)) == []


def test_a_manifest_field_of_the_wrong_type_is_one_error_naming_the_file(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**manifest, "row_counts": [6, 6]}))
    at = open_page(None)
    _no_traceback(at)
    (error,) = at.error
    assert str(run_dir / "manifest.json") in error.value and "row_counts" in error.value


def test_missing_analysis_tables_give_hints_not_errors(run_dir):
    for table in ("head_summary", "pattern_shares", "pattern_grid", "metrics", "attribution_summary", "influence_summary"):
        shutil.rmtree(run_dir / table)
    for page in [page for page in PAGES if page != "explorer"]:
        at = open_page(page)
        assert problems(at) == [], page
        assert at.info, page


@pytest.mark.parametrize("page", PAGES)
def test_empty_task_selection_shows_a_hint(run_dir, page):
    at = open_page(page, query={"task": ""})
    assert problems(at) == []
    assert any("Select at least one of: tasks" in info.value for info in at.info)


def test_empty_layer_selection_shows_a_hint_on_layer_pages(run_dir):
    at = open_page("special_tokens", query={"layer": ""})
    assert problems(at) == []
    assert any("layers" in info.value for info in at.info)
    assert figures(at) == []


def test_unreachable_data_url_is_a_message(monkeypatch):
    monkeypatch.setenv("EFFATTN_DATA", f"http://127.0.0.1:{free_port()}/runs")
    at = open_page(None)
    _no_traceback(at)
    assert "cannot reach" in at.error[0].value and "EFFATTN_DATA" in at.error[0].value


@pytest.fixture
def served_runs(tmp_path):
    """The fixture data folder behind a plain static HTTP server (no range requests)."""
    root = tmp_path / "served"
    write_run(root / "minilm")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_runs_over_http_are_read_like_local_ones(served_runs, monkeypatch):
    monkeypatch.setenv("EFFATTN_DATA", served_runs)
    at = open_page("explorer", query={"ex_example": "1"})
    assert problems(at) == []
    standard = figures(at)[0]["data"][0]
    assert len(standard["x"]) == 12


def test_page_errors_are_caught_by_the_router_on_every_page(run_dir):
    for table in ("head_summary", "examples", "metrics", "pattern_shares", "attribution_summary"):
        for part in (run_dir / table).glob("task=*/*.parquet"):
            part.write_bytes(b"garbage")
    for page in PAGES:
        at = open_page(page)
        _no_traceback(at)
        assert "is corrupt" in at.error[0].value, page
