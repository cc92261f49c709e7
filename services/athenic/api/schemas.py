"""Bodies the api reads and writes (the app's contract; names never change)."""

from __future__ import annotations

import msgspec


class ChatIn(msgspec.Struct, frozen=True):
    message: str


class ChatAccepted(msgspec.Struct, frozen=True, rename="camel"):
    success: bool
    message: str
    client_id: str


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
