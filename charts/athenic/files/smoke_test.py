"""`helm test` for an Athenic release: the api is alive, accepts a chat message, and answers it.

Runs inside the Athenic image (standard library only) against the api Service. Environment:
ATHENIC_API_URL (http://<release>-api:3000), ATHENIC_TEST_TOKEN_FILE or ATHENIC_TEST_TOKEN (a
bearer token, with auth on: the file is the chart's way, a mounted Secret),
ATHENIC_EXPECT_UNAUTHORIZED (1: auth is on and no token was given; an anonymous post must get
401), ATHENIC_ANSWER_TIMEOUT (seconds to wait for the answer). Exit status 0 = passed.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any


def call(method: str, url: str, body: dict[str, Any] | None = None, token: str = "") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - the URL is ours
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, f"unreachable: {exc}"
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def check(condition: bool, message: str) -> None:
    if not condition:
        print(f"FAIL: {message}", flush=True)
        raise SystemExit(1)
    print(f"ok: {message}", flush=True)


def main() -> int:
    base = os.environ.get("ATHENIC_API_URL", "http://127.0.0.1:3000").rstrip("/")
    token = os.environ.get("ATHENIC_TEST_TOKEN", "")
    if os.environ.get("ATHENIC_TEST_TOKEN_FILE"):
        with open(os.environ["ATHENIC_TEST_TOKEN_FILE"], encoding="utf-8") as handle:
            token = handle.read().strip()
    expect_401 = os.environ.get("ATHENIC_EXPECT_UNAUTHORIZED", "") == "1"
    timeout = float(os.environ.get("ATHENIC_ANSWER_TIMEOUT", "90"))

    status, body = call("GET", f"{base}/api/health")
    check(status == 200 and isinstance(body, dict) and body.get("status") == "healthy",
          f"GET /api/health -> {status} {body}")

    message = "helm test: print the sum of 2 and 3"
    status, body = call("POST", f"{base}/api/chat", {"message": message}, token)
    if expect_401:
        check(status == 401, f"anonymous POST /api/chat is refused with 401 (auth is on) -> {status}")
        return 0
    check(status == 200 and isinstance(body, dict) and body.get("success") is True and bool(body.get("clientId")),
          f"POST /api/chat accepted -> {status} {body}")
    client_id = str(body["clientId"])

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        status, last = call("GET", f"{base}/api/chat/response/{client_id}", token=token)
        answer = last.get("lastResponse") if status == 200 and isinstance(last, dict) else None
        if isinstance(answer, dict) and answer.get("status") not in ("pending", "processing"):
            check(answer.get("clientId") == client_id, "the answer belongs to our clientId")
            check(answer.get("status") != "failed", f"the message was answered: {answer.get('message')!r}")
            return 0
        time.sleep(1)
    check(False, f"no answer within {timeout:.0f}s; last GET /api/chat/response -> {status} {last}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
