"""Memory: resident set size of the api and of the orchestrator after 10,000 messages against after 100.

One api and one orchestrator process answer messages posted over HTTP (each its own
conversation; one in ten runs ``print(i)`` in the local sandbox, the rest need no code),
and each conversation's answer is read back once, as the app polls it. RSS is read from
/proc once everything is answered: first after 100 messages (the baseline, a warmed-up
process), then after 10,000. A ratio near 1 means nothing grows with the number of
messages or conversations served.

    .venv/bin/python bench/memory.py [messages]
"""

from __future__ import annotations

import asyncio
import sys
import time

import httpx

from _harness import (
    API_ENV,
    Api,
    allow_executions,
    broker,
    connect,
    header,
    orchestrator,
    rss_mib,
    wait_drained,
    workdir,
)

FINAL = {"completed", "failed", "cancelled"}


def message_for(index: int) -> str:
    return f"```python\nprint({index})\n```" if index % 10 == 0 else f"hello number {index}"


async def serve(api_url: str, nats_url: str, first: int, last: int) -> None:
    """Post messages first..last-1, wait until all are answered, read each answer once."""
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=api_url, timeout=30, limits=limits) as client:
        pending = asyncio.Semaphore(16)

        async def post(index: int) -> None:
            async with pending:
                response = await client.post("/api/chat", json={"message": message_for(index)},
                                             headers={"x-client-id": f"mem-{index}"})
                assert response.status_code == 200, response.text

        await asyncio.gather(*(post(index) for index in range(first, last)))
        nc, js = await connect(nats_url)
        try:
            await wait_drained(js, timeout=600)
        finally:
            await nc.close()

        async def read(index: int) -> None:
            async with pending:
                state = (await client.get(f"/api/chat/response/mem-{index}")).json()
                assert state["status"] in FINAL, state

        await asyncio.gather(*(read(index) for index in range(first, last)))


def main(total: int) -> None:
    baseline_count = 100
    header(f"memory: RSS after {total} messages against after {baseline_count} "
           "(one api, one orchestrator; 1 in 10 messages runs code in the local sandbox)")
    with workdir("memory") as tmp, broker(tmp) as nats_server:
        api = Api(nats_server.url, tmp, **API_ENV).start()
        allow_executions([nats_server.url])  # the sandbox quota is not what is measured
        worker = orchestrator(nats_server.url, tmp).start()
        try:
            assert api.proc is not None and worker.proc is not None
            pids = {"api": api.proc.pid, "orchestrator": worker.proc.pid}
            started = time.perf_counter()
            asyncio.run(serve(api.url, nats_server.url, 0, baseline_count))
            time.sleep(1)
            before = {name: rss_mib(pid) for name, pid in pids.items()}
            asyncio.run(serve(api.url, nats_server.url, baseline_count, total))
            time.sleep(1)
            after = {name: rss_mib(pid) for name, pid in pids.items()}
            elapsed = time.perf_counter() - started
        finally:
            worker.terminate()
            api.terminate()
    for name in pids:
        print(f"   {name:13s} RSS after {baseline_count:>6}: {before[name]:6.1f} MiB   after {total:>6}: "
              f"{after[name]:6.1f} MiB   ratio {after[name] / before[name]:.2f}x")
    print(f"   ({total} messages posted, answered and read back in {elapsed:.0f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
