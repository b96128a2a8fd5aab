"""Input handling for component uploads: streaming multipart/form-data and initial-file zips.

The Component API takes `POST /v1/components` and `/updates` as multipart/form-data (Golem's
`query`, `component`, `componentType`, `filesPermissions`, `files`; the 2023 Template API's
`query` and `template`). Envoy hands the raw body to the service in ~1 MiB gRPC messages, so:

- `split_body_stream` separates the content type (first message) from the body chunks;
- `iter_multipart` parses the body as it arrives (python-multipart's streaming parser) and yields
  each part with an async iterator over its bytes;
- `read_multipart_form` keeps the small text parts in memory under a size cap and streams every
  binary part into a caller-supplied sink, such as `TempFileSink` or a blob store put;
- `InitialFilesArchive` validates the `files` zip, hashes each file (its SHA-256 is its key) and
  streams the contents into a blob store.

Nothing here holds a whole binary part or a whole archive entry in memory. Every client mistake
raises `UploadError` with a message fit to return in a 400 response.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import re
import stat
import tempfile
import zipfile
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Generator,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Generic, Literal, TypeVar, cast

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from cairn.blobstore import BlobStore
from cairn.blobstore.blocking import BlockingCalls
from cairn.runtime import archives, jsonbody
from cairn.runtime.archives import ZIP_ERRORS, ArchiveLimits, ArchiveRefused, check_directory
from cairn.runtime.errors import LONE_SURROGATE, quote

T = TypeVar("T")

FilePermissions = Literal["read-only", "read-write"]
ComponentType = Literal["Durable", "Ephemeral"]
DEFAULT_PERMISSIONS: FilePermissions = "read-only"
MALFORMED_ARCHIVE = "Malformed component archive error: "

# The form fields of the component endpoints: small JSON/text values (the last three are Golem's
# 2025 additions), and streamed binaries (`template` is the 2023 Template API's).
TEXT_PARTS = frozenset(
    {"query", "name", "componentType", "filesPermissions", "dynamicLinking", "env", "agentTypes"}
)
BINARY_PARTS = frozenset({"component", "files", "template"})

DEFAULT_MAX_TEXT_PART_SIZE = 64 * 1024
DEFAULT_MAX_PARTS = 32
# All the headers of one part (Content-Disposition, Content-Type): a name and a filename fit.
MAX_PART_HEADER_BYTES = 16 * 1024
# What one `files` zip may unpack to (its files are also counted against the plan's storage and
# monthly upload limits), how many entries it may have, and how much an entry may inflate.
DEFAULT_ARCHIVE_LIMITS = ArchiveLimits()
_READ_CHUNK = 1 << 20
_WRITE_BATCH = 256 * 1024


class UploadError(ValueError):
    """The upload is not acceptable; `message` says why, in words fit for the API client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PartTooLarge(UploadError):
    """A binary part is larger than the sink accepts."""

    def __init__(self, part_name: str, limit: int) -> None:
        super().__init__(f"The form field '{part_name}' exceeds the size limit of {limit} bytes")
        self.part_name = part_name
        self.limit = limit


