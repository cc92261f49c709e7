"""Hostile code on the local backend: each attack is contained, explained in the Execution,
and the backend answers a normal run right after.

Every attack runs one-shot (a fresh interpreter per run) and on a kernel (kernels.py): a cold
one (started for the conversation), a pooled one (started before the run's tenant was known,
its limits applied at the claim) and a live one (that already ran the conversation's code)."""

from __future__ import annotations

import os
import platform
import secrets
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from athenic.orchestrator.sandbox.base import RunSpec
from athenic.orchestrator.sandbox.local import LocalSandbox
from athenic.shared.messages import Execution
from tests.orchestrator.sandbox.backends import OUTPUT_LIMIT, PYTHON_ENV, kernel_backend, wait_until_no_leftovers

pytestmark = pytest.mark.integration


def spec(code: str, *, timeout: float = 3, memory_mib: int = 256) -> RunSpec:
    return RunSpec(client_id="attacker", language="python", code=code, timeout_seconds=timeout,
                   memory_mib=memory_mib)


async def still_serves(backend: LocalSandbox) -> None:
    execution = await backend.run(spec("print(1)"))
    assert execution.stdout == "1\n"
    assert execution.error is None


async def no_sandbox_processes_left(backend: LocalSandbox) -> None:
    """Nothing of the run is left (a kernel's own processes stay: they are not the run's)."""
    assert await wait_until_no_leftovers(backend, time.monotonic() + 2) == []


def explained(execution: Execution, name: str) -> None:
    assert execution.error is not None, "the answer must say what happened"
    assert execution.error.name == name, execution.error
    assert execution.error.value


MODES = ["one-shot", "kernel-cold", "kernel-pooled", "kernel-live"]


@pytest.fixture(params=MODES)
async def local_sandbox(request: pytest.FixtureRequest) -> AsyncIterator[LocalSandbox]:
    """The isolated backend, one-shot or on a kernel of each kind (for ``isolated_sandbox`` too)."""
    async with kernel_backend(request.param, client_id="attacker") as backend:
        yield backend


@pytest.fixture(params=["rlimits-only", *MODES])
async def any_local(request: pytest.FixtureRequest) -> AsyncIterator[LocalSandbox]:
    """Attacks that rlimits alone must contain too, run on both variants of the backend."""
    if request.param == "rlimits-only":
        bare = LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, tmp_mib=16, max_processes=32,
                            bwrap_path="/nonexistent/bwrap", python_env=PYTHON_ENV)
        try:
            yield bare
        finally:
            await bare.aclose()
        return
    async with kernel_backend(request.param, client_id="attacker") as backend:
        if not backend.isolated:
            pytest.skip("bubblewrap does not work here; the rlimits-only variant covers this attack")
        yield backend


async def test_infinite_loop_is_stopped_at_the_time_limit(any_local: LocalSandbox) -> None:
    execution = await any_local.run(spec("print('spinning')\nwhile True:\n    pass", timeout=1))
    assert execution.timed_out
    assert execution.stdout == "spinning\n"
    explained(execution, "TimeoutError")
    await no_sandbox_processes_left(any_local)
    await still_serves(any_local)


async def test_memory_bomb_fails_with_memory_error(any_local: LocalSandbox) -> None:
    code = "hoard = []\nwhile True:\n    hoard.append(bytearray(10 * 1024 * 1024))"
    execution = await any_local.run(spec(code, memory_mib=128))
    explained(execution, "MemoryError")
    assert not execution.timed_out
    await still_serves(any_local)


async def test_printing_100_mb_keeps_a_bounded_slice_and_no_more_memory(any_local: LocalSandbox) -> None:
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(chunk)\nprint('done')"
    tracemalloc.start()
    try:
        execution = await any_local.run(spec(code, timeout=30))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert execution.error is None
    assert execution.truncated
    assert "bytes of output omitted (output limit reached)" in execution.stdout
    assert execution.stdout.endswith("xxxxdone\n")
    assert len(execution.stdout.encode()) < OUTPUT_LIMIT + 200
    assert peak < 8 * 1024 * 1024, f"the orchestrator held {peak} bytes while 100 MB went by"
    await still_serves(any_local)


