"""The E2B warm pool: fresh sandboxes ready for new conversations, shared by every replica.

A *shape* is what a sandbox is created with and cannot change afterwards: its template and
whether it may reach the internet. Each tenant's ``e2bWarmPool`` asks for that many fresh
sandboxes of its shape; a shape's target is the largest ask among the tenants that have it (two
tenants with the same template and internet setting share one pool: a pooled sandbox has
never run anyone's code, so nothing of one tenant can reach the other). A tenant whose shape
has no pool, or whose pool is empty, gets a sandbox created as before.

The pool lives in the sandboxes bucket as ``pool.<shape>.<slot>`` keys, slots 0..target-1.
Filling a slot starts with an atomic ``create`` of its key (``creating``), so across replicas
each slot is filled once; the sandbox id is written when E2B has created it (``ready``). A
claim deletes a ready slot with compare-and-set: exactly one replica gets each sandbox, and
the slot is free for the next fill. A creation that fails frees its slot and is retried on the
next round; nothing waits for it, so E2B failing pre-creations never blocks a message (the
claim misses, the run creates its own sandbox). A slot stuck in ``creating`` (its replica
died) is freed after ``STALE_CREATING_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from e2b import NotFoundException

from athenic.orchestrator.sandbox.e2b_control import DEFAULT_TEMPLATE, E2BControl
from athenic.orchestrator.sandbox.e2b_directory import POOL_PREFIX, Conflict, PoolSlot, SandboxDirectory, now
from athenic.orchestrator.sandbox.e2b_metrics import POOL_CLAIMS, SANDBOX_EVENTS
from athenic.shared.logging import get_logger
from athenic.shared.policy import SandboxPolicy

log = get_logger(__name__)

# E2B's lifetime of a pooled sandbox; refreshed while it waits (at half of it).
POOL_LIFETIME_SECONDS = 1800
STALE_CREATING_SECONDS = 120.0


@dataclass(frozen=True)
class Shape:
    template: str
    allow_internet: bool

    @property
    def key(self) -> str:
        """A KV-safe token for the shape (a template name may hold ``/``, ``:`` or ``.``)."""
        digest = hashlib.sha256(f"{self.template}\0{self.allow_internet}".encode()).hexdigest()
        return digest[:20]


def pool_targets(policies: Iterable[SandboxPolicy], default_template: str | None) -> dict[Shape, int]:
    targets: dict[Shape, int] = {}
    for policy in policies:
        if policy.e2b_warm_pool <= 0:
            continue
        shape = Shape(policy.e2b_template or default_template or DEFAULT_TEMPLATE, policy.allow_internet)
        targets[shape] = max(targets.get(shape, 0), policy.e2b_warm_pool)
    return targets


class WarmPool:
    def __init__(self, directory: SandboxDirectory, control: E2BControl, replica: str,
                 targets: Callable[[], dict[Shape, int]]) -> None:
        self.directory = directory
        self.control = control
        self.replica = replica
        self.targets = targets
        self.hits = 0
        self.misses = 0
        self.wanted = asyncio.Event()  # set to refill now rather than at the next round

    async def claim(self, shape: Shape, *, lifetime: int, client_id: str) -> Any | None:
        """A pooled sandbox of ``shape`` connected with ``lifetime``, or None (never raises)."""
        if self.targets().get(shape, 0) <= 0:
            return None
        try:
            slots = sorted(await self.directory.slots(shape.key), key=lambda entry: entry.slot.since)
            for entry in slots:
                if entry.slot.state != "ready":
                    continue
                try:
                    await self.directory.remove(entry.key, revision=entry.revision)
                except Conflict:
                    continue  # another replica claimed it
                try:
                    sandbox = await self.control.connect(entry.slot.sandbox_id, lifetime=lifetime)
                    # connect only ever lengthens a running sandbox's lifetime: the pool's is longer
                    await self.control.set_timeout(entry.slot.sandbox_id, lifetime)
                except NotFoundException:
                    continue
                self.hits += 1
                POOL_CLAIMS.labels("hit").inc()
                log.info("e2b warm sandbox claimed", client_id=client_id, sandbox_id=entry.slot.sandbox_id)
                return sandbox
        except Exception as exc:
            log.warning("e2b warm pool claim failed; creating instead", client_id=client_id,
                        error=f"{type(exc).__name__}: {exc}")
        finally:
            self.wanted.set()
        self.misses += 1
        POOL_CLAIMS.labels("miss").inc()
        log.info("e2b warm pool empty; creating", client_id=client_id, template=shape.template)
        return None

    async def refill(self) -> None:
        """One round: fill empty slots, refresh waiting ones, free stale and surplus ones."""
        targets = self.targets()
        by_shape: dict[str, list[Any]] = {}
        for entry in await self.directory.all_slots():
            by_shape.setdefault(entry.key.removeprefix(POOL_PREFIX).split(".", 1)[0], []).append(entry)
        work = [self._fill(shape, target, by_shape.pop(shape.key, [])) for shape, target in targets.items()]
        # shapes no tenant asks for any more: their sandboxes go
        work.extend(self._drop(entry, "no longer wanted") for entries in by_shape.values() for entry in entries)
        await asyncio.gather(*work)

    async def _fill(self, shape: Shape, target: int, entries: list[Any]) -> None:
        present = {entry.key: entry for entry in entries}
        work: list[Coroutine[Any, Any, object]] = []
        for slot_number in range(target):
            key = f"{POOL_PREFIX}{shape.key}.{slot_number}"
            entry = present.pop(key, None)
            if entry is None:
                work.append(self._create_into(key, shape))
            elif entry.slot.state == "creating" and now() - entry.slot.since > STALE_CREATING_SECONDS:
                work.append(self._free(entry))
            elif entry.slot.state == "ready" and now() - entry.slot.since > POOL_LIFETIME_SECONDS / 2:
                work.append(self._refresh(entry))
        work.extend(self._drop(entry, "over the pool size") for entry in present.values())
        await asyncio.gather(*work)

    async def _create_into(self, key: str, shape: Shape) -> None:
        taking = PoolSlot(state="creating", since=now(), template=shape.template,
                          allow_internet=shape.allow_internet, by=self.replica)
        revision = await self.directory.take_slot(key, taking)
        if revision is None:
            return  # another replica fills it
        try:
            sandbox = await self.control.create(
                template=shape.template, allow_internet=shape.allow_internet, lifetime=POOL_LIFETIME_SECONDS,
                metadata={"service": "athenic", "pool": shape.key},
            )
        except Exception as exc:
            log.warning("e2b warm sandbox creation failed; retried later", template=shape.template,
                        error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                await self.directory.remove(key, revision=revision)
            return
        ready = PoolSlot(state="ready", since=now(), template=shape.template, allow_internet=shape.allow_internet,
                         by=self.replica, sandbox_id=sandbox.sandbox_id)
        try:
            await self.directory.fill_slot(key, ready, revision=revision)
        except Exception:
            # the slot was freed as stale meanwhile: this sandbox is nobody's
            await self._kill(sandbox.sandbox_id, "slot lost")
            return
        SANDBOX_EVENTS.labels("created", "warm pool").inc()
        log.info("e2b warm sandbox ready", sandbox_id=sandbox.sandbox_id, template=shape.template)

    async def _refresh(self, entry: Any) -> None:
        try:
            await self.control.set_timeout(entry.slot.sandbox_id, POOL_LIFETIME_SECONDS)
        except NotFoundException:
            await self._free(entry)
            return
        with contextlib.suppress(Conflict):
            refreshed = PoolSlot(state="ready", since=now(), template=entry.slot.template,
                                 allow_internet=entry.slot.allow_internet, by=entry.slot.by,
                                 sandbox_id=entry.slot.sandbox_id)
            await self.directory.fill_slot(entry.key, refreshed, revision=entry.revision)

    async def _free(self, entry: Any) -> bool:
        try:
            await self.directory.remove(entry.key, revision=entry.revision)
        except Conflict:
            return False
        return True

    async def _drop(self, entry: Any, reason: str) -> None:
        if await self._free(entry) and entry.slot.sandbox_id:
            await self._kill(entry.slot.sandbox_id, reason)

    async def _kill(self, sandbox_id: str, reason: str) -> None:
        try:
            await self.control.kill(sandbox_id)
            SANDBOX_EVENTS.labels("killed", reason).inc()
            log.info("e2b warm sandbox killed", sandbox_id=sandbox_id, reason=reason)
        except Exception as exc:
            log.warning("e2b warm sandbox kill failed", sandbox_id=sandbox_id, error=str(exc))

    async def pause_own(self) -> int:
        """On shutdown: pause the ready sandboxes this replica created (a claim resumes them)."""
        try:
            entries = [entry for entry in await self.directory.all_slots()
                       if entry.slot.state == "ready" and entry.slot.by == self.replica]
        except Exception as exc:
            log.warning("e2b warm pool not paused at shutdown", error=str(exc))
            return 0
        results = await asyncio.gather(*(self.control.pause(entry.slot.sandbox_id) for entry in entries),
                                       return_exceptions=True)
        return sum(1 for result in results if result is True)
