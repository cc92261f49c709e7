"""Push by interest: a replica receives the updates of the conversations its own sockets follow, and no others."""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import time
import uuid
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import KeyValueConfig
from websockets.asyncio.client import ClientConnection

from athenic.shared import names
from athenic.shared.settings import NatsSettings, load
from athenic.shared.topology import ensure_topology
from tests.support.nats import NatsServer
from tests.support.push_client import Records, open_socket, recv_type
from tests.support.services import Api

pytestmark = pytest.mark.integration

SOCKETS = 1_500  # the old per-conversation consumer limit was hit at ~1,000


def new_id() -> str:
    return str(uuid.uuid4())


def received(api: Api) -> dict[str, float]:
    """What the replica received from the broker for its listeners, by kind, and what it follows."""
    text = httpx.get(f"{api.url}/metrics", timeout=5).text
    counts = {kind: float(value) for kind, value in
              re.findall(r'^athenic_api_push_updates_received_total\{kind="(\w+)"\} (\S+)$', text, re.M)}
    followed = re.search(r"^athenic_api_push_conversations_followed (\S+)$", text, re.M)
    return {"record": counts.get("record", 0.0), "event": counts.get("event", 0.0),
            "followed": float(followed.group(1)) if followed else 0.0}


async def wait_until(condition: object, timeout: float = 30) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.05)


async def test_a_replica_receives_none_of_the_updates_of_conversations_it_does_not_follow(
        system_nats: NatsServer, tmp_path: Path) -> None:
    busy_replica, quiet_replica = Api(system_nats.url, tmp_path).start(), Api(system_nats.url, tmp_path).start()
    try:
        busy, quiet, messages = new_id(), new_id(), 200
        async with Records(system_nats.url) as records:
            await records.put(busy, "processing")
            await records.put(quiet, "processing")
            async with (open_socket(busy_replica.url, busy) as busy_ws,
                        open_socket(quiet_replica.url, quiet) as quiet_ws):
                await recv_type(busy_ws, "response")
                await recv_type(quiet_ws, "response")
                before = received(quiet_replica)
                assert before["followed"] == 1
                last = 0
                for seq in range(messages):
                    await records.progress(busy, "status", phase="running")
                    last = await records.put(busy, "processing", seq=seq + 2)
                while (await recv_type(busy_ws, "response", timeout=30))["revision"] < last:
                    pass
                # the quiet conversation changes once, after all of that: once the quiet replica has
                # pushed it, it has been sent everything it was going to get (one publisher, in order)
                quiet_last = await records.put(quiet, "completed", seq=2)
                assert (await recv_type(quiet_ws, "response", timeout=30))["revision"] == quiet_last
                after = received(quiet_replica)
                assert (after["record"] - before["record"], after["event"] - before["event"]) == (1, 0)
                busy_counts = received(busy_replica)
                assert busy_counts["record"] >= messages and busy_counts["event"] >= messages
            # the last socket gone, the replica follows nothing (its subscriptions are dropped)
            await wait_until(lambda: received(quiet_replica)["followed"] == 0)
            await records.put(quiet, "completed", seq=3)
            await records.progress(quiet, "status", phase="running")
            later = received(quiet_replica)
            assert later["record"] == after["record"] and later["event"] == after["event"]
    finally:
        busy_replica.terminate()
        quiet_replica.terminate()


def _enough_files(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"{SOCKETS} sockets need {wanted} open files; the hard limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.mark.slow
async def test_fifteen_hundred_sockets_on_one_api_process_all_get_their_updates(
        system_nats: NatsServer, tmp_path: Path) -> None:
    _enough_files(2 * SOCKETS + 512)  # the api process inherits the limit
    api = Api(system_nats.url, tmp_path).start()
    client_ids = [new_id() for _ in range(SOCKETS)]
    gate = asyncio.Semaphore(50)  # connecting all at once would only queue in the listen backlog
    try:
        async with Records(system_nats.url) as records, contextlib.AsyncExitStack() as stack:
            for start in range(0, SOCKETS, 250):
                await asyncio.gather(*(records.put(c, "processing") for c in client_ids[start:start + 250]))

            async def connect(client_id: str) -> ClientConnection:
                async with gate:
                    ws = await stack.enter_async_context(open_socket(api.url, client_id))
                    assert (await recv_type(ws, "response", timeout=60))["status"] == "processing"
                    return ws

            sockets = await asyncio.wait_for(asyncio.gather(*(connect(c) for c in client_ids)), 300)
            assert received(api)["followed"] == SOCKETS
            assert records.nc is not None
            info = await records.nc.jetstream().stream_info(f"KV_{names.RESPONSES_BUCKET}")
            assert info.state.consumer_count == 0  # no consumer per conversation, nor one per replica

            revisions: dict[str, int] = {}
            for start in range(0, SOCKETS, 250):
                batch = client_ids[start:start + 250]
                for client_id, revision in zip(batch, await asyncio.gather(
                        *(records.put(c, "completed", seq=2) for c in batch)), strict=True):
                    revisions[client_id] = revision
                for client_id in batch:
                    await records.progress(client_id, "delta", data=f"hello {client_id}")

            async def updated(client_id: str, ws: ClientConnection) -> None:
                frame = await recv_type(ws, "response", timeout=120)
                assert (frame["status"], frame["revision"]) == ("completed", revisions[client_id])
                delta = await recv_type(ws, "delta", timeout=120)
                assert delta["data"] == f"hello {client_id}"

            await asyncio.wait_for(asyncio.gather(*(updated(c, ws) for c, ws in zip(client_ids, sockets,
                                                                                     strict=True))), 300)
    finally:
        api.terminate()


async def test_a_bucket_made_before_push_by_interest_gets_its_records_republished(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.create_key_value(KeyValueConfig(bucket=names.RESPONSES_BUCKET, history=1))  # as an old release made it
        buckets = await ensure_topology(js, load(NatsSettings, {"NATS_URL": nats_url}))
        info = await js.stream_info(f"KV_{names.RESPONSES_BUCKET}")
        assert info.config.republish is not None
        assert info.config.republish.dest == f"{names.RECORD_SUBJECT_PREFIX}.>"
        client_id = new_id()
        subscription = await nc.subscribe(names.record_subject(client_id))
        revision = await buckets[names.RESPONSES_BUCKET].put(client_id, b"{}")
        msg = await subscription.next_msg(timeout=5)
        assert msg.headers is not None and msg.headers[names.HDR_SEQUENCE] == str(revision)
    finally:
        await nc.close()
