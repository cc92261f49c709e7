"""SandboxQuota objects: validation, who wins a tenant, and publishing into the policies bucket.

One implementation for both writers of the policies bucket: the operator (objects from the
Kubernetes API) and ``athenic dev --quotas FILE`` (objects from a YAML file), so a quota
means the same thing on one machine as in a cluster.

- ``schema_errors`` checks an object against the CRD's own ``openAPIV3Schema`` (the copy
  shipped in this package, kept identical to ``charts/athenic/crds/`` by a test).
- ``resolve`` applies what a schema cannot: one quota per tenant. The policies bucket holds
  one policy per tenant, so the rule spans every quota one writer sees (for the operator:
  the namespaces it watches): the oldest quota of a tenant governs it, each newer one is
  Invalid with a message naming the one in force.
- ``reconcile_bucket`` makes the bucket hold exactly the given policies (stale keys
  removed), writing only what differs, with compare-and-set against a snapshot taken
  before the caller read its objects, so it never overwrites a newer write by someone else.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jsonschema
import msgspec
import nats.errors
import yaml
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from athenic.shared.policy import SandboxPolicy, encode_policy, policy_from_spec, policy_key

GROUP: Final = "athenic.dev"
VERSION: Final = "v1alpha1"
PLURAL: Final = "sandboxquotas"
KIND: Final = "SandboxQuota"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CRD_FILE: Final = "sandboxquotas.athenic.dev.yaml"

# Reasons of the Ready condition (also the Kubernetes event reasons).
REASON_PUBLISHED: Final = "Published"
REASON_SCHEMA: Final = "SchemaViolation"
REASON_DUPLICATE: Final = "DuplicateTenant"


@functools.cache
def crd_manifest() -> dict[str, Any]:
    text = importlib.resources.files("athenic.shared").joinpath(CRD_FILE).read_text("utf-8")
    manifest: dict[str, Any] = yaml.safe_load(text)
    return manifest


@functools.cache
def quota_schema() -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the served version."""
    for version in crd_manifest()["spec"]["versions"]:
        if version["name"] == VERSION:
            schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
            return schema
    raise LookupError(f"the CRD has no version {VERSION}")


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    # OpenAPI v3.0 schemas are draft-4 JSON Schema plus keywords draft 4 ignores (default, ...).
    return jsonschema.Draft4Validator(quota_schema())


def _where(path: Iterable[Any]) -> str:
    return ".".join(str(part) for part in path) or "(object)"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(value: Any) -> Any:
    """JSON-like builtins of a mapping view (kopf's Body is a Mapping, not a dict)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def schema_errors(obj: Mapping[str, Any], *, strict_fields: bool = False) -> list[str]:
    """Why the API server would refuse ``obj`` (empty when it would accept it).

    ``strict_fields`` also refuses unknown ``spec`` fields, as ``kubectl apply`` does by
    default (``--validate=strict``); the API server itself prunes them.
    """
    obj = _plain(obj)
    errors: list[str] = []
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
        errors.append(
            f"apiVersion/kind must be {API_VERSION}/{KIND}, not {obj.get('apiVersion')}/{obj.get('kind')}"
        )
    for error in sorted(_validator().iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        errors.append(f"{_where(error.absolute_path)}: {_short(error.message)}")
    spec = obj.get("spec")
    if strict_fields and isinstance(spec, Mapping):
        known = set(quota_schema()["properties"]["spec"]["properties"])
        errors.extend(f"spec.{name}: unknown field" for name in sorted(set(spec) - known))
    return errors


@dataclass(frozen=True, order=True)
class QuotaRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True)
class Quota:
    """One SandboxQuota object as far as the rules care."""

    ref: QuotaRef
    tenant: str | None
    policy: SandboxPolicy | None  # None when the object breaks the schema
    error: str | None = None
    created: str = ""  # metadata.creationTimestamp (RFC 3339 UTC: sorts as text)
    position: int = 0  # the order of appearance, for objects without a timestamp (a file)
    deleting: bool = False

    @property
    def age_key(self) -> tuple[str, int, QuotaRef]:
        return (self.created, self.position, self.ref)


def quota_of(obj: Mapping[str, Any], *, position: int = 0, strict_fields: bool = False,
             default_name: str = "") -> Quota:
    meta = obj.get("metadata") or {}
    ref = QuotaRef(str(meta.get("namespace") or ""), str(meta.get("name") or default_name))
    spec = obj.get("spec")
    tenant = spec.get("tenant") if isinstance(spec, Mapping) else None
    common: dict[str, Any] = {
        "ref": ref,
        "tenant": tenant if isinstance(tenant, str) else None,
        "created": str(meta.get("creationTimestamp") or ""),
        "position": position,
        "deleting": bool(meta.get("deletionTimestamp")),
    }
    errors = schema_errors(obj, strict_fields=strict_fields)
    if not errors:
        assert isinstance(spec, Mapping)  # the schema requires it
        try:
            return Quota(policy=policy_from_spec(spec), **common)
        except msgspec.ValidationError as exc:  # the CRD and SandboxPolicy disagree: a bug
            errors = [f"spec: {exc}"]
    return Quota(policy=None, error=_short("; ".join(errors), 1000), **common)


@dataclass(frozen=True)
class Standing:
    """A quota's verdict: in force (``active``) or Invalid, with the why."""

    active: bool
    reason: str
    message: str


