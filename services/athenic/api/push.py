"""Pushed updates: ``GET /api/chat/ws/{clientId}`` (WebSocket) and ``/api/chat/stream/{clientId}`` (SSE).

Both send the same JSON objects, each with a ``type``: ``response`` (the fields of the GET)
at once and on every change of the record, and the progress events ``status``, ``stdout``,
``stderr`` and ``delta`` (the answer's text as it is written) while work runs, passed on by
type as the orchestrator published them. A client that reconnects with the revision it saw last
(``?after=``, or SSE's ``Last-Event-ID``) gets the record at once if it is newer, so it misses
no final answer. The frames and close codes are documented in docs/api.md (WebSocket routes are
not in the OpenAPI document).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated, Any, Final

import msgspec
from litestar import Controller, WebSocket, get, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from athenic.api import problems
from athenic.api.auth import Authenticator
from athenic.api.chat_service import ChatService, check_client_id
from athenic.api.errors import ApiError, BrokerUnavailable, InvalidRequest, NotFound, Unauthorized
from athenic.api.identity import Identity
from athenic.api.realtime import Feeds, Lagging, Listener, Progress, RecordChanged, Restarting
from athenic.api.settings import ApiSettings
from athenic.shared.logging import bind_request, get_logger
from athenic.shared.messages import ChatState, encode

log = get_logger(__name__)

ACCEPTED_TEXT: Final = "Chat message received and is being processed"

# WebSocket close codes (4000 + the HTTP status they stand for, as docs/api.md lists them).
CLOSE_BAD_REQUEST: Final = 4400
CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_NOT_FOUND: Final = 4404
CLOSE_TRY_AGAIN: Final = 1013  # broker unavailable, or the client read too slowly
CLOSE_RESTARTING: Final = 1012  # the api is shutting down: reconnect (to another replica)
CLOSE_CODES: Final = {400: CLOSE_BAD_REQUEST, 401: CLOSE_UNAUTHORIZED, 404: CLOSE_NOT_FOUND, 503: CLOSE_TRY_AGAIN}


@dataclass(frozen=True, slots=True)
class Frame:
    type: str
    data: bytes  # a JSON object whose first member is "type"
    revision: int | None = None  # set on response frames: the SSE id


class Closed(Exception):
    """The session ends: ``code`` for the WebSocket, ``reason`` for both."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def response_frame(state: ChatState) -> Frame:
    body = encode(state)
    return Frame("response", b'{"type":"response",' + body[1:], state.revision)


def json_frame(kind: str, **fields: Any) -> bytes:
    return encode({"type": kind, **fields})


def problem_frame(exc: ApiError) -> bytes:
    extra: dict[str, Any] = {}
    if exc.headers and "Retry-After" in exc.headers:
        extra["retryAfter"] = int(exc.headers["Retry-After"])
    return json_frame("error", status=exc.status, title=exc.title, detail=exc.detail, **extra)


class PushSession:
    """One client's view of one conversation: the current state, then every update it may see."""

    def __init__(self, service: ChatService, feeds: Feeds, client_id: str, who: Identity,
                 after: int | None, may_start: bool = False) -> None:
        self.service = service
        # a socket may follow a conversation that has no message yet, and start it
        self.may_start = may_start
        # Progress events carry no owner: they are passed on only once this client is known to
        # own the conversation (its state was readable, its own message was accepted, or a record
        # of it arrived), so a socket waiting on an unused id never sees another user's output.
        self.verified = who.user is None
        self.feeds = feeds
        self.client_id = client_id
        self.who = who
        self.after = after
        self.sent_revision = 0
        self._listening: AbstractAsyncContextManager[Listener] | None = None
        self._listener: Listener | None = None

    async def open(self) -> Frame | None:
        """Start listening, then check access (404/400/503 as ``ApiError``); the first frame if due.

        Listening starts before the state is read, so a change in between is not lost (the
        revision check drops what the state already holds).
        """
        check_client_id(self.client_id, "clientId")
        self.service.check_connected()  # not a subscription that waits for a broker that is away
        self._listening = self.feeds.listen(self.client_id)
        try:
            self._listener = await self._listening.__aenter__()
        except Exception as exc:
            self._listening = None
            log.warning("cannot follow the conversation", client_id=self.client_id,
                        error=str(exc) or type(exc).__name__)
            raise BrokerUnavailable("the message broker is unavailable; retry later",
                                    headers={"Retry-After": "1"}) from exc
        try:
            state = await self.service.state(self.client_id, self.who)
        except NotFound:
            if not self.may_start or not await self.service.ownership.may_follow(self.client_id, self.who):
                raise
            return None  # nothing yet: the first message's frames follow
        self.verified = True
        revision = state.revision or 0
        self.sent_revision = revision
        # A reconnecting client that already has this record (and no newer message waits) gets no repeat.
        if self.after is not None and state.status != "pending" and revision and revision <= self.after:
            return None
        return response_frame(state)

    async def next(self) -> Frame:
        assert self._listener is not None
        while True:
            update = await self._listener.queue.get()
            if isinstance(update, Progress):
                if not self.verified:
                    continue
                return Frame(update.type, update.payload)
            if isinstance(update, Lagging):
                raise Closed(CLOSE_TRY_AGAIN, "too slow to read updates; reconnect with ?after=<revision>")
            if isinstance(update, Restarting):
                raise Closed(CLOSE_RESTARTING, "the server is restarting; reconnect with ?after=<revision>")
            if isinstance(update, RecordChanged):
                if update.revision <= self.sent_revision or update.record is None:
                    continue
                if not self.who.may_access(update.record.owner):
                    raise Closed(CLOSE_NOT_FOUND, f"no conversation {self.client_id}")
                self.verified = True
                self.sent_revision = update.revision
                return response_frame(ChatState.of_record(update.record, self.client_id, update.revision))

    async def close(self) -> None:
        if self._listening is not None:
            listening, self._listening = self._listening, None
            await listening.__aexit__(None, None, None)


