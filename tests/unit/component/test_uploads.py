"""Streaming multipart parsing and initial-file archives of component uploads.

Form bodies are encoded by httpx (an independent multipart encoder, as a real client would send
them) or written out by hand for the malformed cases; zips are built with zipfile. Bodies are fed
in odd chunk sizes, as gRPC messages would split them.
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import struct
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import httpx
import pytest

from cairn.blobstore import DiskBlobStore, read_bytes
from cairn.component.uploads import (
    MALFORMED_ARCHIVE,
    ArchiveLimits,
    ArchiveTooLarge,
    InitialFile,
    InitialFilesArchive,
    PartInfo,
    PartTooLarge,
    SpooledPart,
    TempFileSink,
    UploadError,
    iter_multipart,
    multipart_boundary,
    parse_component_type,
    parse_files_permissions,
    read_multipart_form,
    split_body_stream,
)

QUERY = {"projectId": "5a8591dd-4039-49df-9202-96385ba3eff8", "componentName": "shopping-cart"}


def _encode_form(
    texts: dict[str, str], files: dict[str, tuple[str, bytes, str]]
) -> tuple[str, bytes]:
    """A multipart/form-data body as httpx (a real HTTP client) encodes it."""
    if not files:
        return _encode_text_form(texts)
    request = httpx.Request("POST", "http://cairn.test/v1/components", data=texts, files=files)
    return request.headers["content-type"], request.read()


def _encode_text_form(texts: dict[str, str]) -> tuple[str, bytes]:
    """httpx sends a form without files urlencoded, so text-only forms are written here."""
    boundary = "cairn-test-boundary"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value.encode()
        + b"\r\n"
        for name, value in texts.items()
    )
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


async def _in_chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _zip_bytes(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _listing(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


# ----------------------------------------------------------------------------------------------
# Multipart forms


@pytest.mark.parametrize("chunk_size", [7, 4093, 65_537, 1 << 20, 1 << 30])
async def test_component_create_form_streams_binaries_to_temp_files(
    shared_fixtures: Path, tmp_path: Path, chunk_size: int
) -> None:
    wasm = (shared_fixtures / "golem" / "wasm" / "tinygo-wasi.wasm").read_bytes()
    files_zip = _zip_bytes({"config/app.json": b'{"debug": true}', "README": b"hello"})
    permissions = json.dumps({"values": [{"path": "/README", "permissions": "read-write"}]})
    content_type, body = _encode_form(
        {"query": json.dumps(QUERY), "componentType": "Ephemeral", "filesPermissions": permissions},
        {
            "component": ("tinygo-wasi.wasm", wasm, "application/wasm"),
            "files": ("files.zip", files_zip, "application/zip"),
        },
    )
    with TempFileSink(tmp_path) as sink:
        form = await read_multipart_form(
            _in_chunks(body, chunk_size),
            content_type,
            binary_sink=sink,
            required=("query", "component"),
        )
        assert json.loads(form.texts["query"]) == QUERY
        assert parse_component_type(form.text("componentType")) == "Ephemeral"
        assert parse_files_permissions(form.text("filesPermissions")) == {"/README": "read-write"}
        component = form.binary("component")
        assert isinstance(component, SpooledPart)
        assert component.filename == "tinygo-wasi.wasm"
        assert (component.size, component.sha256) == (len(wasm), _sha256(wasm))
        assert _read(component.path) == wasm
        streamed = b"".join([chunk async for chunk in component.chunks(chunk_size=10_000)])
        assert streamed == wasm
        archive = form.binaries["files"]
        assert _read(archive.path) == files_zip
    assert _listing(tmp_path) == []


async def test_one_byte_chunks_parse_like_one_chunk() -> None:
    content_type, body = _encode_form(
        {"query": json.dumps(QUERY)}, {"component": ("c.wasm", b"\0asm\r\n--x\r\n" * 50, "x/y")}
    )
    received: dict[str, bytes] = {}

    async def keep(info: PartInfo, chunks: AsyncIterator[bytes]) -> int:
        received[info.name] = b"".join([chunk async for chunk in chunks])
        return len(received[info.name])

    form = await read_multipart_form(_in_chunks(body, 1), content_type, binary_sink=keep)
    assert form.binaries == {"component": 550}
    assert received["component"] == b"\0asm\r\n--x\r\n" * 50
    assert form.texts == {"query": json.dumps(QUERY)}


async def test_binary_part_reaches_the_sink_in_pieces_no_larger_than_the_body_chunks() -> None:
    payload = bytes(range(256)) * (20 * 4096)  # 20 MiB
    content_type, body = _encode_form({}, {"component": ("big.wasm", payload, "application/wasm")})
    largest = 0
    digest = hashlib.sha256()

    async def measure(info: PartInfo, chunks: AsyncIterator[bytes]) -> str:
        nonlocal largest
        async for chunk in chunks:
            largest = max(largest, len(chunk))
            digest.update(chunk)
        return digest.hexdigest()

    form = await read_multipart_form(_in_chunks(body, 1 << 20), content_type, binary_sink=measure)
    assert form.binaries["component"] == _sha256(payload)
    assert 0 < largest <= 1 << 20


async def test_legacy_template_form(shared_fixtures: Path, tmp_path: Path) -> None:
    wasm = (shared_fixtures / "golem" / "wasm" / "rust-echo.wasm").read_bytes()
    query = json.dumps({"projectId": QUERY["projectId"], "templateName": "echo"})
    content_type, body = _encode_form(
        {"query": query}, {"template": ("echo.wasm", wasm, "application/octet-stream")}
    )
    with TempFileSink(tmp_path) as sink:
        form = await read_multipart_form(
            _in_chunks(body, 999), content_type, binary_sink=sink, required=("query", "template")
        )
        assert _read(form.binaries["template"].path) == wasm
        assert form.texts["query"] == query


async def test_unknown_parts_are_skipped_and_partly_read_parts_are_drained() -> None:
    content_type, body = _encode_form(
        {"surprise": "x" * 100_000, "query": "{}"},
        {"component": ("c.wasm", b"A" * 50_000, "x/y"), "files": ("f.zip", b"Z" * 10, "x/y")},
    )
    names = []

    async def first_byte_only(info: PartInfo, chunks: AsyncIterator[bytes]) -> bytes:
        names.append(info.name)
        async for chunk in chunks:
            return chunk[:1]
        return b""

    form = await read_multipart_form(
        _in_chunks(body, 333), content_type, binary_sink=first_byte_only
    )
    assert names == ["component", "files"]
    assert form.binaries == {"component": b"A", "files": b"Z"}
    assert form.texts == {"query": "{}"}


async def test_iter_multipart_yields_part_headers() -> None:
    content_type, body = _encode_form(
        {"query": "{}"}, {"files": ("f.zip", b"PK", "application/zip")}
    )
    seen = []
    async for part in iter_multipart(_in_chunks(body, 5), content_type):
        seen.append((part.info, b"".join([c async for c in part])))
    assert seen == [
        (PartInfo("query", None, None), b"{}"),
        (PartInfo("files", "f.zip", "application/zip"), b"PK"),
    ]


async def _unused_sink(info: PartInfo, chunks: AsyncIterator[bytes]) -> None:
    async for _ in chunks:
        pass


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        (None, "no content type"),
        ("application/json", "Expected a multipart/form-data body, not 'application/json'"),
        ("multipart/form-data", "no boundary"),
        ("multipart/form-data; boundary=", "no boundary"),
        ("multipart/form-data; boundary=" + "b" * 71, "longer than 70"),
    ],
)
async def test_content_type_errors(content_type: str | None, message: str) -> None:
    with pytest.raises(UploadError, match=message):
        await read_multipart_form(_in_chunks(b"", 1), content_type, binary_sink=_unused_sink)


@dataclass
class _HttpBody:
    """Shaped like google.api.HttpBody, as Envoy's transcoder streams a request body."""

    content_type: str
    data: bytes


