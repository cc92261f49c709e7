"""One nats-server and one api process per test module; tests use their own clientIds.

Tests that stop the broker start their own (``nats_server`` + ``Api``), so nothing they do
reaches another test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.nats import NatsServer
from tests.support.services import Api, Service


@pytest.fixture(scope="module")
def api(system_nats: NatsServer, module_tmp: Path) -> Iterator[Api]:
    service = Api(system_nats.url, module_tmp).start()
    try:
        yield service
    finally:
        service.terminate()


@pytest.fixture(scope="module")
def client(api: Api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=10) as http:
        yield http


@pytest.fixture
def spawned() -> Iterator[list[Service]]:
    """Services a test starts itself; whatever happens, none outlives the test."""
    services: list[Service] = []
    try:
        yield services
    finally:
        for service in reversed(services):
            service.kill()
