"""Orchestrator settings (environment variables, see docs/configuration.md)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from athenic.shared.settings import EnvSettings, Positive, PositiveFloat


class OrchestratorSettings(EnvSettings, frozen=True, rename=str.upper):
    athenic_concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    # 0 picks a free port (logged: `health server listening`)
    athenic_health_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9090
    athenic_health_host: str = "0.0.0.0"
    # How long a fetch waits for a message before asking again.
    athenic_fetch_timeout_seconds: PositiveFloat = 5.0
    athenic_drain_seconds: PositiveFloat = 30.0
    # sandbox: `e2b` when E2B_API_KEY is set, else `local`
    athenic_sandbox: Literal["local", "e2b"] | None = None
    athenic_execution_timeout_seconds: PositiveFloat = 30.0
    athenic_output_limit_bytes: Positive = 64 * 1024
    # The response record's (and the logged turn's) byte budget; used up to half the connected
    # server's max_payload (docs/api.md: "The record budget")
    athenic_record_max_bytes: Annotated[int, msgspec.Meta(ge=8 * 1024)] = 256 * 1024
    # rules planner: fenced blocks run per message (the rest are skipped, and the answer says so)
    athenic_rules_max_blocks: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    e2b_api_key: str | None = None
    e2b_template: str | None = None
    # planner: `llm` when OPENAI_BASE_URL or OPENAI_API_KEY is set, else `rules`
    athenic_planner: Literal["rules", "llm"] | None = None
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    athenic_llm_model: str = "gpt-4o-mini"
    # llm planner bounds (docs/planners.md)
    athenic_llm_max_steps: Annotated[int, msgspec.Meta(ge=1, le=50)] = 6
    athenic_llm_max_calls_per_step: Annotated[int, msgspec.Meta(ge=1, le=32)] = 4
    athenic_llm_max_tokens: Positive = 1024
    athenic_llm_token_budget: Positive = 50_000
    # newer OpenAI reasoning models accept only max_completion_tokens; most other servers max_tokens
    athenic_llm_max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    athenic_llm_timeout_seconds: PositiveFloat = 60.0
    athenic_llm_max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    athenic_llm_tool_output_chars: Annotated[int, msgspec.Meta(ge=200)] = 4000
    athenic_llm_system_prompt: str | None = None
    athenic_history_messages: Annotated[int, msgspec.Meta(ge=0, le=200)] = 20
    athenic_history_message_chars: Annotated[int, msgspec.Meta(ge=200)] = 4000
    # sandboxes (docs/sandboxes.md)
    # local backend: where bubblewrap is (found on PATH when unset); refuse to start without it
    athenic_bwrap_path: str | None = None
    athenic_sandbox_require_isolation: bool = False
    # With auth on (a service of many users) the rlimits-only mode is refused unless forced here.
    athenic_sandbox_allow_unisolated: bool = False
    # The api's ATHENIC_AUTH (the chart and `athenic dev` give both services the same value).
    athenic_auth: Literal["none", "supabase"] = "none"
    # local backend: size of the private /tmp (and the largest file the code may write)
    athenic_sandbox_tmp_mib: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 64
    athenic_sandbox_max_processes: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    # local backend: the sandbox's Python environment (numpy, pandas, matplotlib...); where none
    # is, Python runs on the bare interpreter (with a warning); relative paths are from the cwd
    athenic_sandbox_python_env: str = ".athenic/sandbox-python"
    # local backend: matplotlib figures returned as PNG results per run, and their bytes in all
    athenic_sandbox_max_images: Annotated[int, msgspec.Meta(ge=0, le=64)] = 4
    athenic_sandbox_image_bytes: Annotated[int, msgspec.Meta(ge=1024, le=4 * 1024 * 1024)] = 256 * 1024
    # local backend: how run-wide budgets hold: a cgroup per run (`cgroup`: refuse to start without
    # one), the watchdog over the run's process tree (`watchdog`), or a cgroup where one can be made
    athenic_sandbox_limits: Literal["auto", "cgroup", "watchdog"] = "auto"
    # local backend with bubblewrap: Python kernels kept per conversation (0: none, every run
    # starts afresh), per tenant, and fresh ones kept ready (README "Sandboxes: kernels")
    athenic_kernel_max: Annotated[int, msgspec.Meta(ge=0, le=4096)] = 32
    athenic_kernel_max_per_tenant: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 16
    athenic_kernel_pool_size: Annotated[int, msgspec.Meta(ge=0, le=256)] = 2
    # e2b backend: bound of each control-plane request (create, kill); executions use the run timeout
    e2b_request_timeout_seconds: PositiveFloat = 30.0

    @property
    def sandbox_backend(self) -> Literal["local", "e2b"]:
        if self.athenic_sandbox is not None:
            return self.athenic_sandbox
        return "e2b" if self.e2b_api_key else "local"

    @property
    def planner(self) -> Literal["rules", "llm"]:
        if self.athenic_planner is not None:
            return self.athenic_planner
        return "llm" if (self.openai_base_url or self.openai_api_key) else "rules"


class QuotaSettings(EnvSettings, frozen=True, rename=str.upper):
    """How the orchestrators enforce sandbox quotas together (leases in NATS KV)."""

    # How long a lease outlives the replica holding it (it is rewritten every third of this).
    athenic_lease_ttl_seconds: Annotated[int, msgspec.Meta(ge=3, le=3600)] = 15
    # How often a queued execution re-checks without a release (expired leases, raised limits).
    athenic_quota_recheck_seconds: PositiveFloat = 2.0
