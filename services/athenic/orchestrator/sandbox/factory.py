"""Pick the sandbox backend from the settings (``ATHENIC_SANDBOX``, else E2B when keyed)."""

from __future__ import annotations

from athenic.orchestrator.policies import PolicyCache
from athenic.orchestrator.sandbox.base import SandboxBackend
from athenic.orchestrator.settings import OrchestratorSettings
from athenic.shared import names
from athenic.shared.broker import Broker
from athenic.shared.settings import SettingsError


def make_sandbox(settings: OrchestratorSettings, *, broker: Broker | None = None,
                 policies: PolicyCache | None = None) -> SandboxBackend:
    """The backend; E2B needs the ``broker`` (its sandboxes bucket) and the tenants' ``policies``."""
    if settings.sandbox_backend == "e2b":
        if not settings.e2b_api_key:
            raise SettingsError("bad setting E2B_API_KEY: ATHENIC_SANDBOX=e2b needs an E2B API key")
        if broker is None:
            raise SettingsError("the E2B backend keeps its sandboxes in NATS: it needs the broker")
        from athenic.orchestrator.sandbox.e2b import E2BSandbox

        return E2BSandbox(
            kv=broker.bucket(names.SANDBOXES_BUCKET),
            policies=policies,
            api_key=settings.e2b_api_key,
            default_template=settings.e2b_template,
            output_limit_bytes=settings.athenic_output_limit_bytes,
            request_timeout_seconds=settings.e2b_request_timeout_seconds,
        )
    from athenic.orchestrator.errors import TerminalError
    from athenic.orchestrator.sandbox.kernels import KernelSettings
    from athenic.orchestrator.sandbox.local import LocalSandbox

    because = None
    if settings.athenic_sandbox_require_isolation:
        because = "ATHENIC_SANDBOX_REQUIRE_ISOLATION is set"
    elif settings.athenic_auth != "none" and not settings.athenic_sandbox_allow_unisolated:
        # users who sign in are strangers to each other: rlimits alone would let one read another's run
        because = (f"ATHENIC_AUTH={settings.athenic_auth} is set (ATHENIC_SANDBOX_ALLOW_UNISOLATED=true "
                   "runs the rlimits-only sandbox anyway)")
    try:
        return LocalSandbox(
            output_limit_bytes=settings.athenic_output_limit_bytes,
            tmp_mib=settings.athenic_sandbox_tmp_mib,
            max_processes=settings.athenic_sandbox_max_processes,
            bwrap_path=settings.athenic_bwrap_path,
            require_isolation=because is not None,
            isolation_required_because=because,
            python_env=settings.athenic_sandbox_python_env,
            max_images=settings.athenic_sandbox_max_images,
            image_bytes=settings.athenic_sandbox_image_bytes,
            limits_mode=settings.athenic_sandbox_limits,
            kernels=KernelSettings(pool_size=settings.athenic_kernel_pool_size, max_kernels=settings.athenic_kernel_max,
                                   max_per_tenant=settings.athenic_kernel_max_per_tenant),
        )
    except TerminalError as exc:
        raise SettingsError(str(exc)) from None