# --------------------------------------------------------------------------------------------
# Streaming multipart/form-data


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data content type, or UploadError."""
    if not content_type:
        raise UploadError("Expected a multipart/form-data body, but no content type was given")
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise UploadError(
            f"Expected a multipart/form-data body, not {media_type.decode('latin-1')!r}"
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadError("The multipart/form-data content type has no boundary parameter")
    # RFC 2046: 1 to 70 characters.
    if len(boundary) > 70:
        raise UploadError("The multipart boundary is longer than 70 characters")
    return boundary


@dataclass(frozen=True, slots=True)
class PartInfo:
    """The headers of one form part."""

    name: str
    filename: str | None
    content_type: str | None


class _Begin:
    __slots__ = ("headers",)

    def __init__(self, headers: dict[str, bytes]) -> None:
        self.headers = headers


class _End:
    __slots__ = ()


_PART_END = _End()
_Event = _Begin | _End | bytes


class _MultipartEvents:
    """Feeds body chunks to python-multipart and turns its callbacks into a queue of events.

    One body chunk is parsed at a time and only when the queue is empty, so the events in memory
    never hold more than about one chunk of data.
    """

    def __init__(self, body: AsyncIterable[bytes], boundary: bytes, max_parts: int) -> None:
        self._body = aiter(body)
        self._events: collections.deque[_Event] = collections.deque()
        self._max_parts = max_parts
        self._parts = 0
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._header_bytes = 0
        # Header values stay bytes: they are Latin-1 by the letter of RFC 7578 and UTF-8 in
        # practice (browsers, curl), so only the parameters that matter are decoded, strictly.
        self._headers: dict[str, bytes] = {}
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )
        self._exhausted = False

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise UploadError(f"The form has more than {self._max_parts} parts")
        self._headers = {}
        self._header_bytes = 0

    def _count_header_bytes(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise UploadError(
                f"Malformed multipart body: a part's headers exceed {MAX_PART_HEADER_BYTES} bytes"
            )

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        self._headers[name] = bytes(self._header_value).strip()
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        self._events.append(_Begin(self._headers))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._events.append(data[start:end])

    def _on_part_end(self) -> None:
        self._events.append(_PART_END)

    async def next(self) -> _Event | None:
        """The next event, reading more of the body as needed; None once the body is done."""
        while not self._events:
            if self._exhausted:
                return None
            try:
                chunk = await anext(self._body)
            except StopAsyncIteration:
                self._exhausted = True
                if self._parser.state != MultipartState.END:
                    raise UploadError(
                        "Malformed multipart body: it ends before the closing boundary"
                    ) from None
                continue
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError(f"body chunks must be bytes, not {type(chunk).__name__}")
            try:
                self._parser.write(bytes(chunk))
            except FormParserError as exc:
                raise UploadError(f"Malformed multipart body: {exc}") from exc
            if self._parser.state == MultipartState.END:
                # Whatever follows the closing boundary is an epilogue: not worth reading.
                self._exhausted = True
        return self._events.popleft()


class MultipartPart:
    """One part of a form being parsed; iterate it (once) for its bytes."""

    def __init__(self, info: PartInfo, events: _MultipartEvents) -> None:
        self.info = info
        self._events = events
        self._done = False

    @property
    def name(self) -> str:
        return self.info.name

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while not self._done:
            event = await self._events.next()
            if isinstance(event, bytes):
                yield event
            elif isinstance(event, _End):
                self._done = True
            else:
                raise UploadError(f"Malformed multipart body: the part '{self.name}' never ends")

    async def drain(self) -> None:
        """Skip whatever of this part was not read."""
        async for _ in self:
            pass


def _part_info(headers: Mapping[str, bytes]) -> PartInfo:
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise UploadError("Malformed multipart body: a part has no Content-Disposition header")
    kind, options = parse_options_header(disposition)
    name = options.get(b"name")
    if kind != b"form-data" or name is None:
        raise UploadError(
            "Malformed multipart body: a part's Content-Disposition is not form-data with a name"
        )
    filename = options.get(b"filename")
    content_type = headers.get("content-type")
    return PartInfo(
        name=_header_text(name, "name"),
        filename=None if filename is None else _header_text(filename, "filename"),
        content_type=None if content_type is None else _header_text(content_type, "Content-Type"),
    )


def _header_text(raw: bytes, what: str) -> str:
    """A part header parameter as text: UTF-8 (which ASCII and what clients send are)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UploadError(f"Malformed multipart body: a part's {what} is not UTF-8 text") from None


async def iter_multipart(
    body: AsyncIterable[bytes],
    content_type: str | None,
    *,
    max_parts: int = DEFAULT_MAX_PARTS,
) -> AsyncGenerator[MultipartPart, None]:
    """Yield the parts of a multipart/form-data body as the body arrives.

    A part not read to its end before the next one is requested is skipped.
    """
    events = _MultipartEvents(body, multipart_boundary(content_type), max_parts)
    while True:
        event = await events.next()
        if event is None:
            return
        if not isinstance(event, _Begin):
            raise UploadError("Malformed multipart body: data outside of a part")
        part = MultipartPart(_part_info(event.headers), events)
        yield part
        await part.drain()


M = TypeVar("M")


