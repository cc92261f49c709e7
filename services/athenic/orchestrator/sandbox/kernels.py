"""The kernels of one orchestrator: one per conversation, a warm pool of fresh ones, bounds.

A conversation (tenant and clientId) keeps its kernel (kernel.py) across its messages. A new
conversation takes a fresh kernel from the warm pool (a hit) or starts one (a miss); the pool
refills in the background, and a pooled kernel has never run anyone's code (the tenant's limits
are applied when it is claimed, by each run). Kernels are bounded per orchestrator and per
tenant: a new conversation over a bound evicts the least recently used idle kernel (of its
tenant first); a kernel idle for longer than its policy's ``sandboxIdleSeconds`` is evicted.
A conversation whose kernel is gone (evicted, crashed, killed at a limit) gets a fresh one on
its next run, and that run's ``Execution.notice`` says the earlier state is gone and why.
Runs of one conversation reach its kernel one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
from prometheus_client import Counter, Gauge

from athenic.orchestrator.sandbox.base import OutputSink, RunSpec
from athenic.orchestrator.sandbox.isolation import Limits
from athenic.orchestrator.sandbox.kernel import START_SECONDS, Kernel, KernelFailed, LimitsRefused
from athenic.orchestrator.sandbox.watchdog import Watchdog, over_budgets
from athenic.shared.logging import get_logger
from athenic.shared.messages import Execution, ExecutionError
from athenic.shared.timeouts import within

log = get_logger(__name__)

POOL_SIZE = Gauge("athenic_orchestrator_kernel_pool_size", "Fresh kernels ready in the warm pool")
POOL_HITS = Counter("athenic_orchestrator_kernel_pool_hits_total", "New conversations served a kernel from the pool")
POOL_MISSES = Counter("athenic_orchestrator_kernel_pool_misses_total",
                      "New conversations that waited for a kernel to start (the pool was empty)")
LIVE = Gauge("athenic_orchestrator_kernels_live", "Kernels held by conversations")
EVICTIONS = Counter("athenic_orchestrator_kernel_evictions_total", "Kernels stopped by the orchestrator, by reason",
                    ["reason"])

# how many conversations' "your kernel is gone" are remembered (the oldest are forgotten)
_GONE_REMEMBERED = 10_000
_REFILL_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class KernelSettings:
    pool_size: int = 2
    max_kernels: int = 32
    max_per_tenant: int = 16
    sweep_seconds: float = 1.0


def notice(why: str) -> str:
    return (f"this conversation's kernel {why}; this run started in a fresh one "
            "(variables, imports and files of earlier runs are gone)")


@dataclass(eq=False)
class _Entry:
    tenant: str
    idle_seconds: float
    kernel: Kernel | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    used_at: float = field(default_factory=time.monotonic)
    # over a bound that nothing idle could make room under: the kernel is closed after its run
    keep: bool = True


Key = tuple[str, str]


class Kernels:
    def __init__(self, start: Callable[[], Awaitable[Kernel]], watchdog: Watchdog,
                 settings: KernelSettings | None = None) -> None:
        self._start = start
        self._watchdog = watchdog
        self.settings = settings or KernelSettings()
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._gone: OrderedDict[Key, str] = OrderedDict()
        self._pool: list[Kernel] = []
        self._starting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._refill_wake = asyncio.Event()
        self._closed = False
        self._background: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """The pool's refill and the idle sweep (started by the first run when not called)."""
        if not self._background:
            self._background = [asyncio.create_task(self._refill(), name="kernel-pool-refill"),
                                asyncio.create_task(self._sweep(), name="kernel-idle-sweep")]

    @property
    def pooled(self) -> int:
        return len(self._pool)

    def holds(self, tenant: str, client_id: str) -> bool:
        entry = self._entries.get((tenant, client_id))
        return entry is not None and entry.kernel is not None and entry.kernel.alive

    def forget(self, tenant: str, client_id: str) -> None:
        """Another orchestrator holds this conversation's kernel now: ours goes (when idle)."""
        entry = self._entries.get((tenant, client_id))
        if entry is not None and not entry.lock.locked():
            self._evict((tenant, client_id), "moved", "moved to another orchestrator")

    def pool_kernels(self) -> list[Kernel]:
        return list(self._pool)

    def live(self) -> list[Kernel]:
        return [entry.kernel for entry in self._entries.values() if entry.kernel is not None]

    async def run(self, spec: RunSpec, limits: Limits, on_output: OutputSink | None) -> Execution:
        self.start()
        key = (spec.tenant, spec.client_id)
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(spec.tenant, spec.idle_seconds)
            entry.keep = self._make_room(spec.tenant)
            self._entries[key] = entry
        self._entries.move_to_end(key)
        async with entry.lock:
            entry.idle_seconds = spec.idle_seconds
            try:
                why = await self._ensure_kernel(entry, key)
                assert entry.kernel is not None
                try:
                    execution = await entry.kernel.run(spec, limits, self._watchdog, on_output)
                except LimitsRefused:
                    # the tenant's limits grew: only a fresh kernel can take them
                    self._discard(entry.kernel)
                    entry.kernel = None
                    why = "was replaced to take the tenant's new, roomier limits"
                    await self._ensure_kernel(entry, key)
                    assert entry.kernel is not None
                    execution = await entry.kernel.run(spec, limits, self._watchdog, on_output, may_refuse=False)
            finally:
                entry.used_at = time.monotonic()
                self._settle(entry, key)
        if why is not None and execution.notice is None:
            execution = msgspec.structs.replace(execution, notice=notice(why))
        return execution

    async def aclose(self) -> None:
        self._closed = True
        self._refill_wake.set()
        # a kernel the refill is starting is let finish and closed with the pool (cancelled
        # half-way through its spawn, its process would have no owner left to kill it)
        for task in self._background[1:]:
            task.cancel()
        if self._background:
            refill = self._background[0]
            with contextlib.suppress(TimeoutError):
                await within(asyncio.shield(refill), START_SECONDS)
            refill.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        kernels = [*self._pool, *self.live()]
        self._pool.clear()
        self._entries.clear()
        POOL_SIZE.set(0)
        LIVE.set(0)
        await asyncio.gather(*(kernel.aclose() for kernel in kernels), return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _ensure_kernel(self, entry: _Entry, key: Key) -> str | None:
        """Give the entry a live kernel; why its earlier one is gone, if it had one."""
        why = None
        if entry.kernel is not None and not entry.kernel.alive:
            why = "stopped between two runs"
            self._discard(entry.kernel)
            entry.kernel = None
        if entry.kernel is None:
            why = self._gone.pop(key, why)
            entry.kernel = await self._claim()
            LIVE.set(len(self.live()))
        return why

    async def _claim(self) -> Kernel:
        """A fresh kernel: from the pool when one is ready, else started now."""
        # (the pool refills once the claiming run is over: a kernel starting meanwhile would
        # compete with the new conversation's first run for the CPU)
        while self._pool:
            kernel = self._pool.pop(0)
            POOL_SIZE.set(len(self._pool))
            if kernel.alive:
                POOL_HITS.inc()
                return kernel
            self._discard(kernel)
        POOL_MISSES.inc()
        return await self._start_one()

    async def _start_one(self) -> Kernel:
        try:
            return await self._start()
        except KernelFailed:
            raise
        except OSError as exc:
            raise KernelFailed(f"could not start a kernel: {exc}") from exc

    def _settle(self, entry: _Entry, key: Key) -> None:
        """After a run: forget a kernel that died (its conversation hears so next time)."""
        if len(self._pool) + self._starting < self.settings.pool_size:
            self._refill_wake.set()  # (a claim emptied the pool: it refills now that the run is over)
        if entry.kernel is not None and not entry.kernel.alive:
            self._discard(entry.kernel)
            entry.kernel = None
            self._remember(key, "stopped during the previous run")
        if not entry.keep:
            self._evict(key, "over-bound", "was not kept: the orchestrator's or the tenant's kernel limit was reached")
        elif entry.kernel is None and self._entries.get(key) is entry:
            del self._entries[key]
        LIVE.set(len(self.live()))

    def _make_room(self, tenant: str) -> bool:
        """Evict idle kernels until a new one fits both bounds; False when none could go."""
        while sum(1 for entry in self._entries.values() if entry.tenant == tenant) >= self.settings.max_per_tenant:
            if not self._evict_lru(lambda entry: entry.tenant == tenant):
                return False
        while len(self._entries) >= self.settings.max_kernels:
            if not self._evict_lru(lambda _entry: True):
                return False
        return True

    def _evict_lru(self, among: Callable[[_Entry], bool]) -> bool:
        for key, entry in self._entries.items():  # oldest use first
            if among(entry) and not entry.lock.locked():
                self._evict(key, "lru", "was stopped to make room for another conversation's")
                return True
        return False

    def _evict(self, key: Key, reason: str, why: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        EVICTIONS.labels(reason=reason).inc()
        if entry.kernel is not None:
            self._discard(entry.kernel)
            self._remember(key, why)
        LIVE.set(len(self.live()))
        log.info("kernel evicted", reason=reason, tenant=key[0], client_id=key[1])

    def _remember(self, key: Key, why: str) -> None:
        self._gone[key] = why
        self._gone.move_to_end(key)
        while len(self._gone) > _GONE_REMEMBERED:
            self._gone.popitem(last=False)

    def _discard(self, kernel: Kernel) -> None:
        task = asyncio.create_task(kernel.aclose())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refill(self) -> None:
        while not self._closed:
            self._refill_wake.clear()
            while not self._closed and len(self._pool) + self._starting < self.settings.pool_size:
                self._starting += 1
                try:
                    kernel = await self._start_one()
                except KernelFailed:
                    log.warning("could not start a kernel for the pool; retrying", exc_info=True)
                    await asyncio.sleep(_REFILL_RETRY_SECONDS)
                    continue
                finally:
                    self._starting -= 1
                self._pool.append(kernel)
                POOL_SIZE.set(len(self._pool))
            await self._refill_wake.wait()

    async def _sweep(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.settings.sweep_seconds)
            self._sweep_entries()
            try:
                await self._sweep_budgets()
            except Exception:  # a failed scan must not stop the sweeps after it
                log.exception("kernel budget sweep failed")
            self._sweep_pool()

    async def _sweep_budgets(self) -> None:
        """What a run left running (a thread, the processes it starts between runs) may use no
        more CPU time between runs than a run may, nor hold more memory and processes than the
        last run's budget allowed: the watchdog watches a kernel only during a run, and a cgroup
        per run ends with it. /proc is read in a thread, for every idle kernel at once; the
        processes of a kernel whose namespace holds only its own are known without a scan. A
        kernel's CPU time at rest is read by the first sweep after its run (not by the run: those
        are reads of /proc on the answer's way), and counted from there."""
        idle = {key: (entry.kernel, entry.kernel.budget_at_rest, entry.kernel.runs)
                for key, entry in self._entries.items()
                if entry.kernel is not None and not entry.lock.locked() and entry.kernel.alive
                and entry.kernel.budget_at_rest is not None}
        if not idle:
            return

        def read() -> tuple[dict[Key, float], set[Key], dict[int, ExecutionError]]:
            at_rest = {key: kernel.cpu_used() for key, (kernel, _, _) in idle.items() if kernel.cpu_at_rest is None}
            spinning = {key for key, (kernel, _, _) in idle.items() if key not in at_rest and self._spins(kernel)}
            quiet = {kernel.proc.pid: tree for kernel, _, _ in idle.values()
                     if (tree := kernel.quiet_tree()) is not None}
            return at_rest, spinning, over_budgets(
                {kernel.proc.pid: budget for kernel, budget, _ in idle.values() if budget}, quiet)

        at_rest, spinning, verdicts = await asyncio.to_thread(read)
        for key, (kernel, _, runs) in idle.items():
            entry = self._entries.get(key)
            if entry is None or entry.kernel is not kernel or entry.lock.locked() or kernel.runs != runs:
                continue  # (a run took it meanwhile: the run's own watch holds it now)
            if key in at_rest:
                kernel.cpu_at_rest = at_rest[key]
            if key in spinning:
                self._evict(key, "cpu", "was stopped: what a run left running used more CPU time "
                                        "between runs than a run may")
            elif (verdict := verdicts.get(kernel.proc.pid)) is not None:
                self._evict(key, "budget", f"was stopped: what a run left running went over a run's budget "
                                           f"between runs ({verdict.value})")

    def _sweep_entries(self) -> None:
        now = time.monotonic()
        for key, entry in list(self._entries.items()):
            if not entry.lock.locked() and now - entry.used_at > entry.idle_seconds:
                self._evict(key, "idle", "was stopped after the conversation sat idle "
                                         f"for more than {entry.idle_seconds:g} s")

    @staticmethod
    def _spins(kernel: Kernel) -> bool:
        """Whether what a run left running (a thread) used more CPU between runs than a run may."""
        return (kernel.runs > 0 and kernel.cpu_at_rest is not None
                and kernel.cpu_used() - kernel.cpu_at_rest > kernel.cpu_allowed)

    def _sweep_pool(self) -> None:
        for kernel in [kernel for kernel in self._pool if not kernel.alive]:
            self._pool.remove(kernel)
            self._discard(kernel)
            self._refill_wake.set()
        POOL_SIZE.set(len(self._pool))
