"""The ingest baselines: a bare Litestar JSON POST and GET on uvicorn, with the api's server settings.

Same body and answer types, same uvicorn options as ``athenic-api`` (one process, no
access log, the same body limit); no broker, no middleware, no logging per request. The GET
answers a completed conversation's state built in memory (the api reads it from the broker).

    .venv/bin/python bench/_bare_app.py PORT
"""

from __future__ import annotations

import sys
import uuid

import uvicorn
from litestar import Litestar, get, post

from athenic.api.schemas import ChatAccepted, ChatIn
from athenic.api.settings import ApiSettings
from athenic.shared.messages import ChatResponse, ChatState, iso_timestamp

ANSWER = ChatResponse(message="3628800", requires_e2b=False, client_id="", timestamp="2026-01-01T00:00:00.000Z",
                      request_id="0" * 32, status="completed")


@post("/api/chat", status_code=200)
async def post_chat(data: ChatIn) -> ChatAccepted:
    return ChatAccepted(success=True, message="Chat message received and is being processed",
                        client_id=str(uuid.uuid4()))


@get("/api/chat/response/{client_id:str}")
async def get_response(client_id: str) -> ChatState:
    return ChatState(last_message="What is the factorial of 10?", last_response=ANSWER, requires_e2b=False,
                     timestamp=iso_timestamp(), status="completed", request_id="0" * 32, client_id=client_id,
                     revision=1)


def main(port: int) -> None:
    settings = ApiSettings()
    app = Litestar([post_chat, get_response], request_max_body_size=settings.max_body_bytes, logging_config=None)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                timeout_graceful_shutdown=int(settings.athenic_shutdown_grace_seconds))


if __name__ == "__main__":
    main(int(sys.argv[1]))
