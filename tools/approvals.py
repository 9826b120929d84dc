"""Approval tools: decide, decide in batch, take over, the inbox."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from core.flows import decisions
from core.flows.decisions import BatchItem
from core.ids import MAX_ID, parse_release_id, release_id
from core.permissions import Action
from core.releases.schemas import ApprovalPage, ReleaseRead
from tools.base import ToolContext, tool
from tools.inputs import Comment, Environment, PageSize, ProjectName, ReleaseId


class ApproveInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_id: ReleaseId
    comment: Comment | None = None


class RejectInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_id: ReleaseId
    reason: Comment | None = Field(default=None, description="Why; shown to the requester.")


class TakeoverInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_id: ReleaseId


def _once_each(ids: list[str]) -> list[str]:
    """`R-1`, `r1` and `1` are one release: canonical ids, each once, in the order given."""
    return list(dict.fromkeys(release_id(parse_release_id(value)) for value in ids))


class BatchApproveInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_ids: list[ReleaseId] = Field(min_length=1, max_length=100)
    comment: Comment | None = None

    @field_validator("release_ids")
    @classmethod
    def _canonical(cls, ids: list[str]) -> list[str]:
        return _once_each(ids)


class BatchRejectInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_ids: list[ReleaseId] = Field(min_length=1, max_length=100)
    reason: Comment | None = None

    @field_validator("release_ids")
    @classmethod
    def _canonical(cls, ids: list[str]) -> list[str]:
        return _once_each(ids)


class BatchResult(BaseModel):
    """One outcome per release; each decision is audited on its own."""

    items: list[BatchItem]


class ListApprovalsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: ProjectName | None = None
    environment: Environment | None = None
    risk: Literal["low", "medium", "high"] | None = None
    state: Literal["pending", "approved", "rejected", "cancelled", "expired", "void"] | None = None
    mine: bool = Field(default=False, description="Only tickets I can decide, hold or requested.")
    limit: PageSize = 50
    before: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="Cursor: tickets older than it."
    )


# The decision tools' core reads and locks the release first, and answers one the caller
# cannot see as a missing one (core.flows.decisions): no visibility check reads it before.
@tool(mutating=True, permission=Action.approve, conceals_itself=True)
def approve_release(ctx: ToolContext, session: Session, args: ApproveInput) -> ReleaseRead:
    """Approve the current step of a release's approval. Requesters never approve their own."""
    return decisions.approve_release(
        session, actor=ctx.actor, runner=ctx.runner, release=args.release_id, comment=args.comment
    )


@tool(mutating=True, permission=Action.approve, conceals_itself=True)
def reject_release(ctx: ToolContext, session: Session, args: RejectInput) -> ReleaseRead:
    """Reject a release waiting for approval; the release ends rejected."""
    return decisions.reject_release(
        session, actor=ctx.actor, release=args.release_id, reason=args.reason
    )


def _batch(
    ctx: ToolContext, session: Session, ids: list[str], decision: str, comment: str | None
) -> BatchResult:
    """Each release decided on its own; one the caller cannot see reads as a missing one."""
    items = decisions.decide_batch(
        session,
        actor=ctx.actor,
        runner=ctx.runner,
        releases=ids,
        decision=decision,
        comment=comment,
    )
    return BatchResult(items=items)


@tool(mutating=True, permission=Action.approve)
def approve_releases(ctx: ToolContext, session: Session, args: BatchApproveInput) -> BatchResult:
    """Approve several releases at once; each is decided and audited on its own."""
    return _batch(ctx, session, args.release_ids, "approve", args.comment)


@tool(mutating=True, permission=Action.approve)
def reject_releases(ctx: ToolContext, session: Session, args: BatchRejectInput) -> BatchResult:
    """Reject several releases at once; each is decided and audited on its own."""
    return _batch(ctx, session, args.release_ids, "reject", args.reason)


@tool(mutating=True, permission=Action.approve, conceals_itself=True)
def takeover_approval(ctx: ToolContext, session: Session, args: TakeoverInput) -> ReleaseRead:
    """Take over a pending approval ticket: you become its assignee."""
    return decisions.takeover_ticket(session, actor=ctx.actor, release=args.release_id)


@tool(mutating=False, permission=Action.view)
def list_approvals(ctx: ToolContext, session: Session, args: ListApprovalsInput) -> ApprovalPage:
    """The global approval inbox, newest first: filter by project, environment, risk, state, or
    `mine` (tickets I can decide or requested)."""
    return decisions.inbox(
        session,
        actor=ctx.actor,
        project=args.project,
        environment=args.environment,
        risk=args.risk,
        state=args.state,
        mine=args.mine,
        limit=args.limit,
        before=args.before,
    )


TOOLS = [
    approve_release,
    reject_release,
    approve_releases,
    reject_releases,
    takeover_approval,
    list_approvals,
]
