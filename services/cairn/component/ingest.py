"""Turning an upload's request stream into spooled files and form values.

Through Envoy, each message of a client-streamed upload carries the next slice of the raw HTTP
body in `rest` (multipart/form-data, or the bare WASM for `PUT .../upload`). Native gRPC clients
send a typed header, then `component_chunk` messages, then optional `files_chunk` messages. Both
arrive here as an async iterator of messages and leave as temporary files (`TempFileSink`), so the
service never holds more than one ~1 MiB slice of an upload in memory while it arrives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from cairn.component.service import FilesUpload, WasmUpload, size_limit_exceeded
from cairn.component.uploads import (
    FormLimits,
    PartInfo,
    PartTooLarge,
    SpooledPart,
    TempFileSink,
    UploadError,
    parse_files_permissions,
    read_multipart_form,
)
from cairn.runtime import jsonbody
from cairn.runtime.errors import InvalidRequest, LimitExceeded, ServiceError

COMPONENT_PARTS = frozenset({"component", "template"})


def upload_error(err: UploadError) -> ServiceError:
    """A client mistake in the upload, as the API reports it."""
    if isinstance(err, PartTooLarge):
        if err.part_name in COMPONENT_PARTS:
            return size_limit_exceeded(err.limit)
        return LimitExceeded(
            f"Initial files archive size limit exceeded (limit: {err.limit} bytes)"
        )
    return InvalidRequest(err.message)


def wasm_of(part: SpooledPart) -> WasmUpload:
    return WasmUpload(part.path, part.size, part.sha256)


async def first_message(requests: AsyncIterator[Any]) -> Any:
    first = await anext(requests, None)
    if first is None:
        raise InvalidRequest("The upload is empty")
    return first


async def rest_body(first: Any, requests: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """The raw HTTP body of a transcoded upload, slice by slice."""
    if first.rest.data:
        yield first.rest.data
    async for message in requests:
        if message.rest.data:
            yield message.rest.data


@dataclass
class UploadForm:
    """What a create/update form carried, the binaries spooled to temporary files."""

    texts: Mapping[str, str]
    component: SpooledPart | None
    files: SpooledPart | None

    def files_upload(self, permissions_json: str | None) -> FilesUpload | None:
        """The `files` zip with `filesPermissions`, or None when neither was sent."""
        try:
            permissions = parse_files_permissions(permissions_json)
        except UploadError as err:
            raise upload_error(err) from None
        if self.files is None and not permissions:
            return None
        return FilesUpload(None if self.files is None else self.files.path, permissions)


async def read_rest_form(
    first: Any,
    requests: AsyncIterator[Any],
    sink: TempFileSink,
    *,
    text_parts: Collection[str],
    component_parts: Collection[str],
    limits: FormLimits,
) -> UploadForm:
    """Parse a transcoded multipart/form-data upload."""
    try:
        form = await read_multipart_form(
            rest_body(first, requests),
            first.rest.content_type or None,
            binary_sink=sink,
            text_parts=text_parts,
            binary_parts={*component_parts, "files"},
            max_text_part_size=limits.max_text_part_size,
            max_parts=limits.max_parts,
        )
    except UploadError as err:
        raise upload_error(err) from None
    components = [form.binaries[name] for name in component_parts if name in form.binaries]
    if len(components) > 1:
        raise InvalidRequest("The form carries more than one component binary")
    return UploadForm(form.texts, components[0] if components else None, form.binary("files"))


async def read_native_parts(
    requests: AsyncIterator[Any], sink: TempFileSink
) -> dict[str, SpooledPart]:
    """Spool the `component_chunk` and `files_chunk` runs that follow a native header."""
    pushed_back: list[Any] = []

    async def next_message() -> Any:
        return pushed_back.pop() if pushed_back else await anext(requests, None)

    async def run_of(kind: str) -> AsyncIterator[bytes]:
        while (message := await next_message()) is not None:
            if message.WhichOneof("part") != kind:
                pushed_back.append(message)
                return
            yield getattr(message, kind)

    names = {"component_chunk": "component", "files_chunk": "files"}
    parts: dict[str, SpooledPart] = {}
    while (message := await next_message()) is not None:
        kind = message.WhichOneof("part")
        if kind not in names:
            raise InvalidRequest("Only the first message may carry the header")
        if names[kind] in parts:
            raise InvalidRequest(f"The {kind} messages must be sent one after another")
        pushed_back.append(message)
        try:
            parts[names[kind]] = await sink(PartInfo(names[kind], None, None), run_of(kind))
        except UploadError as err:
            raise upload_error(err) from None
    return parts


async def read_raw_wasm(
    first: Any, requests: AsyncIterator[Any], sink: TempFileSink, *, rest: bool
) -> WasmUpload:
    """Spool a raw WASM body (REST `rest` slices, or native `chunk` fields)."""

    async def chunks() -> AsyncIterator[bytes]:
        message = first
        while message is not None:
            data = message.rest.data if rest else message.chunk
            if data:
                yield data
            message = await anext(requests, None)

    try:
        part = await sink(PartInfo("component", None, None), chunks())
    except UploadError as err:
        raise upload_error(err) from None
    return wasm_of(part)


@dataclass(frozen=True)
class ComponentQuery:
    """The create form's `query` JSON: {"projectId"?: uuid, "componentName": string}."""

    project_id: str | None
    name: str


def parse_query(raw: str | None, *, field: str = "query") -> ComponentQuery:
    if raw is None:
        raise InvalidRequest.for_field(field, f"Missing required form field(s): {field}")
    try:
        document = jsonbody.parse(raw)
    except jsonbody.InvalidJson as err:
        raise InvalidRequest.for_field(field, f"Invalid {field}: not JSON ({err})") from None
    if not isinstance(document, dict):
        raise InvalidRequest.for_field(field, f"Invalid {field}: expected a JSON object")
    name = document.get("componentName", document.get("templateName"))
    if not isinstance(name, str):
        raise InvalidRequest.for_field(
            f"{field}.componentName", f"Invalid {field}: componentName must be a string")
    project_id = document.get("projectId")
    if project_id is not None and not isinstance(project_id, str):
        raise InvalidRequest.for_field(
            f"{field}.projectId", f"Invalid {field}: projectId must be a string")
    return ComponentQuery(project_id, name)
