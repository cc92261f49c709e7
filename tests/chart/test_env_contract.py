"""Every environment variable the chart sets is one the service it runs actually reads.

The services read their configuration through msgspec settings structs whose field names
are the variables; a chart variable no struct declares is silently ignored in production.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from athenic.api.settings import ApiSettings
from athenic.notifier.settings import NotifierSettings
from athenic.orchestrator.settings import OrchestratorSettings, QuotaSettings
from athenic.shared.settings import FileSettings, LogSettings, NatsSettings
from athenic_operator.settings import OperatorSettings
from tests.chart.manifests import Manifest, container, env
from tests.chart.value_sets import VALUE_SETS

pytestmark = pytest.mark.unit

READ_BY: dict[str, list[type[msgspec.Struct]]] = {
    "athenic-api": [ApiSettings, NatsSettings, LogSettings, FileSettings],
    "athenic-orchestrator": [OrchestratorSettings, QuotaSettings, NatsSettings, LogSettings, FileSettings],
    "athenic-operator": [OperatorSettings, NatsSettings, LogSettings],
    "athenic-notifier": [NotifierSettings, NatsSettings, LogSettings],
}
# read by libraries rather than our settings: kopf names its peering identity after POD_ID,
# uvicorn takes its trusted proxies from FORWARDED_ALLOW_IPS
READ_ELSEWHERE = {"athenic-operator": {"POD_ID"}, "athenic-api": {"FORWARDED_ALLOW_IPS"}}


def declared(structs: list[type[msgspec.Struct]]) -> set[str]:
    return {name for struct in structs for name in struct.__struct_encode_fields__}


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_chart_sets_only_variables_the_services_read(render: Callable[..., list[Manifest]],
                                                       value_set: str) -> None:
    manifests = render(value_set)
    for deployment, structs in READ_BY.items():
        names = set(env(container(manifests, deployment)))
        known = declared(structs) | READ_ELSEWHERE.get(deployment, set())
        assert names - known == set(), f"{value_set}: {deployment} is given variables nothing reads"
