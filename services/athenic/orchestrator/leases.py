"""Leases of running executions in NATS KV: how ``maxConcurrentExecutions`` holds across replicas.

Keys follow ``athenic.shared.quota_keys``. Each execution holds a ``lease.<tenant>.<id>``
key with a per-message TTL (``ATHENIC_LEASE_TTL_SECONDS``), rewritten every third of it while
the run lasts and purged when it ends: a replica that dies stops rewriting, so its leases
vanish after at most one TTL. The tenant's ``slots.<tenant>`` key lists the ids admitted.

Admission (``LeaseStore.try_acquire``):

1. create the lease key (``kv.create``, a fresh id), so it is live before anyone can see its id
   (the list is read meanwhile);
2. read ``slots.<tenant>`` (ids and the key's revision), keep the ids whose lease key is still
   live (read from the stream's leader), and if fewer than the limit remain, write them plus
   my id with compare-and-set on that revision. A lost race reads again. At the limit, the
   attempt withdraws its lease key.

Why no race exceeds the limit: every admission is one compare-and-set of the same key, so
admissions are totally ordered and each sees the list the previous one wrote. An execution
that runs was admitted by an earlier write and its id stays listed until it is released (or
until its lease is gone, which a live holder prevents by rewriting it), and its lease is live
when the next admission checks it. So each admission counts every execution running at that
moment, and adds itself only when they are fewer than the limit. Reading the lease keys
through the stream's leader (not a direct get that a follower may serve) keeps "live" exact.

The price of leases: a replica cut off from NATS for longer than a TTL while its code still
runs loses its slot, so another replica may start one more execution meanwhile; when it
reaches NATS again it writes its lease and puts its id back, and later admissions count it.

Waking queued executions: every replica watches the ``slots.*`` keys and wakes a tenant's
waiters when its list shrinks (a release, or a dead replica's lease pruned). Expiries leave no
trace in a watch, so waiters also re-check on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from dataclasses import dataclass

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from athenic.shared import names
from athenic.shared.kv import follow, write_if_last
from athenic.shared.logging import get_logger
from athenic.shared.quota_keys import SLOTS_PREFIX, lease_key, slots_key, tenant_of_slots_key

log = get_logger(__name__)

MAX_ROUNDS = 50
# A deleted lease's purge marker only has to outlive a watcher's reading of it; its own TTL
# removes it, so the bucket does not keep a tombstone per execution ever run.
MARKER_TTL_SECONDS = 60


class LeaseValue(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """What a lease key holds: who holds it, for which request, and whether it runs now."""

    holder: str
    request_id: str = ""
    admitted: bool = False


class Slots(msgspec.Struct, frozen=True):
    """The value of ``slots.<tenant>``: the ids of the tenant's admitted leases."""

    leases: list[str] = msgspec.field(default_factory=list)


_decode_slots = msgspec.json.Decoder(Slots).decode


def decode_slots(value: bytes | None) -> Slots:
    if not value:
        return Slots()
    try:
        return _decode_slots(value)
    except msgspec.DecodeError:  # unreadable: treated as empty, the next admission rewrites it
        return Slots()


@dataclass
class Lease:
    tenant: str
    lease_id: str
    key: str
    revision: int
    value: LeaseValue


async def _back_off(attempt: int) -> None:
    """A jittered pause after a lost compare-and-set, growing with the attempts, so that
    racers spread out instead of colliding again."""
    await asyncio.sleep(random.uniform(0, 0.001 * min(2**attempt, 64)))  # noqa: S311 - not secrecy


def holder_id() -> str:
    """This replica: the pod name (the hostname in Kubernetes) and the process."""
    return f"{socket.gethostname()}-{os.getpid()}"


