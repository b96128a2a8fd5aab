"""Blob key validation, store selection from settings and environment, and S3 error mapping."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from minio.credentials.providers import ChainedProvider, IamAwsProvider, StaticProvider

from cairn.blobstore import (
    BlobStoreUnavailable,
    DiskBlobStore,
    InvalidBlobKey,
    S3BlobStore,
    blob_store_from_env,
    blob_store_from_settings,
    iter_bytes,
    validate_key,
)
from cairn.blobstore.factory import make_minio_client, parse_flag


@pytest.mark.parametrize(
    ("key", "segments"),
    [
        ("a", ("a",)),
        ("components/0b7c/0.wasm", ("components", "0b7c", "0.wasm")),
        ("files/" + "f" * 64, ("files", "f" * 64)),
        ("dars/pkg-1.0.0+build@x,y~z:w=v", ("dars", "pkg-1.0.0+build@x,y~z:w=v")),
    ],
)
def test_valid_keys(key: str, segments: tuple[str, ...]) -> None:
    assert validate_key(key) == segments


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "must not be empty"),
        ("/abs", "relative"),
        ("\\abs", "relative"),
        ("a\\b", "'/'"),
        ("a/../b", "'..'"),
        ("..", "'..'"),
        ("a/./b", "'.'"),
        ("a//b", "empty"),
        ("a/", "empty"),
        (".env", "start with '.'"),
        ("a/.staging/x", "start with '.'"),
        ("nul\x00", "NUL"),
        ("tab\there", "letters, digits"),
        ("ünïcode", "letters, digits"),
        ("a/" + "s" * 201, "at most 200"),
        ("k" * 1025, "at most 1024 bytes"),
    ],
)
def test_invalid_keys(key: str, reason: str) -> None:
    with pytest.raises(InvalidBlobKey) as raised:
        validate_key(key)
    assert reason in raised.value.reason
    assert raised.value.key == key
    assert str(raised.value).startswith("Invalid blob key")


def test_settings_without_endpoint_choose_disk(tmp_path: Path) -> None:
    store = blob_store_from_settings(disk_root=tmp_path / "blobs")
    assert isinstance(store, DiskBlobStore)
    assert store.root == tmp_path / "blobs"


def test_settings_with_endpoint_choose_s3() -> None:
    store = blob_store_from_settings(
        endpoint="minio.internal:9000", access_key="ak", secret_key="sk", bucket="components"
    )
    assert isinstance(store, S3BlobStore)
    assert store.bucket == "components"
    assert store.client._base_url.host == "minio.internal:9000"
    assert not store.client._base_url.is_https


def test_endpoint_url_scheme_decides_tls() -> None:
    store = blob_store_from_settings(endpoint="https://s3.example.com", bucket="cairn-prod")
    assert isinstance(store, S3BlobStore)
    assert store.client._base_url.is_https
    assert store.client._base_url.host == "s3.example.com"


def test_settings_need_somewhere_to_store() -> None:
    with pytest.raises(ValueError, match=r"CAIRN_S3_ENDPOINT.*CAIRN_BLOB_DIR"):
        blob_store_from_settings()


@pytest.mark.parametrize("endpoint", ["ftp://host", "http://host/path", "host/path", " "])
def test_bad_endpoints(endpoint: str) -> None:
    with pytest.raises(ValueError, match="S3 endpoint"):
        make_minio_client(endpoint, None, None)


def test_half_a_credential_is_rejected() -> None:
    with pytest.raises(ValueError, match="both the S3 access key and secret key"):
        make_minio_client("localhost:9000", "ak", None)


def test_bad_bucket_name_is_rejected_up_front() -> None:
    with pytest.raises(ValueError, match="Invalid S3 bucket name 'ab'"):
        blob_store_from_settings(endpoint="localhost:9000", bucket="ab")


def test_env_selects_s3_with_its_settings() -> None:
    store = blob_store_from_env(
        {
            "CAIRN_S3_ENDPOINT": "127.0.0.1:9000",
            "CAIRN_S3_ACCESS_KEY": "minio",
            "CAIRN_S3_SECRET_KEY": "minio123",
            "CAIRN_S3_BUCKET": "cairn-blobs",
            "CAIRN_S3_SECURE": "true",
            "CAIRN_BLOB_DIR": "/ignored/when/s3/is/set",
        }
    )
    assert isinstance(store, S3BlobStore)
    assert store.bucket == "cairn-blobs"
    assert store.client._base_url.is_https


def test_env_without_endpoint_uses_the_blob_dir(tmp_path: Path) -> None:
    store = blob_store_from_env({"CAIRN_S3_ENDPOINT": "", "CAIRN_BLOB_DIR": str(tmp_path)})
    assert isinstance(store, DiskBlobStore)
    assert store.root == tmp_path


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("TRUE", True), ("off", False)])
def test_flags(value: str, expected: bool) -> None:
    assert parse_flag("CAIRN_S3_SECURE", value, default=not expected) is expected


def test_flag_typo_is_an_error() -> None:
    with pytest.raises(ValueError, match="CAIRN_S3_SECURE must be true or false, not 'ture'"):
        parse_flag("CAIRN_S3_SECURE", "ture", default=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_s3_is_reported_as_unavailable() -> None:
    client = make_minio_client(f"127.0.0.1:{_closed_port()}", "ak", "sk", retries=0)
    store = S3BlobStore(client, "cairn-test")
    with pytest.raises(BlobStoreUnavailable, match="S3 bucket creation of 'cairn-test' failed"):
        await store.put("k", iter_bytes(b"x"))
    with pytest.raises(BlobStoreUnavailable):
        await store.stat("k")


def test_region_and_credential_providers_reach_the_client() -> None:
    env = {"CAIRN_S3_ENDPOINT": "https://s3.eu-central-1.amazonaws.com",
           "CAIRN_S3_BUCKET": "cairn-blobs", "CAIRN_S3_REGION": "eu-central-1"}
    iam = blob_store_from_env({**env, "CAIRN_S3_CREDENTIALS": "iam"})
    assert isinstance(iam, S3BlobStore)
    assert iam.client._base_url.region == "eu-central-1"
    assert isinstance(iam.client._provider, IamAwsProvider)
    from_env = blob_store_from_env({**env, "CAIRN_S3_CREDENTIALS": "env"})
    assert isinstance(from_env, S3BlobStore)
    assert isinstance(from_env.client._provider, ChainedProvider)
    static = blob_store_from_env({**env, "CAIRN_S3_ACCESS_KEY": "a", "CAIRN_S3_SECRET_KEY": "s"})
    assert isinstance(static, S3BlobStore)
    assert isinstance(static.client._provider, StaticProvider)
    with pytest.raises(ValueError, match="CAIRN_S3_CREDENTIALS must be one of"):
        blob_store_from_env({**env, "CAIRN_S3_CREDENTIALS": "vault"})
    with pytest.raises(ValueError, match="choose one"):
        blob_store_from_env({**env, "CAIRN_S3_CREDENTIALS": "iam", "CAIRN_S3_ACCESS_KEY": "a",
                             "CAIRN_S3_SECRET_KEY": "s"})
