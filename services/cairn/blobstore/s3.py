"""Blob store on an S3 bucket (MinIO in deployments, moto in tests), through the sync `minio` SDK.

The SDK blocks, so every call runs in a worker thread. A put gathers the stream into parts:
- a blob that fits in one part is written with a single PutObject carrying its SHA-256 as user
  metadata;
- a longer one is uploaded part by part as hidden staging objects (`.staging/<uuid>/<n>`), each
  uploading while the next is gathered; a server-side compose (a multipart upload of part copies)
  then creates the object under the key, with its SHA-256, and the staging parts are deleted.
Either way the object appears under the key only complete: S3 exposes neither a single PUT nor a
multipart upload before it finishes, and the SDK aborts a compose that fails. Memory per put is
about two parts (one uploading, the next being gathered) whatever the blob size, and only the
SDK's public API is used.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, ComposeSource, Filter
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import DictType, check_bucket_name
from minio.lifecycleconfig import AbortIncompleteMultipartUpload, Expiration, LifecycleConfig, Rule

from cairn.blobstore.blocking import BlockingCalls, blob_executor
from cairn.blobstore.errors import (
    BlobNotFound,
    BlobStoreError,
    BlobStoreUnavailable,
    BlobTooLarge,
)
from cairn.blobstore.keys import validate_key
from cairn.blobstore.port import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    BlobInfo,
    BlobReader,
    iter_file,
)

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's lower bound for every multipart part but the last
DEFAULT_PART_SIZE = 8 * 1024 * 1024
SHA256_METADATA = "sha256"  # stored as the x-amz-meta-sha256 header
STAGING_PREFIX = ".staging/"  # no valid key starts with '.', so no caller can reach these
# What a crashed put can leave behind, removed after a day: unfinished multipart uploads (a
# compose in progress) and staged parts.
CLEANUP_LIFECYCLE = LifecycleConfig([
    Rule(ENABLED, rule_filter=Filter(prefix=""), rule_id="cairn-abort-incomplete-uploads",
         abort_incomplete_multipart_upload=AbortIncompleteMultipartUpload(
             days_after_initiation=1)),
    Rule(ENABLED, rule_filter=Filter(prefix=STAGING_PREFIX), rule_id="cairn-expire-staging",
         expiration=Expiration(days=1)),
])
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


def _translate(exc: Exception, key: str, action: str) -> BlobStoreError:
    """Turn an SDK or transport error into the port's exceptions."""
    if isinstance(exc, BlobStoreError):
        return exc
    if isinstance(exc, S3Error):
        if exc.code in _NOT_FOUND_CODES:
            return BlobNotFound(key)
        status = getattr(exc.response, "status", 0) or 0
        message = f"S3 {action} of {key!r} failed: {exc.code}: {exc.message}"
        return BlobStoreUnavailable(message) if status >= 500 else BlobStoreError(message)
    if isinstance(exc, ServerError | InvalidResponseError | urllib3.exceptions.HTTPError | OSError):
        return BlobStoreUnavailable(f"S3 {action} of {key!r} failed: {exc}")
    if isinstance(exc, MinioException):
        return BlobStoreError(f"S3 {action} of {key!r} failed: {exc}")
    raise exc


