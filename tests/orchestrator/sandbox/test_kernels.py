"""Stateful local kernels: a conversation's state survives between its runs and reaches no one
else; a claim applies the tenant's limits; a runaway run is interrupted; a lost kernel is
replaced and the answer says so; bounds and idle eviction; shutdown leaves nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import IO

import pytest
from prometheus_client import REGISTRY

from athenic.orchestrator.sandbox.base import RunSpec
from athenic.orchestrator.sandbox.files import StagedFile, Workspace
from athenic.orchestrator.sandbox.kernels import KernelSettings
from athenic.orchestrator.sandbox.local import LocalSandbox
from athenic.shared.messages import Execution
from tests.orchestrator.sandbox.backends import kernel_backend, kernel_leftovers, sandbox_processes

pytestmark = pytest.mark.integration


def spec(code: str, *, client_id: str = "c", tenant: str = "default", timeout: float = 10,
         memory_mib: int = 256, idle_seconds: int = 300) -> RunSpec:
    return RunSpec(client_id=client_id, tenant=tenant, language="python", code=code, timeout_seconds=timeout,
                   memory_mib=memory_mib, idle_seconds=idle_seconds)


def ok(execution: Execution) -> str:
    assert execution.error is None, (execution.error, execution.stderr)
    assert execution.notice is None, execution.notice
    return execution.stdout


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def wait_for(condition: object, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.02)
    assert condition(), what  # type: ignore[operator]


@pytest.mark.parametrize("mode", ["kernel-cold", "kernel-pooled"])
async def test_state_survives_between_runs(mode: str) -> None:
    async with kernel_backend(mode) as backend:
        ok(await backend.run(spec(
            "import statistics\nx = 41\ndef twice(v):\n    return 2 * v\n"
            "with open('notes.txt', 'w') as f:\n    f.write('kept')")))
        out = ok(await backend.run(spec(
            "import os\nx += 1\nprint(x, twice(x), statistics.mean([1, 3]), open('notes.txt').read(), os.getcwd())")))
        assert out == "42 84 2 kept /tmp\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="only an orchestrator running as root switches the sandbox's uid")
@pytest.mark.parametrize("mode", ["kernel-cold", "kernel-pooled"])
async def test_a_kernel_runs_on_the_host_as_nobody_with_no_groups_or_capabilities(mode: str) -> None:
    """An orchestrator running as root starts bubblewrap as the sandbox uid: real, effective and
    saved ids, no supplementary group, no capability left (on the host, outside its namespaces)."""
    async with kernel_backend(mode) as backend:
        ok(await backend.run(spec("x = 1")))
        assert backend.kernels is not None
        (kernel,) = backend.kernels.live()
        for pid in (kernel.proc.pid, kernel.python_pid):
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            assert status["Uid"].split() == ["65534"] * 4, (pid, status["Uid"])
            assert status["Gid"].split() == ["65534"] * 4, (pid, status["Gid"])
            assert status["Groups"].split() == [], (pid, status["Groups"])
            assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, (pid, status["CapEff"])


async def test_state_never_crosses_conversations_or_tenants() -> None:
    async with kernel_backend("kernel-pooled", settings=KernelSettings(pool_size=2)) as backend:
        planted = (
            "import json, os, threading, time\n"
            "secret = 'alpha'\n"
            "os.environ['PLANTED'] = 'alpha'\n"
            "json.dumps = lambda *a, **k: 'patched'\n"
            "open('/tmp/planted', 'w').write('alpha')\n"
            "def beat():\n"
            "    while True:\n"
            "        open('/tmp/beat', 'a').write('.')\n"
            "        time.sleep(0.05)\n"
            "threading.Thread(target=beat, daemon=True).start()\n"
            "time.sleep(0.2)\n"
            "print(json.dumps({}), threading.active_count())"
        )
        assert ok(await backend.run(spec(planted, client_id="a"))) == "patched 2\n"
        look = (
            "import json, os, threading\n"
            "print('secret' in globals(), os.environ.get('PLANTED'), json.dumps({}),\n"
            "      os.path.exists('/tmp/planted'), os.path.exists('/tmp/beat'), threading.active_count())"
        )
        expected = "False None {} False False 1\n"
        # another conversation of the tenant, and the same clientId under another tenant
        assert ok(await backend.run(spec(look, client_id="b"))) == expected
        assert ok(await backend.run(spec(look, client_id="a", tenant="other"))) == expected
        # while the first conversation still has all of it, its thread included
        still = "import os, json\nprint(secret, os.environ['PLANTED'], json.dumps(1), os.path.getsize('/tmp/beat') > 1)"
        assert ok(await backend.run(spec(still, client_id="a"))) == "alpha alpha patched True\n"


async def test_a_claim_applies_the_tenant_memory_limit_to_a_pooled_kernel() -> None:
    """The pooled kernel started with roomy limits, before the 64 MiB tenant was known."""
    async with kernel_backend("kernel-pooled") as backend:
        bomb = ("hoard = []\ntry:\n    while True:\n        hoard.append(bytearray(1 << 20))\n"
                "except MemoryError:\n    size = len(hoard)\n    hoard.clear()\n    print('MiB', size)\n    raise")
        execution = await backend.run(spec(bomb, client_id="small", tenant="tiny", memory_mib=64))
        assert execution.error is not None
        assert execution.error.name in {"MemoryError", "MemoryBudgetExceeded"}, execution.error
        if execution.error.name == "MemoryError":
            assert 0 < int(execution.stdout.split()[1]) < 64
        # a roomier tenant's conversation on the same backend is not bound by that limit
        roomy = await backend.run(spec("b = bytearray(100 << 20)\nprint(len(b) >> 20)", client_id="big"))
        assert ok(roomy) == "100\n"


async def test_a_tenant_whose_limits_grew_gets_a_fresh_kernel_that_says_so() -> None:
    async with kernel_backend("kernel-cold") as backend:
        ok(await backend.run(spec("x = 1", memory_mib=64)))
        execution = await backend.run(spec("print('x' in globals())\nb = bytearray(100 << 20)", memory_mib=256))
        assert execution.error is None, execution.error
        assert execution.stdout == "False\n"
        assert execution.notice is not None and "roomier limits" in execution.notice


async def test_a_runaway_loop_is_interrupted_and_the_kernel_keeps_its_state() -> None:
    async with kernel_backend("kernel-cold") as backend:
        ok(await backend.run(spec("x = 'kept'")))
        execution = await backend.run(spec("while True:\n    pass", timeout=1))
        assert execution.timed_out
        assert execution.error is not None and execution.error.name == "TimeoutError"
        assert "KeyboardInterrupt" in execution.stderr
        assert execution.notice is None, "the kernel survived: nothing was lost"
        assert ok(await backend.run(spec("print(x)"))) == "kept\n"


async def test_code_that_ignores_the_interrupt_loses_its_kernel_and_the_answers_say_so() -> None:
    async with kernel_backend("kernel-cold") as backend:
        ok(await backend.run(spec("x = 'kept'")))
        stubborn = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
        execution = await backend.run(spec(stubborn, timeout=1))
        assert execution.timed_out
        assert execution.error is not None and execution.error.name == "TimeoutError"
        assert execution.notice is not None and "fresh one" in execution.notice
        after = await backend.run(spec("print('x' in globals())"))
        assert after.stdout == "False\n"
        assert after.notice is not None and "stopped during the previous run" in after.notice


async def test_a_cancelled_run_stops_and_the_kernel_keeps_its_state() -> None:
    async with kernel_backend("kernel-cold") as backend:
        ok(await backend.run(spec("x = 'kept'")))
        started = asyncio.Event()

        async def sink(_stream: str, _text: str) -> None:
            started.set()

        run = asyncio.create_task(backend.run(spec("print('go', flush=True)\nwhile True:\n    pass", timeout=60),
                                              on_output=sink))
        await asyncio.wait_for(started.wait(), 30)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        assert ok(await backend.run(spec("print(x)"))) == "kept\n"


async def test_a_thread_spinning_between_runs_loses_its_kernel() -> None:
    """What a run leaves running may not use more CPU between runs than a run may."""
    async with kernel_backend("kernel-cold", settings=KernelSettings(pool_size=0, sweep_seconds=0.2)) as backend:
        assert backend.kernels is not None
        kernels = backend.kernels
        code = ("import threading\ndef spin():\n    while True:\n        pass\n"
                "threading.Thread(target=spin, daemon=True).start()")
        ok(await backend.run(spec(code, timeout=1)))
        await wait_for(lambda: not kernels.live(), "the spinning kernel was not stopped", seconds=60)
        after = await backend.run(spec("print(1)"))
        assert after.stdout == "1\n"
        assert after.notice is not None and "CPU" in after.notice


async def test_memory_a_thread_takes_between_runs_is_held_to_the_run_budget() -> None:
    """A thread may start processes after its run ended, out of that run's watch: ten of 40 MiB
    each under a 128 MiB tenant held 4 x its memory until the kernel's idle eviction."""
    async with kernel_backend("kernel-cold", settings=KernelSettings(pool_size=0, sweep_seconds=0.2)) as backend:
        assert backend.kernels is not None
        kernels = backend.kernels
        code = ("import os, threading, time\n"
                "def later():\n    time.sleep(0.5)\n    for _ in range(10):\n        if os.fork() == 0:\n"
                "            b = bytearray(40 << 20)\n            for i in range(0, len(b), 4096):\n"
                "                b[i] = 1\n            time.sleep(120)\n            os._exit(0)\n"
                "threading.Thread(target=later, daemon=True).start()")
        ok(await backend.run(spec(code, memory_mib=128)))
        await wait_for(lambda: not kernels.live(), "the kernel over its memory budget between runs was not stopped")
        after = await backend.run(spec("print(1)", memory_mib=128))
        assert after.stdout == "1\n"
        assert after.notice is not None and "between runs" in after.notice and "MiB" in after.notice


