"""A cgroup per run: the kernel holds a run's memory and process count, whatever it forks.

Found once per process (``detect``), in the order of strength:

- **cgroup v2**, a delegated subtree: our own cgroup is writable and offers the ``memory`` and
  ``pids`` controllers. v2 lets no cgroup with processes hand controllers to its children, so
  the processes of our cgroup move into a leaf (``athenic-orchestrator``) first, as container
  init scripts do; the runs live under ``athenic-sandbox``;
- **cgroup v1**, where that is what the host delegates: writable ``memory`` and ``pids``
  hierarchies (``cpuacct`` too when mounted, for the CPU total); a run gets a cgroup in each,
  below our own cgroup there (so whatever limits the host set on us still hold);
- **none**: the caller falls back to the watchdog (watchdog.py).

A run's cgroup gets ``memory.max`` (v1: ``memory.limit_in_bytes``) with swap off, ``pids.max``,
and (v2) ``memory.oom.group`` so an out-of-memory kill takes the whole run. Its first process
joins it before it executes anything (``join``, in the child between fork and exec), so
everything the run starts is inside. ``verdict`` reads the kernel's counters (OOM kills,
refused forks, CPU time) to say which limit stopped the run; ``kill`` and ``remove`` leave
nothing of it (``cgroup.kill`` on v2, else every process listed in it, until it is empty).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import secrets
import signal
import time
from dataclasses import dataclass
from typing import Literal

from athenic.orchestrator.sandbox.watchdog import MIB, RunBudget
from athenic.shared.messages import ExecutionError

RUNS_DIR = "athenic-sandbox"
LEAF_DIR = "athenic-orchestrator"
_names = itertools.count(1)
_REMOVE_SECONDS = 5.0


class CgroupError(Exception):
    """A cgroup could not be made, joined or configured."""


@dataclass(frozen=True)
class CgroupSupport:
    """Where this process may make run cgroups: a parent directory per controller."""

    version: Literal[1, 2]
    # controller -> the directory run cgroups are made in (v2: one directory for all)
    parents: dict[str, str]

    @property
    def mechanism(self) -> str:
        return f"cgroup v{self.version}"

    @property
    def directories(self) -> list[str]:
        return sorted(set(self.parents.values()))


@dataclass(frozen=True)
class _Mount:
    root: str  # the mount's root inside its hierarchy
    point: str
    fstype: str
    options: frozenset[str]


def _mounts() -> list[_Mount]:
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            head, _, tail = line.partition(" - ")
            fields, rest = head.split(), tail.split()
            if len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
                continue
            found.append(_Mount(root=_unescape(fields[3]), point=_unescape(fields[4]), fstype=rest[0],
                                options=frozenset(rest[2].split(","))))
    return found


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _own_cgroups() -> dict[str, str]:
    """Controller (v2: "") -> our cgroup's path in that hierarchy."""
    own = {}
    with open("/proc/self/cgroup", encoding="utf-8") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path
    return own


def _directory(mount: _Mount, path: str) -> str | None:
    """Our cgroup's directory under ``mount``, or None when the mount does not show it."""
    relative = os.path.relpath(path, mount.root)
    if relative.startswith(".."):
        return None
    return os.path.normpath(os.path.join(mount.point, relative))


@functools.cache
def detect() -> tuple[CgroupSupport | None, str]:
    """The cgroups this process may make run cgroups in, or None and why not (found once)."""
    try:
        mounts, own = _mounts(), _own_cgroups()
    except OSError as exc:
        return None, f"cannot read this process's cgroups: {exc}"
    reasons = []
    for attempt in (_detect_v2, _detect_v1):
        support, why = attempt(mounts, own)
        if support is not None:
            return support, why
        reasons.append(why)
    return None, "; ".join(reasons)