async def test_fork_bomb_hits_the_process_limit(isolated_sandbox: LocalSandbox) -> None:
    code = (
        "import os, time\n"
        "forks = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        forks += 1\n"
        "except OSError as exc:\n"
        "    print('forks', forks)\n"
        "    raise\n"
    )
    execution = await isolated_sandbox.run(spec(code))
    explained(execution, "BlockingIOError")
    forks = int(execution.stdout.split()[1])
    assert 0 < forks < 32
    # the sleeping children die with the sandbox
    await no_sandbox_processes_left(isolated_sandbox)
    await still_serves(isolated_sandbox)


async def test_fork_bomb_that_never_gives_up_is_cleaned_away(isolated_sandbox: LocalSandbox) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    execution = await isolated_sandbox.run(spec(code, timeout=1.5))
    assert execution.timed_out
    explained(execution, "TimeoutError")
    await no_sandbox_processes_left(isolated_sandbox)
    await still_serves(isolated_sandbox)


async def test_filling_the_disk_stops_at_the_private_tmp(isolated_sandbox: LocalSandbox) -> None:
    code = (
        "import itertools\n"
        "block = b'\\0' * (1 << 20)\n"
        "for i in itertools.count():\n"
        "    with open(f'/tmp/fill-{i}', 'wb') as f:\n"
        "        f.write(block)\n"
    )
    execution = await isolated_sandbox.run(spec(code))
    explained(execution, "OSError")
    assert "No space left on device" in execution.error.value  # type: ignore[union-attr]
    one_big_file = "with open('/tmp/big', 'wb') as f:\n    while True:\n        f.write(b'\\0' * (1 << 20))"
    execution = await isolated_sandbox.run(spec(one_big_file))
    explained(execution, "OSError")
    # shared memory is a tmpfs too: bounded the same way
    execution = await isolated_sandbox.run(spec(code.replace("/tmp/", "/dev/shm/")))
    explained(execution, "OSError")
    assert "No space left on device" in execution.error.value  # type: ignore[union-attr]
    await still_serves(isolated_sandbox)


async def test_cannot_reach_a_listener_on_the_host(isolated_sandbox: LocalSandbox) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = (
        "import socket\n"
        f"for host in ('127.0.0.1', 'localhost', '1.1.1.1'):\n"
        "    try:\n"
        f"        socket.create_connection((host, {port}), timeout=1)\n"
        "        print('connected', host)\n"
        "    except OSError as exc:\n"
        "        print('failed', host, type(exc).__name__)\n"
        f"socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
    )
    try:
        execution = await isolated_sandbox.run(spec(code))
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert "connected" not in execution.stdout
    assert execution.stdout.count("failed") == 3
    explained(execution, "ConnectionRefusedError")
    await still_serves(isolated_sandbox)


