"""Round trip of `print(1)` through the local sandbox backend against a bare `python3 -c`.

Both are measured in the same run, interleaved, so the machine's state affects them alike;
the ratio is what to compare between machines and versions. Not a test: it asserts nothing.

    .venv/bin/python bench/sandbox_roundtrip.py [iterations]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from athenic.orchestrator.sandbox.base import RunSpec
from athenic.orchestrator.sandbox.local import LocalSandbox

CODE = "print(1)"


async def bare() -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", "-c", CODE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, _ = await proc.communicate()
    elapsed = time.perf_counter() - started
    assert stdout == b"1\n", stdout
    return elapsed


async def through_backend(backend: LocalSandbox) -> float:
    started = time.perf_counter()
    execution = await backend.run(RunSpec(client_id="bench", language="python", code=CODE, timeout_seconds=10))
    elapsed = time.perf_counter() - started
    assert execution.stdout == "1\n", execution
    return elapsed


async def main(iterations: int) -> None:
    backend = LocalSandbox(output_limit_bytes=64 * 1024)
    # the same backend degraded, to split the cost of bubblewrap from the rest
    degraded = LocalSandbox(output_limit_bytes=64 * 1024, bwrap_path="/nonexistent/bwrap")
    mode = "bubblewrap + rlimits" if backend.isolated else "rlimits only (no bubblewrap)"
    for _ in range(3):  # warm the page cache for all
        await bare()
        await through_backend(backend)
        await through_backend(degraded)
    bare_times: list[float] = []
    sandbox_times: list[float] = []
    degraded_times: list[float] = []
    for _ in range(iterations):
        bare_times.append(await bare())
        sandbox_times.append(await through_backend(backend))
        degraded_times.append(await through_backend(degraded))
    await backend.aclose()
    await degraded.aclose()
    bare_ms = statistics.median(bare_times) * 1000
    sandbox_ms = statistics.median(sandbox_times) * 1000
    print(f"local sandbox round trip of {CODE!r}, {iterations} iterations each, interleaved ({mode})")
    print(f"  bare python3 -c      median {bare_ms:7.2f} ms   p90 {_p90(bare_times) * 1000:7.2f} ms")
    print(f"  LocalSandbox.run     median {sandbox_ms:7.2f} ms   p90 {_p90(sandbox_times) * 1000:7.2f} ms")
    degraded_ms = statistics.median(degraded_times) * 1000
    print(f"  (rlimits only)       median {degraded_ms:7.2f} ms   p90 {_p90(degraded_times) * 1000:7.2f} ms")
    print(f"  ratio sandbox/bare   {sandbox_ms / bare_ms:.2f}x   (rlimits only/bare {degraded_ms / bare_ms:.2f}x)")


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
