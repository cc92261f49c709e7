"""Bodies the api reads and writes (the app's contract; names never change)."""

from __future__ import annotations

from typing import Final, Literal

import msgspec


class ChatIn(msgspec.Struct, frozen=True, rename="camel"):
    """``clientId`` in the body is the app's later generation; the ``x-client-id`` header wins.
    Other members (its ``userId``, ``organisationId``) are accepted and ignored: identity comes
    from the token."""

    message: str
    client_id: str | None = None


# What every accepted message is answered with (POST /api/chat and the WebSocket's "accepted" frame).
ACCEPTED_TEXT: Final = "Chat message received and is being processed"


class ChatAccepted(msgspec.Struct, frozen=True, rename="camel"):
    success: bool
    message: str
    client_id: str


ProcessingState = Literal["submitted", "processing", "completed", "failed", "cancelled"]


class Session(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """``GET /api/chat/session/{clientId}``: the app's later generation polls this."""

    processing_state: ProcessingState
    last_message: str
    requires_e2b: bool = msgspec.field(name="requiresE2B")
    client_id: str
    last_response: str | None = None  # the answer's text, absent until the last message is answered


class Health(msgspec.Struct, frozen=True):
    status: str
    service: str


class Ready(msgspec.Struct, frozen=True):
    status: str
    broker: str


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """RFC 9457 problem details, as every error of this api is answered."""

    status: int
    title: str
    detail: str = ""
    type: str = "about:blank"


class Cancelled(msgspec.Struct, frozen=True, rename="camel"):
    cancelled: bool
    client_id: str
