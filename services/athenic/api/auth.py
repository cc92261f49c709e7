"""Who is calling: Supabase access tokens verified into an ``Identity`` (or one anonymous user).

HS256 tokens are checked with the project's JWT secret; RS256/ES256 tokens with the public keys
of the project's JWKS, fetched with httpx (never blocking the event loop), cached, refetched when
a token names an unknown ``kid`` (at most once per floor, so forged kids cannot hammer Supabase)
and after a maximum age (so a removed key stops being accepted).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Final

import httpx
import jwt
from jwt import PyJWK, PyJWKSet
from litestar import Request
from litestar.di import NamedDependency

from athenic.api.errors import ApiError, Unauthorized
from athenic.api.identity import ANONYMOUS, Identity
from athenic.api.settings import ApiSettings
from athenic.shared import names
from athenic.shared.logging import get_logger

log = get_logger(__name__)

ASYMMETRIC: Final = frozenset({"RS256", "ES256"})
JWKS_PATH: Final = "/auth/v1/.well-known/jwks.json"
REALM: Final = 'Bearer realm="athenic"'


class KeysUnavailable(ApiError, status=503, title="Service unavailable"):
    """The signing keys (JWKS) cannot be fetched: the token can be checked later."""


def unauthorized(detail: str, *, token_given: bool = True) -> Unauthorized:
    # RFC 6750: no error code when no token was sent; invalid_token when one was. The
    # description keeps only the characters RFC 6750 allows there (no quote, no line break).
    description = "".join(ch for ch in detail if " " <= ch <= "~" and ch not in '"\\')
    challenge = f'{REALM}, error="invalid_token", error_description="{description}"' if token_given else REALM
    return Unauthorized(detail, headers={"WWW-Authenticate": challenge})


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("the Authorization header must be `Bearer <access token>`")
    return token.strip()


class JwksKeys:
    """The project's public keys by ``kid``."""

    def __init__(self, url: str, refresh_floor: float, max_age: float) -> None:
        self.url = url
        self.refresh_floor = refresh_floor
        self.max_age = max_age
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = -math.inf  # last successful fetch
        self._tried_at = -math.inf  # last attempt, successful or not
        self._lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None

    async def key(self, kid: str | None) -> PyJWK:
        now = time.monotonic()
        if now - self._fetched_at > self.max_age and now - self._tried_at >= self.refresh_floor:
            await self._refresh(now)
        found = self._lookup(kid)
        if found is None and time.monotonic() - self._tried_at >= self.refresh_floor:
            await self._refresh(time.monotonic())  # perhaps the keys rotated
            found = self._lookup(kid)
        if found is None:
            if not self._keys:
                raise KeysUnavailable("the signing keys cannot be fetched; retry later",
                                      headers={"Retry-After": str(math.ceil(self.refresh_floor))})
            raise unauthorized("the token is signed by an unknown key")
        return found

    def _lookup(self, kid: str | None) -> PyJWK | None:
        if kid is None:  # only unambiguous with a single key
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self, asked_at: float) -> None:
        async with self._lock:
            if self._tried_at >= asked_at:  # another caller refreshed while we waited
                return
            self._tried_at = time.monotonic()
            try:
                if self._http is None:
                    self._http = httpx.AsyncClient(timeout=5.0)
                response = await self._http.get(self.url)
                response.raise_for_status()
                keys = PyJWKSet.from_dict(response.json()).keys
            except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                log.warning("JWKS fetch failed; keeping the keys already known", url=self.url,
                            error=str(exc) or type(exc).__name__, known=len(self._keys))
                return
            # Only asymmetric keys: a symmetric key in a public document would let anyone sign.
            self._keys = {k.key_id: k for k in keys if k.key_id and k.algorithm_name in ASYMMETRIC}
            self._fetched_at = time.monotonic()
            log.info("JWKS fetched", url=self.url, kids=sorted(self._keys))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()


class Authenticator:
    """Turns an ``Authorization`` value (or a bare token) into an ``Identity``; raises 401."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.enabled = settings.auth_enabled
        self.jwks = (
            JwksKeys(settings.supabase_url.rstrip("/") + JWKS_PATH, settings.athenic_jwks_refresh_floor_seconds,
                     settings.athenic_jwks_max_age_seconds)
            if self.enabled and settings.supabase_url else None
        )

    def log_mode(self) -> None:
        if not self.enabled:
            log.warning("auth is off (ATHENIC_AUTH=none): every caller is one anonymous user and can read "
                        "any conversation whose clientId it knows")
            return
        log.info("auth is on (ATHENIC_AUTH=supabase)", hs256=self.settings.supabase_jwt_secret is not None,
                 jwks=self.jwks.url if self.jwks else None, audience=self.settings.athenic_jwt_audience,
                 issuer=self.settings.athenic_jwt_issuer, tenant_claim=self.settings.athenic_tenant_claim)

    async def identify(self, authorization: str | None, address: str | None = None) -> Identity:
        if not self.enabled:
            return Identity(user=None, address=address) if address else ANONYMOUS
        token = bearer_token(authorization)
        if token is None:
            raise unauthorized("a bearer access token is required", token_given=False)
        return await self.verify(token, address)

    async def verify(self, token: str, address: str | None = None) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthorized("the token is not a JWT") from None
        alg = header.get("alg")
        key: Any
        if alg == "HS256" and self.settings.supabase_jwt_secret:
            key = self.settings.supabase_jwt_secret
        elif alg in ASYMMETRIC and self.jwks is not None:
            jwk = await self.jwks.key(header.get("kid"))
            if jwk.algorithm_name != alg:
                raise unauthorized("the token's algorithm does not match its key")
            key = jwk.key
        else:
            shown = alg if isinstance(alg, str) and alg.isalnum() and len(alg) <= 10 else "this algorithm"
            raise unauthorized(f"tokens signed with {shown} are not accepted here")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[alg],
                audience=self.settings.athenic_jwt_audience,
                issuer=self.settings.athenic_jwt_issuer,
                leeway=self.settings.athenic_jwt_leeway_seconds,
                options={"require": ["exp", "sub", "aud"], "verify_iss": self.settings.athenic_jwt_issuer is not None},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise unauthorized(f"the token's audience is not {self.settings.athenic_jwt_audience}") from None
        except jwt.InvalidIssuerError:
            raise unauthorized("the token's issuer is not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"the token has no {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise unauthorized("the token's signature is invalid") from None
        user = claims.get("sub")
        if not isinstance(user, str) or not user:
            raise unauthorized("the token's sub claim is not a user id")
        exp = claims.get("exp")
        expires_at = float(exp) + self.settings.athenic_jwt_leeway_seconds if isinstance(exp, int | float) else None
        return Identity(user=user, tenant=self._tenant(claims), address=address, expires_at=expires_at)

    def _tenant(self, claims: dict[str, Any]) -> str:
        path = self.settings.athenic_tenant_claim
        if not path:
            return names.ANONYMOUS_TENANT
        value: Any = claims
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return names.ANONYMOUS_TENANT
        # The tenant travels in NATS headers and keys the policy bucket: same rules as a clientId.
        if not isinstance(value, str) or value == names.WILDCARD_TENANT or not names.valid_client_id(value):
            raise unauthorized(f"the token's {path} claim is not a tenant name")
        return value

    async def close(self) -> None:
        if self.jwks is not None:
            await self.jwks.close()


async def provide_identity(request: Request[Any, Any, Any], authenticator: NamedDependency[Authenticator]) -> Identity:
    """The Litestar dependency of every route that reads or writes conversations."""
    address = request.client.host if request.client else None
    return await authenticator.identify(request.headers.get("authorization"), address)
