"""One contract for every BlobStore adapter: the disk store on tmp_path and the S3 store against a
real S3-speaking server (moto's standalone server, started here on a free loopback port).

"Nothing left behind" is checked from outside the adapter: by walking the directory for the disk
store, and with boto3 (objects, staging objects, unfinished multipart uploads) for S3.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest

from cairn.blobstore import (
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    BlobTooLarge,
    DiskBlobStore,
    InvalidBlobKey,
    S3BlobStore,
    iter_bytes,
    read_bytes,
)
from cairn.blobstore.factory import blob_store_from_env, make_minio_client
from cairn.blobstore.s3 import MIN_PART_SIZE

MiB = 1024 * 1024
# The S3 store under test uses S3's minimum part size, so a few MiB already exercise the
# multipart-and-publish path; BIG is larger than one part, SMALL fits in one.
PART_SIZE = MIN_PART_SIZE
BIG = 2 * PART_SIZE + 12345
SMALL = 100_000
ACCESS_KEY = "cairn-test"
SECRET_KEY = "cairn-test-secret"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, stopped by PID when the session ends."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{endpoint}/", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto server did not start: {log_path.read_text(errors='replace')}"
                    ) from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Backend:
    """A store under test plus an outside view of everything it has stored."""

    store: BlobStore
    stored_names: Callable[[], set[str]]  # every object or file, hidden ones included
    pending_uploads: Callable[[], int]


def _disk_backend(root: Path) -> Backend:
    def stored_names() -> set[str]:
        if not root.exists():
            return set()
        # Sidecars are per-blob metadata, not content, so they are not listed as blobs.
        return {
            str(path.relative_to(root))
            for path in root.rglob("*")
            if path.is_file() and not path.name.endswith(".sha256.json")
        }

    return Backend(DiskBlobStore(root), stored_names, lambda: 0)


def _s3_backend(endpoint: str) -> Backend:
    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    client = make_minio_client(endpoint, ACCESS_KEY, SECRET_KEY, retries=0)
    store = S3BlobStore(client, bucket, part_size=PART_SIZE)
    boto = boto3.client(
        "s3",
        endpoint_url=f"http://{endpoint}",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )

    def bucket_exists() -> bool:
        return any(b["Name"] == bucket for b in boto.list_buckets().get("Buckets", []))

    def stored_names() -> set[str]:
        if not bucket_exists():
            return set()
        listing = boto.list_objects_v2(Bucket=bucket)
        return {item["Key"] for item in listing.get("Contents", [])}

    def pending_uploads() -> int:
        if not bucket_exists():
            return 0
        return len(boto.list_multipart_uploads(Bucket=bucket).get("Uploads", []))

    return Backend(store, stored_names, pending_uploads)


@pytest.fixture(params=["disk", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "disk":
        return _disk_backend(tmp_path / "blobs")
    endpoint: str = request.getfixturevalue("s3_endpoint")
    return _s3_backend(endpoint)


def _payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def _uneven_chunks(data: bytes, seed: int = 1) -> AsyncIterator[bytes]:
    """Chunks from empty to ~300 KiB, in no pattern, as a network peer would send them."""
    rng = random.Random(seed)
    position = 0
    while position < len(data):
        size = rng.choice([0, 1, 7, 4096, 65_537, 300_001, rng.randint(1, 200_000)])
        yield data[position : position + size]
        position += size


async def _read_all(store: BlobStore, key: str, chunk_size: int = MiB) -> bytes:
    parts = []
    async with await store.open(key, chunk_size=chunk_size) as reader:
        async for chunk in reader:
            assert 0 < len(chunk) <= chunk_size
            parts.append(chunk)
    return b"".join(parts)


def _expected_info(key: str, data: bytes) -> BlobInfo:
    return BlobInfo(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("size", [0, 1, SMALL, PART_SIZE, PART_SIZE + 1, BIG])
async def test_round_trip_keeps_content_size_and_sha256(backend: Backend, size: int) -> None:
    data = _payload(size, seed=size)
    key = f"components/{uuid.uuid4()}/0.wasm"
    info = await backend.store.put(key, iter_bytes(data, MiB), content_type="application/wasm")
    assert info == _expected_info(key, data)
    assert await backend.store.stat(key) == info
    assert await backend.store.exists(key)
    async with await backend.store.open(key) as reader:
        assert reader.size == size
    assert await _read_all(backend.store, key) == data
    assert backend.stored_names() == {key}
    assert backend.pending_uploads() == 0


@pytest.mark.parametrize("size", [SMALL, BIG])
async def test_uneven_chunks_are_stored_in_order(backend: Backend, size: int) -> None:
    data = _payload(size, seed=42)
    info = await backend.store.put("files/uneven", _uneven_chunks(data))
    assert info == _expected_info("files/uneven", data)
    assert await _read_all(backend.store, "files/uneven", chunk_size=12_345) == data


async def test_put_accepts_a_blob_of_exactly_max_size(backend: Backend) -> None:
    data = _payload(SMALL)
    info = await backend.store.put("exact", iter_bytes(data), max_size=SMALL)
    assert info.size == SMALL


class _CountingProducer:
    """Yields `total` bytes in `chunk`-sized pieces and records how far it was consumed."""

    def __init__(self, total: int, chunk: int) -> None:
        self.total = total
        self.chunk = chunk
        self.produced = 0

    async def __call__(self) -> AsyncIterator[bytes]:
        while self.produced < self.total:
            size = min(self.chunk, self.total - self.produced)
            self.produced += size
            yield b"x" * size


@pytest.mark.parametrize("limit", [SMALL, PART_SIZE + MiB])
async def test_max_size_exceeded_stops_reading_and_stores_nothing(
    backend: Backend, limit: int
) -> None:
    producer = _CountingProducer(total=limit * 4, chunk=64 * 1024)
    with pytest.raises(BlobTooLarge) as raised:
        await backend.store.put("too/big", producer(), max_size=limit)
    assert raised.value.limit == limit
    # Raised at the first chunk past the limit, not after reading the whole stream.
    assert producer.produced <= limit + producer.chunk
    assert not await backend.store.exists("too/big")
    assert await backend.store.stat("too/big") is None
    assert backend.stored_names() == set()
    assert backend.pending_uploads() == 0


class ProducerFailed(Exception):
    pass


async def _failing_after(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), MiB):
        yield data[start : start + MiB]
    raise ProducerFailed("client disconnected")


@pytest.mark.parametrize("sent_before_failure", [SMALL, BIG])
async def test_producer_error_propagates_and_stores_nothing(
    backend: Backend, sent_before_failure: int
) -> None:
    with pytest.raises(ProducerFailed, match="client disconnected"):
        await backend.store.put("broken", _failing_after(_payload(sent_before_failure)))
    assert not await backend.store.exists("broken")
    assert backend.stored_names() == set()
    assert backend.pending_uploads() == 0


@pytest.mark.parametrize("sent_before_cancel", [SMALL, BIG])
async def test_cancelled_put_stores_nothing(backend: Backend, sent_before_cancel: int) -> None:
    all_sent = asyncio.Event()
    never = asyncio.Event()

    async def stalls_after_sending() -> AsyncIterator[bytes]:
        data = _payload(sent_before_cancel)
        for start in range(0, len(data), MiB):
            yield data[start : start + MiB]
        all_sent.set()
        await never.wait()
        yield b"never sent"

    task = asyncio.create_task(backend.store.put("cancelled", stalls_after_sending()))
    await asyncio.wait_for(all_sent.wait(), timeout=30)
    await asyncio.sleep(0.2)  # let the upload take in what was sent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not await backend.store.exists("cancelled")
    assert backend.stored_names() == set()
    assert backend.pending_uploads() == 0


@pytest.mark.parametrize("size", [1, SMALL, BIG])
async def test_put_file_stores_a_spooled_file_which_stays_the_callers(
    backend: Backend, tmp_path: Path, size: int
) -> None:
    data = _payload(size, seed=size + 3)
    spooled = tmp_path / "spool" / "upload.part"
    spooled.parent.mkdir()
    spooled.write_bytes(data)
    key = f"components/{uuid.uuid4()}/1.wasm"
    expected = _expected_info(key, data)
    backend.store.prepare_file(spooled)  # a head start, however far it gets before the put
    info = await backend.store.put_file(
        key, spooled, size=size, sha256=expected.sha256, content_type="application/wasm"
    )
    assert info == expected
    assert spooled.read_bytes() == data
    # The caller deletes its file; the blob stays whole.
    spooled.unlink()
    assert await backend.store.stat(key) == info
    assert await _read_all(backend.store, key) == data
    assert backend.stored_names() == {key}
    assert backend.pending_uploads() == 0


async def test_put_file_of_a_file_that_grew_is_seen_by_its_caller(
    backend: Backend, tmp_path: Path
) -> None:
    recorded = _payload(SMALL, seed=5)
    spooled = tmp_path / "grown.part"
    spooled.write_bytes(recorded + b"more")
    try:
        info = await backend.store.put_file(
            "grown", spooled, size=len(recorded), sha256=hashlib.sha256(recorded).hexdigest()
        )
    except BlobTooLarge:
        assert backend.stored_names() == set()
    else:
        assert info.size != len(recorded)


async def test_overwrite_replaces_content(backend: Backend) -> None:
    first, second = _payload(SMALL, 1), _payload(BIG, 2)
    await backend.store.put("versions/latest", iter_bytes(first))
    info = await backend.store.put("versions/latest", iter_bytes(second))
    assert info == _expected_info("versions/latest", second)
    assert await backend.store.stat("versions/latest") == info
    assert await _read_all(backend.store, "versions/latest") == second
    # Back to a small blob: no trace of the larger one may remain.
    await backend.store.put("versions/latest", iter_bytes(first))
    assert await backend.store.stat("versions/latest") == _expected_info("versions/latest", first)
    assert await _read_all(backend.store, "versions/latest") == first
    assert backend.stored_names() == {"versions/latest"}


@pytest.mark.parametrize("size", [SMALL, BIG])
async def test_failed_overwrite_keeps_the_previous_blob(backend: Backend, size: int) -> None:
    original = _payload(SMALL, 7)
    await backend.store.put("keep", iter_bytes(original))
    with pytest.raises(ProducerFailed):
        await backend.store.put("keep", _failing_after(_payload(size, 8)))
    with pytest.raises(BlobTooLarge):
        await backend.store.put("keep", iter_bytes(_payload(size, 9)), max_size=size - 1)
    assert await backend.store.stat("keep") == _expected_info("keep", original)
    assert await _read_all(backend.store, "keep") == original
    assert backend.stored_names() == {"keep"}
    assert backend.pending_uploads() == 0


async def test_delete_is_idempotent(backend: Backend) -> None:
    await backend.store.put("a/b/c.bin", iter_bytes(b"content"))
    await backend.store.delete("a/b/c.bin")
    await backend.store.delete("a/b/c.bin")
    await backend.store.delete("never/stored")
    assert not await backend.store.exists("a/b/c.bin")
    assert await backend.store.stat("a/b/c.bin") is None
    with pytest.raises(BlobNotFound):
        await backend.store.open("a/b/c.bin")
    assert backend.stored_names() == set()


async def test_unknown_key(backend: Backend) -> None:
    with pytest.raises(BlobNotFound) as raised:
        await backend.store.open("no/such/blob")
    assert raised.value.key == "no/such/blob"
    assert await backend.store.stat("no/such/blob") is None
    assert not await backend.store.exists("no/such/blob")


async def test_a_key_prefix_is_not_a_blob(backend: Backend) -> None:
    await backend.store.put("dir/leaf", iter_bytes(b"x"))
    assert not await backend.store.exists("dir")
    assert await backend.store.stat("dir") is None
    with pytest.raises(BlobNotFound):
        await backend.store.open("dir")
    await backend.store.delete("dir")
    assert await backend.store.exists("dir/leaf")


UNSAFE_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "a/../../outside",
    "a/./b",
    "a//b",
    "trailing/",
    ".hidden",
    "a/.staging",
    "nul\x00byte",
    "back\\slash",
    "spaces are odd",
    "x" * 2000,
]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
async def test_unsafe_keys_are_rejected_by_every_operation(backend: Backend, key: str) -> None:
    operations: list[Callable[[], Any]] = [
        lambda: backend.store.put(key, iter_bytes(b"x")),
        lambda: backend.store.open(key),
        lambda: backend.store.stat(key),
        lambda: backend.store.delete(key),
        lambda: backend.store.exists(key),
    ]
    for operation in operations:
        with pytest.raises(InvalidBlobKey):
            await operation()
    assert backend.stored_names() == set()


def _files_under(directory: Path) -> set[Path]:
    return {p.relative_to(directory) for p in directory.rglob("*") if p.is_file()}


async def test_disk_store_writes_nothing_outside_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root" / "blobs"
    store = DiskBlobStore(root)
    for key in UNSAFE_KEYS:
        with pytest.raises(InvalidBlobKey):
            await store.put(key, iter_bytes(b"escape"))
    await store.put("components/1234/0.wasm", iter_bytes(b"\0asm"))
    written = _files_under(tmp_path)
    assert written
    assert all(path.parts[:2] == ("root", "blobs") for path in written)
    assert Path("root/blobs/components/1234/0.wasm") in written


async def test_many_concurrent_puts(backend: Backend) -> None:
    blobs = {f"concurrent/{n:03d}": _payload(1000 + n * 997, seed=n) for n in range(60)}
    infos = await asyncio.gather(
        *(
            backend.store.put(key, _uneven_chunks(data, seed=n))
            for n, (key, data) in enumerate(blobs.items())
        )
    )
    assert infos == [_expected_info(key, data) for key, data in blobs.items()]
    contents = await asyncio.gather(*(_read_all(backend.store, key) for key in blobs))
    assert contents == list(blobs.values())
    assert backend.stored_names() == set(blobs)


async def test_concurrent_puts_to_one_key_leave_one_whole_blob(backend: Backend) -> None:
    candidates = [_payload(SMALL + n * 1000, seed=100 + n) for n in range(8)]
    outcomes = await asyncio.gather(
        *(backend.store.put("contended", iter_bytes(c, 4096)) for c in candidates),
        return_exceptions=True,
    )
    # moto's server sometimes answers racing PUTs of one key with a 500 (it closes the replaced
    # object's buffer under a concurrent request); the store must surface that as unavailability.
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(f, BlobStoreUnavailable) for f in failures), failures
    assert len(failures) < len(candidates)
    stored = await _read_all(backend.store, "contended")
    assert stored in candidates
    assert await backend.store.stat("contended") == _expected_info("contended", stored)
    assert backend.stored_names() == {"contended"}


async def test_reader_closed_early_releases_and_blob_stays_readable(backend: Backend) -> None:
    data = _payload(3 * MiB)
    await backend.store.put("partial-read", iter_bytes(data))
    reader = await backend.store.open("partial-read", chunk_size=MiB)
    first = await reader.__anext__()
    assert first == data[:MiB]
    await reader.aclose()
    await reader.aclose()
    assert [chunk async for chunk in reader] == []
    assert await _read_all(backend.store, "partial-read") == data


async def test_put_rejects_chunks_that_are_not_bytes(backend: Backend) -> None:
    async def text_chunks() -> AsyncIterator[Any]:
        yield "not bytes"

    with pytest.raises(TypeError, match="bytes"):
        await backend.store.put("typed", text_chunks())
    assert backend.stored_names() == set()


class InjectedFailure(Exception):
    pass


@pytest.mark.parametrize("failing_step", ["second part", "compose"])
async def test_s3_failure_after_parts_were_staged_leaves_nothing(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, failing_step: str
) -> None:
    backend = _s3_backend(s3_endpoint)
    store = backend.store
    assert isinstance(store, S3BlobStore)
    original = "previous content"
    await store.put("staged", iter_bytes(original.encode()))
    parts_sent = 0
    put_bytes = store._put_bytes

    def flaky_put_bytes(name: str, data: bytes, content_type: str, metadata: Any) -> None:
        nonlocal parts_sent
        if name.startswith(".staging/"):
            parts_sent += 1
            if failing_step == "second part" and parts_sent == 2:
                raise InjectedFailure("connection reset while sending part 2")
        put_bytes(name, data, content_type, metadata)

    def failing_compose(*args: Any) -> None:
        raise InjectedFailure("compose refused")

    monkeypatch.setattr(store, "_put_bytes", flaky_put_bytes)
    if failing_step == "compose":
        monkeypatch.setattr(store, "_compose", failing_compose)
    with pytest.raises(InjectedFailure):
        await store.put("staged", iter_bytes(_payload(BIG)))
    assert parts_sent >= 2
    assert await _read_all(store, "staged") == original.encode()
    assert backend.stored_names() == {"staged"}
    assert backend.pending_uploads() == 0


async def test_s3_keys_from_the_environment_provider_and_a_region(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CAIRN_S3_CREDENTIALS=env: the minio SDK's provider reads AWS_* (no keys in CAIRN_S3_*)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-environment")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-the-environment")
    store = blob_store_from_env({
        "CAIRN_S3_ENDPOINT": f"http://{s3_endpoint}", "CAIRN_S3_BUCKET": f"env-{uuid.uuid4()}",
        "CAIRN_S3_CREDENTIALS": "env", "CAIRN_S3_REGION": "eu-central-1",
    })
    info = await store.put("components/env/0.wasm", iter_bytes(b"\0asm" * 10))
    assert (await store.stat("components/env/0.wasm")) == info
    assert await read_bytes(store, "components/env/0.wasm", max_size=1000) == b"\0asm" * 10


async def test_a_bucket_the_store_creates_cleans_up_after_crashed_puts(s3_endpoint: str) -> None:
    """Unfinished multipart uploads are aborted and staged parts expire after a day."""
    bucket = f"lifecycle-{uuid.uuid4()}"
    store = blob_store_from_env({"CAIRN_S3_ENDPOINT": f"http://{s3_endpoint}",
                                 "CAIRN_S3_BUCKET": bucket, "CAIRN_S3_ACCESS_KEY": "testing",
                                 "CAIRN_S3_SECRET_KEY": "testing"})
    await store.put("dars/x", iter_bytes(b"dar"))
    s3 = boto3.client("s3", endpoint_url=f"http://{s3_endpoint}", region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["cairn-abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1}
    assert rules["cairn-expire-staging"]["Expiration"] == {"Days": 1}
    assert rules["cairn-expire-staging"]["Filter"] == {"Prefix": ".staging/"}
