"""Every dashboard page on every kind of corrupt cache: one st.error naming the file, no traceback.

One damaged copy of the fixture run per variant (module-scoped); every page of app.py's router
is driven through one AppTest per variant, switching pages, so each (variant, page) case costs
one script run. Part variants damage every part of every table, so whichever table a page reads
first, the message must name a damaged file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from cache_fixture import APP, APP_TIMEOUT_SECONDS, PAGES, write_run
from precompute.schema import SCHEMA_VERSION_KEY, TABLE_KEYS, TABLES
from precompute.store import PART_NAME


def _parts(run: Path) -> list[Path]:
    return sorted(run.glob("*/task=*/part-*.parquet"))


def _rewrite(path: Path, change) -> None:
    change(pl.read_parquet(path)).write_parquet(path, metadata={SCHEMA_VERSION_KEY: "2"})


def _set_manifest(run: Path, value) -> list[Path]:
    path = run / "manifest.json"
    path.write_text(json.dumps(value(json.loads(path.read_text()))))
    return [path]


def _truncate(run: Path) -> list[Path]:
    for path in _parts(run):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return _parts(run)


def _garbage(run: Path) -> list[Path]:
    for path in _parts(run):
        path.write_bytes(b"not a parquet file")
    return _parts(run)


def _drop_a_column(run: Path) -> list[Path]:
    for path in _parts(run):
        table = path.parent.parent.name
        spare = [name for name in TABLES[table] if name not in TABLE_KEYS[table]][-1]
        _rewrite(path, lambda frame: frame.drop(spare))
    return _parts(run)


def _add_a_column(run: Path) -> list[Path]:
    for path in _parts(run):
        _rewrite(path, lambda frame: frame.with_columns(note=pl.lit("extra")))
    return _parts(run)


def _duplicate(run: Path) -> list[Path]:
    for path in _parts(run):  # the same bytes under a chunk number the run does not have
        name = PART_NAME.fullmatch(path.name)
        shutil.copy(path, path.with_name(f"part-{name['shard']}-{int(name['chunk']) + 50:05d}.parquet"))
    return _parts(run)


def _stray_copy(run: Path) -> list[Path]:
    for path in _parts(run):
        shutil.copy(path, path.with_name(f"{path.stem} (copy).parquet"))
    return _parts(run)


def _second_shard_layout(run: Path) -> list[Path]:
    for path in _parts(run):  # the same rows as a 2-shard run would label them, in other bytes
        name = PART_NAME.fullmatch(path.name)
        pl.read_parquet(path).write_parquet(path.with_name(f"part-00001-of-00002-{name['chunk']}.parquet"),
                                            compression="snappy", metadata={SCHEMA_VERSION_KEY: "2"})
    return _parts(run)


def _manifest_list(run: Path) -> list[Path]:
    (run / "manifest.json").write_text("[1, 2]")
    return [run / "manifest.json"]


# variant -> (damage(run) -> the damaged files, a phrase the message must contain)
VARIANTS = {
    "manifest_list": (_manifest_list, "holds a JSON list, expected an object"),
    "manifest_string_version": (lambda run: _set_manifest(run, lambda m: {**m, "schema_version": "1"}),
                                "has schema version 1, this effattn reads 2"),
    "manifest_old_version": (lambda run: _set_manifest(run, lambda m: {**m, "schema_version": 1}),
                             "has schema version 1, this effattn reads 2"),
    "truncated_part": (_truncate, "truncated"),
    "garbage_part": (_garbage, "not a Parquet file"),
    "part_missing_a_column": (_drop_a_column, "lacks the column"),
    "part_with_an_extra_column": (_add_a_column, "'note', which docs/SCHEMA.md does not list"),
    "duplicated_part": (_duplicate, "byte-identical copy"),
    "stray_copy_of_a_part": (_stray_copy, "has a name precompute never writes"),
    "part_of_a_second_shard_layout": (_second_shard_layout, "-shard layout but"),
}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict[str, tuple[Path, set[str]]]:
    """variant -> (data root holding one damaged run, the paths of its damaged files)."""
    clean = write_run(tmp_path_factory.mktemp("clean") / "minilm")
    roots = {}
    for variant, (damage, _) in VARIANTS.items():
        root = tmp_path_factory.mktemp(variant)
        run = Path(shutil.copytree(clean, root / "minilm"))
        roots[variant] = (root, {str(path) for path in damage(run)})
    return roots


_APPS: dict[str, object] = {}  # variant -> its AppTest, shared by the variant's page cases


def _page_run(variant: str, page: str, root: Path):
    from streamlit.testing.v1 import AppTest

    if variant not in _APPS:
        _APPS[variant] = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_SECONDS)
        _APPS[variant].run()
    at = _APPS[variant]
    at.switch_page(f"dashboard/pages/{page}.py").run()
    return at


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_a_corrupt_cache_is_one_error_naming_the_file(damaged, monkeypatch, variant, page):
    root, files = damaged[variant]
    monkeypatch.setenv("EFFATTN_DATA", str(root))
    at = _page_run(variant, page, root)
    assert [str(e.value) for e in at.exception] == []
    (error,) = [str(e.value) for e in at.error]
    assert any(error.startswith(f"cache {path} ") for path in files), error
    assert VARIANTS[variant][1] in error and "\n" not in error
