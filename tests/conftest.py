from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nats import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh JetStream server per test (it starts in ~20 ms)."""
    server = NatsServer(tmp_path / "jetstream").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("module")


@pytest.fixture(scope="module")
def system_nats(module_tmp: Path) -> Iterator[NatsServer]:
    """One nats-server a whole test module shares (tests keep apart by their own clientIds)."""
    server = NatsServer(module_tmp / "jetstream").start()
    try:
        yield server
    finally:
        server.stop()
