"""Choosing the planner from the settings."""

from __future__ import annotations

from athenic.orchestrator.planners.base import Planner
from athenic.orchestrator.planners.rules import RulesPlanner
from athenic.orchestrator.settings import OrchestratorSettings


def make_planner(settings: OrchestratorSettings) -> Planner:
    if settings.planner == "llm":
        from athenic.orchestrator.planners.llm import make_llm_planner

        return make_llm_planner(settings)
    return RulesPlanner(max_blocks=settings.athenic_rules_max_blocks)
