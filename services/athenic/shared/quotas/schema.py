"""A SandboxQuota object checked against the CRD's own ``openAPIV3Schema`` (the copy shipped
in ``athenic.shared``, kept identical to ``charts/athenic/crds/`` by a test), and read into a
``Quota``: its reference, tenant, policy (or why it has none) and age."""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import jsonschema
import msgspec
import yaml

from athenic.shared.policy import SandboxPolicy, policy_from_spec

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