@dataclass
class Resolution:
    winners: dict[str, Quota] = field(default_factory=dict)  # tenant -> the quota in force
    standings: dict[QuotaRef, Standing] = field(default_factory=dict)

    @property
    def policies(self) -> list[SandboxPolicy]:
        return [quota.policy for quota in self.winners.values() if quota.policy is not None]


def resolve(quotas: Iterable[Quota]) -> Resolution:
    """Apply the one-quota-per-tenant rule. Quotas being deleted take no part."""
    result = Resolution()
    for quota in sorted((q for q in quotas if not q.deleting), key=lambda q: q.age_key):
        if quota.policy is None or quota.tenant is None:
            result.standings[quota.ref] = Standing(False, REASON_SCHEMA, quota.error or "invalid spec")
            continue
        winner = result.winners.get(quota.tenant)
        if winner is None:
            result.winners[quota.tenant] = quota
            result.standings[quota.ref] = Standing(
                True, REASON_PUBLISHED, f"policy of tenant {quota.tenant!r} published"
            )
        else:
            result.standings[quota.ref] = Standing(
                False, REASON_DUPLICATE,
                f"tenant {quota.tenant!r} is already governed by the older SandboxQuota {winner.ref}; "
                "this one is ignored until that one is deleted",
            )
    return result


# --- the policies bucket -------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    revision: int
    value: bytes


# nats-py may queue a watcher's "no more initial values" marker before entries already in
# flight when the consumer's info says nothing is pending; entries then follow at once.
_STRAGGLER_WAIT = 0.25


async def read_bucket(kv: KeyValue, keys: str = ">", *, values: bool = True,
                      timeout: float = 5.0) -> dict[str, Stored]:
    """Every live key matching ``keys`` with its revision (and value unless ``values`` is
    false: then ``b""``). Reads until the entry the server marked as the last one pending."""
    watcher = await kv.watch(keys, meta_only=not values)
    found: dict[str, Stored] = {}
    try:
        async with asyncio.timeout(timeout):
            entry = await _next(watcher, None)
            if entry is None:  # "nothing pending": true, unless entries are still in flight
                entry = await _next(watcher, _STRAGGLER_WAIT)
            while entry is not None:
                if entry.operation is None:  # a value, not a delete/purge/expiry marker
                    found[entry.key] = Stored(entry.revision or 0, entry.value or b"")
                else:
                    found.pop(entry.key, None)
                if entry.delta == 0:
                    break
                entry = await _next(watcher, None)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return found


async def _next(watcher: KeyValue.KeyWatcher, wait: float | None) -> KeyValue.Entry | None:
    """The watcher's next entry; None for its end-of-initial-values marker or after ``wait``."""
    try:
        entry: KeyValue.Entry | None = await watcher.updates(timeout=wait)  # type: ignore[no-untyped-call]
    except nats.errors.TimeoutError:
        return None
    return entry


@dataclass
class PublishReport:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # changed by someone else meanwhile: left alone


async def reconcile_bucket(
    kv: KeyValue, policies: Iterable[SandboxPolicy], snapshot: Mapping[str, Stored]
) -> PublishReport:
    """Make the bucket hold exactly ``policies``, comparing-and-setting against ``snapshot``
    (from ``read_bucket``, taken before the policies were computed)."""
    report = PublishReport()
    wanted = {policy_key(policy.tenant): encode_policy(policy) for policy in policies}
    for key, value in wanted.items():
        stored = snapshot.get(key)
        if stored is not None and stored.value == value:
            report.unchanged.append(key)
            continue
        try:
            if stored is None:
                await kv.create(key, value)
            else:
                await kv.update(key, value, last=stored.revision)
            report.written.append(key)
        except KeyWrongLastSequenceError:
            report.conflicts.append(key)
    for key, stored in snapshot.items():
        if key in wanted:
            continue
        try:
            await kv.delete(key, last=stored.revision)
            report.removed.append(key)
        except KeyWrongLastSequenceError:
            report.conflicts.append(key)
    return report


async def publish_policies(kv: KeyValue, policies: Iterable[SandboxPolicy]) -> PublishReport:
    """Publish ``policies`` as the operator does: the bucket ends with exactly these."""
    return await reconcile_bucket(kv, list(policies), await read_bucket(kv))


async def publish_policy(kv: KeyValue, policy: SandboxPolicy) -> bool:
    """Put one tenant's policy unless it is already there; True when written."""
    key, value = policy_key(policy.tenant), encode_policy(policy)
    stored = await _get(kv, key)
    if stored == value:
        return False
    await kv.put(key, value)
    return True


async def withdraw_policy(kv: KeyValue, tenant: str) -> bool:
    """Remove one tenant's policy (its requests fall back to the default); True when removed."""
    key = policy_key(tenant)
    if await _get(kv, key) is None:
        return False
    await kv.delete(key)
    return True


async def _get(kv: KeyValue, key: str) -> bytes | None:
    try:  # KeyDeletedError is a KeyNotFoundError
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    return entry.value or None


# --- a YAML file of SandboxQuota objects (one machine) ---------------------------------------


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


__all__: Sequence[str] = [
    "API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION", "PublishReport", "Quota", "QuotaFileError",
    "QuotaRef", "Resolution", "Standing", "Stored", "load_and_publish", "load_quota_objects",
    "load_quotas", "publish_policies", "publish_policy", "quota_of", "quota_schema", "read_bucket",
    "reconcile_bucket", "resolve", "schema_errors", "withdraw_policy",
]
