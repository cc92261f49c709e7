"""The WebSocket protocol of ``GET /api/chat/ws/{clientId}``: authenticate, then push frames and
take ``chat``, ``auth`` and ``ping`` frames until either side ends (WebSocket routes are not in
the OpenAPI document: docs/api.md describes the frames and close codes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import msgspec
from litestar import Controller, WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath, FromQuery

from athenic.api.auth import Authenticator
from athenic.api.chat_service import ChatService, check_client_id
from athenic.api.errors import ApiError, InvalidRequest, Unauthorized
from athenic.api.fanout import Feeds
from athenic.api.identity import Identity
from athenic.api.push.frames import (
    CLOSE_CODES,
    CLOSE_UNAUTHORIZED,
    Closed,
    Frame,
    json_frame,
    problem_frame,
)
from athenic.api.push.session import PushSession, parse_after
from athenic.api.schemas import ACCEPTED_TEXT
from athenic.api.settings import ApiSettings
from athenic.shared.logging import bind_request
from athenic.shared.timeouts import within


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
            raw = await within(self.socket.receive_text(),
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


class SocketController(Controller):
    path = "/api/chat"
    tags = ["chat"]

    @websocket("/ws/{client_id:str}")
    async def chat_socket(self, socket: WebSocket[Any, Any, Any], client_id: FromPath[str],
                          chat_service: NamedDependency[ChatService], feeds: NamedDependency[Feeds],
                          authenticator: NamedDependency[Authenticator], api_settings: NamedDependency[ApiSettings],
                          after: FromQuery[str | None] = None) -> None:
        conversation = SocketConversation(socket, client_id, chat_service, feeds, authenticator, api_settings)
        await conversation.run(after)
