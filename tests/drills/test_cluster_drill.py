"""The cluster drill: a 3-node JetStream cluster loses the request stream's leader mid-flow.

Three nats-server processes on loopback form one cluster; every stream and bucket has 3
replicas (``NATS_REPLICAS=3``); the api and two orchestrators know all three URLs. While
1,000 messages flow, the node leading the request stream is SIGKILLed, then brought back.

What a user would notice, and what is asserted: every message answered 200 gets its
answer; no message gets two different final answers; the api never says 200 for a message
the cluster did not store (an accepted message that was not stored could never be answered,
so "every 200 answered" covers it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from athenic.shared import names
from tests.support.cluster import NatsCluster
from tests.support.load import Load, read_answers
from tests.support.services import Api, Orchestrator

pytestmark = pytest.mark.drill

MESSAGES = 1000
REPLICAS = "3"


def message_for(index: int) -> str:
    return f"hello from the cluster drill, number {index}"


async def stream_leader(urls: list[str]) -> str:
    nc = await nats.connect(servers=urls)
    try:
        info = await nc.jetstream().stream_info(names.REQUEST_STREAM)
        assert info.cluster is not None and info.cluster.leader, info
        assert info.config.num_replicas == 3
        return info.cluster.leader
    finally:
        await nc.close()


class FinalRecords:
    """Every final record stored in the responses bucket, seen as the writes go by.

    A KV watch (an ordered consumer of the bucket's stream) sees each stored value even
    though the bucket keeps only the latest, so a message answered twice would show two final
    records. A plain subscription on the bucket's subjects would not do: it also sees writes
    the compare-and-set refused, which were never stored. It connects to a node that stays up.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.by_request: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="final-records", daemon=True)

    def _run(self) -> None:
        self._loop.run_until_complete(self._watch())

    async def _watch(self) -> None:
        self._stop = asyncio.Event()
        nc = await nats.connect(self.url)
        kv = await nc.jetstream().key_value(names.RESPONSES_BUCKET)
        watcher = await kv.watchall()

        async def collect() -> None:
            async for entry in watcher:
                if entry is None:  # the end of the initial values
                    self._ready.set()
                    continue
                if not entry.value:
                    continue
                record = msgspec.json.decode(entry.value)
                if record.get("status") in {"completed", "failed", "cancelled"}:
                    self.by_request[record["requestId"]].append(record["lastResponse"])

        task = asyncio.create_task(collect())
        await self._stop.wait()
        task.cancel()
        await watcher.stop()
        await nc.drain()

    def __enter__(self) -> FinalRecords:
        self._thread.start()
        assert self._ready.wait(10), "the observer could not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "cluster") as nodes:
        yield nodes


@pytest.mark.slow
def test_losing_the_stream_leader_loses_no_accepted_message(cluster: NatsCluster, tmp_path: Path) -> None:
    settings = {"NATS_REPLICAS": REPLICAS, "ATHENIC_ACK_WAIT_SECONDS": "5"}
    api = Api(cluster.url, tmp_path, LOG_LEVEL="WARNING", NATS_REPLICAS=REPLICAS,
              ATHENIC_RATE_LIMIT_PER_MINUTE="0").start()
    orchestrators = [Orchestrator(cluster.url, tmp_path, ATHENIC_CONCURRENCY="8", **settings).start()
                     for _ in range(2)]
    try:
        leader = asyncio.run(stream_leader(cluster.urls))
        survivor = next(node for node in cluster.nodes if node.name != leader)
        with FinalRecords(survivor.url) as finals:
            load = Load(api.url, MESSAGES, message_for).start()
            load.wait_for(300)
            cluster.node(leader).kill()
            load.wait_for(600)
            cluster.node(leader).start()
            load.join()
            print(f"killed stream leader {leader}; {load.summary()}")
            assert not load.unexpected, load.unexpected[:5]
            assert len(load.accepted) == MESSAGES
            # a POST waits for the new leader (ATHENIC_PUBLISH_DEADLINE_SECONDS, 10 s) instead of refusing
            assert load.unavailable == 0 and load.dropped == 0, load.summary()

            answers = read_answers(api.url, load.accepted, timeout=120)
            missing = [item for item in load.accepted if item.request_id not in answers]
            assert not missing, f"{len(missing)} accepted messages never answered, e.g. {missing[:3]}"
            for item in load.accepted:
                state = answers[item.request_id]
                assert state["status"] == "completed", state
                assert state["lastMessage"] == item.message
            time.sleep(1)  # let the observer see the last writes

        answered_twice = {request_id: records for request_id, records in finals.by_request.items()
                          if len({msgspec.json.encode(record) for record in records}) > 1}
        assert not answered_twice, f"{len(answered_twice)} messages got two different final answers"
        seen = {item.request_id for item in load.accepted} & set(finals.by_request)
        print(f"final records observed for {len(seen)} of {len(load.accepted)} accepted messages")
    finally:
        for orchestrator in orchestrators:
            orchestrator.kill()
        api.terminate()
