"""Behaviour of DiskBlobStore that the shared contract does not cover: its files on disk, the
SHA-256 sidecar cache, prefix conflicts between keys, and the streaming helpers of the port."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cairn.blobstore import (
    BlobInfo,
    BlobStore,
    BlobStoreError,
    BlobTooLarge,
    DiskBlobStore,
    iter_bytes,
    read_bytes,
    sha256_of,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _names(directory: Path) -> set[str]:
    """Everything stored under `directory` but the scratch tree (.tmp/), which holds no files."""
    assert not [p for p in (directory / ".tmp").rglob("*") if p.is_file()], "temp files left"
    names = {str(p.relative_to(directory)) for p in directory.rglob("*")}
    return {n for n in names if n.split("/")[0] != ".tmp"}


def _overwrite_behind_the_stores_back(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    # A different mtime as well, as a quick editor or a restore from backup would leave.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


async def test_blob_is_a_plain_file_under_root(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    await store.put("components/c1/0.wasm", iter_bytes(b"\0asm\1\0\0\0"))
    assert (tmp_path / "components" / "c1" / "0.wasm").read_bytes() == b"\0asm\1\0\0\0"
    assert store.path_for("components/c1/0.wasm") == tmp_path / "components/c1/0.wasm"
    # Only the blob and its hidden sidecar: no temp files are left after a put (the process's
    # scratch directory under .tmp/ stays, empty, while the store lives).
    assert _names(tmp_path) == {
        "components",
        "components/c1",
        "components/c1/0.wasm",
        "components/c1/.0.wasm.sha256.json",
    }


async def test_stat_uses_the_sidecar_and_survives_it_being_stale_or_lost(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    await store.put("k", iter_bytes(b"original"))
    path = store.path_for("k")
    _overwrite_behind_the_stores_back(path, b"changed!")
    assert await store.stat("k") == BlobInfo("k", 8, _sha(b"changed!"))
    (tmp_path / ".k.sha256.json").unlink()
    assert await store.stat("k") == BlobInfo("k", 8, _sha(b"changed!"))
    (tmp_path / ".k.sha256.json").write_text("{not json")
    assert await store.stat("k") == BlobInfo("k", 8, _sha(b"changed!"))
    # Repaired: the next stat trusts the rewritten sidecar.
    assert '"sha256"' in (tmp_path / ".k.sha256.json").read_text()


async def test_a_sidecar_that_lies_about_another_file_is_ignored(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    await store.put("a", iter_bytes(b"aaaa"))
    await store.put("b", iter_bytes(b"bbbb"))
    # Copy a's sidecar over b's: its identity fields name a's inode, so it must not be used.
    (tmp_path / ".b.sha256.json").write_bytes((tmp_path / ".a.sha256.json").read_bytes())
    assert await store.stat("b") == BlobInfo("b", 4, _sha(b"bbbb"))


async def test_a_key_cannot_be_both_a_blob_and_a_prefix(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    await store.put("a", iter_bytes(b"leaf"))
    with pytest.raises(BlobStoreError, match="a parent of its path is itself a blob"):
        await store.put("a/b", iter_bytes(b"x"))
    await store.put("d/e", iter_bytes(b"x"))
    with pytest.raises(BlobStoreError, match="other blobs are stored under it"):
        await store.put("d", iter_bytes(b"x"))
    assert await read_bytes(store, "a", max_size=10) == b"leaf"
    assert _names(tmp_path) == {"a", ".a.sha256.json", "d", "d/e", "d/.e.sha256.json"}


async def test_delete_removes_the_sidecar_too(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    await store.put("x/y", iter_bytes(b"content"))
    await store.delete("x/y")
    assert _names(tmp_path) == {"x"}


async def test_root_is_created_on_first_put(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path / "not" / "yet")
    assert await store.stat("k") is None
    assert not await store.exists("k")
    await store.put("k", iter_bytes(b""))
    assert await store.stat("k") == BlobInfo("k", 0, _sha(b""))


async def test_small_chunks_are_written_in_batches_with_the_same_result(tmp_path: Path) -> None:
    data = os.urandom(700_001)

    async def byte_pairs() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 2):
            yield data[start : start + 2]

    store = DiskBlobStore(tmp_path)
    assert await store.put("pairs", byte_pairs()) == BlobInfo("pairs", len(data), _sha(data))
    assert store.path_for("pairs").read_bytes() == data


async def test_negative_max_size_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_size"):
        await DiskBlobStore(tmp_path).put("k", iter_bytes(b""), max_size=-1)


async def test_reader_chunk_size_must_be_positive(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path)
    await store.put("k", iter_bytes(b"abc"))
    with pytest.raises(ValueError, match="chunk_size"):
        await store.open("k", chunk_size=0)


async def test_helpers(tmp_path: Path) -> None:
    store: BlobStore = DiskBlobStore(tmp_path)
    assert isinstance(store, BlobStore)
    data = b"helpers " * 1000
    await store.put("h", iter_bytes(data, chunk_size=1000))
    assert await read_bytes(store, "h", max_size=len(data)) == data
    with pytest.raises(BlobTooLarge, match="size limit of 7999 bytes"):
        await read_bytes(store, "h", max_size=len(data) - 1)
    async with await store.open("h", chunk_size=3000) as reader:
        assert await sha256_of(reader) == (_sha(data), len(data))
    assert [len(c) async for c in iter_bytes(b"abcdefg", chunk_size=3)] == [3, 3, 1]
    assert [c async for c in iter_bytes(b"")] == []


async def test_temp_files_of_a_dead_process_are_swept_by_the_next_store(tmp_path: Path) -> None:
    # A crashed writer's scratch directory: nobody holds its lock.
    leftover = tmp_path / ".tmp" / "put-crashed"
    leftover.mkdir(parents=True)
    (leftover / "0123.tmp").write_bytes(b"half a component")
    live = DiskBlobStore(tmp_path)
    await live.put("a", iter_bytes(b"x"))
    assert not leftover.exists()
    # A live store's directory is locked: another store on the same root leaves it alone.
    (live_dir,) = (tmp_path / ".tmp").iterdir()
    DiskBlobStore(tmp_path)
    assert live_dir.exists()


async def test_put_file_links_the_file_instead_of_copying_it(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path / "blobs")
    spooled = tmp_path / "upload.part"
    spooled.write_bytes(b"\0asm\1\0\0\0")
    info = await store.put_file("c/1.wasm", spooled, size=8, sha256=_sha(b"\0asm\1\0\0\0"))
    assert info == BlobInfo("c/1.wasm", 8, _sha(b"\0asm\1\0\0\0"))
    blob = store.path_for("c/1.wasm")
    # One file under two names until the caller deletes its own: nothing was read or written.
    assert blob.stat().st_ino == spooled.stat().st_ino
    assert _names(tmp_path / "blobs") == {"c", "c/1.wasm", "c/.1.wasm.sha256.json"}
    spooled.unlink()
    assert await store.stat("c/1.wasm") == info


async def test_put_file_copies_across_file_systems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cross_device_link(source: object, destination: object) -> None:
        raise OSError(18, "Invalid cross-device link")  # EXDEV: the spool is on another mount

    monkeypatch.setattr(os, "link", cross_device_link)
    store = DiskBlobStore(tmp_path / "blobs")
    spooled = tmp_path / "upload.part"
    spooled.write_bytes(b"content" * 1000)
    info = await store.put_file("k", spooled, size=7000, sha256=_sha(b"content" * 1000))
    assert info == BlobInfo("k", 7000, _sha(b"content" * 1000))
    assert store.path_for("k").stat().st_ino != spooled.stat().st_ino
    assert await read_bytes(store, "k", max_size=7000) == b"content" * 1000
    assert _names(tmp_path / "blobs") == {"k", ".k.sha256.json"}


async def test_put_file_of_a_missing_file_stores_nothing(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path / "blobs")
    store.prepare_file(tmp_path / "gone.part")  # only a hint: nothing to flush, nothing raised
    with pytest.raises(BlobStoreError):
        await store.put_file("k", tmp_path / "gone.part", size=1, sha256=_sha(b"x"))
    assert not await store.exists("k")
    assert _names(tmp_path / "blobs") == set()
