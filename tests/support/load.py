"""What the drills do as users: post many messages, then read every answer back over HTTP.

A POST answered 200 is an accepted message (its clientId and ``x-request-id`` are kept);
a 503 or a dropped connection is a message the user knows was not accepted and would retry.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats

from athenic.shared import names
from athenic.shared.policy import SandboxPolicy, encode_policy, policy_key

FINAL = frozenset({"completed", "failed", "cancelled"})


def allow_executions(nats_urls: list[str], concurrent: int = 64, per_minute: int = 1_000_000) -> None:
    """A default sandbox policy roomy enough that a drill measures failures, not the quota.

    Written where the operator would write it (the policies bucket), after a service has
    provisioned the topology; orchestrators pick it up through their watch.
    """

    async def put() -> None:
        nc = await nats.connect(servers=nats_urls)
        try:
            kv = await nc.jetstream().key_value(names.POLICIES_BUCKET)
            policy = SandboxPolicy(tenant="*", max_concurrent_executions=concurrent,
                                   max_executions_per_minute=per_minute)
            await kv.put(policy_key(policy.tenant), encode_policy(policy))
        finally:
            await nc.close()

    asyncio.run(put())


@dataclass(frozen=True)
class AcceptedPost:
    index: int
    message: str
    client_id: str
    request_id: str


@dataclass
class Load:
    """Posts ``target`` accepted messages from ``workers`` threads (each message its own clientId)."""

    base_url: str
    target: int
    message_for: Callable[[int], str]
    workers: int = 8
    accepted: list[AcceptedPost] = field(default_factory=list)
    unavailable: int = 0
    dropped: int = 0
    unexpected: list[tuple[int, str]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # how long each POST took to answer
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0
    _in_flight: int = 0
    _thread: threading.Thread | None = None

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.accepted)

    def _take(self) -> int | None:
        with self._lock:
            # one attempt in flight per missing acceptance, so the target is met exactly
            if len(self.accepted) + self._in_flight >= self.target:
                return None
            self._in_flight += 1
            index = self._next
            self._next += 1
            return index

    def _worker(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while (index := self._take()) is not None:
                message = self.message_for(index)
                client_id = f"drill-{index}"
                sent = time.monotonic()
                try:
                    response = client.post("/api/chat", json={"message": message}, headers={"x-client-id": client_id})
                except httpx.TransportError:
                    with self._lock:
                        self.dropped += 1
                        self._in_flight -= 1
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self._in_flight -= 1
                    self.seconds.append(time.monotonic() - sent)
                    if response.status_code == 200:
                        self.accepted.append(AcceptedPost(index, message, client_id, response.headers["x-request-id"]))
                    elif response.status_code == 503:
                        self.unavailable += 1
                    else:
                        self.unexpected.append((response.status_code, response.text))
                if response.status_code != 200:
                    time.sleep(0.05)  # what a client does before it retries

    def start(self) -> Load:
        def run() -> None:
            with ThreadPoolExecutor(self.workers) as pool:
                for future in [pool.submit(self._worker) for _ in range(self.workers)]:
                    future.result()

        self._thread = threading.Thread(target=run, name="drill-load", daemon=True)
        self._thread.start()
        return self

    def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count:
            assert time.monotonic() < deadline, f"only {self.count} of {count} messages accepted"
            assert self._thread is not None and (self._thread.is_alive() or self.count >= count)
            time.sleep(0.02)

    def join(self, timeout: float = 180) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the load did not finish: {self.count} accepted"

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0

    def summary(self) -> str:
        return (f"{len(self.accepted)} accepted, {self.unavailable} answered 503, "
                f"{self.dropped} connections dropped, {len(self.unexpected)} other answers; "
                f"POST p50 {self.percentile(0.5) * 1000:.0f} ms, p99 {self.percentile(0.99) * 1000:.0f} ms, "
                f"max {max(self.seconds, default=0) * 1000:.0f} ms")


def read_answers(base_url: str, accepted: list[AcceptedPost], timeout: float = 120,
                 workers: int = 8) -> dict[str, dict[str, Any]]:
    """Poll every accepted message's conversation until its own final answer is there.

    Returns the final state per request id; those missing at the deadline are absent.
    """
    answers: dict[str, dict[str, Any]] = {}
    waiting = list(accepted)
    deadline = time.monotonic() + timeout

    def read(client: httpx.Client, item: AcceptedPost) -> tuple[AcceptedPost, dict[str, Any] | None]:
        try:
            response = client.get(f"/api/chat/response/{item.client_id}")
        except httpx.TransportError:
            return item, None
        if response.status_code != 200:
            return item, None
        state: dict[str, Any] = response.json()
        if state["requestId"] == item.request_id and state["status"] in FINAL:
            return item, state
        return item, None

    with httpx.Client(base_url=base_url, timeout=10, limits=httpx.Limits(max_connections=workers)) as client, \
            ThreadPoolExecutor(workers) as pool:
        while waiting and time.monotonic() < deadline:
            still: list[AcceptedPost] = []
            for item, state in pool.map(lambda item: read(client, item), waiting):
                if state is None:
                    still.append(item)
                else:
                    answers[item.request_id] = state
            waiting = still
            if waiting:
                time.sleep(0.5)
    return answers
