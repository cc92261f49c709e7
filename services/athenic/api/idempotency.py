"""``Idempotency-Key``: a POST retried from a flaky network answers as the first did, storing nothing new.

The first POST under a key (per caller) records its request id, conversation and a digest of
its message in ``IDEMPOTENCY_BUCKET`` (TTL: the window), by create, so of two racing retries
one records and the other reads. A retry is published again under the first request id: the
request stream's dedupe window (at least the idempotency window) drops it if the first
publish landed, and stores it if the first POST failed before its publish did.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from athenic.api.errors import InvalidRequest, Unprocessable
from athenic.api.identity import Identity
from athenic.shared import kv
from athenic.shared.logging import get_logger

log = get_logger(__name__)

KEY_RE: Final = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")


class FirstRequest(msgspec.Struct, frozen=True, rename="camel"):
    request_id: str
    client_id: str
    message_sha256: str


_decode = msgspec.json.Decoder(FirstRequest).decode


def check_key(key: str) -> str:
    if not KEY_RE.fullmatch(key):
        raise InvalidRequest("Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 _ - . :")
    return key


class Idempotency:
    def __init__(self, bucket: KeyValue) -> None:
        self.bucket = bucket

    async def first(self, key: str, who: Identity, client_id: str | None, message: str,
                    fresh: FirstRequest) -> FirstRequest:
        """The request this key first named (``fresh`` when it is new); 422 when it named another message."""
        digest = hashlib.sha256(message.encode()).hexdigest()
        caller = who.user if who.user is not None else "anonymous"
        slot = hashlib.sha256(f"{caller}\n{key}".encode()).hexdigest()
        for _ in range(3):
            value, revision = await kv.read(self.bucket, slot)
            if value is not None:
                earlier = _decode(value)
                if earlier.message_sha256 != digest or (client_id is not None and client_id != earlier.client_id):
                    raise Unprocessable("this Idempotency-Key was used for another message; use a new key")
                log.info("retried post answered as the first", request_id=earlier.request_id)
                return earlier
            first = msgspec.structs.replace(fresh, message_sha256=digest)
            try:
                await kv.write_after(self.bucket, slot, msgspec.json.encode(first), revision)
                return first
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # a concurrent retry recorded first: read it
        raise Unprocessable("this Idempotency-Key is being used concurrently; retry")
