"""The planner the configuration asks for."""

from __future__ import annotations

from agent.planner import Planner
from agent.rules.planner import RulesPlanner
from core.config import Settings


def planner_name(settings: Settings) -> str:
    """`rules`, `llm` or `hybrid`: as set, else hybrid when an LLM endpoint is configured."""
    if settings.planner:
        return settings.planner
    return "hybrid" if settings.llm_base_url else "rules"


def make_planner(settings: Settings) -> Planner:
    """`rules`, `llm` on the configured OpenAI-compatible endpoint, or `hybrid` of both."""
    name = planner_name(settings)
    if name == "rules":
        return RulesPlanner()
    from agent.llm import LLMPlanner

    llm = LLMPlanner.from_settings(settings)
    if name == "llm":
        return llm
    from agent.hybrid import HybridPlanner

    return HybridPlanner(RulesPlanner(), llm)
