"""Approval policy: which steps a release needs, decided from project, environment and tier."""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.targets.models import PolicyRule, Target

DEFAULT_PROTECTED = ("prod",)


class PolicyStep(BaseModel):
    """`count` distinct eligible approvers from `group`."""

    group: str
    count: int = 1


class PolicyDecision(BaseModel):
    """The steps a release needs (none: approved on submit) and why."""

    needs_approval: bool
    steps: list[PolicyStep] = Field(default_factory=list)
    reason: str


def decide(session: Session, *, target: Target, emergency: bool = False) -> PolicyDecision:
    """The approval a release on `target` needs: project rules, then global, then the default."""
    rules = list(
        session.scalars(
            select(PolicyRule)
            .where((PolicyRule.project_id == target.project_id) | PolicyRule.project_id.is_(None))
            .order_by(PolicyRule.project_id.is_(None), PolicyRule.position)
        )
    )
    matching = [
        r
        for r in rules
        if (r.environment in (None, target.environment))
        and (r.risk_tier in (None, target.risk_tier))
    ]
    candidates = [r for r in matching if r.emergency] if emergency else []
    candidates += [r for r in matching if not r.emergency]
    if candidates:
        rule = candidates[0]
        steps = [PolicyStep.model_validate(s) for s in rule.steps]
        scope = "project" if rule.project_id is not None else "global"
        kind = "emergency " if rule.emergency else ""
        return PolicyDecision(
            needs_approval=bool(steps),
            steps=steps,
            reason=f"{scope} {kind}policy #{rule.position + 1} for {target.environment}",
        )
    if target.environment in DEFAULT_PROTECTED:
        return PolicyDecision(
            needs_approval=True,
            steps=[PolicyStep(group="approvers", count=1)],
            reason=f"default policy: {target.environment} needs one project approver",
        )
    return PolicyDecision(
        needs_approval=False,
        reason=f"default policy: {target.environment} is approved on submit",
    )
