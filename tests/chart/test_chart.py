"""The Helm chart, rendered by a real helm for several value sets and checked for what a
platform team relies on: valid manifests, restricted pods, least-privilege RBAC, secrets by
reference, an ingress that carries WebSockets, a schema that refuses bad values."""

from __future__ import annotations

import functools
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import pytest
import yaml

from tests.chart.conftest import KUBE_VERSION, VALUE_SETS
from tests.chart.manifests import (
    Manifest,
    container,
    containers,
    env,
    env_value,
    named,
    of_kind,
    pod_specs,
    secret_ref,
)
from tests.support.helm import CHART_DIR, HelmError, parse_manifests, template_args

pytestmark = pytest.mark.unit

Render = Callable[..., list[Manifest]]
ALL_SETS = list(VALUE_SETS)
# kinds served by CRDs (ours, kopf's, the Prometheus Operator's): no built-in schema for them
CUSTOM_KINDS = {"ClusterKopfPeering", "KopfPeering", "ServiceMonitor"}


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_lint_strict(helm_run: Callable[[list[str]], str], values_files: Callable[[str], list[Path]],
                     value_set: str) -> None:
    args = ["lint", "--strict", str(CHART_DIR), "--kube-version", KUBE_VERSION]
    for path in values_files(value_set):
        args += ["--values", str(path)]
    out = helm_run(args)
    assert "0 chart(s) failed" in out


def minor(version: str) -> str:
    return ".".join(re.findall(r"\d+", version)[:2])


# the chart's minimum (Chart.yaml kubeVersion), the version rendered for, the newest known
CHART_MINIMUM = minor(yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["kubeVersion"])
VALIDATE_VERSIONS = sorted({CHART_MINIMUM, minor(KUBE_VERSION), minor(kubernetes_validate.latest_version())},
                           key=lambda v: tuple(map(int, v.split("."))))


@pytest.fixture(scope="module")
def schemas_cached() -> Iterator[None]:
    """kubernetes-validate re-reads its 1.4 MB definitions file for every object: read each once."""
    original = kv_utils.schema_contents
    kv_utils.schema_contents = functools.lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        kv_utils.schema_contents = original


@pytest.mark.usefixtures("schemas_cached")
@pytest.mark.parametrize("value_set", ALL_SETS)
def test_manifests_valid_for_kubernetes(render: Render, value_set: str) -> None:
    manifests = render(value_set)
    assert manifests, "nothing rendered"
    for version in VALIDATE_VERSIONS:
        validated: set[str] = set()
        for manifest in manifests:
            where = f"{manifest['kind']}/{manifest['metadata']['name']}"
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                assert manifest["kind"] in CUSTOM_KINDS, f"{where}: no Kubernetes {version} schema for this kind"
                continue
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{value_set}: {where} invalid for Kubernetes {version} at "
                            f"{'.'.join(map(str, exc.path))}: {exc.message}")
            validated.add(manifest["kind"])
        assert {"Deployment", "Service", "NetworkPolicy", "CustomResourceDefinition"} <= validated
        assert {"Role", "ClusterRole"} & validated  # the operator's (test_operator_rbac.py)


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_every_pod_is_restricted(render: Render, value_set: str) -> None:
    """Non-root, read-only root filesystem, no escalation, no capabilities, a seccomp profile."""
    bubblewrap = value_set == "local-bubblewrap"
    pods = list(pod_specs(render(value_set)))
    assert len(pods) >= 4
    for where, spec in pods:
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), f"{where}: {host}"
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("runAsUser", 0) != 0, where
        assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        for item in containers(spec):
            sc = item.get("securityContext", {})
            name = f"{where} container {item['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("readOnlyRootFilesystem") is True, name
            assert sc.get("privileged") in (None, False), name
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], name
            assert not sc.get("capabilities", {}).get("add"), name
            assert sc.get("runAsUser", 1) != 0, name
            if bubblewrap and "orchestrator" in where:
                # the one documented exception: a Localhost profile that admits namespaces
                assert sc["seccompProfile"] == {"type": "Localhost",
                                                "localhostProfile": "profiles/athenic-bwrap.json"}
                assert spec["hostUsers"] is False
                assert sc["procMount"] == "Unmasked"
            else:
                assert sc.get("seccompProfile", {"type": "RuntimeDefault"}) == {"type": "RuntimeDefault"}, name
                assert "procMount" not in sc, name
                assert "hostUsers" not in spec, name
            assert item.get("resources", {}).get("requests"), name
            assert item["resources"].get("limits"), name
            # a read-only root needs somewhere to write: /tmp is an emptyDir
            if not where.startswith(("Pod/", "StatefulSet/")):
                assert any(m["mountPath"] == "/tmp" for m in item.get("volumeMounts", [])), name


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