async def test_body_split_from_transcoded_messages(shared_fixtures: Path) -> None:
    wasm = (shared_fixtures / "golem" / "wasm" / "rust-echo.wasm").read_bytes()
    content_type, body = _encode_form({"query": "{}"}, {"component": ("e.wasm", wasm, "x/y")})

    async def messages() -> AsyncIterator[_HttpBody]:
        yield _HttpBody(content_type, body[:1000])
        for start in range(1000, len(body), 4096):
            yield _HttpBody("", body[start : start + 4096])
        yield _HttpBody("", b"")

    received_type, chunks = await split_body_stream(
        messages(), content_type_of=lambda m: m.content_type, data_of=lambda m: m.data
    )
    assert received_type == content_type

    async def keep(info: PartInfo, part: AsyncIterator[bytes]) -> bytes:
        return b"".join([chunk async for chunk in part])

    form = await read_multipart_form(chunks, received_type, binary_sink=keep)
    assert form.binaries["component"] == wasm


async def test_an_empty_message_stream_is_an_upload_error() -> None:
    async def nothing() -> AsyncIterator[_HttpBody]:
        return
        yield

    with pytest.raises(UploadError, match="no body"):
        await split_body_stream(
            nothing(), content_type_of=lambda m: m.content_type, data_of=lambda m: m.data
        )


