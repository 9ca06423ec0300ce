"""The shared sidebar: URL parameters reproduce a view, the selection survives page switches,
and the dashboard never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cache_fixture import APP, figures, open_page, problems
from dashboard.kinds import label


pytestmark = pytest.mark.usefixtures("fixture_caches_env")


def test_url_parameters_select_run_tasks_layers_heads_and_kinds():
    at = open_page("special_tokens", query={"task": "sst2", "layer": ["1", "4"], "head": ["2"], "kind": "effective",
                                            "sp_task": "sst2"})
    assert problems(at) == []
    (panel,) = figures(at)[0]["data"]
    assert panel["name"] == f"SST-2 · {label('effective')}" and panel["y"] == [1, 4] and panel["x"] == [2]


def test_sidebar_selection_survives_a_page_switch():
    at = open_page(None)
    at.multiselect(key="task").set_value(["sst2"]).run()
    at.button_group(key="kind").set_value(["effective"]).run()
    at.switch_page("dashboard/pages/cost.py").run()
    assert at.multiselect(key="task").value == ["sst2"]
    assert at.dataframe[0].value["task"].tolist() == ["SST-2"]
    at.switch_page("dashboard/pages/finetuning.py").run()
    assert {line["name"] for line in figures(at)[0]["data"]} == {f"SST-2 · {label('effective')}"}


def test_sidebar_widgets_are_bound_to_the_url():
    at = open_page(None)
    assert at.selectbox(key="run").proto.query_param_key == "run"
    assert at.multiselect(key="task").proto.query_param_key == "task"
    assert {w.key: w.proto.query_param_key for w in at.button_group} == {
        "layer": "layer", "head": "head", "kind": "kind", "image_format": "image_format"}


def test_invalid_url_values_are_ignored_not_fatal():
    at = open_page("explorer", query={"task": "nosuchtask", "layer": "99", "ex_example": "12345"})
    assert problems(at) == []


def test_invalid_url_values_are_named_in_a_visible_notice():
    at = open_page(None, query={"task": ["rte", "nosuchtask"], "layer": "99", "kind": "effective"})
    (notice,) = [warning.value for warning in at.sidebar.warning]
    assert "task=nosuchtask" in notice and "layer=99" in notice and "kind=" not in notice
    assert at.multiselect(key="task").value == ["rte"]  # the valid value is still used


def test_a_valid_link_gives_no_notice():
    at = open_page(None, query={"task": "rte", "layer": ["1", "4"], "kind": "effective"})
    assert list(at.sidebar.warning) == []


def test_pages_never_import_torch_or_effattn(fixture_caches):
    script = f"""
import json, sys
sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(APP.parent)!r}]
from cache_fixture import PAGES, open_page
for page in PAGES:
    open_page(page)
print(json.dumps({{"torch": "torch" in sys.modules, "effattn": "effattn" in sys.modules}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            env={**__import__("os").environ, "EFFATTN_DATA": str(fixture_caches)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"torch": False, "effattn": False}


def test_table2_says_it_ignores_the_layer_and_head_filters():
    narrowed = open_page("patterns", query={"layer": ["1"], "head": ["0", "2"]})
    notes = [info.value for info in narrowed.info if "Table 2" in info.value]
    assert notes == ["Table 2, like the paper's, counts every layer and every head: the sidebar's layers and heads "
                     "filters do not apply to it."]
    assert not [info.value for info in open_page("patterns").info if "Table 2" in info.value]
