"""One kernel per conversation whichever orchestrator replica answers: real orchestrator
processes share one nats-server; a replica that does not hold the conversation's kernel
forwards the run to the one that does, and a rollout of the holder is said, not hidden."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import httpx
import nats
import pytest

from athenic.orchestrator.sandbox.isolation import find_bubblewrap
from athenic.shared import names
from tests.support.nats import NatsServer
from tests.support.services import Orchestrator, Service, wait_for_status

pytestmark = pytest.mark.integration

FINAL = {"completed", "failed", "cancelled"}
COUNT = "n = globals().get('n', 0) + 1\nprint(n)\n"
# each replica's sandboxes carry their own /tmp size on their command line: found by it
TMP_MIB = {0: 37, 1: 38, 2: 39}


@pytest.fixture(autouse=True)
def needs_bubblewrap() -> None:
    bwrap, why = find_bubblewrap(None)
    if bwrap is None:
        pytest.skip(f"kernels need bubblewrap: {why}")


def start_replicas(nats_url: str, tmp: Path, spawned: list[Service], count: int) -> list[Orchestrator]:
    replicas = []
    for index in range(count):
        replica = Orchestrator(nats_url, tmp, ATHENIC_KERNEL_POOL_SIZE="1",
                               ATHENIC_SANDBOX_TMP_MIB=str(TMP_MIB[index]))
        spawned.append(replica)
        replicas.append(replica.start())
    return replicas


def ask(client: httpx.Client, client_id: str, code: str) -> dict[str, object]:
    sent = client.post("/api/chat", json={"message": f"Run this:\n```python\n{code}```"},
                       headers={"x-client-id": client_id})
    assert sent.status_code == 200, sent.text
    state = wait_for_status(client, client_id, FINAL, request_id=sent.headers["x-request-id"], timeout=90)
    answer = state["lastResponse"]
    assert isinstance(answer, dict) and answer["status"] == "completed", answer
    [execution] = answer["executions"]  # type: ignore[misc]
    assert isinstance(execution, dict)
    # what the sandbox says about the state reaches the answer's text too
    assert (execution["notice"] is not None) == ("Note:" in str(answer["message"])), answer
    return execution


def host_of(replica: Orchestrator) -> str:
    for line in replica.log().splitlines():
        if "kernel host serving" in line:
            return str(json.loads(line)["host"])
    raise AssertionError(f"no kernel host id in the log:\n{replica.log()}")


def recorded_host(nats_url: str, client_id: str) -> str:
    async def read() -> str:
        nc = await nats.connect(nats_url)
        try:
            entry = await (await nc.jetstream().key_value(names.KERNELS_BUCKET)).get(
                names.kernel_key("default", client_id))
            return str(json.loads(entry.value or b"{}")["host"])
        finally:
            await nc.close()

    return asyncio.run(read())


def kernel_processes(tmp_mib: int) -> list[int]:
    marker = f"--size\0{tmp_mib * 1024 * 1024}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_twenty_messages_on_two_replicas_see_one_kernel(
    system_nats: NatsServer, tmp_path: Path, client: httpx.Client, spawned: list[Service]
) -> None:
    replicas = start_replicas(system_nats.url, tmp_path, spawned, 2)
    client_id = f"kernel-{uuid.uuid4().hex[:8]}"
    for number in range(1, 21):
        execution = ask(client, client_id, COUNT)
        assert execution["stdout"] == f"{number}\n", execution
        assert execution["notice"] is None, execution
    host = recorded_host(system_nats.url, client_id)
    assert host in {host_of(replica) for replica in replicas}
    # every message the holder's peer answered ran on the holder's kernel, forwarded
    peer = next(replica for replica in replicas if host_of(replica) != host)
    assert peer.log().count("kernel run forwarded") == peer.log().count('"event": "answered"')


def test_a_rollout_of_the_kernels_host_is_said_and_the_conversation_goes_on(
    system_nats: NatsServer, tmp_path: Path, client: httpx.Client, spawned: list[Service]
) -> None:
    replicas = start_replicas(system_nats.url, tmp_path, spawned, 3)
    client_id = f"rollout-{uuid.uuid4().hex[:8]}"
    for number in range(1, 11):
        assert ask(client, client_id, COUNT)["stdout"] == f"{number}\n"
    host = recorded_host(system_nats.url, client_id)
    (index,) = [i for i, replica in enumerate(replicas) if host_of(replica) == host]
    holder = replicas[index]
    assert kernel_processes(TMP_MIB[index]), "the holder's kernels must be visible before its rollout"
    assert holder.terminate() == 0, holder.log()
    # the stopped replica left no kernel behind
    assert kernel_processes(TMP_MIB[index]) == []
    execution = ask(client, client_id, COUNT)
    assert execution["stdout"] == "1\n", execution
    assert isinstance(execution["notice"], str) and "gone" in execution["notice"], execution
    for number in range(2, 11):
        execution = ask(client, client_id, COUNT)
        assert execution["stdout"] == f"{number}\n", execution
        assert execution["notice"] is None
    assert recorded_host(system_nats.url, client_id) != host