async def test_nothing_after_the_closing_boundary_is_read() -> None:
    content_type, body = _encode_form({"query": "{}"}, {"files": ("f.zip", b"PK", "x/y")})
    read_after_end = False

    async def body_then_endless_epilogue() -> AsyncIterator[bytes]:
        nonlocal read_after_end
        yield body
        read_after_end = True
        raise AssertionError("the epilogue must not be read")

    form = await read_multipart_form(
        body_then_endless_epilogue(), content_type, binary_sink=_unused_sink
    )
    assert form.texts == {"query": "{}"}
    assert not read_after_end


def test_boundary_is_taken_from_a_quoted_parameter() -> None:
    assert multipart_boundary('multipart/form-data; charset=utf-8; boundary="a b"') == b"a b"


async def test_missing_required_part() -> None:
    content_type, body = _encode_form({"componentType": "Durable"}, {})
    with pytest.raises(UploadError, match=r"Missing required form field\(s\): query, component"):
        await read_multipart_form(
            _in_chunks(body, 10),
            content_type,
            binary_sink=_unused_sink,
            required=("query", "component"),
        )


async def test_text_part_too_large() -> None:
    content_type, body = _encode_form({"query": "q" * 70_000}, {})
    with pytest.raises(UploadError, match="The form field 'query' is larger than 65536 bytes"):
        await read_multipart_form(_in_chunks(body, 4096), content_type, binary_sink=_unused_sink)


async def test_text_part_must_be_utf8() -> None:
    boundary = "XyZ"
    body = b'--XyZ\r\nContent-Disposition: form-data; name="query"\r\n\r\n\xff\xfe\r\n--XyZ--\r\n'
    with pytest.raises(UploadError, match="not valid UTF-8"):
        await read_multipart_form(
            _in_chunks(body, 3),
            f"multipart/form-data; boundary={boundary}",
            binary_sink=_unused_sink,
        )


async def test_duplicate_part() -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="query"\r\n\r\n{}\r\n'
        b'--b\r\nContent-Disposition: form-data; name="query"\r\n\r\n{}\r\n--b--\r\n'
    )
    with pytest.raises(UploadError, match="'query' is given more than once"):
        await read_multipart_form(
            _in_chunks(body, 8), "multipart/form-data; boundary=b", binary_sink=_unused_sink
        )


async def test_too_many_parts() -> None:
    content_type, body = _encode_form({f"field{n}": "v" for n in range(40)}, {})
    with pytest.raises(UploadError, match="more than 32 parts"):
        await read_multipart_form(_in_chunks(body, 100), content_type, binary_sink=_unused_sink)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"this is not a multipart body at all", "Malformed multipart body"),
        (b'--b\r\nContent-Disposition: form-data; name="query"\r\n\r\n{}', "closing boundary"),
        (b"--b\r\nContent-Type: text/plain\r\n\r\n{}\r\n--b--\r\n", "no Content-Disposition"),
        (b"--b\r\nContent-Disposition: attachment\r\n\r\n{}\r\n--b--\r\n", "not form-data"),
        (b"--b\r\nContent-Disposition form-data\r\n\r\nx\r\n--b--\r\n", "Malformed multipart"),
        (b"", "closing boundary"),
        (b'--b\r\nContent-Disposition: form-data; name="\xff\xfe"\r\n\r\nx\r\n--b--\r\n',
         "name is not UTF-8 text"),
    ],
)
async def test_malformed_bodies(body: bytes, message: str) -> None:
    with pytest.raises(UploadError, match=message):
        await read_multipart_form(
            _in_chunks(body, 4), "multipart/form-data; boundary=b", binary_sink=_unused_sink
        )


async def test_a_body_that_stops_inside_a_binary_part_removes_its_temp_file(
    tmp_path: Path,
) -> None:
    content_type, body = _encode_form({}, {"component": ("c.wasm", b"W" * 300_000, "x/y")})
    with TempFileSink(tmp_path) as sink:
        with pytest.raises(UploadError, match="closing boundary"):
            await read_multipart_form(
                _in_chunks(body[:200_000], 4096), content_type, binary_sink=sink
            )
        assert _listing(tmp_path) == []


