"""Orchestrator throughput: messages per second drained from a pre-filled backlog, 1 against 2 processes.

The request stream is filled with messages that need no sandbox (the rules planner answers
them without running code: the no-op path), each its own conversation; then 1 or 2
orchestrator processes (8 slots each) start and drain it. The rate is taken between 10 %
and 90 % of the backlog drained (sampled from the stream's message count: work-queue
retention removes a message when it is acked), so process start-up is not counted.
Rounds alternate 1, 2, 1, 2...; the ratio of the medians is the scaling figure.

    .venv/bin/python bench/throughput.py [backlog] [rounds]
"""

from __future__ import annotations

import asyncio
import sys
import time

from _harness import (
    API_ENV,
    Api,
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


async def fill(url: str, round_index: int, backlog: int) -> None:
    nc, js = await connect(url)
    try:
        await publish_requests(js, [(f"tp-{round_index}-{i}", f"hello number {i}") for i in range(backlog)])
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


def main(backlog: int, rounds: int) -> None:
    header(f"orchestrator throughput: a backlog of {backlog} no-code messages drained by 1 and by 2 "
           f"orchestrator processes (8 slots each), {rounds} rounds each, alternating")
    rates: dict[int, list[float]] = {1: [], 2: []}
    costs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with workdir("throughput") as tmp, broker(tmp) as nats_server:
        api = Api(nats_server.url, tmp, **API_ENV).start()  # provisions the topology, as in production
        api.terminate()
        for round_index in range(rounds * 2):
            processes = 1 if round_index % 2 == 0 else 2
            asyncio.run(fill(nats_server.url, round_index, backlog))
            workers = [orchestrator(nats_server.url, tmp).start(wait_ready=False) for _ in range(processes)]
            try:
                assert nats_server.proc is not None
                pids = {"orchestrators": [w.proc.pid for w in workers if w.proc], "nats-server": [nats_server.proc.pid]}
                rate, cost = asyncio.run(drain_rate(nats_server.url, backlog, pids))
                rates[processes].append(rate)
                costs[processes].append(cost)
            finally:
                for worker in workers:
                    worker.terminate()
    for processes, label in ((1, "1 orchestrator process"), (2, "2 orchestrator processes")):
        print(f"   {label:25s} median {median(rates[processes]):7.0f} messages/s  "
              f"(rounds: {', '.join(f'{rate:.0f}' for rate in rates[processes])}); CPU per message: "
              + ", ".join(f"{group} {median([c[group] for c in costs[processes]]):.0f} µs"
                          for group in costs[processes][0]))
    print(f"   ratio 2 processes / 1: {median(rates[2]) / median(rates[1]):.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