class S3BlobStore:
    """A `BlobStore` keeping each blob as an object in `bucket`, created if missing."""

    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        try:
            check_bucket_name(bucket)
        except ValueError as exc:
            raise ValueError(f"Invalid S3 bucket name {bucket!r}: {exc}") from exc
        self.client = client
        self.bucket = bucket
        self.part_size = part_size
        self._executor = executor if executor is not None else blob_executor()
        self._bucket_ready = False
        self._bucket_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r})"

    async def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        async with self._bucket_lock:
            if not self._bucket_ready:
                await BlockingCalls(self._executor).run(self._ensure_bucket_sync)
                self._bucket_ready = True

    def _ensure_bucket_sync(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
                # A bucket Cairn creates (the bundled MinIO's) cleans up after crashed puts
                # itself; a bucket you provide needs the same rule (docs/blobstore.md).
                self.client.set_bucket_lifecycle(self.bucket, CLEANUP_LIFECYCLE)
        except S3Error as exc:
            if exc.code not in _BUCKET_EXISTS_CODES:  # another process created it just now
                raise _translate(exc, self.bucket, "bucket creation") from exc
        except Exception as exc:
            raise _translate(exc, self.bucket, "bucket creation") from exc

    async def put(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        max_size: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> BlobInfo:
        validate_key(key)
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must not be negative, not {max_size}")
        await self._ensure_bucket()
        meter = _StreamMeter(key, max_size)
        buffer = bytearray()
        stream = aiter(chunks)
        async for chunk in stream:
            buffer += meter.take(chunk)
            if len(buffer) > self.part_size:
                return await self._put_in_parts(key, buffer, stream, meter, content_type)
        sha256 = meter.digest.hexdigest()
        data = bytes(buffer)
        del buffer
        await self._put_single(key, data, sha256, content_type)
        return BlobInfo(key=key, size=meter.size, sha256=sha256)

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        size: int,
        sha256: str,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> BlobInfo:
        # The bytes must cross the network anyway; hashing them again on the way is what lets the
        # caller see a file that changed under it.
        del sha256
        return await self.put(key, iter_file(path), max_size=size, content_type=content_type)

    def prepare_file(self, path: Path) -> None:
        """Nothing to start: the file is read when it is uploaded."""

    async def _put_single(self, key: str, data: bytes, sha256: str, content_type: str) -> None:
        def upload() -> None:
            try:
                self._put_bytes(key, data, content_type, {SHA256_METADATA: sha256})
            except Exception as exc:
                raise _translate(exc, key, "upload") from exc

        # A cancelled single PUT may still complete in its thread; it then stores the whole blob,
        # which is what a put that had already read its stream to the end was going to do anyway.
        await BlockingCalls(self._executor).run(upload)

    def _put_bytes(
        self, name: str, data: bytes, content_type: str, metadata: DictType | None
    ) -> None:
        # A length within part_size makes the SDK send one PutObject of `data` itself, uncopied.
        self.client.put_object(
            self.bucket,
            name,
            cast(BinaryIO, _WholeBytesReader(data)),
            len(data),
            content_type=content_type,
            metadata=metadata,
            part_size=self.part_size,
        )

    async def _put_in_parts(
        self,
        key: str,
        buffer: bytearray,
        stream: AsyncIterator[bytes],
        meter: _StreamMeter,
        content_type: str,
    ) -> BlobInfo:
        staging_prefix = f"{STAGING_PREFIX}{uuid.uuid4().hex}/"
        staged: list[str] = []
        calls = BlockingCalls(self._executor)  # one at a time: a part uploads, the next gathers
        uploading: asyncio.Future[None] | None = None

        def upload_part(name: str, box: list[bytes]) -> None:
            # The part travels in a box emptied here, so it is freed when this call returns,
            # not whenever the pool gets round to dropping the call's arguments.
            data = box.pop()
            try:
                self._put_bytes(name, data, content_type, None)
            except Exception as exc:
                raise _translate(exc, key, "upload") from exc

        async def ship_parts(*, final: bool) -> None:
            nonlocal uploading
            while len(buffer) >= self.part_size or (final and buffer):
                if uploading is not None:
                    # Waited for before the next part is cut, so at most two parts are alive.
                    await uploading
                size = min(self.part_size, len(buffer))
                with memoryview(buffer) as view:
                    data = bytes(view[:size])
                del buffer[:size]
                name = f"{staging_prefix}{len(staged) + 1:05d}"
                staged.append(name)
                uploading = asyncio.ensure_future(calls.run(upload_part, name, [data]))
                del data

        try:
            await ship_parts(final=False)
            async for chunk in stream:
                buffer += meter.take(chunk)
                if uploading is not None and uploading.done():
                    uploading.result()  # a failed part stops the put now, not a part later
                await ship_parts(final=False)
            await ship_parts(final=True)
            if uploading is not None:
                await uploading
            sha256 = meter.digest.hexdigest()
            await calls.run(self._compose, key, staged, sha256, content_type)
            return BlobInfo(key=key, size=meter.size, sha256=sha256)
        except BaseException:
            if uploading is not None:
                if not uploading.done():
                    uploading.cancel()
                elif not uploading.cancelled():
                    uploading.exception()  # retrieved: the error being raised is the one to report
            raise
        finally:
            await asyncio.shield(self._remove_staged(calls, staged))

    def _compose(self, key: str, staged: list[str], sha256: str, content_type: str) -> None:
        try:
            self.client.compose_object(
                self.bucket,
                key,
                [ComposeSource(self.bucket, name) for name in staged],
                metadata={"Content-Type": content_type, SHA256_METADATA: sha256},
            )
        except Exception as exc:
            raise _translate(exc, key, "upload") from exc

    async def _remove_staged(self, calls: BlockingCalls, staged: list[str]) -> None:
        """Delete the staging parts once no call of this put still uses them (best effort)."""
        if not staged:
            return

        def remove() -> None:
            with contextlib.suppress(Exception):
                errors = self.client.remove_objects(
                    self.bucket, [DeleteObject(name) for name in staged]
                )
                # The deletion happens as the result is iterated; leftovers are unreachable
                # by any key (see docs/blobstore.md), so failures are only drained here.
                collections.deque(errors, maxlen=0)

        await calls.settle()
        await calls.run(remove)

    async def open(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> BlobReader:
        validate_key(key)
        await self._ensure_bucket()
        calls = BlockingCalls(self._executor)
        response = await calls.run(self._get_sync, key)
        size = int(response.headers.get("Content-Length", "0"))

        def read(amount: int) -> bytes:
            try:
                return bytes(response.read(amount))
            except Exception as exc:
                raise _translate(exc, key, "download") from exc

        def close() -> None:
            response.close()
            response.release_conn()

        return BlobReader(key, size, read, close, chunk_size=chunk_size, calls=calls)

    def _get_sync(self, key: str) -> Any:
        try:
            return self.client.get_object(self.bucket, key)
        except Exception as exc:
            raise _translate(exc, key, "download") from exc

    async def stat(self, key: str) -> BlobInfo | None:
        validate_key(key)
        await self._ensure_bucket()
        return await BlockingCalls(self._executor).run(self._stat_sync, key)

    def _stat_sync(self, key: str) -> BlobInfo | None:
        try:
            stat = self.client.stat_object(self.bucket, key)
        except Exception as exc:
            error = _translate(exc, key, "stat")
            if isinstance(error, BlobNotFound):
                return None
            raise error from exc
        size = stat.size or 0
        metadata = stat.metadata or {}
        sha256 = metadata.get(f"x-amz-meta-{SHA256_METADATA}")
        if not sha256:
            # Written by something else than this store: hash it once per stat, streaming.
            sha256 = self._hash_object_sync(key)
        return BlobInfo(key=key, size=size, sha256=str(sha256))

    def _hash_object_sync(self, key: str) -> str:
        digest = hashlib.sha256()
        response = self._get_sync(key)
        try:
            for chunk in response.stream(DEFAULT_CHUNK_SIZE):
                digest.update(chunk)
        except Exception as exc:
            raise _translate(exc, key, "download") from exc
        finally:
            response.close()
            response.release_conn()
        return digest.hexdigest()

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._ensure_bucket()

        def remove() -> None:
            try:
                self.client.remove_object(self.bucket, key)
            except Exception as exc:
                error = _translate(exc, key, "delete")
                if not isinstance(error, BlobNotFound):
                    raise error from exc

        await BlockingCalls(self._executor).run(remove)

    async def exists(self, key: str) -> bool:
        validate_key(key)
        await self._ensure_bucket()

        def exists_sync() -> bool:
            try:
                self.client.stat_object(self.bucket, key)
            except Exception as exc:
                error = _translate(exc, key, "stat")
                if isinstance(error, BlobNotFound):
                    return False
                raise error from exc
            return True

        return await BlockingCalls(self._executor).run(exists_sync)


class _StreamMeter:
    """Counts and hashes a put's stream, enforcing its size limit chunk by chunk."""

    def __init__(self, key: str, max_size: int | None) -> None:
        self.key = key
        self.max_size = max_size
        self.size = 0
        self.digest = hashlib.sha256()

    def take(self, chunk: bytes) -> bytes:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"blob chunks must be bytes, not {type(chunk).__name__}")
        self.size += len(chunk)
        if self.max_size is not None and self.size > self.max_size:
            raise BlobTooLarge(self.max_size, self.key)
        data = bytes(chunk)
        self.digest.update(data)
        return data


class _WholeBytesReader:
    """A file-like `read(n)` that hands over the whole value at once, without copying it."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def read(self, size: int = -1) -> bytes:
        data, self._data = self._data, None
        if data is None:
            return b""
        if 0 <= size < len(data):
            # Not what the SDK asks for (it reads the declared length), but keep read() honest.
            self._data = data[size:]
            return data[:size]
        return data
