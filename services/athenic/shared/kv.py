"""Small NATS KV helpers every service shares: read a key with its revision, write on a revision
(also with a per-message TTL, which nats-py's ``kv.update`` cannot set)."""

from __future__ import annotations

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from athenic.shared import names

WRONG_LAST_SEQUENCE = (10071, 10164)  # JSStreamWrongLastSequence(Constant)Err


async def read(kv: KeyValue, key: str) -> tuple[bytes | None, int]:
    """The value of ``key`` (``None`` when absent, deleted or expired) and the revision to write after.

    The revision is 0 when the key never existed; for a deleted key it is the marker's, so a
    compare-and-set after it succeeds.
    """
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyDeletedError as exc:
        return None, (exc.entry.revision or 0) if exc.entry is not None else 0
    except nats.js.errors.KeyNotFoundError:
        return None, 0
    return (entry.value or None), entry.revision or 0


async def write_after(kv: KeyValue, key: str, value: bytes, last: int) -> int:
    """Write ``key`` only if its revision is still ``last`` (0: absent); the new revision.

    Raises ``KeyWrongLastSequenceError`` when someone wrote first.
    """
    if last == 0:
        return await kv.create(key, value)
    return await kv.update(key, value, last=last)


async def write_if_last(js: JetStreamContext, bucket: str, key: str, value: bytes, last: int,
                        ttl: int | None = None) -> int:
    """Write ``key`` of ``bucket`` only if its last revision is ``last`` (0: absent), with a
    per-message TTL; the new revision.

    nats-py's ``kv.update`` takes no TTL, hence the publish with the expected-sequence header
    that ``update`` sends. Raises ``KeyWrongLastSequenceError`` when someone wrote first.
    """
    try:
        ack = await js.publish(names.kv_subject(bucket, key), value,
                               headers={Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(last)}, msg_ttl=ttl)
    except APIError as exc:
        if exc.err_code in WRONG_LAST_SEQUENCE:
            raise KeyWrongLastSequenceError(description=exc.description) from exc
        raise
    return int(ack.seq)
