"""Blob storage for WASM components, initial component files and DARs: one port, two adapters.

Import the port and the exceptions from here; build a store with `blob_store_from_settings`.
"""

from cairn.blobstore.disk import DiskBlobStore
from cairn.blobstore.errors import (
    BlobNotFound,
    BlobStoreError,
    BlobStoreUnavailable,
    BlobTooLarge,
    InvalidBlobKey,
)
from cairn.blobstore.factory import blob_store_from_env, blob_store_from_settings
from cairn.blobstore.keys import validate_key
from cairn.blobstore.port import (
    DEFAULT_CHUNK_SIZE,
    BlobInfo,
    BlobReader,
    BlobStore,
    iter_bytes,
    iter_file,
    probe,
    read_bytes,
    sha256_of,
)
from cairn.blobstore.s3 import S3BlobStore

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "BlobInfo",
    "BlobNotFound",
    "BlobReader",
    "BlobStore",
    "BlobStoreError",
    "BlobStoreUnavailable",
    "BlobTooLarge",
    "DiskBlobStore",
    "InvalidBlobKey",
    "S3BlobStore",
    "blob_store_from_env",
    "blob_store_from_settings",
    "iter_bytes",
    "iter_file",
    "probe",
    "read_bytes",
    "sha256_of",
    "validate_key",
]
