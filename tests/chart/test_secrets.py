"""Secrets by reference: existing Secrets named, inline values made Secrets referenced by key,
every reference resolvable, a missing E2B key named as the Secret to create."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chart.manifests import (
    Manifest,
    container,
    containers,
    env,
    env_value,
    of_kind,
    pod_specs,
    secret_ref,
)
from tests.support.helm import CHART_DIR

pytestmark = pytest.mark.unit

Render = Callable[..., list[Manifest]]


def test_secrets_come_from_existing_secrets(render: Render) -> None:
    manifests = render("auth-on")
    api = container(manifests, "athenic-api")
    orch = container(manifests, "athenic-orchestrator")
    assert env_value(api, "ATHENIC_AUTH") == "supabase"
    # the orchestrator refuses an unisolated local sandbox when auth is on: it must know
    assert env_value(orch, "ATHENIC_AUTH") == "supabase"
    assert env_value(api, "SUPABASE_URL") == "https://proj.supabase.co"
    assert env_value(api, "ATHENIC_TENANT_CLAIM") == "app_metadata.tenant"
    assert secret_ref(api, "SUPABASE_JWT_SECRET") == ("supabase-jwt", "SUPABASE_JWT_SECRET")
    assert secret_ref(orch, "E2B_API_KEY") == ("e2b-key", "E2B_API_KEY")
    assert env_value(orch, "E2B_TEMPLATE") == "athenic-python"
    assert secret_ref(orch, "OPENAI_API_KEY") == ("llm-key", "OPENAI_API_KEY")
    assert env_value(orch, "OPENAI_BASE_URL") == "https://llm.example.com/v1"
    assert env_value(orch, "ATHENIC_PLANNER") == "llm"
    # no chart-made Secret for what the user already keeps in one (only the NATS login)
    assert [s["metadata"]["name"] for s in of_kind(manifests, "Secret")] == ["athenic-nats-auth"]
    # and the secrets never reach the orchestrator's neighbours
    assert "E2B_API_KEY" not in env(api)
    assert "SUPABASE_JWT_SECRET" not in env(orch)


def test_inline_secrets_become_secrets_referenced_by_key(render: Render) -> None:
    manifests = render("inline-secrets")
    secrets = {s["metadata"]["name"]: s for s in of_kind(manifests, "Secret")}
    assert secrets["athenic-e2b"]["stringData"] == {"E2B_API_KEY": "e2b_inline_key"}
    assert secrets["athenic-llm"]["stringData"] == {"OPENAI_API_KEY": "sk-inline"}
    assert secrets["athenic-supabase"]["stringData"] == {"SUPABASE_JWT_SECRET": "hs256-secret-value"}
    orch = container(manifests, "athenic-orchestrator")
    assert secret_ref(orch, "E2B_API_KEY") == ("athenic-e2b", "E2B_API_KEY")
    assert secret_ref(container(manifests, "athenic-api"), "SUPABASE_JWT_SECRET") == \
        ("athenic-supabase", "SUPABASE_JWT_SECRET")
    # plain values never appear in a pod spec, only in the Secret
    for _, spec in pod_specs(manifests):
        text = repr(spec)
        assert "e2b_inline_key" not in text
        assert "sk-inline" not in text
        assert "hs256-secret-value" not in text


def test_every_secret_reference_resolves(render: Render) -> None:
    """Each secretKeyRef names a Secret the chart renders or one the values name."""
    for value_set in ("auth-on", "inline-secrets", "production", "external-nats"):
        manifests = render(value_set)
        rendered = {s["metadata"]["name"] for s in of_kind(manifests, "Secret")}
        given = {"supabase-jwt", "e2b-key", "llm-key", "broker-login", "athenic-e2b", "athenic-llm",
                 "athenic-supabase"} if value_set in ("auth-on", "production", "external-nats") else set()
        for where, spec in pod_specs(manifests):
            for item in containers(spec):
                for var in item.get("env", []):
                    ref = var.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"] in rendered | given, f"{value_set}: {where} {var['name']} -> {ref}"


def test_no_e2b_key_means_a_named_secret_to_create(render: Render) -> None:
    """Defaults: E2B sandboxes, the key read from <fullname>-e2b, which NOTES tells you to create."""
    manifests = render("defaults")
    orch = container(manifests, "athenic-orchestrator")
    assert env_value(orch, "ATHENIC_SANDBOX") == "e2b"
    assert secret_ref(orch, "E2B_API_KEY") == ("athenic-e2b", "E2B_API_KEY")
    assert "athenic-e2b" not in {s["metadata"]["name"] for s in of_kind(manifests, "Secret")}
    notes = (CHART_DIR / "templates" / "NOTES.txt").read_text()
    assert "create secret generic {{ $fullname }}-e2b" in notes
