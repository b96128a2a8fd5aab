"""The blob store port: what the component and ledger services need from blob storage.

Blobs (WASM components, initial component files, DARs) are written and read as streams of byte
chunks, so no operation ever holds a whole blob in memory. Adapters (`DiskBlobStore`,
`S3BlobStore`) guarantee that a `put` is all-or-nothing: until it returns, readers see the previous
blob under the key or none, and a failed, cancelled or oversized put leaves nothing behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, runtime_checkable

from cairn.blobstore.blocking import BlockingCalls
from cairn.blobstore.errors import BlobTooLarge

DEFAULT_CHUNK_SIZE = 1 << 20
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What a blob store knows about a stored blob."""

    key: str
    size: int
    sha256: str  # lowercase hex digest of the content


class BlobReader:
    """An open blob: iterate it for its chunks, then close it (or use `async with`).

    Adapters build one from a blocking `read(n)` and `close()`; each read runs in a worker thread.
    """

    def __init__(
        self,
        key: str,
        size: int,
        read: Callable[[int], bytes],
        close: Callable[[], None],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        calls: BlockingCalls | None = None,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        self.key = key
        self.size = size
        self._read = read
        self._close = close
        self._chunk_size = chunk_size
        self._calls = calls if calls is not None else BlockingCalls()
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        try:
            chunk = await self._calls.run(self._read, self._chunk_size)
        except BaseException:
            await self.aclose()
            raise
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Release the file handle or HTTP connection; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        await self._calls.settle()
        await self._calls.run(self._close)

    async def __aenter__(self) -> BlobReader:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@runtime_checkable
class BlobStore(Protocol):
    """Streaming, all-or-nothing blob storage addressed by `/`-separated keys (see keys.py)."""

    async def put(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        max_size: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> BlobInfo:
        """Store the stream under `key`, replacing any blob there, once the stream has ended.

        Raises BlobTooLarge as soon as the stream passes `max_size` bytes, InvalidBlobKey for a bad
        key, and whatever the producer raises; in every failure case nothing is stored.
        """
        ...

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        size: int,
        sha256: str,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> BlobInfo:
        """Store a local file the caller wrote and hashed (a spooled upload) under `key`.

        `size` and `sha256` are what the caller recorded while writing it; the file must not
        change until this returns, and stays the caller's to delete. The disk adapter links the
        file into place (no copy, no second hash; a copy when it is on another file system) and
        returns the caller's `sha256`; S3 uploads it as `put` would, hashing it again and raising
        BlobTooLarge past `size`. Callers compare the returned size and SHA-256 with theirs.
        """
        ...

    def prepare_file(self, path: Path) -> None:
        """A head start on a `put_file` of `path` that is coming: returns at once. The disk
        adapter starts flushing the file to disk in a worker thread, so the put's own fsync finds
        little left to write; S3 does nothing. A hint only: it never fails."""
        ...

    async def open(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> BlobReader:
        """Open the blob for streaming reads; raises BlobNotFound for an unknown key."""
        ...

    async def stat(self, key: str) -> BlobInfo | None:
        """Size and SHA-256 of the blob, or None when there is none under `key`."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; deleting a missing key is not an error."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether a blob is stored under `key`."""
        ...


READINESS_PROBE_KEY = "cairn-readiness-probe"


async def probe(store: BlobStore) -> None:
    """Ask the backend about a blob nobody writes: raises `BlobStoreUnavailable` when it cannot
    answer (readiness health)."""
    await store.exists(READINESS_PROBE_KEY)


async def iter_bytes(data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
    """Feed an in-memory value to `BlobStore.put` (for small blobs such as metadata)."""
    view = memoryview(data)
    for start in range(0, len(view), chunk_size):
        yield bytes(view[start : start + chunk_size])


async def iter_file(path: Path, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
    """Feed a local file to `BlobStore.put`, read chunk by chunk in a worker thread."""
    calls = BlockingCalls()
    file = await calls.run(_open_for_reading, path)
    try:
        while chunk := await calls.run(file.read, chunk_size):
            yield chunk
    finally:
        await calls.settle()
        await calls.run(file.close)


def _open_for_reading(path: Path) -> BinaryIO:
    return path.open("rb")


async def read_bytes(store: BlobStore, key: str, *, max_size: int) -> bytes:
    """Read a whole blob known to be small; raises BlobTooLarge past `max_size` bytes."""
    parts: list[bytes] = []
    total = 0
    async with await store.open(key) as reader:
        if reader.size > max_size:
            raise BlobTooLarge(max_size, key)
        async for chunk in reader:
            total += len(chunk)
            if total > max_size:
                raise BlobTooLarge(max_size, key)
            parts.append(chunk)
    return b"".join(parts)


async def sha256_of(chunks: AsyncIterable[bytes]) -> tuple[str, int]:
    """SHA-256 hex digest and length of a stream, consumed chunk by chunk."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size
