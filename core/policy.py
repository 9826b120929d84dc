"""Approval policy: which steps a release needs, decided from project, environment and tier."""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from core.targets.models import PolicyRule, Target


class PolicyStep(BaseModel):
    """`count` distinct eligible approvers from `group`."""

    group: str
    count: int = 1


class PolicyDecision(BaseModel):
    """The steps a release needs (none: approved on submit) and why."""

    needs_approval: bool
    steps: list[PolicyStep] = Field(default_factory=list)
    reason: str


# Built once: every submit decides.
_RULES = (
    select(PolicyRule)
    .where((PolicyRule.project_id == bindparam("project_id")) | PolicyRule.project_id.is_(None))
    .order_by(PolicyRule.project_id.is_(None), PolicyRule.position)
)


def _matching_rules(session: Session, target: Target) -> list[PolicyRule]:
    rules = list(session.scalars(_RULES, {"project_id": target.project_id}))
    return [
        r
        for r in rules
        if (r.environment in (None, target.environment))
        and (r.risk_tier in (None, target.risk_tier))
    ]


def emergency_groups(session: Session, target: Target) -> list[str] | None:
    """The groups named by the emergency policy that applies to `target` (None: no such policy).

    Members of these groups (and admins) may declare an emergency rollback there.
    """
    for rule in _matching_rules(session, target):
        if rule.emergency:
            return [PolicyStep.model_validate(s).group for s in rule.steps]
    return None


def decide(session: Session, *, target: Target, emergency: bool = False) -> PolicyDecision:
    """The approval a release on `target` needs: project rules, then global, then the default.

    `emergency` is honoured only for rollbacks whose declarer was entitled (checked when the
    rollback is previewed); the emergency rule is then preferred.
    """
    matching = _matching_rules(session, target)
    candidates = [r for r in matching if r.emergency] if emergency else []
    candidates += [r for r in matching if not r.emergency]
    where = f"{target.environment} is {target.risk_tier} risk"
    if candidates:
        rule = candidates[0]
        steps = [PolicyStep.model_validate(s) for s in rule.steps]
        scope = "project" if rule.project_id is not None else "global"
        kind = "emergency " if rule.emergency else ""
        return PolicyDecision(
            needs_approval=bool(steps),
            steps=steps,
            reason=f"{where}: {describe_steps(steps)} ({scope} {kind}policy #{rule.position + 1} "
            f"for {target.environment})",
        )
    if target.risk_tier == "high":  # protection follows the tier, whatever the name
        steps = [PolicyStep(group="approvers", count=1)]
        return PolicyDecision(
            needs_approval=True,
            steps=steps,
            reason=f"{where}: {describe_steps(steps)} (default policy: every high-risk target "
            "needs one project approver)",
        )
    return PolicyDecision(
        needs_approval=False,
        reason=f"{where}: approved on submit (default policy)",
    )


def describe_steps(steps: list[PolicyStep]) -> str:
    """The steps in words: `owners, then sre` (`2 of approvers` when a step needs several)."""
    if not steps:
        return "approved on submit"
    return ", then ".join(s.group if s.count == 1 else f"{s.count} of {s.group}" for s in steps)
