"""What the code writes to the pipes of its sandbox, and to ``files/out``, costs it, not the orchestrator.

The code shares its interpreter with the kernel server, so it can write to the server's control
pipe: a frame the server did not owe (a second end, one for another run, one between runs) or a
forged refusal of the run's limits stops the kernel at once, and the answer says so. Before, a
thread writing frames between runs held the orchestrator's CPU and grew its memory without end,
and a forged refusal was an unexpected failure, retried delivery after delivery. A thread that
writes output between runs waits (its output opens the next run's); output past the limit is read
at a bounded pace, one-shot or kernel; what a run writes into ``files/out`` (a host folder) is
bounded like its ``/tmp``.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import IO

import pytest

from athenic.orchestrator.sandbox.base import RunSpec
from athenic.orchestrator.sandbox.files import Workspace
from athenic.orchestrator.sandbox.kernels import KernelSettings
from tests.orchestrator.sandbox.backends import kernel_backend
from tests.orchestrator.sandbox.test_kernels import ok, spec, wait_for

pytestmark = pytest.mark.integration

# the code's way to the control pipe: every pipe it may write to but its own stdout and stderr
WRITE_FRAME = """
import json, os, struct
def write_frame(frame, times=1):
    data = json.dumps(frame).encode()
    data = struct.pack(">I", len(data)) + data
    for fd in range(3, 256):
        try:
            if "pipe" in os.readlink(f"/proc/self/fd/{fd}"):
                for _ in range(times):
                    os.write(fd, data)
        except OSError:
            pass
