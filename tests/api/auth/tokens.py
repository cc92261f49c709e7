"""Tokens as Supabase issues them (HS256 secret, RS256/ES256 from a JWKS on loopback) and the
limits the auth tests' api runs with."""

from __future__ import annotations

from typing import Any

from tests.support import jwks
from tests.support.jwks import JwksServer, SigningKey

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
