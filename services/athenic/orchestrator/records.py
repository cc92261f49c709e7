"""Writing response records: compare-and-set on the KV revision, ordered by stream sequence.

A record is about one message (its request-stream ``seq``). A writer never replaces a record
about a newer message, so a slow earlier message cannot overwrite the answer to a later one,
and a redelivered message that was already answered is not answered again.
"""

from __future__ import annotations

from collections.abc import Callable

import nats.js.errors
from nats.js.kv import KeyValue

from athenic.shared.messages import FINAL_STATUSES, ResponseRecord, encode, response_record_decoder

Build = Callable[[ResponseRecord | None], ResponseRecord]
Known = tuple[ResponseRecord | None, int | None]
Stored = tuple[ResponseRecord, int]
MAX_CAS_ATTEMPTS = 50


class RecordStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def current(self, client_id: str) -> tuple[ResponseRecord | None, int | None]:
        try:
            entry = await self.kv.get(client_id)
        except nats.js.errors.KeyDeletedError as exc:
            return None, exc.entry.revision if exc.entry else None
        except nats.js.errors.KeyNotFoundError:
            return None, None
        if not entry.value:
            return None, entry.revision
        return response_record_decoder.decode(entry.value), entry.revision

    async def write(self, client_id: str, seq: int, build: Build, *, known: Known | None = None) -> Stored | None:
        """Store ``build(current)`` unless a record about a newer message, or a final one about
        this message, exists.

        ``known`` is a (record, revision) the caller already read or wrote: the first attempt
        trusts it instead of reading again (a broker round trip per write saved); if the key
        moved on since, the compare-and-set fails and the record is read afresh.
        Returns the record stored and its revision (to pass as ``known`` next), or ``None``.
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            current, revision = known if known is not None else await self.current(client_id)
            known = None
            record = build(current)
            # A newer message's record stands; so does the first final answer to this one: a
            # delivery that ran twice, or a request stored twice (a publish retried across a
            # leader election that the dedupe window missed), never answers twice.
            if current is not None and (
                current.seq > seq
                or (current.status in FINAL_STATUSES
                    and (current.seq == seq or current.request_id == record.request_id))
            ):
                return None
            value = encode(record)
            try:
                if revision is None:
                    return record, await self.kv.create(client_id, value)
                return record, await self.kv.update(client_id, value, last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone wrote in between: read again and decide again
        raise RuntimeError(f"could not store the record of {client_id}: too much contention")
