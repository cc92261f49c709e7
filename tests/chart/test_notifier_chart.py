"""The notifier in the chart: its Deployment, its secrets as files, its egress (443 only), its guards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.manifests import Manifest, container, env, env_value, named, of_kind
from tests.chart.value_sets import KUBE_VERSION
from tests.support.helm import HelmError, template_args

pytestmark = pytest.mark.unit

Render = Callable[..., list[Manifest]]


def pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = named(manifests, "Deployment", "athenic-notifier")["spec"]["template"]["spec"]
    return spec


def test_notifier_runs_like_the_other_workers(render: Render) -> None:
    manifests = render("defaults")
    deployment = named(manifests, "Deployment", "athenic-notifier")
    assert deployment["spec"]["replicas"] == 2
    notifier, orchestrator = container(manifests, "athenic-notifier"), container(manifests, "athenic-orchestrator")
    assert notifier["securityContext"] == orchestrator["securityContext"]
    assert pod_spec(manifests)["securityContext"] == named(
        manifests, "Deployment", "athenic-orchestrator")["spec"]["template"]["spec"]["securityContext"]
    assert pod_spec(manifests)["automountServiceAccountToken"] is False
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert notifier[probe]["httpGet"]["port"] == "metrics"
    # the same broker as every service, with its own NATS user and password file
    for name in ("NATS_URL", "NATS_REPLICAS", "NATS_PASSWORD_FILE"):
        assert env(notifier)[name] == env(orchestrator)[name], name
    assert env_value(notifier, "NATS_USER") == "notifier"
    # nothing configured: nothing to send, no secret referenced
    assert not {"ATHENIC_FCM_CREDENTIALS_FILE", "ATHENIC_APNS_KEY_FILE", "ATHENIC_WEBHOOK_URL"} & set(env(notifier))
    assert env_value(notifier, "ATHENIC_NOTIFY_PREVIEW") == "false"
    assert named(manifests, "Service", "athenic-notifier")["spec"]["ports"][0]["port"] == 9091


def test_push_keys_are_mounted_as_files_and_the_webhook_secret_comes_from_a_secret(render: Render) -> None:
    manifests = render("notifications")
    notifier = container(manifests, "athenic-notifier")
    values = {name: env_value(notifier, name) for name in env(notifier)}
    assert values["ATHENIC_FCM_CREDENTIALS_FILE"] == "/etc/athenic/fcm/service-account.json"
    assert values["ATHENIC_FCM_PROJECT_ID"] == "athenic-prod"
    assert values["ATHENIC_APNS_KEY_FILE"] == "/etc/athenic/apns/key.p8"
    assert (values["ATHENIC_APNS_KEY_ID"], values["ATHENIC_APNS_TEAM_ID"], values["ATHENIC_APNS_TOPIC"]) == (
        "ABC123DEFG", "TEAM123456", "dev.athenic.app")
    assert values["ATHENIC_WEBHOOK_URL"] == "https://hooks.example.com/athenic"
    assert values["ATHENIC_NOTIFY_PREVIEW"] == "true"
    assert values["ATHENIC_WEBHOOK_TENANTS_FILE"] == "/etc/athenic/webhooks/tenants.yaml"
    assert values["ATHENIC_WEBHOOK_ALLOW_PRIVATE"] == "false"
    (secret_ref,) = [e["valueFrom"]["secretKeyRef"] for e in notifier["env"] if e["name"] == "ATHENIC_WEBHOOK_SECRET"]
    assert secret_ref == {"name": "athenic-webhook", "key": "webhook-secret"}
    mounts = {m["name"]: m for m in notifier["volumeMounts"]}
    assert mounts["fcm-credentials"]["readOnly"] and mounts["apns-key"]["readOnly"]
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    assert volumes["fcm-credentials"]["secret"]["secretName"] == "fcm-service-account"
    assert volumes["apns-key"]["secret"]["secretName"] == "apns-key"
    assert volumes["apns-key"]["secret"]["defaultMode"] == 0o440
    assert volumes["webhook-tenants"]["secret"]["secretName"] == "athenic-tenant-webhooks"
    assert mounts["webhook-tenants"]["mountPath"] == "/etc/athenic/webhooks"


def test_an_inline_webhook_secret_becomes_a_secret(render: Render) -> None:
    secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    manifests = render("defaults", {"notifier": {"webhook": {"url": "https://h.example.com/x", "secret": secret}}})
    made = named(manifests, "Secret", "athenic-webhook")
    assert made["stringData"] == {"webhook-secret": secret}
    assert secret not in yaml.safe_dump(named(manifests, "Deployment", "athenic-notifier"))


def test_egress_is_nats_dns_and_https_only(render: Render) -> None:
    policy = named(render("notifications"), "NetworkPolicy", "athenic-notifier")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert [p["port"] for r in policy["ingress"] for p in r["ports"]] == [9091]
    assert {p["port"] for r in policy["egress"] for p in r["ports"]} == {4222, 53, 443}
    https = next(r for r in policy["egress"] if r["ports"] == [{"protocol": "TCP", "port": 443}])
    (block,) = https["to"]
    assert {"10.0.0.0/8", "169.254.0.0/16", "192.168.0.0/16"} <= set(block["ipBlock"]["except"])


def test_the_notifier_can_be_left_out(render: Render) -> None:
    manifests = render("defaults", {"notifier": {"enabled": False}})
    names = {m["metadata"]["name"] for m in manifests}
    assert "athenic-notifier" not in names


@pytest.mark.parametrize(("values", "says"), [
    ({"notifier": {"fcm": {"enabled": True}}}, "notifier.fcm.existingSecret"),
    ({"notifier": {"apns": {"enabled": True, "existingSecret": "k"}}}, "keyId, teamId and topic"),
    ({"notifier": {"webhook": {"url": "https://h.example.com/x"}}}, "whsec_"),
    ({"notifier": {"webhook": {"url": "https://h.example.com/x", "secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAx",
                               "existingSecret": "s"}}}, "not both"),
])
def test_bad_combinations_fail_with_the_fix(helm_run: Callable[[list[str]], str], tmp_path: Path,
                                           values: dict[str, Any], says: str) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(HelmError, match=says):
        helm_run(template_args([path], kube_version=KUBE_VERSION))


@pytest.mark.parametrize("values", [
    {"notifier": {"webhook": {"url": "hooks.example.com"}}},
    {"notifier": {"webhook": {"secret": "not-a-whsec"}}},
    {"notifier": {"previewChars": 500}},
    {"notifier": {"fcm": {"baseUrl": "fcm.googleapis.com"}}},
    {"notifier": {"unknown": 1}},
])
def test_schema_refuses_bad_values(helm_run: Callable[[list[str]], str], tmp_path: Path,
                                   values: dict[str, Any]) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(HelmError, match="notifier"):
        helm_run(template_args([path], kube_version=KUBE_VERSION))


def test_nothing_else_changes_for_a_release_without_notifications(render: Render) -> None:
    assert len(of_kind(render("defaults"), "Deployment")) == 4
