from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from athenic.orchestrator.policies import PolicyCache
from athenic.orchestrator.sandbox.e2b import E2BSandbox
from athenic.orchestrator.sandbox.isolation import find_bubblewrap
from athenic.orchestrator.sandbox.local import LocalSandbox
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.settings import NatsSettings, load
from tests.orchestrator.sandbox.backends import OUTPUT_LIMIT, PYTHON_ENV, _unique_tmp_mib, e2b_backend
from tests.support.e2b_standin import E2BStandIn
from tests.support.nats import NatsServer


@pytest.fixture
async def local_sandbox() -> AsyncIterator[LocalSandbox]:
    """The local backend as the orchestrator runs it: isolated when bubblewrap works here."""
    backend = LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, tmp_mib=_unique_tmp_mib(), max_processes=32,
                           python_env=PYTHON_ENV)
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
async def isolated_sandbox(local_sandbox: LocalSandbox) -> LocalSandbox:
    """The local backend, for tests of what only bubblewrap provides."""
    if not local_sandbox.isolated:
        _, why = find_bubblewrap(None)
        pytest.skip(f"needs bubblewrap for isolation: {why} (`make bubblewrap` installs it as root with apt)")
    return local_sandbox


@pytest.fixture
async def bare_sandbox() -> AsyncIterator[LocalSandbox]:
    """The degraded local backend (rlimits alone), as it runs where bubblewrap is missing."""
    backend = LocalSandbox(output_limit_bytes=OUTPUT_LIMIT, tmp_mib=16, max_processes=32,
                           bwrap_path="/nonexistent/bwrap", python_env=PYTHON_ENV)
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
async def standin(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[E2BStandIn]:
    """E2B's endpoints on loopback; the SDK finds them through its own environment variables."""
    async with E2BStandIn(accepted_keys={"e2b_test_key"}) as server:
        monkeypatch.setenv("E2B_API_URL", server.url)
        monkeypatch.setenv("E2B_SANDBOX_URL", server.url)
        monkeypatch.delenv("E2B_DEBUG", raising=False)
        yield server


@pytest.fixture
async def broker(nats_server: NatsServer) -> AsyncIterator[Broker]:
    """A service's broker connection to a real nats-server, its topology provisioned."""
    connection = Broker(load(NatsSettings, {"NATS_URL": nats_server.url}), name="athenic-test")
    await connection.start()
    await connection.wait_ready(30)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def policies(broker: Broker) -> AsyncIterator[PolicyCache]:
    """The orchestrator's view of the policies bucket (tests publish into it)."""
    cache = PolicyCache(broker.bucket(names.POLICIES_BUCKET))
    await cache.start()
    try:
        yield cache
    finally:
        await cache.aclose()


@pytest.fixture
async def e2b(standin: E2BStandIn, broker: Broker) -> AsyncIterator[E2BSandbox]:
    backend = e2b_backend(broker)
    try:
        yield backend
    finally:
        await backend.aclose()