"""
THIS_RUN = "import sys\nrun_number = int(sys._getframe().f_code.co_filename.strip('<>').split()[1])\n"


def host_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def test_a_forged_refusal_of_the_limits_fails_the_run_once_and_replaces_the_kernel() -> None:
    async with kernel_backend("kernel-live") as backend:
        ok(await backend.run(spec("x = 1")))
        # (before, the kernel was replaced as if the tenant's limits had grown, the code ran
        # again in the fresh one, refused again, and that was an unexpected failure to retry)
        forged = await backend.run(spec(WRITE_FRAME + THIS_RUN
                                        + "write_frame({'id': run_number, 'refused': 'forged'})"))
        assert forged.error is not None and forged.error.name == "KernelTampered", forged.error
        assert forged.notice is not None and "fresh one" in forged.notice
        after = await backend.run(spec("print('x' in globals())"))
        assert after.stdout == "False\n" and after.error is None
        assert after.notice is not None and "stopped during the previous run" in after.notice


async def test_a_server_patched_to_keep_its_limits_is_stopped_when_a_run_lowers_them() -> None:
    """The code can patch the kernel server so that it sets no limits: its hard limits stay what
    they were (nothing in the sandbox can raise one), so runs as roomy still run; the first run
    whose limits are lower (the tenant's policy tightened) ends KernelTampered, and the kernel goes."""
    async with kernel_backend("kernel-live") as backend:
        ok(await backend.run(spec("import __main__\n__main__._limit = lambda limits: None", memory_mib=256)))
        assert ok(await backend.run(spec("print('roomy')", memory_mib=512))) == "roomy\n"
        lowered = await backend.run(spec("print('lowered')", memory_mib=128))
        assert lowered.error is not None and lowered.error.name == "KernelTampered", lowered.error
        assert "limits" in lowered.error.value and lowered.notice is not None
        after = await backend.run(spec("import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[1] >> 20)",
                                       memory_mib=128))
        assert after.stdout == "128\n" and after.error is None
        assert after.notice is not None and "stopped during the previous run" in after.notice


@pytest.mark.parametrize("frame", [
    "{'id': run_number + 1, 'error': None}",  # another run's end
    "{'ready': True}",  # the server's start
])
async def test_a_frame_the_server_did_not_owe_stops_the_kernel(frame: str) -> None:
    async with kernel_backend("kernel-live") as backend:
        execution = await backend.run(spec(WRITE_FRAME + THIS_RUN + f"write_frame({frame})\nimport time\n"
                                           "time.sleep(5)"))
        assert execution.error is not None and execution.error.name == "KernelTampered", execution.error
        assert execution.notice is not None
        after = await backend.run(spec("print(1)"))
        assert after.stdout == "1\n" and after.notice is not None


async def test_a_forged_end_of_the_run_is_the_last_thing_its_kernel_says() -> None:
    """The code may end its own run early (it only fools its own conversation), but the server's
    real end comes after it, unowed: the kernel goes, and no later run of the conversation is
    answered by code still running in it."""
    async with kernel_backend("kernel-live") as backend:
        assert backend.kernels is not None
        kernels = backend.kernels
        await backend.run(spec(WRITE_FRAME + THIS_RUN + "write_frame({'id': run_number, 'error': None})\n"
                               "import time\ntime.sleep(0.5)\nprint('after the forged end')"))
        await wait_for(lambda: not any(kernel.alive for kernel in kernels.live()),
                       "the kernel outlived its unowed frame")
        after = await backend.run(spec("print(1)"))
        assert after.stdout == "1\n" and after.notice is not None


async def test_a_thread_writing_frames_between_runs_loses_its_kernel_at_once() -> None:
    async with kernel_backend("kernel-cold", settings=KernelSettings(pool_size=0)) as backend:
        assert backend.kernels is not None
        kernels = backend.kernels
        code = WRITE_FRAME + (
            "import threading, time\n"
            "def flood():\n    time.sleep(0.5)\n    while True:\n        write_frame({'id': 10**6}, times=1000)\n"
            "threading.Thread(target=flood, daemon=True).start()")
        started = host_cpu()
        ok(await backend.run(spec(code)))
        await wait_for(lambda: not any(kernel.alive for kernel in kernels.live()),
                       "the kernel writing frames between runs was not stopped")
        # (it went at the first frame: writing them as fast as it could, for 5 s, took ~5 s of our CPU)
        assert host_cpu() - started < 2.0
        after = await backend.run(spec("print(1)"))
        assert after.stdout == "1\n" and after.notice is not None


async def test_a_thread_writing_output_between_runs_waits_for_the_next_run() -> None:
    async with kernel_backend("kernel-live") as backend:
        ok(await backend.run(spec(
            "import sys, threading\nlines, stop = 0, threading.Event()\n"
            "def chatter():\n    global lines\n    while not stop.is_set():\n"
            "        sys.stdout.write(f'line {lines} ' + 'x' * 1000 + '\\n')\n        lines += 1\n"
            "chatter_thread = threading.Thread(target=chatter, daemon=True)\nchatter_thread.start()")))
        # between runs nobody reads its pipe: the thread blocks once the pipe is full (64 KiB),
        # where it used to be read (and dropped) as fast as it could write: a few 100,000 lines
        await asyncio.sleep(0.5)
        after = await backend.run(spec("seen = lines\nstop.set()\nchatter_thread.join()\nprint('seen', seen)"))
        assert after.error is None, after.error
        assert after.stdout.startswith("line "), after.stdout[:200]  # its output opens the run's
        seen = int(after.stdout.rsplit("seen ", 1)[1].split()[0])
        assert seen < 20_000, seen


@pytest.mark.parametrize(("mode", "language", "code"), [
    ("one-shot", "python", "import sys, time\nend = time.time() + 2\nb = 'x' * 65536\n"
                           "while time.time() < end:\n    sys.stdout.write(b)\nprint('the end')"),
    ("one-shot", "bash", "end=$((SECONDS+2)); while [ $SECONDS -lt $end ]; do head -c 10000000 /dev/zero; done; "
                         "echo the end"),
    ("kernel-live", "python", "import sys, time\nend = time.time() + 2\nb = 'x' * 65536\n"
                              "while time.time() < end:\n    sys.stdout.write(b)\nprint('the end')"),
])
async def test_output_past_the_limit_is_read_at_a_bounded_pace(mode: str, language: str, code: str) -> None:
    """A run flooding its output costs the orchestrator a small share of a CPU (read as fast as
    it came, about two thirds of one); the answer keeps the head and the tail, as before."""
    async with kernel_backend(mode) as backend:
        started, cpu = time.monotonic(), host_cpu()
        execution = await backend.run(RunSpec(client_id="c", language=language, code=code, timeout_seconds=30))
        share = (host_cpu() - cpu) / (time.monotonic() - started)
        assert execution.error is None, execution.error
        assert execution.truncated and execution.stdout.rstrip().endswith("the end")
        assert share < 0.3, f"reading the flood took {share:.0%} of a CPU"


@pytest.mark.parametrize("mode", ["one-shot", "kernel-live"])
async def test_a_flood_of_empty_figures_is_read_at_a_bounded_pace(mode: str) -> None:
    """Four-byte frames on the figure pipe cost a parse each: past 1,000 dropped, the rest is
    thrown away unparsed (parsing 2 s of them took ~90 % of a CPU)."""
    code = ("import os, time\nfd = int(os.environ['ATHENIC_FIGURES_FD'])\nend = time.time() + 2\n"
            "while time.time() < end:\n    os.write(fd, bytes(65536))\nprint('the end')")
    async with kernel_backend(mode) as backend:
        started, cpu = time.monotonic(), host_cpu()
        execution = await backend.run(spec(code, timeout=30))
        share = (host_cpu() - cpu) / (time.monotonic() - started)
        assert execution.error is None, execution.error
        assert execution.stdout == "the end\n" and execution.results == []
        assert execution.results_dropped == 1000
        assert share < 0.3, f"reading the flood took {share:.0%} of a CPU"


def empty_workspace(max_files: int = 4) -> Workspace:
    async def fetch(name: str, into: IO[bytes]) -> None:
        raise AssertionError(f"no inputs here, asked for {name}")

    return Workspace(inputs=[], fetch=fetch, max_file_bytes=1 << 20, max_files=max_files)


@pytest.mark.parametrize("mode", ["one-shot", "kernel-live"])
@pytest.mark.parametrize(("code", "why"), [
    # files of a few MiB (each under the file-size rlimit), without end: the host's disk filled
    ("i = 0\nwhile True:\n    with open(f'files/out/big-{i}', 'wb') as f:\n"
     "        for _ in range(4):\n            f.write(bytes(1 << 20))\n    i += 1", "MiB into files/out"),
    # empty files without end: the host's inodes (and the walk that collects them)
    ("i = 0\nwhile True:\n    open(f'files/out/empty-{i}', 'w').close()\n    i += 1", "files and folders"),
])
async def test_what_a_run_writes_into_files_out_is_bounded(mode: str, code: str, why: str) -> None:
    """``files/out`` is a host folder bound into the sandbox, outside its sized tmpfs: the run is
    stopped once it holds more than the run could keep (at least what its /tmp holds)."""
    async with kernel_backend(mode) as backend:
        execution = await backend.run(RunSpec(client_id="c", language="python", code=code, timeout_seconds=60,
                                              workspace=empty_workspace()))
        assert execution.error is not None and execution.error.name == "FilesBudgetExceeded", execution.error
        assert why in execution.error.value
        assert not execution.timed_out
        after = await backend.run(spec("print(1)"))
        assert after.stdout == "1\n"


async def test_a_kernel_that_stops_reading_its_requests_never_holds_the_orchestrator() -> None:
    """Code that wrote its own run's end and keeps running leaves the server unread: a request
    bigger than the pipe (here 300 KiB of JSON) used to be written with a blocking write, which
    held the event loop, and every conversation of the orchestrator, for ever."""
    async with kernel_backend("kernel-live") as backend:
        stuck = (WRITE_FRAME + THIS_RUN + "write_frame({'id': run_number, 'error': None})\n"
                 "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(1)")
        await backend.run(spec(stuck))  # (its answer is the forged end: it fools only itself)
        big = asyncio.create_task(backend.run(spec("x = '" + "\u00e9" * 50_000 + "'\nprint(len(x))", timeout=60)))
        other = await asyncio.wait_for(backend.run(spec("print('other')", client_id="other")), 30)
        assert other.stdout == "other\n"
        assert not big.done(), "the big request should still wait on the stuck kernel"
        big.cancel()
        with pytest.raises(asyncio.CancelledError):
            await big
        after = await backend.run(spec("print(1)"))
        assert after.stdout == "1\n" and after.notice is not None
