"""The S3 connector against a real S3 server (SeaweedFS): objects, prefixes, credentials, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import obstore
import pytest

from kalla.connectors import ConnectorContext, default_registry
from kalla.connectors.s3 import S3Connector, S3Settings, parse_s3_uri, upload_run
from kalla.errors import (
    ConnectionFailed,
    PermissionDenied,
    SourceNotFound,
    SourceUriInvalid,
    UnsupportedUri,
)
from kalla.job import JobSource
from tests.connectors.servers import S3_SECRET_KEY, S3Server, free_ports


def open_(uri: str, tmp_path: Path, **options: object):  # type: ignore[no-untyped-def]
    return S3Connector().open(
        JobSource(alias="src", uri=uri), ConnectorContext(staging_dir=tmp_path, options=options)
    )


def test_single_objects_and_prefixes(s3_env: S3Server, tmp_path: Path) -> None:
    s3_env.put("t1/in/a.csv", b"id,amount\n1,1.00\n")
    s3_env.put("t1/in/sub/b.csv", b"id,amount\n2,2.00\n")
    s3_env.put("t1/in/readme.txt", b"not data")
    s3_env.put("t1/p/x.parquet", b"PAR1")
    table = open_("s3://kalla-test/t1/in/a.csv", tmp_path)
    assert (table.paths, table.format, table.filters_applied) == (
        ["s3://kalla-test/t1/in/a.csv"],
        "csv",
        False,
    )
    assert table.object_store is not None and table.object_store.url == "s3://kalla-test/"
    prefix = open_("s3://kalla-test/t1/in/", tmp_path)
    assert prefix.paths == ["s3://kalla-test/t1/in/a.csv", "s3://kalla-test/t1/in/sub/b.csv"]
    assert open_("s3://kalla-test/t1/p/x.parquet", tmp_path).format == "parquet"


def test_errors_are_typed_and_scrubbed(s3_env: S3Server, tmp_path: Path) -> None:
    s3_env.put("t2/mixed/a.csv", b"id\n1\n")
    s3_env.put("t2/mixed/b.parquet", b"PAR1")
    with pytest.raises(SourceNotFound, match=r"t2/missing\.csv"):
        open_("s3://kalla-test/t2/missing.csv", tmp_path)
    with pytest.raises(SourceNotFound, match=r"no \.csv or \.parquet objects"):
        open_("s3://kalla-test/t2/empty/", tmp_path)
    with pytest.raises(UnsupportedUri, match="mixes CSV and Parquet"):
        open_("s3://kalla-test/t2/mixed/", tmp_path)
    with pytest.raises(UnsupportedUri, match=r"\.csv or \.parquet"):
        open_("s3://kalla-test/t2/data.json", tmp_path)
    with pytest.raises(SourceUriInvalid, match="no credentials"):
        open_("s3://key:secret@kalla-test/a.csv", tmp_path)
    wrong = S3Settings(access_key_id="kallatestkey", secret_access_key="wrong-" + S3_SECRET_KEY,
                       endpoint_url=s3_env.endpoint, allow_http=True)  # fmt: skip
    s3_env.put("t2/a.csv", b"id\n1\n")
    with pytest.raises(PermissionDenied) as info:
        open_("s3://kalla-test/t2/a.csv", tmp_path, s3_settings=wrong)
    assert S3_SECRET_KEY not in str(info.value)
    dead = wrong.model_copy(update={"endpoint_url": f"http://127.0.0.1:{free_ports(1)[0]}"})
    with pytest.raises(ConnectionFailed) as info:
        open_("s3://kalla-test/t2/a.csv", tmp_path, s3_settings=dead)
    assert S3_SECRET_KEY not in str(info.value)


def test_settings_from_env_are_secret(s3_env: S3Server) -> None:
    settings = S3Settings.from_env()
    assert settings.allow_http and settings.endpoint_url == s3_env.endpoint
    assert S3_SECRET_KEY not in repr(settings) and S3_SECRET_KEY not in settings.model_dump_json()
    uri = s3_env.put("t3/a.csv", b"id\n1\n")
    spec = (
        S3Connector()
        .open(JobSource(alias="a", uri=uri), ConnectorContext(staging_dir=Path(".")))
        .object_store
    )
    assert spec is not None
    assert S3_SECRET_KEY not in repr(spec)
    assert S3_SECRET_KEY.encode() not in pickle.dumps(spec)  # plans carry no secrets (seed S1)


def test_from_env_defaults() -> None:
    s = S3Settings.from_env({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    assert (s.region, s.endpoint_url, s.allow_http) == ("us-east-1", None, False)
    s = S3Settings.from_env(
        {
            "AWS_ENDPOINT_URL": "https://x",
            "AWS_ALLOW_HTTP": "true",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
    )
    assert (s.region, s.allow_http, s.access_key_id) == ("eu-west-1", True, None)


def test_upload_run_puts_metadata_last(s3_env: S3Server, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in (
        "metadata.json",
        "matched.parquet",
        "unmatched_left.parquet",
        "unmatched_right.parquet",
    ):
        (run / name).write_bytes(name.encode())
    urls = upload_run(run, "s3://kalla-test/evidence/run-1", S3Settings.from_env())
    assert urls[-1] == "s3://kalla-test/evidence/run-1/metadata.json" and len(urls) == 4
    got = obstore.get(s3_env.store(), "evidence/run-1/matched.parquet").bytes()
    assert bytes(got) == b"matched.parquet"


def test_uri_parsing_and_registry() -> None:
    assert parse_s3_uri("s3://b/a/b.csv").key == "a/b.csv"
    assert parse_s3_uri("s3://b").is_prefix and parse_s3_uri("s3://b/p/").is_prefix
    assert isinstance(default_registry().for_uri("s3://b/k.parquet"), S3Connector)