def parse_after(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise InvalidRequest("after must be a KV revision (a non-negative integer)")
    return int(value)


class SocketConversation:
    """One WebSocket: authenticate, then push frames and take chat frames until either side ends."""

    def __init__(self, socket: WebSocket[Any, Any, Any], client_id: str, service: ChatService, feeds: Feeds,
                 authenticator: Authenticator, settings: ApiSettings) -> None:
        self.socket = socket
        self.client_id = client_id
        self.service = service
        self.feeds = feeds
        self.authenticator = authenticator
        self.settings = settings
        self.address = socket.client.host if socket.client else None
        self.who: Identity | None = None
        self.session: PushSession | None = None
        self._send_lock = asyncio.Lock()

    async def run(self, after: str | None) -> None:
        await self.socket.accept()
        code, reason = 1000, "done"
        session: PushSession | None = None
        try:
            check_client_id(self.client_id, "clientId")
            self.who = await self._authenticate()
            session = PushSession(self.service, self.feeds, self.client_id, self.who, parse_after(after),
                                  may_start=True)
            self.session = session
            first = await session.open()
            if first is not None:
                await self._send(first.data)
            await self._converse(session)
        except ApiError as exc:
            code, reason = CLOSE_CODES.get(exc.status, 1011), exc.detail
        except Closed as exc:
            code, reason = exc.code, exc.reason
        except (WebSocketDisconnect, ConnectionError):
            return
        finally:
            if session is not None:
                await session.close()
        with contextlib.suppress(WebSocketDisconnect, ConnectionError, RuntimeError):
            await self.socket.close(code=code, reason=reason.encode()[:120].decode(errors="ignore"))

    async def _authenticate(self) -> Identity:
        header = self.socket.headers.get("authorization")
        if header is not None or not self.authenticator.enabled:
            return await self.authenticator.identify(header, self.address)
        # Browsers cannot set headers on a WebSocket: the token comes in the first frame.
        try:
            raw = await asyncio.wait_for(self.socket.receive_text(),
                                         self.settings.athenic_ws_auth_timeout_seconds)
        except TimeoutError:
            raise Unauthorized('send {"type":"auth","token":"<access token>"} first') from None
        token = self._auth_token(raw)
        if token is None:
            raise Unauthorized('the first frame must be {"type":"auth","token":"<access token>"}')
        return await self.authenticator.verify(token, self.address)

    @staticmethod
    def _auth_token(raw: str) -> str | None:
        try:
            frame = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return None
        if isinstance(frame, dict) and frame.get("type") == "auth" and isinstance(frame.get("token"), str):
            return str(frame["token"])
        return None

    async def _converse(self, session: PushSession) -> None:
        pushing = asyncio.create_task(self._push(session))
        reading = asyncio.create_task(self._read())
        try:
            done, _ = await asyncio.wait({pushing, reading}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise Closed / disconnects
        finally:
            for task in (pushing, reading):
                task.cancel()
            await asyncio.gather(pushing, reading, return_exceptions=True)

    async def _push(self, session: PushSession) -> None:
        while True:
            await self._send((await self._next_before_expiry(session)).data)

    async def _next_before_expiry(self, session: PushSession) -> Frame:
        """The next frame, or close 4401 when the token expires (a fresh ``auth`` frame extends it)."""
        while True:
            assert self.who is not None
            expires_at = self.who.expires_at
            if expires_at is None:
                return await session.next()
            try:
                async with asyncio.timeout(max(expires_at - time.time(), 0.0)):
                    return await session.next()  # cancelling the wait for a frame loses none
            except TimeoutError:
                if self.who.expires_at is not None and self.who.expires_at <= time.time():
                    raise Closed(CLOSE_UNAUTHORIZED, "the token has expired; reconnect with a fresh one") from None

    async def _read(self) -> None:
        while True:
            raw = await self.socket.receive_text()
            try:
                frame = msgspec.json.decode(raw)
                if not isinstance(frame, dict):
                    raise InvalidRequest('a frame must be a JSON object with a "type"')
                await self._handle(frame)
            except msgspec.DecodeError:
                await self._send(problem_frame(InvalidRequest("the frame is not valid JSON")))
            except ApiError as exc:
                if isinstance(exc, Unauthorized):
                    raise Closed(CLOSE_UNAUTHORIZED, exc.detail) from None
                await self._send(problem_frame(exc))

    async def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        assert self.who is not None
        if kind == "chat":
            message, on_busy, key = frame.get("message"), frame.get("onBusy"), frame.get("idempotencyKey")
            if not isinstance(message, str) or not isinstance(on_busy, str | None) or not isinstance(key, str | None):
                raise InvalidRequest('a chat frame is {"type":"chat","message":"<non-empty string>"} with optional '
                                     '"onBusy" (enqueue, interrupt, reject) and "idempotencyKey" strings')
            request_id = uuid.uuid4().hex
            with bind_request(request_id=request_id):
                accepted = await self.service.accept(message, self.client_id, self.who, request_id,
                                                     on_busy=on_busy, idempotency_key=key)
            if self.session is not None:
                self.session.verified = True  # its own message: the conversation is this client's
            await self._send(json_frame("accepted", success=True, message=ACCEPTED_TEXT,
                                        clientId=self.client_id, requestId=accepted.request_id))
        elif kind == "auth":
            token = frame.get("token")
            if not self.authenticator.enabled:
                return
            if not isinstance(token, str):
                raise Unauthorized('an auth frame is {"type":"auth","token":"<access token>"}')
            fresh = await self.authenticator.verify(token, self.address)
            if fresh.user != self.who.user:
                raise Unauthorized("the new token is for another user")
            self.who = fresh
        elif kind == "ping":
            await self._send(json_frame("pong"))
        else:
            raise InvalidRequest(f"unknown frame type {kind!r}: send chat, auth or ping")

    async def _send(self, data: bytes) -> None:
        async with self._send_lock:
            await self.socket.send_text(data.decode())


def sse_message(frame: Frame) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=frame.data.decode(), event=frame.type, id=frame.revision)


class PushController(Controller):
    path = "/api/chat"
    tags = ["chat"]

    @websocket("/ws/{client_id:str}")
    async def chat_socket(self, socket: WebSocket[Any, Any, Any], client_id: str, chat_service: ChatService,
                          feeds: Feeds, authenticator: Authenticator, api_settings: ApiSettings,
                          after: str | None = None) -> None:
        conversation = SocketConversation(socket, client_id, chat_service, feeds, authenticator, api_settings)
        await conversation.run(after)

    @get(
        "/stream/{client_id:str}",
        summary="Server-Sent Events of a conversation",
        description="`event:` is the type (response, status, stdout, stderr, delta, error), `data:` the JSON "
        "object, `id:` the record's revision on response events, so `Last-Event-ID` resumes without missing an answer. "
        "The same objects as the WebSocket (see docs/api.md).",
        media_type="text/event-stream",
        responses={400: problems.BAD_REQUEST, 401: problems.UNAUTHORIZED, 404: problems.NOT_FOUND,
                   503: problems.UNAVAILABLE},
    )
    async def chat_stream(
        self,
        client_id: str,
        chat_service: ChatService,
        feeds: Feeds,
        identity: Identity,
        api_settings: ApiSettings,
        after: Annotated[int | None, Parameter(ge=0, description="The revision the client saw last")] = None,
        last_event_id: Annotated[str | None, Parameter(header="last-event-id")] = None,
    ) -> ServerSentEvent:
        check_client_id(client_id, "clientId")
        if after is None and last_event_id is not None and last_event_id.isdigit():
            after = int(last_event_id)
        session = PushSession(chat_service, feeds, client_id, identity, after)
        try:
            first = await session.open()  # 404 / 503 as problem details, before any event is sent
        except BaseException:
            await session.close()
            raise
        return ServerSentEvent(self._events(session, first, api_settings.athenic_ws_ping_seconds,
                                            identity.expires_at))

    @staticmethod
    async def _events(session: PushSession, first: Frame | None, keepalive: float,
                      expires_at: float | None) -> AsyncIterator[ServerSentEventMessage]:
        try:
            if first is not None:
                yield sse_message(first)
            while True:
                # the stream ends when its token does, like the WebSocket (an SSE client cannot
                # send a fresh token: it reconnects with one)
                wait = keepalive if expires_at is None else min(keepalive, expires_at - time.time())
                if wait <= 0:
                    raise Closed(CLOSE_UNAUTHORIZED, "the token has expired; reconnect with a fresh one")
                try:
                    frame = await asyncio.wait_for(session.next(), wait)
                except TimeoutError:
                    if expires_at is None or time.time() < expires_at:
                        yield ServerSentEventMessage(comment="keep-alive")  # proxies drop silent streams
                    continue
                yield sse_message(frame)
        except Closed as exc:
            if exc.code == CLOSE_RESTARTING:
                return  # the stream just ends: EventSource reconnects by itself, with Last-Event-ID
            status = {CLOSE_NOT_FOUND: 404, CLOSE_UNAUTHORIZED: 401}.get(exc.code, 503)
            title = {404: "Not found", 401: "Unauthorized"}.get(status, "Service unavailable")
            yield ServerSentEventMessage(event="error", data=json_frame(
                "error", status=status, title=title, detail=exc.reason).decode())
        finally:
            await session.close()

