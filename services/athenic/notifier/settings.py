"""notifier settings (environment variables, see the README's Notifications section)."""

from __future__ import annotations

import base64
from typing import Annotated

import msgspec

from athenic.shared.settings import EnvSettings, PositiveFloat, SettingsError

PortOrAny = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class NotifierSettings(EnvSettings, frozen=True, rename=str.upper):
    athenic_health_host: str = "0.0.0.0"
    # its own variable: on one machine (`athenic dev`) the orchestrator holds ATHENIC_HEALTH_PORT
    athenic_notifier_health_port: PortOrAny = 9091
    # How many deliveries one replica works on at once.
    athenic_notify_concurrency: Annotated[int, msgspec.Meta(ge=1, le=512)] = 16
    # Privacy: a notification says only "your answer is ready" unless previews are on.
    athenic_notify_preview: bool = False
    athenic_notify_preview_chars: Annotated[int, msgspec.Meta(ge=1, le=240)] = 120
    # A delivery failing transiently is retried after base, 2*base, 4*base ... (at most max) seconds,
    # this many attempts in all.
    athenic_notify_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    athenic_notify_retry_base_seconds: PositiveFloat = 2.0
    athenic_notify_retry_max_seconds: PositiveFloat = 300.0
    athenic_notify_timeout_seconds: PositiveFloat = 10.0

    # FCM HTTP v1: a service-account JSON key (mounted from a Secret); the project defaults to its project_id.
    athenic_fcm_credentials_file: str | None = None
    athenic_fcm_project_id: str | None = None
    athenic_fcm_base_url: str = "https://fcm.googleapis.com"

    # APNs, token-based: the .p8 signing key (mounted from a Secret), its key id, the team id, the app's bundle id.
    athenic_apns_key_file: str | None = None
    athenic_apns_key_id: str | None = None
    athenic_apns_team_id: str | None = None
    athenic_apns_topic: str | None = None
    athenic_apns_base_url: str = "https://api.push.apple.com"
    athenic_apns_ca_file: str | None = None  # extra CA bundle (tests; a TLS-inspecting egress proxy)

    # Standard Webhooks: every finished turn is POSTed here, signed with the whsec_ secret.
    athenic_webhook_url: str | None = None
    athenic_webhook_secret: str | None = None
    # Per-tenant webhooks: a YAML file {tenant: {url, secret}} (mounted from a Secret), see webhook_targets.py.
    athenic_webhook_tenants_file: str | None = None
    # Off: a webhook URL resolving to a loopback, private, link-local... address is refused.
    athenic_webhook_allow_private: bool = False

    @property
    def fcm_enabled(self) -> bool:
        return self.athenic_fcm_credentials_file is not None

    @property
    def apns_enabled(self) -> bool:
        return self.athenic_apns_key_file is not None

    def check(self) -> NotifierSettings:
        """Combinations a single field cannot express; fails naming the variable to set."""
        if self.apns_enabled:
            for name in ("athenic_apns_key_id", "athenic_apns_team_id", "athenic_apns_topic"):
                if not getattr(self, name):
                    raise SettingsError(f"bad setting {name.upper()}: ATHENIC_APNS_KEY_FILE is set, so it is needed")
        for name in ("athenic_fcm_base_url", "athenic_apns_base_url"):
            if not getattr(self, name).startswith(("https://", "http://")):
                raise SettingsError(f"bad setting {name.upper()}: not an http(s) URL")
        url, secret = self.athenic_webhook_url, self.athenic_webhook_secret
        if url is not None:
            if not url.startswith(("https://", "http://")):
                raise SettingsError(f"bad setting ATHENIC_WEBHOOK_URL: {url!r} is not an http(s) URL")
            if secret is None:
                raise SettingsError("bad setting ATHENIC_WEBHOOK_SECRET: ATHENIC_WEBHOOK_URL is set, so it is needed")
        if secret is not None:
            check_webhook_secret(secret, "ATHENIC_WEBHOOK_SECRET")
        return self


def check_webhook_secret(secret: str, name: str) -> None:
    try:
        ok = secret.startswith("whsec_") and len(base64.b64decode(secret[6:], validate=True)) >= 16
    except ValueError:
        ok = False
    if not ok:
        raise SettingsError(f"bad setting {name}: a Standard Webhooks secret is whsec_ followed by the "
                            "base64 of at least 16 random bytes")
