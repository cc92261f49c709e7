"""Small NATS KV helpers every service shares: read a key with its revision, write on a revision."""

from __future__ import annotations

import nats.js.errors
from nats.js.kv import KeyValue


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


async def keys_matching(kv: KeyValue, pattern: str) -> list[str]:
    """The live keys matching a subject pattern (``a.*``, ``*.b``), filtered by the server.

    (nats-py's ``keys(filters=...)`` reads every key of the bucket and filters by substring.)
    """
    watcher = await kv.watch(pattern, ignore_deletes=True, meta_only=True)
    found = []
    try:
        async for entry in watcher:
            if entry is None:  # the end of what exists now
                break
            found.append(entry.key)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return found
