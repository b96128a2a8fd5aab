"""Blob store on an S3 bucket (MinIO in deployments, moto in tests), through the sync `minio` SDK.

The SDK blocks, so every call runs in a worker thread. A put reads the stream up to one part:
- a blob that fits is written with a single PutObject carrying its SHA-256 as user metadata;
- a longer one streams, part by part, into a multipart upload of a hidden staging object
  (`.staging/<uuid>`), then a server-side copy publishes it under the key with its SHA-256, and the
  staging object is deleted.
Either way the object appears under the key only complete: S3 exposes neither a single PUT nor a
multipart upload before it finishes, and a failed multipart upload is aborted by the SDK. Memory per
put is about two parts (the one being uploaded and the next being gathered), whatever the blob size.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import threading
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any, BinaryIO, TypeVar, cast

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import check_bucket_name

from cairn.blobstore.blocking import BlockingCalls, blob_executor
from cairn.blobstore.errors import (
    BlobNotFound,
    BlobStoreError,
    BlobStoreUnavailable,
    BlobTooLarge,
)
from cairn.blobstore.keys import validate_key
from cairn.blobstore.port import DEFAULT_CHUNK_SIZE, DEFAULT_CONTENT_TYPE, BlobInfo, BlobReader

T = TypeVar("T")

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's lower bound for every multipart part but the last
DEFAULT_PART_SIZE = 8 * 1024 * 1024
SHA256_METADATA = "sha256"  # stored as the x-amz-meta-sha256 header
STAGING_PREFIX = ".staging/"  # no valid key starts with '.', so no caller can reach these
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
_PIPE_DEPTH = 4
# How long the upload thread waits for the next chunk before giving up on a stalled producer.
_PRODUCER_STALL_TIMEOUT = 600.0


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


class _Abort:
    """Queued to make the upload thread's next read raise, so the SDK aborts the upload."""

    def __init__(self, reason: BaseException) -> None:
        self.reason = reason


