"""A run's memory, processes and CPU time are budgeted over everything it starts, not per process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from athenic.orchestrator.sandbox import reaping
from athenic.orchestrator.sandbox.local import LocalSandbox
from athenic.orchestrator.sandbox.watchdog import MIB, RunBudget, over_budgets
from tests.orchestrator.sandbox.backends import OUTPUT_LIMIT, PYTHON_ENV, _unique_tmp_mib
from tests.orchestrator.sandbox.test_abuse import explained, no_sandbox_processes_left, spec, still_serves

pytestmark = pytest.mark.integration


@pytest.fixture(params=[None, "/nonexistent/bwrap"], ids=["bubblewrap", "rlimits-only"])
async def roomy(request: pytest.FixtureRequest) -> AsyncIterator[LocalSandbox]:
    """Both variants of the backend with a roomy process limit: without bubblewrap RLIMIT_NPROC
    counts every process of the sandbox's uid on the machine, and another suite's sandboxes
    would make a fork fail here before the watchdog had anything to do."""
    # (a /tmp size of its own: the marker that tells its processes from other suites' sandboxes)
    backend = LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, max_processes=1024, bwrap_path=request.param,
                           python_env=PYTHON_ENV, tmp_mib=_unique_tmp_mib())
    try:
        yield backend
    finally:
        await backend.aclose()

FOUR_CHILDREN_OF_150_MIB = (
    "import os, time\n"
    "for _ in range(4):\n"
    "    if os.fork() == 0:\n"
    "        block = b'x' * (150 * 1024 * 1024)  # written, so resident\n"
    "        time.sleep(30)\n"
    "        os._exit(0)\n"
    "print('forked', flush=True)\n"
    "time.sleep(30)\n"
)


async def test_four_children_of_150_mib_are_stopped_at_a_200_mib_budget(roomy: LocalSandbox) -> None:
    # each child stays under the 200 MiB address-space limit; together they hold 600 MiB
    execution = await roomy.run(spec(FOUR_CHILDREN_OF_150_MIB, timeout=20, memory_mib=200))
    explained(execution, "MemoryBudgetExceeded")
    assert execution.error is not None and "200 MiB" in execution.error.value
    assert not execution.timed_out
    await no_sandbox_processes_left(roomy)
    await still_serves(roomy)


async def test_a_run_within_its_budget_is_left_alone(roomy: LocalSandbox) -> None:
    code = ("import multiprocessing as mp\n"
            "with mp.Pool(2) as pool:\n"
            "    print(sum(pool.map(abs, range(-5, 5))))\n")
    execution = await roomy.run(spec(code, timeout=20, memory_mib=256))
    assert execution.error is None, execution.error
    assert execution.stdout == "25\n"


def _spinner(children: int, seconds: float) -> subprocess.Popen[bytes]:
    code = (f"import os, time\n"
            f"for _ in range({children}):\n"
            f"    if os.fork() == 0:\n"
            f"        end = time.process_time() + {seconds}\n"
            f"        while time.process_time() < end: pass\n"
            f"        time.sleep(30); os._exit(0)\n"
            f"time.sleep(30)\n")
    return subprocess.Popen([sys.executable, "-c", code])


async def test_the_totals_count_every_process_of_the_tree() -> None:
    """The watchdog's accounting on a real process tree: three children burning CPU."""
    proc = _spinner(3, 0.4)
    try:
        deadline = time.monotonic() + 30
        loose = RunBudget(memory_bytes=4096 * MIB, processes=10, cpu_seconds=1000)
        while True:  # until the three children have each spent their CPU
            tree = reaping.descendants({proc.pid}, reaping.processes())
            if len(tree) == 3 and all(reaping.cpu_seconds(pid) >= 0.35 for pid in tree):
                break
            assert time.monotonic() < deadline, "the children never spent their CPU"
            await asyncio.sleep(0.05)
        assert over_budgets({proc.pid: loose}) == {}
        over_cpu = over_budgets({proc.pid: RunBudget(memory_bytes=4096 * MIB, processes=10, cpu_seconds=1.0)})
        assert over_cpu[proc.pid].name == "CpuBudgetExceeded"  # no process alone used a second
        over_count = over_budgets({proc.pid: RunBudget(memory_bytes=4096 * MIB, processes=3, cpu_seconds=1000)})
        assert over_count[proc.pid].name == "ProcessBudgetExceeded"
        assert "4 processes" in over_count[proc.pid].value
        over_memory = over_budgets({proc.pid: RunBudget(memory_bytes=1 * MIB, processes=10, cpu_seconds=1000)})
        assert over_memory[proc.pid].name == "MemoryBudgetExceeded"
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
        proc.kill()
        proc.wait()


async def test_pages_shared_after_a_fork_count_once() -> None:
    """Three children forked after their parent wrote 120 MiB share its pages: four processes
    resident at 120 MiB each, 480 MiB by their resident sizes, and ~120 MiB proportionally. The
    resident size is read first (it is cheap); over the budget, PSS decides."""
    code = ("import os, time\nblock = b'x' * (120 * 1024 * 1024)\n"
            "for _ in range(3):\n    if os.fork() == 0:\n        time.sleep(30); os._exit(0)\n"
            "print('forked', flush=True)\ntime.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert await asyncio.to_thread(proc.stdout.readline) == b"forked\n"
        tree = reaping.tree(proc.pid)
        assert len(tree) == 4
        resident = sum(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                       for pid in tree)
        assert resident > 400 * MIB  # (the premise: by resident size alone the tree is over 300 MiB)
        assert over_budgets({proc.pid: RunBudget(memory_bytes=300 * MIB, processes=10, cpu_seconds=1000)}) == {}
        over = over_budgets({proc.pid: RunBudget(memory_bytes=60 * MIB, processes=10, cpu_seconds=1000)})
        assert over[proc.pid].name == "MemoryBudgetExceeded"
        assert "60 MiB" in over[proc.pid].value
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
        proc.kill()
        proc.wait()
