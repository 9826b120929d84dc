"""Audit tools: read and verify the hash-chained stream."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit import service
from core.audit.schemas import AuditPage
from core.audit.service import AuditVerification
from core.errors import PermissionDenied
from core.ids import MAX_ID, parse_release_id
from core.permissions import Action
from core.targets.models import Project
from tools.base import ToolContext, tool
from tools.inputs import NAME, Instant, ProjectName, ReleaseId


class VerifyAuditInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListAuditInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: ProjectName | None = None
    release_id: ReleaseId | None = None
    actor: str | None = Field(
        default=None, pattern=NAME, description="Who acted, or on whose behalf."
    )
    action: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_]{0,47}$",
        description="An audit action, e.g. approve, apply, freeze.",
    )
    since: Instant | None = Field(default=None, description="Events at or after this time.")
    until: Instant | None = Field(default=None, description="Events before this time.")
    limit: int = Field(default=100, ge=1, le=500)
    before: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="Cursor: events before this seq."
    )


@tool(mutating=False, permission=Action.view)
def verify_audit(ctx: ToolContext, session: Session, args: VerifyAuditInput) -> AuditVerification:
    """Verify the audit hash chain; names the first edited or deleted event."""
    if not ctx.actor.grants:
        raise PermissionDenied(f"{ctx.actor.name} has no role on any project")
    result = service.verify(session)
    if ctx.actor.role_on(None) is not None or not result.unexplained:
        return result
    # Name only releases the caller may see; the others still make the verdict fail.
    visible = set(session.scalars(select(Project.name).where(Project.id.in_(ctx.actor.grants))))
    mine = [u for u in result.unexplained if u.project in visible]
    reason = (
        f"{len(mine)} of your releases are in a state the audit stream does not explain, "
        f"first {mine[0].release_id}: {mine[0].reason}"
        if mine
        else "releases outside your projects are in a state the audit stream does not explain"
    )
    return result.model_copy(update={"unexplained": mine, "reason": reason})


@tool(mutating=False, permission=Action.view)
def list_audit(ctx: ToolContext, session: Session, args: ListAuditInput) -> AuditPage:
    """Audit events (who, what, channel, before/after state), newest first; filter by project,
    release, actor, action and time."""
    return service.list_events(
        session,
        actor=ctx.actor,
        project=args.project,
        release_number=parse_release_id(args.release_id) if args.release_id else None,
        actor_name=args.actor,
        action=args.action,
        since=args.since,
        until=args.until,
        limit=args.limit,
        before=args.before,
    )


TOOLS = [verify_audit, list_audit]
