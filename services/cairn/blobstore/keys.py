"""Validation of blob keys, shared by every adapter so a key valid on disk is valid on S3 and back.

A key is a `/`-separated relative path such as `components/<uuid>/0.wasm` or `files/<sha256>`.
Segments may not start with a dot: that keeps `.`/`..` out and leaves dot-names free for each
adapter's own bookkeeping (temp files, sidecars, staging objects), which no key can then address.
"""

from __future__ import annotations

import re

from cairn.blobstore.errors import InvalidBlobKey

MAX_KEY_LENGTH = 1024
# Most file systems cap a single name at 255 bytes; the disk adapter adds a prefix and suffix.
MAX_SEGMENT_LENGTH = 200
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._\-=+@,~:]*")


def validate_key(key: str) -> tuple[str, ...]:
    """Return the key's path segments, or raise InvalidBlobKey saying what is wrong with it."""
    if not isinstance(key, str):
        raise InvalidBlobKey(repr(key), "a key must be a string")
    if not key:
        raise InvalidBlobKey(key, "a key must not be empty")
    if "\x00" in key:
        raise InvalidBlobKey(key, "a key must not contain NUL")
    if len(key.encode("utf-8")) > MAX_KEY_LENGTH:
        raise InvalidBlobKey(key, f"a key must be at most {MAX_KEY_LENGTH} bytes")
    if key.startswith("/") or key.startswith("\\"):
        raise InvalidBlobKey(key, "a key must be relative, not absolute")
    if "\\" in key:
        raise InvalidBlobKey(key, "use '/' to separate key segments, not '\\'")
    segments = tuple(key.split("/"))
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidBlobKey(key, "empty, '.' and '..' segments are not allowed")
        if segment.startswith("."):
            raise InvalidBlobKey(key, "a segment must not start with '.'")
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise InvalidBlobKey(key, f"a segment must be at most {MAX_SEGMENT_LENGTH} characters")
        if not _SEGMENT_RE.fullmatch(segment):
            raise InvalidBlobKey(
                key, "segments may only use letters, digits and the characters . _ - = + @ , ~ :"
            )
    return segments
