"""gRPC surface of the ledger: proto <-> domain, and the DAML JSON API's bodies for REST callers
(commands: create, exercise, create-and-exercise; reads; parties; packages).

REST calls arrive with their raw JSON body in the request's `rest` HttpBody (parsed here with
exact decimals) and get `{"status":200,"result":...}` envelopes back; native gRPC calls use the
typed fields, with LF values as `google.protobuf.Value`s in the LF JSON encoding.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import json_format, struct_pb2

from cairn.auth.ledger_jwt import (
    CLAIMS_HEADER,
    LedgerClaims,
    LedgerTokenPolicy,
    verify_claims,
)
from cairn.ledger.model import (
    ArchivedContract,
    CommandMeta,
    ContractRow,
    Deduplication,
    Party,
    StoredContract,
    TransactionEvent,
    event_json,
)
from cairn.ledger.service import Exercised, LedgerService
from cairn.ledger.store import format_offset
from cairn.ledger.streams import (
    Block,
    Created,
    LedgerStreams,
    Warnings,
    parse_offset,
)
from cairn.ledger.v1 import ledger_service_pb2 as pb
from cairn.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from cairn.runtime import jsonbody
from cairn.runtime.callers import bearer_secret
from cairn.runtime.errors import InvalidRequest, Unauthenticated
from cairn.runtime.rest import JSON_CONTENT_TYPE, dumps, is_rest, json_body

Context = grpc.aio.ServicerContext[Any, Any]
OCTET_STREAM = "application/octet-stream"
_QUERY_FIELDS = {"templateIds", "query", "readers"}


class LedgerCallers:
    """The caller's ledger claims: Envoy's signed claims header, else the caller's own JWT."""

    def __init__(self, policy: LedgerTokenPolicy, internal_secret: str) -> None:
        self._policy = policy
        self._secret = internal_secret

    async def resolve(self, context: Context) -> LedgerClaims:
        metadata = dict(context.invocation_metadata() or ())
        assertion = metadata.get(CLAIMS_HEADER)
        if isinstance(assertion, str):
            trusted = verify_claims(assertion, self._secret)
            if trusted is not None:
                return trusted
        authorization = metadata.get("authorization")
        token = bearer_secret(authorization) if isinstance(authorization, str) else ""
        return await self._policy.verify(token)


# ---------------------------------------------------------------------- JSON helpers
def parse_json(body: httpbody_pb2.HttpBody) -> Any:
    """The request's JSON, with numbers kept exact; 400 in the JSON API's words otherwise."""
    return jsonbody.parse_request(body.data, "JSON parser error: ", exact=True)


def json_object(body: httpbody_pb2.HttpBody, what: str) -> dict[str, Any]:
    data = parse_json(body)
    if not isinstance(data, dict):
        raise InvalidRequest(f"JsonReaderError. Cannot read JSON: <{_short(data)}>. Cause: "
                             f"spray.json.DeserializationException: {what} must be a JSON object")
    return data


def _short(data: Any) -> str:
    text = json.dumps(data, default=str, separators=(",", ":"))
    return text if len(text) <= 200 else text[:197] + "..."


def envelope(result: Any, warnings: dict[str, Any] | None = None) -> httpbody_pb2.HttpBody:
    body: dict[str, Any] = {"status": 200, "result": result}
    if warnings:
        body["warnings"] = warnings
    return json_body(body)


def created_envelope(contract: StoredContract, completion_offset: str) -> httpbody_pb2.HttpBody:
    """`envelope({**contract.to_json(), "completionOffset": ...})`, spliced from the contract's
    stored text instead of encoding it again."""
    data = ('{"status":200,"result":' + contract.to_text()[:-1] + ',"completionOffset":'
            + json.dumps(completion_offset) + "}}")
    return httpbody_pb2.HttpBody(content_type=JSON_CONTENT_TYPE, data=data.encode())


