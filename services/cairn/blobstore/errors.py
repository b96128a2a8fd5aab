"""Exceptions raised by every blob store adapter.

Callers catch these and never an adapter's own errors (OSError, minio's S3Error, urllib3 errors), so
the component and ledger services can map them to API responses without knowing which backend runs.
"""

from __future__ import annotations

from cairn.runtime.errors import DependencyDown


class BlobStoreError(Exception):
    """Root of every blob store failure; the message is fit to show an API client."""


class InvalidBlobKey(BlobStoreError, ValueError):
    """The key cannot name a blob: absolute, `..`, NUL, a leading dot, odd characters, too long."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"Invalid blob key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class BlobNotFound(BlobStoreError, LookupError):
    """No blob is stored under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Blob not found: {key!r}")
        self.key = key


class BlobTooLarge(BlobStoreError):
    """The stream passed `max_size`; nothing was stored."""

    def __init__(self, limit: int, key: str | None = None) -> None:
        where = f" for {key!r}" if key is not None else ""
        super().__init__(f"Blob exceeds the size limit of {limit} bytes{where}")
        self.limit = limit
        self.key = key


class BlobStoreUnavailable(BlobStoreError, DependencyDown):
    """The backend cannot be reached or refuses service (network down, disk unwritable, 5xx)."""

    public_message = "Blob storage is unavailable; try again shortly"
