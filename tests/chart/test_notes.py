"""NOTES.txt: what `helm install` prints (how to reach the app, set a quota, the missing key).

`helm template` skips NOTES.txt and `helm install --dry-run` needs a cluster, so the test
renders it through `tpl` in a copy of the chart (same template engine, same helpers).
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart.value_sets import KUBE_VERSION
from tests.support.helm import CHART_DIR, parse_manifests, template_args

pytestmark = pytest.mark.unit

NOTES_PROBE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: rendered-notes
data:
  notes: {{ tpl (.Files.Get "files/NOTES.txt") . | quote }}
"""


@pytest.fixture(scope="module")
def notes(helm_run: Callable[[list[str]], str], tmp_path_factory: pytest.TempPathFactory
          ) -> Callable[[dict[str, Any]], str]:
    chart = tmp_path_factory.mktemp("notes") / "athenic"
    shutil.copytree(CHART_DIR, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "files" / "NOTES.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(NOTES_PROBE)
    values_dir = tmp_path_factory.mktemp("notes-values")

    def render(values: dict[str, Any]) -> str:
        path = values_dir / f"v{len(list(values_dir.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump(values))
        args = template_args([path], kube_version=KUBE_VERSION, include_crds=False, chart=chart)
        args += ["--show-only", "templates/zz-notes.yaml"]
        (probe,) = parse_manifests(helm_run(args))
        return str(probe["data"]["notes"])

    return render


def quota_example(text: str) -> dict[str, Any]:
    block = text.split("<<'YAML' | kubectl")[1].split("\n", 1)[1].split("YAML\n")[0]
    loaded: dict[str, Any] = yaml.safe_load(textwrap.dedent(block))
    return loaded


def test_notes_say_how_to_reach_the_app_and_what_is_missing(notes: Callable[[dict[str, Any]], str]) -> None:
    text = notes({})
    assert "kubectl -n athenic port-forward svc/athenic-api 3000:3000" in text
    assert "helm test athenic -n athenic" in text
    # defaults: E2B without a key -> the exact command that creates the Secret the pods wait for
    assert "kubectl -n athenic create secret generic athenic-e2b --from-literal=E2B_API_KEY=" in text

    with_key = notes({"e2b": {"existingSecret": "mine"},
                      "ingress": {"enabled": True, "hosts": [{"host": "chat.example.com"}],
                                  "tls": [{"secretName": "t", "hosts": ["chat.example.com"]}]}})
    assert "create secret generic" not in with_key
    assert "https://chat.example.com/api/health" in with_key
    assert "wss://" in with_key


def test_the_quota_example_is_valid_for_the_crd(notes: Callable[[dict[str, Any]], str]) -> None:
    quota = quota_example(notes({}))
    crd = yaml.safe_load((CHART_DIR / "crds" / "sandboxquotas.athenic.dev.yaml").read_text())
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    assert quota["apiVersion"] == f"{group}/{version['name']}"
    assert quota["kind"] == kind
    jsonschema.validate(quota["spec"], version["schema"]["openAPIV3Schema"]["properties"]["spec"])
