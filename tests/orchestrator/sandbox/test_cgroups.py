"""A cgroup per run: the kernel holds a run's memory and processes, and the cgroup goes with the run.

These run on the cgroup mechanism where this process can make cgroups (root on this machine:
cgroup v1; a delegated cgroup v2 subtree elsewhere) and skip, saying why, where it cannot.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest

from athenic.orchestrator.sandbox import cgroups
from athenic.orchestrator.sandbox.budgets import BudgetKeeper
from athenic.orchestrator.sandbox.local import LocalSandbox
from athenic.orchestrator.sandbox.watchdog import MIB, RunBudget
from tests.orchestrator.sandbox.backends import OUTPUT_LIMIT, PYTHON_ENV, _unique_tmp_mib
from tests.orchestrator.sandbox.test_abuse import explained, no_sandbox_processes_left, spec, still_serves
from tests.orchestrator.sandbox.test_run_budgets import FOUR_CHILDREN_OF_150_MIB

pytestmark = pytest.mark.integration

WAIT_SECONDS = 30.0


def support() -> cgroups.CgroupSupport:
    found, why = cgroups.detect()
    if found is None:
        pytest.skip(f"this process can make no cgroup here (the watchdog holds the budgets): {why}")
    return found


def our_run_cgroups() -> list[str]:
    """The run cgroups this test process made that still exist."""
    prefix = f"run-{os.getpid()}-"
    return [f"{parent}/{name}" for parent in support().directories
            for name in os.listdir(parent) if name.startswith(prefix)]


@pytest.fixture(params=[("cgroup", None), ("cgroup", "/nonexistent/bwrap"),
                        ("watchdog", None), ("watchdog", "/nonexistent/bwrap")],
                ids=["cgroup-bubblewrap", "cgroup-rlimits-only", "watchdog-bubblewrap", "watchdog-rlimits-only"])
async def budgeted(request: pytest.FixtureRequest) -> AsyncIterator[LocalSandbox]:
    mode, bwrap = request.param
    if mode == "cgroup":
        support()
    # a roomy process limit: RLIMIT_NPROC of the rlimits-only mode counts the uid's processes machine-wide
    # a /tmp size of its own: the marker by which this backend's processes are told from those of
    # other suites on the machine (whose sandboxes mostly use the default size)
    backend = LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, max_processes=1024, bwrap_path=bwrap,
                           python_env=PYTHON_ENV, limits_mode=mode, tmp_mib=_unique_tmp_mib())
    try:
        yield backend
    finally:
        await backend.aclose()


async def test_four_children_of_150_mib_are_stopped_at_200_mib_by_either_mechanism(budgeted: LocalSandbox) -> None:
    execution = await budgeted.run(spec(FOUR_CHILDREN_OF_150_MIB, timeout=20, memory_mib=200))
    explained(execution, "MemoryBudgetExceeded")
    assert "200 MiB" in execution.error.value  # type: ignore[union-attr]
    if budgeted.budgets.mechanism.startswith("cgroup"):
        assert "OOM killer" in execution.error.value  # type: ignore[union-attr]
    assert not execution.timed_out
    await no_sandbox_processes_left(budgeted)
    await still_serves(budgeted)


async def test_the_cgroup_mechanism_is_chosen_where_it_can_be() -> None:
    found = support()
    backend = LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, python_env=PYTHON_ENV)  # auto
    try:
        assert backend.budgets.mechanism == found.mechanism
    finally:
        await backend.aclose()


async def test_the_runs_cgroup_holds_its_processes_and_is_removed_after_it() -> None:
    support()
    backend = LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, bwrap_path="/nonexistent/bwrap",
                           python_env=PYTHON_ENV, limits_mode="cgroup")
    try:
        code = "print(open('/proc/self/cgroup').read())"
        execution = await backend.run(spec(code, timeout=20))
        assert execution.error is None, execution.error
        # (rlimits-only: the code sees the host's cgroup paths; bubblewrap gives it a cgroup namespace)
        joined = [line.split(":", 2)[2] for line in execution.stdout.splitlines() if "/run-" in line]
        assert joined, execution.stdout
        assert all(f"/{cgroups.RUNS_DIR}/run-{os.getpid()}-" in path for path in joined)
        assert our_run_cgroups() == []
    finally:
        await backend.aclose()


FORK_UNTIL_REFUSED = (
    "import os, time\n"
    "forks = 0\n"
    "try:\n"
    "    while True:\n"
    "        if os.fork() == 0:\n"
    "            time.sleep(60)\n"
    "            os._exit(0)\n"
    "        forks += 1\n"
    "except OSError:\n"
    "    print(forks, flush=True)\n"
    "time.sleep(60)\n"
)


async def test_a_fork_bomb_is_bounded_by_the_pids_controller() -> None:
    """No rlimit here at all: only the run's cgroup bounds the forks, and says so."""
    support()
    keeper = BudgetKeeper("cgroup")
    held = keeper.apply(RunBudget(memory_bytes=512 * MIB, processes=16, cpu_seconds=600))
    proc = subprocess.Popen([sys.executable, "-c", FORK_UNTIL_REFUSED], stdout=subprocess.PIPE,
                            preexec_fn=held.preexec)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), WAIT_SECONDS)
        assert 0 < int(line) < 16  # the main process and its forks: 16 at most
        stopped = await asyncio.wait_for(held.breach, WAIT_SECONDS)
        assert stopped.name == "ProcessBudgetExceeded"
        assert "16 processes" in stopped.value
        assert held.cgroup is not None and proc.pid in held.cgroup.pids()
        members = held.cgroup.pids()
    finally:
        await held.release()
        await keeper.aclose()
    assert proc.wait(timeout=WAIT_SECONDS) < 0  # killed with everything it forked
    assert not [pid for pid in members if os.path.exists(f"/proc/{pid}") and _alive(pid)]
    assert our_run_cgroups() == []


async def test_attach_holds_a_process_tree_that_already_runs() -> None:
    """A kernel's process tree is put under a budget at claim time; then it allocates."""
    support()
    keeper = BudgetKeeper("cgroup")
    code = ("import os, signal, time\n"
            "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
            "for _ in range(2):\n"
            "    if os.fork() == 0:\n"
            "        signal.sigwait({signal.SIGUSR1})\n"
            "        block = b'x' * (150 * 1024 * 1024); time.sleep(60); os._exit(0)\n"
            "print('ready', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    held = None
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), WAIT_SECONDS) == b"ready\n"
        held = keeper.apply(RunBudget(memory_bytes=200 * MIB, processes=16, cpu_seconds=600))
        held.attach(proc.pid)
        assert held.cgroup is not None
        children = held.cgroup.pids() - {proc.pid}
        assert len(children) == 2  # forked before the attach, moved in with their parent
        for child in children:
            os.kill(child, signal.SIGUSR1)
        stopped = await asyncio.wait_for(held.breach, WAIT_SECONDS)
        assert stopped.name == "MemoryBudgetExceeded"
    finally:
        if held is not None:
            await held.release()
        await keeper.aclose()
        proc.kill()
        proc.wait(timeout=WAIT_SECONDS)
    assert our_run_cgroups() == []


def test_forcing_the_cgroup_mechanism_where_none_can_be_made_is_refused() -> None:
    found, why = cgroups.detect()
    if found is not None:
        pytest.skip(f"cgroups can be made here ({why}); the refusal is for hosts without")
    with pytest.raises(Exception, match="ATHENIC_SANDBOX_LIMITS=cgroup"):
        BudgetKeeper("cgroup")


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            return False
        if state == b"Z":
            return False
        time.sleep(0.01)
    return True