def rows_envelope(rows: list[ContractRow], warnings: dict[str, Any] | None = None
                  ) -> httpbody_pb2.HttpBody:
    """`envelope([contract JSON, ...])` spliced from the stored texts, nothing re-rendered."""
    head = b'{"status":200,"result":['
    texts = ",".join(row.json for row in rows).encode()
    tail = b"]" + (b',"warnings":' + dumps(warnings) if warnings else b"") + b"}"
    return httpbody_pb2.HttpBody(content_type=JSON_CONTENT_TYPE, data=head + texts + tail)


def row_envelope(row: ContractRow | None) -> httpbody_pb2.HttpBody:
    text = "null" if row is None else row.json
    return httpbody_pb2.HttpBody(content_type=JSON_CONTENT_TYPE,
                                 data=('{"status":200,"result":' + text + "}").encode())


def value_from_pb(value: struct_pb2.Value) -> Any:
    """A protobuf Value as LF JSON input: integral numbers as ints, others exact decimals."""
    return _exact_numbers(json_format.MessageToDict(value))


def _exact_numbers(data: Any) -> Any:
    if isinstance(data, float):
        return int(data) if data.is_integer() else Decimal(repr(data))
    if isinstance(data, list):
        return [_exact_numbers(item) for item in data]
    if isinstance(data, dict):
        return {k: _exact_numbers(v) for k, v in data.items()}
    return data


