"""The chart's values are documented in one place (the `# --` comments of values.yaml); the
README's values table and the schema's descriptions are generated from it and kept current."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType

import pytest
import yaml

from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.unit

ROOT = REPO_ROOT


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_values_doc", ROOT / "scripts/chart_values_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_value_has_a_description() -> None:
    _, _, missing = _generator().render()
    assert not missing, f"values without a `# --` comment in values.yaml: {missing}"


def test_the_readme_table_and_the_schema_are_generated_from_the_comments() -> None:
    generator = _generator()
    readme, schema, _ = generator.render()
    assert (ROOT / "charts/athenic/README.md").read_text() == readme, "run python scripts/chart_values_doc.py"
    assert (ROOT / "charts/athenic/values.schema.json").read_text() == schema, "run python scripts/chart_values_doc.py"


def test_each_description_lands_on_a_value_the_schema_knows() -> None:
    generator = _generator()
    docs = generator.descriptions((ROOT / "charts/athenic/values.yaml").read_text())
    schema = json.loads((ROOT / "charts/athenic/values.schema.json").read_text())
    unknown = [key for key in docs if generator._schema_node(schema, key) is None]
    assert not unknown, f"documented values the schema does not define: {unknown}"
    assert generator._schema_node(schema, "api.replicaCount")["description"] == docs["api.replicaCount"]


def test_a_value_without_a_comment_is_caught() -> None:
    generator = _generator()
    text = (ROOT / "charts/athenic/values.yaml").read_text() + "\nundocumentedExample: 1\n"
    docs = generator.descriptions(text)
    rows = generator.values(yaml.safe_load(text), docs)
    assert ("undocumentedExample", 1) in rows and "undocumentedExample" not in docs
