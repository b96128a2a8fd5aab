"""Blob store and upload benchmarks: 50 MB through each adapter and through a multipart upload.

Run: `.venv/bin/pytest -m bench tests/bench/test_bench_blobstore.py -s`. Each case prints its
throughput and the peak growth of this process's RSS over the operation, sampled every 2 ms by a
background thread (the moto S3 server runs in its own process, so its memory is not counted).
The numbers and the method are recorded in docs/blobstore.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from cairn.blobstore import BlobStore, DiskBlobStore, S3BlobStore
from cairn.blobstore.factory import make_minio_client
from cairn.component.uploads import TempFileSink, read_multipart_form

pytestmark = pytest.mark.bench

T = TypeVar("T")
MiB = 1024 * 1024
# Golem's component size limit by default; CAIRN_BENCH_MB=200 shows memory does not grow with size.
SIZE = int(os.environ.get("CAIRN_BENCH_MB", "50")) * 1000 * 1000
CHUNK = MiB  # what the gRPC layer hands over per message


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _current_rss() -> int:
    """Resident set size of this process in bytes (Linux /proc; no extra dependency)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


class PeakRss:
    """Samples this process's RSS in a thread; `growth` is the peak minus the starting value."""

    def __init__(self, interval: float = 0.002) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = _current_rss()
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _current_rss())
            time.sleep(self._interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _current_rss())

    @property
    def growth_mib(self) -> float:
        return float(self.peak - self.baseline) / MiB


async def _measure(label: str, operation: Callable[[], Awaitable[T]]) -> T:
    with PeakRss() as rss:
        started = time.perf_counter()
        result = await operation()
        elapsed = time.perf_counter() - started
    print(
        f"{label:<44} {SIZE // 1_000_000} MB {SIZE / MiB / elapsed:8.1f} MiB/s  {elapsed:6.2f} s  "
        f"peak RSS growth {rss.growth_mib:6.1f} MiB"
    )
    return result


_BLOCK = os.urandom(CHUNK)


async def _generated_blob() -> AsyncIterator[bytes]:
    """SIZE bytes in 1 MiB chunks, produced on the fly so the input itself takes no memory."""
    sent = 0
    while sent < SIZE:
        # A fresh object per chunk, as received from the network, so that chunks a store keeps
        # queued count in its memory use.
        chunk = memoryview(_BLOCK)[: min(CHUNK, SIZE - sent)].tobytes()
        sent += len(chunk)
        yield chunk


def _expected_sha256() -> str:
    digest = hashlib.sha256()
    for start in range(0, SIZE, CHUNK):
        digest.update(_BLOCK[: min(CHUNK, SIZE - start)])
    return digest.hexdigest()


async def _drain(store: BlobStore, key: str) -> str:
    digest = hashlib.sha256()
    async with await store.open(key) as reader:
        async for chunk in reader:
            digest.update(chunk)
    return digest.hexdigest()


async def _bench_store(name: str, store: BlobStore) -> None:
    expected = _expected_sha256()
    key = f"bench/{uuid.uuid4().hex}"
    info = await _measure(f"{name}: put", lambda: store.put(key, _generated_blob()))
    assert (info.size, info.sha256) == (SIZE, expected)
    assert await _measure(f"{name}: get", lambda: _drain(store, key)) == expected
    await store.delete(key)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log.read_text(errors="replace")) from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_bench_disk_store(tmp_path: Path) -> None:
    await _bench_store("disk", DiskBlobStore(tmp_path / "blobs"))


async def test_bench_s3_store_on_moto(moto_endpoint: str) -> None:
    client = make_minio_client(moto_endpoint, "bench", "bench-secret")
    await _bench_store("s3 (moto, 8 MiB parts)", S3BlobStore(client, "cairn-bench"))


async def test_bench_multipart_upload_to_temp_file(tmp_path: Path) -> None:
    boundary = "cairn-bench-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="query"\r\n\r\n'
        '{"componentName": "bench"}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="component"; '
        'filename="bench.wasm"\r\nContent-Type: application/wasm\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def body() -> AsyncIterator[bytes]:
        yield head
        async for chunk in _generated_blob():
            yield chunk
        yield tail

    with TempFileSink(tmp_path) as sink:
        form = await _measure(
            "multipart form -> TempFileSink",
            lambda: read_multipart_form(
                body(), f"multipart/form-data; boundary={boundary}", binary_sink=sink
            ),
        )
        spooled = form.binaries["component"]
        assert (spooled.size, spooled.sha256) == (SIZE, _expected_sha256())


async def test_bench_multipart_upload_straight_into_s3(moto_endpoint: str) -> None:
    """The component part streamed from the request body into the blob store, no temp file."""
    store = S3BlobStore(make_minio_client(moto_endpoint, "bench", "bench-secret"), "cairn-bench")
    boundary = "b"
    head = b'--b\r\nContent-Disposition: form-data; name="component"; filename="c.wasm"\r\n\r\n'

    async def body() -> AsyncIterator[bytes]:
        yield head
        async for chunk in _generated_blob():
            yield chunk
        yield b"\r\n--b--\r\n"

    async def to_store(info: object, chunks: AsyncIterator[bytes]) -> str:
        return (await store.put(f"bench/{uuid.uuid4().hex}", chunks)).sha256

    form = await _measure(
        "multipart form -> S3BlobStore.put (moto)",
        lambda: read_multipart_form(
            body(), f"multipart/form-data; boundary={boundary}", binary_sink=to_store
        ),
    )
    assert form.binaries["component"] == _expected_sha256()


class _BlobReader:
    """The generated blob as a file-like object, for the SDK's own `put_object`."""

    def __init__(self) -> None:
        self._sent = 0
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        while len(self._pending) < size and self._sent < SIZE:
            chunk = _BLOCK[: min(CHUNK, SIZE - self._sent)]
            self._sent += len(chunk)
            self._pending += chunk
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


async def test_bench_s3_put_strategies_on_moto(moto_endpoint: str) -> None:
    """Cairn's staged parts + compose against the SDK's own multipart upload.

    The SDK's `put_object(length=-1)` fixes the object's metadata when the upload starts, before
    the SHA-256 is known; storing the hash then takes a server-side copy to the final key.
    """
    from minio.commonconfig import REPLACE, CopySource

    client = make_minio_client(moto_endpoint, "bench", "bench-secret")
    store = S3BlobStore(client, "cairn-bench")
    await _measure("s3: staged parts + compose (Cairn)",
                   lambda: store.put(f"bench/{uuid.uuid4().hex}", _generated_blob()))

    async def sdk_multipart(copy_with_hash: bool) -> None:
        key = f"bench/{uuid.uuid4().hex}"
        await asyncio.to_thread(client.put_object, "cairn-bench", key, _BlobReader(), -1,
                                part_size=8 * MiB)
        if copy_with_hash:
            await asyncio.to_thread(client.copy_object, "cairn-bench", key + ".final",
                                    CopySource("cairn-bench", key),
                                    metadata={"sha256": _expected_sha256()},
                                    metadata_directive=REPLACE)
            await asyncio.to_thread(client.remove_object, "cairn-bench", key)

    await _measure("s3: SDK multipart (no hash metadata)", lambda: sdk_multipart(False))
    await _measure("s3: SDK multipart + copy with hash", lambda: sdk_multipart(True))
