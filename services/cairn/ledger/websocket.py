"""The DAML JSON API's WebSocket endpoints, `/v1/stream/query` and `/v1/stream/fetch`.

A plain HTTP/1.1 WebSocket server (the `websockets` package) that runs inside the ledger process on
its own port (`CAIRN_LEDGER_WS_PORT`); Envoy routes `/v1/stream/` to it with the transcoder, the Lua
shaper and ext_authz switched off, so the stream authenticates itself: the client must offer the
subprotocols `daml.ws.auth` and `jwt.token.<JWT>`, the JWT is checked with the ledger's
`LedgerTokenPolicy`, and a missing or bad token refuses the upgrade with HTTP 401 and the JSON API's
error body.

The client sends one request, optionally preceded by `{"offset": "<offset>"}`; the stream itself
(snapshot, replay from the log, live marker, live blocks, ticks) is `cairn.ledger.streams`. A bad
request, or a second one, gets one `{"status":400,"errors":[…]}` frame and a normal close; a
stream the server cannot continue gets a 503 frame and close 1011, and the client may resume it
from the last offset it received.
"""

from __future__ import annotations

import asyncio
import contextlib
from http import HTTPStatus

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from cairn.auth.ledger_jwt import LedgerClaims, LedgerTokenPolicy
from cairn.ledger.service import require_readers
from cairn.ledger.streams import (
    MULTIPLE_REQUESTS,
    CompiledStream,
    LedgerStreams,
    StreamSettings,
    block_json,
    is_offset_message,
    parse_message,
    parse_offset,
)
from cairn.runtime.errors import (
    ErrorStyle,
    InvalidRequest,
    NotFound,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from cairn.runtime.redis import is_unavailable as redis_unavailable

QUERY_PATH = "/v1/stream/query"
FETCH_PATH = "/v1/stream/fetch"
AUTH_SUBPROTOCOL = "daml.ws.auth"
TOKEN_PREFIX = "jwt.token."
MISSING_SUBPROTOCOL = (f"Missing required {TOKEN_PREFIX}[token] or {AUTH_SUBPROTOCOL} "
                       f"subprotocol")
CLOSE_NORMAL, CLOSE_INTERNAL = 1000, 1011
PING_SECONDS = 20.0

log = structlog.get_logger()


def error_frame(err: ServiceError) -> str:
    """`{"status":N,"errors":[...]}`, as the JSON API's synchronous endpoints answer."""
    return err.rest_body(ErrorStyle.LEDGER)


class StreamServer:
    """The WebSocket endpoint: authenticates upgrades and runs one stream per connection."""

    def __init__(self, streams: LedgerStreams, policy: LedgerTokenPolicy,
                 settings: StreamSettings) -> None:
        self._streams = streams
        self._policy = policy
        self._settings = settings
        self._server: Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the stream server is not started"
        sockets = list(self._server.sockets)
        return int(sockets[0].getsockname()[1])

    async def start(self, host: str) -> None:
        self._server = await serve(
            self._handle, host, self._settings.port,
            process_request=self._check_upgrade,
            subprotocols=[AUTH_SUBPROTOCOL],  # type: ignore[list-item]
            # Contract payloads can be large; the JSON API's own frames have no fixed cap.
            max_size=64 << 20,
            # Protocol pings besides the JSON offset ticks: they find dead clients, and they keep
            # a stream that has no offset to tick yet (empty ledger) from looking idle to Envoy.
            ping_interval=PING_SECONDS,
            ping_timeout=PING_SECONDS,
        )

    async def close(self) -> None:
        """Stop accepting, close open streams with 1001 (going away) and wait for them."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ------------------------------------------------------------------ the upgrade
    async def _claims(self, request: Request) -> LedgerClaims:
        offered = [p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol")
                   for p in value.split(",")]
        tokens = [p[len(TOKEN_PREFIX):] for p in offered if p.startswith(TOKEN_PREFIX)]
        if AUTH_SUBPROTOCOL not in offered or not tokens or not tokens[0]:
            raise Unauthenticated(MISSING_SUBPROTOCOL)
        claims = await self._policy.verify(tokens[0])
        require_readers(claims)
        return claims

    async def _check_upgrade(self, connection: ServerConnection, request: Request
                             ) -> Response | None:
        path = request.path.split("?", 1)[0]
        try:
            if path not in (QUERY_PATH, FETCH_PATH):
                raise NotFound(f"GET, uri: {request.path}")
            await self._claims(request)
        except ServiceError as err:
            response = connection.respond(HTTPStatus(err.http_status), error_frame(err))
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        return None

    # ------------------------------------------------------------------ one stream
    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        path = request.path.split("?", 1)[0]
        logger = log.bind(stream=path, request_id=request.headers.get("x-request-id", ""))
        try:
            claims = await self._claims(request)
            stream = await self._read_request(ws, path, claims)
        except ServiceError as err:
            await _send_and_close(ws, error_frame(err), CLOSE_NORMAL)
            return
        except ConnectionClosed:
            return
        logger.info("stream_opened", unknown_template_ids=stream.unknown_template_ids)
        pump = asyncio.create_task(self._pump(ws, stream))
        guard = asyncio.create_task(_refuse_further_requests(ws))
        done, pending = await asyncio.wait({pump, guard}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            failure = task.exception()
            if failure is not None and not isinstance(failure, ConnectionClosed):
                logger.error("stream_failed", error=repr(failure))
                await _send_and_close(ws, error_frame(ServiceError()), CLOSE_INTERNAL)
        logger.info("stream_closed")

    async def _read_request(self, ws: ServerConnection, path: str,
                            claims: LedgerClaims) -> CompiledStream:
        data = parse_message(await ws.recv())
        default_offset = None
        if is_offset_message(data):
            default_offset = parse_offset(data["offset"])
            data = parse_message(await ws.recv())
            if is_offset_message(data):
                raise InvalidRequest("offset must be specified as a leading, separate object "
                                     "message")
        compiler = self._streams.compiler
        if path == QUERY_PATH:
            return await compiler.query(claims, data, default_offset)
        return await compiler.fetch(claims, data, default_offset)

    async def _pump(self, ws: ServerConnection, stream: CompiledStream) -> None:
        try:
            async for block in self._streams.run(stream):
                await ws.send(block_json(block))
        except Unavailable as err:  # the client may resume from the last offset it received
            await _send_and_close(ws, error_frame(err), CLOSE_INTERNAL)
        except ServiceError as err:
            await _send_and_close(ws, error_frame(err), CLOSE_NORMAL)
        except Exception as err:
            if not redis_unavailable(err):
                raise
            unavailable = Unavailable(f"The ledger store is unavailable ({err}); retry")
            await _send_and_close(ws, error_frame(unavailable), CLOSE_INTERNAL)


async def _refuse_further_requests(ws: ServerConnection) -> None:
    """A stream serves one request: any later message gets the JSON API's error, then close."""
    async for _ in ws:
        await _send_and_close(ws, error_frame(InvalidRequest(MULTIPLE_REQUESTS)), CLOSE_NORMAL)
        return


async def _send_and_close(ws: ServerConnection, frame: str, code: int) -> None:
    with contextlib.suppress(ConnectionClosed):
        await ws.send(frame)
        await ws.close(code)
