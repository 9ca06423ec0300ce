"""precompute.store: schema validation, atomic writes, schema-version errors, manifest, stages."""

import errno
import json
import os

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
    run.mark_stage_done("evaluate", "rte")
    _metrics().write_parquet(path, metadata={"effattn_schema_version": "0"})
    with pytest.raises(CacheError, match=rf"{path.name} has schema version 0, this effattn reads {SCHEMA_VERSION}: re-run "
                                         r".* --tasks rte --stages evaluate: it deletes the broken part"):
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


def _write_manifest(root, value) -> None:
    (root / "manifest.json").write_text(json.dumps(value))


@pytest.mark.parametrize("value", [[1, 2], "text", 3, None])
def test_a_manifest_that_is_no_object_names_the_file_and_the_fix(tmp_path, value):
    RunFolder(tmp_path).mark_stage_done("evaluate", "rte")  # a marker to rebuild it from
    _write_manifest(tmp_path, value)
    with pytest.raises(CacheError, match=r"manifest.json holds a JSON \w+, expected an object: delete it and re-run "
                                         r".*rebuilds manifest.json from the stage markers"):
        RunFolder(tmp_path).read_manifest()


def test_a_broken_manifest_without_markers_says_to_restore_the_copy(tmp_path):
    _write_manifest(tmp_path, [1, 2])
    with pytest.raises(CacheError, match=r"holds a JSON list, expected an object: restore .*git checkout"):
        RunFolder(tmp_path).read_manifest()


def test_a_schema_version_written_as_a_string_is_read_as_the_integer(tmp_path):
    _write_manifest(tmp_path, {"schema_version": str(SCHEMA_VERSION)})
    assert RunFolder(tmp_path).read_manifest()["schema_version"] == SCHEMA_VERSION


@pytest.mark.parametrize(("version", "message"), [
    ("1", "has schema version 1, this effattn reads 2: re-run into a new --out"),
    (1, "has schema version 1, this effattn reads 2: re-run into a new --out"),
    ("two", "has schema_version 'two' \\(a string\\), expected the integer 2"),
    (True, "has schema_version True \\(a boolean\\), expected the integer 2"),
    (None, "has no schema_version, expected the integer 2"),
])
def test_a_bad_schema_version_says_what_it_is_and_what_works(tmp_path, version, message):
    _write_manifest(tmp_path, {"schema_version": version})
    with pytest.raises(CacheError, match=message):
        RunFolder(tmp_path).read_manifest()


def test_a_manifest_field_of_the_wrong_type_is_an_error(tmp_path):
    _write_manifest(tmp_path, {"schema_version": SCHEMA_VERSION, "row_counts": {"rte": [6]}})
    with pytest.raises(CacheError, match="has a row_counts that is not an object of objects per task"):
        RunFolder(tmp_path).read_manifest()


def test_a_deleted_manifest_is_rebuilt_from_the_stage_records(tmp_path):
    run = RunFolder(tmp_path)
    run.update_manifest({"model": "tiny", "attention": "sparsemax", "tasks": ["rte"]})
    run.mark_stage_done("evaluate", "rte", seconds=1.5, record={"metrics": {"rte": {"standard": {"accuracy": 0.6}}}})
    run.mark_stage_done("extract", "rte", Shard(1, 2), seconds=2.0)
    expected = run.read_manifest()
    run.manifest_path.unlink()
    assert run.read_manifest() == expected


def test_markers_without_records_still_count_and_give_back_their_seconds(tmp_path):
    marker = tmp_path / "stages" / "evaluate" / "task=rte" / "00000-of-00001.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"seconds": 1.5, "shard": "0/1"}))  # as written before records existed
    run = RunFolder(tmp_path)
    assert run.stage_done("evaluate", "rte")
    assert run.read_manifest() == {"schema_version": SCHEMA_VERSION, "tasks": ["rte"],
                                   "stage_seconds": {"rte": {"evaluate": 1.5}}}


def test_a_part_with_a_column_of_another_type_is_named(tmp_path):
    run = RunFolder(tmp_path)
    path = run.write_part("metrics", "rte", _metrics(), shard=Shard(), chunk=0)
    _metrics().with_columns(pl.col("value").cast(pl.String)).write_parquet(path, metadata={"effattn_schema_version": "2"})
    with pytest.raises(CacheError, match=rf"{path.name} has the column 'value' as String, docs/SCHEMA.md says Float64"):
        run.scan("metrics")


def test_a_running_write_keeps_its_temporary_and_a_killed_one_leaves_it_to_clean(tmp_path):
    run = RunFolder(tmp_path)
    orphan = tmp_path / "metrics" / ".part-00000-of-00001-00000.parquet.abc.tmp"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("half")
    with atomic_path(tmp_path / "metrics" / "x.json") as tmp:
        tmp.write_text("in progress")
        assert run.leftover_temporaries() == [orphan]


def test_clearing_the_importance_stage_clears_its_marker_and_both_tables(tmp_path):
    run = RunFolder(tmp_path)
    run.write_part("output_dispersion", "rte", pl.DataFrame({"task": ["rte"], "example_id": [0], "target": ["leave_one_out"],
                                                             "entropy": [0.5], "n_keys": [3]}), shard=Shard(), chunk=0)
    run.mark_stage_done("importance", "rte")
    run.clear("importance", "rte")
    assert not run.stage_done("importance", "rte") and run.part_files("output_dispersion") == []


def test_a_stray_part_name_is_not_a_chunk(tmp_path):
    run = RunFolder(tmp_path)
    path = run.write_part("metrics", "rte", _metrics(), shard=Shard(), chunk=0)
    path.with_name(f"{path.stem} (copy).parquet").write_bytes(path.read_bytes())
    assert run.existing_chunks("metrics", "rte", Shard()) == {0}


def test_atomic_writes_are_readable_by_other_users_as_the_umask_allows(tmp_path):
    # mkstemp creates 0o600 files; a dashboard running as another user (a container) must read them
    import stat

    from precompute.store import FILE_MODE, atomic_path

    target = tmp_path / "table" / "part.parquet"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
    assert stat.S_IMODE(target.stat().st_mode) == FILE_MODE
    assert FILE_MODE & stat.S_IROTH or os.umask(os.umask(0)) & stat.S_IROTH


def test_a_pattern_shares_part_from_before_the_intervals_still_reads(tmp_path):
    # caches written before issue 17 lack the interval columns: they read with those columns null
    from precompute.checks import inspect_part
    from precompute.schema import SCHEMA_VERSION_KEY

    part = tmp_path / "pattern_shares" / "task=rte" / "part-00000-of-00001-00000.parquet"
    part.parent.mkdir(parents=True)
    old = pl.DataFrame({"task": ["rte"], "kind": ["standard"], "pattern": ["vertical"], "share": [0.4], "n_maps": [10]})
    old.write_parquet(part, metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION)})
    footer, fault = inspect_part(part, "pattern_shares")
    assert fault is None
    read = pl.read_parquet(part, schema=TABLES["pattern_shares"], missing_columns="insert")
    assert read["share_low"].is_null().all() and read["share"][0] == 0.4
    # a column that is not fillable is still a fault
    old.drop("n_maps").write_parquet(part, metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION)})
    assert "lacks the column 'n_maps'" in inspect_part(part, "pattern_shares")[1]
