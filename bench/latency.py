"""End-to-end latency: POST → the final record pushed to the client, p50 and p99.

Messages are offered at a fixed rate (open loop: a slow answer does not slow the offer)
through the real api and one orchestrator (the rules planner), spread over conversations
that each follow their own WebSocket (``/api/chat/ws/{clientId}``), as the app does. Two
kinds: a message without code, and a ``print(1)`` block run in the local sandbox. The
latency of a message is from sending its POST to receiving, on its conversation's socket,
the ``response`` frame with its ``requestId`` in a final status.

The two kinds at the low rate take turns, in rounds (no code, print(1), no code, print(1)...),
so that a drift of the shared machine's speed falls on both alike. The baseline, measured
from the same requests: the POST's own answer time (the api accepting the message). The
ratio says how much the asynchronous pipeline and the push add.
Then both kinds at a high rate on the same conversations (their kernels are live; no code
there is the floor of what the pipeline does at that rate on the machine):
goals (issue 11) at 20/s, ``print(1)`` p50 within 2 ms of a message without code; at 150/s,
``print(1)`` p99 <= 30 ms (no runaway queue).

    .venv/bin/python bench/latency.py [messages-per-kind] [rate-per-second] [high-rate]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable

import httpx
import websockets

from _harness import API_ENV, Api, Orchestrator, allow_executions, broker, header, orchestrator, percentile, workdir
from athenic.shared.messages import FINAL_STATUSES

# Enough conversations that one gets a message about once a second: a conversation's
# newer message supersedes an older one still waiting, and would hide its answer.
CONVERSATIONS = 30
# rounds of each kind at the low rate, taking turns
ROUNDS = 3


def no_code(index: int) -> str:
    return f"hello, this is message {index}"


def print_one(index: int) -> str:
    return "```python\nprint(1)\n```"


KINDS: dict[str, Callable[[int], str]] = {"no code": no_code, "print(1), local sandbox": print_one}


async def measure(api_url: str, kind: str, count: int, rate: float, warmup: int) -> tuple[list[float], list[float]]:
    pushed: dict[str, float] = {}
    arrived: dict[str, asyncio.Event] = {}
    tag = list(KINDS).index(kind)  # (the same conversations for a kind at every rate)
    conversations = [f"lat-{tag}-{n}" for n in range(CONVERSATIONS)]
    posts: list[float] = []
    ends: list[float] = []
    message_for = KINDS[kind]
    async with httpx.AsyncClient(base_url=api_url, timeout=30,
                                 limits=httpx.Limits(max_connections=64)) as client:
        # a conversation exists once its first message is stored; then its socket may open
        for client_id in conversations:
            opened = await client.post("/api/chat", json={"message": "hello"}, headers={"x-client-id": client_id})
            assert opened.status_code == 200, opened.text

        async def follow(client_id: str, ready: asyncio.Event) -> None:
            async with websockets.connect(f"{api_url.replace('http', 'ws', 1)}/api/chat/ws/{client_id}") as socket:
                ready.set()
                async for frame in socket:
                    event = json.loads(frame)
                    if event.get("type") == "response" and event.get("status") in FINAL_STATUSES:
                        now = time.perf_counter()
                        pushed.setdefault(event["requestId"], now)
                        arrived.setdefault(event["requestId"], asyncio.Event()).set()

        ready_events = [asyncio.Event() for _ in conversations]
        followers = [asyncio.create_task(follow(client_id, ready))
                     for client_id, ready in zip(conversations, ready_events, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in ready_events)), 30)

        async def one(index: int) -> None:
            sent = time.perf_counter()
            response = await client.post("/api/chat", json={"message": message_for(index)},
                                         headers={"x-client-id": conversations[index % CONVERSATIONS]})
            answered = time.perf_counter()
            assert response.status_code == 200, response.text
            request_id = response.headers["x-request-id"]
            await asyncio.wait_for(arrived.setdefault(request_id, asyncio.Event()).wait(), 60)
            if index >= warmup:
                posts.append(answered - sent)
                ends.append(pushed[request_id] - sent)

        started = time.perf_counter()
        tasks = []
        for index in range(count + warmup):
            # a fixed schedule: message i leaves at i / rate, however long earlier ones take
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks)
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    return posts, ends


def wait_for_kernels(worker: Orchestrator, live: int, timeout: float = 60) -> None:
    """Until the orchestrator holds ``live`` kernels and its warm pool is full again (its metrics)."""
    deadline = time.monotonic() + timeout
    pool = int(worker.env.get("ATHENIC_KERNEL_POOL_SIZE", "2"))
    while True:
        gauges = {}
        for line in httpx.get(f"http://127.0.0.1:{worker.port}/metrics", timeout=5).text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("athenic_orchestrator_kernels_live", "athenic_orchestrator_kernel_pool_size"):
                gauges[name] = float(value)
        if (gauges.get("athenic_orchestrator_kernels_live") == live
                and gauges.get("athenic_orchestrator_kernel_pool_size") == pool):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the orchestrator's kernels never settled: {gauges}")
        time.sleep(0.1)


def main(count: int, rate: float, high_rate: float) -> None:
    warmup = max(5, count // 20)
    header(f"end-to-end latency: {count} messages per kind at {rate:g}/s offered in {ROUNDS} rounds taking turns "
           f"(+{warmup} warm-up each) over "
           f"{CONVERSATIONS} conversations (each code one's kernel started, and the pool refilled, first), "
           f"then both at {high_rate:g}/s; one orchestrator (8 slots); "
           "pushed = the final response frame on the conversation's WebSocket")
    runs = [(kind, rate, round_) for round_ in range(ROUNDS) for kind in KINDS]
    # (no code at the high rate too: the floor of what the pipeline does there on this machine)
    runs += [("no code", high_rate, 0), ("print(1), local sandbox", high_rate, 0)]
    per_round = -(-count // ROUNDS)
    with workdir("latency") as tmp, broker(tmp) as nats_server:
        api = Api(nats_server.url, tmp, **API_ENV).start()
        allow_executions([nats_server.url])  # the sandbox quota is not what is measured
        # a kernel for each conversation (the default bound per tenant is lower than the bench's 30)
        worker = orchestrator(nats_server.url, tmp, ATHENIC_KERNEL_MAX_PER_TENANT=str(CONVERSATIONS)).start()
        pooled: dict[tuple[str, float], tuple[list[float], list[float]]] = {}
        try:
            # every code conversation's kernel started first, and the warm pool refilled after
            # those claims: a kernel's start is sandbox_roundtrip.py's "new conversation" figure,
            # not the steady state measured here
            asyncio.run(measure(api.url, "print(1), local sandbox", 0, rate, CONVERSATIONS))
            wait_for_kernels(worker, live=CONVERSATIONS)
            for kind, at, _round in runs:
                posts, ends = asyncio.run(measure(api.url, kind, per_round if at == rate else count, at, warmup))
                pool = pooled.setdefault((kind, at), ([], []))
                pool[0].extend(posts)
                pool[1].extend(ends)
        finally:
            worker.terminate()
            api.terminate()
    results = [(kind, at, pool) for (kind, at), pool in pooled.items()]
    p50: dict[tuple[str, float], float] = {}
    p99: dict[tuple[str, float], float] = {}
    for kind, at, (posts, ends) in results:
        post50, post99 = percentile(posts, 50) * 1000, percentile(posts, 99) * 1000
        end50, end99 = percentile(ends, 50) * 1000, percentile(ends, 99) * 1000
        p50[kind, at], p99[kind, at] = end50, end99
        label = f"{kind} at {at:g}/s"
        print(f"   {label:36s} POST answered   p50 {post50:7.1f} ms  p99 {post99:7.1f} ms   (baseline)")
        print(f"   {'':36s} final pushed    p50 {end50:7.1f} ms  p99 {end99:7.1f} ms   "
              f"ratio to the POST: p50 {end50 / post50:.1f}x, p99 {end99 / post99:.1f}x")
    code, plain = "print(1), local sandbox", "no code"
    print(f"   goals: at {rate:g}/s print(1) p50 - no-code p50 = {p50[code, rate] - p50[plain, rate]:+.1f} ms "
          f"(<= 2 ms); at {high_rate:g}/s print(1) p99 = {p99[code, high_rate]:.1f} ms (<= 30 ms; "
          f"no code there: p99 {p99[plain, high_rate]:.1f} ms)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300, float(sys.argv[2]) if len(sys.argv) > 2 else 20.0,
         float(sys.argv[3]) if len(sys.argv) > 3 else 150.0)
