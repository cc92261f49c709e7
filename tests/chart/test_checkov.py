"""A platform team's scanner on the rendered chart: checkov's Kubernetes checks find nothing but
the exceptions the chart documents, each on the resource it concerns, with its reason.

An exception is a ``checkov.io/skipN: CKV_K8S_NN=reason`` annotation the chart renders only
where it applies; the chart README's "Scanner exceptions" lists every one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.checkov import CheckovUnavailableError, ensure_checkov, scan
from tests.support.helm import REPO_ROOT, template_args

pytestmark = pytest.mark.unit

README = REPO_ROOT / "charts/athenic/README.md"


@pytest.fixture(scope="module")
def checkov() -> Path:
    try:
        return ensure_checkov()
    except CheckovUnavailableError as exc:
        pytest.skip(f"checkov could not be installed into .tools/checkov (`make tools`): {exc}")


def documented_exceptions() -> set[str]:
    text = README.read_text()
    section = text[text.index("### Scanner exceptions"):]
    section = section[:section.index("\n#", 1)]
    return set(re.findall(r"`(CKV2?_K8S_\d+)`", section))


def scanned(helm_run: Callable[[list[str]], str], checkov: Path, folder: Path,
            set_values: dict[str, str] | None = None) -> dict[str, list[dict[str, object]]]:
    folder.mkdir()
    (folder / "rendered.yaml").write_text(helm_run(template_args(set_values=set_values)))
    return scan(checkov, folder)["results"]  # type: ignore[no-any-return]


def test_default_values_fail_no_check_but_documented_exceptions(
        helm_run: Callable[[list[str]], str], checkov: Path, tmp_path: Path) -> None:
    results = scanned(helm_run, checkov, tmp_path / "defaults")
    failed = [(f["check_id"], f["resource"]) for f in results.get("failed_checks", [])]
    assert failed == [], f"checkov fails the chart's default rendering: {failed}"
    assert len(results.get("passed_checks", [])) > 400
    skipped = results.get("skipped_checks", [])
    documented = documented_exceptions()
    for check in skipped:
        reason = check.get("check_result", {}).get("suppress_comment")  # type: ignore[union-attr]
        assert reason, f"{check['check_id']} on {check['resource']} is skipped without a reason"
        assert check["check_id"] in documented, f"{check['check_id']} is skipped but not in the README's list"
    assert {check["check_id"] for check in skipped} <= documented


def test_the_image_exceptions_go_when_the_values_pin_images(
        helm_run: Callable[[list[str]], str], checkov: Path, tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    results = scanned(helm_run, checkov, tmp_path / "pinned", {
        "image.digest": digest, "image.pullPolicy": "Always",
        "nats.bundled.image.digest": digest, "nats.bundled.image.pullPolicy": "Always"})
    assert [(f["check_id"], f["resource"]) for f in results.get("failed_checks", [])] == []
    skipped = {check["check_id"] for check in results.get("skipped_checks", [])}
    assert not skipped & {"CKV_K8S_43", "CKV_K8S_15"}, "the checks now run (and pass) on pinned images"
    passed = {(check["check_id"], check["resource"]) for check in results.get("passed_checks", [])}
    assert ("CKV_K8S_43", "Deployment.athenic.athenic-api") in passed
