"""A YAML file of SandboxQuota objects (one machine: ``athenic dev --quotas``, ``athenic quotas
apply``), validated as the cluster would and published as the operator does."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from nats.js.kv import KeyValue

from athenic.shared.policy import SandboxPolicy
from athenic.shared.quotas.bucket import PublishReport, publish_policies
from athenic.shared.quotas.rules import resolve
from athenic.shared.quotas.schema import Quota, quota_of


class QuotaFileError(ValueError):
    """The file holds something the cluster would refuse; the message lists every problem."""


def _documents(path: Path) -> list[Any]:
    try:
        docs = [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise QuotaFileError(f"{path}: {exc}") from exc
    flat: list[Any] = []
    for doc in docs:  # `kubectl get sbq -o yaml` writes a List
        if isinstance(doc, Mapping) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            flat.extend(doc["items"])
        else:
            flat.append(doc)
    return flat


def load_quota_objects(path: str | Path) -> list[Quota]:
    """Every SandboxQuota of a multi-document YAML file, validated as the cluster would
    (schema, strict fields, one quota per tenant); raises ``QuotaFileError`` listing every
    problem, so a file is either wholly accepted or not at all."""
    path = Path(path)
    quotas: list[Quota] = []
    problems: list[str] = []
    for position, doc in enumerate(_documents(path), start=1):
        if not isinstance(doc, Mapping):
            problems.append(f"document {position}: not a mapping")
            continue
        quota = quota_of(doc, position=position, strict_fields=True, default_name=f"document-{position}")
        if any(other.ref == quota.ref for other in quotas):
            problems.append(f"SandboxQuota {quota.ref} (document {position}): the same name appears twice")
            continue
        quotas.append(quota)
    resolution = resolve(quotas)
    for quota in quotas:
        standing = resolution.standings[quota.ref]
        if not standing.active:
            problems.append(f"SandboxQuota {quota.ref} (document {quota.position}): {standing.message}")
    if problems:
        raise QuotaFileError(f"{path}: " + "\n  ".join(["refused:", *problems]))
    return quotas


def load_quotas(path: str | Path) -> list[SandboxPolicy]:
    """The policies of a YAML file of SandboxQuota objects (see ``load_quota_objects``)."""
    return resolve(load_quota_objects(path)).policies


async def load_and_publish(kv: KeyValue, path: str | Path) -> PublishReport:
    """``athenic dev --quotas FILE``: validate the whole file, then publish it."""
    policies = await asyncio.to_thread(load_quotas, path)
    return await publish_policies(kv, policies)
