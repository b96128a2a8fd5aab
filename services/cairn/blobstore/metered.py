"""Blob store metrics: a BlobStore that times and counts every call of the one it wraps.

`cairn_blobstore_operation_seconds{operation,backend}` (for `put`, the whole upload; for `open`,
until the blob is open) and `cairn_blobstore_errors_total{operation,backend,error}`, where a
missing blob, a blob over its size limit or a bad key is an answer, not an error.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Awaitable
from pathlib import Path
from typing import TypeVar

from prometheus_client import Counter, Histogram

from cairn.blobstore.errors import BlobNotFound, BlobTooLarge, InvalidBlobKey
from cairn.blobstore.port import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    BlobInfo,
    BlobReader,
    BlobStore,
)

SECONDS = Histogram(
    "cairn_blobstore_operation_seconds", "Time of blob store calls, by operation and backend.",
    ["operation", "backend"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
ERRORS = Counter("cairn_blobstore_errors", "Failed blob store calls, by operation and error.",
                 ["operation", "backend", "error"])
T = TypeVar("T")


class MeteredBlobStore:
    """Delegates to `inner`, recording each call's time and failure."""

    def __init__(self, inner: BlobStore, backend: str) -> None:
        self.inner = inner
        self._backend = backend

    async def _measure(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        except (BlobNotFound, BlobTooLarge, InvalidBlobKey):  # answers about the request
            raise
        except Exception as err:
            ERRORS.labels(operation, self._backend, type(err).__name__).inc()
            raise
        finally:
            SECONDS.labels(operation, self._backend).observe(time.perf_counter() - started)

    async def put(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        max_size: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> BlobInfo:
        return await self._measure("put", self.inner.put(
            key, chunks, max_size=max_size, content_type=content_type))

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        size: int,
        sha256: str,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> BlobInfo:
        # Timed as a put: it is one, from a file.
        return await self._measure("put", self.inner.put_file(
            key, path, size=size, sha256=sha256, content_type=content_type))

    def prepare_file(self, path: Path) -> None:
        self.inner.prepare_file(path)

    async def open(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> BlobReader:
        return await self._measure("open", self.inner.open(key, chunk_size=chunk_size))

    async def stat(self, key: str) -> BlobInfo | None:
        return await self._measure("stat", self.inner.stat(key))

    async def delete(self, key: str) -> None:
        await self._measure("delete", self.inner.delete(key))

    async def exists(self, key: str) -> bool:
        return await self._measure("exists", self.inner.exists(key))


def metered(store: BlobStore) -> BlobStore:
    """`store` with metrics, labelled by its backend (`s3` or `disk`); itself when metrics are
    off (CAIRN_METRICS_ENABLED=false)."""
    from cairn.blobstore.s3 import S3BlobStore
    from cairn.runtime.metrics import recording

    if not recording():
        return store

    return MeteredBlobStore(store, "s3" if isinstance(store, S3BlobStore) else "disk")