async def split_body_stream(
    messages: AsyncIterable[M],
    *,
    content_type_of: Callable[[M], str],
    data_of: Callable[[M], bytes],
) -> tuple[str, AsyncIterator[bytes]]:
    """Turn a stream of `google.api.HttpBody`-like messages into (content type, body chunks).

    Envoy's transcoder puts the request's content type on the first message only; the body is
    the data of every message in order. The first message is read here, the rest lazily.
    """
    stream = aiter(messages)
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        raise UploadError("The request has no body") from None

    async def chunks() -> AsyncIterator[bytes]:
        if data := data_of(first):
            yield data
        async for message in stream:
            if data := data_of(message):
                yield data

    return content_type_of(first), chunks()


BinarySink = Callable[[PartInfo, AsyncIterator[bytes]], Awaitable[T]]


@dataclass(frozen=True, slots=True)
class FormLimits:
    """Bounds on a form's shape: how many parts, and how large each text part may be."""

    max_parts: int = DEFAULT_MAX_PARTS
    max_text_part_size: int = DEFAULT_MAX_TEXT_PART_SIZE


@dataclass
class MultipartForm(Generic[T]):
    """The parsed form: text parts decoded, binary parts as whatever the sink returned."""

    texts: dict[str, str] = field(default_factory=dict)
    binaries: dict[str, T] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        return self.texts.get(name)

    def binary(self, name: str) -> T | None:
        return self.binaries.get(name)


async def read_multipart_form(
    body: AsyncIterable[bytes],
    content_type: str | None,
    *,
    binary_sink: BinarySink[T],
    text_parts: Collection[str] = TEXT_PARTS,
    binary_parts: Collection[str] = BINARY_PARTS,
    required: Collection[str] = (),
    max_text_part_size: int = DEFAULT_MAX_TEXT_PART_SIZE,
    max_parts: int = DEFAULT_MAX_PARTS,
) -> MultipartForm[T]:
    """Parse a form: text parts into memory (each at most `max_text_part_size` bytes), binary
    parts through `binary_sink(info, chunks)`, other parts skipped.

    Raises UploadError for a body that is not multipart, is malformed, repeats a part, has a text
    part that is too large or not UTF-8, or lacks a part named in `required`. The sink's results
    are the caller's to clean up if this raises after the sink ran (TempFileSink does on close).
    """
    form: MultipartForm[T] = MultipartForm()
    parts = iter_multipart(body, content_type, max_parts=max_parts)
    async with contextlib.aclosing(parts):
        async for part in parts:
            name = part.name
            if name in form.texts or name in form.binaries:
                raise UploadError(f"The form field '{name}' is given more than once")
            if name in text_parts:
                form.texts[name] = await _read_text_part(part, max_text_part_size)
            elif name in binary_parts:
                form.binaries[name] = await binary_sink(part.info, aiter(part))
    missing = [name for name in required if name not in form.texts and name not in form.binaries]
    if missing:
        raise UploadError(f"Missing required form field(s): {', '.join(missing)}")
    return form


async def _read_text_part(part: MultipartPart, limit: int) -> str:
    value = bytearray()
    async for chunk in part:
        value += chunk
        if len(value) > limit:
            raise UploadError(f"The form field '{part.name}' is larger than {limit} bytes")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise UploadError(f"The form field '{part.name}' is not valid UTF-8 text") from None


@dataclass(frozen=True, slots=True)
class SpooledPart:
    """A binary part saved to a temporary file by `TempFileSink`."""

    name: str
    filename: str | None
    path: Path
    size: int
    sha256: str

    async def chunks(self, chunk_size: int = _READ_CHUNK) -> AsyncIterator[bytes]:
        """The saved bytes, read in a worker thread (e.g. to feed `BlobStore.put`)."""
        calls = BlockingCalls()
        file = await calls.run(_open_for_reading, self.path)
        try:
            while chunk := await calls.run(file.read, chunk_size):
                yield chunk
        finally:
            await calls.settle()
            await calls.run(file.close)


