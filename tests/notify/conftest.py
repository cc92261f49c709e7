"""One whole system per module: nats-server, api (auth on), orchestrator, notifier, and the
stand-ins it talks to (FCM, APNs over HTTP/2 + TLS, a webhook receiver). Tests keep apart by
their own users and request ids."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import jwks
from tests.support.apns_standin import TEAM_ID, TOPIC, ApnsStandIn
from tests.support.fcm_standin import FcmStandIn
from tests.support.nats import NatsServer
from tests.support.services import Api, Notifier, Orchestrator, Service
from tests.support.webhook_receiver import WebhookReceiver

JWT_SECRET = "notify-tests-hs256-secret-of-32-bytes!!"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def user_headers(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwks.hs256(JWT_SECRET, jwks.claims(user))}"}


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def fcm_token() -> str:
    return f"{secrets.token_urlsafe(22)}:APA91b{secrets.token_urlsafe(100)}"


def apns_token() -> str:
    return secrets.token_hex(32)


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


def notifier_env(fcm: FcmStandIn, apns: ApnsStandIn, receiver: WebhookReceiver, **extra: str) -> dict[str, str]:
    return {
        "ATHENIC_FCM_CREDENTIALS_FILE": str(fcm.credentials_file), "ATHENIC_FCM_BASE_URL": fcm.base_url,
        "ATHENIC_APNS_KEY_FILE": str(apns.key_file), "ATHENIC_APNS_KEY_ID": apns.key_id,
        "ATHENIC_APNS_TEAM_ID": TEAM_ID, "ATHENIC_APNS_TOPIC": TOPIC, "ATHENIC_APNS_BASE_URL": apns.base_url,
        "ATHENIC_APNS_CA_FILE": str(apns.ca_file),
        "ATHENIC_WEBHOOK_URL": receiver.url, "ATHENIC_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ATHENIC_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
        **extra,
    }


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