async def test_temp_file_sink_enforces_per_part_limits(tmp_path: Path) -> None:
    content_type, body = _encode_form(
        {}, {"files": ("f.zip", b"z" * 1000, "x/y"), "component": ("c.wasm", b"c" * 5000, "x/y")}
    )
    with TempFileSink(tmp_path, max_size=4096, max_sizes={"files": 2000}) as sink:
        with pytest.raises(PartTooLarge) as raised:
            await read_multipart_form(_in_chunks(body, 512), content_type, binary_sink=sink)
        assert (raised.value.part_name, raised.value.limit) == ("component", 4096)
        assert raised.value.message == (
            "The form field 'component' exceeds the size limit of 4096 bytes"
        )
        # The part that fitted is kept until cleanup; the one that did not left nothing.
        assert [p.name for p in sink.parts] == ["files"]
        assert len(_listing(tmp_path)) == 1
    assert _listing(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# Small form values


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "Durable"), ("", "Durable"), ("Durable", "Durable"), ('"Ephemeral"', "Ephemeral")],
)
def test_component_type(value: str | None, expected: str) -> None:
    assert parse_component_type(value) == expected


@pytest.mark.parametrize("value", ["durable", '"Durable', "Stateless", "1"])
def test_component_type_rejects_other_values(value: str) -> None:
    with pytest.raises(UploadError, match="componentType"):
        parse_component_type(value)


def test_files_permissions() -> None:
    text = json.dumps(
        {
            "values": [
                {"path": "/a/b.txt", "permissions": "read-write"},
                {"path": "/c", "permissions": "read-only"},
            ]
        }
    )
    assert parse_files_permissions(text) == {"/a/b.txt": "read-write", "/c": "read-only"}
    assert parse_files_permissions(None) == {}
    assert parse_files_permissions('{"values": []}') == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "expected"),
        ('{"values": {}}', "expected"),
        ('{"values": ["x"]}', "must be an object"),
        ('{"values": [{"path": "a.txt", "permissions": "read-only"}]}', "must be absolute"),
        (
            '{"values": [{"path": "/a/../b", "permissions": "read-only"}]}',
            "'..' path segments are not allowed",
        ),
        ('{"values": [{"path": "/a", "permissions": "execute"}]}', "'read-only' or 'read-write'"),
        (
            '{"values": [{"path": "/a", "permissions": "read-only"},'
            ' {"path": "/a", "permissions": "read-write"}]}',
            "more than once",
        ),
    ],
)
def test_files_permissions_errors(text: str, message: str) -> None:
    with pytest.raises(UploadError, match=message):
        parse_files_permissions(text)


# ----------------------------------------------------------------------------------------------
# Initial files archives


async def test_archive_lists_files_with_hash_keys_and_permissions(tmp_path: Path) -> None:
    entries = {
        "config/": b"",
        "config/app.json": b'{"debug": true}',
        "data/same-1.txt": b"same content",
        "data/same-2.txt": b"same content",
        "empty.txt": b"",
    }
    zip_path = tmp_path / "files.zip"
    zip_path.write_bytes(_zip_bytes(entries))
    permissions = json.dumps(
        {"values": [{"path": "/data/same-2.txt", "permissions": "read-write"}]}
    )
    with await InitialFilesArchive.read(zip_path, permissions) as archive:
        assert archive.files == [
            InitialFile(_sha256(b'{"debug": true}'), "/config/app.json", "read-only", 15),
            InitialFile(_sha256(b"same content"), "/data/same-1.txt", "read-only", 12),
            InitialFile(_sha256(b"same content"), "/data/same-2.txt", "read-write", 12),
            InitialFile(_sha256(b""), "/empty.txt", "read-only", 0),
        ]
        assert archive.files[0].to_json() == {
            "key": _sha256(b'{"debug": true}'),
            "path": "/config/app.json",
            "permissions": "read-only",
        }


async def test_archive_upload_stores_each_content_once_under_its_hash(tmp_path: Path) -> None:
    big = bytes(range(256)) * 20_000  # several read chunks once inflated
    source = io.BytesIO(_zip_bytes({"a.bin": big, "b/a-copy.bin": big, "c.txt": b"c"}))
    store = DiskBlobStore(tmp_path / "blobs")
    with await InitialFilesArchive.read(source, None) as archive:
        files = await archive.upload(store, key_prefix="initial-files/")
    assert [f.key for f in files] == [_sha256(big), _sha256(big), _sha256(b"c")]
    assert await read_bytes(store, f"initial-files/{_sha256(big)}", max_size=len(big)) == big
    assert await read_bytes(store, f"initial-files/{_sha256(b'c')}", max_size=1) == b"c"
    info = await store.stat(f"initial-files/{_sha256(big)}")
    assert info is not None and info.sha256 == _sha256(big)


