"""The ingest baseline: a bare Litestar JSON POST on uvicorn, with the api's server settings.

Same body and answer types, same uvicorn options as ``athenic-api`` (one process, no
access log, the same body limit); no broker, no middleware, no logging per request.

    .venv/bin/python bench/_bare_app.py PORT
"""

from __future__ import annotations

import sys
import uuid

import uvicorn
from litestar import Litestar, post

from athenic.api.schemas import ChatAccepted, ChatIn
from athenic.api.settings import ApiSettings


@post("/api/chat", status_code=200)
async def post_chat(data: ChatIn) -> ChatAccepted:
    return ChatAccepted(success=True, message="Chat message received and is being processed",
                        client_id=str(uuid.uuid4()))


def main(port: int) -> None:
    settings = ApiSettings()
    app = Litestar([post_chat], request_max_body_size=settings.max_body_bytes, logging_config=None)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                timeout_graceful_shutdown=int(settings.athenic_shutdown_grace_seconds))


if __name__ == "__main__":
    main(int(sys.argv[1]))
