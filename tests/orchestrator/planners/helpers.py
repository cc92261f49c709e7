from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from athenic.orchestrator.planners.base import Planner
from athenic.orchestrator.planners.llm import make_llm_planner
from athenic.orchestrator.records import Outcome, final_response
from athenic.orchestrator.settings import OrchestratorSettings
from athenic.shared.messages import ChatRequest, Execution, Turn, iso_timestamp
from athenic.shared.settings import load
from tests.orchestrator.planners.run_context import SubprocessRunContext
from tests.support.openai_models import API_KEY, MODEL
from tests.support.openai_standin import OpenAIStandIn, Reply, Script


def settings_for(base_url: str, **env: str) -> OrchestratorSettings:
    """Settings as the orchestrator loads them: from environment variables alone."""
    values = {
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": API_KEY,
        "ATHENIC_LLM_MODEL": MODEL,
        "ATHENIC_LLM_MAX_RETRIES": "0",
        "ATHENIC_LLM_TIMEOUT_SECONDS": "10",
        **env,
    }
    return load(OrchestratorSettings, {k: v for k, v in values.items() if v is not None})


def chat(message: str, client_id: str = "client-1", request_id: str | None = None) -> ChatRequest:
    return ChatRequest(
        request_id=request_id or uuid.uuid4().hex,
        client_id=client_id,
        message=message,
        submitted_at=iso_timestamp(),
    )


@asynccontextmanager
async def planner(settings: OrchestratorSettings) -> AsyncIterator[Planner]:
    built = make_llm_planner(settings)
    try:
        yield built
    finally:
        await built.aclose()


@asynccontextmanager
async def scripted(
    script: Script | Sequence[Reply], **env: str
) -> AsyncIterator[tuple[OpenAIStandIn, Planner]]:
    """A scripted model on loopback and an LLM planner pointed at it by settings alone."""
    async with OpenAIStandIn(script) as llm, planner(settings_for(llm.base_url, **env)) as built:
        yield llm, built


@dataclass(frozen=True)
class Answered:
    """A planner's answer with what ran for it (which the worker keeps in its Job)."""

    message: str
    requires_e2b: bool
    executions: list[Execution]


async def ask(p: Planner, request: ChatRequest, ctx: SubprocessRunContext | None = None) -> Answered:
    """Answer ``request`` as the worker does: then the turn joins the context's conversation log."""
    ctx = ctx or SubprocessRunContext()
    result = await p.answer(request, ctx)
    response = final_response(request, Outcome("completed", message=result.message,
                                               requires_e2b=result.requires_e2b), list(ctx.executions))
    ctx.turns.append(Turn(request_id=request.request_id, message=request.message,
                          submitted_at=request.submitted_at, status="completed", response=response))
    return Answered(result.message, result.requires_e2b, list(ctx.executions))
