"""Small queries over rendered manifests (lists of dicts from `helm template`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Manifest = dict[str, Any]

POD_OWNERS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") == kind]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert found, f"no {kind} named {name}; have {[m['metadata']['name'] for m in of_kind(manifests, kind)]}"
    return found[0]


def pod_specs(manifests: list[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod the release creates: ('Kind/name', pod spec), hooks included."""
    for m in manifests:
        if m.get("kind") in POD_OWNERS:
            yield f"{m['kind']}/{m['metadata']['name']}", m["spec"]["template"]["spec"]
        elif m.get("kind") == "Pod":
            yield f"Pod/{m['metadata']['name']}", m["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def container(manifests: list[Manifest], deployment: str) -> dict[str, Any]:
    spec = named(manifests, "Deployment", deployment)["spec"]["template"]["spec"]
    return dict(spec["containers"][0])


def env(container_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> the EnvVar (with `value` or `valueFrom`)."""
    return {item["name"]: item for item in container_spec.get("env", [])}


def env_value(container_spec: dict[str, Any], name: str) -> str | None:
    item = env(container_spec).get(name)
    return None if item is None else item.get("value")


def secret_ref(container_spec: dict[str, Any], name: str) -> tuple[str, str] | None:
    item = env(container_spec).get(name)
    ref = (item or {}).get("valueFrom", {}).get("secretKeyRef")
    return None if ref is None else (ref["name"], ref["key"])
