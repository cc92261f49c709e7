"""What the push-notification tests share: users with tokens for an api whose auth is on
(``JWT_SECRET``), device tokens of the right shapes, and the notifier's environment pointed at
the stand-ins (FCM, APNs over HTTP/2 + TLS, a webhook receiver)."""

from __future__ import annotations

import base64
import secrets
import uuid

from tests.support import jwks
from tests.support.apns_standin import TEAM_ID, TOPIC, ApnsStandIn
from tests.support.fcm_standin import FcmStandIn
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
