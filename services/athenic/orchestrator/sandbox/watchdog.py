"""Run-wide budgets: memory, processes and CPU time summed over everything a run started.

The rlimits bind each process alone (a run of 4 children of 150 MiB passes a 200 MiB
address-space limit); this watchdog adds up, a few times a second, the proportional memory
(PSS, so pages shared after a fork count once; RSS where PSS cannot be read; read only for a
tree whose resident size, an upper bound read at a tenth of the cost, is over), the number of
processes and their CPU time over the run's process tree (under bubblewrap that is every
process of the run: its PID namespace's init is a child of the run's main process), and stops
the run when a total passes its budget. One scan of /proc serves every run in flight.

It also watches what a run writes into ``files/out`` (``watch_disk``): that folder is a host
directory bound into the sandbox, outside the sandbox's sized tmpfs, so only the per-file size
rlimit bounded it, not the number of files or their total (a run could fill the orchestrator's
disk). Its disk use and entry count are read each turn (the walk stops past the entry bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from dataclasses import dataclass, field

from athenic.orchestrator.sandbox import reaping
from athenic.shared.logging import get_logger
from athenic.shared.messages import ExecutionError

log = get_logger(__name__)

INTERVAL_SECONDS = 0.2
_PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


@dataclass(frozen=True)
class RunBudget:
    memory_bytes: int
    processes: int
    cpu_seconds: float


@dataclass(frozen=True)
class DiskBudget:
    """What a run may write into a host directory bound into its sandbox."""

    path: str
    max_bytes: int
    max_entries: int


@dataclass
class _Watched:
    budget: RunBudget
    breach: asyncio.Future[ExecutionError] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Watchdog:
    def __init__(self, interval: float = INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._runs: dict[int, _Watched] = {}
        self._disks: dict[DiskBudget, asyncio.Future[ExecutionError]] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, root_pid: int, budget: RunBudget) -> asyncio.Future[ExecutionError]:
        """A future that resolves with the error to report once the run rooted at ``root_pid`` passes its budget."""
        watched = self._runs[root_pid] = _Watched(budget)
        self._start()
        return watched.breach

    def watch_disk(self, budget: DiskBudget) -> asyncio.Future[ExecutionError]:
        """A future that resolves with the error to report once ``budget.path`` holds more than it
        allows; ``forget_disk`` when the run ends."""
        breach = self._disks[budget] = asyncio.get_running_loop().create_future()
        self._start()
        return breach

    def forget_disk(self, budget: DiskBudget) -> None:
        breach = self._disks.pop(budget, None)
        if breach is not None and not breach.done():
            breach.cancel()

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="sandbox-watchdog")

    def forget(self, root_pid: int) -> None:
        watched = self._runs.pop(root_pid, None)
        if watched is not None and not watched.breach.done():
            watched.breach.cancel()

    async def aclose(self) -> None:
        for pid in list(self._runs):
            self.forget(pid)
        for budget in list(self._disks):
            self.forget_disk(budget)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while self._runs or self._disks:
            await asyncio.sleep(self.interval)
            runs = {pid: w for pid, w in self._runs.items() if not w.breach.done()}
            disks = [budget for budget, breach in self._disks.items() if not breach.done()]
            if not runs and not disks:
                continue
            try:
                verdicts, disk_verdicts = await asyncio.to_thread(
                    _check_all, {pid: w.budget for pid, w in runs.items()}, disks)
            except Exception:  # a failed scan must not stop the watch of later ones
                log.exception("sandbox watchdog scan failed")
                continue
            for pid, reason in verdicts.items():
                watched = runs[pid]
                if not watched.breach.done():
                    watched.breach.set_result(reason)
            for budget, reason in disk_verdicts.items():
                breach = self._disks.get(budget)
                if breach is not None and not breach.done():
                    breach.set_result(reason)


def first_breach(*breaches: asyncio.Future[ExecutionError] | None) -> asyncio.Future[ExecutionError]:
    """One future for several budgets of a run: the first breach (never resolved if none comes)."""
    first: asyncio.Future[ExecutionError] = asyncio.get_running_loop().create_future()

    def relay(breach: asyncio.Future[ExecutionError]) -> None:
        if not breach.cancelled() and breach.exception() is None and not first.done():
            first.set_result(breach.result())

    for breach in breaches:
        if breach is not None:
            breach.add_done_callback(relay)
    return first


def _check_all(budgets: dict[int, RunBudget], disks: list[DiskBudget],
               ) -> tuple[dict[int, ExecutionError], dict[DiskBudget, ExecutionError]]:
    return over_budgets(budgets), _check_disks(disks)


def _check_disks(budgets: list[DiskBudget]) -> dict[DiskBudget, ExecutionError]:
    verdicts: dict[DiskBudget, ExecutionError] = {}
    for budget in budgets:
        used, entries = disk_use(budget.path, budget.max_entries)
        if used > budget.max_bytes:
            verdicts[budget] = ExecutionError(name="FilesBudgetExceeded", value=(
                f"the run wrote {used // MIB} MiB into files/out; a run may write {budget.max_bytes // MIB} MiB there"))
        elif entries > budget.max_entries:
            verdicts[budget] = ExecutionError(name="FilesBudgetExceeded", value=(
                f"the run made more than {budget.max_entries} files and folders in files/out"))
    return verdicts


def disk_use(path: str, max_entries: int) -> tuple[int, int]:
    """Bytes on disk (allocated blocks: a sparse file counts what it holds) and entries under
    ``path``, links not followed; the walk stops once it has seen more than ``max_entries``."""
    used, entries = 0, 0
    folders = [path]
    while folders and entries <= max_entries:
        try:
            listing = os.scandir(folders.pop())
        except OSError:
            continue
        with listing:
            for entry in listing:
                entries += 1
                if entries > max_entries:
                    break
                with contextlib.suppress(OSError):
                    used += entry.stat(follow_symlinks=False).st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
    return used, entries


def over_budgets(budgets: dict[int, RunBudget], known: dict[int, set[int]] | None = None,
                 ) -> dict[int, ExecutionError]:
    """The runs (by their root's pid) over their budgets now, and why: one scan (each turn of a
    watch; a kernel's tree between its runs, held to its last run's budget), of the roots whose
    tree is not ``known`` already. Blocking: a thread's."""
    known = known or {}
    found = {**reaping.trees(root for root in budgets if root not in known), **known}
    verdicts: dict[int, ExecutionError] = {}
    for root, tree in found.items():
        budget = budgets[root]
        if not tree:
            continue
        if len(tree) > budget.processes:
            verdicts[root] = ExecutionError(name="ProcessBudgetExceeded", value=(
                f"the run had {len(tree)} processes at once; its budget is {budget.processes}"))
            continue
        # the resident size bounds the proportional one from above, and costs a tenth to read:
        # PSS only for a tree whose resident size is over the budget
        if sum(_resident(pid) for pid in tree) > budget.memory_bytes:
            memory = sum(_memory(pid) for pid in tree)
            if memory > budget.memory_bytes:
                verdicts[root] = ExecutionError(name="MemoryBudgetExceeded", value=(
                    f"the run's processes used {memory // MIB} MiB of memory together; "
                    f"its budget is {budget.memory_bytes // MIB} MiB"))
                continue
        if budget.cpu_seconds == math.inf:
            continue
        cpu = sum(reaping.cpu_seconds(pid) for pid in tree)
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
    return _resident(pid)


def _resident(pid: int) -> int:
    """Resident set size in bytes (0: gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0
