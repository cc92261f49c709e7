"""The lean POST /api/chat and GET response: the same answers as Litestar's handlers, every audit line written,
the metrics kept."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.nats import NatsServer
from tests.support.services import Api

pytestmark = pytest.mark.integration

# The fast path serves `application/json` or no content type; any other goes through Litestar's
# handler untouched. The same request both ways must answer the same bytes (bar date and request id).
THROUGH_LITESTAR = "application/json; charset=utf-8"


@pytest.fixture(scope="module")
def api(system_nats: NatsServer, module_tmp: Path) -> Iterator[Api]:
    service = Api(system_nats.url, module_tmp, ATHENIC_RATE_LIMIT_PER_MINUTE="0").start()
    try:
        yield service
    finally:
        service.terminate()


def both_ways(api: Api, body: bytes, **headers: str) -> tuple[httpx.Response, httpx.Response]:
    fast = httpx.post(f"{api.url}/api/chat", content=body, headers={"content-type": "application/json", **headers})
    slow = httpx.post(f"{api.url}/api/chat", content=body, headers={"content-type": THROUGH_LITESTAR, **headers})
    return fast, slow


def shape(response: httpx.Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    headers = [(name, b"<id>" if name == b"x-request-id" else value)
               for name, value in response.headers.raw if name not in (b"date",)]
    return response.status_code, headers, response.content


@pytest.mark.parametrize(("body", "headers"), [
    (b'{"message": "What is 2+2?"}', {}),
    (b'{"message": "hi", "clientId": "body-id", "userId": "ignored"}', {}),
    (b'{"message": "hi"}', {"x-on-busy": "sometimes"}),
    (b'{"message": "   "}', {}),
    (b'{"message": "hi"}', {"x-client-id": "not a valid id!"}),
    (b'{"message": "hi"}', {"idempotency-key": "bad key with spaces"}),
    (b'{"message": "hi"}', {"x-on-busy": "reject"}),
])
def test_the_fast_path_answers_as_litestars_handler_does(api: Api, body: bytes, headers: dict[str, str]) -> None:
    client_id = str(uuid.uuid4())
    if b"clientId" not in body:
        headers = {"x-client-id": client_id, **headers}
    fast, slow = both_ways(api, body, **headers)
    if "x-on-busy" in headers and headers["x-on-busy"] == "reject":
        assert (fast.status_code, slow.status_code) == (200, 409)  # the second found the first waiting
        return
    assert shape(fast) == shape(slow)
    if fast.status_code == 200:
        assert re.fullmatch(r"[0-9a-f]{32}", fast.headers["x-request-id"])
        assert uuid.UUID(fast.headers["x-request-id"]).version == 4


def test_a_message_without_a_clientid_gets_a_uuid4(api: Api) -> None:
    answer = httpx.post(f"{api.url}/api/chat", json={"message": "hi"})
    assert answer.status_code == 200
    assert uuid.UUID(answer.json()["clientId"]).version == 4


def test_bodies_litestar_refuses_are_refused_alike(api: Api) -> None:
    for body in (b"", b"{", b"[]", b'{"message": 3}', b'{"clientId": "x"}'):
        fast, slow = both_ways(api, body)
        assert fast.status_code == 400, (body, fast.text)
        assert shape(fast) == shape(slow)


def test_the_request_metrics_count_the_fast_path(api: Api) -> None:
    def accepted() -> float:
        text = httpx.get(f"{api.url}/metrics").text
        found = re.search(r'^athenic_api_requests_total\{app_name="athenic-api",method="POST",path="/api/chat",'
                          r'status_code="200"\} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    before = accepted()
    for _ in range(3):
        assert httpx.post(f"{api.url}/api/chat", json={"message": "hi"}).status_code == 200
    assert accepted() == before + 3
    text = httpx.get(f"{api.url}/metrics").text
    assert re.search(r'^athenic_api_request_duration_seconds_count\{app_name="athenic-api",method="POST",'
                     r'path="/api/chat",status_code="200"\} \S+$', text, re.M)
    assert re.search(r'^athenic_api_requests_in_progress\{app_name="athenic-api",method="POST",'
                     r'path="/api/chat",status_code="200"\} 0\.0$', text, re.M)


def accepted_lines(log: str) -> list[dict[str, object]]:
    lines = []
    for line in log.splitlines():
        if '"chat message accepted"' in line:
            record = json.loads(line)
            assert record["event"] == "chat message accepted" and record["level"] == "info", record
            assert record["service"] == "api" and record["timestamp"].endswith("Z"), record
            lines.append(record)
    return lines


async def test_every_accepted_message_has_its_audit_line_also_just_before_a_sigterm(
        system_nats: NatsServer, tmp_path: Path) -> None:
    api = Api(system_nats.url, tmp_path).start()
    accepted: list[str] = []
    stop = asyncio.Event()

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                answer = await http.post("/api/chat", json={"message": "audit me"})
            except httpx.HTTPError:
                return  # the server has stopped taking requests
            if answer.status_code == 200:
                accepted.append(answer.headers["x-request-id"])
            else:
                return

    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
            clients = [asyncio.create_task(client(http)) for _ in range(32)]
            while len(accepted) < 300:  # well under way: requests in flight on every connection
                await asyncio.sleep(0.01)
                assert not all(task.done() for task in clients), "the clients stopped before the signal"
            assert api.proc is not None
            api.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.to_thread(api.proc.wait), 60)
            stop.set()
            await asyncio.gather(*clients)
    finally:
        code = api.terminate()
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert "Application shutdown complete" in api.log()  # a graceful stop, not a kill
    logged = [str(line["request_id"]) for line in accepted_lines(api.log())]
    assert len(logged) == len(set(logged))
    missing = set(accepted) - set(logged)
    assert not missing, f"{len(missing)} of {len(accepted)} accepted messages have no audit line"


def get_both_ways(api: Api, client_id: str) -> tuple[httpx.Response, httpx.Response]:
    """GET served by the fast path, and by Litestar's handler (an Authorization header given twice
    goes there; with auth off, it is not read)."""
    url = f"{api.url}/api/chat/response/{client_id}"
    fast = httpx.get(url)
    slow = httpx.get(url, headers=[("authorization", "Bearer a"), ("authorization", "Bearer b")])
    return fast, slow


def without_timestamp(response: httpx.Response) -> tuple[int, list[tuple[bytes, bytes]], object]:
    status, headers, body = shape(response)
    value = json.loads(body)
    if isinstance(value, dict):
        value.pop("timestamp", None)
    return status, headers, value


def test_the_get_fast_path_answers_as_litestars_handler_does(api: Api) -> None:
    client_id = httpx.post(f"{api.url}/api/chat", json={"message": "What is 2+2?"}).json()["clientId"]
    for target in (client_id, str(uuid.uuid4()), "not!valid"):
        fast, slow = get_both_ways(api, target)
        assert without_timestamp(fast) == without_timestamp(slow), target
        # the same length: the timestamp has a fixed width
        assert fast.headers["content-length"] == slow.headers["content-length"]
    fast, _ = get_both_ways(api, client_id)
    assert fast.status_code == 200 and fast.json()["status"] == "pending"
    assert get_both_ways(api, str(uuid.uuid4()))[0].status_code == 404
