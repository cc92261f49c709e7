"""SandboxQuota objects: validation, who wins a tenant, and publishing into the policies bucket.

One implementation for both writers of the policies bucket: the operator (objects from the
Kubernetes API) and ``athenic dev --quotas FILE`` (objects from a YAML file), so a quota
means the same thing on one machine as in a cluster.

- ``schema`` — ``schema_errors`` checks an object against the CRD's own ``openAPIV3Schema`` (the copy
  shipped in this package, kept identical to ``charts/athenic/crds/`` by a test).
- ``rules`` — ``resolve`` applies what a schema cannot: one quota per tenant. The policies bucket holds
  one policy per tenant, so the rule spans every quota one writer sees (for the operator:
  the namespaces it watches): the oldest quota of a tenant governs it, each newer one is
  Invalid with a message naming the one in force.
- ``bucket`` — ``reconcile_bucket`` makes the bucket hold exactly the given policies (stale keys
  removed), writing only what differs, with compare-and-set against a snapshot taken
  before the caller read its objects, so it never overwrites a newer write by someone else.
- ``files`` — ``load_quotas`` reads a YAML file of them for one machine.
"""

from __future__ import annotations

from collections.abc import Sequence

from athenic.shared.quotas.bucket import (
    PublishReport,
    Stored,
    publish_policies,
    publish_policy,
    read_bucket,
    reconcile_bucket,
    withdraw_policy,
)
from athenic.shared.quotas.files import QuotaFileError, load_and_publish, load_quota_objects, load_quotas
from athenic.shared.quotas.rules import Resolution, Standing, resolve
from athenic.shared.quotas.schema import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    Quota,
    QuotaRef,
    crd_manifest,
    quota_of,
    quota_schema,
    schema_errors,
)

__all__: Sequence[str] = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "PublishReport",
    "Quota",
    "QuotaFileError",
    "QuotaRef",
    "Resolution",
    "Standing",
    "Stored",
    "crd_manifest",
    "load_and_publish",
    "load_quota_objects",
    "load_quotas",
    "publish_policies",
    "publish_policy",
    "quota_of",
    "quota_schema",
    "read_bucket",
    "reconcile_bucket",
    "resolve",
    "schema_errors",
    "withdraw_policy",
]