def test_crds_ship_with_the_chart(render: Render) -> None:
    crds = {m["metadata"]["name"]: m for m in of_kind(render("defaults"), "CustomResourceDefinition")}
    assert "sandboxquotas.athenic.dev" in crds, "charts/athenic/crds/sandboxquotas.athenic.dev.yaml missing"
    quota = crds["sandboxquotas.athenic.dev"]["spec"]
    assert quota["scope"] == "Namespaced"
    assert quota["names"]["shortNames"] == ["sbq"]
    version = next(v for v in quota["versions"] if v["name"] == "v1alpha1")
    assert version["subresources"] == {"status": {}}
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
    # CRDs live in crds/ (installed first, never deleted by `helm uninstall`), not in templates
    assert not of_kind(render("defaults", include_crds=False), "CustomResourceDefinition")


def test_operator_rbac_is_exactly_what_it_uses(render: Render) -> None:
    def grants(group: str, resources: list[str], verbs: list[str]) -> set[tuple[str, str, str]]:
        return {(group, r, v) for r in resources for v in verbs}

    def granted(role: Manifest) -> set[tuple[str, str, str]]:
        assert not any("*" in str(rule) for rule in role["rules"])
        return {(group, resource, verb)
                for rule in role["rules"]
                for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}

    own = (grants("athenic.dev", ["sandboxquotas"], ["get", "list", "watch", "patch"])
           | grants("athenic.dev", ["sandboxquotas/status"], ["get", "patch"])
           | grants("", ["events"], ["create", "patch"]))
    # all namespaces: a ClusterRole, with kopf's cluster-wide discovery
    everywhere = render("defaults", {"operator": {"watch": {"allNamespaces": True}}})
    assert granted(named(everywhere, "ClusterRole", "athenic-operator")) == (
        own | grants("kopf.dev", ["clusterkopfpeerings"], ["get", "list", "watch", "patch"])
        | grants("apiextensions.k8s.io", ["customresourcedefinitions"], ["get", "list", "watch"])
        | grants("", ["namespaces"], ["list", "watch"]))
    assert not of_kind(everywhere, "Role")
    binding = named(everywhere, "ClusterRoleBinding", "athenic-operator")
    assert binding["roleRef"]["name"] == "athenic-operator"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "athenic-operator", "namespace": "athenic"}]

    # the default: the release's namespace only, a Role there and nothing cluster-wide
    manifests = render("defaults")
    role = named(manifests, "Role", "athenic-operator")
    assert granted(role) == own | grants("kopf.dev", ["kopfpeerings"], ["get", "list", "watch", "patch"])
    assert not of_kind(manifests, "ClusterRole")
    assert not of_kind(manifests, "ClusterRoleBinding")
    op_pod = named(manifests, "Deployment", "athenic-operator")["spec"]["template"]["spec"]
    assert op_pod["serviceAccountName"] == "athenic-operator"
    # the api and orchestrator never talk to the Kubernetes API: no token mounted
    for name in ("athenic-api", "athenic-orchestrator"):
        pod = named(manifests, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name
        assert pod["automountServiceAccountToken"] is False
    peering = named(manifests, "KopfPeering", "athenic-operator")
    assert env_value(container(manifests, "athenic-operator"), "ATHENIC_OPERATOR_PEERING") == \
        peering["metadata"]["name"]
    named(everywhere, "ClusterKopfPeering", "athenic-operator")


def test_operator_can_be_left_to_another_release(render: Render) -> None:
    manifests = render("defaults", {"operator": {"enabled": False}})
    assert not of_kind(manifests, "ClusterRole")
    assert not of_kind(manifests, "Role")
    assert not of_kind(manifests, "ClusterKopfPeering")
    assert not of_kind(manifests, "KopfPeering")
    assert {m["metadata"]["name"] for m in of_kind(manifests, "Deployment")} == {
        "athenic-api", "athenic-orchestrator", "athenic-notifier"}


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


def test_local_sandbox_is_rendered_as_documented(render: Render,
                                                 helm_run: Callable[[list[str]], str]) -> None:
    dev = container(render("dev"), "athenic-orchestrator")
    assert env_value(dev, "ATHENIC_SANDBOX") == "local"
    assert "E2B_API_KEY" not in env(dev)
    bwrap = container(render("local-bubblewrap"), "athenic-orchestrator")
    assert env_value(bwrap, "ATHENIC_SANDBOX") == "local"
    with pytest.raises(HelmError, match="seccompProfile"):
        helm_run(template_args(set_values={"sandbox.backend": "local", "sandbox.local.isolation": "bubblewrap"}))


def test_bundled_nats_dev_and_production(render: Render) -> None:
    dev = render("dev")
    sts = named(dev, "StatefulSet", "athenic-nats")
    assert sts["spec"]["replicas"] == 1
    assert "volumeClaimTemplates" not in sts["spec"]
    assert "cluster {" not in named(dev, "ConfigMap", "athenic-nats-config")["data"]["nats.conf"]

    prod = render("production")
    sts = named(prod, "StatefulSet", "athenic-nats")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"].startswith("nats:2.1")
    conf = named(prod, "ConfigMap", "athenic-nats-config")["data"]["nats.conf"]
    for i in range(3):
        assert f"nats://athenic-nats-{i}.athenic-nats-headless.athenic.svc:6222" in conf
    assert named(prod, "Service", "athenic-nats-headless")["spec"]["publishNotReadyAddresses"] is True
    assert named(prod, "PodDisruptionBudget", "athenic-nats")["spec"]["maxUnavailable"] == 1
    for name in ("athenic-api", "athenic-orchestrator", "athenic-operator"):
        assert env_value(container(prod, name), "NATS_REPLICAS") == "3"


def test_external_nats(render: Render) -> None:
    manifests = render("external-nats")
    assert not of_kind(manifests, "StatefulSet")
    assert "athenic-nats" not in {s["metadata"]["name"] for s in of_kind(manifests, "Service")}
    for name in ("athenic-api", "athenic-orchestrator", "athenic-operator"):
        c = container(manifests, name)
        assert env_value(c, "NATS_URL") == "nats://nats-0.broker:4222,nats://nats-1.broker:4222"
        assert env_value(c, "NATS_REPLICAS") == "3"
        assert secret_ref(c, "NATS_USER") == ("broker-login", "NATS_USER")
        assert secret_ref(c, "NATS_PASSWORD") == ("broker-login", "NATS_PASSWORD")
    policy = named(manifests, "NetworkPolicy", "athenic-orchestrator")
    broker_rule = next(r for r in policy["spec"]["egress"] if r["ports"][0]["port"] == 4222)
    assert broker_rule["to"] == VALUE_SETS["external-nats"][0]["nats"]["external"]["to"]  # type: ignore[index]

    creds = render("external-nats-creds")
    c = container(creds, "athenic-orchestrator")
    assert env_value(c, "NATS_CREDS_FILE") == "/etc/athenic/nats/nats.creds"
    assert {"name": "nats-creds", "mountPath": "/etc/athenic/nats", "readOnly": True} in c["volumeMounts"]
    volumes = named(creds, "Deployment", "athenic-orchestrator")["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "nats-creds")["secret"]["secretName"] == "ngs-creds"


def test_ingress_carries_websockets_and_tls(render: Render) -> None:
    manifests = render("ingress-tls")
    ingress = named(manifests, "Ingress", "athenic")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"secretName": "chat-tls", "hosts": ["chat.example.com"]}]
    (rule,) = spec["rules"]
    assert rule["host"] == "chat.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/api", "Prefix")
    assert path["backend"]["service"] == {"name": "athenic-api", "port": {"name": "http"}}
    # nginx cuts idle upgraded connections after 60 s and buffers SSE unless told otherwise
    notes = ingress["metadata"]["annotations"]
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"