async def test_archive_content_streams_in_chunks(tmp_path: Path) -> None:
    payload = b"0123456789" * 100_000
    with await InitialFilesArchive.read(io.BytesIO(_zip_bytes({"p": payload})), None) as archive:
        chunks = [chunk async for chunk in archive.content(archive.files[0], chunk_size=65_536)]
    assert max(len(c) for c in chunks) <= 65_536
    assert b"".join(chunks) == payload


async def test_stored_entries_are_read_like_deflated_ones() -> None:
    data = _zip_bytes({"x/y.txt": b"stored"}, compression=zipfile.ZIP_STORED)
    with await InitialFilesArchive.read(io.BytesIO(data), None) as archive:
        assert [(f.path, f.size) for f in archive.files] == [("/x/y.txt", 6)]


async def test_permissions_naming_a_missing_file_are_rejected() -> None:
    permissions = json.dumps({"values": [{"path": "/missing.txt", "permissions": "read-write"}]})
    with pytest.raises(UploadError, match=r"not in the archive: /missing\.txt"):
        await InitialFilesArchive.read(io.BytesIO(_zip_bytes({"here.txt": b"x"})), permissions)


async def test_permissions_naming_a_directory_are_rejected() -> None:
    permissions = json.dumps({"values": [{"path": "/dir", "permissions": "read-write"}]})
    with pytest.raises(UploadError, match="not in the archive: /dir"):
        await InitialFilesArchive.read(io.BytesIO(_zip_bytes({"dir/f": b"x"})), permissions)


@pytest.mark.parametrize(
    "data",
    [b"", b"definitely not a zip", _zip_bytes({"a.txt": b"x" * 1000})[:-30]],
    ids=["empty", "garbage", "truncated"],
)
async def test_malformed_zip(data: bytes) -> None:
    with pytest.raises(UploadError) as raised:
        await InitialFilesArchive.read(io.BytesIO(data), None)
    assert raised.value.message.startswith(MALFORMED_ARCHIVE)


async def test_corrupted_entry_data_is_a_malformed_archive() -> None:
    data = bytearray(_zip_bytes({"a.txt": b"hello world " * 100}))
    data[40] ^= 0xFF  # inside the deflated bytes of the only entry
    with pytest.raises(UploadError) as raised:
        await InitialFilesArchive.read(io.BytesIO(bytes(data)), None)
    assert raised.value.message.startswith(MALFORMED_ARCHIVE + "/a.txt cannot be read")


@pytest.mark.parametrize(
    "name", ["../evil.txt", "/etc/passwd", "a/../../b", "C:/windows.txt", "a\\b.txt", "a//b", "./a"]
)
async def test_unsafe_entry_names_are_rejected(name: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo(name), b"x")
    with pytest.raises(UploadError) as raised:
        await InitialFilesArchive.read(io.BytesIO(buffer.getvalue()), None)
    assert raised.value.message.startswith(MALFORMED_ARCHIVE + "Invalid archive entry")


async def test_symbolic_links_are_rejected() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(UploadError, match="/link is a symbolic link"):
        await InitialFilesArchive.read(io.BytesIO(buffer.getvalue()), None)


async def test_a_path_that_is_both_file_and_directory_is_rejected() -> None:
    data = _zip_bytes({"a": b"file", "a/b": b"nested"})
    with pytest.raises(UploadError, match="/a is both a file and a directory"):
        await InitialFilesArchive.read(io.BytesIO(data), None)


async def test_zip_bomb_over_the_declared_size_limit_is_rejected_before_inflating() -> None:
    bomb = _zip_bytes({"zeros-1": bytes(3_000_000), "zeros-2": bytes(3_000_000)})
    assert len(bomb) < 20_000
    limits = ArchiveLimits(max_total_size=5_000_000, max_ratio=10_000)
    with pytest.raises(ArchiveTooLarge) as raised:
        await InitialFilesArchive.read(io.BytesIO(bomb), None, limits=limits)
    assert raised.value.message == (
        "Initial files size limit exceeded (limit: 5000000 bytes unpacked)"
    )


