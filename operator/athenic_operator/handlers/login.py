"""How the operator reaches the Kubernetes API."""

from __future__ import annotations

from typing import Any

import kopf

from athenic_operator.settings import OperatorSettings


def login(*, operator_settings: OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    url = operator_settings.athenic_operator_kube_api_url
    if url:  # a plain endpoint such as `kubectl proxy`: it adds the credentials itself
        return kopf.ConnectionInfo(server=url)
    # In a pod: the service account; elsewhere: the kubeconfig (both via the official client).
    info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
    return info
