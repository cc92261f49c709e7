"""`athenic quotas`: publish and read sandbox policies without Kubernetes.

For anyone who runs the services without the operator: ``apply FILE`` validates a YAML file of
``SandboxQuota`` objects exactly as the operator and ``athenic dev --quotas`` do, then makes the
policies bucket hold exactly the file's policies (a tenant absent from the file falls back to
the default policy). ``list`` prints what the orchestrators enforce now.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client

from athenic.shared import names
from athenic.shared.broker import connect_options
from athenic.shared.policy import SandboxPolicy, policy_decoder
from athenic.shared.quotas import PublishReport, QuotaFileError, load_and_publish, load_quotas, read_bucket
from athenic.shared.settings import NatsSettings, load
from athenic.shared.timeouts import within
from athenic.shared.topology import ensure_topology

_COLUMNS = ("tenant", "maxConcurrentExecutions", "maxExecutionsPerMinute", "maxExecutionSeconds",
            "memoryMiB", "allowInternet", "e2bTemplate", "sandboxIdleSeconds", "onExceed")


def _settings(nats_url: str | None) -> NatsSettings:
    env = dict(os.environ)
    if nats_url:
        env["NATS_URL"] = nats_url
    return load(NatsSettings, env)


async def _connect(settings: NatsSettings, timeout: float = 5.0) -> Client:
    async def quiet(_: Exception) -> None:  # nats-py would print a traceback per attempt
        return None

    options = {**connect_options(settings, "athenic-quotas"), "error_cb": quiet}
    try:  # nats-py retries a first connect for ever: give up after ``timeout``
        return await within(nats.connect(**options), timeout)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        why = f"no server answered within {timeout:.0f} s" if isinstance(exc, TimeoutError) else str(exc)
        raise SystemExit(f"athenic quotas: cannot reach NATS at {settings.nats_url} ({why}); "
                         "set NATS_URL or --nats-url") from exc


async def publish_file(path: Path, settings: NatsSettings) -> PublishReport:
    """Validate ``path`` and publish its policies as the operator would."""
    nc = await _connect(settings)
    try:
        buckets = await ensure_topology(nc.jetstream(), settings)
        return await load_and_publish(buckets[names.POLICIES_BUCKET], path)
    finally:
        await nc.close()


def summary(report: PublishReport) -> str:
    text = f"{len(report.written)} written, {len(report.unchanged)} unchanged, {len(report.removed)} removed"
    if report.conflicts:
        text += f", {len(report.conflicts)} changed by someone else meanwhile and left alone: " + \
            ", ".join(sorted(report.conflicts))
    return text


async def read_policies(settings: NatsSettings) -> list[SandboxPolicy]:
    nc = await _connect(settings)
    try:
        buckets = await ensure_topology(nc.jetstream(), settings)
        stored = await read_bucket(buckets[names.POLICIES_BUCKET])
    finally:
        await nc.close()
    return sorted((policy_decoder.decode(item.value) for item in stored.values()), key=lambda p: p.tenant)


def apply(args: argparse.Namespace) -> None:
    try:  # refuse a bad file before touching the broker
        load_quotas(args.file)
    except QuotaFileError as exc:
        print(f"athenic quotas: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    report = asyncio.run(publish_file(Path(args.file), _settings(args.nats_url)))
    print(f"athenic quotas: {args.file}: {summary(report)}")
    if report.conflicts:
        raise SystemExit(1)


def list_policies(args: argparse.Namespace) -> None:
    policies = asyncio.run(read_policies(_settings(args.nats_url)))
    rows = [msgspec.to_builtins(policy) for policy in policies]
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("no policies published: every tenant runs under the built-in default")
        return
    table = [list(_COLUMNS), *[["-" if row.get(c) is None else str(row.get(c)) for c in _COLUMNS] for row in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    quotas = sub.add_parser("quotas", help="publish or list sandbox policies in NATS (no Kubernetes needed)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = quotas.add_subparsers(dest="verb", required=True)
    nats_help = "the broker (default: NATS_URL, else nats://127.0.0.1:4222; NATS_USER/NATS_PASSWORD/" \
                "NATS_CREDS_FILE as for the services)"
    apply_p = verbs.add_parser("apply", help="validate a YAML file of SandboxQuota objects and publish exactly "
                                              "its policies (tenants not in the file fall back to the default)")
    apply_p.add_argument("file")
    apply_p.add_argument("--nats-url", help=nats_help)
    apply_p.set_defaults(func=apply)
    list_p = verbs.add_parser("list", help="print the policies the orchestrators enforce")
    list_p.add_argument("--nats-url", help=nats_help)
    list_p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    list_p.set_defaults(func=list_policies)
