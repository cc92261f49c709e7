"""One nats-server and three orchestrator processes per module (the real local sandbox);
each test governs its own tenant, so nothing one test does reaches another."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.orchestrator.quota.traffic import QuotaTraffic
from tests.support.nats import NatsServer
from tests.support.services import Orchestrator

# Short leases and re-checks keep the tests quick; production defaults are 15 s and 2 s.
QUOTA_ENV = {"ATHENIC_LEASE_TTL_SECONDS": "3", "ATHENIC_QUOTA_RECHECK_SECONDS": "0.5"}


def start_all(services: list[Orchestrator], timeout: float = 60) -> None:
    """Start the processes together, then wait until each consumes (they share 2 cores)."""
    for service in services:
        service.start(wait_ready=False)
    deadline = time.monotonic() + timeout
    for service in services:
        while "orchestrator consuming" not in service.log():
            assert service.proc is not None and service.proc.poll() is None, f"exited:\n{service.log()}"
            assert time.monotonic() < deadline, f"not consuming:\n{service.log()}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def replicas(system_nats: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Orchestrator]]:
    logs = tmp_path_factory.mktemp("replicas")
    services = [Orchestrator(system_nats.url, logs, ATHENIC_CONCURRENCY="4", **QUOTA_ENV) for _ in range(3)]
    try:
        start_all(services)
        yield services
    finally:
        for service in services:
            service.terminate()


@pytest.fixture
async def traffic(replicas: list[Orchestrator], system_nats: NatsServer) -> AsyncIterator[QuotaTraffic]:
    connection = await QuotaTraffic.connect(system_nats.url)
    try:
        yield connection
    finally:
        await connection.close()
