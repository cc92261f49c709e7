"""values.schema.json refuses bad values, and bad combinations fail with the fix to make."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.helm import HelmError, template_args

pytestmark = pytest.mark.unit

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
