"""One nats-server and one api process (auth off, no rate limit, fast keep-alives) per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.push.timing import PING_SECONDS
from tests.support.nats import NatsServer
from tests.support.services import Api


@pytest.fixture(scope="module")
def api(system_nats: NatsServer, module_tmp: Path) -> Iterator[Api]:
    service = Api(system_nats.url, module_tmp, ATHENIC_RATE_LIMIT_PER_MINUTE="0",
                  ATHENIC_WS_PING_SECONDS=str(PING_SECONDS)).start()
    try:
        yield service
    finally:
        service.terminate()
