"""An api with Supabase auth on (HS256 secret + a JWKS on loopback), one per module, and token makers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.auth.tokens import JWKS_MAX_AGE, JWKS_REFRESH_FLOOR, RATE_BURST, RATE_PER_MINUTE, SECRET, Tokens
from tests.support import jwks
from tests.support.jwks import JwksServer
from tests.support.nats import NatsServer
from tests.support.services import Api


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
