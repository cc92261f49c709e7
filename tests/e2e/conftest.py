from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.nats import NatsServer
from tests.support.services import Api


@pytest.fixture
def api(nats_server: NatsServer, tmp_path: Path) -> Iterator[Api]:
    service = Api(nats_server.url, tmp_path).start()
    try:
        yield service
    finally:
        service.terminate()


@pytest.fixture
def client(api: Api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=10) as http:
        yield http
