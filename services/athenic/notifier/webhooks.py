"""Standard Webhooks: a JSON event per finished turn, signed, POSTed to the configured URL.

Headers ``webhook-id`` (the same on every retry of one event), ``webhook-timestamp`` (this
attempt's, in seconds) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of
id.timestamp.body>`` with the base64-decoded ``whsec_`` secret). Redirects are not
followed; any answer but 2xx is retried with back-off.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from athenic.notifier.address_guard import AddressRefused, pinned
from athenic.notifier.results import SENT, Result, refused, retry, retry_after_header
from athenic.notifier.webhook_targets import WebhookTargets
from athenic.shared.messages import Delivery, TurnFinished, encode


def webhook_event(event: TurnFinished) -> dict[str, Any]:
    data: dict[str, Any] = {"clientId": event.client_id, "requestId": event.request_id, "status": event.status,
                            "tenant": event.tenant, "finishedAt": event.timestamp}
    if event.error is not None:
        data["error"] = event.error
    return {"type": f"turn.{event.status}", "timestamp": event.timestamp, "data": data}


def signed_headers(secret: str, msg_id: str, body: bytes, moment: datetime) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id, moment, body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signature, "content-type": "application/json",
            "user-agent": "athenic-notifier"}


class WebhookSender:
    def __init__(self, targets: WebhookTargets, allow_private: bool, timeout: float) -> None:
        self.targets = targets  # the URLs and their whsec_ secrets (from the settings, never from the stream)
        self.allow_private = allow_private
        self.http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def send(self, delivery: Delivery) -> Result:
        url = delivery.webhook_url
        secret = self.targets.secret(delivery.event.tenant, url or "")
        if url is None or secret is None:
            return refused("no such webhook is configured any more")
        body = encode(webhook_event(delivery.event))
        headers = signed_headers(secret, f"msg_{delivery.event.request_id}", body,
                                 datetime.now(UTC).replace(microsecond=0))
        try:
            target = await pinned(url, self.allow_private)
        except AddressRefused as exc:
            return refused(str(exc))
        except OSError as exc:
            return retry(f"cannot resolve the webhook's host: {exc!s:.200}")
        headers["host"] = target.host
        extensions = {"sni_hostname": target.server_name} if url.startswith("https") else {}
        try:
            response = await self.http.post(target.url, content=body, headers=headers, extensions=extensions)
        except (httpx.HTTPError, OSError) as exc:
            return retry(f"webhook unreachable: {exc!s:.200}")
        if 200 <= response.status_code < 300:
            return SENT
        if 300 <= response.status_code < 400:
            return refused(f"webhook answered {response.status_code} (redirects are not followed)")
        return retry(f"webhook answered {response.status_code}",
                     retry_after_header(response.headers.get("retry-after")))

    async def aclose(self) -> None:
        await self.http.aclose()
