"""Release views: what tools, REST and pages return."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from core.targets.schemas import FreezeInfo
from runtimes.base import FieldChange, ServiceSpec


class RiskSummary(BaseModel):
    """How risky the change is, and why; `tier` is the target's risk tier."""

    level: str
    reasons: list[str]
    tier: str


class PreviewRead(BaseModel):
    """The current preview of a release."""

    diff: dict[str, dict[str, FieldChange]]
    desired: dict[str, ServiceSpec]
    diff_hash: str
    base_fingerprint: str
    risk: RiskSummary
    created_at: datetime
    expires_at: datetime
    expired: bool


class StepRead(BaseModel):
    """One approval step and who satisfied it so far."""

    group: str
    count: int
    approved_by: list[str] = Field(default_factory=list)
    done: bool = False


class DecisionRead(BaseModel):
    """One decision on a ticket."""

    user: str
    decision: str
    step: int
    comment: str | None
    channel: str
    at: datetime


class ApprovalRead(BaseModel):
    """An approval ticket, as the inbox and cards show it."""

    ticket_id: int
    release_id: str
    project: str
    environment: str
    risk: str
    state: str = Field(description="pending | approved | rejected | cancelled | expired | void")
    lifecycle_state: str
    requested_by: str
    assignee: str | None
    policy_reason: str
    steps: list[StepRead]
    current_step: int
    decisions: list[DecisionRead]
    changes: dict[str, Any]
    created_at: datetime
    expires_at: datetime | None = Field(description="When the release's preview expires.")
    times_out_at: datetime | None = Field(
        default=None, description="When a pending ticket times out (the release then expires)."
    )
    waiting_step: int | None = Field(default=None, description="The step that waits (1-based).")
    waiting_for: str | None = Field(default=None, description="The group that decides it.")
    deciders: list[str] = Field(
        default_factory=list, description="Who may decide the waiting step now."
    )
    can_decide: bool = Field(description="Whether the caller may approve or reject it now.")
    frozen: FreezeInfo | None = Field(
        default=None,
        description="Set when the target is frozen or outside its change window now: submit "
        "and apply are refused until then.",
    )


class ReleaseRead(BaseModel):
    """A release with its lifecycle state, current preview and approval."""

    id: str = Field(description="Human-friendly id, e.g. R-42.")
    project: str
    environment: str
    runtime: str
    simulated: bool
    kind: str
    changes: dict[str, Any]
    lifecycle_state: str
    version: int
    requested_by: str
    channel: str
    emergency: bool
    rollback_of: str | None
    reason: str | None
    preview: PreviewRead | None
    approval: ApprovalRead | None
    applied_spec: dict[str, Any] | None
    queue_position: int | None = Field(
        default=None,
        description="Approved and waiting for its busy target: 1 = applies next.",
    )
    retry_of: str | None = None
    allowed_actions: list[str] = Field(
        default_factory=list,
        description="What the caller may do with this release now (submit, cancel, apply, "
        "repreview, rollback, retry, approve, reject, takeover, abandon).",
    )
    frozen: FreezeInfo | None = Field(
        default=None,
        description="Set when the target is frozen or outside its change window now: submit "
        "and apply are refused until then.",
    )
    created_at: datetime
    updated_at: datetime


class ReleasePage(BaseModel):
    """A page of releases, newest first; pass `next_before` to get the next page."""

    items: list[ReleaseRead]
    next_before: str | None


class ApprovalPage(BaseModel):
    """A page of the approval inbox, newest first; pass `next_before` for the next page."""

    items: list[ApprovalRead]
    next_before: int | None


class TimelineEntry(BaseModel):
    """One step of a release: an audit event or a runtime progress line."""

    at: datetime
    kind: str = Field(description="audit | progress")
    action: str | None = None
    actor: str | None = None
    on_behalf_of: str | None = None
    channel: str | None = None
    before_state: str | None = None
    after_state: str | None = None
    service: str | None = None
    level: str | None = None
    message: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class Timeline(BaseModel):
    """The ordered timeline of one release."""

    release_id: str
    lifecycle_state: str
    entries: list[TimelineEntry]
