"""End-to-end latency: POST → the final record pushed to the client, p50 and p99.

Messages are offered at a fixed rate (open loop: a slow answer does not slow the offer),
each its own conversation, through the real api and one orchestrator (the rules planner).
Two kinds, one after the other: a message without code, and a ``print(1)`` block run in
the local sandbox. "Pushed" is observed with a KV watch on the responses bucket (what the
api's WebSocket/SSE push is built on), from this process: the time from sending the POST
to seeing the message's final record.

The baseline, measured from the same requests: the POST's own answer time (the api
accepting the message). The ratio says how much the asynchronous pipeline adds on top.

    .venv/bin/python bench/latency.py [messages-per-kind] [rate-per-second]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import httpx
import msgspec
import nats

from _harness import API_ENV, Api, allow_executions, broker, header, orchestrator, percentile, workdir
from athenic.shared import names
from athenic.shared.messages import FINAL_STATUSES


def no_code(index: int) -> str:
    return f"hello, this is message {index}"


def print_one(index: int) -> str:
    return "```python\nprint(1)\n```"


KINDS: dict[str, Callable[[int], str]] = {"no code": no_code, "print(1), local sandbox": print_one}


class Seen(msgspec.Struct):
    status: str
    request_id: str = msgspec.field(name="requestId")


async def measure(api_url: str, nats_url: str, kind: str, count: int, rate: float,
                  warmup: int) -> tuple[list[float], list[float]]:
    nc = await nats.connect(nats_url)
    kv = await nc.jetstream().key_value(names.RESPONSES_BUCKET)
    finals: dict[str, float] = {}
    arrived: dict[str, asyncio.Event] = {}
    decoder = msgspec.json.Decoder(Seen)
    watcher = await kv.watchall()

    async def watch() -> None:
        async for entry in watcher:
            if entry is None or not entry.value:
                continue  # the end of the initial values, or a deletion
            seen = decoder.decode(entry.value)
            if seen.status in FINAL_STATUSES and seen.request_id not in finals:
                finals[seen.request_id] = time.perf_counter()
                arrived.setdefault(seen.request_id, asyncio.Event()).set()

    watching = asyncio.create_task(watch())
    posts: list[float] = []
    ends: list[float] = []
    message_for = KINDS[kind]
    async with httpx.AsyncClient(base_url=api_url, timeout=30,
                                 limits=httpx.Limits(max_connections=64)) as client:

        async def one(index: int) -> None:
            sent = time.perf_counter()
            response = await client.post("/api/chat", json={"message": message_for(index)},
                                         headers={"x-client-id": f"lat-{list(KINDS).index(kind)}-{index}"})
            answered = time.perf_counter()
            assert response.status_code == 200, response.text
            request_id = response.headers["x-request-id"]
            await asyncio.wait_for(arrived.setdefault(request_id, asyncio.Event()).wait(), 60)
            if index >= warmup:
                posts.append(answered - sent)
                ends.append(finals[request_id] - sent)

        started = time.perf_counter()
        tasks = []
        for index in range(count + warmup):
            # a fixed schedule: message i leaves at i / rate, however long earlier ones take
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks)
    watching.cancel()
    await watcher.stop()  # type: ignore[no-untyped-call]
    await nc.close()
    return posts, ends


def main(count: int, rate: float) -> None:
    warmup = max(5, count // 20)
    header(f"end-to-end latency: {count} messages per kind at {rate:g}/s offered (+{warmup} warm-up), "
           "one orchestrator (8 slots); 'pushed' = the final record seen by a KV watch")
    with workdir("latency") as tmp, broker(tmp) as nats_server:
        api = Api(nats_server.url, tmp, **API_ENV).start()
        allow_executions([nats_server.url])  # the sandbox quota is not what is measured
        worker = orchestrator(nats_server.url, tmp).start()
        try:
            results = {kind: asyncio.run(measure(api.url, nats_server.url, kind, count, rate, warmup))
                       for kind in KINDS}
        finally:
            worker.terminate()
            api.terminate()
    for kind, (posts, ends) in results.items():
        post50, post99 = percentile(posts, 50) * 1000, percentile(posts, 99) * 1000
        end50, end99 = percentile(ends, 50) * 1000, percentile(ends, 99) * 1000
        print(f"   {kind:25s} POST answered   p50 {post50:7.1f} ms  p99 {post99:7.1f} ms   (baseline)")
        print(f"   {'':25s} final pushed    p50 {end50:7.1f} ms  p99 {end99:7.1f} ms   "
              f"ratio to the POST: p50 {end50 / post50:.1f}x, p99 {end99 / post99:.1f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300, float(sys.argv[2]) if len(sys.argv) > 2 else 20.0)