def _detect_v2(mounts: list[_Mount], own: dict[str, str]) -> tuple[CgroupSupport | None, str]:
    mount = next((m for m in mounts if m.fstype == "cgroup2"), None)
    if mount is None or "" not in own:
        return None, "no cgroup v2 mount"
    base = _directory(mount, own[""])
    if base is None:
        return None, f"cgroup v2 at {mount.point} does not show our cgroup {own['']}"
    available = set(_read(f"{base}/cgroup.controllers").split())
    missing = {"memory", "pids"} - available
    if missing:
        return None, f"cgroup v2 at {base} offers no {', '.join(sorted(missing))} controller"
    if os.path.basename(base) == LEAF_DIR:  # found once before in this process (or our parent's)
        base = os.path.dirname(base)
    wanted = ["memory", "pids"] + (["cpu"] if "cpu" in available else [])
    try:
        _delegate_v2(base, wanted)
        runs = f"{base}/{RUNS_DIR}"
        os.makedirs(runs, exist_ok=True)
        _write(f"{runs}/cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        support = CgroupSupport(version=2, parents=dict.fromkeys(wanted, runs))
        _probe(support)
    except (OSError, CgroupError) as exc:
        return None, f"cgroup v2 at {base} is not delegated to us: {exc}"
    return support, f"cgroup v2 at {runs} ({', '.join(wanted)})"


def _delegate_v2(base: str, controllers: list[str]) -> None:
    """Hand ``controllers`` to the children of ``base``, moving its processes to a leaf first."""
    enable = " ".join(f"+{c}" for c in controllers)
    try:
        _write(f"{base}/cgroup.subtree_control", enable)
        return
    except OSError as exc:
        if exc.errno != errno.EBUSY:  # busy: processes live in base itself
            raise
    leaf = f"{base}/{LEAF_DIR}"
    os.makedirs(leaf, exist_ok=True)
    for _ in range(10):  # processes forked meanwhile are moved on the next pass
        pids = _read(f"{base}/cgroup.procs").split()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, OSError):
                _write(f"{leaf}/cgroup.procs", pid)
    _write(f"{base}/cgroup.subtree_control", enable)


def _detect_v1(mounts: list[_Mount], own: dict[str, str]) -> tuple[CgroupSupport | None, str]:
    parents: dict[str, str] = {}
    for controller in ("memory", "pids", "cpuacct"):
        mount = next((m for m in mounts if m.fstype == "cgroup" and controller in m.options), None)
        if mount is None or controller not in own:
            if controller == "cpuacct":
                continue
            return None, f"no cgroup v1 {controller} hierarchy"
        base = _directory(mount, own[controller])
        if base is None:
            return None, f"cgroup v1 at {mount.point} does not show our cgroup {own[controller]}"
        parents[controller] = f"{base}/{RUNS_DIR}"
    support = CgroupSupport(version=1, parents=parents)
    try:
        for directory in support.directories:
            os.makedirs(directory, exist_ok=True)
        _probe(support)
    except (OSError, CgroupError) as exc:
        return None, f"cgroup v1 is not writable for us: {exc}"
    return support, f"cgroup v1 at {', '.join(support.directories)}"


def _probe(support: CgroupSupport) -> None:
    """Make, configure and remove one run cgroup: what every run will do."""
    RunCgroup.create(support, RunBudget(memory_bytes=64 * MIB, processes=8, cpu_seconds=1.0)).remove()


