"""Scratch directories that a crash cannot leave behind: upload spools, blob temp files.

Each process writes its temporary files into a directory of its own (`<parent>/<prefix><random>`)
and holds an exclusive `flock` on that directory for as long as it lives. The kernel drops the lock
when the process dies, however it dies, so a directory whose lock can be taken belongs to nobody:
every process sweeps those away when it claims its own. Several processes (replicas, or the
component and ledger services sharing a blob directory) can share one parent safely.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import structlog

log = structlog.get_logger()


def _try_lock(path: Path) -> int | None:
    """An fd holding the exclusive lock on directory `path`, or None if someone holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def sweep(parent: Path, prefix: str) -> int:
    """Remove the scratch directories under `parent` whose process is gone; how many."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in parent.iterdir():
            if not entry.name.startswith(prefix) or not entry.is_dir():
                continue
            fd = _try_lock(entry)
            if fd is None:
                continue
            try:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
            finally:
                os.close(fd)
    if removed:
        log.info("scratch_swept", directory=str(parent), removed=removed)
    return removed


class ScratchDir:
    """This process's own scratch directory, locked while the process lives (the descriptor
    holding the lock is never closed; the kernel releases it when the process ends)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def claim(cls, parent: Path, prefix: str) -> ScratchDir:
        """Sweep what dead processes left under `parent`, then make and lock a directory."""
        parent.mkdir(parents=True, exist_ok=True)
        sweep(parent, prefix)
        while True:
            path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            fd = _try_lock(path)
            # Another process's sweep may have taken the new, still unlocked directory.
            if fd is not None and os.path.samestat(os.fstat(fd), _stat(path)):
                return cls(path, fd)
            if fd is not None:
                os.close(fd)


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        return os.stat_result((0,) * 10)
