"""The SSE route ``GET /api/chat/stream/{clientId}``: the WebSocket's frames as Server-Sent Events
(``event:`` the type, ``data:`` the JSON, ``id:`` the revision on response events, so
``Last-Event-ID`` resumes without missing an answer).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from athenic.api import problems
from athenic.api.chat_service import ChatService, check_client_id
from athenic.api.fanout import Feeds
from athenic.api.identity import Identity
from athenic.api.push.frames import CLOSE_NOT_FOUND, CLOSE_RESTARTING, CLOSE_UNAUTHORIZED, Closed, Frame, json_frame
from athenic.api.push.session import PushSession
from athenic.api.settings import ApiSettings
from athenic.shared.timeouts import within


def sse_message(frame: Frame) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=frame.data.decode(), event=frame.type, id=frame.revision)


class StreamController(Controller):
    path = "/api/chat"
    tags = ["chat"]

    @get(
        "/stream/{client_id:str}",
        summary="Server-Sent Events of a conversation",
        description="`event:` is the type (response, status, stdout, stderr, delta, error), `data:` the JSON "
        "object, `id:` the record's revision on response events, so `Last-Event-ID` resumes without missing an answer. "
        "The same objects as the WebSocket (see docs/api.md).",
        media_type="text/event-stream",
        responses=problems.CONVERSATION_READ,
    )
    async def chat_stream(
        self,
        client_id: FromPath[str],
        chat_service: NamedDependency[ChatService],
        feeds: NamedDependency[Feeds],
        identity: NamedDependency[Identity],
        api_settings: NamedDependency[ApiSettings],
        after: Annotated[int | None, QueryParameter(ge=0, description="The revision the client saw last")] = None,
        last_event_id: Annotated[str | None, HeaderParameter(name="last-event-id")] = None,
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
                    frame = await within(session.next(), wait)
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
