"""A run's teardown leaves no process of it anywhere, whatever the code did to escape, and the
orchestrator is left with no zombies."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from athenic.orchestrator.sandbox import reaping
from athenic.orchestrator.sandbox.base import RunSpec
from athenic.orchestrator.sandbox.local import LocalSandbox

pytestmark = pytest.mark.integration


def spec(code: str, *, timeout: float = 10) -> RunSpec:
    return RunSpec(client_id="escaper", language="python", code=code, timeout_seconds=timeout, memory_mib=256)


# Without bubblewrap the process limit counts every process of the sandbox's uid on the machine
# (other tests', other runs'): these tests are not about it, so they get room enough.
_ROOMY = 1024


@pytest.fixture(params=["bubblewrap", "rlimits-only"])
async def any_local(request: pytest.FixtureRequest) -> AsyncIterator[LocalSandbox]:
    bwrap = None if request.param == "bubblewrap" else "/nonexistent/bwrap"
    backend = LocalSandbox(output_limit_bytes=4096, max_processes=_ROOMY, bwrap_path=bwrap)
    try:
        if request.param == "bubblewrap" and not backend.isolated:
            pytest.skip("bubblewrap does not work here; the rlimits-only variant covers this")
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
async def bare_sandbox() -> AsyncIterator[LocalSandbox]:
    backend = LocalSandbox(output_limit_bytes=4096, max_processes=_ROOMY, bwrap_path="/nonexistent/bwrap")
    try:
        yield backend
    finally:
        await backend.aclose()


def with_marker(marker: str) -> list[int]:
    """Host pids of live (not zombie) processes whose command line holds ``marker``."""
    found = []
    for pid, info in reaping.processes().items():
        try:
            if info.state != "Z" and marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


async def wait_gone(marker: str, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := with_marker(marker)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return left


def escaper(marker: str, *, chdir: str | None = None, linger: bool = False) -> str:
    """Code that leaves a daemon behind: fork, setsid, fork again, parent exits; the grandchild
    (a fresh interpreter whose command line carries ``marker``) says it runs, then sleeps."""
    return (
        "import os, sys, time\n"
        "r, w = os.pipe()\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        {'os.chdir(' + repr(chdir) + ')' if chdir else 'pass'}\n"
        "        os.dup2(w, 3)\n"
        f"        os.execv('/usr/bin/python3', ['python3', '-c', 'import os, time; os.write(3, b\"up\"); "
        f"time.sleep(300)  # {marker}'])\n"
        "    os._exit(0)\n"
        "os.close(w)\n"
        "assert os.read(r, 2) == b'up'\n"
        "print('daemon started')\n"
        + ("time.sleep(300)\n" if linger else "")
    )


async def test_a_setsid_grandchild_is_gone_after_the_run(any_local: LocalSandbox) -> None:
    marker = f"survivor-{secrets.token_hex(6)}"
    execution = await any_local.run(spec(escaper(marker)))
    assert execution.error is None, execution.stderr
    assert execution.stdout == "daemon started\n"
    assert await wait_gone(marker, 3) == [], "a process of the run outlived it"


async def test_one_that_left_the_runs_directory_is_gone_too(any_local: LocalSandbox) -> None:
    marker = f"survivor-{secrets.token_hex(6)}"
    execution = await any_local.run(spec(escaper(marker, chdir="/")))
    assert execution.stdout == "daemon started\n", execution.stderr
    assert await wait_gone(marker, 3) == []


async def test_a_timed_out_run_takes_its_daemons_with_it(any_local: LocalSandbox) -> None:
    marker = f"survivor-{secrets.token_hex(6)}"
    execution = await any_local.run(spec(escaper(marker, linger=True), timeout=1.5))
    assert execution.timed_out
    assert await wait_gone(marker, 3) == []


async def test_a_concurrent_runs_daemon_lives_until_its_own_run_ends(bare_sandbox: LocalSandbox) -> None:
    """Attribution in the rlimits-only mode: one run's teardown kills only its own leftovers."""
    marker = f"neighbour-{secrets.token_hex(6)}"
    long_run = asyncio.create_task(bare_sandbox.run(spec(escaper(marker, linger=True), timeout=20)))
    deadline = time.monotonic() + 10
    while not with_marker(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert with_marker(marker), "the neighbour's daemon never started"
    short = await bare_sandbox.run(spec(escaper(f"other-{secrets.token_hex(6)}")))
    assert short.stdout == "daemon started\n"
    assert with_marker(marker), "another run's teardown killed a live run's process"
    long_run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long_run
    assert await wait_gone(marker, 3) == []


async def test_no_zombie_is_left_with_the_orchestrator(any_local: LocalSandbox) -> None:
    """Killed runs (time limits) leave children behind that only a reaper collects."""
    if not any_local.subreaper:
        pytest.skip("this process could not become a child subreaper")
    runs = [any_local.run(spec(escaper(f"z-{secrets.token_hex(4)}", linger=True), timeout=0.5)) for _ in range(4)]
    executions = await asyncio.gather(*runs)
    assert all(execution.timed_out for execution in executions)
    me = os.getpid()
    deadline = time.monotonic() + 5
    while True:
        zombies = [info.pid for info in reaping.processes().values() if info.ppid == me and info.state == "Z"]
        if not zombies or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert zombies == []
