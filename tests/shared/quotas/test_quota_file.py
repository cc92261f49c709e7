"""``athenic dev --quotas FILE``: the same validation as the cluster, the same publishing as
the operator (into a real nats-server)."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from athenic.shared import names
from athenic.shared.policy import SandboxPolicy, encode_policy, policy_decoder
from athenic.shared.quotas import QuotaFileError, load_and_publish, load_quotas, publish_policies, read_bucket
from athenic.shared.settings import NatsSettings, load
from athenic.shared.topology import bucket_configs, ensure_bucket

pytestmark = pytest.mark.integration

TWO_TENANTS = """
apiVersion: athenic.dev/v1alpha1
kind: SandboxQuota
metadata: {name: default}
spec: {tenant: "*", maxConcurrentExecutions: 2}
---
# a comment-only document and an empty one are skipped
---
apiVersion: athenic.dev/v1alpha1
kind: SandboxQuota
metadata: {name: acme, namespace: team-a}
spec: {tenant: acme, memoryMiB: 1024, onExceed: Reject}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "quotas.yaml"
    path.write_text(text)
    return path


def test_loads_every_document_with_defaults(tmp_path: Path) -> None:
    policies = {p.tenant: p for p in load_quotas(write(tmp_path, TWO_TENANTS))}
    assert set(policies) == {"*", "acme"}
    assert policies["*"].max_concurrent_executions == 2
    assert policies["acme"] == SandboxPolicy(tenant="acme", memory_mib=1024, on_exceed="Reject")


def test_accepts_kubectl_list_output(tmp_path: Path) -> None:
    text = """
apiVersion: v1
kind: List
items:
- {apiVersion: athenic.dev/v1alpha1, kind: SandboxQuota, metadata: {name: a}, spec: {tenant: a}}
- {apiVersion: athenic.dev/v1alpha1, kind: SandboxQuota, metadata: {name: b}, spec: {tenant: b}}
"""
    assert sorted(p.tenant for p in load_quotas(write(tmp_path, text))) == ["a", "b"]


@pytest.mark.parametrize(("text", "message"), [
    ("apiVersion: athenic.dev/v1alpha1\nkind: SandboxQuota\nmetadata: {name: q}\n"
     "spec: {tenant: acme, maxConcurrentExecutions: 0}\n", "spec.maxConcurrentExecutions"),
    ("apiVersion: athenic.dev/v1alpha1\nkind: SandboxQuota\nmetadata: {name: q}\n"
     "spec: {tenant: acme, maxConcurentExecutions: 3}\n", "spec.maxConcurentExecutions: unknown field"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: q}\n", "apiVersion/kind must be"),
    ("- just\n- a list\n", "not a mapping"),
    ("spec: [unclosed\n", "quotas.yaml"),
])
def test_refuses_what_the_cluster_would(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(QuotaFileError, match=message.replace("[", r"\[")):
        load_quotas(write(tmp_path, text))


def test_refuses_two_quotas_for_one_tenant_naming_both(tmp_path: Path) -> None:
    text = TWO_TENANTS + """---
apiVersion: athenic.dev/v1alpha1
kind: SandboxQuota
metadata: {name: acme-2, namespace: team-b}
spec: {tenant: acme}
"""
    with pytest.raises(QuotaFileError) as caught:
        load_quotas(write(tmp_path, text))
    assert "team-b/acme-2" in str(caught.value)
    assert "older SandboxQuota team-a/acme" in str(caught.value)


def test_reports_every_problem_at_once(tmp_path: Path) -> None:
    text = """
apiVersion: athenic.dev/v1alpha1
kind: SandboxQuota
metadata: {name: one}
spec: {tenant: acme, memoryMiB: 1}
---
apiVersion: athenic.dev/v1alpha1
kind: SandboxQuota
metadata: {name: two}
spec: {tenant: "bad tenant"}
"""
    with pytest.raises(QuotaFileError) as caught:
        load_quotas(write(tmp_path, text))
    assert "spec.memoryMiB" in str(caught.value)
    assert "spec.tenant" in str(caught.value)


async def test_publish_reconciles_the_bucket(tmp_path: Path, nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        config = bucket_configs(load(NatsSettings, {"NATS_URL": nats_url}))[names.POLICIES_BUCKET]
        kv = await ensure_bucket(js, config)
        await kv.put("tenant.ghost", encode_policy(SandboxPolicy(tenant="ghost")))
        await kv.put("tenant.acme", encode_policy(SandboxPolicy(tenant="acme", memory_mib=1024,
                                                                on_exceed="Reject")))
        acme_revision = (await read_bucket(kv))["tenant.acme"].revision

        report = await load_and_publish(kv, write(tmp_path, TWO_TENANTS))

        stored = await read_bucket(kv)
        assert set(stored) == {"default", "tenant.acme"}
        assert policy_decoder.decode(stored["default"].value).max_concurrent_executions == 2
        assert stored["tenant.acme"].revision == acme_revision  # unchanged: not rewritten
        assert (report.written, report.removed, report.unchanged) == (["default"], ["tenant.ghost"], ["tenant.acme"])

        await publish_policies(kv, [])  # an empty file: the built-in defaults apply
        assert await read_bucket(kv) == {}
    finally:
        await nc.close()


async def test_a_bad_file_publishes_nothing(tmp_path: Path, nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        config = bucket_configs(load(NatsSettings, {"NATS_URL": nats_url}))[names.POLICIES_BUCKET]
        kv = await ensure_bucket(nc.jetstream(), config)
        await kv.put("tenant.ghost", encode_policy(SandboxPolicy(tenant="ghost")))
        before = await read_bucket(kv)

        with pytest.raises(QuotaFileError):
            await load_and_publish(kv, write(tmp_path, TWO_TENANTS + "---\nkind: SandboxQuota\n"))

        assert await read_bucket(kv) == before  # the good documents were not published either
    finally:
        await nc.close()
