"""Zip archives from clients (initial files, DARs): the size checks made before inflating anything.

A zip's central directory declares every entry's compressed and uncompressed size, so a "zip
bomb" can be refused from the directory alone: too many entries, too many bytes once unpacked, or
an entry that inflates implausibly. (An entry that lies about its size is stopped while it is
read: zipfile never returns more than the declared size, and the readers here count too.)
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from cairn.runtime.errors import quote

# Entries up to this size may compress better than the ratio (a small file of zeros is no bomb).
RATIO_EXEMPT_BYTES = 1 << 20

# What zipfile raises for a damaged archive, besides BadZipFile: a truncated or corrupt stream
# (zlib.error, EOFError), impossible offsets or undecodable names (ValueError, which includes
# UnicodeDecodeError), an unknown compression method (NotImplementedError), an encrypted entry
# (RuntimeError), a failed read (OSError).
ZIP_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, RuntimeError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Bounds that keep a hostile zip from exhausting disk, memory or time."""

    max_total_size: int = 100_000_000  # uncompressed bytes over all entries
    max_entries: int = 10_000  # directories included
    max_ratio: int = 500  # uncompressed / compressed, per entry over RATIO_EXEMPT_BYTES


class ArchiveRefused(ValueError):
    """The directory breaks a limit; the message says which, quoting at most a short name."""


class ArchiveTooLarge(ArchiveRefused):
    """The entries unpack to more than `max_total_size`: a limit, not a malformed archive."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the archive unpacks to more than {limit} bytes")
        self.limit = limit


def check_directory(infos: Sequence[zipfile.ZipInfo], limits: ArchiveLimits) -> int:
    """Raise ArchiveRefused unless the declared entries fit `limits`; returns their total size."""
    if len(infos) > limits.max_entries:
        raise ArchiveRefused(f"more than {limits.max_entries} entries")
    total = 0
    for info in infos:
        total += info.file_size
        if total > limits.max_total_size:
            raise ArchiveTooLarge(limits.max_total_size)
        if (info.file_size > RATIO_EXEMPT_BYTES
                and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
            raise ArchiveRefused(
                f"{quote('/' + info.orig_filename)} inflates more than {limits.max_ratio} times "
                f"({info.compress_size} to {info.file_size} bytes)"
            )
    return total
