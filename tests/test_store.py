"""precompute.store: schema validation, atomic writes, schema-version errors, manifest, stages."""

import errno
import json

import polars as pl
import pytest

from precompute import CacheError, ConfigError, DiskFullError
from precompute.schema import SCHEMA_VERSION, TABLES
from precompute.store import RunFolder, Shard, atomic_path


def _metrics(task="rte", value=0.5) -> pl.DataFrame:
    return pl.DataFrame({"task": [task] * 2, "kind": ["standard", "effective"], "metric": ["accuracy"] * 2,
                         "value": [value, value], "n_examples": [10, 10]})


def test_written_part_reads_back_with_the_schema_dtypes(tmp_path):
    run = RunFolder(tmp_path)
    frame = _metrics().with_columns(pl.col("n_examples").cast(pl.Int32))  # safe cast to i64
    run.write_part("metrics", "rte", frame, shard=Shard(), chunk=0)
    back = run.scan("metrics").collect()
    assert back.schema == pl.Schema(TABLES["metrics"])
    assert back["n_examples"].to_list() == [10, 10]


def test_scan_combines_shards_and_filters_tasks(tmp_path):
    run = RunFolder(tmp_path)
    run.write_part("metrics", "rte", _metrics("rte"), shard=Shard(0, 2), chunk=0)
    run.write_part("metrics", "rte", _metrics("rte", 0.7), shard=Shard(1, 2), chunk=0)
    run.write_part("metrics", "mrpc", _metrics("mrpc"), shard=Shard(0, 2), chunk=0)
    assert run.scan("metrics").collect().height == 6
    assert run.scan("metrics", tasks=["rte"]).collect()["task"].unique().to_list() == ["rte"]
    assert run.existing_chunks("metrics", "rte", Shard(1, 2)) == {0}


def test_scan_of_an_empty_table_has_the_schema(tmp_path):
    assert RunFolder(tmp_path).scan("maps").collect().schema == pl.Schema(TABLES["maps"])


def test_wrong_dtype_error_names_the_column(tmp_path):
    frame = _metrics().with_columns(pl.col("value").cast(pl.String))
    with pytest.raises(CacheError, match=r"metrics\.value is String"):
        RunFolder(tmp_path).write_part("metrics", "rte", frame, shard=Shard(), chunk=0)


def test_missing_column_error_names_the_column(tmp_path):
    with pytest.raises(CacheError, match="'n_examples'"):
        RunFolder(tmp_path).write_part("metrics", "rte", _metrics().drop("n_examples"), shard=Shard(), chunk=0)


def test_overflowing_cast_is_an_error(tmp_path):
    frame = pl.DataFrame({"task": ["rte"], "layer": [70_000], "head": [0], "kind": ["standard"],
                          "dominant_pattern": ["block"], "dominant_share": [1.0]})
    with pytest.raises(CacheError, match="does not fit"):
        RunFolder(tmp_path).write_part("pattern_grid", "rte", frame, shard=Shard(), chunk=0)


def test_other_schema_version_names_file_and_fix(tmp_path):
    run = RunFolder(tmp_path)
    path = run.write_part("metrics", "rte", _metrics(), shard=Shard(), chunk=0)
    _metrics().write_parquet(path, metadata={"effattn_schema_version": "0"})
    with pytest.raises(CacheError, match=rf"{path.name} has schema version 0, this effattn reads {SCHEMA_VERSION}: re-run .*--force"):
        run.scan("metrics")


def test_corrupt_part_file_is_a_clear_error(tmp_path):
    run = RunFolder(tmp_path)
    path = run.write_part("metrics", "rte", _metrics(), shard=Shard(), chunk=0)
    path.write_bytes(b"not parquet")
    with pytest.raises(CacheError, match="is corrupt"):
        run.scan("metrics")


def test_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_becomes_disk_full_error(tmp_path):
    with pytest.raises(DiskFullError, match="disk full"):
        with atomic_path(tmp_path / "x.json"):
            raise OSError(errno.ENOSPC, "No space left on device")


def test_manifest_updates_merge_deeply(tmp_path):
    run = RunFolder(tmp_path)
    run.update_manifest({"metrics": {"rte": {"standard": {"accuracy": 0.6}}}})
    run.update_manifest({"metrics": {"rte": {"effective": {"accuracy": 0.6}}}})
    manifest = run.read_manifest()
    assert set(manifest["metrics"]["rte"]) == {"standard", "effective"}
    assert manifest["schema_version"] == SCHEMA_VERSION


def test_manifest_of_another_schema_version_is_an_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(CacheError, match="schema version 99"):
        RunFolder(tmp_path).read_manifest()


def test_stage_markers_are_per_shard_and_cleared_by_force(tmp_path):
    run = RunFolder(tmp_path)
    run.mark_stage_done("extract", "rte", Shard(1, 2), seconds=1.5)
    assert run.stage_done("extract", "rte", Shard(1, 2)) and not run.stage_done("extract", "rte", Shard(0, 2))
    assert run.read_manifest()["stage_seconds"]["rte"]["extract"] == 1.5
    run.clear("extract", "rte")
    assert not run.stage_done("extract", "rte", Shard(1, 2))


def test_clear_stage_removes_its_tables(tmp_path):
    run = RunFolder(tmp_path)
    run.write_part("metrics", "rte", _metrics(), shard=Shard(), chunk=0)
    run.clear("evaluate", "rte")
    assert run.part_files("metrics") == []


@pytest.mark.parametrize("text", ["1/1", "3", "a/b", "-1/2"])
def test_bad_shard_names_the_option(text):
    with pytest.raises(ConfigError, match="--shard|i/N"):
        Shard.parse(text)


def test_shard_label_is_zero_padded():
    assert Shard.parse("2/8").label == "00002-of-00008"


def test_concurrent_manifest_updates_are_not_lost(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_update_many, args=(tmp_path, name)) for name in ("a", "b", "c")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    counts = RunFolder(tmp_path).read_manifest()["counts"]
    assert counts == {name: {str(i): i for i in range(20)} for name in ("a", "b", "c")}


def _update_many(root, name):
    run = RunFolder(root)
    for i in range(20):
        run.update_manifest({"counts": {name: {str(i): i}}})