class TempFileSink:
    """A `BinarySink` that streams each binary part into its own temporary file.

    Use it as a context manager, or call `cleanup()`: that deletes every file it wrote, which is
    also what happens to a part that fails midway (too large, malformed body, cancelled).
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        max_size: int | None = None,
        max_sizes: Mapping[str, int] | None = None,
    ) -> None:
        self.directory = directory
        self.max_size = max_size
        self.max_sizes = dict(max_sizes or {})
        self.parts: list[SpooledPart] = []

    def limit_for(self, name: str) -> int | None:
        return self.max_sizes.get(name, self.max_size)

    async def __call__(self, info: PartInfo, chunks: AsyncIterator[bytes]) -> SpooledPart:
        limit = self.limit_for(info.name)
        calls = BlockingCalls()
        fd, raw_path = await calls.run(tempfile.mkstemp, ".part", "cairn-upload-", self.directory)
        path = Path(raw_path)
        file = os.fdopen(fd, "wb")
        digest = hashlib.sha256()

        def write(data: bytes) -> None:
            # In the worker thread: hashing releases the GIL, so it overlaps the event loop.
            file.write(data)
            digest.update(data)

        size = 0
        batch: list[bytes] = []
        batch_size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise PartTooLarge(info.name, limit)
                batch.append(bytes(chunk))
                batch_size += len(chunk)
                # Gathered so that small network chunks do not cost one thread hop each.
                if batch_size >= _WRITE_BATCH:
                    await calls.run(write, b"".join(batch))
                    batch.clear()
                    batch_size = 0
            if batch:
                await calls.run(write, b"".join(batch))
            await calls.run(file.close)
        except BaseException:
            await asyncio.shield(self._discard(calls, file, path))
            raise
        part = SpooledPart(info.name, info.filename, path, size, digest.hexdigest())
        self.parts.append(part)
        return part

    @staticmethod
    async def _discard(calls: BlockingCalls, file: IO[bytes], path: Path) -> None:
        await calls.settle()
        await calls.run(_close_and_unlink, file, path)

    def cleanup(self) -> None:
        """Delete every file this sink wrote."""
        for part in self.parts:
            with contextlib.suppress(FileNotFoundError):
                part.path.unlink()
        self.parts.clear()

    def __enter__(self) -> TempFileSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def _open_for_reading(path: Path) -> IO[bytes]:
    return path.open("rb")


def _close_and_unlink(file: IO[bytes], path: Path) -> None:
    with contextlib.suppress(OSError):
        file.close()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --------------------------------------------------------------------------------------------
# Small form values


def parse_component_type(value: str | None) -> ComponentType:
    """`componentType`: "Durable" (the default) or "Ephemeral", bare or as a JSON string."""
    if value is None or not value.strip():
        return "Durable"
    text = value.strip()
    if text.startswith('"'):
        try:
            text = jsonbody.parse(text)
        except jsonbody.InvalidJson:
            raise UploadError(f"Invalid componentType: {quote(value)}") from None
    if text == "Durable":
        return "Durable"
    if text == "Ephemeral":
        return "Ephemeral"
    raise UploadError(f"Invalid componentType {quote(value)!r}: expected Durable or Ephemeral")


def parse_files_permissions(value: str | None) -> dict[str, FilePermissions]:
    """`filesPermissions` JSON, `{"values":[{"path":"/a","permissions":"read-write"}]}`, as a
    mapping from absolute path to permissions. An absent or blank field means no entries."""
    if value is None or not value.strip():
        return {}
    try:
        document = jsonbody.parse(value)
    except jsonbody.InvalidJson as exc:
        raise UploadError(f"Invalid filesPermissions: not JSON ({exc})") from None
    values = document.get("values") if isinstance(document, dict) else None
    if not isinstance(values, list):
        raise UploadError('Invalid filesPermissions: expected {"values": [...]}')
    permissions: dict[str, FilePermissions] = {}
    for entry in values:
        if not isinstance(entry, dict):
            raise UploadError("Invalid filesPermissions: each value must be an object")
        path, permission = entry.get("path"), entry.get("permissions")
        if not isinstance(path, str) or not path.startswith("/"):
            raise UploadError(
                f"Invalid filesPermissions: path must be absolute, not {quote(path)!r}"
            )
        if permission not in ("read-only", "read-write"):
            raise UploadError(
                f"Invalid filesPermissions for {quote(path)}: permissions must be "
                f"'read-only' or 'read-write', not {permission!r}"
            )
        normalized = "/" + _safe_relative_path(path[1:], what="filesPermissions path")
        if normalized in permissions:
            raise UploadError(f"Invalid filesPermissions: {quote(path)} is listed more than once")
        permissions[normalized] = cast(FilePermissions, permission)
    return permissions


# --------------------------------------------------------------------------------------------
# Initial files (the `files` zip)

_DRIVE = re.compile(r"^[A-Za-z]:")


# C0 and C1 control characters (NUL included) and DEL: never part of a file name.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _safe_relative_path(name: str, *, what: str) -> str:
    """Validate a relative `/`-separated path; raise UploadError naming `what` otherwise."""
    if not name:
        raise UploadError(f"Invalid {what}: empty path")
    shown = repr(quote(name))
    if name.startswith("/") or _DRIVE.match(name):
        raise UploadError(f"Invalid {what} {shown}: absolute paths are not allowed")
    if "\\" in name:
        raise UploadError(f"Invalid {what} {shown}: backslashes are not allowed")
    if _CONTROL.search(name):
        raise UploadError(f"Invalid {what} {shown}: NUL and control characters are not allowed")
    if LONE_SURROGATE.search(name):
        raise UploadError(f"Invalid {what} {shown}: the name is not valid Unicode")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise UploadError(
                f"Invalid {what} {shown}: empty, '.' and '..' path segments are not allowed"
            )
    return name


@dataclass(frozen=True, slots=True)
class InitialFile:
    """One file of a component's initial file system, as the Component API describes it."""

    key: str  # SHA-256 hex of the content: the same content always gets the same key
    path: str  # absolute, e.g. "/config/app.json"
    permissions: FilePermissions
    size: int

    def to_json(self) -> dict[str, str]:
        """The API's InitialComponentFile shape."""
        return {"key": self.key, "path": self.path, "permissions": self.permissions}


