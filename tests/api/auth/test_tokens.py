"""Supabase access tokens against a real api: HS256, RS256/ES256 from a JWKS on loopback, rotation, refusals."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable

import httpx
import jwt
import msgspec
import nats
import pytest

from athenic.shared import names
from tests.api.auth.tokens import JWKS_MAX_AGE, JWKS_REFRESH_FLOOR, SECRET, Tokens, bearer
from tests.support import jwks
from tests.support.jwks import JwksServer
from tests.support.nats import NatsServer
from tests.support.services import Api

pytestmark = pytest.mark.integration


def user() -> str:
    return str(uuid.uuid4())


def assert_unauthorized(response: httpx.Response, mentions: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["status"] == 401 and mentions.lower() in body["detail"].lower(), body


@pytest.mark.parametrize("alg", ["hs256", "rs256", "es256"])
def test_a_valid_token_of_each_kind_posts_and_reads(api: Api, tokens: Tokens, alg: str) -> None:
    token = getattr(tokens, alg)(user())
    with httpx.Client(base_url=api.url, headers=bearer(token), timeout=10) as http:
        posted = http.post("/api/chat", json={"message": f"hello via {alg}"})
        assert posted.status_code == 200, posted.text
        state = http.get(f"/api/chat/response/{posted.json()['clientId']}")
        assert state.status_code == 200 and state.json()["lastMessage"] == f"hello via {alg}"


async def test_the_user_and_tenant_travel_with_the_message(api: Api, tokens: Tokens, system_nats: NatsServer) -> None:
    someone = user()
    token = tokens.rs256(someone, app_metadata={"tenant": "acme"})
    async with httpx.AsyncClient(base_url=api.url, headers=bearer(token)) as http:
        client_id = (await http.post("/api/chat", json={"message": "hi"})).json()["clientId"]
        plain = (await http.post("/api/chat", json={"message": "hi"},
                                 headers=bearer(tokens.hs256(someone)))).json()["clientId"]
    nc = await nats.connect(system_nats.url)
    try:
        js = nc.jetstream()
        stored = await js.get_last_msg(names.REQUEST_STREAM, names.request_subject(client_id))
        assert stored.data is not None
        request = msgspec.json.decode(stored.data)
        assert request["owner"] == someone and request["tenant"] == "acme"
        assert stored.headers is not None and stored.headers[names.HDR_TENANT] == "acme"
        stored = await js.get_last_msg(names.REQUEST_STREAM, names.request_subject(plain))
        assert stored.data is not None and msgspec.json.decode(stored.data)["tenant"] == "default"
    finally:
        await nc.close()


def _other_rsa_same_kid(tokens: Tokens, sub: str) -> str:
    return jwks.rsa_key(tokens.rsa.kid).sign(tokens.claims(sub))


def _crafted_alg(tokens: Tokens, sub: str) -> str:
    """A token whose header names a made-up algorithm carrying a quote and a line break."""
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    header = part({"alg": 'HS256"\r\nX-Injected: 1', "typ": "JWT"})
    return f"{header}.{part(tokens.claims(sub))}.c2ln"


REFUSALS: dict[str, tuple[Callable[[Tokens, str], str], str]] = {
    "forged-hs256": (lambda t, s: jwks.hs256("not-the-secret-" + SECRET, t.claims(s)), "signature"),
    "forged-rs256-same-kid": (_other_rsa_same_kid, "signature"),
    "expired": (lambda t, s: t.hs256(s, expires_in=-5), "expired"),
    "wrong-audience": (lambda t, s: t.rs256(s, aud="anon"), "audience"),
    "wrong-issuer": (lambda t, s: jwks.hs256(SECRET, jwks.claims(s, iss="https://evil.example/auth/v1")), "issuer"),
    "no-exp": (lambda t, s: jwks.hs256(SECRET, {k: v for k, v in t.claims(s).items() if k != "exp"}), "exp"),
    "alg-none": (lambda t, s: jwt.encode(t.claims(s), "", algorithm="none"), "none"),
    "hs512": (lambda t, s: jwt.encode(t.claims(s), SECRET + SECRET, algorithm="HS512"), "hs512"),
    "unknown-kid": (lambda t, s: jwks.ec_key("never-published").sign(t.claims(s)), "unknown key"),
    "garbage": (lambda t, s: "not.a.jwt", "not a jwt"),
    "crafted-alg": (_crafted_alg, "this algorithm"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_tokens_are_refused_with_401(api: Api, tokens: Tokens, case: str) -> None:
    make, mentions = REFUSALS[case]
    token = make(tokens, user())
    with httpx.Client(base_url=api.url, headers=bearer(token), timeout=10) as http:
        assert_unauthorized(http.post("/api/chat", json={"message": "hi"}), mentions)
        assert_unauthorized(http.get(f"/api/chat/response/{uuid.uuid4()}"), mentions)
        refused = http.get("/api/chat/stream/abc")
        challenge = refused.headers["www-authenticate"]
        assert 'error="invalid_token"' in challenge and challenge.count('"') == 6, challenge  # nothing injected
        assert "x-injected" not in refused.headers


def test_a_missing_or_malformed_authorization_is_refused(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as http:
        response = http.post("/api/chat", json={"message": "hi"})
        assert_unauthorized(response, "token is required")
        assert response.headers["www-authenticate"] == 'Bearer realm="athenic"'
        assert_unauthorized(http.get("/api/chat/stream/abc"), "token is required")
        assert_unauthorized(http.get("/api/chat/response/abc", headers={"Authorization": "Basic dTpw"}), "Bearer")


def test_health_ready_metrics_and_schema_stay_open(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as http:
        for route in ("/api/health", "/api/ready", "/metrics", "/schema/openapi.json"):
            assert http.get(route).status_code == 200, route


def test_rotated_keys_are_picked_up_and_removed_ones_dropped(api: Api, tokens: Tokens,
                                                             jwks_server: JwksServer) -> None:
    someone = user()
    old = tokens.rsa
    with httpx.Client(base_url=api.url, timeout=10) as http:
        assert http.get("/api/health").status_code == 200
        assert http.post("/api/chat", json={"message": "hi"}, headers=bearer(old.sign(tokens.claims(someone)))
                         ).status_code == 200
        rotated = jwks.rsa_key()
        jwks_server.publish([rotated, tokens.ec])  # Supabase rotated: a new kid, the old key withdrawn
        time.sleep(JWKS_REFRESH_FLOOR)
        fresh = rotated.sign(tokens.claims(someone))
        assert http.post("/api/chat", json={"message": "hi"}, headers=bearer(fresh)).status_code == 200
        # the withdrawn key is no longer known (the JWKS was refetched for the new kid)
        assert_unauthorized(http.post("/api/chat", json={"message": "hi"},
                                      headers=bearer(old.sign(tokens.claims(someone)))), "unknown key")
        jwks_server.publish([rotated, old, tokens.ec])
        time.sleep(JWKS_MAX_AGE + 0.1)  # known keys are refetched after their maximum age anyway
        assert http.post("/api/chat", json={"message": "hi"},
                         headers=bearer(old.sign(tokens.claims(someone)))).status_code == 200
    jwks_server.publish([tokens.rsa, tokens.ec])


def test_forged_kids_cannot_hammer_the_jwks(api: Api, tokens: Tokens, jwks_server: JwksServer) -> None:
    someone = user()
    with httpx.Client(base_url=api.url, timeout=10) as http:
        before, started = jwks_server.fetches, time.monotonic()
        for _ in range(30):
            forged = jwks.ec_key(f"kid-{uuid.uuid4().hex}").sign(tokens.claims(someone))
            assert http.get("/api/chat/response/abc", headers=bearer(forged)).status_code == 401
        elapsed = time.monotonic() - started
    # at most one refetch per floor (plus one for the maximum age), however many unknown kids arrive
    assert jwks_server.fetches - before <= elapsed / JWKS_REFRESH_FLOOR + 2
    assert jwks_server.fetches - before < 30
