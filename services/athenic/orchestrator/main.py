"""`athenic-orchestrator`: consume accepted messages until SIGTERM, then drain."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from athenic.health_server import bind_health_socket, health_then_broker
from athenic.orchestrator.planners.factory import make_planner
from athenic.orchestrator.policies import PolicyCache
from athenic.orchestrator.quota import make_gate
from athenic.orchestrator.sandbox.factory import make_sandbox
from athenic.orchestrator.sandbox.kernel_routing import route_kernels
from athenic.orchestrator.settings import OrchestratorSettings, QuotaSettings
from athenic.orchestrator.worker import Worker
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.logging import get_logger
from athenic.shared.settings import FileSettings, NatsSettings, load
from athenic.shared.startup import run_until_signalled, settle_heap, start

log = get_logger(__name__)
STALLED_AFTER_SECONDS = 120.0


async def serve(settings: OrchestratorSettings, nats_settings: NatsSettings, stop: asyncio.Event,
                quota_settings: QuotaSettings | None = None, file_settings: FileSettings | None = None) -> None:
    quota_settings = quota_settings or QuotaSettings()
    file_settings = file_settings or load(FileSettings)
    health_socket = bind_health_socket(settings.athenic_health_host, settings.athenic_health_port,
                                       "ATHENIC_HEALTH_PORT")
    log.info("health server listening", host=settings.athenic_health_host,
             port=health_socket.getsockname()[1])
    async with AsyncExitStack() as stack:
        stack.callback(health_socket.close)
        broker = Broker(nats_settings, name="athenic-orchestrator")
        stack.push_async_callback(broker.close)
        await broker.start()
        worker: Worker | None = None
        loop = asyncio.get_running_loop()

        def alive() -> bool:
            return worker is None or loop.time() - worker.alive_at < STALLED_AFTER_SECONDS

        if not await health_then_broker(stack, broker, alive, health_socket, stop):
            return
        planner = make_planner(settings)
        stack.push_async_callback(planner.aclose)
        policies = PolicyCache(broker.bucket(names.POLICIES_BUCKET))
        await policies.start()
        stack.push_async_callback(policies.aclose)
        # closed after the worker drained, while policies and the broker are still there
        sandbox = await route_kernels(make_sandbox(settings, broker=broker, policies=policies), broker)
        stack.push_async_callback(sandbox.aclose)
        gate = await make_gate(broker, policies, quota_settings)
        stack.push_async_callback(gate.aclose)
        worker = Worker(settings, nats_settings, broker, planner, sandbox, policies, gate, file_settings)
        settle_heap()
        await worker.run(stop)


def main() -> None:
    settings, nats_settings, quota_settings, file_settings = start(
        "athenic-orchestrator", "orchestrator",
        lambda: (load(OrchestratorSettings), load(NatsSettings), load(QuotaSettings), load(FileSettings)))

    async def run(stop: asyncio.Event) -> None:
        log.info("orchestrator starting", nats=nats_settings.servers, sandbox=settings.sandbox_backend,
                 planner=settings.planner, health_port=settings.athenic_health_port)
        await serve(settings, nats_settings, stop, quota_settings, file_settings)
        log.info("orchestrator stopped")

    run_until_signalled("athenic-orchestrator", run)


if __name__ == "__main__":
    main()
