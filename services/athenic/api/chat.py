"""The chat routes of the app's contract: post a message, read the latest response."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, Response, delete, get, post
from litestar.params import Parameter

from athenic.api import problems
from athenic.api.chat_service import UserChat
from athenic.api.schemas import Cancelled, ChatAccepted, ChatIn
from athenic.shared.messages import ChatState

ACCEPTED_TEXT = "Chat message received and is being processed"


class ChatController(Controller):
    path = "/api/chat"
    tags = ["chat"]

    @post(
        "/",
        status_code=200,
        summary="Submit a chat message",
        description="Answers once the message is durably stored; the answer arrives later "
        "(poll the response route, or open the WebSocket / SSE stream).",
        responses={400: problems.BAD_REQUEST, 401: problems.UNAUTHORIZED, 404: problems.NOT_FOUND,
                   413: problems.TOO_LARGE, 429: problems.RATE_LIMITED, 503: problems.UNAVAILABLE},
    )
    async def post_chat(
        self,
        data: ChatIn,
        chat: UserChat,
        x_client_id: Annotated[
            str | None, Parameter(header="x-client-id", description="Conversation id; a UUID4 when absent")
        ] = None,
    ) -> Response[ChatAccepted]:
        request_id = uuid.uuid4().hex
        client_id = await chat.service.accept(data.message, x_client_id, chat.identity, request_id)
        return Response(
            ChatAccepted(success=True, message=ACCEPTED_TEXT, client_id=client_id),
            headers={"x-request-id": request_id},
        )

    @get(
        "/response/{client_id:str}",
        summary="The latest response of a conversation",
        responses={400: problems.BAD_REQUEST, 401: problems.UNAUTHORIZED, 404: problems.NOT_FOUND,
                   503: problems.UNAVAILABLE},
    )
    async def get_response(self, client_id: str, chat: UserChat) -> ChatState:
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
    async def cancel_run(self, client_id: str, chat: UserChat) -> Cancelled:
        await chat.service.cancel(client_id, chat.identity)
        return Cancelled(cancelled=True, client_id=client_id)
