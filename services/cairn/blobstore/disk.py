"""Blob store on a local directory, for development, tests and single-node deployments.

Each blob is a plain file at `<root>/<key>`. A put writes a temp file in this process's scratch
directory under `<root>/.tmp/` (same file system), fsyncs it and renames it over the target, so
readers see the old blob or the new one, never a partial one. A crashed process's temp files are
removed by the next store opened on the root (`cairn.runtime.scratch`).

`put_file` stores a file the caller already wrote and hashed (a spooled upload) by hard-linking it
into the scratch directory instead of copying it: the bytes are neither read nor hashed again, only
fsynced (`prepare_file` starts that fsync early, while the caller does other work). On another
file system (EXDEV) it falls back to a kernel copy. A linked blob keeps the source file's mode
(a spool file's 0600).

Beside each blob a hidden sidecar caches its SHA-256; the sidecar records the file identity it
describes (device, inode, size, mtime) and is ignored when that no longer matches, so a stale or
lost sidecar costs a re-hash, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import os
import shutil
import stat as stat_module
import threading
import uuid
from collections.abc import AsyncIterable
from pathlib import Path
from typing import BinaryIO

from cairn.blobstore.blocking import BlockingCalls, blob_executor
from cairn.blobstore.errors import (
    BlobNotFound,
    BlobStoreError,
    BlobStoreUnavailable,
    BlobTooLarge,
)
from cairn.blobstore.keys import validate_key
from cairn.blobstore.port import DEFAULT_CHUNK_SIZE, DEFAULT_CONTENT_TYPE, BlobInfo, BlobReader
from cairn.runtime import scratch
from cairn.runtime.scratch import ScratchDir

SCRATCH_DIR = ".tmp"
SCRATCH_PREFIX = "put-"
# Small producer chunks are gathered up to this size so each thread hop writes a useful amount.
_WRITE_BATCH = 256 * 1024
_HASH_CHUNK = 1 << 20


def _sidecar_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.sha256.json")


def _identity(st: os.stat_result) -> dict[str, int]:
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_sidecar(target: Path, st: os.stat_result, sha256: str, scratch: Path) -> None:
    sidecar = _sidecar_path(target)
    temp = scratch / f"{uuid.uuid4().hex}.sha256.tmp"
    try:
        temp.write_text(json.dumps({"sha256": sha256, **_identity(st)}), encoding="utf-8")
        os.replace(temp, sidecar)
    except OSError:
        # The sidecar is only a cache; losing it costs a re-hash on the next stat.
        with contextlib.suppress(OSError):
            temp.unlink()


def _cached_sha256(target: Path, st: os.stat_result) -> str | None:
    try:
        cached = json.loads(_sidecar_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or any(cached.get(k) != v for k, v in _identity(st).items()):
        return None
    sha256 = cached.get("sha256")
    return sha256 if isinstance(sha256, str) else None


def _prefix_conflict(key: str) -> BlobStoreError:
    return BlobStoreError(f"Cannot store blob {key!r}: other blobs are stored under it as a prefix")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_or_copy(source: Path, destination: Path) -> None:
    """Put `source`'s content at `destination` without reading it when both share a file system."""
    try:
        os.link(source, destination)
    except FileNotFoundError:
        raise
    except OSError:
        # Another file system (EXDEV), or one without hard links: the kernel copies it.
        shutil.copyfile(source, destination)