async def test_no_secret_of_the_orchestrator_is_readable(
    isolated_sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"s3cret-{secrets.token_hex(8)}"
    monkeypatch.setenv("ATHENIC_FAKE_SECRET", secret)
    code = (
        "import glob, os\n"
        "print(dict(os.environ))\n"
        "seen = 0\n"
        "for path in sorted(glob.glob('/proc/*/environ')):\n"
        "    try:\n"
        "        print(path, open(path, 'rb').read())\n"
        "        seen += 1\n"
        "    except OSError as exc:\n"
        "        print(path, type(exc).__name__)\n"
        "print('readable', seen)\n"
        "for path in ('/proc/1/cmdline', '/proc/self/status'):\n"
        "    print(open(path, 'rb').read())\n"
    )
    execution = await isolated_sandbox.run(spec(code))
    assert execution.error is None, execution.error
    assert int(execution.stdout.split("readable ")[1].split()[0]) >= 1, "the test must actually read /proc"
    assert secret not in execution.stdout
    assert secret not in execution.stderr
    assert "ATHENIC_FAKE_SECRET" not in execution.stdout
    await still_serves(isolated_sandbox)


# The stand-in of a non-root orchestrator starts as root, imports everything it will need, and
# only then becomes uid 65534: the checkout and its venv may sit under a private folder (a
# `mktemp -d`, /root) that uid cannot enter. Changing uid makes a process non-dumpable, which
# would hide what the test is about, so it is made dumpable again, as a process started by
# that uid is; the backend itself must then protect its /proc entries.
_DEGRADED_AS_NON_ROOT = """
import asyncio, asyncio.subprocess, concurrent.futures.thread, ctypes, os, resource, sys
from athenic.orchestrator.sandbox.base import RunSpec
from athenic.orchestrator.sandbox.local import LocalSandbox

CODE = '''
import glob
for path in glob.glob('/proc/*/environ'):
    try:
        print(path, open(path, 'rb').read())
    except OSError as exc:
        print(path, type(exc).__name__)
'''

os.setgroups([])
os.setgid(65534)
os.setuid(65534)
PR_SET_DUMPABLE = 4
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) == 0

async def main():
    backend = LocalSandbox(output_limit_bytes=1 << 20, bwrap_path="/nonexistent/bwrap")
    execution = await backend.run(RunSpec(client_id="c", language="python", code=CODE, timeout_seconds=10))
    print("RESULT", f"/proc/{os.getpid()}/environ" in execution.stdout, execution.stdout.count("environ"))
    sys.stdout.write(execution.stdout)

asyncio.run(main())
"""


def test_without_bubblewrap_a_non_root_orchestrator_keeps_its_environment() -> None:
    """Degraded and not root, the code runs as the orchestrator's own uid: /proc/<us>/environ
    must still be out of its reach."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start the orchestrator stand-in as another, unprivileged uid")
    secret = f"s3cret-{secrets.token_hex(8)}"
    done = subprocess.run(
        [sys.executable, "-c", _DEGRADED_AS_NON_ROOT],
        env={"ATHENIC_FAKE_SECRET": secret, "PATH": "/usr/bin:/bin"},
        cwd="/", capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    result = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    _, seen_self, listed = result.split()
    assert seen_self == "True", "the orchestrator's own environ should have been tried"
    assert int(listed) > 1
    assert secret not in done.stdout


async def test_kernel_attack_surface_is_filtered(isolated_sandbox: LocalSandbox) -> None:
    """Keyrings and ptrace work in a plain bubblewrap sandbox; the seccomp filter refuses them."""
    if isolated_sandbox.bubblewrap is None or isolated_sandbox.bubblewrap.seccomp is None:
        pytest.skip("no seccomp filter here (libseccomp missing or refused): see the backend's start log")
    numbers = {"x86_64": {"keyctl": 250, "ptrace": 101}, "aarch64": {"keyctl": 219, "ptrace": 117}}
    if platform.machine() not in numbers:
        pytest.skip(f"system call numbers of {platform.machine()} not listed in this test")
    code = (
        "import ctypes, errno\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"for name, number, args in (('keyctl', {numbers[platform.machine()]['keyctl']}, (0, -3, 0)),\n"
        f"                           ('ptrace', {numbers[platform.machine()]['ptrace']}, (0, 0, 0, 0))):\n"
        "    ctypes.set_errno(0)\n"
        "    result = libc.syscall(number, *args)\n"
        "    print(name, result, errno.errorcode.get(ctypes.get_errno()))\n"
    )
    execution = await isolated_sandbox.run(spec(code))
    assert execution.stdout.splitlines() == ["keyctl -1 EPERM", "ptrace -1 EPERM"]
    await still_serves(isolated_sandbox)
