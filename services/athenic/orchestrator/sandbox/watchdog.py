"""Run-wide budgets: memory, processes and CPU time summed over everything a run started.

The rlimits bind each process alone (a run of 4 children of 150 MiB passes a 200 MiB
address-space limit); this watchdog adds up, a few times a second, the proportional memory
(PSS, so pages shared after a fork count once; RSS where PSS cannot be read), the number of
processes and their CPU time over the run's process tree (under bubblewrap that is every
process of the run: its PID namespace's init is a child of the run's main process), and stops
the run when a total passes its budget. One scan of /proc serves every run in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field

from athenic.orchestrator.sandbox import reaping
from athenic.shared.logging import get_logger
from athenic.shared.messages import ExecutionError

log = get_logger(__name__)

INTERVAL_SECONDS = 0.2
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


@dataclass(frozen=True)
class RunBudget:
    memory_bytes: int
    processes: int
    cpu_seconds: float


@dataclass
class _Watched:
    budget: RunBudget
    breach: asyncio.Future[ExecutionError] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Watchdog:
    def __init__(self, interval: float = INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._runs: dict[int, _Watched] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, root_pid: int, budget: RunBudget) -> asyncio.Future[ExecutionError]:
        """A future that resolves with the error to report once the run rooted at ``root_pid`` passes its budget."""
        watched = self._runs[root_pid] = _Watched(budget)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="sandbox-watchdog")
        return watched.breach

    def forget(self, root_pid: int) -> None:
        watched = self._runs.pop(root_pid, None)
        if watched is not None and not watched.breach.done():
            watched.breach.cancel()

    async def aclose(self) -> None:
        for pid in list(self._runs):
            self.forget(pid)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while self._runs:
            await asyncio.sleep(self.interval)
            runs = {pid: w for pid, w in self._runs.items() if not w.breach.done()}
            if not runs:
                continue
            try:
                verdicts = await asyncio.to_thread(_check, {pid: w.budget for pid, w in runs.items()})
            except Exception:  # a failed scan must not stop the watch of later ones
                log.exception("sandbox watchdog scan failed")
                continue
            for pid, reason in verdicts.items():
                watched = runs[pid]
                if not watched.breach.done():
                    watched.breach.set_result(reason)


def _check(budgets: dict[int, RunBudget]) -> dict[int, ExecutionError]:
    verdicts: dict[int, ExecutionError] = {}
    for root, budget in budgets.items():
        tree = reaping.tree(root)
        if not tree:
            continue
        if len(tree) > budget.processes:
            verdicts[root] = ExecutionError(name="ProcessBudgetExceeded", value=(
                f"the run had {len(tree)} processes at once; its budget is {budget.processes}"))
            continue
        memory = sum(_memory(pid) for pid in tree)
        if memory > budget.memory_bytes:
            verdicts[root] = ExecutionError(name="MemoryBudgetExceeded", value=(
                f"the run's processes used {memory // MIB} MiB of memory together; "
                f"its budget is {budget.memory_bytes // MIB} MiB"))
            continue
        cpu = sum(_cpu_seconds(pid) for pid in tree)
        if cpu > budget.cpu_seconds:
            verdicts[root] = ExecutionError(name="CpuBudgetExceeded", value=(
                f"the run's processes used {cpu:.1f} s of CPU time together; "
                f"its budget is {budget.cpu_seconds:g} s"))
    return verdicts


def _memory(pid: int) -> int:
    """Proportional set size in bytes (resident size where PSS cannot be read)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            for line in handle:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _cpu_seconds(pid: int) -> float:
    """User and system time of the process and of its children it has waited for."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode(errors="replace")
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    try:
        # utime stime cutime cstime are fields 14-17 of stat (11-14 after "state")
        return sum(int(value) for value in fields[11:15]) / _TICKS
    except (ValueError, IndexError):
        return 0.0