class RunCgroup:
    """One run's cgroup (one directory per v1 hierarchy, one for v2)."""

    def __init__(self, support: CgroupSupport, name: str) -> None:
        self.support = support
        self.budget = RunBudget(memory_bytes=0, processes=0, cpu_seconds=0.0)
        self.paths = {controller: f"{parent}/{name}" for controller, parent in support.parents.items()}
        # the files a process joins through, made once: ``join`` runs between fork and exec
        self._procs = tuple(f"{path}/cgroup.procs" for path in sorted(set(self.paths.values())))

    @classmethod
    def create(cls, support: CgroupSupport, budget: RunBudget) -> RunCgroup:
        run = cls(support, f"run-{os.getpid()}-{next(_names)}-{secrets.token_hex(3)}")
        run.budget = budget
        try:
            for path in run.directories:
                os.mkdir(path)
            run._configure(budget)
        except OSError as exc:
            run.remove()
            raise CgroupError(f"cannot set up the run's cgroup: {exc}") from exc
        return run

    @property
    def directories(self) -> list[str]:
        return sorted(set(self.paths.values()))

    def _configure(self, budget: RunBudget) -> None:
        memory, pids = self.paths["memory"], self.paths["pids"]
        if self.support.version == 2:
            _write(f"{memory}/memory.max", str(budget.memory_bytes))
            _write_if_present(f"{memory}/memory.swap.max", "0")
            _write(f"{memory}/memory.oom.group", "1")
        else:
            _write(f"{memory}/memory.limit_in_bytes", str(budget.memory_bytes))
            # memory plus swap: no more than memory alone (present where swap accounting is on)
            _write_if_present(f"{memory}/memory.memsw.limit_in_bytes", str(budget.memory_bytes))
            _write_if_present(f"{memory}/memory.swappiness", "0")
        _write(f"{pids}/pids.max", str(budget.processes))

    def join(self) -> None:
        """Move the calling process in (a child before it executes the run's program)."""
        pid = str(os.getpid())
        for procs in self._procs:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, pid.encode())
            finally:
                os.close(fd)

    def attach(self, pid: int, descendants: set[int] | None = None) -> None:
        """Move an existing process (and the given descendants of it) in."""
        for member in [pid, *sorted(descendants or ())]:
            for procs in self._procs:
                with contextlib.suppress(ProcessLookupError):
                    _write(procs, str(member))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self._procs:
            with contextlib.suppress(FileNotFoundError):
                found |= {int(pid) for pid in _read(procs).split()}
        return found

    def verdict(self) -> ExecutionError | None:
        """The limit the kernel enforced on the run, if any did."""
        if self._oom_kills() > 0:
            return ExecutionError(name="MemoryBudgetExceeded", value=(
                f"the run's processes reached {self.budget.memory_bytes // MIB} MiB of memory together, "
                "its budget (the kernel's OOM killer stopped it)"))
        if _counter(f"{self.paths['pids']}/pids.events", "max") > 0:
            return ExecutionError(name="ProcessBudgetExceeded", value=(
                f"the run tried to have more than {self.budget.processes} processes at once, "
                "its budget (the kernel refused the fork)"))
        cpu = self.cpu_seconds()
        if cpu is not None and cpu > self.budget.cpu_seconds:
            return ExecutionError(name="CpuBudgetExceeded", value=(
                f"the run's processes used {cpu:.1f} s of CPU time together; "
                f"its budget is {self.budget.cpu_seconds:g} s"))
        return None

    def _oom_kills(self) -> int:
        memory = self.paths["memory"]
        if self.support.version == 2:
            events = f"{memory}/memory.events"
            return _counter(events, "oom_kill") + _counter(events, "oom_group_kill")
        return _counter(f"{memory}/memory.oom_control", "oom_kill")

    def cpu_seconds(self) -> float | None:
        if self.support.version == 2:
            return _counter(f"{self.paths['memory']}/cpu.stat", "usage_usec") / 1e6
        if "cpuacct" not in self.paths:
            return None
        with contextlib.suppress(OSError, ValueError):
            return int(_read(f"{self.paths['cpuacct']}/cpuacct.usage")) / 1e9
        return None

    def kill(self) -> None:
        """SIGKILL every process of the run (one sweep; ``remove`` repeats until it is empty)."""
        if self.support.version == 2:
            with contextlib.suppress(OSError):
                _write(f"{self.paths['memory']}/cgroup.kill", "1")
                return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, timeout: float = _REMOVE_SECONDS) -> bool:
        """Kill what is left and remove the cgroup; False if it outlived ``timeout``.

        Blocking (short waits while the kernel finishes the killed processes): call it from a thread.
        """
        deadline = time.monotonic() + timeout
        pending = [path for path in self.directories if os.path.isdir(path)]
        while pending:
            self.kill()
            for path in list(pending):
                try:
                    os.rmdir(path)
                    pending.remove(path)
                except FileNotFoundError:
                    pending.remove(path)
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
            if pending:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.005)
        return True


# bytes, decoded as UTF-8 (the built-in codec): no codec lookup where the standard library's
# encodings may be out of reach (a uid-switched orchestrator stand-in in the tests)
def _read(path: str) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode()


def _write(path: str, value: str) -> None:
    with open(path, "wb") as handle:
        handle.write(value.encode())


def _write_if_present(path: str, value: str) -> None:
    with contextlib.suppress(FileNotFoundError, PermissionError):
        _write(path, value)


def _counter(path: str, key: str) -> int:
    """A value of a flat-keyed cgroup file ("key value" lines); 0 when absent."""
    with contextlib.suppress(OSError):
        for line in _read(path).splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0
