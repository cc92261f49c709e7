"""Small NATS KV helpers every service shares: read a key with its revision, write on a revision
(also with a per-message TTL, which nats-py's ``kv.update`` cannot set), follow a bucket's changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from athenic.shared import names
from athenic.shared.logging import get_logger

log = get_logger(__name__)

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


async def follow(kv: KeyValue, apply: Callable[[str, int, bytes | None], None], *, what: str,
                 loaded: asyncio.Event | None = None, keys: str = ">") -> None:
    """Apply every change of the keys of ``kv`` matching ``keys``, for ever: ``apply(key, revision,
    value)``, the value ``None`` for a deleted, purged or emptied key. ``loaded`` is set once the
    values present at the start are applied. A broken watch is logged (as ``what``), its consumer
    stopped, and watched afresh a second later (the values are then applied again)."""
    while True:
        watcher = None
        try:
            watcher = await kv.watch(keys)
            async for entry in watcher:
                if entry is None:  # the end of the initial values
                    if loaded is not None:
                        loaded.set()
                    continue
                gone = entry.operation in ("DEL", "PURGE") or not entry.value
                apply(entry.key, entry.revision or 0, None if gone else entry.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(f"{what} watch interrupted; resuming", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(1)
        finally:
            if watcher is not None:
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]