class ArchiveTooLarge(UploadError):
    """The files unpack to more than the per-upload limit (a limit, not a malformed zip)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"Initial files size limit exceeded (limit: {limit} bytes unpacked)")
        self.limit = limit


def _malformed(detail: str) -> UploadError:
    return UploadError(MALFORMED_ARCHIVE + detail)


class InitialFilesArchive:
    """A validated `files` zip: every file listed with its key, path, permissions and size.

    Build it with `InitialFilesArchive.read(...)` (or `.load(...)` from a worker thread), then
    `upload(store)` to put each distinct content into the blob store under its hash. The source
    must stay open and unchanged until then; `close()` releases it.
    """

    def __init__(
        self,
        zip_file: zipfile.ZipFile,
        files: list[InitialFile],
        entries: dict[str, zipfile.ZipInfo],
    ) -> None:
        self._zip = zip_file
        self.files = files
        self._entries = entries

    @classmethod
    def load(
        cls,
        source: Path | IO[bytes],
        permissions: Mapping[str, FilePermissions],
        *,
        limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
    ) -> InitialFilesArchive:
        """Validate the archive and hash its files (blocking: reads every entry once)."""
        if not isinstance(source, Path) and not source.seekable():
            raise ValueError("the archive source must be a path or a seekable stream")
        try:
            zip_file = zipfile.ZipFile(source)
        except ZIP_ERRORS as exc:
            raise _malformed(f"not a zip archive ({quote(str(exc))})") from None
        try:
            entries = cls._validate_entries(zip_file, limits)
            unknown = sorted(set(permissions) - set(entries))
            if unknown:
                raise UploadError(
                    "filesPermissions names files that are not in the archive: "
                    + ", ".join(unknown)
                )
            files = []
            total = 0
            for path, info in entries.items():
                sha256, size = cls._hash_entry(zip_file, info, limits.max_total_size - total)
                total += size
                files.append(
                    InitialFile(sha256, path, permissions.get(path, DEFAULT_PERMISSIONS), size)
                )
        except BaseException:
            zip_file.close()
            raise
        return cls(zip_file, files, entries)

    @classmethod
    async def read(
        cls,
        source: Path | IO[bytes],
        files_permissions: str | None,
        *,
        limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
    ) -> InitialFilesArchive:
        """Parse `filesPermissions` JSON, then validate and hash the archive in a worker thread."""
        permissions = parse_files_permissions(files_permissions)
        return await BlockingCalls().run(lambda: cls.load(source, permissions, limits=limits))

    @staticmethod
    def _validate_entries(
        zip_file: zipfile.ZipFile, limits: ArchiveLimits
    ) -> dict[str, zipfile.ZipInfo]:
        infos = zip_file.infolist()
        # Checked before inflating anything: a bomb announces its sizes in the directory.
        try:
            check_directory(infos, limits)
        except archives.ArchiveTooLarge as exc:
            raise ArchiveTooLarge(exc.limit) from None
        except ArchiveRefused as exc:
            raise _malformed(str(exc)) from None
        entries: dict[str, zipfile.ZipInfo] = {}
        directories: set[str] = set()
        for info in infos:
            try:
                # Directories are not files, but a hostile name is rejected wherever it appears.
                # zipfile cuts `filename` at a NUL (`safe\0/../x` reads as `safe`), so the name
                # as stored is what is checked.
                relative = _safe_relative_path(
                    info.orig_filename.rstrip("/") if info.is_dir() else info.orig_filename,
                    what="archive entry",
                )
            except UploadError as exc:
                raise _malformed(exc.message) from None
            if info.is_dir():
                continue
            path = "/" + relative
            mode = info.external_attr >> 16
            if info.create_system == 3 and stat.S_ISLNK(mode):
                raise _malformed(f"{quote(path)} is a symbolic link, which is not supported")
            if info.flag_bits & 0x1:
                raise _malformed(f"{quote(path)} is encrypted")
            if path in entries:
                raise _malformed(f"{quote(path)} appears more than once")
            entries[path] = info
            parts = relative.split("/")
            directories.update("/" + "/".join(parts[:i]) for i in range(1, len(parts)))
        clashes = sorted(directories & set(entries))
        if clashes:
            raise _malformed(f"{quote(clashes[0])} is both a file and a directory")
        return entries

    @staticmethod
    def _hash_entry(
        zip_file: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int
    ) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        for chunk in _read_entry(zip_file, info):
            size += len(chunk)
            # Counts the real output too, in case the directory lied about the sizes.
            if size > budget or size > info.file_size:
                raise _malformed(
                    f"{quote('/' + info.filename)} unpacks to more than its declared size"
                )
            digest.update(chunk)
        return digest.hexdigest(), size

    def iter_content(
        self, file: InitialFile, chunk_size: int = _READ_CHUNK
    ) -> Generator[bytes, None, None]:
        """The file's bytes (blocking), checked against the hash it was listed with."""
        info = self._entries.get(file.path)
        if info is None:
            raise KeyError(file.path)
        digest = hashlib.sha256()
        for chunk in _read_entry(self._zip, info, chunk_size):
            digest.update(chunk)
            yield chunk
        if digest.hexdigest() != file.key:
            raise _malformed(f"{quote(file.path)} changed while it was being read")

    async def content(
        self, file: InitialFile, chunk_size: int = _READ_CHUNK
    ) -> AsyncIterator[bytes]:
        """The file's bytes, inflated in a worker thread chunk by chunk."""
        calls = BlockingCalls()
        chunks = self.iter_content(file, chunk_size)
        try:
            while (chunk := await calls.run(next, chunks, None)) is not None:
                yield chunk
        finally:
            await calls.settle()
            await calls.run(chunks.close)

    async def upload(
        self, store: BlobStore, *, key_prefix: str = "", skip_existing: bool = True
    ) -> list[InitialFile]:
        """Put each distinct content into `store` under `key_prefix + key`; return the files.

        Content already stored (same hash, so same bytes) is not uploaded again unless
        `skip_existing` is False.
        """
        done: set[str] = set()
        for file in self.files:
            if file.key in done:
                continue
            blob_key = key_prefix + file.key
            if not (skip_existing and await store.exists(blob_key)):
                await store.put(blob_key, self.content(file), max_size=file.size)
            done.add(file.key)
        return list(self.files)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> InitialFilesArchive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_entry(
    zip_file: zipfile.ZipFile, info: zipfile.ZipInfo, chunk_size: int = _READ_CHUNK
) -> Iterator[bytes]:
    """Inflate one entry chunk by chunk, turning every decoding failure into UploadError."""
    try:
        with zip_file.open(info) as entry:
            while chunk := entry.read(chunk_size):
                yield chunk
    except NotImplementedError as exc:
        raise _malformed(
            f"{quote('/' + info.filename)} uses an unsupported compression method "
            f"({quote(str(exc))})"
        ) from None
    except ZIP_ERRORS as exc:
        raise _malformed(
            f"{quote('/' + info.filename)} cannot be read ({quote(str(exc))})"
        ) from None
