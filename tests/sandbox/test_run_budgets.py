"""A run's memory, processes and CPU time are budgeted over everything it starts, not per process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from athenic.orchestrator.sandbox import reaping
from athenic.orchestrator.sandbox.local import LocalSandbox
from athenic.orchestrator.sandbox.watchdog import MIB, RunBudget, _check, _cpu_seconds
from tests.sandbox.test_abuse import any_local, explained, no_sandbox_processes_left, spec, still_serves

__all__ = ["any_local"]  # the fixture, shared with the abuse tests

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


async def test_four_children_of_150_mib_are_stopped_at_a_200_mib_budget(any_local: LocalSandbox) -> None:
    # each child stays under the 200 MiB address-space limit; together they hold 600 MiB
    execution = await any_local.run(spec(FOUR_CHILDREN_OF_150_MIB, timeout=20, memory_mib=200))
    explained(execution, "MemoryBudgetExceeded")
    assert execution.error is not None and "200 MiB" in execution.error.value
    assert not execution.timed_out
    await no_sandbox_processes_left(any_local)
    await still_serves(any_local)


async def test_a_run_within_its_budget_is_left_alone(any_local: LocalSandbox) -> None:
    code = ("import multiprocessing as mp\n"
            "with mp.Pool(2) as pool:\n"
            "    print(sum(pool.map(abs, range(-5, 5))))\n")
    execution = await any_local.run(spec(code, timeout=20, memory_mib=256))
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
            if len(tree) == 3 and all(_cpu_seconds(pid) >= 0.35 for pid in tree):
                break
            assert time.monotonic() < deadline, "the children never spent their CPU"
            await asyncio.sleep(0.05)
        assert _check({proc.pid: loose}) == {}
        over_cpu = _check({proc.pid: RunBudget(memory_bytes=4096 * MIB, processes=10, cpu_seconds=1.0)})
        assert over_cpu[proc.pid].name == "CpuBudgetExceeded"  # no process alone used a second
        over_count = _check({proc.pid: RunBudget(memory_bytes=4096 * MIB, processes=3, cpu_seconds=1000)})
        assert over_count[proc.pid].name == "ProcessBudgetExceeded"
        assert "4 processes" in over_count[proc.pid].value
        over_memory = _check({proc.pid: RunBudget(memory_bytes=1 * MIB, processes=10, cpu_seconds=1000)})
        assert over_memory[proc.pid].name == "MemoryBudgetExceeded"
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
        proc.kill()
        proc.wait()
