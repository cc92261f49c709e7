"""Leases of running executions in NATS KV: how a tenant's quota holds across replicas.

Keys follow ``athenic.shared.quota_keys``. Each execution holds a ``lease.<tenant>.<id>``
key with a per-message TTL (``ATHENIC_LEASE_TTL_SECONDS``), rewritten every third of it while
the run lasts and purged when it ends: a replica that dies stops rewriting, so its leases
vanish after at most one TTL. The tenant's ``slots.<tenant>`` key lists the ids admitted and
counts the executions admitted in the current minute.

Admission (``LeaseStore.try_acquire``):

1. create the lease key (``kv.create``, a fresh id), so it is live before anyone can see its
   id (a candidate, not yet admitted: the operator does not count it);
2. take ``slots.<tenant>`` (ids, minute count and the key's revision) as this replica last saw
   it (its own writes and a watch of every ``slots`` key), keep the ids whose lease key is
   still live (read from the stream's leader), and if fewer than ``maxConcurrentExecutions``
   remain and fewer than ``maxExecutionsPerMinute`` started this minute, write them plus my id
   and the count plus one with compare-and-set on that revision. A lost race (or a stale view)
   reads the key again; a refusal is only given on a fresh read. The admissions and releases
   of a tenant that meet on one replica are written together, in order: one write of the list
   admits (and frees) as many as the limits allow, so a busy tenant is not held to one
   admission per round trip.

Parked leases (a run in a millisecond must not pay four round trips to the quota): an
admission reserves ``RESERVE_UNITS`` more executions of its minute, counted in the same write,
while the minute has room for that many for each execution the tenant may run at once and more
(``_reserve``: near its per-minute limit a tenant's every run is counted by its list). When
its run ends (``finish``) and the list, as last seen, is below the concurrency limit, the lease
is *parked* instead of released: still listed, ``"parked": true``, its reserve in the value. The
replica's next run of the tenant in that minute claims it (``_claim``): one compare-and-set of
the lease key at the revision it was parked at, which marks it admitted and takes one
execution off its reserve; no write of the list. A parked lease no run claims within
``PARK_SECONDS`` is released with its reserve given back to the minute (``_give_up``, a purge
compared with the same revision). An admission anywhere that would be refused first takes back
the tenant's parked leases (``_take_back``: a purge compared with the revision it read, so a
lease is either claimed by its holder or taken back, never both; the taker gives its reserve
back), so a parked lease never makes anyone wait. Releases and claims keep their counts exact:
every execution that runs used a unit counted before it ran, and a unit given back was never
used. What a running lease reserves is not taken back; its holder's next runs use it or give
it back within ``PARK_SECONDS`` of its end (only tenants far below their per-minute limit
reserve at all).

Why no race exceeds a limit: every admission is one compare-and-set of the same key, so
admissions are totally ordered and each sees the list and count the previous one wrote. An
execution that runs was admitted by an earlier write and its id stays listed until it is
released (or until its lease is gone, which a live holder prevents by rewriting it), and its
lease is live when the next admission checks it (a parked lease counts too, until it is taken
back; a claim adds no id, and needs a lease still parked at its revision). So each admission
counts every execution running at that moment, and adds itself only when they are fewer than
the limit. Reading the lease keys through the stream's leader (not a direct get that a
follower may serve) keeps "live" exact.

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
import math
import os
import random
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from athenic.shared import names
from athenic.shared.kv import follow, purge_if_last, write_if_last
from athenic.shared.logging import get_logger
from athenic.shared.quota_keys import (
    SLOTS_PREFIX,
    LeaseValue,
    Slots,
    decode_lease,
    decode_slots,
    encode_slots,
    epoch_minute,
    lease_key,
    slots_key,
    tenant_of_slots_key,
)

log = get_logger(__name__)

MAX_ROUNDS = 50
# A deleted lease's purge marker only has to outlive a watcher's reading of it; its own TTL
# removes it, so the bucket does not keep a tombstone per execution ever run.
MARKER_TTL_SECONDS = 60
# The executions of its minute an admission reserves for its replica's next runs of the tenant,
# when the minute has room for that many per admitted execution and more (see the module doc).
RESERVE_UNITS = 16
# How long a parked lease waits for its replica's next run of the tenant before it is released.
PARK_SECONDS = 2.0


@dataclass
class Lease:
    tenant: str
    lease_id: str
    key: str
    revision: int
    value: LeaseValue  # as the key holds it at ``revision`` (or will, once the run marks it admitted)
    minute: int = 0  # the epoch minute whose count holds this admission
    limit: int = 0  # the concurrency limit it was admitted under


class Full(NamedTuple):
    """A refused admission: ``retry_in`` is None at the concurrency limit, else the seconds
    until the next minute (the minute's executions are used up)."""

    retry_in: float | None = None


@dataclass
class _Candidate:
    """A lease key created for an admission and not yet listed."""

    lease_id: str
    key: str
    revision: int


_Done = asyncio.Future[None]


class _Release(NamedTuple):
    """A release waiting for the tenant's next write of its list."""

    lease_id: str
    minute: int  # the minute whose count gives back ``units``
    units: int  # executions counted and not run: an admission no run used, what the lease reserved
    done: _Done


@dataclass(eq=False)
class _Admission:
    """An admission waiting for the tenant's next write of its list."""

    candidate: _Candidate
    limit: int
    per_minute: int | None
    request_id: str
    outcome: asyncio.Future[Lease | Full]


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


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
        self.park_seconds = min(PARK_SECONDS, ttl_seconds / 3)  # (a parked lease needs no rewrite)
        self.holder = holder or holder_id()
        self._held: set[str] = set()  # the ids of this store's leases not yet released (running or parked)
        self._seen: dict[str, tuple[Slots, int]] = {}  # each tenant's slots as last seen, with their revision
        self._tasks: set[asyncio.Task[None]] = set()
        # what waits to be written to each tenant's list, and the writer doing it
        self._admissions: defaultdict[str, list[_Admission]] = defaultdict(list)
        self._releases: defaultdict[str, list[_Release]] = defaultdict(list)
        self._writers: dict[str, asyncio.Task[None]] = {}
        self._parked: defaultdict[str, list[Lease]] = defaultdict(list)  # by tenant, the latest last
        self._park_timers: dict[str, asyncio.TimerHandle] = {}  # by lease id
        self._closing = False

    def saw(self, tenant: str, revision: int, slots: Slots) -> None:
        """What ``slots.<tenant>`` holds at ``revision`` (a write here, or the watch's news)."""
        known = self._seen.get(tenant)
        if known is None or revision > known[1]:
            self._seen[tenant] = (slots, revision)

    async def _read_slots(self, tenant: str) -> tuple[Slots, int]:
        """The tenant's slots and the revision to compare-and-set against, read now."""
        try:
            entry = await self.kv.get(slots_key(tenant))
        except KeyNotFoundError as exc:  # absent, or deleted (then write after the marker)
            read = Slots(), (exc.entry.revision or 0) if exc.entry is not None else 0
        else:
            read = decode_slots(entry.value), entry.revision or 0
        self.saw(tenant, read[1], read[0])
        return read

    async def _state(self, tenant: str, lease_id: str) -> tuple[LeaseValue, int] | None:
        """The lease key's value and revision, asked of the stream's leader; None when it is gone
        (expired, deleted or never written)."""
        try:
            msg = await self.js.get_msg(self.stream, subject=names.kv_subject(self.bucket, lease_key(tenant, lease_id)))
        except NotFoundError:
            return None
        if msg.headers and msg.headers.get(KV_OP) in (KV_DEL, KV_PURGE):
            return None
        return decode_lease(msg.data), msg.seq or 0

    async def _write_slots(self, tenant: str, slots: Slots, last: int) -> None:
        revision = await write_if_last(self.js, self.bucket, slots_key(tenant), encode_slots(slots), last)
        self.saw(tenant, revision, slots)

    async def _create(self, tenant: str) -> _Candidate:
        lease_id = uuid.uuid4().hex
        key = lease_key(tenant, lease_id)
        revision = await self.kv.create(key, msgspec.json.encode(LeaseValue(holder=self.holder)), msg_ttl=self.ttl)
        return _Candidate(lease_id, key, revision)

    def _background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def try_acquire(self, tenant: str, limit: int, per_minute: int | None = None,
                          request_id: str = "") -> Lease | Full:
        """An admitted lease, or why not: ``limit`` executions of the tenant run now, or
        ``per_minute`` (None: no such limit) were admitted this minute.

        A lease this replica parked for the tenant, with an execution of this minute reserved,
        admits at once (``_claim``). Otherwise the admissions and releases of a tenant that
        meet on this replica share one compare-and-set of its list (``_commit``), so a busy
        tenant's admissions do not queue behind one another's round trips."""
        claimed = await self._claim(tenant, limit, per_minute, request_id)
        if claimed is not None:
            return claimed
        candidate = await self._create(tenant)  # (live before anyone can see its id)
        admission = _Admission(candidate, limit, per_minute, request_id, asyncio.get_running_loop().create_future())
        self._admissions[tenant].append(admission)
        self._write(tenant)
        try:
            return await asyncio.shield(admission.outcome)
        except asyncio.CancelledError:
            if admission in self._admissions[tenant]:  # not written yet: it never will be
                self._admissions[tenant].remove(admission)
                self._background(self.withdraw_key(candidate.key), f"lease-withdraw-{tenant}")
            else:  # being written: what it comes to is undone
                admission.outcome.add_done_callback(lambda _: self._abandon(admission))
            raise
        except BaseException:
            await self.withdraw_key(candidate.key)
            raise

    async def _claim(self, tenant: str, limit: int, per_minute: int | None, request_id: str) -> Lease | None:
        """A lease this store parked for ``tenant``, now admitted for ``request_id`` with one of
        its reserved executions: one write of its own key, compared with the revision it was
        parked at (an admission elsewhere that needed it takes it back with the same compare).
        None when there is none to claim: the claim is then made by the tenant's list."""
        parked = self._parked.get(tenant)
        while parked:
            lease = parked.pop()
            self._stop_timer(lease)
            seen = self._seen.get(tenant)
            minute = epoch_minute(time.time())
            if (lease.minute != minute or seen is None or len(seen[0].leases) > limit
                    or (per_minute is not None and seen[0].started_in(minute) > per_minute)):
                # its reserve is for a past minute, or a limit went down below what the list holds:
                # given back before the admission is decided, which counts what it gives back
                await self._give_up(lease)
                continue
            value = msgspec.structs.replace(lease.value, request_id=request_id, admitted=True, parked=False,
                                            reserve=lease.value.reserve - 1)
            try:
                lease.revision = await write_if_last(self.js, self.bucket, lease.key, msgspec.json.encode(value),
                                                     lease.revision, self.ttl)
            except KeyWrongLastSequenceError:  # taken back (or expired): no longer this store's
                self._held.discard(lease.lease_id)
                continue
            except BaseException:
                # not known whether it was claimed: given up without its reserve (which another
                # replica may have taken back already), so that it holds no slot until it expires
                self._held.discard(lease.lease_id)
                lease.value = msgspec.structs.replace(lease.value, reserve=0)
                self._background(self.release(lease), f"release-{lease.key}")
                raise
            lease.value, lease.limit = value, limit
            return lease
        self._parked.pop(tenant, None)
        return None

    def _abandon(self, admission: _Admission) -> None:
        if admission.outcome.cancelled() or admission.outcome.exception() is not None:
            self._background(self.withdraw_key(admission.candidate.key), "lease-withdraw")
            return
        outcome = admission.outcome.result()
        if isinstance(outcome, Lease):
            self._background(self.release(outcome), f"release-{outcome.key}")

    def _write(self, tenant: str) -> None:
        """Have the tenant's pending admissions and releases written (one writer per tenant)."""
        if tenant not in self._writers:
            self._writers[tenant] = asyncio.create_task(self._writer(tenant), name=f"slots-writer-{tenant}")

    async def _writer(self, tenant: str) -> None:
        try:
            while self._admissions[tenant] or self._releases[tenant]:
                admissions, self._admissions[tenant] = self._admissions[tenant], []
                releases, self._releases[tenant] = self._releases[tenant], []
                try:
                    await self._commit(tenant, admissions, releases)
                except Exception as exc:
                    waiting: list[asyncio.Future[Any]] = [a.outcome for a in admissions]
                    waiting += [release.done for release in releases]
                    for future in waiting:
                        if not future.done():
                            future.set_exception(exc)
        finally:
            self._writers.pop(tenant, None)
            if not self._admissions[tenant] and not self._releases[tenant]:
                self._admissions.pop(tenant, None)
                self._releases.pop(tenant, None)

    async def _commit(self, tenant: str, admissions: list[_Admission], releases: list[_Release]) -> None:
        """One compare-and-set of the tenant's list for a batch: the releases' ids out (and the
        executions they counted and did not run out of their minute's count), then the
        admissions in order while the limits allow, each with its reserve (``_reserve``). The
        listed leases are checked all at once, and those this store holds need no check (they
        are live while their run goes on: ``refresh`` keeps them so). The list is taken as last
        seen; a refusal is only given on a fresh read, and after the parked leases were taken
        back (``_take_back``)."""
        leaving = {release.lease_id for release in releases}
        listed, fresh = self._seen.get(tenant), False
        if listed is None:
            listed, fresh = await self._read_slots(tenant), True
        taken: dict[str, tuple[int, int]] = {}  # parked leases taken back: their minute and reserve
        took = False
        for attempt in range(MAX_ROUNDS):
            slots, last = listed
            staying = [i for i in slots.leases if i not in leaving]
            alive, states = await self._live(tenant, staying) if admissions else (staying, {})
            now = time.time()
            minute = epoch_minute(now)
            refunded = sum(release.units for release in releases if release.minute == slots.minute)
            refunded += sum(units for at, units in taken.values() if at == slots.minute)
            counted = max(slots.started - refunded, 0)  # (in slots.minute)
            started = counted if slots.minute == minute else 0
            admitted: list[tuple[_Admission, int]] = []  # with what each reserves
            refused: list[tuple[_Admission, Full]] = []
            units = started
            for admission in admissions:
                if len(alive) + len(admitted) >= admission.limit:
                    refused.append((admission, Full()))
                elif admission.per_minute is not None and units >= admission.per_minute:
                    refused.append((admission, Full((minute + 1) * 60 - now)))
                else:
                    reserve = _reserve(admission, units + 1)
                    admitted.append((admission, reserve))
                    units += 1 + reserve
            if refused and not fresh:  # decided on what this replica saw last: refused only on what is there now
                listed, fresh = await self._read_slots(tenant), True
                continue
            if refused and not took:
                took = True
                if await self._take_back(tenant, states, taken):
                    continue
            written = Slots([*alive, *(a.candidate.lease_id for a, _ in admitted)],
                            minute if admitted else slots.minute, units if admitted else counted)
            if written != slots:
                try:
                    await self._write_slots(tenant, written, last)
                except KeyWrongLastSequenceError:  # another replica wrote first
                    await _back_off(attempt)
                    listed, fresh = await self._read_slots(tenant), True
                    continue
            for admission, reserve in admitted:
                self._held.add(admission.candidate.lease_id)
                value = LeaseValue(holder=self.holder, request_id=admission.request_id, minute=minute, reserve=reserve)
                _settle(admission.outcome, Lease(tenant, admission.candidate.lease_id, admission.candidate.key,
                                                 admission.candidate.revision, value, minute, admission.limit))
            for admission, full in refused:
                self._background(self.withdraw_key(admission.candidate.key), f"lease-withdraw-{tenant}")
                _settle(admission.outcome, full)
            for release in releases:
                _settle(release.done, None)
            return
        raise TimeoutError(f"the slots of tenant {tenant!r} are too contended")

    async def _live(self, tenant: str, ids: list[str]) -> tuple[list[str], dict[str, tuple[LeaseValue, int]]]:
        """The listed ids whose lease is live, in their order, and the states read of those this
        store does not hold."""
        asked = [i for i in ids if i not in self._held]
        if not asked:
            return list(ids), {}
        answers = dict(zip(asked, await asyncio.gather(*(self._state(tenant, i) for i in asked)), strict=True))
        states = {i: state for i, state in answers.items() if state is not None}
        return [i for i in ids if i not in answers or i in states], states

    async def _take_back(self, tenant: str, states: dict[str, tuple[LeaseValue, int]],
                         taken: dict[str, tuple[int, int]]) -> bool:
        """Take back the tenant's parked leases, this store's and the others' (``states``), for
        an admission that would be refused: each is purged if it is still parked at the
        revision read (its holder claims it with the same compare), and what it reserved
        goes back to its minute (``taken``). Whether any was taken."""
        mine = self._unpark(self._parked.pop(tenant, []))
        parked = [(lease.lease_id, lease.value, lease.revision) for lease in mine]
        parked += [(i, value, revision) for i, (value, revision) in states.items() if value.parked]
        if not parked:
            return False

        async def take(lease_id: str, value: LeaseValue, revision: int) -> None:
            try:
                await purge_if_last(self.js, self.bucket, lease_key(tenant, lease_id), revision, MARKER_TTL_SECONDS)
            except KeyWrongLastSequenceError:  # claimed (or given up) meanwhile
                return
            taken[lease_id] = (value.minute, value.reserve)

        await asyncio.gather(*(take(*lease) for lease in parked))
        return bool(taken)

    async def mark_admitted(self, lease: Lease) -> None:
        """Say in the lease that its run goes on: what the operator counts as running
        (``quota_keys.lease_admitted``). Written while the run starts, not before it (a claimed
        parked lease says so already)."""
        if lease.value.admitted:
            return
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
                await self._write_slots(lease.tenant, msgspec.structs.replace(
                    slots, leases=[*slots.leases, lease.lease_id]), last)
                return
            except KeyWrongLastSequenceError:
                await _back_off(attempt)

    async def finish(self, lease: Lease, *, unused: bool = False) -> None:
        """The run under ``lease`` ended (``unused``: no run started under it). The lease is
        parked for this replica's next run of the tenant when it still reserves an execution of
        this minute and the tenant's list, as last seen, has room (no other replica's execution
        can be waiting for this one's slot: those wait for the list to shrink); else released."""
        reserve = lease.value.reserve + (1 if unused else 0)
        seen = self._seen.get(lease.tenant)
        if (self._closing or reserve <= 0 or lease.minute != epoch_minute(time.time()) or seen is None
                or len(seen[0].leases) >= lease.limit):
            await self.release(lease, unused=unused)
            return
        value = LeaseValue(holder=self.holder, parked=True, minute=lease.minute, reserve=reserve)
        try:
            lease.revision = await write_if_last(self.js, self.bucket, lease.key, msgspec.json.encode(value),
                                                 lease.revision, self.ttl)
        except Exception as exc:  # (expired meanwhile, or NATS unreachable)
            log.debug("could not park an execution lease; releasing it", key=lease.key,
                      error=str(exc) or type(exc).__name__)
            await self.release(lease, unused=unused)
            return
        lease.value = value
        self._parked[lease.tenant].append(lease)
        self._park_timers[lease.lease_id] = asyncio.get_running_loop().call_later(
            self.park_seconds, self._park_over, lease)

    def _unpark(self, leases: list[Lease]) -> list[Lease]:
        """``leases``, taken off this store's parked ones: no longer held, their timers stopped."""
        for lease in leases:
            self._stop_timer(lease)
            self._held.discard(lease.lease_id)
        return leases

    def _stop_timer(self, lease: Lease) -> None:
        timer = self._park_timers.pop(lease.lease_id, None)
        if timer is not None:
            timer.cancel()

    def _park_over(self, lease: Lease) -> None:
        self._park_timers.pop(lease.lease_id, None)
        parked = self._parked.get(lease.tenant, [])
        if lease in parked:
            parked.remove(lease)
            self._background(self._give_up(lease), f"lease-unpark-{lease.tenant}")

    async def _give_up(self, lease: Lease) -> None:
        """Release a parked lease no run claimed, with what it reserved, unless an admission
        elsewhere took it back first (and gives its reserve back itself)."""
        self._held.discard(lease.lease_id)
        try:
            await purge_if_last(self.js, self.bucket, lease.key, lease.revision, MARKER_TTL_SECONDS)
        except KeyWrongLastSequenceError:
            return
        except Exception as exc:  # it expires on its own; an admission prunes its id
            log.warning("could not release a parked execution lease; it expires on its own", key=lease.key,
                        error=str(exc) or type(exc).__name__)
            return
        await self._unlist(lease, lease.value.reserve)

    async def release(self, lease: Lease, *, unused: bool = False) -> None:
        """Delete the lease and take its id off the tenant's list (best effort: the lease
        expires on its own, and the next admission prunes an id without a live lease), giving
        back to its minute what it reserved. ``unused``: no run started under it (admitted
        ahead of a run that never came), so its minute does not count it either."""
        self._held.discard(lease.lease_id)
        withdrawing = asyncio.ensure_future(self.withdraw_key(lease.key))
        try:
            await self._unlist(lease, lease.value.reserve + (1 if unused else 0))
        finally:
            await withdrawing

    async def _unlist(self, lease: Lease, units: int) -> None:
        done: _Done = asyncio.get_running_loop().create_future()
        self._releases[lease.tenant].append(_Release(lease.lease_id, lease.minute, units, done))
        self._write(lease.tenant)
        try:
            await asyncio.shield(done)
        except Exception as exc:
            log.warning("could not release an execution slot; the next admission prunes it",
                        key=lease.key, error=str(exc) or type(exc).__name__)

    async def withdraw_key(self, key: str) -> None:
        try:
            await self.kv.purge(key, msg_ttl=MARKER_TTL_SECONDS)
        except Exception as exc:  # the lease expires on its own
            log.warning("could not delete an execution lease; it expires on its own", key=key,
                        error=str(exc) or type(exc).__name__)

    async def aclose(self) -> None:
        """Release the parked leases; finish the pending writes and withdrawals."""
        self._closing = True
        parked = self._unpark([lease for leases in self._parked.values() for lease in leases])
        self._parked.clear()
        await asyncio.gather(*(self._give_up(lease) for lease in parked), return_exceptions=True)
        await asyncio.gather(*self._writers.values(), return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _reserve(admission: _Admission, units: int) -> int:
    """The executions an admission reserves for its replica's next runs of the tenant, with
    ``units`` counted in the minute once it is admitted: ``RESERVE_UNITS`` while the minute has
    room for that many more for each execution the tenant may run at once and for this one,
    else none (near its per-minute limit a tenant's every run is counted by its list)."""
    room = math.inf if admission.per_minute is None else admission.per_minute - units
    return RESERVE_UNITS if room >= RESERVE_UNITS * (admission.limit + 2) else 0


class ReleaseSignals:
    """Wakes the executions queued for a tenant when its list of admitted leases shrinks, on
    this replica or another (a watch of every ``slots.<tenant>`` key)."""

    def __init__(self, kv: KeyValue, observer: Callable[[str, int, Slots], None] | None = None) -> None:
        self.kv = kv
        self.observer = observer  # told every list seen (``LeaseStore.saw``)
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

    def _seen(self, key: str, revision: int, value: bytes | None) -> None:
        tenant = tenant_of_slots_key(key)
        if tenant is None:
            return
        slots = decode_slots(value)  # (a deleted list is empty)
        if self.observer is not None:
            self.observer(tenant, revision, slots)
        size = len(slots.leases)
        if size < self._sizes.get(tenant, 0):
            self.notify(tenant)
        self._sizes[tenant] = size

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