class _ChunkPipe:
    """A file-like `read(n)` for the SDK's upload thread, fed chunk by chunk from the event loop.

    The queue is bounded, so a slow S3 applies back-pressure to the producer instead of the chunks
    piling up in memory.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | _Abort | None] = asyncio.Queue(maxsize=depth)
        self._item = b""  # the chunk being read and how far
        self._offset = 0
        self._ended = False

    # Event loop side.
    async def send(self, item: bytes | None, upload: asyncio.Future[Any]) -> None:
        """Queue a chunk (None ends the stream), unless the upload has already stopped."""
        if not self._queue.full():
            self._queue.put_nowait(item)
            return
        put = asyncio.ensure_future(self._queue.put(item))
        try:
            await asyncio.wait({put, upload}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not put.done():
                put.cancel()
        if not put.done() or put.cancelled():
            await upload  # raises the upload's error
            raise BlobStoreError("The S3 upload ended before the stream did")

    def abort(self, reason: BaseException) -> None:
        """Make the upload thread fail at its next read, dropping whatever is queued."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_Abort(reason))

    # Upload thread side.
    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes, waiting for as many as that unless the stream ends first.

        Returning whole parts matters: the SDK appends each read to the part it is building,
        and one append copies far less than dozens of small ones. A negative size returns the
        next chunk, never the rest of the stream.
        """
        if size < 0:
            return self._next_piece(-1)
        pieces: list[bytes] = []
        wanted = size
        while wanted > 0:
            piece = self._next_piece(wanted)
            if not piece:
                break
            pieces.append(piece)
            wanted -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _next_piece(self, limit: int) -> bytes:
        if self._offset >= len(self._item):
            if self._ended:
                return b""
            item = asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop).result(
                timeout=_PRODUCER_STALL_TIMEOUT
            )
            if isinstance(item, _Abort):
                raise BlobStoreError("Upload aborted") from item.reason
            if item is None:
                self._ended = True
                return b""
            self._item, self._offset = item, 0
        start = self._offset
        end = len(self._item) if limit < 0 else min(len(self._item), start + limit)
        self._offset = end
        if start == 0 and end == len(self._item):
            return self._item  # a whole chunk: handed over without a copy
        return self._item[start:end]


def _run_in_own_thread(function: Callable[[], T]) -> asyncio.Future[T]:
    """Run a long blocking call on a dedicated thread.

    A streaming upload holds its thread while it waits for the producer; on the shared pool enough
    of them could take every worker and starve the producers (e.g. a copy from a DiskBlobStore).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            result = function()
        except BaseException as exc:
            error = exc
            loop.call_soon_threadsafe(settle, lambda: future.set_exception(error))
        else:
            loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    threading.Thread(target=target, name="cairn-s3-upload", daemon=True).start()
    return future


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
        stream = aiter(chunks)
        first_part: list[bytes] = []
        first_part_size = 0
        async for chunk in stream:
            data = meter.take(chunk)
            if data:
                first_part.append(data)
                first_part_size += len(data)
            if first_part_size > self.part_size:
                return await self._put_streaming(key, first_part, stream, meter, content_type)
        sha256 = meter.digest.hexdigest()
        await self._put_single(key, first_part, meter.size, sha256, content_type)
        return BlobInfo(key=key, size=meter.size, sha256=sha256)

    async def _put_single(
        self, key: str, parts: list[bytes], size: int, sha256: str, content_type: str
    ) -> None:
        body = _BytesListReader(parts)

        def upload() -> None:
            try:
                self.client.put_object(
                    self.bucket,
                    key,
                    cast(BinaryIO, body),  # the SDK only calls read(n)
                    size,
                    content_type=content_type,
                    metadata={SHA256_METADATA: sha256},
                    part_size=self.part_size,
                )
            except Exception as exc:
                raise _translate(exc, key, "upload") from exc

        # A cancelled single PUT may still complete in its thread; it then stores the whole blob,
        # which is what a put that had already read its stream to the end was going to do anyway.
        await BlockingCalls(self._executor).run(upload)

    async def _put_streaming(
        self,
        key: str,
        first_part: list[bytes],
        stream: AsyncIterator[bytes],
        meter: _StreamMeter,
        content_type: str,
    ) -> BlobInfo:
        staging_key = f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        # A few chunks of slack keep the upload thread busy; the SDK gathers each part itself.
        pipe = _ChunkPipe(asyncio.get_running_loop(), depth=_PIPE_DEPTH)

        def upload_staging() -> None:
            try:
                self.client.put_object(
                    self.bucket,
                    staging_key,
                    cast(BinaryIO, pipe),  # the SDK only calls read(n)
                    -1,
                    content_type=content_type,
                    part_size=self.part_size,
                    num_parallel_uploads=1,
                )
            except Exception as exc:
                raise _translate(exc, key, "upload") from exc

        upload = _run_in_own_thread(upload_staging)
        calls = BlockingCalls(self._executor)
        try:
            first_part.reverse()
            while first_part:  # popped as sent, so the pipe's queue is all that holds them
                await pipe.send(first_part.pop(), upload)
            async for chunk in stream:
                data = meter.take(chunk)
                if data:
                    await pipe.send(data, upload)
            await pipe.send(None, upload)
            await upload
            sha256 = meter.digest.hexdigest()
            await calls.run(self._publish, key, staging_key, sha256, content_type)
            return BlobInfo(key=key, size=meter.size, sha256=sha256)
        except BaseException as exc:
            await asyncio.shield(self._abandon(pipe, upload, exc))
            raise
        finally:
            await asyncio.shield(self._remove_staging(calls, staging_key))

    async def _abandon(
        self, pipe: _ChunkPipe, upload: asyncio.Future[Any], reason: BaseException
    ) -> None:
        """Stop the staging upload (the SDK aborts its multipart upload) and wait for it."""
        if not upload.done():
            pipe.abort(reason)
        await asyncio.wait([upload])
        if not upload.cancelled():
            upload.exception()  # retrieved: the error that matters is the one being raised

    async def _remove_staging(self, calls: BlockingCalls, staging_key: str) -> None:
        """Delete the staging object once no call of this put still uses it (best effort)."""

        def remove() -> None:
            with contextlib.suppress(Exception):
                self.client.remove_object(self.bucket, staging_key)

        await calls.settle()
        await calls.run(remove)

    def _publish(self, key: str, staging_key: str, sha256: str, content_type: str) -> None:
        try:
            self.client.copy_object(
                self.bucket,
                key,
                CopySource(self.bucket, staging_key),
                metadata={"Content-Type": content_type, SHA256_METADATA: sha256},
                metadata_directive=REPLACE,
            )
        except Exception as exc:
            raise _translate(exc, key, "upload") from exc

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


class _BytesListReader:
    """A file-like `read(n)` over the chunks of a small blob, without joining them first."""

    def __init__(self, parts: list[bytes]) -> None:
        self._parts = parts
        self._index = 0
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        if self._index >= len(self._parts):
            return b""
        part = self._parts[self._index]
        end = len(part) if size < 0 else min(len(part), self._offset + size)
        data = part[self._offset : end]
        if end >= len(part):
            self._index += 1
            self._offset = 0
        else:
            self._offset = end
        return data
