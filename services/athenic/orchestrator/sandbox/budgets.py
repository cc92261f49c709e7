"""Apply a run's budget (memory, processes, CPU time over everything it starts) the strongest way here.

``ATHENIC_SANDBOX_LIMITS`` chooses: ``cgroup`` (a cgroup per run, cgroups.py; refuses to start
where none can be made), ``watchdog`` (watchdog.py: totals over the run's process tree from
/proc), ``auto`` (the default: a cgroup where this process can make one, else the watchdog).

``BudgetKeeper.apply`` is the one way to put a budget on a run: before the run's first process
exists (``Held.preexec`` joins it between fork and exec) or on processes that already run
(``Held.attach``: a kernel's process tree at claim time). ``Held.breach`` resolves with the
error that says which limit stopped the run; ``Held.release`` kills whatever of it is left.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Literal

from athenic.orchestrator.errors import TerminalError
from athenic.orchestrator.sandbox import cgroups, reaping
from athenic.orchestrator.sandbox.watchdog import INTERVAL_SECONDS, RunBudget, Watchdog
from athenic.shared.logging import get_logger
from athenic.shared.messages import ExecutionError

log = get_logger(__name__)

LimitsMode = Literal["auto", "cgroup", "watchdog"]


class Held:
    """One run's budget as applied; ``breach`` resolves when the run passes it."""

    def __init__(self, keeper: BudgetKeeper, budget: RunBudget, cgroup: cgroups.RunCgroup | None) -> None:
        self._keeper = keeper
        self.budget = budget
        self.cgroup = cgroup
        self.breach: asyncio.Future[ExecutionError] = asyncio.get_running_loop().create_future()
        self._watched: int | None = None
        self._released = False

    @property
    def mechanism(self) -> str:
        return self.cgroup.support.mechanism if self.cgroup is not None else "watchdog"

    @property
    def preexec(self) -> Callable[[], None] | None:
        """What the run's first process calls between fork and exec to enter its cgroup (None: nothing)."""
        return None if self.cgroup is None else self.cgroup.join

    def attach(self, pid: int) -> None:
        """Hold ``pid`` and the processes it started (already running) to the budget."""
        if self.cgroup is not None:
            self.cgroup.attach(pid, reaping.descendants({pid}, reaping.processes()))
            return
        self._watched = pid
        watched = self._keeper.watchdog.watch(pid, self.budget)
        watched.add_done_callback(self._relay)

    def watch(self, pid: int) -> None:
        """The run's first process started (after joining through ``preexec``, if it had one)."""
        if self.cgroup is None:
            self.attach(pid)

    def verdict(self) -> ExecutionError | None:
        """The breach now, read once more (a run killed by the kernel may end before the next poll)."""
        if self.breach.done() and not self.breach.cancelled():
            return self.breach.result()
        return self.cgroup.verdict() if self.cgroup is not None else None

    async def release(self) -> None:
        """Stop watching; kill every process left in the run's cgroup and remove it. Shielded."""
        if self._released:
            return
        self._released = True
        if self._watched is not None:
            self._keeper.watchdog.forget(self._watched)
        self._keeper.forget(self)
        if not self.breach.done():
            self.breach.cancel()
        if self.cgroup is not None:
            removed = await asyncio.shield(asyncio.to_thread(self.cgroup.remove))
            if not removed:
                log.warning("a run's cgroup outlived its teardown", cgroup=self.cgroup.directories)

    def _relay(self, watched: asyncio.Future[ExecutionError]) -> None:
        if not watched.cancelled() and not self.breach.done():
            self.breach.set_result(watched.result())


class BudgetKeeper:
    def __init__(self, mode: LimitsMode = "auto", interval: float = INTERVAL_SECONDS) -> None:
        self.interval = interval
        self.watchdog = Watchdog(interval)
        self._held: set[Held] = set()
        self._task: asyncio.Task[None] | None = None
        self.support: cgroups.CgroupSupport | None = None
        if mode == "watchdog":
            self.detail = "ATHENIC_SANDBOX_LIMITS=watchdog"
        else:
            self.support, self.detail = cgroups.detect()
            if self.support is None and mode == "cgroup":
                raise TerminalError(f"ATHENIC_SANDBOX_LIMITS=cgroup but no cgroup can be made here: {self.detail}")
        self.mechanism = self.support.mechanism if self.support is not None else "watchdog"

    def apply(self, budget: RunBudget) -> Held:
        """Put ``budget`` on a run: a fresh cgroup for it, or a watch once its processes exist."""
        cgroup = None if self.support is None else cgroups.RunCgroup.create(self.support, budget)
        held = Held(self, budget, cgroup)
        if cgroup is not None:
            self._held.add(held)
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._poll(), name="sandbox-cgroup-budgets")
        return held

    def forget(self, held: Held) -> None:
        self._held.discard(held)

    async def aclose(self) -> None:
        for held in list(self._held):
            await held.release()
        await self.watchdog.aclose()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        """Read the kernel's counters of every run's cgroup (a few small files each)."""
        while self._held:
            await asyncio.sleep(self.interval)
            for held in list(self._held):
                if held.cgroup is None or held.breach.done():
                    continue
                try:
                    verdict = held.cgroup.verdict()
                except Exception:  # a failed read must not stop the watch of later ones
                    log.exception("reading a run's cgroup failed")
                    continue
                if verdict is not None:
                    held.breach.set_result(verdict)
