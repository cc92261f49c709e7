"""One nats-server and three orchestrator processes per module (the real local sandbox);
each test governs its own tenant, so nothing one test does reaches another."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.orchestrator.quota.replicas import QUOTA_ENV, start_all
from tests.orchestrator.quota.traffic import QuotaTraffic
from tests.support.nats import NatsServer
from tests.support.services import Orchestrator


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
