"""Apple Push Notification service over HTTP/2 with token-based auth.

``POST {base}/3/device/{token}`` with ``authorization: bearer <JWT>``: an ES256 JWT signed
with the team's .p8 key (``iss`` the team id, ``kid`` the key id), reused for 50 minutes
(APNs rejects one older than an hour, and one renewed more often than every 20 minutes).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any, Final

import httpx
import jwt

from athenic.notifier.content import Notification
from athenic.notifier.results import SENT, Result, dead, refused, retry, retry_after_header
from athenic.shared.messages import Delivery, TurnFinished

TOKEN_LIFETIME_SECONDS: Final = 50 * 60
DEAD_REASONS: Final = {"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"}
RENEW_REASONS: Final = {"ExpiredProviderToken", "InvalidProviderToken"}


class ProviderToken:
    def __init__(self, key_file: str, key_id: str, team_id: str) -> None:
        with open(key_file, "rb") as file:
            self.key = file.read()
        self.key_id = key_id
        self.team_id = team_id
        self._token = ""
        self._issued = 0.0

    def get(self, force: bool = False) -> str:
        now = time.time()
        if force or not self._token or now - self._issued > TOKEN_LIFETIME_SECONDS:
            self._token = jwt.encode({"iss": self.team_id, "iat": int(now)}, self.key, algorithm="ES256",
                                     headers={"kid": self.key_id})
            self._issued = now
        return self._token


def apns_payload(note: Notification) -> dict[str, Any]:
    return {"aps": {"alert": {"title": note.title, "body": note.body}, "sound": "default"}, **note.data}


class ApnsSender:
    def __init__(self, key_file: str, key_id: str, team_id: str, topic: str, base_url: str,
                 ca_file: str | None, timeout: float, render: Callable[[TurnFinished], Notification]) -> None:
        self.provider = ProviderToken(key_file, key_id, team_id)
        self.topic = topic
        self.base = base_url.rstrip("/")
        verify = ssl.create_default_context()
        if ca_file:
            verify.load_verify_locations(ca_file)
        self.http = httpx.AsyncClient(http2=True, verify=verify, timeout=timeout)
        self.render = render

    def _headers(self, event: TurnFinished, force: bool = False) -> dict[str, str]:
        return {
            "authorization": f"bearer {self.provider.get(force)}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "10",
            "apns-expiration": str(int(time.time()) + 24 * 3600),
            "apns-collapse-id": event.request_id[:64],
        }

    async def send(self, delivery: Delivery) -> Result:
        assert delivery.device_token is not None
        url = f"{self.base}/3/device/{delivery.device_token}"
        body = apns_payload(self.render(delivery.event))
        try:
            response = await self.http.post(url, json=body, headers=self._headers(delivery.event))
            if response.status_code == 403 and _reason(response) in RENEW_REASONS:
                response = await self.http.post(url, json=body, headers=self._headers(delivery.event, force=True))
        except (httpx.HTTPError, OSError) as exc:
            return retry(f"APNs unreachable: {exc!s:.200}")
        return self._result(response)

    @staticmethod
    def _result(response: httpx.Response) -> Result:
        if response.status_code == 200:
            return SENT
        why = _reason(response)
        reason = f"APNs {response.status_code} {why}"
        if response.status_code == 410 or why in DEAD_REASONS:
            return dead(reason)
        if response.status_code in (403, 429) or response.status_code >= 500:
            return retry(reason, retry_after_header(response.headers.get("retry-after")))
        return refused(reason)

    async def aclose(self) -> None:
        await self.http.aclose()


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("reason", ""))
    except ValueError:
        return ""
