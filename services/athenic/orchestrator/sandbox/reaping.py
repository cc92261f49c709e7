"""No zombies and no survivors of the local sandbox's runs.

The orchestrator makes itself a *child subreaper* (``PR_SET_CHILD_SUBREAPER``; in a container
it may be PID 1, which is one anyway): a process of a run whose parent dies is re-parented to
the orchestrator instead of escaping to the host's init. Two things follow:

- the reaper collects the exit status of children nobody else waits for — bubblewrap's init
  of a killed run, the orphans of a run — which would otherwise stay zombies for ever. It never
  touches the processes asyncio or ``subprocess`` started and waits for: they are registered
  (``OWNED``), and a zombie is reaped only once it has stayed one for a whole sweep (their own
  waiters collect theirs at once);
- a run's teardown can find what the run left behind even after ``setsid()`` (out of reach of
  the session's kill): the processes it re-parented to us, which the rlimits-only mode cannot
  otherwise tell apart (under bubblewrap, the death of the PID namespace's init takes every
  process of the run with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from athenic.shared.logging import get_logger

log = get_logger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
SWEEP_SECONDS = 0.5
IDLE_SWEEP_SECONDS = 10.0

# pids of children that their own waiter (asyncio's child watcher, subprocess) will reap
OWNED: set[int] = set()
# working directories of the rlimits-only runs going on in this process
LIVE_WORKDIRS: set[str] = set()


def become_subreaper() -> bool:
    """Adopt the orphans of our descendants (PID 1 of a namespace does so already)."""
    if os.getpid() == 1:
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("could not become a child subreaper: orphans of runs go to the host's init",
                    errno=ctypes.get_errno())
        return False
    return True


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    state: str


def processes() -> dict[int, ProcInfo]:
    """Every process visible in /proc, with its parent and state."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = stat_fields(int(name))
        if fields is None:
            continue
        found[int(name)] = ProcInfo(pid=int(name), state=fields[0].decode(errors="replace"), ppid=int(fields[1]))
    return found


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name ("state" first), None: gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        # (the command name may hold spaces and parentheses: the fields start after its last ")")
        return os.read(fd, 4096).rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    finally:
        os.close(fd)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system time of the process and of the children it waited for (stat fields 14-17)."""
    fields = stat_fields(pid)
    try:
        return sum(int(value) for value in fields[11:15]) / _TICKS if fields else 0.0
    except ValueError:
        return 0.0


def descendants(roots: set[int], table: dict[int, ProcInfo]) -> set[int]:
    return _below(roots, _children(table))


def _children(table: dict[int, ProcInfo]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    return children


def _below(roots: set[int], children: dict[int, list[int]]) -> set[int]:
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


_HAS_CHILDREN_LISTS = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def trees(roots: Iterable[int]) -> dict[int, set[int]]:
    """``tree`` of each root (zombies counted); without children lists, from one scan of every
    process for all of them (a watch of every run in flight, a sweep of every idle kernel)."""
    if _HAS_CHILDREN_LISTS:
        return {root: tree(root) for root in roots}
    table = processes()
    children = _children(table)
    return {root: {root} | _below({root}, children) if root in table else set() for root in roots}


def tree(root: int, *, zombies: bool = True) -> set[int]:
    """``root`` and its descendants, from each thread's children list in /proc: the cost of the
    tree, not of a scan of every process on the machine. Zombies count unless ``zombies`` is
    False (they still hold a process slot; they have no children). Without children lists (a
    kernel built without CONFIG_PROC_CHILDREN), from a scan of every process."""
    if not _HAS_CHILDREN_LISTS:
        table = processes()
        if root not in table:
            return set()
        return {pid for pid in {root} | descendants({root}, table) if zombies or table[pid].state != "Z"}
    found: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        fields = stat_fields(pid)
        if not fields:
            continue
        if fields[0] == b"Z":
            if zombies:
                found.add(pid)
            continue
        found.add(pid)
        for task in tasks:
            try:
                fd = os.open(f"/proc/{pid}/task/{task}/children", os.O_RDONLY)
                try:
                    todo += [int(child) for child in os.read(fd, 65536).split()]
                finally:
                    os.close(fd)
            except OSError:
                continue
    return found


def reap(pid: int) -> bool:
    """Collect a child's exit status if it has one; False when it is still running (or not ours)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


