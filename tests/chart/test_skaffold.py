"""skaffold.yaml: every image, Dockerfile, chart and values file it names exists, and what it
deploys renders (skaffold itself is not installed here; the chart is rendered with the values
skaffold would pass)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.dockerfile import parse_dockerfile
from tests.chart.manifests import Manifest, container, env_value, named, of_kind
from tests.chart.value_sets import KUBE_VERSION
from tests.support.helm import REPO_ROOT, parse_manifests, template_args

pytestmark = pytest.mark.unit

SKAFFOLD: dict[str, Any] = yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())
(RELEASE,) = SKAFFOLD["deploy"]["helm"]["releases"]


def profile_values(name: str) -> list[str]:
    profile = next(p for p in SKAFFOLD["profiles"] if p["name"] == name)
    (patch,) = [p for p in profile["patches"] if p["path"] == "/deploy/helm/releases/0/valuesFiles"]
    return list(patch["value"])


def test_schema_version_and_images() -> None:
    assert SKAFFOLD["apiVersion"].startswith("skaffold/v4")
    assert SKAFFOLD["kind"] == "Config"
    artifacts = SKAFFOLD["build"]["artifacts"]
    assert [a["image"] for a in artifacts] == ["athenic"]
    for artifact in artifacts:
        context = REPO_ROOT / artifact.get("context", ".")
        dockerfile = context / artifact["docker"]["dockerfile"]
        assert dockerfile.is_file(), dockerfile
        stages = {s.name for s in parse_dockerfile(dockerfile).stages}
        assert artifact["docker"]["target"] in stages
        # the built image is what the chart deploys
        templates = RELEASE["setValueTemplates"]
        assert templates["image.repository"] == f"{{{{.IMAGE_REPO_{artifact['image']}}}}}"
        assert f".IMAGE_TAG_{artifact['image']}" in templates["image.tag"]


def test_chart_and_values_paths_exist() -> None:
    assert (REPO_ROOT / RELEASE["chartPath"] / "Chart.yaml").is_file()
    assert {p["name"] for p in SKAFFOLD["profiles"]} >= {"dev", "production"}
    for name in ("dev", "production"):
        for path in profile_values(name):
            assert (REPO_ROOT / path).is_file(), f"profile {name}: {path} missing"
    dev = next(p for p in SKAFFOLD["profiles"] if p["name"] == "dev")
    assert {"command": "dev"} in dev["activation"], "`skaffold dev` picks the dev profile by itself"


@pytest.mark.parametrize("profile", ["dev", "production"])
def test_profiles_render_what_they_promise(helm_run: Callable[[list[str]], str], tmp_path: Path,
                                           profile: str) -> None:
    # what skaffold passes for a locally built image: tag@digest
    image = tmp_path / "image.yaml"
    image.write_text(yaml.safe_dump({"image": {"repository": "athenic",
                                               "tag": "abc1234@sha256:" + "0" * 64}}))
    files = [REPO_ROOT / p for p in profile_values(profile)] + [image]
    args = template_args(files, release=RELEASE["name"], namespace=RELEASE["namespace"], kube_version=KUBE_VERSION)
    manifests: list[Manifest] = parse_manifests(helm_run(args))
    api = container(manifests, "athenic-api")
    assert api["image"] == "athenic:abc1234@sha256:" + "0" * 64

    # the port-forward names a Service and port the release really has
    (forward,) = SKAFFOLD["portForward"]
    service = named(manifests, "Service", forward["resourceName"])
    assert forward["port"] in [p["port"] for p in service["spec"]["ports"]]
    assert forward["namespace"] == RELEASE["namespace"]

    deployments = {d["metadata"]["name"]: d for d in of_kind(manifests, "Deployment")}
    orchestrator = container(manifests, "athenic-orchestrator")
    if profile == "dev":
        assert all(d["spec"]["replicas"] == 1 for d in deployments.values())
        assert env_value(api, "ATHENIC_AUTH") == "none"
        assert env_value(orchestrator, "ATHENIC_SANDBOX") == "local"
        assert named(manifests, "StatefulSet", "athenic-nats")["spec"]["replicas"] == 1
    else:
        assert env_value(api, "ATHENIC_AUTH") == "supabase"
        assert env_value(orchestrator, "ATHENIC_SANDBOX") == "e2b"
        assert named(manifests, "StatefulSet", "athenic-nats")["spec"]["replicas"] == 3
        assert of_kind(manifests, "HorizontalPodAutoscaler")
