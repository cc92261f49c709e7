"""Bounded work and bounded records, end to end: real nats-server, api, orchestrator, sandbox.

A run printing 50 MB and drawing 30 figures is answered with a record inside its byte budget
(the figures are conversation files, the record references them) that says what it left out;
a message of 1,000 fenced blocks runs only the block limit; a record NATS refuses for its size
is one terminal ``failed`` answer. Each is answered once: one turn in the log, one ``answered``
line, nothing redelivered.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from athenic.shared import names
from tests.support.nats import NatsServer
from tests.support.services import Api, Orchestrator, Service, wait_for_status

pytestmark = pytest.mark.e2e

FINAL = {"completed", "failed", "cancelled"}
BUDGET = 128 * 1024
# 50 MB on stdout, then 30 figures
BIG_RUN = (
    "import sys\n"
    "import matplotlib.pyplot as plt\n"
    "line = 'x' * 999 + '\\n'\n"
    "for _ in range(50_000):\n"
    "    sys.stdout.write(line)\n"
    "print('THE END')\n"
    "for n in range(30):\n"
    "    plt.figure()\n"
    "    plt.plot(range(100), [((i * (n + 7)) % 13) for i in range(100)])\n"
    "    plt.title(f'figure {n}')\n"
    "plt.show()\n"
)


def start_orchestrator(nats_url: str, tmp: Path, spawned: list[Service], **extra: str) -> Orchestrator:
    service = Orchestrator(nats_url, tmp, ATHENIC_SANDBOX_MAX_IMAGES="64",
                           ATHENIC_SANDBOX_IMAGE_BYTES=str(4 * 1024 * 1024), **extra)
    spawned.append(service)
    return service.start()


def post(client: httpx.Client, message: str) -> tuple[str, str]:
    response = client.post("/api/chat", json={"message": message})
    assert response.status_code == 200, response.text
    return response.json()["clientId"], response.headers["x-request-id"]


def turns(client: httpx.Client, client_id: str) -> list[dict[str, Any]]:
    got = client.get(f"/api/chat/{client_id}/messages")
    assert got.status_code == 200, got.text
    items: list[dict[str, Any]] = got.json()["messages"]
    return items


def stored(nats_url: str, client_id: str) -> tuple[int, int, int]:
    """The record's size in KV, and the consumer's redelivered and ack-pending counts."""

    async def read() -> tuple[int, int, int]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            entry = await (await js.key_value(names.RESPONSES_BUCKET)).get(client_id)
            consumer = await js.consumer_info(names.REQUEST_STREAM, names.ORCHESTRATOR_CONSUMER)
            return len(entry.value or b""), consumer.num_redelivered, consumer.num_ack_pending
        finally:
            await nc.close()

    return asyncio.run(read())


def answered_lines(orchestrator: Orchestrator, request_id: str) -> list[str]:
    return [line for line in orchestrator.log().splitlines()
            if request_id in line and ('"event": "answered"' in line or '"event":"answered"' in line)]


def messages_counted(orchestrator: Orchestrator, outcome: str) -> float:
    metrics = httpx.get(f"http://127.0.0.1:{orchestrator.port}/metrics", timeout=5).text
    found = re.search(rf'^athenic_orchestrator_messages_total\{{outcome="{outcome}"\}} (\S+)$', metrics, re.M)
    return float(found[1]) if found else 0.0


def wait_until(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_fifty_megabytes_and_thirty_figures_fit_the_budget_and_say_what_was_cut(
    system_nats: NatsServer, client: httpx.Client, tmp_path: Path, spawned: list[Service]
) -> None:
    orchestrator = start_orchestrator(system_nats.url, tmp_path, spawned, ATHENIC_RECORD_MAX_BYTES=str(BUDGET))
    client_id, request_id = post(client, f"Plot:\n```python\n{BIG_RUN}```")
    state = wait_for_status(client, client_id, FINAL, request_id=request_id, timeout=90)
    answer = state["lastResponse"]
    assert isinstance(answer, dict)
    assert answer["status"] == "completed", answer
    [execution] = answer["executions"]
    assert execution["error"] is None, execution["stderr"]
    # the run's own cap kept the head and the tail of the 50 MB
    assert execution["stdout"].startswith("x" * 999) and execution["stdout"].rstrip().endswith("THE END")
    assert execution["truncated"]
    # the figures are conversation files, never bytes in the record: the run's file limit keeps
    # 16, the execution names the other 14; every result keeps its text
    assert len(execution["results"]) == 30
    assert all("png" not in result and result["text"].startswith("<Figure") for result in execution["results"])
    assert len(execution["files"]) == 16
    assert [result for result in execution["results"] if result.get("files")] == [
        result for result in execution["results"][:16]]
    assert len(execution["filesNotKept"]) == 14
    assert all("over the 16 files a run may keep" in item for item in execution["filesNotKept"])
    assert "14 file(s) it made were not kept" in answer["message"]
    png = client.get(execution["files"][0]["url"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    size, redelivered, pending = stored(system_nats.url, client_id)
    assert size <= BUDGET
    # answered once, and the log holds that same fitted answer
    [turn] = turns(client, client_id)
    assert turn["response"] == answer
    assert len(answered_lines(orchestrator, request_id)) == 1
    assert messages_counted(orchestrator, "completed") == 1
    assert (redelivered, pending) == (0, 0)


def test_a_thousand_fenced_blocks_run_only_the_block_limit_answered_once(
    system_nats: NatsServer, client: httpx.Client, tmp_path: Path, spawned: list[Service]
) -> None:
    orchestrator = start_orchestrator(system_nats.url, tmp_path, spawned, ATHENIC_RULES_MAX_BLOCKS="10")
    # the first ten print; the rest are one expression each (1,000 blocks within the 16 KiB message limit)
    message = "".join(f"```\nprint({n})\n```\n" for n in range(10)) + "```\n1\n```\n" * 990
    client_id, request_id = post(client, message)
    state = wait_for_status(client, client_id, FINAL, request_id=request_id, timeout=60)
    answer = state["lastResponse"]
    assert isinstance(answer, dict)
    assert answer["status"] == "completed", answer
    assert [e["stdout"] for e in answer["executions"]] == [f"{n}\n" for n in range(10)]
    assert "990 more code block(s) were not run: I run at most 10 per message." in answer["message"]
    [turn] = turns(client, client_id)
    assert turn["status"] == "completed"
    assert len(answered_lines(orchestrator, request_id)) == 1
    assert messages_counted(orchestrator, "completed") == 1
    _, redelivered, pending = stored(system_nats.url, client_id)
    assert (redelivered, pending) == (0, 0)


@pytest.fixture
def own_api(nats_server: NatsServer, tmp_path: Path) -> Iterator[httpx.Client]:
    api = Api(nats_server.url, tmp_path).start()
    try:
        with httpx.Client(base_url=api.url, timeout=10) as http:
            yield http
    finally:
        api.terminate()


def test_a_record_nats_refuses_is_one_terminal_failed_answer(
    nats_server: NatsServer, own_api: httpx.Client, tmp_path: Path, spawned: list[Service]
) -> None:
    orchestrator = start_orchestrator(nats_server.url, tmp_path, spawned, ATHENIC_MAX_DELIVER="3")

    async def narrow_the_bucket() -> None:
        # what an operator's bucket limit does: JetStream refuses a value over 8 KiB
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            config = (await js.stream_info(names.kv_stream(names.RESPONSES_BUCKET))).config
            config.max_msg_size = 8 * 1024
            await js.update_stream(config)
        finally:
            await nc.close()

    asyncio.run(narrow_the_bucket())
    client_id, request_id = post(own_api, "```python\nprint('y' * 60_000)\n```")
    state = wait_for_status(own_api, client_id, FINAL, request_id=request_id, timeout=60)
    answer = state["lastResponse"]
    assert isinstance(answer, dict)
    assert answer["status"] == "failed", answer
    assert "too large to store" in answer["error"] and "NATS refused it" in answer["error"]
    assert answer["message"].startswith("Sorry, I could not answer this message: the answer was too large")
    [turn] = turns(own_api, client_id)
    assert turn["status"] == "failed"
    assert len(answered_lines(orchestrator, request_id)) == 1
    assert messages_counted(orchestrator, "failed") == 1
    assert messages_counted(orchestrator, "retried") == 0
    _, redelivered, pending = stored(nats_server.url, client_id)
    assert (redelivered, pending) == (0, 0)
    assert "NATS refused the answer as too large" in orchestrator.log()


def test_the_budget_is_held_to_half_the_servers_max_payload(
    tmp_path: Path, spawned: list[Service]
) -> None:
    config = tmp_path / "nats.conf"
    config.write_text("max_payload: 65536\n")
    server = NatsServer(tmp_path / "jetstream", extra_args=["-c", str(config)]).start()
    try:
        api = Api(server.url, tmp_path)
        spawned.append(api)
        api.start()
        # the default budget (256 KiB) is more than this server takes
        orchestrator = start_orchestrator(server.url, tmp_path, spawned)
        wait_until(lambda: "ATHENIC_RECORD_MAX_BYTES is more than half" in orchestrator.log())
        assert '"record_max_bytes": 32768' in orchestrator.log() or '"record_max_bytes":32768' in orchestrator.log()
        with httpx.Client(base_url=api.url, timeout=10) as http:
            client_id, request_id = post(http, "```python\nfor n in range(20_000): print(n)\n```")
            state = wait_for_status(http, client_id, FINAL, request_id=request_id, timeout=60)
        answer = state["lastResponse"]
        assert isinstance(answer, dict)
        assert answer["status"] == "completed", answer
        assert answer["truncated"]
        size, redelivered, _ = stored(server.url, client_id)
        assert size <= 32768
        assert redelivered == 0
    finally:
        for service in spawned:
            service.kill()
        server.stop()
