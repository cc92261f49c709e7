"""Firebase Cloud Messaging, HTTP v1: ``POST {base}/v1/projects/{project}/messages:send``.

The bearer token is an OAuth2 access token google-auth gets from the service account's
key (a JWT assertion exchanged at the key's ``token_uri``); it is cached until shortly
before it expires, and refreshed early when FCM answers 401.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Final

import httpx
from google.auth.transport.requests import Request as GoogleRequest
from google.oauth2 import service_account

from athenic.notifier.content import Notification
from athenic.notifier.results import SENT, Result, dead, refused, retry, retry_after_header
from athenic.shared.logging import get_logger
from athenic.shared.messages import Delivery, TurnFinished

log = get_logger(__name__)
SCOPE: Final = "https://www.googleapis.com/auth/firebase.messaging"
# FCM's error codes (google.firebase.fcm.v1.FcmError) that mean the token will never work again
DEAD_CODES: Final = {"UNREGISTERED", "SENDER_ID_MISMATCH"}
RETRY_CODES: Final = {"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"}


class AccessTokens:
    """OAuth2 access tokens of a service account, cached; refreshed in a thread (google-auth is sync)."""

    def __init__(self, credentials_file: str) -> None:
        self.credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            credentials_file, scopes=[SCOPE])
        with open(credentials_file) as file:
            self.project_id: str | None = json.load(file).get("project_id")
        self._lock = asyncio.Lock()

    async def token(self, force: bool = False) -> str:
        async with self._lock:
            if force or not self.credentials.valid:
                await asyncio.to_thread(self.credentials.refresh, GoogleRequest())
            return str(self.credentials.token)


def fcm_error(response: httpx.Response) -> tuple[str, str]:
    """(FCM error code, message) of an error answer."""
    try:
        error = response.json().get("error", {})
    except ValueError:
        return "", response.text[:200]
    code = ""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            code = str(detail["errorCode"])
    return code or str(error.get("status", "")), str(error.get("message", ""))[:200]


def fcm_message(token: str, note: Notification) -> dict[str, Any]:
    return {"message": {
        "token": token,
        "notification": {"title": note.title, "body": note.body},
        "data": note.data,
        "android": {"priority": "high"},
        "apns": {"headers": {"apns-priority": "10"}},
    }}


class FcmSender:
    def __init__(self, credentials_file: str, project_id: str | None, base_url: str, timeout: float,
                 render: Callable[[TurnFinished], Notification]) -> None:
        self.tokens = AccessTokens(credentials_file)
        project = project_id or self.tokens.project_id
        if not project:
            raise ValueError("the FCM service account has no project_id: set ATHENIC_FCM_PROJECT_ID")
        self.url = f"{base_url.rstrip('/')}/v1/projects/{project}/messages:send"
        self.http = httpx.AsyncClient(timeout=timeout)
        self.render = render

    async def send(self, delivery: Delivery) -> Result:
        assert delivery.device_token is not None
        body = fcm_message(delivery.device_token, self.render(delivery.event))
        try:
            access = await self.tokens.token()
            response = await self.http.post(self.url, json=body, headers={"authorization": f"Bearer {access}"})
            if response.status_code == 401:  # revoked or expired early: one fresh token
                access = await self.tokens.token(force=True)
                response = await self.http.post(self.url, json=body, headers={"authorization": f"Bearer {access}"})
        except (httpx.HTTPError, OSError) as exc:
            return retry(f"FCM unreachable: {exc!s:.200}")
        except Exception as exc:  # google-auth's token exchange (TransportError, RefreshError)
            return retry(f"no FCM access token: {exc!s:.200}")
        return self._result(response)

    @staticmethod
    def _result(response: httpx.Response) -> Result:
        if response.status_code == 200:
            return SENT
        code, message = fcm_error(response)
        reason = f"FCM {response.status_code} {code}: {message}"
        if code in DEAD_CODES or response.status_code == 404:
            return dead(reason)
        if code in RETRY_CODES or response.status_code in (401, 408, 429) or response.status_code >= 500:
            return retry(reason, retry_after_header(response.headers.get("retry-after")))
        return refused(reason)

    async def aclose(self) -> None:
        await self.http.aclose()
