"""ATHENIC_AUTH=none (the dev default): no tokens, a loud log line, limits per client IP; bad auth settings."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from athenic.api.settings import ApiSettings
from athenic.shared.settings import SettingsError, load
from tests.support.nats import NatsServer
from tests.support.push_client import open_socket, recv
from tests.support.services import Api, base_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def open_api(system_nats: NatsServer, module_tmp: Path) -> Iterator[Api]:
    service = Api(system_nats.url, module_tmp, ATHENIC_RATE_LIMIT_PER_MINUTE="2",
                  ATHENIC_RATE_LIMIT_BURST="2").start()
    try:
        yield service
    finally:
        service.terminate()


async def test_everything_works_without_tokens_and_the_log_says_auth_is_off(open_api: Api) -> None:
    assert "auth is off" in open_api.log()
    async with httpx.AsyncClient(base_url=open_api.url, headers={"X-Forwarded-For": "198.51.100.1"}) as http:
        client_id = (await http.post("/api/chat", json={"message": "hi"})).json()["clientId"]
        assert (await http.get(f"/api/chat/response/{client_id}")).status_code == 200
        # a token is not needed, and a bad one is not even looked at
        assert (await http.get(f"/api/chat/response/{client_id}",
                               headers={"Authorization": "Bearer nonsense"})).status_code == 200
    async with open_socket(open_api.url, client_id) as ws:
        assert (await recv(ws))["lastMessage"] == "hi"


def test_posting_is_limited_per_client_ip(open_api: Api) -> None:
    # uvicorn trusts X-Forwarded-For from FORWARDED_ALLOW_IPS (loopback by default): the ingress's view
    with httpx.Client(base_url=open_api.url, timeout=10) as http:
        phone = {"X-Forwarded-For": "203.0.113.7"}
        assert [http.post("/api/chat", json={"message": "hi"}, headers=phone).status_code
                for _ in range(2)] == [200, 200]
        over = http.post("/api/chat", json={"message": "hi"}, headers=phone)
        assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1
        assert "2 a minute" in over.json()["detail"]
        laptop = {"X-Forwarded-For": "203.0.113.8"}
        assert http.post("/api/chat", json={"message": "hi"}, headers=laptop).status_code == 200


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"ATHENIC_AUTH": "supabase"}, ["SUPABASE_JWT_SECRET", "SUPABASE_URL"]),
        ({"ATHENIC_AUTH": "supabase", "SUPABASE_URL": "proj.supabase.co"}, ["SUPABASE_URL"]),
        ({"ATHENIC_AUTH": "firebase"}, ["ATHENIC_AUTH"]),
        ({"ATHENIC_RATE_LIMIT_PER_MINUTE": "-1"}, ["ATHENIC_RATE_LIMIT_PER_MINUTE"]),
        ({"ATHENIC_JWKS_REFRESH_FLOOR_SECONDS": "0"}, ["ATHENIC_JWKS_REFRESH_FLOOR_SECONDS"]),
        # a user edits their own user_metadata: a tenant taken from it would be the user's choice
        ({"ATHENIC_TENANT_CLAIM": "user_metadata.tenant"}, ["ATHENIC_TENANT_CLAIM", "app_metadata"]),
        ({"ATHENIC_TENANT_CLAIM": "tenant"}, ["ATHENIC_TENANT_CLAIM"]),
        ({"ATHENIC_TENANT_CLAIM": "app_metadata."}, ["ATHENIC_TENANT_CLAIM"]),
    ],
)
def test_bad_auth_settings_fail_naming_the_variable(env: dict[str, str], names: list[str]) -> None:
    with pytest.raises(SettingsError) as failure:
        load(ApiSettings, env).check()
    assert all(name in str(failure.value) for name in names), failure.value


def test_the_api_process_refuses_to_start_with_auth_half_configured() -> None:
    script = Path(sys.executable).parent / "athenic-api"
    done = subprocess.run([str(script)], env=base_env("nats://127.0.0.1:1", ATHENIC_AUTH="supabase"),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "SUPABASE_JWT_SECRET" in done.stderr and "SUPABASE_URL" in done.stderr
