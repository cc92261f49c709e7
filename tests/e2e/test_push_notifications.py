"""A finished turn wakes the owner's phones (FCM, APNs) unless they follow it live; webhooks always go.

One whole system per module: nats-server, api (auth on), orchestrator, notifier, and the
stand-ins it talks to. Tests keep apart by their own users and request ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.apns_standin import BAD_DEVICE_TOKEN, GONE, ApnsStandIn
from tests.support.fcm_standin import UNAVAILABLE, UNREGISTERED, FcmStandIn
from tests.support.nats import NatsServer
from tests.support.notify import JWT_SECRET, WEBHOOK_SECRET, apns_token, fcm_token, new_user, notifier_env, user_headers
from tests.support.services import Api, Notifier, Orchestrator, Service, wait_until
from tests.support.webhook_receiver import Call, WebhookReceiver, verify_standard_webhook

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fcm(module_tmp: Path) -> Iterator[FcmStandIn]:
    standin = FcmStandIn(module_tmp).start()
    yield standin
    standin.stop()


@pytest.fixture(scope="module")
def apns(module_tmp: Path) -> Iterator[ApnsStandIn]:
    standin = ApnsStandIn(module_tmp).start()
    yield standin
    standin.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def system(system_nats: NatsServer, module_tmp: Path, fcm: FcmStandIn, apns: ApnsStandIn,
           receiver: WebhookReceiver) -> Iterator[dict[str, Service]]:
    auth = {"ATHENIC_AUTH": "supabase", "SUPABASE_JWT_SECRET": JWT_SECRET}
    services: dict[str, Service] = {}
    try:
        services["orchestrator"] = Orchestrator(system_nats.url, module_tmp).start()
        services["notifier"] = Notifier(system_nats.url, module_tmp, **notifier_env(fcm, apns, receiver)).start()
        services["api"] = Api(system_nats.url, module_tmp, **auth).start()
        yield services
    finally:
        for service in reversed(services.values()):
            service.terminate()


@pytest.fixture(scope="module")
def client(system: dict[str, Service]) -> Iterator[httpx.Client]:
    api = system["api"]
    assert isinstance(api, Api)
    with httpx.Client(base_url=api.url, timeout=15) as http:
        yield http


def register(client: httpx.Client, user: str, platform: str, token: str) -> None:
    response = client.post("/api/devices", json={"platform": platform, "token": token}, headers=user_headers(user))
    assert response.status_code in (200, 201), response.text


def post(client: httpx.Client, user: str, message: str, client_id: str | None = None) -> tuple[str, str]:
    headers = {**user_headers(user), **({"x-client-id": client_id} if client_id else {})}
    response = client.post("/api/chat", json={"message": message}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["clientId"], response.headers["x-request-id"]


def wait_answer(client: httpx.Client, user: str, client_id: str, request_id: str, statuses: set[str],
                timeout: float = 60) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def reached() -> bool:
        got = client.get(f"/api/chat/response/{client_id}", headers=user_headers(user))
        if got.status_code == 200 and got.json()["requestId"] == request_id and got.json()["status"] in statuses:
            found.update(got.json())
            return True
        return False

    wait_until(reached, f"{client_id} to reach {statuses}", timeout)
    return found


def fcm_for(fcm: FcmStandIn, token: str, request_id: str) -> list[dict[str, Any]]:
    return [m for m in fcm.delivered(token) if m["data"]["requestId"] == request_id]


def apns_for(apns: ApnsStandIn, token: str, request_id: str) -> list[dict[str, Any]]:
    return [p.payload for p in apns.delivered(token) if p.payload["requestId"] == request_id]


def webhook_for(receiver: WebhookReceiver, request_id: str) -> list[Call]:
    return [c for c in list(receiver.calls) if json.loads(c.body)["data"]["requestId"] == request_id]


def test_a_completed_turn_wakes_every_device_of_its_owner(
    client: httpx.Client, fcm: FcmStandIn, apns: ApnsStandIn, receiver: WebhookReceiver
) -> None:
    owner, bystander = new_user(), new_user()
    phone, iphone, other = fcm_token(), apns_token(), fcm_token()
    register(client, owner, "fcm", phone)
    register(client, owner, "apns", iphone)
    register(client, bystander, "fcm", other)
    client_id, request_id = post(client, owner, "Hello there")
    wait_until(lambda: fcm_for(fcm, phone, request_id) and apns_for(apns, iphone, request_id), "both pushes", 60)
    [message] = fcm_for(fcm, phone, request_id)
    assert message["data"] == {"clientId": client_id, "requestId": request_id, "status": "completed"}
    # previews are off by default: a generic line, nothing of the answer
    answer = wait_answer(client, owner, client_id, request_id, {"completed"})["lastResponse"]
    assert isinstance(answer, dict)
    assert message["notification"]["body"] == "Your answer is ready."
    assert answer["message"][:20] not in json.dumps(message)
    [payload] = apns_for(apns, iphone, request_id)
    assert payload["aps"]["alert"]["body"] == "Your answer is ready."
    assert (payload["clientId"], payload["status"]) == (client_id, "completed")
    assert [p.http_version for p in apns.delivered(iphone)] == ["2"]
    # the signed webhook carries the same turn
    wait_until(lambda: webhook_for(receiver, request_id), "the webhook", 60)
    event = verify_standard_webhook(WEBHOOK_SECRET, webhook_for(receiver, request_id)[0])
    assert event["type"] == "turn.completed"
    assert event["data"]["clientId"] == client_id and event["data"]["status"] == "completed"
    assert event["timestamp"].endswith("Z")
    assert not [m for m in fcm.delivered(other) if m["data"]["requestId"] == request_id]  # not the bystander's
    assert fcm.exchanges >= 1 and not fcm.rejected and not apns.rejected


def test_no_push_while_the_owner_follows_the_conversation(
    client: httpx.Client, system: dict[str, Service], fcm: FcmStandIn, receiver: WebhookReceiver
) -> None:
    owner, phone = new_user(), fcm_token()
    register(client, owner, "fcm", phone)
    client_id, first = post(client, owner, "Hello there")
    wait_until(lambda: fcm_for(fcm, phone, first), "the first push", 60)
    api = system["api"]
    assert isinstance(api, Api)
    ws_url = api.url.replace("http://", "ws://") + f"/api/chat/ws/{client_id}"
    with connect(ws_url, additional_headers=user_headers(owner)) as socket:
        assert json.loads(socket.recv(timeout=15))["type"] == "response"
        socket.send(json.dumps({"type": "chat", "message": "Hello again"}))
        second = ""
        while True:
            frame = json.loads(socket.recv(timeout=60))
            if frame["type"] == "accepted":
                second = frame["requestId"]
            if frame["type"] == "response" and frame["requestId"] == second and frame["status"] == "completed":
                break
        # the webhook is fanned out with the pushes: once it is here, the pushes were decided
        wait_until(lambda: webhook_for(receiver, second), "the webhook of the followed turn", 60)
        assert fcm_for(fcm, phone, second) == []
    # the socket is closed: the next answer is pushed again
    _, third = post(client, owner, "Hello once more", client_id)
    wait_until(lambda: fcm_for(fcm, phone, third), "the push after the socket closed", 60)
    assert fcm_for(fcm, phone, second) == []


def test_an_sse_stream_counts_as_following(
    client: httpx.Client, system: dict[str, Service], fcm: FcmStandIn, receiver: WebhookReceiver
) -> None:
    owner, phone = new_user(), fcm_token()
    register(client, owner, "fcm", phone)
    client_id, first = post(client, owner, "Hello there")
    wait_answer(client, owner, client_id, first, {"completed"})
    api = system["api"]
    assert isinstance(api, Api)
    with httpx.Client(base_url=api.url, timeout=60) as streaming, \
            streaming.stream("GET", f"/api/chat/stream/{client_id}", headers=user_headers(owner)) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith(("event:", "id:", "data:"))  # the current record: the stream is open
        _, second = post(client, owner, "Hello again", client_id)
        wait_until(lambda: webhook_for(receiver, second), "the webhook", 60)
        assert fcm_for(fcm, phone, second) == []


def test_a_cancelled_turn_is_pushed_as_cancelled(client: httpx.Client, fcm: FcmStandIn,
                                                 receiver: WebhookReceiver) -> None:
    owner, phone = new_user(), fcm_token()
    register(client, owner, "fcm", phone)
    client_id, request_id = post(client, owner, "```python\nimport time\nprint('go', flush=True)\ntime.sleep(30)\n```")
    wait_answer(client, owner, client_id, request_id, {"processing"})
    wait_until(lambda: client.delete(f"/api/chat/{client_id}/run", headers=user_headers(owner)).status_code == 200,
               "the run to be cancellable", 30)
    wait_until(lambda: fcm_for(fcm, phone, request_id), "the push", 60)
    [message] = fcm_for(fcm, phone, request_id)
    assert message["data"]["status"] == "cancelled"
    assert message["notification"]["body"] == "Your run was cancelled."
    wait_until(lambda: webhook_for(receiver, request_id), "the webhook", 60)
    assert json.loads(webhook_for(receiver, request_id)[0].body)["type"] == "turn.cancelled"


def test_transient_failures_are_retried_with_back_off(client: httpx.Client, fcm: FcmStandIn,
                                                      apns: ApnsStandIn) -> None:
    owner, phone, iphone = new_user(), fcm_token(), apns_token()
    register(client, owner, "fcm", phone)
    register(client, owner, "apns", iphone)
    fcm.fail(phone, UNAVAILABLE, UNAVAILABLE)
    apns.fail(iphone, (503, "ServiceUnavailable"), (429, "TooManyRequests"))
    _, request_id = post(client, owner, "Hello there")
    wait_until(lambda: fcm_for(fcm, phone, request_id) and apns_for(apns, iphone, request_id), "the retried pushes", 90)
    assert fcm.attempts(phone) == 3 and apns.attempts(iphone) == 3
    at = [sent.at for sent in fcm.to(phone)]
    # backed off (ATHENIC_NOTIFY_RETRY_BASE_SECONDS=0.3 in the tests): at least 0.3 s, then 0.6 s
    assert at[1] - at[0] >= 0.3 and at[2] - at[1] >= 0.6


def test_dead_tokens_remove_their_devices(client: httpx.Client, fcm: FcmStandIn, apns: ApnsStandIn) -> None:
    owner, dead_fcm, gone_apns, bad_apns, live = new_user(), fcm_token(), apns_token(), apns_token(), fcm_token()
    for platform, token in (("fcm", dead_fcm), ("apns", gone_apns), ("apns", bad_apns), ("fcm", live)):
        register(client, owner, platform, token)
    fcm.fail(dead_fcm, UNREGISTERED)
    apns.fail(gone_apns, GONE)
    apns.fail(bad_apns, BAD_DEVICE_TOKEN)
    _, request_id = post(client, owner, "Hello there")
    wait_until(lambda: fcm_for(fcm, live, request_id), "the live device's push", 60)

    def removed(token: str) -> bool:
        return client.delete(f"/api/devices/{token}", headers=user_headers(owner)).status_code == 404

    wait_until(lambda: removed(dead_fcm) and removed(gone_apns) and removed(bad_apns), "dead devices removed", 60)
    assert fcm.attempts(dead_fcm) == 1 and apns.attempts(gone_apns) == 1 and apns.attempts(bad_apns) == 1
    # the live one stays
    assert client.delete(f"/api/devices/{live}", headers=user_headers(owner)).status_code == 204
