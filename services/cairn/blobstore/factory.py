"""Choosing and building the blob store from configuration.

S3 (MinIO) when an endpoint is configured, otherwise a directory on local disk. The settings are
plain parameters; `blob_store_from_env` reads them from the `CAIRN_S3_*` / `CAIRN_BLOB_DIR`
environment variables documented in docs/blobstore.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.credentials.providers import (
    ChainedProvider,
    EnvAWSProvider,
    EnvMinioProvider,
    IamAwsProvider,
    Provider,
)

from cairn.blobstore.disk import DiskBlobStore
from cairn.blobstore.port import BlobStore
from cairn.blobstore.s3 import DEFAULT_PART_SIZE, S3BlobStore

DEFAULT_BUCKET = "cairn"
# Sized like the blob thread pool, so concurrent transfers do not queue for a connection.
_HTTP_POOL_SIZE = 32
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
# Where the S3 keys come from (CAIRN_S3_CREDENTIALS).
CREDENTIAL_SOURCES = ("static", "env", "iam")


def credentials_provider(source: str) -> Provider | None:
    """The minio SDK's provider for `source`; None for static keys (or anonymous access).

    env: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY[/AWS_SESSION_TOKEN], else MINIO_ACCESS_KEY/
    MINIO_SECRET_KEY. iam: the SDK's IAM chain: a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE
    and AWS_ROLE_ARN, as EKS IRSA sets them), ECS task credentials, then the EC2 instance role.
    Both refresh expiring credentials themselves.
    """
    if source not in CREDENTIAL_SOURCES:
        raise ValueError(f"CAIRN_S3_CREDENTIALS must be one of {', '.join(CREDENTIAL_SOURCES)}, "
                         f"not {source!r}")
    if source == "env":
        return ChainedProvider([EnvAWSProvider(), EnvMinioProvider()])
    if source == "iam":
        return IamAwsProvider()
    return None


def _split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """Accept `host:port` or a URL; a URL's scheme decides TLS."""
    if "://" not in endpoint:
        host = endpoint.strip().rstrip("/")
        if not host or "/" in host:
            raise ValueError(f"S3 endpoint must be host[:port] or a URL, not {endpoint!r}")
        return host, secure
    url = urlsplit(endpoint.strip())
    if url.scheme not in ("http", "https") or not url.netloc or url.path not in ("", "/"):
        raise ValueError(f"S3 endpoint must be http(s)://host[:port], not {endpoint!r}")
    return url.netloc, url.scheme == "https"


def make_minio_client(
    endpoint: str,
    access_key: str | None,
    secret_key: str | None,
    *,
    secure: bool = False,
    region: str | None = None,
    credentials: Provider | None = None,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    retries: int = 3,
) -> Minio:
    """A minio client with bounded timeouts and retries (the SDK's own default waits 5 minutes)."""
    host, use_tls = _split_endpoint(endpoint, secure)
    if bool(access_key) != bool(secret_key):
        raise ValueError("Set both the S3 access key and secret key, or neither")
    if credentials is not None and access_key:
        raise ValueError("S3 keys are given, but so is a credentials provider: choose one")
    http_client = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        maxsize=_HTTP_POOL_SIZE,
        retries=urllib3.Retry(
            total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        ),
    )
    return Minio(
        host,
        access_key=access_key or None,
        secret_key=secret_key or None,
        secure=use_tls,
        region=region,
        http_client=http_client,
        credentials=credentials,
    )


def blob_store_from_settings(
    *,
    endpoint: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    bucket: str | None = None,
    secure: bool = False,
    disk_root: Path | str | None = None,
    region: str | None = None,
    credentials: str = "static",
    part_size: int = DEFAULT_PART_SIZE,
) -> BlobStore:
    """S3BlobStore when `endpoint` is set, else DiskBlobStore under `disk_root`."""
    if endpoint:
        client = make_minio_client(endpoint, access_key, secret_key, secure=secure,
                                   region=region, credentials=credentials_provider(credentials))
        return S3BlobStore(client, bucket or DEFAULT_BUCKET, part_size=part_size)
    if disk_root is None or str(disk_root) == "":
        raise ValueError(
            "No blob storage configured: set an S3 endpoint (CAIRN_S3_ENDPOINT) "
            "or a directory (CAIRN_BLOB_DIR)"
        )
    return DiskBlobStore(Path(disk_root))


def parse_flag(name: str, value: str | None, *, default: bool) -> bool:
    """Read a boolean setting such as CAIRN_S3_SECURE=true."""
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, not {value!r}")


def blob_store_from_env(environ: Mapping[str, str]) -> BlobStore:
    """Build the blob store from CAIRN_S3_ENDPOINT, _ACCESS_KEY, _SECRET_KEY, _BUCKET, _SECURE,
    _REGION, _CREDENTIALS and CAIRN_BLOB_DIR (pass `os.environ`)."""
    return blob_store_from_settings(
        endpoint=environ.get("CAIRN_S3_ENDPOINT") or None,
        access_key=environ.get("CAIRN_S3_ACCESS_KEY") or None,
        secret_key=environ.get("CAIRN_S3_SECRET_KEY") or None,
        bucket=environ.get("CAIRN_S3_BUCKET") or None,
        secure=parse_flag("CAIRN_S3_SECURE", environ.get("CAIRN_S3_SECURE"), default=False),
        disk_root=environ.get("CAIRN_BLOB_DIR") or None,
        region=environ.get("CAIRN_S3_REGION") or None,
        credentials=(environ.get("CAIRN_S3_CREDENTIALS") or "static").strip().lower(),
    )
