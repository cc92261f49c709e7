"""Orchestrator throughput: messages per second drained from a pre-filled backlog, 1 against 2 processes.

The request stream is filled with messages that need no sandbox (the rules planner answers
them without running code: the no-op path), each its own conversation; then 1 or 2
orchestrator processes (8 slots each) start and drain it. The rate is taken between 10 %
and 90 % of the backlog drained (sampled from the stream's message count: work-queue
retention removes a message when it is acked), so process start-up is not counted.
Rounds alternate 1, 2, 1, 2...; the ratio of the medians is the scaling figure.

A second workload is sleep-bound: each message runs ``time.sleep(0.2)`` in the local sandbox,
spread over conversations (so their kernels are live after their first message and a replica
that does not hold a conversation's kernel forwards the run to the one that does). Its goal
(issue 11): 2 orchestrator processes >= 1.8x one.

    .venv/bin/python bench/throughput.py [backlog] [rounds] [sleep-backlog]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _harness import (
    API_ENV,
    Api,
    allow_executions,
    broker,
    connect,
    cpu_seconds,
    header,
    median,
    orchestrator,
    publish_requests,
    wait_drained,
    workdir,
)
from athenic.shared import names

SLEEP = "```python\nimport time\ntime.sleep(0.2)\n```"
# the sleep-bound workload's conversations: more than the slots of two processes (16)
SLEEP_CONVERSATIONS = 32


def no_code_messages(round_index: int, backlog: int) -> list[tuple[str, str]]:
    return [(f"tp-{round_index}-{i}", f"hello number {i}") for i in range(backlog)]


def sleep_messages(round_index: int, backlog: int) -> list[tuple[str, str]]:
    return [(f"tps-{round_index}-{i % SLEEP_CONVERSATIONS}", SLEEP) for i in range(backlog)]


async def fill(url: str, messages: list[tuple[str, str]]) -> None:
    backlog = len(messages)
    nc, js = await connect(url)
    try:
        await publish_requests(js, messages)
        stored = (await js.stream_info(names.REQUEST_STREAM)).state.messages
        assert stored == backlog, f"{stored} of {backlog} messages in the stream"
    finally:
        await nc.close()


async def drain_rate(url: str, backlog: int, pids: dict[str, list[int]],
                     timeout: float = 300) -> tuple[float, dict[str, float]]:
    """Messages per second between 10 % and 90 % of the backlog drained, and the CPU time
    each group of processes spent per message meanwhile (µs)."""
    nc, js = await connect(url)
    try:
        marks: dict[str, float] = {}
        cpu: dict[str, dict[str, float]] = {}
        deadline = time.monotonic() + timeout
        while "90" not in marks:
            remaining = (await js.stream_info(names.REQUEST_STREAM)).state.messages
            now = time.perf_counter()
            for mark, left in (("10", 0.9), ("90", 0.1)):
                if remaining <= backlog * left and mark not in marks:
                    marks[mark] = now
                    cpu[mark] = {group: sum(cpu_seconds(pid) for pid in group_pids)
                                 for group, group_pids in pids.items()}
            if time.monotonic() > deadline:
                raise TimeoutError(f"{remaining} of {backlog} messages left after {timeout}s")
            await asyncio.sleep(0.02)
        await wait_drained(js, timeout)  # the next round starts from an empty stream
        drained = backlog * 0.8
        per_message = {group: (cpu["90"][group] - cpu["10"][group]) / drained * 1e6 for group in pids}
        return drained / (marks["90"] - marks["10"]), per_message
    finally:
        await nc.close()


def measure(url: str, tmp: Path, rounds: int, backlog: int, messages: Callable[[int, int], list[tuple[str, str]]],
            ) -> tuple[dict[int, list[float]], dict[int, list[dict[str, float]]]]:
    rates: dict[int, list[float]] = {1: [], 2: []}
    costs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for round_index in range(rounds * 2):
        processes = 1 if round_index % 2 == 0 else 2
        asyncio.run(fill(url, messages(round_index, backlog)))
        kernels = {"ATHENIC_KERNEL_MAX_PER_TENANT": str(SLEEP_CONVERSATIONS)}
        workers = [orchestrator(url, tmp, **kernels).start(wait_ready=False) for _ in range(processes)]
        try:
            pids = {"orchestrators": [w.proc.pid for w in workers if w.proc], "nats-server": [nats_pid(url)]}
            rate, cost = asyncio.run(drain_rate(url, backlog, pids))
            rates[processes].append(rate)
            costs[processes].append(cost)
        finally:
            for worker in workers:
                worker.terminate()
    return rates, costs


def report(rates: dict[int, list[float]], costs: dict[int, list[dict[str, float]]]) -> None:
    for processes, label in ((1, "1 orchestrator process"), (2, "2 orchestrator processes")):
        print(f"   {label:25s} median {median(rates[processes]):7.1f} messages/s  "
              f"(rounds: {', '.join(f'{rate:.1f}' for rate in rates[processes])}); CPU per message: "
              + ", ".join(f"{group} {median([c[group] for c in costs[processes]]):.0f} µs"
                          for group in costs[processes][0]))
    print(f"   ratio 2 processes / 1: {median(rates[2]) / median(rates[1]):.2f}x")


_NATS_PIDS: dict[str, int] = {}


def nats_pid(url: str) -> int:
    return _NATS_PIDS[url]


def main(backlog: int, rounds: int, sleep_backlog: int) -> None:
    header(f"orchestrator throughput: a backlog of {backlog} no-code messages, then of {sleep_backlog} "
           f"time.sleep(0.2) messages over {SLEEP_CONVERSATIONS} conversations, drained by 1 and by 2 "
           f"orchestrator processes (8 slots each), {rounds} rounds each, alternating")
    with workdir("throughput") as tmp, broker(tmp) as nats_server:
        assert nats_server.proc is not None
        _NATS_PIDS[nats_server.url] = nats_server.proc.pid
        api = Api(nats_server.url, tmp, **API_ENV).start()  # provisions the topology, as in production
        api.terminate()
        allow_executions([nats_server.url])  # the sandbox quota is not what is measured
        results = []
        if backlog:
            results.append(("no code", measure(nats_server.url, tmp, rounds, backlog, no_code_messages)))
        if sleep_backlog:
            results.append(("time.sleep(0.2), local sandbox",
                            measure(nats_server.url, tmp, rounds, sleep_backlog, sleep_messages)))
    for label, (rates, costs) in results:
        print(f"   {label}:")
        report(rates, costs)
    print("   goal: sleep-bound, 2 processes >= 1.8x one")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000, int(sys.argv[2]) if len(sys.argv) > 2 else 3,
         int(sys.argv[3]) if len(sys.argv) > 3 else 400)
