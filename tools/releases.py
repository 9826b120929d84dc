"""Release tools: preview, re-preview, submit, apply, cancel, rollback and reads."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select
from sqlalchemy.orm import Session

from core.flows import apply, preview, rollback, submit, views
from core.permissions import Action
from core.releases.schemas import ReleasePage, ReleaseRead, Timeline
from core.releases.search import TEXT_MAX
from runtimes.base import ServiceChange
from tools.base import ToolContext, tool
from tools.inputs import (
    NAME,
    Comment,
    Environment,
    Instant,
    PageSize,
    ProjectName,
    ReleaseId,
    ServiceName,
)

# The lifecycle vocabulary (core.releases.lifecycle.State), spelled out so the schema names it.
LifecycleStateName = Literal[
    "previewed",
    "pending_approval",
    "approved",
    "rejected",
    "cancelled",
    "expired",
    "applying",
    "applied",
    "failed",
    "rolling_back",
    "rolled_back",
    "rollback_failed",
]


class PreviewReleaseInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: ProjectName
    environment: Environment
    changes: dict[ServiceName, ServiceChange] = Field(
        min_length=1,
        max_length=50,
        description="Per service: image_tag, image, replicas and/or env to change.",
        examples=[{"web": {"image_tag": "1.4.2"}}],
        json_schema_extra={"additionalProperties": False},
    )
    emergency: bool = Field(default=False, description="Use the emergency policy, if declared.")


class ReleaseInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_id: ReleaseId


class CancelReleaseInput(ReleaseInput):
    reason: Comment | None = Field(default=None, description="Why; shown in the timeline.")


class RollbackReleaseInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: ProjectName
    environment: Environment
    services: list[ServiceName] | None = Field(
        default=None,
        max_length=50,
        description="Services to roll back; default: every service of the newest release.",
    )
    to_release_id: ReleaseId | None = Field(
        default=None,
        description="Restore the target's applied state as of this release.",
    )
    emergency: bool = Field(
        default=False,
        description="Declare an emergency (admins and groups the emergency policy names only).",
    )


class ListReleasesInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: ProjectName | None = None
    environment: Environment | None = None
    state: LifecycleStateName | None = Field(default=None, description="A lifecycle_state.")
    requested_by: str | None = Field(
        default=None,
        pattern=NAME,
        description="Only releases this user requested; `me` means the caller.",
    )
    service: ServiceName | None = Field(default=None, description="Only releases changing it.")
    since: Instant | None = Field(
        default=None, description="Only releases created at or after this time."
    )
    until: Instant | None = Field(
        default=None, description="Only releases created before this time."
    )
    text: str | None = Field(
        default=None,
        max_length=TEXT_MAX,
        description="Search the release id, version/image, reason and requester.",
    )
    limit: PageSize = 50
    before: ReleaseId | None = Field(default=None, description="Cursor: releases older than it.")


@tool(mutating=True, permission=Action.request)
def preview_release(ctx: ToolContext, session: Session, args: PreviewReleaseInput) -> ReleaseRead:
    """Preview a release: compute the per-service diff against live state, its risk and expiry.
    Nothing changes on the target; submit the release afterwards."""
    return preview.preview_release(
        session,
        actor=ctx.actor,
        runtimes=ctx.runtimes,
        project=args.project,
        environment=args.environment,
        changes=args.changes,
        emergency=args.emergency,
    )


@tool(mutating=True, permission=Action.request)
def repreview_release(ctx: ToolContext, session: Session, args: ReleaseInput) -> ReleaseRead:
    """Re-preview a release (same id): recompute the diff and restart its expiry. Approvals are
    kept if the diff is unchanged."""
    return preview.repreview_release(
        session, actor=ctx.actor, runtimes=ctx.runtimes, release=args.release_id
    )


@tool(mutating=True, permission=Action.request)
def submit_release(ctx: ToolContext, session: Session, args: ReleaseInput) -> ReleaseRead:
    """Submit a previewed release: policy sends it to the approval inbox or approves it."""
    return submit.submit_release(
        session, actor=ctx.actor, runner=ctx.runner, release=args.release_id
    )


@tool(mutating=True, permission=Action.request)
def apply_release(ctx: ToolContext, session: Session, args: ReleaseInput) -> ReleaseRead:
    """Apply an approved release whose preview is fresh and still matches live state."""
    return apply.apply_release(
        session, actor=ctx.actor, runtimes=ctx.runtimes, runner=ctx.runner, release=args.release_id
    )


@tool(mutating=True, permission=Action.request)
def cancel_release(ctx: ToolContext, session: Session, args: CancelReleaseInput) -> ReleaseRead:
    """Cancel a release that has not started applying."""
    return submit.cancel_release(
        session, actor=ctx.actor, release=args.release_id, reason=args.reason
    )


@tool(mutating=True, permission=Action.request)
def rollback_release(ctx: ToolContext, session: Session, args: RollbackReleaseInput) -> ReleaseRead:
    """Preview a rollback of a target to an earlier applied revision; it is then submitted and
    approved like any release."""
    return rollback.rollback_release(
        session,
        actor=ctx.actor,
        runtimes=ctx.runtimes,
        project=args.project,
        environment=args.environment,
        services=args.services,
        to_release=args.to_release_id,
        emergency=args.emergency,
    )


@tool(mutating=False, permission=Action.view)
def list_releases(ctx: ToolContext, session: Session, args: ListReleasesInput) -> ReleasePage:
    """List releases, newest first, by project, environment, service, lifecycle_state,
    requester (`me` for the caller), creation time and free text."""
    return views.list_releases(
        session,
        actor=ctx.actor,
        project=args.project,
        environment=args.environment,
        state=args.state,
        requested_by=args.requested_by,
        service=args.service,
        since=args.since,
        until=args.until,
        text=args.text,
        limit=args.limit,
        before=args.before,
    )


def _release_read(args: ReleaseInput) -> tuple[Select[Any], dict[str, Any]]:
    return views.release_read(args.release_id)


@tool(mutating=False, permission=Action.view, conceals_itself=True, first_read=_release_read)
def get_release(ctx: ToolContext, session: Session, args: ReleaseInput) -> ReleaseRead:
    """Get one release with its lifecycle_state, preview diff and approval."""
    return views.get_release(session, actor=ctx.actor, release=args.release_id, read=ctx.first_rows)


@tool(mutating=False, permission=Action.view, conceals_itself=True)
def release_timeline(ctx: ToolContext, session: Session, args: ReleaseInput) -> Timeline:
    """The ordered timeline of a release: audit events and runtime progress."""
    return views.timeline(session, actor=ctx.actor, release=args.release_id)


TOOLS = [
    preview_release,
    repreview_release,
    submit_release,
    apply_release,
    cancel_release,
    rollback_release,
    list_releases,
    get_release,
    release_timeline,
]
