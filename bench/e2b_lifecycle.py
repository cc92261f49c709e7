"""E2B sandbox lifecycle: the first message of a new conversation with and without a warm pool,
and a message after the conversation's sandbox was paused, against a message on a live sandbox.

The real SDK talks to the E2B stand-in over loopback HTTP, which takes ``--create-ms`` (default
400) to create a sandbox, as the cloud takes a few hundred; the sandboxes bucket is on a real
nats-server. Every kind is measured in the same run, interleaved, so the machine's state affects
them alike. Not a test: it asserts nothing.

    .venv/bin/python bench/e2b_lifecycle.py [--iterations N] [--create-ms 400] [--resume-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the stand-in lives in tests/support

from tests.support.e2b_standin import E2BStandIn  # noqa: E402
from tests.support.nats import NatsServer  # noqa: E402

from athenic.orchestrator.policies import PolicyCache  # noqa: E402
from athenic.orchestrator.sandbox.base import RunSpec  # noqa: E402
from athenic.orchestrator.sandbox.e2b import E2BSandbox  # noqa: E402
from athenic.shared import names  # noqa: E402
from athenic.shared.broker import Broker  # noqa: E402
from athenic.shared.policy import SandboxPolicy  # noqa: E402
from athenic.shared.quotas import publish_policy  # noqa: E402
from athenic.shared.settings import NatsSettings, load  # noqa: E402

POOL = 2


def spec(client: str, code: str = "print(1)", idle: int = 300) -> RunSpec:
    return RunSpec(client_id=client, language="python", code=code, timeout_seconds=30, idle_seconds=idle)


async def timed(run: Awaitable[object]) -> float:
    """Seconds awaiting ``run`` (a coroutine starts only when awaited)."""
    started = time.perf_counter()
    await run
    return time.perf_counter() - started


async def until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the stand-in never got there")
        await asyncio.sleep(0.01)


def backend(broker: Broker, policies: PolicyCache | None) -> E2BSandbox:
    return E2BSandbox(kv=broker.bucket(names.SANDBOXES_BUCKET), policies=policies, api_key="bench",
                      output_limit_bytes=65536, request_timeout_seconds=30, upkeep_seconds=0.5)


async def measure(iterations: int, standin: E2BStandIn, broker: Broker) -> dict[str, list[float]]:
    policies = PolicyCache(broker.bucket(names.POLICIES_BUCKET))
    await publish_policy(broker.bucket(names.POLICIES_BUCKET), SandboxPolicy(tenant="*", e2b_warm_pool=POOL))
    await policies.start()
    cold, warm = backend(broker, None), backend(broker, policies)
    times: dict[str, list[float]] = {"live": [], "cold": [], "warm": [], "paused": []}

    async def pool_full() -> None:
        deadline = time.monotonic() + 60
        while len([e for e in await warm.directory.all_slots() if e.slot.state == "ready"]) < POOL:
            if time.monotonic() > deadline:
                raise TimeoutError("the warm pool never refilled")
            await asyncio.sleep(0.02)

    try:
        await cold.run(spec("warmup"))
        for n in range(iterations):
            times["live"].append(await timed(cold.run(spec("warmup"))))
            times["cold"].append(await timed(cold.run(spec(f"cold{n}"))))
            await pool_full()
            times["warm"].append(await timed(warm.run(spec(f"warm{n}"))))
            await cold.run(spec(f"pause{n}", code="x = 1", idle=1))
            paused = next(s.sandbox_id for s in standin.creates if s.metadata.get("clientId") == f"pause{n}")
            await until(lambda paused=paused: paused in standin.pauses)
            times["paused"].append(await timed(cold.run(spec(f"pause{n}", code="print(x)"))))
        print(f"warm pool: {warm.pool.hits} hits, {warm.pool.misses} misses")
    finally:
        await cold.aclose()
        await warm.aclose()
        await policies.aclose()
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--create-ms", type=float, default=400)
    parser.add_argument("--resume-ms", type=float, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "js").start()
        try:
            async with E2BStandIn() as standin:
                os.environ.update({"E2B_API_URL": standin.url, "E2B_SANDBOX_URL": standin.url})
                standin.create_latency = args.create_ms / 1000
                standin.resume_latency = args.resume_ms / 1000
                broker = Broker(load(NatsSettings, {"NATS_URL": server.url}), name="bench")
                await broker.start()
                await broker.wait_ready(30)
                try:
                    times = await measure(args.iterations, standin, broker)
                finally:
                    await broker.close()
        finally:
            server.stop()
    p50 = {kind: statistics.median(values) * 1000 for kind, values in times.items()}
    print(f"stand-in create {args.create_ms:g} ms, resume {args.resume_ms:g} ms; {args.iterations} iterations;"
          f" load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for kind, label in (("live", "message on a live sandbox"), ("cold", "new conversation, no pool"),
                        ("warm", "new conversation, warm pool"), ("paused", "message after a pause")):
        print(f"  {label:30s} p50 {p50[kind]:8.1f} ms  (min {min(times[kind]) * 1000:.1f})")
    print(f"warm / cold first message: {p50['warm'] / p50['cold']:.2f}x")
    print(f"paused / cold: {p50['paused'] / p50['cold']:.2f}x   paused / live: {p50['paused'] / p50['live']:.2f}x")
    print(f"cold / live: {p50['cold'] / p50['live']:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