def test_ingress_annotations_per_controller(render: Render) -> None:
    traefik = named(render("ingress-tls", {"ingress": {"controller": "traefik", "className": "traefik"}}),
                    "Ingress", "athenic")
    assert not any(k.startswith("nginx.") for k in traefik["metadata"].get("annotations", {}))
    haproxy = named(render("ingress-tls", {"ingress": {"controller": "haproxy"}}), "Ingress", "athenic")
    assert haproxy["metadata"]["annotations"]["haproxy.org/timeout-tunnel"] == "3600s"
    mine = named(render("ingress-tls", {"ingress": {
        "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "7200"}}}), "Ingress", "athenic")
    assert mine["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "7200"


def test_network_policies(render: Render) -> None:
    manifests = render("defaults")
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(manifests, "NetworkPolicy")}
    assert set(policies) == {"athenic-api", "athenic-orchestrator", "athenic-operator", "athenic-notifier",
                             "athenic-nats",
                             "athenic-test-chat"}
    # the `helm test` pod: the api and DNS, nothing else, and nothing reaches it
    test_pod = policies["athenic-test-chat"]
    assert test_pod["ingress"] == []
    assert [rule["ports"][0]["port"] for rule in test_pod["egress"]] == [3000, 53]
    for spec in policies.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]

    # NATS clients: only pods of this release carrying the client label; every service has it
    nats_client = next(r for r in policies["athenic-nats"]["ingress"] if r["ports"][0]["port"] == 4222)
    (peer,) = nats_client["from"]
    selector = peer["podSelector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/instance": "athenic", "athenic.dev/nats-client": "true"}
    for name in ("athenic-api", "athenic-orchestrator", "athenic-operator", "athenic-notifier"):
        labels = named(manifests, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
    labels = named(manifests, "Pod", "athenic-test-chat")["metadata"]["labels"]
    assert not selector.items() <= labels.items(), "the test pod has no business on the broker"

    # the api: reachable from the ingress controller's namespace on its port
    (api_in,) = policies["athenic-api"]["ingress"]
    assert api_in["ports"] == [{"protocol": "TCP", "port": 3000}]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in api_in["from"]

    # the orchestrator: nothing in but scrapes; out to NATS, DNS and HTTPS on the internet only
    orch = policies["athenic-orchestrator"]
    assert [p["port"] for r in orch["ingress"] for p in r["ports"]] == [9090]
    https = next(r for r in orch["egress"] if r["ports"] == [{"protocol": "TCP", "port": 443}])
    (block,) = https["to"]
    assert block["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "169.254.0.0/16"} <= set(block["ipBlock"]["except"])
    egress_ports = {p["port"] for r in orch["egress"] for p in r["ports"]}
    assert egress_ports == {4222, 53, 443}


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


@pytest.mark.parametrize(("values", "complaint"), [
    ({"api.replicaCount": "two"}, "replicaCount"),
    ({"api.replicas": "3"}, "replicas"),
    ({"sandbox.backend": "docker"}, "backend"),
    ({"nats.bundled.replicas": "2"}, "replicas"),
    ({"logLevel": "LOUD"}, "logLevel"),
    ({"ingress.controller": "apache"}, "controller"),
    ({"auth.tenantClaim": "user_metadata.tenant"}, "tenantClaim"),  # users edit user_metadata themselves
])
def test_schema_refuses_bad_values(helm_run: Callable[[list[str]], str], values: dict[str, str],
                                   complaint: str) -> None:
    with pytest.raises(HelmError) as refused:
        helm_run(template_args(set_values=values))
    assert "values don't meet the specifications of the schema" in refused.value.stderr
    assert complaint in refused.value.stderr


@pytest.mark.parametrize(("values", "complaint"), [
    ({"nats.mode": "external"}, "nats.external.url"),
    ({"auth.mode": "supabase"}, "auth.supabase.url"),
    ({"llm.enabled": "true"}, "llm.baseUrl"),
    ({"e2b.apiKey": "k", "e2b.existingSecret": "s"}, "not both"),
])
def test_bad_combinations_fail_with_the_fix(helm_run: Callable[[list[str]], str], values: dict[str, str],
                                            complaint: str) -> None:
    with pytest.raises(HelmError) as refused:
        helm_run(template_args(set_values=values))
    assert complaint in refused.value.stderr


def test_forwarded_headers_trusted_only_behind_a_restricted_api(render: Render) -> None:
    """Rate limits per client need the real address; believing X-Forwarded-For from anyone is
    safe only when nothing but the ingress controller (and scrapers, the test pod) reaches the api."""
    prod = render("production")
    assert env_value(container(prod, "athenic-api"), "FORWARDED_ALLOW_IPS") == "*"
    (rule,) = named(prod, "NetworkPolicy", "athenic-api")["spec"]["ingress"]
    assert rule["from"], "the api is open to every pod"
    assert all(peer != {} and peer.get("namespaceSelector") != {} for peer in rule["from"])
    assert "FORWARDED_ALLOW_IPS" not in env(container(render("defaults"), "athenic-api"))


def test_packaged_chart_is_complete(helm_run: Callable[[list[str]], str], tmp_path: Path) -> None:
    """What a platform team pulls from a chart repository: `helm package` output, installable alone."""
    out = helm_run(["package", str(CHART_DIR), "--destination", str(tmp_path)])
    (package,) = tmp_path.glob("athenic-*.tgz")
    assert str(package) in out
    with tarfile.open(package) as tar:
        names = set(tar.getnames())
    for needed in ("Chart.yaml", "values.yaml", "values.schema.json", "templates/NOTES.txt",
                   "templates/tests/test-chat.yaml", "files/smoke_test.py",
                   "crds/sandboxquotas.athenic.dev.yaml", "crds/kopf.dev_clusterkopfpeerings.yaml"):
        assert f"athenic/{needed}" in names, needed
    args = template_args(kube_version=KUBE_VERSION, chart=package)
    rendered = parse_manifests(helm_run(args))
    assert {m["metadata"]["name"] for m in of_kind(rendered, "Deployment")} == {
        "athenic-api", "athenic-orchestrator", "athenic-operator", "athenic-notifier"}


def test_bundled_nats_login_from_an_existing_secret(render: Render) -> None:
    manifests = render("defaults", {"nats": {"bundled": {"auth": {"existingSecret": "my-nats-login"}}}})
    assert not of_kind(manifests, "Secret"), "nothing to generate"
    nats = named(manifests, "StatefulSet", "athenic-nats")["spec"]["template"]["spec"]["containers"][0]
    assert secret_ref(nats, "NATS_PASSWORD") == ("my-nats-login", "NATS_PASSWORD")
    services = ("api", "orchestrator", "operator", "notifier")
    assert {secret_ref(nats, f"NATS_{s.upper()}_PASSWORD") for s in services} == {
        ("my-nats-login", f"{s}-password") for s in services}
    for name in ("athenic-api", "athenic-orchestrator", "athenic-operator"):
        volumes = named(manifests, "Deployment", name)["spec"]["template"]["spec"]["volumes"]
        assert next(v for v in volumes if v["name"] == "nats-login")["secret"]["secretName"] == "my-nats-login"
    # without auth the broker still only takes this release's pods (NetworkPolicy), with no login
    open_broker = render("defaults", {"nats": {"bundled": {"auth": {"enabled": False}}}})
    conf = named(open_broker, "ConfigMap", "athenic-nats-config")["data"]["nats.conf"]
    assert "authorization" not in conf
    assert "NATS_PASSWORD" not in env(container(open_broker, "athenic-api"))
