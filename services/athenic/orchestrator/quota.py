"""Admission of executions under each tenant's ``SandboxQuota``, across every replica.

``QuotaGate.slot(tenant, ...)`` is held around each run. On entry it reads the tenant's
policy in force *now* (the ``PolicyCache`` follows the policies bucket, so a change applies
to the next admission within the watch's latency, without a restart), then:

- takes a lease (``leases.py``): at most ``maxConcurrentExecutions`` leases of a tenant are
  admitted at once over all replicas, and a dead replica's leases expire; the same write
  counts the execution in the tenant's minute: at most ``maxExecutionsPerMinute`` start per
  UTC minute (only admitted executions are counted);
- when either limit is reached, ``onExceed: Reject`` raises ``QuotaExceeded`` (the app gets
  a ``failed`` answer naming the limit) and ``onExceed: Queue`` waits: for a release of one
  of the tenant's leases (watched) or a periodic re-check, or for the next minute. Waiting
  keeps the message (the worker keeps sending in-progress acks); nothing is lost.

While the run lasts the lease is rewritten every third of its TTL; once the answer is written
it is given back (``settled``: parked for this replica's next run of the tenant, or deleted;
``LeaseStore.finish``), before the message is acked, so the conversation's next message
never finds its predecessor's slot still taken (a parked one gives way); a message's next run
frees its earlier run's slot first. A message whose first run is known from its text
(``ahead``) is admitted while it is read, before it asks: one attempt, no wait; refused, its
run is admitted as usual; not used, it is given back and its minute does not count it.
The policy the gate admitted under is what the run uses (timeout, memory, template...).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import nats.errors
from prometheus_client import Counter, Gauge

from athenic.orchestrator.errors import QuotaExceeded, RetryableError, TerminalError
from athenic.orchestrator.leases import Lease, LeaseStore, ReleaseSignals
from athenic.orchestrator.policies import PolicyCache
from athenic.orchestrator.settings import QuotaSettings
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.logging import get_logger
from athenic.shared.policy import SandboxPolicy
from athenic.shared.timeouts import within

log = get_logger(__name__)

DECISIONS = Counter("athenic_orchestrator_quota_decisions_total",
                    "Executions admitted at once, admitted after queueing, or rejected by a quota", ["outcome"])
WAITING = Gauge("athenic_orchestrator_quota_waiting", "Executions queued by a quota now")

OnQueued = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Refusal:
    message: str
    retry_in: float | None = None  # seconds until the next minute (per-minute limit); None: at a release


def concurrency_refusal(tenant: str, policy: SandboxPolicy) -> Refusal:
    limit = policy.max_concurrent_executions
    return Refusal(f"sandbox quota exceeded: tenant {tenant!r} may run at most {limit} execution"
                   f"{'s' if limit != 1 else ''} at a time (maxConcurrentExecutions); "
                   "try again when a running one has finished")


def rate_refusal(tenant: str, policy: SandboxPolicy, retry_in: float) -> Refusal:
    limit = policy.max_executions_per_minute
    return Refusal(f"sandbox quota exceeded: tenant {tenant!r} may start at most {limit} execution"
                   f"{'s' if limit != 1 else ''} per minute (maxExecutionsPerMinute); "
                   f"try again in {max(round(retry_in), 1)} s", retry_in)


class QuotaGate:
    def __init__(self, leases: LeaseStore, signals: ReleaseSignals, policies: PolicyCache,
                 settings: QuotaSettings) -> None:
        self.leases = leases
        self.signals = signals
        self.policies = policies
        self.settings = settings
        self._ended: defaultdict[str, list[tuple[asyncio.Task[None] | None, Lease]]] = defaultdict(list)  # by request
        self._releasing: set[asyncio.Task[None]] = set()
        self._ahead: dict[str, asyncio.Task[tuple[Lease, SandboxPolicy] | None]] = {}  # by request id

    def ahead(self, tenant: str, request_id: str) -> None:
        """The message's first run is known before planning: try to admit it now, while the
        message is read. One attempt, never a wait: refused, the run is admitted (or queued)
        as usual when it comes. An admission the message does not use is given back by
        ``settled``."""
        if request_id not in self._ahead:
            self._ahead[request_id] = asyncio.create_task(self._try_ahead(tenant, request_id),
                                                          name=f"admit-ahead-{request_id}")

    async def _try_ahead(self, tenant: str, request_id: str) -> tuple[Lease, SandboxPolicy] | None:
        policy = self.policies.for_tenant(tenant)
        try:
            outcome = await self._attempt(tenant, policy, request_id)
        except Exception as exc:  # the run's own admission meets it again and says so
            log.debug("admission ahead of the run failed", tenant=tenant, error=str(exc) or type(exc).__name__)
            return None
        return (outcome, policy) if isinstance(outcome, Lease) else None

    def slot(self, tenant: str, policy: SandboxPolicy, request_id: str = "",
             on_queued: OnQueued | None = None) -> AbstractAsyncContextManager[SandboxPolicy]:
        """Hold a slot of ``tenant`` around one run; yields the policy in force at admission
        (``policy``, captured when the message started, is superseded by the current one)."""
        return self._slot(tenant, request_id, on_queued)

    @asynccontextmanager
    async def _slot(self, tenant: str, request_id: str, on_queued: OnQueued | None) -> AsyncIterator[SandboxPolicy]:
        await self._give_back(request_id, unused_ahead=False)  # an earlier run of the message frees its slot first
        early = self._ahead.pop(request_id, None)
        admitted = await early if early is not None else None
        if admitted is not None:
            DECISIONS.labels("admitted").inc()
        lease, policy = admitted or await self._admit(tenant, request_id, on_queued)
        # (ended by the event, not by a cancel alone: Python 3.11's wait_for, under every nats-py
        # request, returns a reply that lands with the cancel and drops the cancel)
        done = asyncio.Event()
        keeper = asyncio.create_task(self._keep(lease, done), name=f"lease-{lease.key}")
        try:
            yield policy
        finally:
            done.set()
            keeper.cancel()
            # given back once the answer is written (``settled``, before the message is acked),
            # or when the message's next run starts: the answer's writes do not wait behind it
            self._ended[request_id].append((keeper, lease))

    async def _give_back(self, request_id: str, *, unused_ahead: bool) -> None:
        ended = self._ended.pop(request_id, [])
        early = self._ahead.pop(request_id, None) if unused_ahead else None
        if early is not None and (admitted := await early) is not None:
            ended.append((None, admitted[0]))  # (no keeper: no run took it)
        if not ended:
            return
        releases = [asyncio.create_task(self._release(keeper, lease), name=f"release-{lease.key}")
                    for keeper, lease in ended]
        self._releasing.update(releases)
        for release in releases:
            release.add_done_callback(self._releasing.discard)
        # (shielded: a message cancelled meanwhile still gives its slots back)
        await asyncio.shield(asyncio.gather(*releases, return_exceptions=True))

    async def _release(self, keeper: asyncio.Task[None] | None, lease: Lease) -> None:
        """Give a slot back; one without a keeper was admitted ahead and no run used it, so its
        minute does not count it."""
        if keeper is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await self.leases.finish(lease, unused=keeper is None)
        self.signals.notify(lease.tenant)

    async def settled(self, request_id: str) -> None:
        """Give back, in NATS, the slots the runs of ``request_id`` held (and one admitted ahead
        that no run took), and wait for it: the conversation's next message, here or on another
        replica, counts only what runs."""
        await self._give_back(request_id, unused_ahead=True)

    async def _admit(self, tenant: str, request_id: str, on_queued: OnQueued | None) -> tuple[Lease, SandboxPolicy]:
        queued = False
        while True:
            policy = self.policies.for_tenant(tenant)
            released = self.signals.event(tenant)
            # (attempts of a tenant meeting on this replica are written together: leases.py)
            outcome = await self._attempt(tenant, policy, request_id)
            if isinstance(outcome, Lease):
                if queued:
                    log.info("queued execution admitted", tenant=tenant)
                DECISIONS.labels("admitted_after_queue" if queued else "admitted").inc()
                return outcome, policy
            if policy.on_exceed == "Reject":
                log.info("execution refused by quota", tenant=tenant, reason=outcome.message)
                DECISIONS.labels("rejected").inc()
                raise QuotaExceeded(outcome.message)
            if not queued:
                queued = True
                log.info("execution queued by quota", tenant=tenant, reason=outcome.message)
                if on_queued is not None:
                    await on_queued()
            with WAITING.track_inprogress():
                await self._wait(released, outcome)

    async def _attempt(self, tenant: str, policy: SandboxPolicy, request_id: str) -> Lease | Refusal:
        try:
            outcome = await self.leases.try_acquire(tenant, policy.max_concurrent_executions,
                                                    policy.max_executions_per_minute, request_id)
        except ValueError as exc:  # a tenant no key may hold (the api validates tenants)
            raise TerminalError(f"cannot apply the sandbox quota: {exc}") from exc
        except (TimeoutError, nats.errors.Error) as exc:
            raise RetryableError(f"the quota store is unavailable: {str(exc) or type(exc).__name__}") from exc
        if isinstance(outcome, Lease):
            return outcome
        if outcome.retry_in is None:
            return concurrency_refusal(tenant, policy)
        return rate_refusal(tenant, policy, outcome.retry_in)

    async def _wait(self, released: asyncio.Event, refusal: Refusal) -> None:
        recheck = self.settings.athenic_quota_recheck_seconds
        jitter = random.uniform(0, recheck / 4)  # noqa: S311 - spreads re-checks, not secrecy
        if refusal.retry_in is not None:  # nothing frees a minute's units before it ends
            await asyncio.sleep(min(refusal.retry_in + jitter, recheck))
            return
        with contextlib.suppress(TimeoutError):
            await within(released.wait(), recheck + jitter)

    async def _keep(self, lease: Lease, done: asyncio.Event) -> None:
        """Mark the lease admitted, then rewrite it every third of its TTL until ``done``."""
        interval = self.leases.ttl / 3
        try:
            await self.leases.mark_admitted(lease)
        except Exception as exc:  # the next round writes it
            log.warning("could not mark an execution lease admitted; retrying", key=lease.key,
                        error=str(exc) or type(exc).__name__)
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await within(done.wait(), interval)
                return
            try:
                await self.leases.refresh(lease)
            except Exception as exc:  # NATS unreachable for now: the next round tries again
                log.warning("could not refresh an execution lease; retrying", key=lease.key,
                            error=str(exc) or type(exc).__name__)

    async def aclose(self) -> None:
        await asyncio.gather(*(self.settled(request_id) for request_id in {*self._ahead, *self._ended}),
                             return_exceptions=True)
        await asyncio.gather(*self._releasing, return_exceptions=True)
        await self.signals.aclose()
        await self.leases.aclose()


async def make_gate(broker: Broker, policies: PolicyCache, settings: QuotaSettings) -> QuotaGate:
    """The execution gate of this replica, watching releases from now on."""
    kv = broker.bucket(names.LEASES_BUCKET)
    leases = LeaseStore(broker.js, kv, settings.athenic_lease_ttl_seconds)
    signals = ReleaseSignals(kv, observer=leases.saw)
    await signals.start()
    return QuotaGate(leases, signals, policies, settings)
