"""Small NATS KV helpers every service shares: read a key with its revision, write on a revision
(also with a per-message TTL, which nats-py's ``kv.update`` cannot set), follow a bucket's changes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError, KeyWrongLastSequenceError
from nats.js.kv import KV_OP, KV_PURGE, MSG_ROLLUP_SUBJECT, KeyValue

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


READS_AT_ONCE = 64  # keys read concurrently by ``live_values``
# the streams that answered a direct get with "no responders" (they do not allow them, or a
# server was away), and when: asked through ``stream_info`` until ``DIRECT_RETRY_SECONDS`` later
_WITHOUT_DIRECT_GETS: dict[str, float] = {}
DIRECT_RETRY_SECONDS = 60.0


async def live_values(js: JetStreamContext, kv: KeyValue, bucket: str, pattern: str) -> dict[str, bytes]:
    """The live keys of ``kv`` (the bucket named ``bucket``) matching a subject pattern (``a.*``,
    ``*.b``), with their values, read without a consumer.

    Most patterns match nothing (a conversation without files, a user without devices). Where
    the bucket answers direct gets (on a single server: ``topology.bucket_configs``), one direct
    get of the first message matching the pattern says so, the cheapest question a stream
    answers; a stream without them has no responder for it, and is asked as below for the next
    ``DIRECT_RETRY_SECONDS`` (then directly again: "no responders" may also mean a server that
    was away for a moment). Otherwise the bucket's stream says which of its subjects hold a message (one request,
    filtered by the server); each is then read by key, ``READS_AT_ONCE`` at a time, and one
    deleted, purged or expired is left out. A KV watch would do it in fewer requests but is
    wrong for a one-off listing: its consumer stays on the server until its inactivity
    threshold (five minutes in nats-py), one per listing, and nats-py may end a watch's initial
    values before the entries already on their way, so a listing just after a write could miss it.
    """
    stream, subjects = names.kv_stream(bucket), names.kv_subject(bucket, pattern)
    if time.monotonic() >= _WITHOUT_DIRECT_GETS.get(stream, 0.0):
        try:
            await js.get_msg(stream, seq=1, subject=subjects, next=True, direct=True)
        except nats.js.errors.NotFoundError:
            return {}
        except nats.errors.NoRespondersError:
            _WITHOUT_DIRECT_GETS[stream] = time.monotonic() + DIRECT_RETRY_SECONDS
    info = await js.stream_info(stream, subjects_filter=subjects)
    skip = len(names.kv_subject(bucket, ""))
    keys = [subject[skip:] for subject in info.state.subjects or {}]
    found: dict[str, bytes] = {}
    for start in range(0, len(keys), READS_AT_ONCE):
        batch = keys[start:start + READS_AT_ONCE]
        for key, (value, _) in zip(batch, await asyncio.gather(*(read(kv, key) for key in batch)), strict=True):
            if value is not None:
                found[key] = value
    return found


async def write_if_last(js: JetStreamContext, bucket: str, key: str, value: bytes, last: int,
                        ttl: int | None = None) -> int:
    """Write ``key`` of ``bucket`` only if its last revision is ``last`` (0: absent), with a
    per-message TTL; the new revision.

    nats-py's ``kv.update`` takes no TTL, hence the publish with the expected-sequence header
    that ``update`` sends. Raises ``KeyWrongLastSequenceError`` when someone wrote first.
    """
    return await _publish_if_last(js, bucket, key, value, last, ttl)


async def purge_if_last(js: JetStreamContext, bucket: str, key: str, last: int, ttl: int | None = None) -> int:
    """Purge ``key`` of ``bucket`` (as ``kv.purge``: a marker that replaces every revision, with
    a per-message TTL) only if its last revision is ``last``; the marker's revision. Raises
    ``KeyWrongLastSequenceError`` when someone wrote first."""
    return await _publish_if_last(js, bucket, key, b"", last, ttl, {KV_OP: KV_PURGE, Header.ROLLUP: MSG_ROLLUP_SUBJECT})


async def _publish_if_last(js: JetStreamContext, bucket: str, key: str, value: bytes, last: int, ttl: int | None,
                           headers: dict[str, str] | None = None) -> int:
    try:
        ack = await js.publish(names.kv_subject(bucket, key), value,
                               headers={**(headers or {}), Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(last)},
                               msg_ttl=ttl)
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
    stopped, and watched afresh a second later (the values are then applied again).

    nats-py marks the end of the initial values with ``None``, but when its consumer's info says
    nothing is pending while the first entries are still on their way, the marker comes before
    them. So for the whole bucket (``keys`` ``>``: all its messages are delivered, each key's last)
    a marker before any entry is believed only when the bucket holds no message; otherwise
    ``loaded`` waits for the entry the server says is the last pending (``delta`` 0). A caller
    such as the policy cache must not start with a tenant's limits missing."""
    while True:
        watcher = None
        try:
            watcher = await kv.watch(keys)
            seen = False
            async for entry in watcher:
                if entry is None:  # nats-py's end of the initial values
                    if loaded is not None and not loaded.is_set() and \
                            (seen or keys != ">" or not (await kv.status()).values):
                        loaded.set()
                    continue
                seen = True
                gone = entry.operation in ("DEL", "PURGE") or not entry.value
                apply(entry.key, entry.revision or 0, None if gone else entry.value)
                if entry.delta == 0 and loaded is not None:
                    loaded.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(f"{what} watch interrupted; resuming", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(1)
        finally:
            if watcher is not None:
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]