class LeaseStore:
    def __init__(self, js: JetStreamContext, kv: KeyValue, ttl_seconds: int, holder: str | None = None,
                 bucket: str = names.LEASES_BUCKET) -> None:
        self.js = js
        self.kv = kv
        self.bucket = bucket
        self.stream = names.kv_stream(bucket)
        self.ttl = ttl_seconds
        self.holder = holder or holder_id()
        self._held: set[str] = set()  # the ids of this store's leases not yet released

    async def _read_slots(self, tenant: str) -> tuple[Slots, int]:
        """The tenant's admitted ids and the revision to compare-and-set against."""
        try:
            entry = await self.kv.get(slots_key(tenant))
        except KeyNotFoundError as exc:  # absent, or deleted (then write after the marker)
            return Slots(), (exc.entry.revision or 0) if exc.entry is not None else 0
        return decode_slots(entry.value), entry.revision or 0

    async def _alive(self, tenant: str, lease_id: str) -> bool:
        """Whether the lease key exists and is not deleted, asked of the stream's leader."""
        try:
            msg = await self.js.get_msg(self.stream, subject=names.kv_subject(self.bucket, lease_key(tenant, lease_id)))
        except NotFoundError:  # expired, or never written
            return False
        return not (msg.headers and msg.headers.get(KV_OP) in (KV_DEL, KV_PURGE))

    async def _write_slots(self, tenant: str, ids: list[str], last: int) -> None:
        await write_if_last(self.js, self.bucket, slots_key(tenant), msgspec.json.encode(Slots(ids)), last)

    async def try_acquire(self, tenant: str, limit: int, request_id: str = "") -> Lease | None:
        """An admitted lease, or None when ``limit`` executions of the tenant run now.

        The lease key is written while the list is read (nobody sees its id before the list is
        written, step 2); the listed leases are checked all at once, and those this store holds
        need no check (they are live while their run goes on: ``refresh`` keeps them so)."""
        lease_id = uuid.uuid4().hex
        key = lease_key(tenant, lease_id)
        value = LeaseValue(holder=self.holder, request_id=request_id)
        creating = asyncio.ensure_future(self.kv.create(key, msgspec.json.encode(value), msg_ttl=self.ttl))
        try:
            listed: tuple[Slots, int] | None = await self._read_slots(tenant)
            revision = await creating
            for attempt in range(MAX_ROUNDS):
                slots, last = listed or await self._read_slots(tenant)
                listed = None
                alive = await self._live(tenant, slots.leases)
                if len(alive) >= limit:
                    await self.withdraw_key(key)
                    return None
                try:
                    await self._write_slots(tenant, [*alive, lease_id], last)
                except KeyWrongLastSequenceError:  # another admission or release came first
                    await _back_off(attempt)
                    continue
                self._held.add(lease_id)
                return Lease(tenant, lease_id, key, revision, value)
        except BaseException:
            if not creating.done():
                creating.cancel()
            await self.withdraw_key(key)
            raise
        await self.withdraw_key(key)
        raise TimeoutError(f"the slots of tenant {tenant!r} are too contended")

    async def _live(self, tenant: str, ids: list[str]) -> list[str]:
        """The listed ids whose lease is live, in their order."""
        asked = [i for i in ids if i not in self._held]
        answers = dict(zip(asked, await asyncio.gather(*(self._alive(tenant, i) for i in asked)), strict=True))
        return [i for i in ids if answers.get(i, True)]

    async def mark_admitted(self, lease: Lease) -> None:
        """Say in the lease that its run goes on: what the operator counts as running
        (``quota_keys.lease_admitted``). Written while the run starts, not before it."""
        lease.value = msgspec.structs.replace(lease.value, admitted=True)
        await self.refresh(lease)

    async def refresh(self, lease: Lease) -> None:
        """Rewrite the lease with a fresh TTL; if it was lost (expired while this replica could
        not reach NATS), write it again so that it counts while the run goes on."""
        data = msgspec.json.encode(lease.value)
        try:
            lease.revision = await write_if_last(self.js, self.bucket, lease.key, data, lease.revision, self.ttl)
        except KeyWrongLastSequenceError:
            log.warning("execution lease expired while its run went on; taking it again", key=lease.key)
            lease.revision = await self.kv.create(lease.key, data, msg_ttl=self.ttl)
            await self._relist(lease)

    async def _relist(self, lease: Lease) -> None:
        """Put a lost lease's id back on the list (an admission may have pruned it), over the
        limit if need be: the run is going on, so later admissions must count it."""
        for attempt in range(MAX_ROUNDS):
            slots, last = await self._read_slots(lease.tenant)
            if lease.lease_id in slots.leases:
                return
            try:
                await self._write_slots(lease.tenant, [*slots.leases, lease.lease_id], last)
                return
            except KeyWrongLastSequenceError:
                await _back_off(attempt)

    async def release(self, lease: Lease) -> None:
        """Delete the lease and take its id off the tenant's list (best effort: the lease
        expires on its own, and the next admission prunes an id without a live lease)."""
        self._held.discard(lease.lease_id)
        try:
            listed: tuple[Slots, int] | None
            _, listed = await asyncio.gather(self.withdraw_key(lease.key), self._read_slots(lease.tenant))
            for attempt in range(MAX_ROUNDS):
                slots, last = listed or await self._read_slots(lease.tenant)
                listed = None
                if lease.lease_id not in slots.leases:
                    return
                try:
                    await self._write_slots(lease.tenant, [i for i in slots.leases if i != lease.lease_id], last)
                    return
                except KeyWrongLastSequenceError:
                    await _back_off(attempt)
        except Exception as exc:
            log.warning("could not release an execution slot; the next admission prunes it",
                        key=lease.key, error=str(exc) or type(exc).__name__)

    async def withdraw_key(self, key: str) -> None:
        try:
            await self.kv.purge(key, msg_ttl=MARKER_TTL_SECONDS)
        except Exception as exc:  # the lease expires on its own
            log.warning("could not delete an execution lease; it expires on its own", key=key,
                        error=str(exc) or type(exc).__name__)


class ReleaseSignals:
    """Wakes the executions queued for a tenant when its list of admitted leases shrinks, on
    this replica or another (a watch of every ``slots.<tenant>`` key)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._events: dict[str, asyncio.Event] = {}
        self._sizes: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def event(self, tenant: str) -> asyncio.Event:
        """Set at the tenant's next release. Take it before an attempt, so that a release
        during the attempt is not missed."""
        return self._events.setdefault(tenant, asyncio.Event())

    def notify(self, tenant: str) -> None:
        event = self._events.pop(tenant, None)
        if event is not None:
            event.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="slots-watch")

    async def _watch(self) -> None:
        await follow(self.kv, self._seen, what="slots", keys=f"{SLOTS_PREFIX}.*")

    def _seen(self, key: str, _revision: int, value: bytes | None) -> None:
        tenant = tenant_of_slots_key(key)
        if tenant is None:
            return
        size = len(decode_slots(value).leases)  # (a deleted list is empty)
        if size < self._sizes.get(tenant, 0):
            self.notify(tenant)
        self._sizes[tenant] = size

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
