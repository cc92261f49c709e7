"""Round trip of `print(1)` through the local sandbox backend against a bare `python3 -c`.

All are measured in the same run, interleaved, so the machine's state affects them alike;
the ratio is what to compare between machines and versions. Not a test: it asserts nothing.
Python runs four ways: one-shot (a fresh interpreter in bubblewrap per run), on the
conversation's live kernel, as a new conversation whose kernel comes from the warm pool (the
pool is refilled between iterations, outside the timing), and as a new conversation with no
pool (its kernel starts cold). Goals (issue 11): live kernel <= 0.1x bare, from the pool <= 0.5x.

    .venv/bin/python bench/sandbox_roundtrip.py [iterations]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from athenic.orchestrator.sandbox.base import RunSpec
from athenic.orchestrator.sandbox.kernels import KernelSettings
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


async def through_backend(backend: LocalSandbox, client_id: str = "bench") -> float:
    started = time.perf_counter()
    execution = await backend.run(RunSpec(client_id=client_id, language="python", code=CODE, timeout_seconds=10))
    elapsed = time.perf_counter() - started
    assert execution.stdout == "1\n", execution
    return elapsed


async def pool_filled(backend: LocalSandbox, size: int) -> None:
    assert backend.kernels is not None
    backend.kernels.start()
    while backend.kernels.pooled < size:
        await asyncio.sleep(0.005)


async def main(iterations: int) -> None:
    env = ".athenic/sandbox-python"
    backend = LocalSandbox(output_limit_bytes=64 * 1024, python_env=env)
    # the same backend degraded, to split the cost of bubblewrap from the rest
    degraded = LocalSandbox(output_limit_bytes=64 * 1024, bwrap_path="/nonexistent/bwrap", python_env=env)
    live = LocalSandbox(output_limit_bytes=64 * 1024, python_env=env, kernels=KernelSettings(pool_size=0))
    pooled = LocalSandbox(output_limit_bytes=64 * 1024, python_env=env,
                          kernels=KernelSettings(pool_size=1, max_kernels=8, max_per_tenant=8))
    cold = LocalSandbox(output_limit_bytes=64 * 1024, python_env=env,
                        kernels=KernelSettings(pool_size=0, max_kernels=8, max_per_tenant=8))
    mode = "bubblewrap + rlimits" if backend.isolated else "rlimits only (no bubblewrap)"
    times: dict[str, list[float]] = {name: [] for name in ("bare", "one-shot", "rlimits", "live", "pool", "cold")}
    for index in range(3 + iterations):  # the first 3 warm the page cache for all
        round_times = {
            "bare": await bare(),
            "one-shot": await through_backend(backend),
            "rlimits": await through_backend(degraded),
            "live": await through_backend(live) if live.kernels else float("nan"),
        }
        if pooled.kernels is not None and cold.kernels is not None:
            await pool_filled(pooled, 1)
            round_times["pool"] = await through_backend(pooled, f"new-{index}")
            round_times["cold"] = await through_backend(cold, f"new-{index}")
        if index >= 3:
            for name, value in round_times.items():
                times[name].append(value)
    for each in (backend, degraded, live, pooled, cold):
        await each.aclose()
    ms = {name: statistics.median(values) * 1000 for name, values in times.items() if values}
    print(f"local sandbox round trip of {CODE!r}, {iterations} iterations each, interleaved ({mode})")
    labels = {"bare": "bare python3 -c", "one-shot": "one-shot (bubblewrap)", "rlimits": "one-shot (rlimits only)",
              "live": "live kernel", "pool": "new conversation, pool", "cold": "new conversation, cold"}
    for name, label in labels.items():
        if name in ms:
            print(f"  {label:26s} median {ms[name]:7.2f} ms   p90 {_p90(times[name]) * 1000:7.2f} ms   "
                  f"ratio to bare {ms[name] / ms['bare']:.2f}x")
    if "pool" in ms:
        print(f"  goals: live kernel {ms['live'] / ms['bare']:.3f}x bare (<= 0.1x), "
              f"from the pool {ms['pool'] / ms['bare']:.2f}x bare (<= 0.5x)")
    else:
        print("  (no kernels: bubblewrap does not work here)")


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
