"""Test signing keys, tokens signed with them, and a Supabase-shaped JWKS served over HTTP on loopback.

The api fetches ``<SUPABASE_URL>/auth/v1/.well-known/jwks.json`` exactly as it would from a
Supabase project; tests rotate the published keys and count the fetches.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

JWKS_PATH = "/auth/v1/.well-known/jwks.json"
AUDIENCE = "authenticated"


@dataclass
class SigningKey:
    kid: str
    alg: str  # RS256 | ES256
    private: Any = field(repr=False)

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        data: dict[str, Any] = (RSAAlgorithm.to_jwk(public, as_dict=True) if self.alg == "RS256"
                                else ECAlgorithm.to_jwk(public, as_dict=True))
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig", "key_ops": ["verify"]}

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": kid or self.kid})


def rsa_key(kid: str | None = None) -> SigningKey:
    return SigningKey(kid or f"rsa-{uuid.uuid4().hex[:8]}", "RS256",
                      rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str | None = None) -> SigningKey:
    return SigningKey(kid or f"ec-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1()))


def claims(sub: str, *, aud: str = AUDIENCE, expires_in: float = 3600, iss: str | None = None,
           **extra: Any) -> dict[str, Any]:
    """What a Supabase access token carries (the parts the api reads)."""
    now = int(time.time())
    body: dict[str, Any] = {"sub": sub, "aud": aud, "exp": now + int(expires_in), "iat": now,
                            "role": "authenticated", **extra}
    if iss is not None:
        body["iss"] = iss
    return body


def hs256(secret: str, body: dict[str, Any]) -> str:
    return jwt.encode(body, secret, algorithm="HS256")


class JwksServer:
    """A loopback HTTP server answering the JWKS route with whatever keys are published now."""

    def __init__(self, keys: list[SigningKey] | None = None) -> None:
        self._document: bytes = b""
        self.fetches = 0
        self.publish(keys or [])
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                server.fetches += 1
                body = server._document
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """What SUPABASE_URL is set to."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def publish(self, keys: list[SigningKey]) -> None:
        self._document = json.dumps({"keys": [key.jwk() for key in keys]}).encode()

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