def _flush_quietly(path: Path) -> None:
    """fsync a file that `put_file` will link; a hint, so a file already gone is no error."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _TempBlobFile:
    """The temp file (in the process's scratch directory) a put writes, or `put_file` links,
    before it is renamed over the target."""

    def __init__(self, key: str, target: Path, scratch: Path, source: Path | None = None) -> None:
        self.key = key
        self.target = target
        self.scratch = scratch
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise BlobStoreError(
                f"Cannot store blob {key!r}: a parent of its path is itself a blob"
            ) from exc
        except OSError as exc:
            raise BlobStoreUnavailable(
                f"Cannot create the directory for blob {key!r}: {exc}"
            ) from exc
        if target.is_dir():
            # Found before the stream is read, instead of after, when the rename would fail.
            raise _prefix_conflict(key)
        self.path = scratch / f"{uuid.uuid4().hex}.tmp"
        try:
            if source is None:
                self.file: BinaryIO = open(self.path, "xb")  # noqa: SIM115 - closed by commit/discard
            else:
                _link_or_copy(source, self.path)
                # Opened to be fsynced, which Linux allows on a read-only descriptor.
                self.file = open(self.path, "rb")  # noqa: SIM115 - closed by commit/discard
        except OSError as exc:
            if source is not None:
                with contextlib.suppress(OSError):
                    self.path.unlink(missing_ok=True)
            raise BlobStoreUnavailable(f"Cannot write blob {key!r}: {exc}") from exc
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as exc:
            raise BlobStoreUnavailable(f"Cannot write blob {self.key!r}: {exc}") from exc
        self.digest.update(data)
        self.size += len(data)

    def commit(self, sha256: str | None = None) -> BlobInfo:
        """Make the blob durable and visible; `sha256` is a linked file's, known to the caller."""
        if sha256 is None:
            sha256 = self.digest.hexdigest()
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            st = os.fstat(self.file.fileno())
            self.file.close()
            # The sidecar goes first and names the new inode, so it never vouches for old content.
            _write_sidecar(self.target, st, sha256, self.scratch)
        except OSError as exc:
            raise BlobStoreUnavailable(f"Cannot write blob {self.key!r}: {exc}") from exc
        try:
            os.replace(self.path, self.target)
        except OSError as exc:
            # The sidecar names the discarded temp file's inode; drop it rather than leave litter.
            with contextlib.suppress(OSError):
                _sidecar_path(self.target).unlink()
            if isinstance(exc, IsADirectoryError):
                raise _prefix_conflict(self.key) from exc
            raise BlobStoreUnavailable(f"Cannot write blob {self.key!r}: {exc}") from exc
        with contextlib.suppress(OSError):
            _fsync_directory(self.target.parent)
        return BlobInfo(key=self.key, size=st.st_size, sha256=sha256)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


class DiskBlobStore:
    """A `BlobStore` keeping each blob as a file under `root` (created on first write)."""

    def __init__(self, root: Path, *, executor: concurrent.futures.Executor | None = None) -> None:
        self.root = Path(root)
        self._executor = executor if executor is not None else blob_executor()
        self._scratch: ScratchDir | None = None
        self._scratch_lock = threading.Lock()
        # Temp files of puts that a crash interrupted (no key starts with '.', so no blob's).
        scratch.sweep(self.root / SCRATCH_DIR, SCRATCH_PREFIX)

    def _scratch_path(self) -> Path:
        """This process's directory for temp files, made on the first write (worker thread)."""
        with self._scratch_lock:
            if self._scratch is None:
                try:
                    self._scratch = ScratchDir.claim(self.root / SCRATCH_DIR, SCRATCH_PREFIX)
                except OSError as exc:
                    raise BlobStoreUnavailable(f"Cannot write under {self.root}: {exc}") from exc
            return self._scratch.path

    def __repr__(self) -> str:
        return f"DiskBlobStore({str(self.root)!r})"

    def path_for(self, key: str) -> Path:
        """The file that holds (or would hold) the blob; raises InvalidBlobKey for a bad key."""
        return self.root.joinpath(*validate_key(key))

    async def put(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        max_size: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> BlobInfo:
        # Plain files have nowhere to keep a content type; S3 keeps it for direct bucket readers.
        del content_type
        target = self.path_for(key)
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must not be negative, not {max_size}")
        calls = BlockingCalls(self._executor)
        temp: _TempBlobFile | None = None
        try:
            temp = await calls.run(lambda: _TempBlobFile(key, target, self._scratch_path()))
            received = 0
            batch: list[bytes] = []
            batch_size = 0
            async for chunk in chunks:
                if not isinstance(chunk, bytes | bytearray | memoryview):
                    raise TypeError(f"blob chunks must be bytes, not {type(chunk).__name__}")
                received += len(chunk)
                if max_size is not None and received > max_size:
                    raise BlobTooLarge(max_size, key)
                batch.append(bytes(chunk))
                batch_size += len(chunk)
                if batch_size >= _WRITE_BATCH:
                    data = batch[0] if len(batch) == 1 else b"".join(batch)
                    batch.clear()
                    batch_size = 0
                    await calls.run(temp.write, data)
            if batch:
                await calls.run(temp.write, b"".join(batch))
            return await calls.run(temp.commit)
        except BaseException:
            if temp is not None:
                # Shielded: a second cancellation must not leave the temp file behind.
                await asyncio.shield(self._discard(calls, temp))
            raise

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        size: int,
        sha256: str,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> BlobInfo:
        # The returned size is the file's own, for the caller to compare with `size`.
        del size, content_type
        target = self.path_for(key)
        calls = BlockingCalls(self._executor)
        try:
            return await calls.run(self._put_file_sync, key, target, Path(path), sha256)
        except BaseException:
            # A thread cannot be stopped: a cancelled call may still store the blob (as a put
            # that had read its whole stream would), so the caller's cleanup must come after it.
            await asyncio.shield(calls.settle())
            raise

    def prepare_file(self, path: Path) -> None:
        # Not waited for: the put's own fsync waits for whatever this has not written yet.
        self._executor.submit(_flush_quietly, Path(path))

    def _put_file_sync(self, key: str, target: Path, source: Path, sha256: str) -> BlobInfo:
        temp = _TempBlobFile(key, target, self._scratch_path(), source=source)
        try:
            return temp.commit(sha256)
        except BaseException:
            temp.discard()
            raise

    @staticmethod
    async def _discard(calls: BlockingCalls, temp: _TempBlobFile) -> None:
        await calls.settle()
        await calls.run(temp.discard)

    async def open(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> BlobReader:
        target = self.path_for(key)
        calls = BlockingCalls(self._executor)
        file, size = await calls.run(self._open_sync, key, target)
        return BlobReader(key, size, file.read, file.close, chunk_size=chunk_size, calls=calls)

    @staticmethod
    def _open_sync(key: str, target: Path) -> tuple[BinaryIO, int]:
        try:
            file = open(target, "rb")  # noqa: SIM115 - the BlobReader closes it
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise BlobNotFound(key) from exc
        except OSError as exc:
            raise BlobStoreUnavailable(f"Cannot read blob {key!r}: {exc}") from exc
        st = os.fstat(file.fileno())
        if not stat_module.S_ISREG(st.st_mode):
            file.close()
            raise BlobNotFound(key)
        return file, st.st_size

    async def stat(self, key: str) -> BlobInfo | None:
        target = self.path_for(key)
        return await BlockingCalls(self._executor).run(self._stat_sync, key, target)

    def _stat_sync(self, key: str, target: Path) -> BlobInfo | None:
        try:
            file = open(target, "rb")  # noqa: SIM115 - closed by the `with` below
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise BlobStoreUnavailable(f"Cannot read blob {key!r}: {exc}") from exc
        with file:
            st = os.fstat(file.fileno())
            if not stat_module.S_ISREG(st.st_mode):
                return None
            sha256 = _cached_sha256(target, st)
            if sha256 is None:
                # Hashing the open descriptor stays consistent even if a put replaces the file now.
                digest = hashlib.sha256()
                while chunk := file.read(_HASH_CHUNK):
                    digest.update(chunk)
                sha256 = digest.hexdigest()
                _write_sidecar(target, st, sha256, self._scratch_path())
        return BlobInfo(key=key, size=st.st_size, sha256=sha256)

    async def delete(self, key: str) -> None:
        target = self.path_for(key)
        await BlockingCalls(self._executor).run(self._delete_sync, key, target)

    @staticmethod
    def _delete_sync(key: str, target: Path) -> None:
        for path in (target, _sidecar_path(target)):
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                # Nothing stored there (a directory means only longer keys share this prefix).
                pass
            except OSError as exc:
                raise BlobStoreUnavailable(f"Cannot delete blob {key!r}: {exc}") from exc

    async def exists(self, key: str) -> bool:
        target = self.path_for(key)
        return await BlockingCalls(self._executor).run(target.is_file)
