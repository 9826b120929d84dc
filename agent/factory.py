"""The planner the configuration asks for."""

from __future__ import annotations

from agent.planner import Planner
from agent.rules.planner import RulesPlanner
from core.config import Settings


def make_planner(settings: Settings) -> Planner:
    """`rules` (the default) or `llm` on the configured OpenAI-compatible endpoint."""
    if settings.planner == "llm":
        from agent.llm import LLMPlanner

        return LLMPlanner.from_settings(settings)
    return RulesPlanner()
