"""Choosing the planner from the settings."""

from __future__ import annotations

from athenic.orchestrator.planners.base import Planner
from athenic.orchestrator.planners.rules import RulesPlanner
from athenic.orchestrator.settings import OrchestratorSettings
from athenic.shared import names
from athenic.shared.broker import Broker


def make_planner(settings: OrchestratorSettings, broker: Broker) -> Planner:
    if settings.planner == "llm":
        from athenic.orchestrator.planners.llm import make_llm_planner

        return make_llm_planner(settings, broker.bucket(names.HISTORY_BUCKET))
    return RulesPlanner()
