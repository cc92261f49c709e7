"""What a push client receives: the frames (JSON objects with a ``type``) and the close codes.

The WebSocket and the SSE stream send the same objects; docs/api.md lists them and the codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from athenic.api.errors import ApiError
from athenic.shared.messages import ChatState, encode

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