def value_to_pb(data: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    json_format.ParseDict(data, value)
    return value


def contract_to_pb(contract: StoredContract) -> pb.ActiveContract:
    message = pb.ActiveContract(
        contract_id=contract.contract_id,
        template_id=contract.template_id,
        payload=value_to_pb(contract.payload),
        signatories=contract.signatories,
        observers=contract.observers,
        agreement_text=contract.agreement_text,
    )
    if contract.has_key:
        message.key.CopyFrom(value_to_pb(contract.key))
    return message


def event_to_pb(event: TransactionEvent) -> pb.Event:
    if isinstance(event, ArchivedContract):
        return pb.Event(archived=pb.ArchivedContract(contract_id=event.contract_id,
                                                     template_id=event.template_id))
    return pb.Event(created=contract_to_pb(event))


def exercised_reply(exercised: Exercised, rest: bool) -> pb.ExerciseResponse:
    """The REST envelope `{"exerciseResult","events","completionOffset"}` or typed fields."""
    if rest:
        return pb.ExerciseResponse(rest=envelope({
            "exerciseResult": exercised.exercise_result,
            "events": [event_json(e) for e in exercised.events],
            "completionOffset": exercised.completion_offset,
        }))
    return pb.ExerciseResponse(exercise_result=value_to_pb(exercised.exercise_result),
                               events=[event_to_pb(e) for e in exercised.events],
                               completion_offset=exercised.completion_offset)


def _required(body: dict[str, Any], what: str, *names: str) -> None:
    missing = [name for name in names if name not in body]
    if missing:
        raise InvalidRequest(f"JsonReaderError. Cannot read JSON: <{_short(body)}>. Cause: "
                             f"spray.json.DeserializationException: {what} requires "
                             f"{', '.join(missing)}")


def _meta_error(meta: Any, cause: str) -> InvalidRequest:
    return InvalidRequest(f"JsonReaderError. Cannot read JSON: <{_short(meta)}>. Cause: "
                          f"spray.json.DeserializationException: {cause}")


def _parties(meta: dict[str, Any], name: str, non_empty: bool) -> tuple[str, ...] | None:
    value = meta.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise _meta_error(meta, f"{name} must be a JSON array of party identifiers")
    if non_empty and not value:
        raise _meta_error(meta, f"{name} must be a JSON array with at least 1 element")
    return tuple(value)


def _offset_text(raw: object) -> str:
    """A ledger offset given in a command, as the ledger writes offsets (20 digits)."""
    return format_offset(parse_offset(raw))


def parse_meta(body: dict[str, Any]) -> CommandMeta:
    """A JSON command's `meta`: `commandId`, `actAs`, `readAs`, `submissionId`,
    `deduplicationPeriod` (`{"type":"Duration","durationInMillis":N}` or
    `{"type":"Offset","offset":"<offset>"}`), as the JSON API of SDK 2.x reads them."""
    meta = body.get("meta")
    if meta is None:
        return CommandMeta()
    if not isinstance(meta, dict):
        raise _meta_error(meta, "meta must be a JSON object")
    period = meta.get("deduplicationPeriod")
    deduplication = None
    if period is not None:
        kind = period.get("type") if isinstance(period, dict) else None
        if kind == "Duration":
            millis = period.get("durationInMillis")
            if (not isinstance(millis, int) or isinstance(millis, bool) or millis < 0
                    or millis >= 1 << 63):
                raise _meta_error(period, "durationInMillis must be a non-negative JSON number "
                                          "of milliseconds")
            deduplication = Deduplication(window_ms=millis)
        elif kind == "Offset":
            deduplication = Deduplication(after_offset=_offset_text(period.get("offset")))
        else:
            raise _meta_error(period, "deduplicationPeriod must be {\"type\": \"Duration\", "
                                      "\"durationInMillis\": ...} or {\"type\": \"Offset\", "
                                      "\"offset\": ...}")
    submission_id = _optional_text(meta, "submissionId")
    if submission_id is not None and not 0 < len(submission_id) <= 255:
        raise _meta_error(meta, "submissionId must be 1 to 255 characters")
    return CommandMeta(
        command_id=_optional_text(meta, "commandId"),
        act_as=_parties(meta, "actAs", non_empty=True),
        read_as=_parties(meta, "readAs", non_empty=False),
        submission_id=submission_id,
        deduplication=deduplication,
    )


def meta_from_pb(meta: pb.CommandMeta) -> CommandMeta:
    period = meta.WhichOneof("deduplication_period")
    deduplication = None
    if period == "deduplication_duration_ms":
        if meta.deduplication_duration_ms < 0:
            raise InvalidRequest.for_field("meta.deduplicationDurationMs",
                                           "deduplication_duration_ms must not be negative")
        deduplication = Deduplication(window_ms=meta.deduplication_duration_ms)
    elif period == "deduplication_offset":
        deduplication = Deduplication(after_offset=_offset_text(meta.deduplication_offset))
    return CommandMeta(
        command_id=meta.command_id or None,
        act_as=tuple(meta.act_as) or None,
        read_as=tuple(meta.read_as) or None,
        submission_id=meta.submission_id or None,
        deduplication=deduplication,
    )


def _typed_argument(request: pb.ExerciseRequest | pb.CreateAndExerciseRequest) -> Any:
    if not request.HasField("argument"):
        raise InvalidRequest.for_field(
            "argument", "argument is required: the choice argument in the DAML-LF JSON "
                        "encoding ({} for a choice without parameters)")
    return value_from_pb(request.argument)


def party_to_pb(party: Party) -> pb.PartyDetails:
    message = pb.PartyDetails(identifier=party.identifier, is_local=party.is_local)
    if party.display_name is not None:
        message.display_name = party.display_name
    return message


def _optional_text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"JsonReaderError. Cannot read JSON: <{_short(data)}>. Cause: "
                             f"spray.json.DeserializationException: {name} must be a string")
    return value


def stream_response(block: Block) -> pb.StreamResponse:
    if isinstance(block, Warnings):
        return pb.StreamResponse(unknown_template_ids=block.unknown_template_ids)
    events = []
    for event in block.events:
        if isinstance(event, Created):
            events.append(pb.StreamEvent(created=contract_to_pb(event.row.contract()),
                                         matched_queries=event.matched_queries or ()))
        else:
            events.append(pb.StreamEvent(archived=pb.ArchivedContract(
                contract_id=event.contract_id, template_id=event.template_id)))
    response = pb.StreamResponse(events=events, snapshot=not block.has_offset)
    if block.offset is not None:
        response.offset = block.offset
    return response


