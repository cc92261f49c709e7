"""Where each conversation's E2B sandbox is, for every orchestrator replica: a NATS KV bucket.

``<clientId>`` holds a ``SandboxRecord`` (the sandbox id, its template and internet setting,
its tenant, ``running`` or ``paused``, when it was last used, whether a run is using it now).
``pool.<shape>.<slot>`` holds a ``PoolSlot`` of the warm pool (see ``e2b_pool``). A clientId
never contains a dot, so the two kinds of key never meet.

Every change is a compare-and-set on the key's revision: whoever pauses, kills or claims a
sandbox first wins, and the others see a conflict (``Conflict``) and leave it alone. The
replicas never lock anything else: a conversation's messages are answered one at a time
cluster-wide already (``turn_order``), so two runs never race for one record.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from athenic.shared.quotas import Stored, read_bucket

State = Literal["running", "paused"]
POOL_PREFIX = "pool."
# A run marked busy longer ago than this is treated as over (its replica died mid-run).
STALE_BUSY_SECONDS = 3600 + 300


class SandboxRecord(msgspec.Struct, kw_only=True, rename="camel"):
    sandbox_id: str
    template: str
    allow_internet: bool
    tenant: str
    state: State
    last_used: float  # unix time of the last run's start or end
    retention_seconds: int
    busy: bool = False
    holder: str = ""  # the replica that ran it last (its idle timer pauses it)

    def busy_now(self, now: float) -> bool:
        return self.busy and now - self.last_used < STALE_BUSY_SECONDS


class PoolSlot(msgspec.Struct, kw_only=True, rename="camel"):
    state: Literal["creating", "ready"]
    since: float  # unix time the slot was taken (creating) or its sandbox became ready
    template: str
    allow_internet: bool
    by: str  # the replica that created it
    sandbox_id: str = ""


class Conflict(Exception):
    """Someone else changed the key since it was read."""


@dataclass(frozen=True)
class Entry:
    key: str
    revision: int
    record: SandboxRecord


@dataclass(frozen=True)
class SlotEntry:
    key: str
    revision: int
    slot: PoolSlot


_records = msgspec.json.Decoder(SandboxRecord)
_slots = msgspec.json.Decoder(PoolSlot)


class SandboxDirectory:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    # -- conversation records -------------------------------------------------------------

    async def get(self, client_id: str) -> Entry | None:
        try:
            entry = await self.kv.get(client_id)
        except KeyNotFoundError:  # KeyDeletedError is one
            return None
        if not entry.value:
            return None
        try:
            return Entry(client_id, entry.revision or 0, _records.decode(entry.value))
        except msgspec.ValidationError:
            return None

    async def put(self, client_id: str, record: SandboxRecord, *, revision: int | None) -> int:
        """Write ``record``: a new key when ``revision`` is None, else only over that revision."""
        value = msgspec.json.encode(record)
        try:
            if revision is None:
                return await self.kv.create(client_id, value)
            return await self.kv.update(client_id, value, last=revision)
        except KeyWrongLastSequenceError as exc:
            raise Conflict(client_id) from exc

    async def force(self, client_id: str, record: SandboxRecord) -> int:
        """Write ``record`` whatever is there (the conversation's own run owns its key)."""
        return await self.kv.put(client_id, msgspec.json.encode(record))

    async def remove(self, key: str, *, revision: int) -> None:
        try:
            await self.kv.delete(key, last=revision)
        except KeyWrongLastSequenceError as exc:
            raise Conflict(key) from exc

    async def records(self) -> list[Entry]:
        """Every conversation record (one watch over the bucket's single-token keys)."""
        stored = await read_bucket(self.kv, "*")
        return list(_decoded(stored.items()))

    # -- warm pool slots --------------------------------------------------------------------

    async def slots(self, shape: str) -> list[SlotEntry]:
        stored = await read_bucket(self.kv, f"{POOL_PREFIX}{shape}.*")
        return list(_decoded_slots(stored.items()))

    async def all_slots(self) -> list[SlotEntry]:
        stored = await read_bucket(self.kv, f"{POOL_PREFIX}>")
        return list(_decoded_slots(stored.items()))

    async def take_slot(self, key: str, slot: PoolSlot) -> int | None:
        """Take an empty slot for creating (atomic across replicas); None when taken."""
        try:
            return await self.kv.create(key, msgspec.json.encode(slot))
        except KeyWrongLastSequenceError:
            return None

    async def fill_slot(self, key: str, slot: PoolSlot, *, revision: int) -> int:
        try:
            return await self.kv.update(key, msgspec.json.encode(slot), last=revision)
        except KeyWrongLastSequenceError as exc:
            raise Conflict(key) from exc


def _decoded(items: Iterable[tuple[str, Stored]]) -> Iterator[Entry]:
    for key, stored in items:
        try:
            yield Entry(key, stored.revision, _records.decode(stored.value))
        except msgspec.ValidationError:
            continue


def _decoded_slots(items: Iterable[tuple[str, Stored]]) -> Iterator[SlotEntry]:
    for key, stored in items:
        try:
            yield SlotEntry(key, stored.revision, _slots.decode(stored.value))
        except msgspec.ValidationError:
            continue


def now() -> float:
    return time.time()