class Reaper:
    """Reaps zombie children that no waiter of ours owns: after a child's exit is signalled
    (SIGCHLD, where this loop may handle signals), and every ``SWEEP_SECONDS`` where it may not,
    at the latest every ``IDLE_SWEEP_SECONDS``. A sweep reads every process in /proc: on a busy
    machine that is worth doing only when a child did exit."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self.reaped = 0
        self._exited = asyncio.Event()

    def sweep(self) -> None:
        me = os.getpid()
        zombies = {info.pid for info in processes().values()
                   if info.ppid == me and info.state == "Z" and info.pid not in OWNED}
        for pid in zombies & self._seen:
            if reap(pid):
                self.reaped += 1
        self._seen = zombies

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGCHLD, self._exited.set)
            interval = IDLE_SWEEP_SECONDS
        except (RuntimeError, ValueError):  # not the main thread's loop: sweep on a timer
            interval = SWEEP_SECONDS
        try:
            while True:
                self._exited.clear()
                self.sweep()
                await asyncio.sleep(SWEEP_SECONDS)  # at most two sweeps a second
                if not self._seen:  # (a zombie is reaped at its second sighting: then look again now)
                    # (asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancel that
                    # lands as a child exits, and the reaper would outlive its loop's shutdown)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(interval - SWEEP_SECONDS):
                            await self._exited.wait()
        finally:
            if interval == IDLE_SWEEP_SECONDS and not loop.is_closed():
                loop.remove_signal_handler(signal.SIGCHLD)


_reapers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}


def ensure_reaper() -> None:
    """One reaper per event loop (a test process runs several loops, one after another)."""
    loop = asyncio.get_running_loop()
    for other in [other for other, task in _reapers.items() if other.is_closed() or task.done()]:
        del _reapers[other]
    if loop not in _reapers:
        _reapers[loop] = loop.create_task(Reaper().run(), name="athenic-reaper")


def kill_leftovers(*, uid: int, workdir: str, live_workdirs: Callable[[], set[str]],
                   deadline_seconds: float = 2.0) -> int:
    """Kill what a finished rlimits-only run left behind, and collect it; how many were killed.

    Leftovers are the children re-parented to us (their parent died: ``setsid()`` does not
    protect them) that run as the sandbox's uid and are not a live run's own process: those
    whose working directory is this run's, and those that left every live run's directory
    (no run owns them, so none may keep them) — with everything they started.
    """
    me = os.getpid()
    killed = 0
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        table = processes()
        candidates = {info.pid: _cwd(info.pid) for info in table.values()
                      if info.ppid == me and info.pid not in OWNED and info.state != "Z" and _runs_as(info.pid, uid)}
        # read after the processes: a run starting meanwhile registered its directory before forking
        live = live_workdirs() - {workdir}
        # cwd None: unreadable (the process made itself non-dumpable), so owned by no live run
        orphans = {pid for pid, cwd in candidates.items()
                   if cwd is None or _inside(cwd, workdir) or not any(_inside(cwd, other) for other in live)}
        victims = orphans | {pid for pid in descendants(orphans, table) if table[pid].state != "Z"}
        if not victims:
            return killed
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        for pid in orphans:
            _reap_within(pid, deadline)
    log.warning("processes of a finished run survived its teardown", workdir=workdir)
    return killed


def live_workdirs() -> set[str]:
    """A copy of LIVE_WORKDIRS from another thread (the event loop's thread changes it)."""
    while True:
        with contextlib.suppress(RuntimeError):  # changed size while copied: copy again
            return set(LIVE_WORKDIRS)


def _reap_within(pid: int, deadline: float) -> None:
    while not reap(pid) and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.005)


def _runs_as(pid: int, uid: int) -> bool:
    # the real uid from status: /proc/<pid> of a process that made itself non-dumpable is root's
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("Uid:"):
                    return int(line.split()[1]) == uid
    except OSError:
        pass
    return False


def _cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def _inside(path: str, directory: str) -> bool:
    path = path.removesuffix(" (deleted)")
    return path == directory or path.startswith(directory.rstrip("/") + "/")
