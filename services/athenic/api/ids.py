"""New request ids and clientIds: random UUID4s, made without ``uuid.UUID``'s validation and int arithmetic."""

from __future__ import annotations

import os


def _uuid4_bytes() -> bytearray:
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw


def new_request_id() -> str:
    """32 hex digits, as ``uuid.uuid4().hex``."""
    return _uuid4_bytes().hex()


def new_client_id() -> str:
    """The dashed form, as ``str(uuid.uuid4())``."""
    h = _uuid4_bytes().hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
