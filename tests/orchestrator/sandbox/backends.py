"""The sandbox tests' backends and what they look at: the local backend as the orchestrator
builds it, its processes in /proc, kernels' leftovers, the E2B backend on the stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from athenic.orchestrator.policies import PolicyCache
from athenic.orchestrator.sandbox import reaping
from athenic.orchestrator.sandbox.base import RunSpec
from athenic.orchestrator.sandbox.e2b import E2BSandbox
from athenic.orchestrator.sandbox.isolation import find_bubblewrap
from athenic.orchestrator.sandbox.kernels import KernelSettings
from athenic.orchestrator.sandbox.local import LocalSandbox
from athenic.shared import names
from athenic.shared.broker import Broker
from tests.support.paths import REPO_ROOT

OUTPUT_LIMIT = 4096


# The sandbox's Python environment as `make test` installs it (`make sandbox-python`): the local
# backends of these tests run user code on it, as the orchestrator does.
PYTHON_ENV = str(REPO_ROOT / ".athenic" / "sandbox-python")


# Each test's backend gets a /tmp size of its own, which its bubblewrap command line carries:
# sandboxes that other test runs on this machine start at the same time are not counted.
_sizes = itertools.count(17)


def _unique_tmp_mib() -> int:
    return 17 + next(_sizes) % 32


def sandbox_processes(backend: LocalSandbox) -> list[int]:
    """Live processes of this backend's sandboxes (bubblewrap, and the interpreter without it).

    With bubblewrap, the code's own processes live in a PID namespace whose init is bubblewrap:
    when it is gone the kernel has killed every process of the namespace.
    """
    size = f"--size\0{backend.tmp_mib * 1024 * 1024}\0".encode()
    marker = size if backend.isolated else b"athenic-sandbox-"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


async def wait_until_no_sandbox_processes(backend: LocalSandbox, deadline: float) -> list[int]:
    """The backend's processes still alive at ``deadline`` (monotonic), polling until then."""
    while (left := sandbox_processes(backend)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return left


def kernel_leftovers(backend: LocalSandbox) -> list[int]:
    """Processes in the backend's kernels besides the kernels' own (bubblewrap, its init, the
    interpreter): what runs left behind."""
    assert backend.kernels is not None
    table = reaping.processes()
    found = []
    for kernel in [*backend.kernels.live(), *backend.kernels.pool_kernels()]:
        if kernel.proc.returncode is not None:
            continue
        if kernel.python_pid not in table:
            continue
        own = {kernel.proc.pid, kernel.python_pid, table[kernel.python_pid].ppid}
        found += [pid for pid in reaping.descendants({kernel.proc.pid}, table) - own if table[pid].state != "Z"]
    return found


async def wait_until_no_leftovers(backend: LocalSandbox, deadline: float) -> list[int]:
    """What runs left behind, still alive at ``deadline``: the backend's sandbox processes
    (one-shot), or the processes of its kernels that are not the kernels' own."""
    if backend.kernels is None:
        return await wait_until_no_sandbox_processes(backend, deadline)
    while (left := kernel_leftovers(backend)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return left


@contextlib.asynccontextmanager
async def kernel_backend(mode: str, *, client_id: str = "c", settings: KernelSettings | None = None,
                         max_processes: int = 32) -> AsyncIterator[LocalSandbox]:
    """The isolated local backend in one of the modes a Python run can take:
    ``one-shot`` (no kernels), ``kernel-cold`` (no pool: the conversation's kernel starts on its
    first run), ``kernel-pooled`` (a fresh kernel waits in the pool before the first run) or
    ``kernel-live`` (the conversation's kernel already ran code of ``client_id``)."""
    kernels = None
    if mode != "one-shot":
        kernels = settings or KernelSettings(pool_size=1 if mode == "kernel-pooled" else 0)
    backend = LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, tmp_mib=_unique_tmp_mib(), max_processes=max_processes,
                           python_env=PYTHON_ENV, kernels=kernels)
    try:
        if kernels is not None and backend.kernels is None:
            _, why = find_bubblewrap(None)
            pytest.skip(f"kernels need bubblewrap: {why}")
        if backend.kernels is not None and mode == "kernel-pooled":
            backend.kernels.start()
            deadline = time.monotonic() + 60
            while backend.kernels.pooled < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert backend.kernels.pooled >= 1, "the pool did not fill"
        if mode == "kernel-live":
            warm = await backend.run(RunSpec(client_id=client_id, language="python", code="warm = 1"))
            assert warm.error is None, warm.error
        yield backend
    finally:
        await backend.aclose()


def e2b_backend(broker: Broker, policies: PolicyCache | None = None, *, api_key: str = "e2b_test_key",
                request_timeout: float = 5, upkeep_seconds: float = 30.0) -> E2BSandbox:
    """The E2B backend as the orchestrator builds it, on the stand-in and the real sandboxes bucket."""
    return E2BSandbox(kv=broker.bucket(names.SANDBOXES_BUCKET), policies=policies, api_key=api_key,
                      output_limit_bytes=OUTPUT_LIMIT, request_timeout_seconds=request_timeout, api_retries=0,
                      upkeep_seconds=upkeep_seconds)