async def test_an_entry_inflating_beyond_the_ratio_is_rejected_before_inflating() -> None:
    bomb = _zip_bytes({"small-zeros": bytes(1_000_000), "zeros": bytes(3_000_000)})
    with pytest.raises(UploadError) as raised:
        await InitialFilesArchive.read(io.BytesIO(bomb), None, limits=ArchiveLimits(max_ratio=50))
    assert raised.value.message.startswith(
        MALFORMED_ARCHIVE + "/zeros inflates more than 50 times ("
    )


@pytest.mark.parametrize("name", ["safe\0/../../etc/x", "a\x01b", "tab\there", "del\x7f"])
async def test_names_with_nul_or_control_characters_are_refused(name: str) -> None:
    """zipfile reads `safe\\0/../../etc/x` as `safe`: the stored name is what is checked."""
    placeholder = b"n" * len(name)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo(placeholder.decode()), b"x")
    data = buffer.getvalue().replace(placeholder, name.encode())
    with pytest.raises(UploadError) as raised:
        await InitialFilesArchive.read(io.BytesIO(data), None)
    assert "NUL and control characters are not allowed" in raised.value.message


def _understate_sizes(data: bytes, declared: int) -> bytes:
    """Rewrite every local and central header to claim `declared` uncompressed bytes."""
    patched = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = patched.find(signature)
        while start != -1:
            patched[start + offset : start + offset + 4] = struct.pack("<I", declared)
            start = patched.find(signature, start + 4)
    return bytes(patched)


async def test_zip_bomb_that_understates_its_size_is_rejected() -> None:
    liar = _understate_sizes(_zip_bytes({"zeros": bytes(2_000_000)}), declared=100)
    with pytest.raises(UploadError) as raised:
        await InitialFilesArchive.read(io.BytesIO(liar), None)
    assert raised.value.message.startswith(MALFORMED_ARCHIVE + "/zeros")


async def test_too_many_entries() -> None:
    data = _zip_bytes({f"f{n}": b"" for n in range(11)})
    with pytest.raises(UploadError, match="more than 10 entries"):
        await InitialFilesArchive.read(io.BytesIO(data), None, limits=ArchiveLimits(max_entries=10))


async def test_archive_with_only_directories_has_no_files() -> None:
    with await InitialFilesArchive.read(
        io.BytesIO(_zip_bytes({"a/": b"", "a/b/": b""})), None
    ) as a:
        assert a.files == []


def test_archive_source_must_be_seekable() -> None:
    class Unseekable(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

    with pytest.raises(ValueError, match="seekable"):
        InitialFilesArchive.load(cast(IO[bytes], Unseekable()), {})


async def test_update_form_to_stored_initial_files(shared_fixtures: Path, tmp_path: Path) -> None:
    """The intended flow of POST /v1/components/{id}/updates: spool, validate, store."""
    wasm = (shared_fixtures / "golem" / "wasm" / "wasmast_file-service.wasm").read_bytes()
    files_zip = _zip_bytes({"static/": b"", "static/index.html": b"<h1>hi</h1>", "rw.db": b"\0"})
    permissions = json.dumps({"values": [{"path": "/rw.db", "permissions": "read-write"}]})
    content_type, body = _encode_form(
        {"filesPermissions": permissions},
        {
            "component": ("file-service.wasm", wasm, "application/wasm"),
            "files": ("files.zip", files_zip, "application/zip"),
        },
    )
    store = DiskBlobStore(tmp_path / "blobs")
    spool = tmp_path / "spool"
    spool.mkdir()
    with TempFileSink(spool, max_sizes={"component": 50_000_000}) as sink:
        form = await read_multipart_form(
            _in_chunks(body, 1 << 20), content_type, binary_sink=sink, required=("component",)
        )
        component = form.binaries["component"]
        info = await store.put("components/c-1/1.wasm", component.chunks())
        assert (info.size, info.sha256) == (len(wasm), _sha256(wasm))
        archive_path = form.binaries["files"].path
        with await InitialFilesArchive.read(archive_path, form.text("filesPermissions")) as archive:
            files = await archive.upload(store, key_prefix="initial-files/")
    assert [f.to_json() for f in files] == [
        {"key": _sha256(b"<h1>hi</h1>"), "path": "/static/index.html", "permissions": "read-only"},
        {"key": _sha256(b"\0"), "path": "/rw.db", "permissions": "read-write"},
    ]
    stored = await read_bytes(store, f"initial-files/{_sha256(b'<h1>hi</h1>')}", max_size=100)
    assert stored == b"<h1>hi</h1>"
    assert _listing(spool) == []
