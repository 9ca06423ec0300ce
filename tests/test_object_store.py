"""Caches in object storage: EFFATTN_DATA=s3://bucket/prefix against a local moto S3 server.

The server (moto's WSGI app on 127.0.0.1, a free port) enforces IAM credentials, so wrong keys
are refused as on AWS, and logs every response's size, so pushdown is measured in bytes sent.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import threading
from pathlib import Path

import pytest
import streamlit as st

from cache_fixture import figures, open_page, problems, write_run
from dashboard import data, object_store
from dashboard.errors import DashboardError, NoCachesError
from precompute.schema import TABLES

BUCKET = "effattn-runs"
REAL_RUN = Path(__file__).resolve().parent.parent / "data" / "minilm-sparsemax"  # small and real
BIG_PART = (Path(__file__).resolve().parent.parent / "data" / "minilm" / "head_measures" / "task=rte"
            / "part-00000-of-00001-00000.parquet")  # 0.9 MB, the real MiniLM run's per-head measures


class _ByteLog:
    """WSGI middleware: (method, path, bytes sent) of every response the wrapped app gives."""

    def __init__(self, app) -> None:
        self.app, self.entries, self.lock = app, [], threading.Lock()

    def __call__(self, environ, start_response):
        sent = 0
        try:
            for chunk in self.app(environ, start_response):
                sent += len(chunk)
                yield chunk
        finally:
            with self.lock:
                self.entries.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], sent))

    def bytes_sent(self, path_part: str) -> int:
        with self.lock:
            return sum(sent for method, path, sent in self.entries if method == "GET" and path_part in path)


def _upload(client, folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server holding the fixture run and a real sparse run under runs/, and one big
    head_measures part under big/; yields (endpoint, access key, secret, byte log). Auth is on."""
    import boto3
    from moto import settings
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    log = _ByteLog(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, log, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    admin = {"endpoint_url": endpoint, "aws_access_key_id": "admin", "aws_secret_access_key": "admin",
             "region_name": "us-east-1"}
    try:
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="read-all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        client = boto3.client("s3", **admin)
        client.create_bucket(Bucket=BUCKET)
        local = tmp_path_factory.mktemp("s3-source")
        write_run(local / "minilm")
        _upload(client, local / "minilm", "runs/minilm")
        _upload(client, REAL_RUN, "runs/minilm-sparsemax")
        client.upload_file(str(REAL_RUN / "manifest.json"), BUCKET, "big/head/manifest.json")
        client.upload_file(str(BIG_PART), BUCKET, f"big/head/head_measures/task=rte/{BIG_PART.name}")
        shutil.copytree(REAL_RUN, local / "minilm-sparsemax")
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on every request must be signed by a known key
        yield {"endpoint": endpoint, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"], "log": log,
               "local": local}
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def s3_env(s3, monkeypatch):
    """The standard AWS variables pointing at the test server, and fresh dashboard caches."""
    for name, value in {"AWS_ENDPOINT_URL": s3["endpoint"], "AWS_ACCESS_KEY_ID": s3["key"],
                        "AWS_SECRET_ACCESS_KEY": s3["secret"], "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("EFFATTN_DATA", f"s3://{BUCKET}/runs")
    st.cache_data.clear()
    yield s3
    st.cache_data.clear()


def _local_run(s3, name: str, monkeypatch) -> data.Run:
    monkeypatch.setenv("EFFATTN_DATA", str(s3["local"]))
    location = data.discover_runs()[name]
    return data.load_run(name, location)


def test_runs_under_a_prefix_are_discovered(s3_env):
    assert data.discover_runs() == {"minilm": f"s3://{BUCKET}/runs/minilm",
                                    "minilm-sparsemax": f"s3://{BUCKET}/runs/minilm-sparsemax"}


def test_a_prefix_holding_a_manifest_is_one_run(s3_env, monkeypatch):
    monkeypatch.setenv("EFFATTN_DATA", f"s3://{BUCKET}/runs/minilm-sparsemax/")
    assert data.discover_runs() == {"minilm-sparsemax": f"s3://{BUCKET}/runs/minilm-sparsemax"}


@pytest.mark.parametrize("name", ["minilm", "minilm-sparsemax"])
def test_every_table_reads_as_from_the_local_folder(s3_env, monkeypatch, name):
    remote_run = data.load_run(name, data.discover_runs()[name])
    local_run = _local_run(s3_env, name, monkeypatch)
    assert remote_run.manifest == local_run.manifest
    assert remote_run.tasks_with_data() == local_run.tasks_with_data()
    compared = 0
    for table in TABLES:
        local = data.read(local_run, table)
        remote = data.read(remote_run, table)
        assert remote.schema == local.schema, table
        assert remote.equals(local), table
        compared += not local.is_empty()
    assert compared >= 5


def test_filters_and_columns_read_as_from_the_local_folder(s3_env, monkeypatch):
    remote_run = data.load_run("minilm", data.discover_runs()["minilm"])
    local_run = _local_run(s3_env, "minilm", monkeypatch)
    query = {"tasks": ("sst2",), "columns": ("layer", "head", "kind"), "layer": (1, 3), "kind": "effective"}
    local = data.read(local_run, "head_summary", **query)
    assert not local.is_empty()
    assert data.read(remote_run, "head_summary", **query).equals(local)


def test_a_column_pruned_read_fetches_a_fraction_of_the_part(s3_env, monkeypatch):
    monkeypatch.setenv("EFFATTN_DATA", f"s3://{BUCKET}/big")
    run = data.load_run("head", data.discover_runs()["head"])
    (part,) = data.table_files(run, "head_measures", ("rte",))
    before = s3_env["log"].bytes_sent("/big/head/head_measures/")
    frame = data.read(run, "head_measures", tasks=("rte",), columns=("layer", "head"))
    fetched = s3_env["log"].bytes_sent("/big/head/head_measures/") - before
    assert frame.height > 1000 and frame.columns == ["layer", "head"]
    assert 0 < fetched < part[2] / 4, (fetched, part[2])  # footer check + two small column chunks


def test_a_broken_remote_part_is_named_with_the_upload_fix(s3_env, monkeypatch):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_env["endpoint"], aws_access_key_id=s3_env["key"],
                          aws_secret_access_key=s3_env["secret"], region_name="us-east-1")
    key = "broken/minilm/head_summary/task=rte/part-00000-of-00001-00000.parquet"
    client.put_object(Bucket=BUCKET, Key="broken/minilm/manifest.json",
                      Body=(s3_env["local"] / "minilm" / "manifest.json").read_bytes())
    client.put_object(Bucket=BUCKET, Key=key, Body=b"not a parquet file")
    monkeypatch.setenv("EFFATTN_DATA", f"s3://{BUCKET}/broken")
    run = data.load_run("minilm", data.discover_runs()["minilm"])
    with pytest.raises(DashboardError, match=r"s3://.*part-00000-of-00001-00000\.parquet is corrupt .*upload"):
        data.read(run, "head_summary")


def test_a_prefix_without_runs_names_the_url(s3_env, monkeypatch):
    monkeypatch.setenv("EFFATTN_DATA", f"s3://{BUCKET}/nothing-here")
    with pytest.raises(NoCachesError, match=f"no run folder .* under s3://{BUCKET}/nothing-here$"):
        data.discover_runs()


def test_a_missing_bucket_is_one_line_naming_it(s3_env, monkeypatch):
    monkeypatch.setenv("EFFATTN_DATA", "s3://no-such-bucket/runs")
    with pytest.raises(DashboardError, match=r"bucket 'no-such-bucket' of EFFATTN_DATA=s3://no-such-bucket/runs "
                                             r"does not exist at AWS_ENDPOINT_URL=http://127\.0\.0\.1") as caught:
        data.discover_runs()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
def test_wrong_credentials_are_one_line_naming_the_variables(s3_env, monkeypatch, variable):
    monkeypatch.setenv(variable, "wrong")
    with pytest.raises(DashboardError, match=r"refused the credentials .*AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")\
            as caught:
        data.discover_runs()
    assert "\n" not in str(caught.value)


def test_no_credentials_at_all_is_one_line_naming_the_variables(s3_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask for on this machine
    with pytest.raises(DashboardError, match=r"found no credentials for s3://.*: set AWS_ACCESS_KEY_ID and "):
        data.discover_runs()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_endpoint_is_one_line(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(DashboardError, match=r"cannot reach AWS_ENDPOINT_URL=http://127\.0\.0\.1:\d+ for s3://"):
        data.discover_runs()


@pytest.fixture
def silent_endpoint():
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted, stop = [], threading.Event()

    def hold() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_silent_endpoint_times_out_in_bounded_time(s3_env, monkeypatch, silent_endpoint):
    monkeypatch.setattr(object_store, "READ_TIMEOUT_SECONDS", 1)  # the bound is ATTEMPTS x this; 1 s keeps it quick
    monkeypatch.setenv("AWS_ENDPOINT_URL", silent_endpoint)  # a new endpoint: a new filesystem with the new timeout
    errors: list[BaseException] = []
    worker = threading.Thread(target=lambda: _catch(data.discover_runs, errors), daemon=True)
    worker.start()
    worker.join(timeout=15)  # a hang fails the test instead of the suite
    assert not worker.is_alive(), "discovering runs on a silent endpoint hung"
    assert len(errors) == 1 and isinstance(errors[0], DashboardError)
    assert f"AWS_ENDPOINT_URL={silent_endpoint} did not answer within 1 s (2 attempts)" in str(errors[0])


def _catch(call, errors: list) -> None:
    try:
        call()
    except BaseException as error:  # noqa: BLE001 (handed to the test thread)
        errors.append(error)


def test_a_scheme_without_its_library_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if not installed
    monkeypatch.setenv("EFFATTN_DATA", "gs://bucket/runs")
    st.cache_data.clear()
    with pytest.raises(DashboardError, match=r"needs the gcsfs package, which is not installed: `pip install gcsfs=="):
        data.discover_runs()


def test_gs_urls_take_the_object_store_path():
    assert object_store.is_object_url("gs://bucket/runs") and object_store.is_object_url("s3://bucket")
    assert not object_store.is_object_url("https://host/runs") and not object_store.is_object_url("/data/s3://x")
    assert object_store.BACKENDS["gs"].module == "gcsfs"


def test_a_page_renders_from_the_bucket(s3_env, monkeypatch):
    monkeypatch.setenv("EFFATTN_DATA", f"s3://{BUCKET}/runs/minilm")
    at = open_page("overview")
    assert problems(at) == []
    assert at.metric[0].value == "fixture-minilm"
    bars = figures(at)[0]["data"]
    assert bars[0]["y"] == [0.8, 0.8]  # the fixture's RTE and SST-2 accuracy, read from the bucket
