"""The SandboxQuota operator: registers the handlers (each delegates to its module) and runs kopf.

``athenic-operator`` reads ``NATS_*`` and ``ATHENIC_OPERATOR_*`` from the environment
(see ``athenic_operator.settings``), serves a liveness probe on ``/healthz`` and peers with
its other replicas so only one acts at a time.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import kopf

from athenic.shared.quotas import Quota
from athenic.shared.settings import NatsSettings, load
from athenic.shared.startup import start
from athenic_operator.handlers.accept import accept
from athenic_operator.handlers.cleanup import cleanup
from athenic_operator.handlers.login import login
from athenic_operator.handlers.probe import nats_connected
from athenic_operator.handlers.report_usage import report_usage
from athenic_operator.handlers.startup import startup
from athenic_operator.handlers.withdraw import withdraw
from athenic_operator.kopf_internals import detect_own_id
from athenic_operator.quota_index import index_entry
from athenic_operator.resource import RESOURCE
from athenic_operator.settings import OperatorSettings

Kwargs = Any


def build_registry(
    operator_settings: OperatorSettings, nats_settings: NatsSettings, identity: str,
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    on = kopf.on

    @on.startup(registry=registry)
    async def _startup(**kwargs: Kwargs) -> None:
        await startup(operator_settings=operator_settings, nats_settings=nats_settings, identity=identity,
                      **_pick(kwargs, ("settings", "memo", "logger")))

    @on.cleanup(registry=registry)
    async def _cleanup(memo: Any, **_: Kwargs) -> None:
        await cleanup(memo=memo)

    @on.login(registry=registry)
    def _login(**kwargs: Kwargs) -> kopf.ConnectionInfo | None:
        return login(operator_settings=operator_settings, **kwargs)

    @on.probe(id="nats", registry=registry)
    def _probe(**kwargs: Kwargs) -> bool:
        return nats_connected(**kwargs)

    @kopf.index(*RESOURCE, id="quotas", registry=registry)
    def _quotas(body: kopf.Body, **_: Kwargs) -> dict[str, Quota]:
        return index_entry(body)

    @on.create(*RESOURCE, id="accept", registry=registry)
    async def _create(**kwargs: Kwargs) -> None:
        await accept(cause="create", **_pick(kwargs, ACCEPT_ARGS))

    @on.update(*RESOURCE, id="accept", registry=registry)
    async def _update(**kwargs: Kwargs) -> None:
        await accept(cause="update", **_pick(kwargs, (*ACCEPT_ARGS, "old")))

    @on.resume(*RESOURCE, id="accept", registry=registry)
    async def _resume(**kwargs: Kwargs) -> None:
        await accept(cause="resume", **_pick(kwargs, ACCEPT_ARGS))

    @on.delete(*RESOURCE, id="withdraw", registry=registry)
    async def _delete(**kwargs: Kwargs) -> None:
        await withdraw(**_pick(kwargs, ("body", "memo", "quotas", "logger")))

    @kopf.timer(*RESOURCE, id="usage", registry=registry,
                interval=operator_settings.athenic_operator_usage_interval_seconds,
                initial_delay=operator_settings.athenic_operator_usage_interval_seconds)
    async def _usage(**kwargs: Kwargs) -> None:
        await report_usage(**_pick(kwargs, ACCEPT_ARGS))

    return registry


ACCEPT_ARGS = ("body", "meta", "status", "patch", "memo", "quotas", "logger")


def _pick(kwargs: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: kwargs[key] for key in keys if key in kwargs}


async def run(
    operator_settings: OperatorSettings,
    nats_settings: NatsSettings,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run the operator until stopped (SIGTERM/SIGINT, ``stop_flag``, or cancellation)."""
    op = operator_settings
    port = op.athenic_operator_liveness_port
    standalone = op.athenic_operator_standalone
    identity = detect_own_id(manual=False)  # POD_ID when set (the chart sets it), else user@host/...
    settings = kopf.OperatorSettings()
    # Watching named namespaces, kopf needs no cluster-wide reads (of namespaces, of CRDs): with
    # a Role in each namespace and nothing else, it takes the names as they are.
    settings.scanning.disabled = not op.clusterwide
    await kopf.operator(
        registry=build_registry(op, nats_settings, identity),
        identity=identity,
        settings=settings,
        memo=kopf.Memo(),
        clusterwide=op.clusterwide,
        namespaces=op.namespaces,
        standalone=standalone,
        # A peering name makes peering mandatory: without the peering object kopf refuses to
        # start rather than risk two active replicas. Distinct priorities pick the active one.
        peering_name=None if standalone else op.athenic_operator_peering,
        priority=op.athenic_operator_priority if op.athenic_operator_priority is not None
        else random.randint(1, 2**30),  # noqa: S311 - a tie-breaker, not a secret
        liveness_endpoint=f"http://0.0.0.0:{port}/healthz" if port else None,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def main() -> None:
    nats_settings, operator_settings = start("athenic-operator", "operator",
                                             lambda: (load(NatsSettings), load(OperatorSettings)))
    asyncio.run(run(operator_settings, nats_settings))


if __name__ == "__main__":
    main()
