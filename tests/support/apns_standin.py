"""A stand-in of APNs on loopback: HTTP/2 only, over TLS with a test CA, token-based auth.

``POST /3/device/{token}`` must come over HTTP/2 with ``authorization: bearer <JWT>``, an
ES256 JWT verified with the public half of the test .p8 key (``kid`` = the key id, ``iss``
= the team id, ``iat`` within the hour), ``apns-topic`` = the app's bundle id and
``apns-push-type: alert``. Per device token a script of failures is answered first:
410 Unregistered, 400 BadDeviceToken, 503 ServiceUnavailable...
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from litestar import Litestar, Request, Response, post
from litestar.params import FromPath

from tests.support.asgi_thread import ThreadedServer

TOPIC = "dev.athenic.app"
TEAM_ID = "TEAM123456"
GONE = (410, "Unregistered")
BAD_DEVICE_TOKEN = (400, "BadDeviceToken")
UNAVAILABLE = (503, "ServiceUnavailable")


@dataclass
class Pushed:
    token: str
    payload: dict[str, Any]
    headers: dict[str, str]
    http_version: str


class ApnsStandIn:
    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.key_id = secrets.token_hex(5).upper()
        self.key_file = directory / "apns-key.p8"
        self.ca_file = directory / "apns-ca.pem"
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert_file, key_file = directory / "apns-cert.pem", directory / "apns-cert-key.pem"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.server = ThreadedServer(self._app(), certfile=cert_file, keyfile=key_file, h2_only=True)
        self.pushed: list[Pushed] = []
        self.rejected: list[str] = []
        self.failures: dict[str, list[tuple[int, str]]] = {}
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    def start(self) -> ApnsStandIn:
        self.key_file.write_bytes(self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def fail(self, token: str, *answers: tuple[int, str]) -> None:
        with self._lock:
            self.failures.setdefault(token, []).extend(answers)

    def delivered(self, token: str) -> list[Pushed]:
        return [p for p in list(self.pushed) if p.token == token and "failedWith" not in p.payload]

    def attempts(self, token: str) -> int:
        return len([p for p in list(self.pushed) if p.token == token])

    def _check(self, request: Request[Any, Any, Any]) -> str | None:
        """Why the request is refused (a 403 reason), or None."""
        if request.scope.get("http_version") != "2":
            return "NotHTTP2"
        auth = request.headers.get("authorization", "")
        if not auth.startswith("bearer "):
            return "MissingProviderToken"
        try:
            if jwt.get_unverified_header(auth[7:]).get("kid") != self.key_id:
                raise jwt.InvalidTokenError("kid")
            claims = jwt.decode(auth[7:], self.key.public_key(), algorithms=["ES256"], issuer=TEAM_ID,
                                options={"require": ["iss", "iat"]})
            if not time.time() - 3600 <= float(claims["iat"]) <= time.time() + 60:
                return "ExpiredProviderToken"
        except jwt.InvalidTokenError:
            return "InvalidProviderToken"
        if request.headers.get("apns-topic") != TOPIC:
            return "TopicDisallowed"
        if request.headers.get("apns-push-type") != "alert":
            return "InvalidPushType"
        return None

    def _app(self) -> Litestar:
        @post("/3/device/{token:str}", status_code=200)
        async def push(token: FromPath[str], request: Request[Any, Any, Any]) -> Response[Any]:
            apns_id = str(uuid.uuid4())
            refusal = self._check(request)
            if refusal is not None:
                self.rejected.append(refusal)
                return Response({"reason": refusal}, status_code=403, headers={"apns-id": apns_id})
            payload = await request.json()
            with self._lock:
                script = self.failures.get(token) or []
                failure = script.pop(0) if script else None
            headers = {k: v for k, v in request.headers.items() if k.startswith("apns-")}
            if failure is not None:
                self.pushed.append(Pushed(token, {"failedWith": failure[0]}, headers, "2"))
                body: dict[str, Any] = {"reason": failure[1]}
                if failure[0] == 410:
                    body["timestamp"] = int(time.time() * 1000)
                return Response(body, status_code=failure[0], headers={"apns-id": apns_id})
            self.pushed.append(Pushed(token, payload, headers, str(request.scope.get("http_version"))))
            return Response(b"", status_code=200, headers={"apns-id": apns_id})

        return Litestar([push], openapi_config=None, logging_config=None)
