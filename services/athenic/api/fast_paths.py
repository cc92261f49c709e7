"""The hottest routes at the cost of their broker calls: ``POST /api/chat`` and ``GET /api/chat/response/{clientId}``.

Litestar's handler path (kwargs model, dependency resolution, signature model, response
object, header containers) cost as much per message as the JetStream round trip. This
middleware sits on the route itself (``@post(middleware=...)``), so routing, the OpenAPI
document and the request metrics stay Litestar's and ours; it serves a request whose headers
and body are plainly well formed (a JSON body under the size limit that decodes as ``ChatIn``,
each header once) with the same ``ChatService.accept`` the handler calls, and answers the same
bytes. Anything else (a body that does not decode, a content type other than JSON, a missing
or too large ``Content-Length``) is replayed, untouched, into Litestar's handler, so validation
errors are the ones Litestar and ``app.py`` word; an error of ``accept`` (401, 409, 429, 503...)
is raised inside Litestar's own exception middleware, so its problem details are the same too.
``GET /api/chat/response/{clientId}`` is served alike (``fast_response``): the path parameter
as Litestar's router parsed it, the caller's identity, ``ChatService.state``, the encoded state.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from litestar._asgi.utils import wrap_in_exception_handler
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from athenic.api.auth import Authenticator
from athenic.api.chat_service import ChatService
from athenic.api.identity import Identity
from athenic.api.ids import new_request_id
from athenic.api.schemas import ACCEPTED_TEXT, ChatAccepted, ChatIn

JSON: Final = b"application/json"
WANTED: Final = frozenset({b"x-client-id", b"x-on-busy", b"idempotency-key", b"authorization",
                           b"content-type", b"content-length"})
_decode_body = msgspec.json.Decoder(ChatIn).decode
_encode = msgspec.json.Encoder().encode


class Route:
    """What the fast paths need; set on ``app.state.fast_paths`` by ``create_app``."""

    def __init__(self, service: ChatService, authenticator: Authenticator, max_body_bytes: int) -> None:
        self.service = service
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes


def _headers(scope: Scope, limit: int) -> dict[bytes, bytes] | None:
    """The headers the route reads, or None when the request is not plainly well formed."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in WANTED:
            if name in found:
                return None  # a header given twice: Litestar decides what that means
            found[name] = value
    length = found.get(b"content-length")
    if length is None or not length.isdigit() or int(length) > limit:
        return None
    content_type = found.get(b"content-type")
    if content_type is not None and content_type.lower() != JSON:
        return None
    return found


async def _body(receive: Receive, consumed: list[ReceiveMessage]) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        consumed.append(message)
        if message["type"] != "http.request":
            return None  # a disconnect: Litestar's handler sees it as it would have
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(consumed: list[ReceiveMessage], receive: Receive) -> Receive:
    pending = list(consumed)

    async def replayed() -> ReceiveMessage:
        return pending.pop(0) if pending else await receive()

    return replayed


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _raise(exc: Exception) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    return app


async def _send_json(send: Send, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    # the headers Litestar's Response would send, in its order
    await send({"type": "http.response.start", "status": 200, "headers": [
        *headers, (b"content-type", JSON), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _identity(route: Route, scope: Scope, authorization: bytes | None) -> Identity:
    client = scope.get("client")
    return await route.authenticator.identify(_text(authorization), client[0] if client else None)


async def _accept(route: Route, scope: Scope, data: ChatIn, headers: dict[bytes, bytes], send: Send) -> None:
    identity = await _identity(route, scope, headers.get(b"authorization"))
    header_client_id = _text(headers.get(b"x-client-id"))
    accepted = await route.service.accept(
        data.message, header_client_id if header_client_id is not None else data.client_id, identity,
        new_request_id(), on_busy=_text(headers.get(b"x-on-busy")),
        idempotency_key=_text(headers.get(b"idempotency-key")))
    body = _encode(ChatAccepted(success=True, message=ACCEPTED_TEXT, client_id=accepted.client_id))
    await _send_json(send, body, (b"x-request-id", accepted.request_id.encode("latin-1")))


def fast_accept(app: ASGIApp) -> ASGIApp:
    """Route middleware of ``POST /api/chat``: serve the well-formed request, hand Litestar the rest."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        route: Route | None = getattr(scope["app"].state, "fast_paths", None)
        headers = _headers(scope, route.max_body_bytes) if route is not None else None
        if route is None or headers is None:
            await app(scope, receive, send)
            return
        consumed: list[ReceiveMessage] = []
        body = await _body(receive, consumed)
        data: Any = None
        if body is not None:
            try:
                data = _decode_body(body)
            except msgspec.DecodeError:  # also a ValidationError: Litestar words the 400
                data = None
        if data is None:
            await app(scope, _replay(consumed, receive), send)
            return
        try:
            await _accept(route, scope, data, headers, send)
        except Exception as exc:  # the problem details Litestar's exception handling makes of it
            await wrap_in_exception_handler(_raise(exc))(scope, receive, send)

    return middleware


def _authorization(scope: Scope) -> tuple[bool, bytes | None]:
    """The Authorization header; not plain (False) when it is given twice."""
    found: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if found is not None:
                return False, None
            found = value
    return True, found


def fast_response(app: ASGIApp) -> ASGIApp:
    """Route middleware of ``GET /api/chat/response/{clientId}``."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        route: Route | None = getattr(scope["app"].state, "fast_paths", None)
        plain, authorization = _authorization(scope)
        if route is None or not plain:
            await app(scope, receive, send)
            return
        try:
            identity = await _identity(route, scope, authorization)
            state = await route.service.state(scope["path_params"]["client_id"], identity)
        except Exception as exc:  # the problem details Litestar's exception handling makes of it
            await wrap_in_exception_handler(_raise(exc))(scope, receive, send)
            return
        await _send_json(send, _encode(state))

    return middleware
