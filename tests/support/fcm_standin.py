"""A stand-in of FCM HTTP v1 on loopback, with Google's OAuth2 JWT-bearer token exchange.

``POST /token`` takes the service account's signed assertion (RFC 7523), verifies it with
the public half of the test key (RS256, ``kid``, ``iss``, ``aud`` = Google's token endpoint,
the FCM scope) and issues an access token; ``POST /v1/projects/{project}/messages:send`` verifies
that bearer token and records the message. Per device token a script of failures is
answered first (``fail``): 503 UNAVAILABLE, 404 UNREGISTERED...
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar import Litestar, Request, Response, post
from litestar.params import FromPath

from tests.support.asgi_thread import ThreadedServer

PROJECT = "athenic-test"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
# Google's token endpoint is the assertion's audience wherever the key's token_uri sends it
AUDIENCE = "https://oauth2.googleapis.com/token"
UNREGISTERED = (404, "NOT_FOUND", "UNREGISTERED")
UNAVAILABLE = (503, "UNAVAILABLE", None)


@dataclass
class Sent:
    token: str
    message: dict[str, Any]
    at: float


def _error(status: int, grpc_status: str, code: str | None) -> Response[Any]:
    error: dict[str, Any] = {"code": status, "message": f"stand-in says {grpc_status}", "status": grpc_status}
    if code:
        error["details"] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]
    return Response({"error": error}, status_code=status)


class FcmStandIn:
    def __init__(self, directory: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = secrets.token_hex(8)
        self.email = f"notifier@{PROJECT}.iam.gserviceaccount.com"
        self.server = ThreadedServer(self._app())
        self.credentials_file = directory / "fcm-service-account.json"
        self.sent: list[Sent] = []
        self.exchanges = 0
        self.rejected: list[str] = []
        self.failures: dict[str, list[tuple[int, str, str | None]]] = {}
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def start(self) -> FcmStandIn:
        self.server.start()
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        self.credentials_file.write_text(json.dumps({
            "type": "service_account", "project_id": PROJECT, "private_key_id": self.key_id,
            "private_key": pem, "client_email": self.email, "client_id": "1234567890",
            "token_uri": f"{self.base_url}/token",
        }))
        return self

    def stop(self) -> None:
        self.server.stop()

    def fail(self, token: str, *answers: tuple[int, str, str | None]) -> None:
        """Answer the next messages to ``token`` with these errors, in order."""
        with self._lock:
            self.failures.setdefault(token, []).extend(answers)

    def to(self, token: str) -> list[Sent]:
        return [sent for sent in list(self.sent) if sent.token == token]

    def _exchange(self, assertion: str, grant_type: str) -> Response[Any]:
        try:
            if grant_type != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                raise jwt.InvalidTokenError(f"grant_type {grant_type}")
            header = jwt.get_unverified_header(assertion)
            if header.get("kid") != self.key_id:
                raise jwt.InvalidTokenError("unknown kid")
            claims = jwt.decode(assertion, self.key.public_key(), algorithms=["RS256"], audience=AUDIENCE,
                                issuer=self.email, options={"require": ["exp", "iat", "iss", "aud"]})
            if SCOPE not in str(claims.get("scope", "")).split():
                raise jwt.InvalidTokenError("scope")
        except jwt.InvalidTokenError as exc:
            self.rejected.append(f"assertion: {exc}")
            return Response({"error": "invalid_grant", "error_description": str(exc)}, status_code=400)
        access = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[access] = time.time() + 3600
            self.exchanges += 1
        return Response({"access_token": access, "expires_in": 3600, "token_type": "Bearer"})

    def _send(self, project: str, bearer: str, body: dict[str, Any]) -> Response[Any]:
        expiry = self._tokens.get(bearer.removeprefix("Bearer "))
        if not bearer.startswith("Bearer ") or expiry is None or expiry < time.time():
            self.rejected.append("bearer")
            return _error(401, "UNAUTHENTICATED", None)
        message = body.get("message", {})
        token = message.get("token", "")
        if project != PROJECT or not token:
            return _error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
        with self._lock:
            script = self.failures.get(token) or []
            failure = script.pop(0) if script else None
        if failure is not None:
            self.sent.append(Sent(token, {"failedWith": failure[0]}, time.time()))
            return _error(*failure)
        self.sent.append(Sent(token, message, time.time()))
        return Response({"name": f"projects/{project}/messages/{secrets.token_hex(8)}"})

    def _app(self) -> Litestar:
        @post("/token", status_code=200)
        async def token(request: Request[Any, Any, Any]) -> Response[Any]:
            form = await request.form()
            return self._exchange(str(form.get("assertion", "")), str(form.get("grant_type", "")))

        @post("/v1/projects/{project:str}/messages:send", status_code=200)
        async def send(project: FromPath[str], request: Request[Any, Any, Any]) -> Response[Any]:
            return self._send(project, request.headers.get("authorization", ""), await request.json())

        return Litestar([token, send], openapi_config=None, logging_config=None)

    def attempts(self, token: str) -> int:
        return len(self.to(token))

    def delivered(self, token: str) -> list[dict[str, Any]]:
        return [sent.message for sent in self.to(token) if "failedWith" not in sent.message]
