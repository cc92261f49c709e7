"""The Deployments: probes, replicas, the same broker settings for every service, autoscaling
and disruption budgets, and the `helm test` hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.chart.manifests import (
    Manifest,
    container,
    env,
    env_value,
    named,
    of_kind,
)
from tests.support.helm import CHART_DIR

pytestmark = pytest.mark.unit

Render = Callable[..., list[Manifest]]


def test_deployments_probes_and_replicas(render: Render) -> None:
    manifests = render("defaults", {"api": {"replicaCount": 4}, "orchestrator": {"replicaCount": 3}})
    deployments = {m["metadata"]["name"]: m for m in of_kind(manifests, "Deployment")}
    assert set(deployments) == {"athenic-api", "athenic-orchestrator", "athenic-operator", "athenic-notifier"}
    assert deployments["athenic-api"]["spec"]["replicas"] == 4
    assert deployments["athenic-orchestrator"]["spec"]["replicas"] == 3
    assert deployments["athenic-operator"]["spec"]["replicas"] == 1

    def probe(c: dict[str, Any], kind: str) -> tuple[str, int]:
        get = c[kind]["httpGet"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        return get["path"], ports[get["port"]]

    api = container(manifests, "athenic-api")
    assert api["args"] == ["athenic-api"] and "command" not in api  # the image's tini stays PID 1
    assert probe(api, "livenessProbe") == ("/api/health", 3000)
    assert probe(api, "readinessProbe") == ("/api/ready", 3000)
    assert env_value(api, "API_SERVER_PORT") == "3000"

    orch = container(manifests, "athenic-orchestrator")
    assert orch["args"] == ["athenic-orchestrator"] and "command" not in orch  # the image's tini stays PID 1
    assert probe(orch, "livenessProbe") == ("/healthz", 9090)
    assert probe(orch, "readinessProbe") == ("/readyz", 9090)
    assert env_value(orch, "ATHENIC_HEALTH_PORT") == "9090"
    assert env_value(orch, "ATHENIC_AUTH") == "none"

    notifier = container(manifests, "athenic-notifier")
    assert notifier["args"] == ["athenic-notifier"] and "command" not in notifier
    assert probe(notifier, "livenessProbe") == ("/healthz", 9091)
    assert probe(notifier, "readinessProbe") == ("/readyz", 9091)
    assert env_value(notifier, "ATHENIC_NOTIFIER_HEALTH_PORT") == "9091"

    op = container(manifests, "athenic-operator")
    assert op["args"] == ["athenic-operator"] and "command" not in op  # the image's tini stays PID 1
    assert probe(op, "livenessProbe") == ("/healthz", 8080)
    assert env_value(op, "ATHENIC_OPERATOR_LIVENESS_PORT") == "8080"
    # the operator serves no /metrics yet: no port to scrape until operator.metrics.enabled
    assert [p["name"] for p in op["ports"]] == ["health"]

    for name in deployments:
        spread = deployments[name]["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_services_use_the_same_broker_settings(render: Render) -> None:
    manifests = render("defaults")
    for name in ("athenic-api", "athenic-orchestrator", "athenic-operator"):
        c = container(manifests, name)
        assert env_value(c, "NATS_URL") == "nats://athenic-nats.athenic.svc:4222", name
        assert env_value(c, "NATS_REPLICAS") == "1", name
        # each service its own NATS user, its password a file from the Secret (test_nats_permissions.py)
        service = name.removeprefix("athenic-")
        assert env_value(c, "NATS_USER") == service, name
        assert "NATS_PASSWORD" not in env(c), name
        assert env_value(c, "NATS_PASSWORD_FILE") == "/etc/athenic/nats-login/password", name
        volumes = named(manifests, "Deployment", name)["spec"]["template"]["spec"]["volumes"]
        login = next(v for v in volumes if v["name"] == "nats-login")["secret"]
        assert login["secretName"] == "athenic-nats-auth", name
        assert login["items"] == [{"key": f"{service}-password", "path": "password"}], name
        assert env_value(c, "LOG_FORMAT") == "json", name


def test_autoscaling_and_disruption_budgets(render: Render) -> None:
    prod = render("production")
    hpas = {h["metadata"]["name"]: h["spec"] for h in of_kind(prod, "HorizontalPodAutoscaler")}
    assert set(hpas) == {"athenic-api", "athenic-orchestrator"}
    for name, spec in hpas.items():
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert spec["minReplicas"] == 3
        # the HPA owns the replica count: a `replicas` in the Deployment would fight it on upgrade
        assert "replicas" not in named(prod, "Deployment", name)["spec"]
    pdbs = {p["metadata"]["name"] for p in of_kind(prod, "PodDisruptionBudget")}
    assert pdbs == {"athenic-api", "athenic-orchestrator", "athenic-notifier", "athenic-nats"}
    monitors = {m["metadata"]["name"]: m["spec"] for m in of_kind(prod, "ServiceMonitor")}
    assert set(monitors) == {"athenic-api", "athenic-orchestrator", "athenic-notifier"}
    assert monitors["athenic-api"]["endpoints"][0] == {"port": "http", "path": "/metrics", "interval": "30s"}
    assert monitors["athenic-orchestrator"]["endpoints"][0]["port"] == "metrics"
    # every ServiceMonitor names a port its Service has
    for name, spec in monitors.items():
        service_ports = {p["name"] for p in named(prod, "Service", name)["spec"]["ports"]}
        assert spec["endpoints"][0]["port"] in service_ports, name

    scraped = render("production", {"operator": {"metrics": {"enabled": True}}})
    assert "athenic-operator" in {m["metadata"]["name"] for m in of_kind(scraped, "ServiceMonitor")}
    assert named(scraped, "Service", "athenic-operator")["spec"]["ports"][0]["port"] == 9090
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in \
        container(scraped, "athenic-operator")["ports"]
    assert not of_kind(render("defaults"), "HorizontalPodAutoscaler")
    assert not of_kind(render("defaults"), "ServiceMonitor")


def test_helm_test_hook_checks_health_and_chat(render: Render) -> None:
    pod = named(render("defaults"), "Pod", "athenic-test-chat")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (smoke,) = pod["spec"]["containers"]
    script = (CHART_DIR / "files" / "smoke_test.py").read_text()
    assert smoke["command"] == ["python", "-c", script]
    assert "/api/health" in script
    assert "/api/chat" in script
    assert env_value(smoke, "ATHENIC_API_URL") == "http://athenic-api.athenic.svc:3000"
    # with auth on and no token for the test user, the test checks that auth is enforced
    auth_pod = named(render("auth-on"), "Pod", "athenic-test-chat")
    assert env_value(auth_pod["spec"]["containers"][0], "ATHENIC_EXPECT_UNAUTHORIZED") == "1"
