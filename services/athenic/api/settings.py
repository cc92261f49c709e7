"""api settings (environment variables, see docs/configuration.md)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from athenic.shared.settings import EnvSettings, Port, PositiveFloat, SettingsError

NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class ApiSettings(EnvSettings, frozen=True, rename=str.upper):
    api_server_port: Port = 3000
    api_host: str = "0.0.0.0"
    # Largest accepted `message`, in UTF-8 bytes.
    athenic_max_message_bytes: Annotated[int, msgspec.Meta(ge=1, le=1024 * 1024)] = 16 * 1024
    # How long a POST may spend getting the broker's acknowledgement before it answers 503: long
    # enough to ride through a JetStream leader election (5-8 s measured after a node's SIGKILL).
    athenic_publish_deadline_seconds: PositiveFloat = 10.0
    # ... of which at most this long while the api is connected to no NATS server at all (a
    # reconnect to another node takes well under it; a broker that is down is told at once).
    athenic_publish_disconnected_seconds: PositiveFloat = 1.5
    athenic_shutdown_grace_seconds: PositiveFloat = 10.0

    # Authentication: `none` (every caller is one anonymous user) or Supabase access tokens.
    athenic_auth: Literal["none", "supabase"] = "none"
    supabase_jwt_secret: str | None = None  # HS256 tokens
    supabase_url: str | None = None  # RS256/ES256 tokens, keys from <url>/auth/v1/.well-known/jwks.json
    athenic_jwt_audience: str = "authenticated"
    athenic_jwt_issuer: str | None = None
    # Dotted path of the claim naming the tenant (e.g. `app_metadata.tenant`); `default` without it.
    athenic_tenant_claim: str | None = None
    # A token with an unknown `kid` refetches the JWKS, at most once per this many seconds.
    athenic_jwks_refresh_floor_seconds: PositiveFloat = 30.0
    # Known keys are refetched after this long anyway, so a removed key stops being accepted.
    athenic_jwks_max_age_seconds: PositiveFloat = 600.0
    # Clock skew tolerated on `exp`/`nbf`/`iat`.
    athenic_jwt_leeway_seconds: Annotated[float, msgspec.Meta(ge=0, le=300)] = 30.0

    # Posting (POST /api/chat and chat frames on the WebSocket), per user (per client IP without
    # auth), per api replica: a token bucket refilled at this rate; 0 turns the limit off.
    athenic_rate_limit_per_minute: NonNegative = 60
    # How many posts may come at once before the rate applies (0: the per-minute figure).
    athenic_rate_limit_burst: NonNegative = 10

    # Keep-alives of idle push connections through proxies: WebSocket pings (uvicorn) and SSE comments.
    athenic_ws_ping_seconds: PositiveFloat = 20.0
    # A WebSocket without an Authorization header must send {"type":"auth"} within this time.
    athenic_ws_auth_timeout_seconds: PositiveFloat = 10.0

    @property
    def max_body_bytes(self) -> int:
        # JSON escaping can grow a message up to 6x (a six-character \u escape per character); leave room
        # for the envelope.
        return self.athenic_max_message_bytes * 6 + 1024

    @property
    def auth_enabled(self) -> bool:
        return self.athenic_auth == "supabase"

    def check(self) -> ApiSettings:
        """Combinations a single field cannot express; fails naming the variable to set."""
        if self.auth_enabled and not (self.supabase_jwt_secret or self.supabase_url):
            raise SettingsError(
                "ATHENIC_AUTH=supabase needs SUPABASE_JWT_SECRET (HS256 tokens) "
                "or SUPABASE_URL (RS256/ES256 keys from the project's JWKS), or both"
            )
        claim = self.athenic_tenant_claim
        if claim is not None and not (claim.startswith("app_metadata.") and len(claim) > len("app_metadata.")):
            # user_metadata (and any claim a user can shape) would let a user pick their tenant's quota
            raise SettingsError(
                f"bad setting ATHENIC_TENANT_CLAIM: {claim!r} must be a claim under app_metadata "
                "(e.g. app_metadata.tenant), which only the service role can write"
            )
        if self.supabase_url is not None and not self.supabase_url.startswith(("https://", "http://")):
            raise SettingsError(f"bad setting SUPABASE_URL: {self.supabase_url!r} is not an http(s) URL")
        return self
