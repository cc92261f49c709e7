"""The chat routes: post a message, read the latest response, page the history, cancel a run."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from athenic.api import problems
from athenic.api.chat_service import UserChat
from athenic.api.fast_paths import fast_accept, fast_response
from athenic.api.history import HistoryPage
from athenic.api.schemas import ACCEPTED_TEXT, Cancelled, ChatAccepted, ChatIn, Session
from athenic.shared.messages import ChatState


class ChatController(Controller):
    path = "/api/chat"
    tags = ["chat"]

    @post(
        "/",
        status_code=200,
        summary="Submit a chat message",
        description="Answers once the message is durably stored; the answer arrives later "
        "(poll the response route, or open the WebSocket / SSE stream). A conversation's messages are "
        "answered one at a time in submission order. The body may carry `clientId` (used when there is no "
        "`x-client-id` header); `userId` and `organisationId` are accepted and ignored.",
        responses={400: problems.BAD_REQUEST, 401: problems.UNAUTHORIZED, 404: problems.NOT_FOUND,
                   409: problems.BUSY, 413: problems.TOO_LARGE, 422: problems.KEY_REUSED,
                   429: problems.RATE_LIMITED, 503: problems.UNAVAILABLE},
        middleware=[fast_accept],  # serves the well-formed requests at the cost of their publish
    )
    async def post_chat(
        self,
        data: JSONBody[ChatIn],
        chat: NamedDependency[UserChat],
        x_client_id: Annotated[
            str | None, HeaderParameter(name="x-client-id", description="Conversation id; a UUID4 when absent")
        ] = None,
        x_on_busy: Annotated[str | None, HeaderParameter(
            name="x-on-busy", description="While an earlier message of the conversation is answered: `enqueue` "
            "(default: wait its turn), `interrupt` (cancel the earlier turns, answer this next) or `reject` (409)",
        )] = None,
        idempotency_key: Annotated[str | None, HeaderParameter(
            name="idempotency-key", description="1-128 characters of A-Z a-z 0-9 _ - . : ; a retried POST with "
            "the same key answers as the first did and stores nothing new",
        )] = None,
    ) -> Response[ChatAccepted]:
        client_id = x_client_id if x_client_id is not None else data.client_id
        accepted = await chat.service.accept(data.message, client_id, chat.identity, uuid.uuid4().hex,
                                             on_busy=x_on_busy, idempotency_key=idempotency_key)
        return Response(
            ChatAccepted(success=True, message=ACCEPTED_TEXT, client_id=accepted.client_id),
            headers={"x-request-id": accepted.request_id},
        )

    @get(
        "/{client_id:str}/messages",
        summary="The conversation's turns, newest first",
        description="Each item is one message and its answer (`response`, null until it is answered). "
        "Pass `nextBefore` as `before` for the next page; it is null on the last page.",
        responses=problems.CONVERSATION_READ,
    )
    async def get_messages(
        self,
        client_id: FromPath[str],
        chat: NamedDependency[UserChat],
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="Turns per page")] = 20,
        before: Annotated[int | None, QueryParameter(ge=1, description="A page's `nextBefore`")] = None,
    ) -> HistoryPage:
        return await chat.service.history(client_id, chat.identity, limit, before)

    @get(
        "/session/{client_id:str}",
        summary="The conversation's state, as the app's later generation reads it",
        description="Compatibility route: `processingState` is submitted, processing, completed, failed or "
        "cancelled; `lastResponse` is the answer's text to `lastMessage`, absent until it is answered.",
        responses=problems.CONVERSATION_READ,
    )
    async def get_session(self, client_id: FromPath[str], chat: NamedDependency[UserChat]) -> Session:
        state = await chat.service.state(client_id, chat.identity)
        response = state.last_response
        answered = response is not None and response.request_id == state.request_id
        return Session(
            processing_state="submitted" if state.status == "pending" else state.status,
            last_message=state.last_message,
            requires_e2b=state.requires_e2b,
            client_id=client_id,
            last_response=response.message if answered and response is not None else None,
        )

    @get(
        "/response/{client_id:str}",
        summary="The latest response of a conversation",
        responses=problems.CONVERSATION_READ,
        middleware=[fast_response],  # the same answer at the cost of its two reads
    )
    async def get_response(self, client_id: FromPath[str], chat: NamedDependency[UserChat]) -> ChatState:
        return await chat.service.state(client_id, chat.identity)

    @delete(
        "/{client_id:str}/run",
        status_code=200,
        summary="Cancel the running execution of a conversation",
        description="Stops the code running for this clientId within a second (either sandbox backend); "
        "the response record then says `cancelled`. 409 when nothing is running.",
        responses={400: problems.BAD_REQUEST, 401: problems.UNAUTHORIZED, 404: problems.NOT_FOUND,
                   409: problems.NOTHING_RUNNING, 503: problems.UNAVAILABLE},
    )
    async def cancel_run(self, client_id: FromPath[str], chat: NamedDependency[UserChat]) -> Cancelled:
        await chat.service.cancel(client_id, chat.identity)
        return Cancelled(cancelled=True, client_id=client_id)
