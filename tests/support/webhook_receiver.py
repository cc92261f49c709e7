"""A webhook endpoint on loopback that records every call (headers and raw body) as it came."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Request, Response, post

from tests.support.asgi_thread import ThreadedServer


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.fail_next = 0  # answer this many calls with 503 first
        self._lock = threading.Lock()
        self.server = ThreadedServer(self._app())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/hooks/athenic"

    def start(self) -> WebhookReceiver:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def _app(self) -> Litestar:
        @post("/hooks/athenic", status_code=204)
        async def hook(request: Request[Any, Any, Any]) -> Response[None]:
            call = Call(dict(request.headers.items()), await request.body())
            with self._lock:
                self.calls.append(call)
                failing = self.fail_next > 0
                self.fail_next -= 1 if failing else 0
            return Response(None, status_code=503 if failing else 204)

        return Litestar([hook], openapi_config=None, logging_config=None)


def verify_standard_webhook(secret: str, call: Call, tolerance: float = 300) -> dict[str, Any]:
    """The Standard Webhooks check, written from the specification (not the library the sender uses)."""
    msg_id, stamp = call.headers["webhook-id"], call.headers["webhook-timestamp"]
    assert abs(time.time() - int(stamp)) < tolerance
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + call.body, hashlib.sha256).digest())
    offered = [part.split(",", 1) for part in call.headers["webhook-signature"].split(" ")]
    assert any(version == "v1" and hmac.compare_digest(sig.encode(), expected) for version, sig in offered), \
        "no v1 signature matches"
    body: dict[str, Any] = json.loads(call.body)
    return body
