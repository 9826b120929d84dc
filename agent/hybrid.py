"""The `hybrid` planner: the rules planner answers what it parses with confidence, the LLM the rest.

Both only ever produce proposals that become cards; core decides. The rules planner is fast,
offline and exact on what it knows; the LLM covers phrasing it has never seen.
"""

from __future__ import annotations

from agent.language import asks
from agent.llm import LLMPlanner, TurnFailed
from agent.planner import PlanContext, Planner, PlanResult


def confident(result: PlanResult) -> bool:
    """A rules answer worth keeping: it found calls to make and has nothing to ask.

    The rules planner may run a read to offer choices ("which release?"): that is a question,
    not an answer.
    """
    return bool(result.calls) and result.clarify is None and not asks(result.reply)


class HybridPlanner:
    """Rules first; the LLM for what the rules could only ask about or did not understand."""

    name = "hybrid"

    def __init__(self, rules: Planner, llm: LLMPlanner) -> None:
        self.rules = rules
        self.llm = llm

    def plan(self, text: str, context: PlanContext) -> PlanResult:
        """The rules planner's result if confident, else the LLM's (rules' if the LLM fails)."""
        first = self.rules.plan(text, context)
        if confident(first):
            return first
        try:
            return self.llm.run_turn(text, context)
        except TurnFailed as exc:
            # The model is down or lost: the rules planner's question or help still stands.
            note = f"({exc})"
            return first.model_copy(
                update={"reply": f"{first.reply}\n{note}" if first.reply else note}
            )
