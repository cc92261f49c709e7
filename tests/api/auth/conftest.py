"""An api with Supabase auth on (HS256 secret + a JWKS on loopback), one per module, and token makers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import jwks
from tests.support.jwks import JwksServer, SigningKey
from tests.support.nats import NatsServer
from tests.support.services import Api

SECRET = "test-hs256-secret-of-at-least-32-bytes!"
JWKS_REFRESH_FLOOR = 0.2
JWKS_MAX_AGE = 2.0
RATE_PER_MINUTE = 6
RATE_BURST = 3


class Tokens:
    """Tokens as Supabase would issue them for this project, signed by the test keys."""

    def __init__(self, server: JwksServer, rsa: SigningKey, ec: SigningKey) -> None:
        self.server = server
        self.rsa = rsa
        self.ec = ec
        self.issuer = f"{server.url}/auth/v1"

    def claims(self, sub: str, **overrides: Any) -> dict[str, Any]:
        return jwks.claims(sub, iss=self.issuer, **overrides)

    def hs256(self, sub: str, **overrides: Any) -> str:
        return jwks.hs256(SECRET, self.claims(sub, **overrides))

    def rs256(self, sub: str, **overrides: Any) -> str:
        return self.rsa.sign(self.claims(sub, **overrides))

    def es256(self, sub: str, **overrides: Any) -> str:
        return self.ec.sign(self.claims(sub, **overrides))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tokens(jwks_server: JwksServer) -> Tokens:
    made = Tokens(jwks_server, jwks.rsa_key(), jwks.ec_key())
    jwks_server.publish([made.rsa, made.ec])
    return made


@pytest.fixture(scope="module")
def api(system_nats: NatsServer, module_tmp: Path, jwks_server: JwksServer, tokens: Tokens) -> Iterator[Api]:
    service = Api(
        system_nats.url, module_tmp,
        ATHENIC_AUTH="supabase",
        SUPABASE_JWT_SECRET=SECRET,
        SUPABASE_URL=jwks_server.url,
        ATHENIC_JWT_ISSUER=tokens.issuer,
        ATHENIC_TENANT_CLAIM="app_metadata.tenant",
        ATHENIC_JWKS_REFRESH_FLOOR_SECONDS=str(JWKS_REFRESH_FLOOR),
        ATHENIC_JWKS_MAX_AGE_SECONDS=str(JWKS_MAX_AGE),
        ATHENIC_JWT_LEEWAY_SECONDS="0",
        ATHENIC_RATE_LIMIT_PER_MINUTE=str(RATE_PER_MINUTE),
        ATHENIC_RATE_LIMIT_BURST=str(RATE_BURST),
        ATHENIC_WS_AUTH_TIMEOUT_SECONDS="1",
    ).start()
    try:
        yield service
    finally:
        service.terminate()