class LedgerApi(pb_grpc.LedgerServiceServicer):
    def __init__(self, ledger: LedgerService, callers: LedgerCallers,
                 streams: LedgerStreams) -> None:
        self._ledger = ledger
        self._callers = callers
        self._streams = streams

    # ------------------------------------------------------------------ commands
    async def Create(self, request: pb.CreateRequest, context: Context) -> pb.CreateResponse:
        claims = await self._callers.resolve(context)
        if is_rest(context):
            body = json_object(request.rest, "a create command")
            if "templateId" not in body or "payload" not in body:
                raise InvalidRequest(f"JsonReaderError. Cannot read JSON: <{_short(body)}>. "
                                     f"Cause: spray.json.DeserializationException: a create "
                                     f"command requires templateId and payload")
            created = await self._ledger.create(claims, body["templateId"], body["payload"],
                                                parse_meta(body))
            return pb.CreateResponse(rest=created_envelope(created.contract,
                                                           created.completion_offset))
        created = await self._ledger.create(claims, request.template_id,
                                            value_from_pb(request.payload),
                                            meta_from_pb(request.meta))
        return pb.CreateResponse(contract=contract_to_pb(created.contract),
                                 completion_offset=created.completion_offset)

    async def Exercise(self, request: pb.ExerciseRequest,
                       context: Context) -> pb.ExerciseResponse:
        claims = await self._callers.resolve(context)
        if is_rest(context):
            body = json_object(request.rest, "an exercise command")
            _required(body, "an exercise command", "templateId", "choice", "argument")
            contract_id: object = body.get("contractId")
            has_key = "key" in body
            key = body.get("key")
            template: object = body["templateId"]
            choice: object = body["choice"]
            argument: Any = body["argument"]
            choice_interface: object = body.get("choiceInterfaceId")
            meta = parse_meta(body)
        else:
            contract_id = request.contract_id or None
            has_key = request.HasField("key")
            key = value_from_pb(request.key) if has_key else None
            template, choice = request.template_id, request.choice
            argument = _typed_argument(request)
            choice_interface = request.choice_interface_id or None
            meta = meta_from_pb(request.meta)
        if has_key == (contract_id is not None):
            raise InvalidRequest("JsonReaderError. Cannot read JSON: exercise command. Cause: "
                                 "spray.json.DeserializationException: ContractLocator "
                                 "requires either key or contractId field")
        exercised = await self._ledger.exercise(
            claims, template, choice, argument, contract_id=contract_id, by_key=has_key,
            key=key, choice_interface=choice_interface, meta=meta)
        return exercised_reply(exercised, is_rest(context))

    async def CreateAndExercise(self, request: pb.CreateAndExerciseRequest,
                                context: Context) -> pb.ExerciseResponse:
        claims = await self._callers.resolve(context)
        if is_rest(context):
            body = json_object(request.rest, "a create-and-exercise command")
            _required(body, "a create-and-exercise command",
                      "templateId", "payload", "choice", "argument")
            exercised = await self._ledger.create_and_exercise(
                claims, body["templateId"], body["payload"], body["choice"], body["argument"],
                parse_meta(body))
            return exercised_reply(exercised, True)
        if not request.HasField("payload"):
            raise InvalidRequest.for_field(
                "payload", "payload is required: the contract argument in the DAML-LF JSON "
                           "encoding")
        exercised = await self._ledger.create_and_exercise(
            claims, request.template_id, value_from_pb(request.payload), request.choice,
            _typed_argument(request), meta_from_pb(request.meta))
        return exercised_reply(exercised, False)

    # ------------------------------------------------------------------ reads
    async def Fetch(self, request: pb.FetchRequest, context: Context) -> pb.FetchResponse:
        claims = await self._callers.resolve(context)
        if is_rest(context):
            body = json_object(request.rest, "a fetch request")
            contract_id: object = body.get("contractId")
            template: object = body.get("templateId")
            has_key = "key" in body
            key = body.get("key")
            readers = body.get("readers")
        else:
            contract_id = request.contract_id or None
            template = request.template_id or None
            has_key = request.HasField("key")
            key = value_from_pb(request.key) if has_key else None
            readers = list(request.readers) or None
        claims = self._restrict(claims, readers)
        if has_key == (contract_id is not None):
            raise InvalidRequest("JsonReaderError. Cannot read JSON: fetch request. Cause: "
                                 "spray.json.DeserializationException: ContractLocator "
                                 "requires either key or contractId field")
        if has_key:
            if template is None:
                raise InvalidRequest.for_field("templateId",
                                               "A fetch by key requires templateId")
            found = await self._ledger.fetch_by_key(claims, template, key)
        else:
            found = await self._ledger.fetch_by_id(claims, contract_id, template)
        if is_rest(context):
            return pb.FetchResponse(rest=row_envelope(found))
        response = pb.FetchResponse()
        if found is not None:
            response.contract.CopyFrom(contract_to_pb(found.contract()))
        return response

    @staticmethod
    def _restrict(claims: LedgerClaims, readers: Any) -> LedgerClaims:
        """Narrow the reading parties to `readers`, which the token must allow."""
        if readers is None:
            return claims
        if not isinstance(readers, list) or not all(isinstance(r, str) for r in readers):
            raise InvalidRequest.for_field(
                "readers", "readers must be a JSON array of party identifiers")
        outside = sorted(set(readers) - claims.readers)
        if outside:
            raise Unauthenticated(
                f"Queried parties not allowed by given JWT token: {', '.join(outside)}")
        return dataclasses.replace(claims, act_as=(), read_as=tuple(readers))

    async def Query(self, request: pb.QueryRequest, context: Context) -> pb.QueryResponse:
        claims = await self._callers.resolve(context)
        if is_rest(context):
            body = json_object(request.rest, "a query")
            extra = sorted(set(body) - _QUERY_FIELDS)
            if extra:
                raise InvalidRequest(f"JsonReaderError. Cannot read JSON: <{_short(body)}>. "
                                     f"Cause: spray.json.DeserializationException: unsupported "
                                     f"query fields {extra}; likely should be within 'query' "
                                     f"subobject")
            templates = body.get("templateIds")
            if not isinstance(templates, list):
                raise InvalidRequest(f"JsonReaderError. Cannot read JSON: <{_short(body)}>. "
                                     f"Cause: spray.json.DeserializationException: templateIds "
                                     f"must be a JSON array")
            query = body.get("query")
            claims = self._restrict(claims, body.get("readers"))
        else:
            templates = list(request.template_ids)
            query = (_exact_numbers(json_format.MessageToDict(request.query))
                     if request.HasField("query") else None)
            claims = self._restrict(claims, list(request.readers) or None)
        if query is not None and not isinstance(query, dict):
            raise InvalidRequest("query must be a JSON object")
        result = await self._ledger.query(claims, templates, query)
        if is_rest(context):
            warnings = ({"unknownTemplateIds": result.unknown_template_ids}
                        if result.unknown_template_ids else None)
            return pb.QueryResponse(rest=rows_envelope(result.contracts, warnings))
        return pb.QueryResponse(contracts=[contract_to_pb(c.contract()) for c in result.contracts],
                                unknown_template_ids=result.unknown_template_ids)

    async def QueryAll(self, request: pb.QueryAllRequest, context: Context) -> pb.QueryResponse:
        contracts = await self._ledger.query_all(await self._callers.resolve(context))
        if is_rest(context):
            return pb.QueryResponse(rest=rows_envelope(contracts))
        return pb.QueryResponse(contracts=[contract_to_pb(c.contract()) for c in contracts])

    # ------------------------------------------------------------------ parties
    async def ListParties(self, request: pb.ListPartiesRequest,
                          context: Context) -> pb.PartiesResponse:
        await self._callers.resolve(context)
        parties = await self._ledger.parties()
        if is_rest(context):
            return pb.PartiesResponse(rest=envelope([p.to_json() for p in parties]))
        return pb.PartiesResponse(parties=[party_to_pb(p) for p in parties])

    async def GetParties(self, request: pb.GetPartiesRequest,
                         context: Context) -> pb.PartiesResponse:
        await self._callers.resolve(context)
        if is_rest(context):
            identifiers = parse_json(request.rest)
            if not isinstance(identifiers, list):
                raise InvalidRequest(f"JsonReaderError. Cannot read JSON: <{_short(identifiers)}>"
                                     f". Cause: spray.json.DeserializationException: must be a "
                                     f"JSON array")
        else:
            identifiers = list(request.identifiers)
        found, unknown = await self._ledger.parties_by_id(identifiers)
        if is_rest(context):
            warnings = {"unknownParties": unknown} if unknown else None
            return pb.PartiesResponse(rest=envelope([p.to_json() for p in found], warnings))
        return pb.PartiesResponse(parties=[party_to_pb(p) for p in found],
                                  unknown_parties=unknown)

    async def AllocateParty(self, request: pb.AllocatePartyRequest,
                            context: Context) -> pb.AllocatePartyResponse:
        await self._callers.resolve(context)
        if is_rest(context):
            body = json_object(request.rest, "an allocate party request")
            hint = _optional_text(body, "identifierHint")
            display_name = _optional_text(body, "displayName")
        else:
            hint = request.identifier_hint if request.HasField("identifier_hint") else None
            display_name = request.display_name if request.HasField("display_name") else None
        party = await self._ledger.allocate_party(hint, display_name)
        if is_rest(context):
            return pb.AllocatePartyResponse(rest=envelope(party.to_json()))
        return pb.AllocatePartyResponse(party=party_to_pb(party))

    # ------------------------------------------------------------------ packages
    async def UploadDarFile(self, request: pb.UploadDarFileRequest,
                            context: Context) -> pb.UploadDarFileResponse:
        await self._callers.resolve(context)
        rest = is_rest(context)
        dar = await self._ledger.upload_dar(request.rest.data if rest else request.dar_file)
        if rest:
            return pb.UploadDarFileResponse(rest=envelope(1))
        return pb.UploadDarFileResponse(main_package_id=dar.main_package_id,
                                        package_ids=sorted(dar.packages))

    async def ListPackages(self, request: pb.ListPackagesRequest,
                           context: Context) -> pb.ListPackagesResponse:
        await self._callers.resolve(context)
        ids = await self._ledger.package_ids()
        if is_rest(context):
            return pb.ListPackagesResponse(rest=envelope(ids))
        return pb.ListPackagesResponse(package_ids=ids)

    async def GetPackage(self, request: pb.GetPackageRequest,
                         context: Context) -> AsyncIterator[httpbody_pb2.HttpBody]:
        await self._callers.resolve(context)
        reader = await self._ledger.open_dalf(request.package_id)
        async with reader:
            async for chunk in reader:
                yield httpbody_pb2.HttpBody(content_type=OCTET_STREAM, data=chunk)

    # ------------------------------------------------------------------ streams
    # The requests become the JSON API's request objects, so both transports share one parser
    # (and its errors).
    async def StreamQuery(self, request: pb.StreamQueryRequest,
                          context: Context) -> AsyncIterator[pb.StreamResponse]:
        claims = await self._callers.resolve(context)
        queries: list[dict[str, Any]] = []
        for query in request.queries:
            element: dict[str, Any] = {"templateIds": list(query.template_ids)}
            if query.HasField("query"):
                element["query"] = _exact_numbers(json_format.MessageToDict(query.query))
            if query.HasField("offset"):
                element["offset"] = query.offset
            queries.append(element)
        offset = parse_offset(request.offset) if request.HasField("offset") else None
        stream = await self._streams.compiler.query(claims, queries, offset)
        async for block in self._streams.run(stream):
            yield stream_response(block)

    async def StreamFetch(self, request: pb.StreamFetchRequest,
                          context: Context) -> AsyncIterator[pb.StreamResponse]:
        claims = await self._callers.resolve(context)
        keys: list[dict[str, Any]] = []
        for key in request.keys:
            element: dict[str, Any] = {"templateId": key.template_id,
                                       "key": value_from_pb(key.key)}
            if key.HasField("contract_id_at_offset"):
                element["contractIdAtOffset"] = key.contract_id_at_offset or None
            keys.append(element)
        offset = parse_offset(request.offset) if request.HasField("offset") else None
        stream = await self._streams.compiler.fetch(claims, keys, offset)
        async for block in self._streams.run(stream):
            yield stream_response(block)
