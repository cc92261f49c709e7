"""Where each conversation's E2B sandbox is, for every orchestrator replica: a NATS KV bucket.

``<clientId>`` holds a ``SandboxRecord`` (the sandbox id, its template and internet setting,
its tenant, ``running`` or ``paused``, when it was last used, whether a run is using it now).
``pool.<shape>.<slot>`` holds a ``PoolSlot`` of the warm pool (see ``e2b_pool``). A clientId
never contains a dot, so the two kinds of key never meet.

Every change is a compare-and-set on the key's revision: whoever pauses, kills or claims a
sandbox first wins, and the others see a conflict (``Conflict``) and leave it alone. The
replicas never lock anything else: a conversation's messages are answered one at a time
cluster-wide already (``turn_order``), so two runs never race for one record.

Listing (every record, a shape's pool slots) reads a mirror of the bucket kept by one watch
per replica: a watch per listing would leave one JetStream consumer behind per call for
minutes. The mirror may lag another replica's write by the watch's latency; the
compare-and-set on the real key catches that (a ``Conflict``). ``get`` reads the key itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from athenic.shared.kv import follow, write_after
from athenic.shared.logging import get_logger
from athenic.shared.quotas import Stored
from athenic.shared.timeouts import within

log = get_logger(__name__)

_LOAD_TIMEOUT_SECONDS = 10.0
State = Literal["running", "paused"]
V = TypeVar("V")
E = TypeVar("E")
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
        self._mirror: dict[str, tuple[int, bytes]] = {}  # key -> (revision, value) of live keys
        self._loaded = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None

    # -- the mirror -------------------------------------------------------------------------

    def start(self) -> None:
        if self._watch_task is None:
            self._watch_task = asyncio.create_task(self._watch(), name="e2b-directory-watch")

    async def aclose(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task

    async def _watch(self) -> None:
        await follow(self.kv, self._note, what="sandboxes bucket", loaded=self._loaded)

    def _note(self, key: str, revision: int, value: bytes | None) -> None:
        """Remember a key's newest state (our own writes may be noted before the watch sees them)."""
        known = self._mirror.get(key)
        if known is not None and revision < known[0]:
            return
        if value is None:
            self._mirror.pop(key, None)  # no tombstones: the watch delivers a key's changes in order
        else:
            self._mirror[key] = (revision, value)

    async def _listed(self, matches: Callable[[str], bool]) -> list[tuple[str, Stored]]:
        self.start()
        await within(self._loaded.wait(), _LOAD_TIMEOUT_SECONDS)
        return [(key, Stored(revision, value)) for key, (revision, value) in list(self._mirror.items())
                if matches(key)]

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

    async def _write(self, key: str, value: bytes, last: int) -> int:
        """The one compare-and-set of this bucket: ``key`` only over revision ``last`` (0: a new key)."""
        try:
            written = await write_after(self.kv, key, value, last)
        except KeyWrongLastSequenceError as exc:
            raise Conflict(key) from exc
        self._note(key, written, value)
        return written

    async def put(self, client_id: str, record: SandboxRecord, *, revision: int | None) -> int:
        """Write ``record``: a new key when ``revision`` is None, else only over that revision."""
        return await self._write(client_id, msgspec.json.encode(record), revision or 0)

    async def force(self, client_id: str, record: SandboxRecord) -> int:
        """Write ``record`` whatever is there (the conversation's own run owns its key)."""
        value = msgspec.json.encode(record)
        written = await self.kv.put(client_id, value)
        self._note(client_id, written, value)
        return written

    async def remove(self, key: str, *, revision: int) -> None:
        try:
            await self.kv.delete(key, last=revision)
        except KeyWrongLastSequenceError as exc:
            raise Conflict(key) from exc
        self._note(key, revision + 1, None)  # at least that: the delete marker's revision is higher

    async def records(self) -> list[Entry]:
        """Every conversation record, as the mirror has them."""
        return _decoded(await self._listed(lambda key: not key.startswith(POOL_PREFIX)), _records, Entry)

    # -- warm pool slots --------------------------------------------------------------------

    async def slots(self, shape: str) -> list[SlotEntry]:
        prefix = f"{POOL_PREFIX}{shape}."
        return _decoded(await self._listed(lambda key: key.startswith(prefix)), _slots, SlotEntry)

    async def all_slots(self) -> list[SlotEntry]:
        return _decoded(await self._listed(lambda key: key.startswith(POOL_PREFIX)), _slots, SlotEntry)

    async def take_slot(self, key: str, slot: PoolSlot) -> int | None:
        """Take an empty slot for creating (atomic across replicas); None when taken."""
        try:
            return await self._write(key, msgspec.json.encode(slot), 0)
        except Conflict:
            return None

    async def fill_slot(self, key: str, slot: PoolSlot, *, revision: int) -> int:
        return await self._write(key, msgspec.json.encode(slot), revision)


def _decoded(items: Iterable[tuple[str, Stored]], decoder: msgspec.json.Decoder[V],
             entry: Callable[[str, int, V], E]) -> list[E]:
    """The listed keys whose values decode (records and pool slots alike); others are skipped."""
    found = []
    for key, stored in items:
        try:
            found.append(entry(key, stored.revision, decoder.decode(stored.value)))
        except msgspec.ValidationError:
            continue
    return found


def now() -> float:
    return time.time()