@pytest.mark.parametrize("crash", ["import os\nos._exit(3)", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"])
async def test_a_crashed_kernel_is_replaced(crash: str) -> None:
    async with kernel_backend("kernel-cold") as backend:
        ok(await backend.run(spec("x = 1")))
        execution = await backend.run(spec(crash))
        assert execution.error is not None
        assert execution.notice is not None
        after = await backend.run(spec("print('x' in globals())"))
        assert after.error is None and after.stdout == "False\n"
        assert after.notice is not None and "previous run" in after.notice


async def test_the_watchdog_kills_a_kernel_over_its_run_wide_budget() -> None:
    """Children of the run sum over the budget: the kernel goes, and the next run says so."""
    async with kernel_backend("kernel-cold") as backend:
        code = ("import os, time\nfor _ in range(4):\n    if os.fork() == 0:\n"
                "        b = bytearray(60 << 20)\n        time.sleep(30)\n        os._exit(0)\ntime.sleep(30)")
        execution = await backend.run(spec(code, memory_mib=128, timeout=20))
        assert execution.error is not None and execution.error.name == "MemoryBudgetExceeded", execution.error
        assert execution.notice is not None
        after = await backend.run(spec("print(1)"))
        assert after.stdout == "1\n" and after.notice is not None


async def test_processes_a_run_leaves_are_killed_when_it_ends() -> None:
    async with kernel_backend("kernel-cold") as backend:
        ok(await backend.run(spec("import subprocess\np = subprocess.Popen(['sleep', '60'])\nx = 1")))
        assert backend.kernels is not None
        (kernel,) = backend.kernels.live()
        assert kernel_leftovers(backend) == []
        gone = ("import os\ntry:\n    os.kill(p.pid, 0)\n    print('alive', x)\n"
                "except ProcessLookupError:\n    print('gone', x)")
        assert ok(await backend.run(spec(gone))) == "gone 1\n"
        assert kernel.alive


async def test_the_least_recently_used_kernel_of_a_tenant_is_evicted_over_its_bound() -> None:
    before = metric("athenic_orchestrator_kernel_evictions_total", reason="lru")
    async with kernel_backend("kernel-cold", settings=KernelSettings(pool_size=0, max_per_tenant=2)) as backend:
        for client in ("a", "b"):
            ok(await backend.run(spec(f"who = {client!r}", client_id=client)))
        ok(await backend.run(spec("print(who)", client_id="a")))  # b is now the least recently used
        ok(await backend.run(spec("who = 'c'", client_id="c")))
        # another tenant has its own bound
        ok(await backend.run(spec("who = 'x'", client_id="x", tenant="other")))
        assert ok(await backend.run(spec("print(who)", client_id="a"))) == "a\n"
        evicted = await backend.run(spec("print('who' in globals())", client_id="b"))
        assert evicted.stdout == "False\n"
        assert evicted.notice is not None and "make room" in evicted.notice
        assert metric("athenic_orchestrator_kernel_evictions_total", reason="lru") >= before + 2


async def test_an_idle_kernel_is_evicted_and_the_conversation_hears_so() -> None:
    before = metric("athenic_orchestrator_kernel_evictions_total", reason="idle")
    settings = KernelSettings(pool_size=0, sweep_seconds=0.1)
    async with kernel_backend("kernel-cold", settings=settings) as backend:
        assert backend.kernels is not None
        kernels = backend.kernels
        ok(await backend.run(spec("x = 1", idle_seconds=1)))
        kernel = kernels.live()[0]
        await wait_for(lambda: not kernels.live(), "the idle kernel was not evicted")
        await wait_for(lambda: kernel.proc.returncode is not None, "the evicted kernel's process is still running")
        after = await backend.run(spec("print('x' in globals())", idle_seconds=1))
        assert after.stdout == "False\n"
        assert after.notice is not None and "idle" in after.notice
        assert metric("athenic_orchestrator_kernel_evictions_total", reason="idle") >= before + 1


async def test_the_pool_serves_new_conversations_and_refills() -> None:
    hits = metric("athenic_orchestrator_kernel_pool_hits_total")
    misses = metric("athenic_orchestrator_kernel_pool_misses_total")
    async with kernel_backend("kernel-pooled", settings=KernelSettings(pool_size=1)) as backend:
        assert backend.kernels is not None
        kernels = backend.kernels
        pooled = kernels.pool_kernels()[0]
        ok(await backend.run(spec("print(1)", client_id="first")))
        assert kernels.live() == [pooled], "the new conversation took the pooled kernel"
        assert metric("athenic_orchestrator_kernel_pool_hits_total") == hits + 1
        await wait_for(lambda: kernels.pooled == 1, "the pool was not refilled")
        assert metric("athenic_orchestrator_kernel_pool_size") == 1
        assert metric("athenic_orchestrator_kernels_live") == 1
        # the refilled kernel never ran anyone's code: a claim sees a pristine namespace
        assert ok(await backend.run(spec("print(sorted(k for k in globals() if not k.startswith('__')))",
                                         client_id="second"))) == "[]\n"
        assert metric("athenic_orchestrator_kernel_pool_misses_total") == misses


async def test_shutdown_leaves_no_kernel_behind() -> None:
    async with kernel_backend("kernel-pooled", settings=KernelSettings(pool_size=2)) as backend:
        for client in ("a", "b", "c"):
            ok(await backend.run(spec("import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()",
                                      client_id=client)))
        await wait_for(lambda: backend.kernels is not None and backend.kernels.pooled == 2, "the pool did not refill")
        assert len(sandbox_processes(backend)) >= 5 * 2, "the test must see the kernels' processes first"
        await backend.aclose()
        assert sandbox_processes(backend) == []


async def test_bash_still_runs_one_process_per_run() -> None:
    async with kernel_backend("kernel-cold") as backend:
        ok(await backend.run(RunSpec(client_id="c", language="bash", code="X=1; echo $$ > /tmp/pid")))
        second = await backend.run(RunSpec(client_id="c", language="bash", code="echo ${X:-unset}; cat /tmp/pid"))
        assert second.stdout.startswith("unset\n")
        assert "No such file" in second.stderr


def test_kernels_are_off_without_bubblewrap() -> None:
    backend = LocalSandbox(output_limit_bytes=1024, bwrap_path="/nonexistent/bwrap", kernels=KernelSettings())
    assert backend.kernels is None


async def test_shutdown_while_the_pool_refills_leaves_no_kernel_behind() -> None:
    async with kernel_backend("kernel-cold", settings=KernelSettings(pool_size=3)) as backend:
        assert backend.kernels is not None
        backend.kernels.start()  # the refill is starting kernels now
        await wait_for(lambda: bool(sandbox_processes(backend)), "no kernel started")
        await backend.aclose()
        assert sandbox_processes(backend) == []


async def test_a_run_sees_its_own_inputs_only_and_none_of_an_earlier_runs() -> None:
    """A kernel's ``files/`` lives as long as the kernel: each run's inputs replace the last run's
    (a file the conversation no longer holds is gone), and what a run left in ``files/out`` is
    not the next run's."""
    def workspace(contents: dict[str, bytes]) -> Workspace:
        async def fetch(name: str, into: IO[bytes]) -> None:
            into.write(contents[name])

        return Workspace(inputs=[StagedFile(name, len(data), hashlib.sha256(data).hexdigest())
                                 for name, data in contents.items()],
                         fetch=fetch, max_file_bytes=1 << 20, max_files=8)

    listing = "import os\nprint(sorted(os.listdir('files')), sorted(os.listdir('files/out')))"
    async with kernel_backend("kernel-live") as backend:
        runs = [workspace({"a.txt": b"a", "b.txt": b"b"}), workspace({"b.txt": b"b2"}), workspace({})]
        try:
            first = await backend.run(replace(spec(listing + "\nopen('files/out/left.txt', 'w').write('x')"),
                                              workspace=runs[0]))
            assert ok(first) == "['a.txt', 'b.txt', 'out'] []\n"
            second = await backend.run(replace(spec(listing + "\nprint(open('files/b.txt').read())"),
                                               workspace=runs[1]))
            assert ok(second) == "['b.txt', 'out'] []\nb2\n"
            assert ok(await backend.run(replace(spec(listing), workspace=runs[2]))) == "['out'] []\n"
            assert ok(await backend.run(spec(listing))) == "['out'] []\n"
        finally:
            for made in runs:
                made.cleanup()
