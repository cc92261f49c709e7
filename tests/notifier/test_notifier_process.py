"""The notifier on its own broker: finished turns published as the orchestrator publishes them."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import yaml

from athenic.orchestrator.final_events import FinalEvents
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.devices import DeviceRegistry
from athenic.shared.messages import ChatRequest, ChatResponse, iso_timestamp
from athenic.shared.settings import NatsSettings, load
from tests.support.apns_standin import ApnsStandIn
from tests.support.fcm_standin import UNAVAILABLE, FcmStandIn
from tests.support.nats import NatsServer
from tests.support.notify import WEBHOOK_SECRET, fcm_token, notifier_env
from tests.support.services import Notifier, wait_until
from tests.support.webhook_receiver import WebhookReceiver, verify_standard_webhook

pytestmark = pytest.mark.integration

OWNER = "user-standalone"


def turn(status: str, message: str, client_id: str | None = None) -> tuple[ChatRequest, ChatResponse]:
    request = ChatRequest(request_id=uuid.uuid4().hex, client_id=client_id or uuid.uuid4().hex, message="hi",
                          submitted_at=iso_timestamp(), tenant="acme", owner=OWNER)
    response = ChatResponse(message=message, requires_e2b=False, client_id=request.client_id,
                            timestamp=iso_timestamp(), request_id=request.request_id, status=status,  # type: ignore[arg-type]
                            error="boom" if status == "failed" else None)
    return request, response


async def _with_broker(url: str, work: object) -> None:
    broker = Broker(load(NatsSettings, {"NATS_URL": url}), name="test")
    await broker.start()
    await broker.wait_ready(30)
    try:
        assert callable(work)
        await work(broker)
    finally:
        await broker.close()


def register(url: str, token: str) -> None:
    async def work(broker: Broker) -> None:
        await DeviceRegistry(broker.bucket(names.DEVICES_BUCKET), broker.js).register(OWNER, "fcm", token)

    asyncio.run(_with_broker(url, work))


def finish(url: str, *turns: tuple[ChatRequest, ChatResponse]) -> None:
    async def work(broker: Broker) -> None:
        for request, response in turns:
            await FinalEvents(broker.js).publish(request, response)

    asyncio.run(_with_broker(url, work))


@pytest.fixture
def standins(tmp_path: Path) -> Iterator[tuple[FcmStandIn, ApnsStandIn, WebhookReceiver]]:
    fcm, apns, receiver = FcmStandIn(tmp_path).start(), ApnsStandIn(tmp_path).start(), WebhookReceiver().start()
    yield fcm, apns, receiver
    for standin in (fcm, apns, receiver):
        standin.stop()


@pytest.fixture
def notifiers() -> Iterator[list[Notifier]]:
    started: list[Notifier] = []
    yield started
    for notifier in started:
        notifier.kill()


@pytest.mark.parametrize("stop", ["kill", "terminate"])
def test_a_delivery_being_retried_survives_a_restart_of_the_notifier(
    nats_server: NatsServer, tmp_path: Path, standins: tuple[FcmStandIn, ApnsStandIn, WebhookReceiver],
    notifiers: list[Notifier], stop: str,
) -> None:
    fcm, apns, receiver = standins
    env = notifier_env(fcm, apns, receiver, ATHENIC_NOTIFY_RETRY_BASE_SECONDS="2")
    first = Notifier(nats_server.url, tmp_path, **env).start()
    notifiers.append(first)
    phone = fcm_token()
    register(nats_server.url, phone)
    fcm.fail(phone, UNAVAILABLE, UNAVAILABLE)
    request, response = turn("completed", "The answer is 42.")
    finish(nats_server.url, (request, response))
    wait_until(lambda: fcm.attempts(phone) >= 1, "the first, failing attempt", 60)
    getattr(first, stop)()  # mid-retry: the item waits in JetStream for its back-off
    assert fcm.delivered(phone) == []
    notifiers.append(Notifier(nats_server.url, tmp_path, **env).start())
    wait_until(lambda: fcm.delivered(phone), "the push, after the restart", 90)
    assert fcm.attempts(phone) == 3
    assert [m["data"]["requestId"] for m in fcm.delivered(phone)] == [request.request_id]


def test_previews_show_the_answer_when_turned_on(
    nats_server: NatsServer, tmp_path: Path, standins: tuple[FcmStandIn, ApnsStandIn, WebhookReceiver],
    notifiers: list[Notifier],
) -> None:
    fcm, apns, receiver = standins
    notifiers.append(Notifier(nats_server.url, tmp_path, **notifier_env(
        fcm, apns, receiver, ATHENIC_NOTIFY_PREVIEW="true", ATHENIC_NOTIFY_PREVIEW_CHARS="20")).start())
    phone = fcm_token()
    register(nats_server.url, phone)
    short, long = turn("completed", "The answer is 42."), turn("completed", "A much longer answer that goes on and on")
    failed = turn("failed", "Sorry, I could not answer this message: boom")
    finish(nats_server.url, short, long, failed)
    wait_until(lambda: len(fcm.delivered(phone)) == 3, "three pushes", 60)
    bodies = {m["data"]["requestId"]: m["notification"]["body"] for m in fcm.delivered(phone)}
    assert bodies[short[0].request_id] == "The answer is 42."
    assert bodies[long[0].request_id] == "A much longer answe…"
    assert len(bodies[long[0].request_id]) == 20
    assert bodies[failed[0].request_id].startswith("Sorry")
    wait_until(lambda: len(receiver.calls) == 3, "three webhooks", 60)
    events = {e["data"]["requestId"]: e for e in (verify_standard_webhook(WEBHOOK_SECRET, c) for c in receiver.calls)}
    assert events[failed[0].request_id]["type"] == "turn.failed"
    assert events[failed[0].request_id]["data"]["error"] == "boom"
    assert events[short[0].request_id]["data"]["tenant"] == "acme"


def test_a_finish_published_twice_notifies_once(
    nats_server: NatsServer, tmp_path: Path, standins: tuple[FcmStandIn, ApnsStandIn, WebhookReceiver],
    notifiers: list[Notifier],
) -> None:
    fcm, apns, receiver = standins
    phone = fcm_token()
    register(nats_server.url, phone)
    once = turn("completed", "The answer is 42.")
    finish(nats_server.url, once, once)  # a redelivered message finishing again, within the dedupe window
    later = turn("completed", "Another answer")
    finish(nats_server.url, later)
    notifiers.append(Notifier(nats_server.url, tmp_path, **notifier_env(fcm, apns, receiver)).start())
    wait_until(lambda: any(m["data"]["requestId"] == later[0].request_id for m in fcm.delivered(phone)),
               "the later push", 60)
    wait_until(lambda: len(receiver.calls) == 2, "two webhooks", 60)
    assert sorted(m["data"]["requestId"] for m in fcm.delivered(phone)) == sorted(
        [once[0].request_id, later[0].request_id])


def test_webhooks_are_retried_with_the_same_id_and_a_fresh_signature(
    nats_server: NatsServer, tmp_path: Path, standins: tuple[FcmStandIn, ApnsStandIn, WebhookReceiver],
    notifiers: list[Notifier],
) -> None:
    fcm, apns, receiver = standins
    receiver.fail_next = 2
    notifiers.append(Notifier(nats_server.url, tmp_path, **notifier_env(fcm, apns, receiver)).start())
    finish(nats_server.url, turn("completed", "The answer is 42."))
    wait_until(lambda: len(receiver.calls) == 3, "three webhook calls", 60)
    assert len({c.headers["webhook-id"] for c in receiver.calls}) == 1
    for call in receiver.calls:
        verify_standard_webhook(WEBHOOK_SECRET, call)


def test_a_webhook_to_a_private_address_is_refused(
    nats_server: NatsServer, tmp_path: Path, standins: tuple[FcmStandIn, ApnsStandIn, WebhookReceiver],
    notifiers: list[Notifier],
) -> None:
    fcm, apns, receiver = standins
    notifier = Notifier(nats_server.url, tmp_path, **notifier_env(
        fcm, apns, receiver, ATHENIC_WEBHOOK_ALLOW_PRIVATE="false")).start()
    notifiers.append(notifier)
    phone = fcm_token()
    register(nats_server.url, phone)
    request, response = turn("completed", "The answer is 42.")
    finish(nats_server.url, (request, response))
    wait_until(lambda: fcm.delivered(phone), "the push (the control)", 60)
    wait_until(lambda: "delivery refused" in notifier.log(), "the webhook refused", 60)
    refusal = next(json.loads(line) for line in notifier.log().splitlines()
               if line.startswith("{") and "delivery refused" in line)
    assert "127.0.0.1" in refusal["reason"] and "not a public address" in refusal["reason"]
    assert receiver.calls == []


def test_a_tenant_with_its_own_webhook_gets_its_events_signed_with_its_secret(
    nats_server: NatsServer, tmp_path: Path, standins: tuple[FcmStandIn, ApnsStandIn, WebhookReceiver],
    notifiers: list[Notifier],
) -> None:
    fcm, apns, receiver = standins
    acme = WebhookReceiver().start()
    try:
        acme_secret = "whsec_" + base64.b64encode(b"acme-secret-of-32-bytes-length!!").decode()
        tenants = tmp_path / "tenants.yaml"
        tenants.write_text(yaml.safe_dump({"acme": {"url": acme.url, "secret": acme_secret}}))
        notifiers.append(Notifier(nats_server.url, tmp_path, **notifier_env(
            fcm, apns, receiver, ATHENIC_WEBHOOK_TENANTS_FILE=str(tenants))).start())
        ours = turn("completed", "The answer is 42.")  # tenant acme
        request, response = turn("completed", "Another answer")
        other = (msgspec.structs.replace(request, tenant="globex"), response)
        finish(nats_server.url, ours, other)
        wait_until(lambda: len(receiver.calls) == 2 and len(acme.calls) == 1, "the webhooks", 60)
        (call,) = acme.calls
        assert verify_standard_webhook(acme_secret, call)["data"]["requestId"] == ours[0].request_id
        with pytest.raises(AssertionError, match="no v1 signature"):
            verify_standard_webhook(WEBHOOK_SECRET, call)  # not signed with the global secret
        for global_call in receiver.calls:
            verify_standard_webhook(WEBHOOK_SECRET, global_call)
    finally:
        acme.stop()


def test_replicas_share_the_work_and_send_each_push_once(
    nats_server: NatsServer, tmp_path: Path, standins: tuple[FcmStandIn, ApnsStandIn, WebhookReceiver],
    notifiers: list[Notifier],
) -> None:
    fcm, apns, receiver = standins
    phone = fcm_token()
    register(nats_server.url, phone)
    for _ in range(2):  # two at a time each: neither can take everything while the other waits for work
        notifiers.append(Notifier(nats_server.url, tmp_path, **notifier_env(
            fcm, apns, receiver, ATHENIC_NOTIFY_CONCURRENCY="2")).start())
    turns = [turn("completed", f"answer {n}") for n in range(12)]
    finish(nats_server.url, *turns)
    wait_until(lambda: len(fcm.delivered(phone)) >= 12 and len(receiver.calls) >= 12, "every push and webhook", 90)
    assert sorted(m["data"]["requestId"] for m in fcm.delivered(phone)) == sorted(r.request_id for r, _ in turns)
    assert len(receiver.calls) == 12
    logs = [n.log() for n in notifiers]
    assert all("notification delivered" in text for text in logs), "both replicas took a share"
