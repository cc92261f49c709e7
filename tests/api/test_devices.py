"""POST /api/devices and DELETE /api/devices/{token}: the calling user's push registrations, against a
real api process (auth on) and nats-server; what the notifier does with them is in tests/e2e."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest

from athenic.shared import names
from tests.support.nats import NatsServer
from tests.support.notify import JWT_SECRET, apns_token, fcm_token, new_user, user_headers
from tests.support.services import Api

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(system_nats: NatsServer, module_tmp: Path) -> Iterator[Api]:
    service = Api(system_nats.url, module_tmp, ATHENIC_AUTH="supabase", SUPABASE_JWT_SECRET=JWT_SECRET).start()
    try:
        yield service
    finally:
        service.terminate()


def register(client: httpx.Client, user: str, platform: str, token: str) -> httpx.Response:
    return client.post("/api/devices", json={"platform": platform, "token": token}, headers=user_headers(user))


def test_register_refresh_and_remove(client: httpx.Client) -> None:
    user, token = new_user(), fcm_token()
    first = register(client, user, "fcm", token)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["platform"] == "fcm" and body["token"] == token
    assert body["expiresAt"] > body["registeredAt"]
    again = register(client, user, "fcm", token)
    assert again.status_code == 200, again.text
    assert again.json()["expiresAt"] >= body["expiresAt"]
    assert client.delete(f"/api/devices/{token}", headers=user_headers(user)).status_code == 204
    gone = client.delete(f"/api/devices/{token}", headers=user_headers(user))
    assert gone.status_code == 404
    assert gone.headers["content-type"].startswith("application/problem+json")


def test_apns_tokens_register_too(client: httpx.Client) -> None:
    user, token = new_user(), apns_token()
    assert register(client, user, "apns", token).status_code == 201
    assert client.delete(f"/api/devices/{token}", headers=user_headers(user)).status_code == 204


def test_another_users_device_is_not_found(client: httpx.Client) -> None:
    owner, other, token = new_user(), new_user(), fcm_token()
    assert register(client, owner, "fcm", token).status_code == 201
    assert client.delete(f"/api/devices/{token}", headers=user_headers(other)).status_code == 404
    assert client.delete(f"/api/devices/{token}", headers=user_headers(owner)).status_code == 204


def test_a_token_moves_to_whoever_registers_it_last(client: httpx.Client) -> None:
    first, second, token = new_user(), new_user(), fcm_token()
    assert register(client, first, "fcm", token).status_code == 201
    assert register(client, second, "fcm", token).status_code == 201
    assert client.delete(f"/api/devices/{token}", headers=user_headers(first)).status_code == 404
    assert client.delete(f"/api/devices/{token}", headers=user_headers(second)).status_code == 204


@pytest.mark.parametrize(("body", "says"), [
    ({"platform": "gcm", "token": "a" * 64}, "platform"),
    ({"platform": "fcm", "token": "short"}, "fcm token"),
    ({"platform": "fcm", "token": "a" * 40 + " spaces and / slashes"}, "fcm token"),
    ({"platform": "fcm", "token": "a" * 5000}, "fcm token"),
    ({"platform": "apns", "token": "z" * 64}, "apns token"),
    ({"platform": "apns", "token": "a" * 63}, "apns token"),
    ({"platform": "apns", "token": fcm_token()}, "apns token"),
    ({"platform": "fcm"}, "token"),
    ({"token": "a" * 64}, "platform"),
    ({"platform": 3, "token": "a" * 64}, "str"),  # a wrong type: Litestar's validation says what it expected
])
def test_bad_registrations_are_400_problems(client: httpx.Client, body: dict[str, object], says: str) -> None:
    response = client.post("/api/devices", json=body, headers=user_headers(new_user()))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert says in response.json()["detail"]


def test_bad_json_is_a_400_problem(client: httpx.Client) -> None:
    response = client.post("/api/devices", content=b"{not json", headers={
        **user_headers(new_user()), "content-type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


def test_registration_needs_a_token_when_auth_is_on(client: httpx.Client) -> None:
    response = client.post("/api/devices", json={"platform": "fcm", "token": fcm_token()})
    assert response.status_code == 401
    assert client.delete(f"/api/devices/{fcm_token()}").status_code == 401


def test_routes_are_in_the_openapi_document(client: httpx.Client) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert set(paths["/api/devices"]) == {"post"}
    assert {"200", "201", "400", "401"} <= set(paths["/api/devices"]["post"]["responses"])
    assert set(paths["/api/devices/{token}"]) == {"delete"}
    assert {"204", "404"} <= set(paths["/api/devices/{token}"]["delete"]["responses"])


def test_registrations_live_in_kv_with_a_ttl_restarted_by_reregistering(
    client: httpx.Client, system_nats: NatsServer
) -> None:
    user, token = new_user(), fcm_token()
    assert register(client, user, "fcm", token).status_code == 201

    async def entry() -> tuple[float | None, int]:
        nc = await nats.connect(system_nats.url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(f"KV_{names.DEVICES_BUCKET}")
            got = await (await js.key_value(names.DEVICES_BUCKET)).get(names.device_key(user, token))
            assert got.value is not None and token.encode() in got.value
            return info.config.max_age, got.revision or 0
        finally:
            await nc.close()

    max_age, revision = asyncio.run(entry())
    assert max_age == 60 * 24 * 3600  # ATHENIC_DEVICE_TTL_SECONDS' default: 60 days after the last registration
    assert register(client, user, "fcm", token).status_code == 200
    assert asyncio.run(entry())[1] > revision  # rewritten: its age starts again


def test_with_auth_off_the_anonymous_user_registers_and_a_broker_away_is_503(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    api = Api(nats_server.url, tmp_path).start()
    try:
        with httpx.Client(base_url=api.url, timeout=30) as anonymous:
            token = fcm_token()
            assert anonymous.post("/api/devices", json={"platform": "fcm", "token": token}).status_code == 201
            assert anonymous.post("/api/devices", json={"platform": "fcm", "token": token}).status_code == 200
            nats_server.stop()
            away = anonymous.post("/api/devices", json={"platform": "fcm", "token": fcm_token()})
            assert away.status_code == 503, away.text
            assert away.headers["content-type"].startswith("application/problem+json")
            assert anonymous.delete(f"/api/devices/{token}").status_code == 503
    finally:
        api.terminate()
